"""Page tokens: opaque to callers, checked by the server.

A token says which listing it belongs to, where the next page starts and a digest of the
filters it was made under; a token of another listing, of other filters, or not made here at
all is INVALID_ARGUMENT naming `page_token`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from services.common.errors import InvalidArgument

MAX_TOKEN = 1024


def _digest(filters: Mapping[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode(listing: str, position: Any, filters: Mapping[str, Any]) -> str:
    body = json.dumps({"l": listing, "p": position, "f": _digest(filters)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode(token: str, listing: str, filters: Mapping[str, Any]) -> Any:
    """The position a token continues from, or None for no token (the first page)."""
    if not token:
        return None
    invalid = InvalidArgument("page_token", "is not a page token of this listing")
    if len(token) > MAX_TOKEN:
        raise invalid
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeError):
        raise invalid from None
    if not isinstance(body, dict) or body.get("l") != listing or "p" not in body:
        raise invalid
    if body.get("f") != _digest(filters):
        raise InvalidArgument(
            "page_token", "was returned for other filters; list again from the first page"
        )
    return body["p"]


def page_limit(requested: int, *, default: int, maximum: int) -> int:
    if requested < 0 or requested > maximum:
        raise InvalidArgument("page_size", f"must be between 0 and {maximum}")
    return requested or default


T = TypeVar("T")


def page_by_name(
    items: Sequence[T],
    name: Callable[[T], str],
    *,
    listing: str,
    page_size: int,
    page_token: str,
    maximum: int = 1000,
) -> tuple[list[T], str]:
    """One page of a listing held in memory, in name order, and the next page's token."""
    limit = page_limit(page_size, default=maximum, maximum=maximum)
    after = decode(page_token, listing, {})
    ordered = sorted(items, key=name)
    if after is not None:
        ordered = [item for item in ordered if name(item) > str(after)]
    page = ordered[:limit]
    more = len(ordered) > limit
    return page, encode(listing, name(page[-1]), {}) if more and page else ""
