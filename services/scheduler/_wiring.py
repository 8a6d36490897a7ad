"""The one place the scheduler is put together: each part gets its dependencies here.

Parts never reach for each other afterwards. What one part must learn from another's state
changes travels as events (_events.py), subscribed to here.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta

from services.common import bus
from services.common.config import SchedulerSettings
from services.common.recurring import RecurringTask
from services.scheduler._accounts import AccountStore
from services.scheduler._accounts_api import AccountLinkApi, AccountsApi
from services.scheduler._artifacts import ArtifactStore
from services.scheduler._artifacts_api import ArtifactLinkApi, ArtifactsApi
from services.scheduler._credit import CreditLedger
from services.scheduler._db import Database
from services.scheduler._dispatcher import WAKING_EVENTS, Dispatcher
from services.scheduler._events import (
    EventStream,
    JobsDispatched,
    JobsReleased,
    ResultsStored,
    RunCancelled,
)
from services.scheduler._hosts import HostLimiter
from services.scheduler._lease import Lease, make_lease
from services.scheduler._node_link_api import NodeLinkApi
from services.scheduler._nodes_api import HostsApi, NodesApi
from services.scheduler._progress import RunProgressHub
from services.scheduler._registry import NodeRegistry
from services.scheduler._runs import RunStore
from services.scheduler._runs_api import RunsApi
from services.scheduler._schedules import ScheduleRunner, ScheduleStore
from services.scheduler._schedules_api import SchedulesApi
from services.scheduler._secrets import SecretBox
from services.scheduler._stats import ResultStore
from services.scheduler._waiting import WaitingReasons
from services.scheduler.jobs import JobStore

_MIN_SWEEP = timedelta(milliseconds=200)


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerParts:
    settings: SchedulerSettings
    events: EventStream
    db: Database
    # Who leads (PostgreSQL: a lease row fencing every write of `db`; SQLite: a file lock).
    lease: Lease
    runs: RunStore
    jobs: JobStore
    results: ResultStore
    ledger: CreditLedger
    hub: RunProgressHub
    registry: NodeRegistry
    hosts: HostLimiter
    accounts: AccountStore
    schedules: ScheduleStore
    schedule_runner: ScheduleRunner
    artifacts: ArtifactStore
    job_bus: bus.JobBus
    dispatcher: Dispatcher
    maintenance: RecurringTask
    # Servicer objects of the internal API and of the node link (composed per service).
    scheduler_api: tuple[object, ...]
    node_link_api: tuple[object, ...]


def build(settings: SchedulerSettings) -> SchedulerParts:
    events = EventStream()
    db = Database(settings.database_url, events=events)
    lease = make_lease(
        db,
        holder=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
        address=settings.scheduler_advertise or "",
        ttl=settings.leader_lease,
    )
    runs = RunStore(db)
    accounts = AccountStore(
        db, SecretBox(key=settings.secret_key, database_url=settings.database_url)
    )
    jobs = JobStore(db, runs, accounts=accounts)
    results = ResultStore(db, runs)
    ledger = CreditLedger()
    hub = RunProgressHub(runs)
    registry = NodeRegistry(db, events, lost_after=settings.node_lost_after)
    hosts = HostLimiter()
    schedules = ScheduleStore(db, allowed_hosts=settings.allowed_host_list)
    artifacts = ArtifactStore(
        settings.artifact_root,
        retention=settings.artifact_retention,
        max_bytes=settings.artifact_max_mb * 1024**2,
        max_upload_bytes=settings.artifact_max_upload_mb * 1024**2,
    )
    job_bus = bus.JobBus(
        ack_wait=settings.ack_wait,
        servers=settings.nats_servers,
        name="smartfleet-scheduler",
        duplicate_window=settings.nats_duplicate_window,
        replicas=settings.nats_replicas,
    )
    dispatcher = Dispatcher(
        runs=runs,
        jobs=jobs,
        registry=registry,
        ledger=ledger,
        publisher=job_bus,
        hosts=hosts,
        accounts=accounts,
        allowed_hosts=settings.allowed_host_list,
        interval=settings.dispatch_interval,
        recovery_grace=settings.recovery_grace,
    )

    # The order of subscription is the order of delivery: the ledger and the host limiter
    # are up to date before anything that reads them wakes.
    events.subscribe(ledger.follow, JobsDispatched, JobsReleased)
    events.subscribe(hosts.on_results, ResultsStored)
    events.subscribe(hosts.on_cancelled, RunCancelled)
    events.subscribe(registry.on_cancelled, RunCancelled)
    events.subscribe(hub.on_event)
    events.subscribe(dispatcher.wake, *WAKING_EVENTS)

    async def sweep() -> None:
        """Lost nodes, overdue jobs and missed completions."""
        await registry.mark_lost()
        await jobs.recover_overdue()
        await jobs.complete_finished()

    maintenance = RecurringTask(
        "scheduler-maintenance",
        sweep,
        interval=max(settings.heartbeat_interval / 2, _MIN_SWEEP),
    )
    return SchedulerParts(
        settings=settings,
        events=events,
        db=db,
        lease=lease,
        runs=runs,
        jobs=jobs,
        results=results,
        ledger=ledger,
        hub=hub,
        registry=registry,
        hosts=hosts,
        accounts=accounts,
        schedules=schedules,
        schedule_runner=ScheduleRunner(schedules, runs),
        artifacts=artifacts,
        job_bus=job_bus,
        dispatcher=dispatcher,
        maintenance=maintenance,
        scheduler_api=(
            RunsApi(
                runs=runs,
                jobs=jobs,
                results=results,
                hub=hub,
                allowed_hosts=settings.allowed_host_list,
                waiting_reason=WaitingReasons(registry, leading=lambda: lease.token is not None).of,
            ),
            NodesApi(registry=registry),
            HostsApi(hosts=hosts, wake=dispatcher.wake),
            AccountsApi(accounts=accounts, wake=dispatcher.wake),
            ArtifactsApi(artifacts=artifacts, runs=runs),
            SchedulesApi(schedules=schedules),
        ),
        node_link_api=(
            NodeLinkApi(
                registry=registry,
                jobs=jobs,
                ensure_pool=job_bus.ensure_pool,
                extend_deadlines=dispatcher.extend_deadlines,
                heartbeat_interval=settings.heartbeat_interval,
            ),
            AccountLinkApi(accounts=accounts, registry=registry, jobs=jobs),
            ArtifactLinkApi(artifacts=artifacts, runs=runs),
        ),
    )
