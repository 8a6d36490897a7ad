"""What an account may hold: each check returns the clean value or raises InvalidArgument."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from services.common.errors import InvalidArgument

NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")
MAX_LABELS = 20
MAX_LABEL_VALUE = 256
PROXY_SCHEMES = ("http", "https", "socks5")
MAX_SESSIONS_PER_HOUR = 1_000_000
DEFAULT_COOLDOWN = timedelta(minutes=15)
MAX_COOLDOWN = timedelta(days=30)
STATUSES = ("active", "disabled")
MAX_STORAGE_STATE = 1024 * 1024
STORAGE_STATE_KEYS = ("cookies", "origins")


def check_name(name: str, *, field: str = "account.name") -> str:
    if not NAME.fullmatch(name):
        raise InvalidArgument(field, "must be 1-128 characters: letters, digits and _ . @ -")
    return name


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidArgument("account.labels", f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key):
            raise InvalidArgument(
                "account.labels",
                f"label key {key!r} must be 1-63 letters, digits and _ . - / starting with a "
                "letter or digit",
            )
        if len(value) > MAX_LABEL_VALUE or not value.isprintable():
            raise InvalidArgument(
                f"account.labels[{key}]",
                f"must be printable and at most {MAX_LABEL_VALUE} characters",
            )
    return dict(labels)


def check_proxy(proxy: str) -> str:
    """An egress proxy URL: http, https or socks5, optional user:password@, a host, a port."""
    if not proxy:
        return ""
    field = "account.proxy"
    if len(proxy) > 2048:
        raise InvalidArgument(field, "is longer than 2048 characters")
    try:
        parts = urlsplit(proxy)
        port = parts.port
    except ValueError:
        raise InvalidArgument(field, "is not a valid URL") from None
    if parts.scheme not in PROXY_SCHEMES:
        raise InvalidArgument(
            field, f"must be an {', '.join(PROXY_SCHEMES)} URL, e.g. http://proxy:3128"
        )
    if not parts.hostname:
        raise InvalidArgument(field, "has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidArgument(field, "must be scheme://[user:password@]host[:port], nothing more")
    if port == 0:
        raise InvalidArgument(field, "has port 0")
    return proxy


def mask_proxy(proxy: str) -> str:
    """The proxy URL with its password (a secret) replaced by ***."""
    parts = urlsplit(proxy)
    if parts.password is None:
        return proxy
    userinfo, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}").geturl()


def check_sessions_per_hour(value: int) -> int:
    if not 0 <= value <= MAX_SESSIONS_PER_HOUR:
        raise InvalidArgument(
            "account.sessions_per_hour",
            f"must be between 0 (no limit) and {MAX_SESSIONS_PER_HOUR}",
        )
    return value


def check_cooldown(value: timedelta) -> timedelta:
    if not timedelta(0) <= value <= MAX_COOLDOWN:
        raise InvalidArgument("account.cooldown", "must be between 0s and 30d")
    return value


def check_status(value: str) -> str:
    if value not in STATUSES:
        reason = "is derived from the cooldown, not set" if value == "cooling" else "is unknown"
        raise InvalidArgument(
            "account.status", f"{value!r} {reason}; use one of {', '.join(STATUSES)}"
        )
    return value


def check_storage_state(data: bytes) -> None:
    """Playwright storage-state JSON: {"cookies": [...], "origins": [...]}, at most 1 MB."""
    field = "storage_state"
    if len(data) > MAX_STORAGE_STATE:
        raise InvalidArgument(field, f"is {len(data)} bytes; at most {MAX_STORAGE_STATE} (1 MB)")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument(
            field, "is not JSON; pass Playwright storage state (context.storage_state())"
        ) from None
    if not isinstance(document, dict):
        raise InvalidArgument(field, 'must be a JSON object {"cookies": [...], "origins": [...]}')
    unknown = sorted(set(document) - set(STORAGE_STATE_KEYS))
    if unknown:
        raise InvalidArgument(
            f"{field}.{unknown[0]}", "is not a storage-state field (only cookies and origins)"
        )
    for position, cookie in enumerate(_entries(document, "cookies")):
        for key in ("name", "value"):
            _string(cookie, key, f"{field}.cookies[{position}].{key}")
        for key in ("domain", "path"):
            if key in cookie:
                _string(cookie, key, f"{field}.cookies[{position}].{key}")
    for position, origin in enumerate(_entries(document, "origins")):
        _string(origin, "origin", f"{field}.origins[{position}].origin")
        local = origin.get("localStorage", [])
        if not isinstance(local, list) or not all(isinstance(item, dict) for item in local):
            raise InvalidArgument(
                f"{field}.origins[{position}].localStorage", "must be a list of {name, value}"
            )


def _entries(document: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entries = document.get(key, [])
    if not isinstance(entries, list):
        raise InvalidArgument(f"storage_state.{key}", "must be a list")
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidArgument(f"storage_state.{key}[{position}]", "must be an object")
    return entries


def _string(entry: dict[str, Any], key: str, field: str) -> None:
    if not isinstance(entry.get(key), str):
        raise InvalidArgument(field, "must be a string")
