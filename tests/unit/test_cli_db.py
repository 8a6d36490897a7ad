"""Which database `smartctl db upgrade|current` opens when no --database-url is given."""

from __future__ import annotations

from pathlib import Path

from cli._config import write_stack_file
from cli._db import resolve_database_url
from cli._stack import stack_database_url


def test_a_given_url_wins(tmp_path: Path) -> None:
    """--database-url (or SMARTFLEET_DATABASE_URL, which typer folds into it) is used as given."""
    write_stack_file(tmp_path, {"database_url": "sqlite+aiosqlite:///other.db"})
    url = "postgresql+asyncpg://fleet@db/fleet"
    assert resolve_database_url(given=url, data_dir=tmp_path) == (url, "--database-url")


def test_a_running_local_stack_names_its_database(tmp_path: Path) -> None:
    """Without a URL, the database in the local stack's stack.json."""
    write_stack_file(tmp_path, {"database_url": "sqlite+aiosqlite:////srv/fleet.db"})
    url, source = resolve_database_url(given=None, data_dir=tmp_path)
    assert url == "sqlite+aiosqlite:////srv/fleet.db"
    assert source.endswith("stack.json")


def test_a_stopped_local_stack_still_has_its_database(tmp_path: Path) -> None:
    """Without stack.json, the data dir's smartfleet.db when it exists, else the scheduler's default."""
    assert resolve_database_url(given=None, data_dir=tmp_path) == (
        "sqlite+aiosqlite:///smartfleet.db",
        "the scheduler's default",
    )
    (tmp_path / "smartfleet.db").touch()
    url, _ = resolve_database_url(given=None, data_dir=tmp_path)
    assert url == stack_database_url(tmp_path)
