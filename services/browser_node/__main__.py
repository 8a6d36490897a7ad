"""`python -m services.browser_node`: settings → logging → serve until SIGINT/SIGTERM."""

from __future__ import annotations

from services.browser_node.server import serve
from services.common.config import NodeSettings
from services.common.lifecycle import run_service


def main(settings: NodeSettings | None = None) -> None:
    run_service("browser node", serve, settings or NodeSettings())


if __name__ == "__main__":
    main()
