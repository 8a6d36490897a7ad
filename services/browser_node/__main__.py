"""`python -m services.browser_node`: settings → logging → serve until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio

from services.browser_node.server import serve
from services.common.config import NodeSettings
from services.common.logs import configure_logging


def main(settings: NodeSettings | None = None) -> None:
    settings = settings or NodeSettings()
    configure_logging(level=settings.log_level, json_lines=settings.log_json)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
