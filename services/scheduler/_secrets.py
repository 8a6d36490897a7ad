"""Encryption at rest of account secrets (Playwright storage state) with Fernet.

The key comes from `SMARTFLEET_SECRET_KEY` (several keys comma-separated rotate: the first
encrypts, every one decrypts). Without it, a SQLite deployment keeps a generated key in a file
next to the database (owner-only), made the first time a secret is stored; a PostgreSQL
deployment refuses to store secrets, because a key file on one scheduler host would not travel
with a database that outlives it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.engine import make_url

from services.common.errors import FailedPrecondition

logger = logging.getLogger(__name__)

KEY_HINT = (
    "make one with: python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'"
)


def key_file_for(database_url: str) -> Path | None:
    """Where a SQLite database keeps its generated key (`<database>.key`); None for others."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    database = Path(url.database)
    return database.with_name(database.name + ".key")


def _cipher(keys: list[bytes]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError):
        raise ValueError(
            f"SMARTFLEET_SECRET_KEY is not a Fernet key (32 url-safe base64 bytes); {KEY_HINT}"
        ) from None


class SecretBox:
    """Encrypts and decrypts secrets; the key is resolved on first use, or at once when given."""

    def __init__(self, *, key: str | None, database_url: str) -> None:
        self._configured = [
            part.strip().encode() for part in (key or "").split(",") if part.strip()
        ]
        self._key_file = key_file_for(database_url)
        # A configured key is checked now, so a typo stops the scheduler at start.
        self._fernet: MultiFernet | None = _cipher(self._configured) if self._configured else None

    @property
    def key_file(self) -> Path | None:
        return None if self._configured else self._key_file

    def encrypt(self, data: bytes) -> bytes:
        return self._resolve(create=True).encrypt(data)

    def decrypt(self, token: bytes, *, what: str) -> bytes:
        try:
            return self._resolve(create=False).decrypt(token)
        except InvalidToken:
            raise FailedPrecondition(
                f"{what} cannot be decrypted with the scheduler's key: SMARTFLEET_SECRET_KEY or "
                "the key file changed since it was stored; restore the old key (or list it after "
                "the new one) or store the state again"
            ) from None

    def _resolve(self, *, create: bool) -> MultiFernet:
        if self._fernet is not None:
            return self._fernet
        if self._key_file is None:
            raise FailedPrecondition(
                "storing account secrets (storage state, proxy passwords) on this database needs "
                "SMARTFLEET_SECRET_KEY "
                f"(the same Fernet key on every scheduler); {KEY_HINT}"
            )
        if self._key_file.exists() or not create:
            key = self._read_key_file()
        else:
            key = self._create_key_file()
        self._fernet = _cipher([key])
        return self._fernet

    def _read_key_file(self) -> bytes:
        assert self._key_file is not None
        try:
            return self._key_file.read_bytes().strip()
        except FileNotFoundError:
            raise FailedPrecondition(
                f"the key file {self._key_file} is missing, so stored storage state cannot be "
                "read; restore it or set SMARTFLEET_SECRET_KEY"
            ) from None

    def _create_key_file(self) -> bytes:
        assert self._key_file is not None
        key = Fernet.generate_key()
        try:
            fd = os.open(self._key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._read_key_file()  # made meanwhile by another process
        with os.fdopen(fd, "wb") as handle:
            handle.write(key + b"\n")
        logger.info(
            "generated the secret key file %s (back it up with the database)", self._key_file
        )
        return key
