"""Shared fixtures: a real nats-server per test, the demo site, a SQLite file database URL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from demo import DemoSite
from services.common.nats_server import EmbeddedNatsServer


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNatsServer]:
    """A nats-server with JetStream on an ephemeral loopback port, store in a temp dir."""
    server = EmbeddedNatsServer(tmp_path / "nats")
    (tmp_path / "nats").mkdir()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def demo_site() -> Iterator[DemoSite]:
    with DemoSite() as site:
        yield site


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'smartfleet.db'}"


POSTGRES_URL = os.environ.get(
    "SMARTFLEET_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def postgres_available() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False
