"""`python -m services.gateway`: settings → logging → serve."""

from __future__ import annotations

import asyncio

from services.common.config import GatewaySettings
from services.common.logs import configure_logging
from services.gateway.server import serve


def main(settings: GatewaySettings | None = None) -> None:
    settings = settings or GatewaySettings()
    configure_logging(level=settings.log_level, json_lines=settings.log_json)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
