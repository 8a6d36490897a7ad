"""The public API's descriptors hold only public contracts; internal ones stay out of them."""

from __future__ import annotations

from google.protobuf.descriptor import FileDescriptor

from smartfleet.v1 import fleet_service_pb2, node_link_pb2

INTERNAL = {"smartfleet/v1/node_link.proto", "smartfleet/v1/job.proto"}


def _closure(file: FileDescriptor) -> set[str]:
    seen: set[str] = set()
    todo = [file]
    while todo:
        current = todo.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        todo.extend(current.dependencies)
    return seen


def test_the_public_service_does_not_pull_in_internal_files() -> None:
    """FleetService's files (and what they import) never include the node link or the envelope."""
    assert _closure(fleet_service_pb2.DESCRIPTOR) & INTERNAL == set()


def test_the_node_link_is_its_own_service() -> None:
    """The node link is a separate, internal service; FleetService has none of its methods."""
    fleet = fleet_service_pb2.DESCRIPTOR.services_by_name["FleetService"]
    link = node_link_pb2.DESCRIPTOR.services_by_name["NodeLinkService"]
    assert not {m.name for m in fleet.methods} & {m.name for m in link.methods}


def test_every_public_enum_starts_with_unspecified() -> None:
    """Zero is `*_UNSPECIFIED` in every enum of the public files (proto3 reads 0 as absent)."""
    public = _closure(fleet_service_pb2.DESCRIPTOR)
    files = [fleet_service_pb2.DESCRIPTOR.pool.FindFileByName(name) for name in public]
    enums = [
        enum
        for file in files
        if file.name.startswith("smartfleet/")
        for enum in file.enum_types_by_name.values()
    ]
    assert enums
    assert [e.name for e in enums if not e.values_by_number[0].name.endswith("_UNSPECIFIED")] == []
