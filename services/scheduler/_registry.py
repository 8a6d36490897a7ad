"""Node registry: who serves which pool with how many slots; nodes that stop heartbeating are lost."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import select

from services.common import bus
from services.common.errors import NotFound
from services.common.types import NodeInfo, NodeLoad, NodeState
from services.scheduler._db import Database
from services.scheduler._events import (
    EventStream,
    FleetChanged,
    NodeDrained,
    NodeLost,
    NodeRegistered,
    RunCancelled,
)
from services.scheduler._models import NodeRow

logger = logging.getLogger(__name__)

CANCEL_NOTICE = timedelta(minutes=10)

# What the operator holds a node to; None (or no entry) means ready.
Hold = Literal[NodeState.CORDONED, NodeState.DRAINING]
# What a heartbeat response tells a node so that it reaches the operator's state.
NodeOrder = Literal["cordon", "uncordon", "drain"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRecord:
    info: NodeInfo
    state: NodeState
    slots: int
    load: NodeLoad
    registered_at: datetime
    last_heartbeat: datetime

    @property
    def pools(self) -> frozenset[str]:
        return frozenset(bus.node_pools(self.info.engines, self.info.labels))


class NodeRegistry:
    """Live view of the fleet in memory (capacity is read on every dispatch tick), persisted for listing."""

    def __init__(self, db: Database, events: EventStream, *, lost_after: timedelta) -> None:
        self._db = db
        self._events = events
        self._lost_after = lost_after
        self._nodes: dict[str, NodeRecord] = {}
        # Runs cancelled lately: every node hears of them with its heartbeats for a while.
        self._cancelled: dict[str, datetime] = {}
        # The operator's cordon or drain, kept across the node's heartbeats and re-registrations.
        self._held: dict[str, NodeState] = {}
        # Uncordoned nodes that have not yet heard so: counted ready until they report it.
        self._resuming: set[str] = set()

    async def load(self) -> None:
        """Nodes from before a restart (or a takeover) are listed, but carry no capacity until
        they heartbeat again: whatever this scheduler knew before is forgotten first."""
        self._nodes.clear()
        self._held.clear()
        self._resuming.clear()
        async with self._db.read() as session:
            for row in await session.scalars(select(NodeRow)):
                # Only an operator makes a node cordoned, so the hold survives a restart. (A
                # drain does not: `drained` is also how a node that shut down ends.)
                if row.state == NodeState.CORDONED:
                    self._held[row.id] = NodeState.CORDONED
                info = NodeInfo(**{**row.info, "engines": tuple(row.info.get("engines", ()))})
                # A node that drained and stopped stays `drained`; any other waits to be heard.
                drained = row.state == NodeState.DRAINED
                self._nodes[row.id] = NodeRecord(
                    info=info,
                    state=NodeState.DRAINED if drained else NodeState.LOST,
                    slots=row.slots,
                    load=NodeLoad(busy_slots=0, free_slots=0),
                    registered_at=row.registered_at,
                    last_heartbeat=row.last_heartbeat,
                )

    async def register(self, info: NodeInfo) -> NodeRecord:
        now = datetime.now(UTC)
        record = NodeRecord(
            info=info,
            state=self._held.get(info.node_id, NodeState.READY),
            slots=info.slots,
            load=NodeLoad(busy_slots=0, free_slots=info.slots),
            registered_at=now,
            last_heartbeat=now,
        )
        self._nodes[info.node_id] = record
        await self._persist(record)
        logger.info(
            "node %s registered: engines=%s slots=%d",
            info.node_id,
            ",".join(info.engines),
            info.slots,
        )
        self._events.publish([NodeRegistered(record)])
        return record

    async def heartbeat(
        self, node_id: str, *, load: NodeLoad, state: NodeState, slots: int
    ) -> bool:
        """False when the node is unknown (it must register again)."""
        record = self._nodes.get(node_id)
        if record is None:
            return False
        if record.state is NodeState.LOST and state is NodeState.READY:
            logger.info("node %s is back", node_id)
        if state is NodeState.READY:
            self._resuming.discard(node_id)
        updated = replace(
            record,
            load=load,
            state=self._effective_state(node_id, state),
            slots=slots or record.slots,
            last_heartbeat=datetime.now(UTC),
        )
        self._nodes[node_id] = updated
        await self._persist(updated)
        if updated.state is NodeState.DRAINED and record.state is not NodeState.DRAINED:
            self._events.publish([NodeDrained(updated)])
        if (updated.state, updated.slots) != (record.state, record.slots):
            self._events.publish([FleetChanged()])
        return True

    def _effective_state(self, node_id: str, reported: NodeState) -> NodeState:
        """The node's state as the scheduler counts it: the operator's hold wins over `ready`."""
        held = self._held.get(node_id)
        if held is NodeState.CORDONED and reported in (NodeState.READY, NodeState.CORDONED):
            return NodeState.CORDONED
        if held is NodeState.DRAINING:
            return NodeState.DRAINED if reported is NodeState.DRAINED else NodeState.DRAINING
        if node_id in self._resuming and reported in (NodeState.CORDONED, NodeState.DRAINED):
            return NodeState.READY
        return reported

    def order(self, node_id: str, reported: NodeState) -> NodeOrder | None:
        """What a heartbeat response tells the node, from the state it reported and the hold.

        Repeated with every heartbeat until the node reports the state asked for.
        """
        if node_id not in self._nodes:
            return None
        held = self._held.get(node_id)
        if held is NodeState.CORDONED and reported is not NodeState.CORDONED:
            return "cordon"
        if held is NodeState.DRAINING and reported not in (NodeState.DRAINING, NodeState.DRAINED):
            return "drain"
        if node_id in self._resuming:
            return "uncordon"
        return None

    async def hold(self, node_id: str, state: Hold | None) -> NodeRecord:
        """Cordon, drain or (None) uncordon a node; NotFound for a node never registered."""
        record = self._nodes.get(node_id)
        if record is None:
            raise NotFound("node", node_id)
        if state is None:
            self._held.pop(node_id, None)
            self._resuming.add(node_id)
        else:
            self._held[node_id] = state
            self._resuming.discard(node_id)
        if record.state is NodeState.LOST:
            new_state = NodeState.LOST
        elif state is None:
            new_state = NodeState.READY
        elif state is NodeState.DRAINING and record.state is NodeState.DRAINED:
            new_state = NodeState.DRAINED
        else:
            new_state = state
        updated = replace(record, state=new_state)
        self._nodes[node_id] = updated
        logger.info("node %s: %s by the operator", node_id, state or "uncordoned")
        await self._persist(updated)
        if updated.state is not record.state:
            self._events.publish([FleetChanged()])
        return updated

    def capacity(self, pool: str) -> int:
        """Slots of ready nodes that serve the pool's engine and carry all its labels."""
        return sum(
            node.slots
            for node in self._nodes.values()
            if node.state is NodeState.READY and pool in node.pools
        )

    def pools(self) -> set[str]:
        """Pools some ready node serves."""
        return {
            pool
            for node in self._nodes.values()
            if node.state is NodeState.READY
            for pool in node.pools
        }

    def cancel_run(self, run_id: str, now: datetime | None = None) -> None:
        self._cancelled[run_id] = now or datetime.now(UTC)

    def on_cancelled(self, event: RunCancelled) -> None:
        """Nodes abort a cancelled run's sessions and drop its envelopes when they next heartbeat."""
        self.cancel_run(event.run.id)

    def cancelled_runs(self, now: datetime | None = None) -> list[str]:
        now = now or datetime.now(UTC)
        for run_id in [r for r, at in self._cancelled.items() if now - at > CANCEL_NOTICE]:
            del self._cancelled[run_id]
        return list(self._cancelled)

    def nodes(self) -> list[NodeRecord]:
        return sorted(self._nodes.values(), key=lambda node: node.info.node_id)

    async def mark_lost(self, now: datetime | None = None) -> list[str]:
        """Nodes silent for `lost_after` are lost, except those whose last word was `drained`:
        a node stopped by SIGTERM drains, says so, and goes quiet; it ended cleanly."""
        now = now or datetime.now(UTC)
        lost = [
            node
            for node in self._nodes.values()
            if node.state not in (NodeState.LOST, NodeState.DRAINED)
            and now - node.last_heartbeat > self._lost_after
        ]
        for node in lost:
            logger.warning(
                "node %s lost: no heartbeat since %s", node.info.node_id, node.last_heartbeat
            )
            updated = replace(node, state=NodeState.LOST)
            self._nodes[node.info.node_id] = updated
            await self._persist(updated)
            self._events.publish([NodeLost(updated)])
        if lost:
            self._events.publish([FleetChanged()])
        return [node.info.node_id for node in lost]

    async def _persist(self, record: NodeRecord) -> None:
        info = asdict(record.info)
        info["engines"] = list(record.info.engines)
        async with self._db.write() as session:
            await session.merge(
                NodeRow(
                    id=record.info.node_id,
                    host=record.info.host,
                    info=info,
                    state=record.state,
                    slots=record.slots,
                    busy_slots=record.load.busy_slots,
                    free_slots=record.load.free_slots,
                    cpu_percent=record.load.cpu_percent,
                    rss_bytes=record.load.rss_bytes,
                    registered_at=record.registered_at,
                    last_heartbeat=record.last_heartbeat,
                )
            )
