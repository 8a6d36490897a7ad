"""`python -m services.gateway`: settings → logging → serve until SIGINT/SIGTERM."""

from __future__ import annotations

from services.common.config import GatewaySettings
from services.common.lifecycle import run_service
from services.gateway.server import serve


def main(settings: GatewaySettings | None = None) -> None:
    run_service("gateway", serve, settings or GatewaySettings())


if __name__ == "__main__":
    main()
