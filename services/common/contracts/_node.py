"""NodeInfo and NodeLoad to and from their protobuf messages."""

from __future__ import annotations

from services.common.contracts._enums import engine_name, engine_number
from services.common.types import NodeInfo, NodeLoad
from smartfleet.v1 import nodes_pb2


def node_info_to_pb(info: NodeInfo) -> nodes_pb2.NodeInfo:
    return nodes_pb2.NodeInfo(
        node_id=info.node_id,
        host=info.host,
        engines=[engine_number(engine) for engine in info.engines],
        labels=info.labels,
        slots=info.slots,
        version=info.version,
        playwright_version=info.playwright_version,
        browser_versions=info.browser_versions,
    )


def node_info_from_pb(message: nodes_pb2.NodeInfo) -> NodeInfo:
    return NodeInfo(
        node_id=message.node_id,
        host=message.host,
        engines=tuple(engine_name(engine) for engine in message.engines),
        labels=dict(message.labels),
        slots=message.slots,
        version=message.version,
        playwright_version=message.playwright_version,
        browser_versions=dict(message.browser_versions),
    )


def node_load_to_pb(load: NodeLoad) -> nodes_pb2.NodeLoad:
    return nodes_pb2.NodeLoad(
        busy_slots=load.busy_slots,
        free_slots=load.free_slots,
        cpu_percent=load.cpu_percent,
        rss_bytes=load.rss_bytes,
        host_load_1m=load.host_load_1m,
    )


def node_load_from_pb(message: nodes_pb2.NodeLoad) -> NodeLoad:
    return NodeLoad(
        busy_slots=message.busy_slots,
        free_slots=message.free_slots,
        cpu_percent=message.cpu_percent,
        rss_bytes=message.rss_bytes,
        host_load_1m=message.host_load_1m,
    )
