"""The public Fleet API and the internal Scheduler API stay in step (the gateway forwards by name)."""

from __future__ import annotations

from smartfleet.v1 import fleet_pb2, scheduler_pb2


def test_every_fleet_method_has_a_scheduler_twin() -> None:
    """Each Fleet RPC exists on Scheduler with the same request, response and streaming shape."""
    fleet = fleet_pb2.DESCRIPTOR.services_by_name["Fleet"]
    scheduler = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"]
    for method in fleet.methods:
        twin = scheduler.methods_by_name.get(method.name)
        assert twin is not None, f"Scheduler lacks {method.name}"
        assert twin.input_type.full_name == method.input_type.full_name
        assert twin.output_type.full_name == method.output_type.full_name
        assert (twin.client_streaming, twin.server_streaming) == (
            method.client_streaming,
            method.server_streaming,
        )
