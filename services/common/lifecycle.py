"""Process lifecycle: one shutdown event, set by SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from services.common.errors import SmartfleetError
from services.common.logs import configure_logging

if TYPE_CHECKING:
    from services.common.config import _Base

S = TypeVar("S", bound="_Base")


def shutdown_event() -> asyncio.Event:
    """An event set on SIGINT/SIGTERM; call from inside the running loop."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    return event


def run_service(name: str, serve: Callable[[S], Coroutine[Any, Any, None]], settings: S) -> None:
    """Entrypoint body: logging, then serve until a signal; a start-up failure exits 1, clearly."""
    configure_logging(level=settings.log_level, json_lines=settings.log_json)
    try:
        asyncio.run(serve(settings))
    except (OSError, RuntimeError, SmartfleetError) as error:
        # A taken port, an unreachable NATS, a missing browser: say what, not a traceback.
        logging.getLogger(name).error("%s cannot start: %s", name, error)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass
