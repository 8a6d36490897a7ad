"""`python -m services.common.healthcheck HOST:PORT [SERVICE]`: exit 0 when the gRPC health
service answers SERVING, 1 otherwise. For container healthchecks (docker-compose.yml): every
Smartfleet server speaks grpc.health.v1. A scheduler's own health ("") is SERVING on leader
and standbys alike; `smartfleet.v1.FleetService` is SERVING only on the leading scheduler."""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", *, timeout: float = 3.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: python -m services.common.healthcheck HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    return 0 if check(*argv) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
