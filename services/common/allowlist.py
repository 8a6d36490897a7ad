"""The target allowlist: which hosts a session may visit (also the SSRF guard)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, allowed: Iterable[str], *, allow_loopback: bool = True) -> bool:
    """True for loopback (by default) and for hosts named exactly or by a `*.suffix` entry.

    Private, link-local and metadata addresses are not special-cased: they are refused unless
    an entry names them, because nothing but loopback is allowed by default.
    """
    host = host.strip("[]").lower().rstrip(".")
    if allow_loopback and is_loopback(host):
        return True
    for entry in allowed:
        entry = entry.strip().lower().rstrip(".")
        if entry == "*" or entry == host:
            return True
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return True
    return False


def url_host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
