"""`python -m services.scheduler`: settings → logging → serve until SIGINT/SIGTERM."""

from __future__ import annotations

from services.common.config import SchedulerSettings
from services.common.lifecycle import run_service
from services.scheduler.server import serve


def main(settings: SchedulerSettings | None = None) -> None:
    run_service("scheduler", serve, settings or SchedulerSettings())


if __name__ == "__main__":
    main()
