"""Account checks and secret handling without a database."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from services.common.errors import FailedPrecondition, InvalidArgument
from services.scheduler._account_rules import (
    check_name,
    check_proxy,
    check_storage_state,
    mask_proxy,
)
from services.scheduler._secrets import SecretBox


@pytest.mark.parametrize("name", ["a", "shop-user_1", "user@example.com", "x" * 128])
def test_good_names(name: str) -> None:
    """Letters, digits and _ . @ - up to 128 characters are names."""
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "has space", "x" * 129, "new\nline", "slash/no"])
def test_bad_names(name: str) -> None:
    """Anything else is refused naming account.name."""
    with pytest.raises(InvalidArgument) as caught:
        check_name(name)
    assert caught.value.field == "account.name"


@pytest.mark.parametrize(
    "proxy",
    ["", "http://proxy:3128", "https://proxy.corp", "socks5://127.0.0.1:1080", "http://u:p@p:1"],
)
def test_good_proxies(proxy: str) -> None:
    """http, https and socks5 URLs with a host (and a port) are proxies."""
    assert check_proxy(proxy) == proxy


@pytest.mark.parametrize(
    "proxy",
    ["proxy:3128", "ftp://u:pw@p", "http://", "http://p/path", "http://u:pw@p:99999"],
)
def test_bad_proxies(proxy: str) -> None:
    """Other schemes, no host, paths and bad ports are refused, without echoing a password."""
    with pytest.raises(InvalidArgument) as caught:
        check_proxy(proxy)
    assert caught.value.field == "account.proxy" and "pw" not in caught.value.message


def test_proxy_passwords_are_masked() -> None:
    """What the API shows of a proxy hides its password and nothing else."""
    assert mask_proxy("http://proxy:3128") == "http://proxy:3128"
    assert mask_proxy("http://user@proxy:3128") == "http://user@proxy:3128"
    assert mask_proxy("socks5://us%40er:p%3Ass@proxy:1080") == "socks5://us%40er:***@proxy:1080"


def test_storage_state_shape() -> None:
    """A Playwright storage state passes; wrong shapes name the offending path."""
    check_storage_state(
        json.dumps(
            {
                "cookies": [{"name": "a", "value": "b", "domain": "x", "path": "/"}],
                "origins": [{"origin": "http://x", "localStorage": []}],
            }
        ).encode()
    )
    check_storage_state(b"{}")
    for data, field in [
        (b"\xff", "storage_state"),
        (b'{"cookies": {}}', "storage_state.cookies"),
        (b'{"cookies": [1]}', "storage_state.cookies[0]"),
        (b'{"origins": [{"localStorage": []}]}', "storage_state.origins[0].origin"),
        (
            b'{"origins": [{"origin": "o", "localStorage": 3}]}',
            "storage_state.origins[0].localStorage",
        ),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            check_storage_state(data)
        assert caught.value.field == field


def test_sqlite_key_file_is_made_once_owner_only(tmp_path: Path) -> None:
    """Without a configured key, SQLite gets <db>.key (0600) on first use, reused after."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"
    box = SecretBox(key=None, database_url=url)
    key_file = tmp_path / "fleet.db.key"
    assert not key_file.exists()
    token = box.encrypt(b"secret")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert SecretBox(key=None, database_url=url).decrypt(token, what="x") == b"secret"


def test_postgres_without_a_key_refuses_clearly() -> None:
    """On PostgreSQL without SMARTFLEET_SECRET_KEY, storing a secret says what to set."""
    box = SecretBox(key=None, database_url="postgresql+asyncpg://db/fleet")
    with pytest.raises(FailedPrecondition, match="SMARTFLEET_SECRET_KEY"):
        box.encrypt(b"secret")


def test_keys_rotate_and_a_wrong_key_is_explained() -> None:
    """The first key encrypts, later ones still decrypt; an unknown key or a typo is clear."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    url = "postgresql+asyncpg://db/fleet"
    token = SecretBox(key=old, database_url=url).encrypt(b"secret")
    assert SecretBox(key=f"{new},{old}", database_url=url).decrypt(token, what="x") == b"secret"
    with pytest.raises(FailedPrecondition, match="cannot be decrypted"):
        SecretBox(key=new, database_url=url).decrypt(token, what="x")
    with pytest.raises(ValueError, match="not a Fernet key"):
        SecretBox(key="not-a-key", database_url=url)
