"""The node's side of the target allowlist: may a session of this job load this URL?"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from services.common.allowlist import host_allowed, url_host

ALLOWED_SCHEMES = frozenset({"http", "https"})


def target_allowed(url: str, allowed_hosts: Sequence[str]) -> bool:
    """The scheduler's rule (loopback, exact hosts, `*.suffix`) for the list it put in the envelope.

    An empty list means loopback only, the default allowlist; `*` allows any host.
    """
    try:
        host = url_host(url)
    except ValueError:
        return False
    return bool(host) and host_allowed(host, allowed_hosts)


def scheme_allowed(url: str) -> bool:
    """Sessions only load web pages: no file:, data:, chrome: or javascript: targets."""
    try:
        return urlsplit(url).scheme.lower() in ALLOWED_SCHEMES
    except ValueError:
        return False
