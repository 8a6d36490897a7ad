"""NodeInfo and NodeLoad to and from their protobuf messages."""

from __future__ import annotations

from services.common.types import NodeInfo, NodeLoad
from smartfleet.v1 import node_pb2


def node_info_to_pb(info: NodeInfo) -> node_pb2.NodeInfo:
    return node_pb2.NodeInfo(
        node_id=info.node_id,
        host=info.host,
        engines=info.engines,
        labels=info.labels,
        slots=info.slots,
        version=info.version,
        playwright_version=info.playwright_version,
        browser_versions=info.browser_versions,
    )


def node_info_from_pb(message: node_pb2.NodeInfo) -> NodeInfo:
    return NodeInfo(
        node_id=message.node_id,
        host=message.host,
        engines=tuple(message.engines),
        labels=dict(message.labels),
        slots=message.slots,
        version=message.version,
        playwright_version=message.playwright_version,
        browser_versions=dict(message.browser_versions),
    )


def node_load_to_pb(load: NodeLoad) -> node_pb2.NodeLoad:
    return node_pb2.NodeLoad(
        busy_slots=load.busy_slots,
        free_slots=load.free_slots,
        cpu_percent=load.cpu_percent,
        rss_bytes=load.rss_bytes,
    )


def node_load_from_pb(message: node_pb2.NodeLoad) -> NodeLoad:
    return NodeLoad(
        busy_slots=message.busy_slots,
        free_slots=message.free_slots,
        cpu_percent=message.cpu_percent,
        rss_bytes=message.rss_bytes,
    )
