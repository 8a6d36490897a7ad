"""`python -m services.scheduler`: settings → logging → serve."""

from __future__ import annotations

import asyncio

from services.common.config import SchedulerSettings
from services.common.logs import configure_logging
from services.scheduler.server import serve


def main(settings: SchedulerSettings | None = None) -> None:
    settings = settings or SchedulerSettings()
    configure_logging(level=settings.log_level, json_lines=settings.log_json)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
