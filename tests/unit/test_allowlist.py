"""The target allowlist (and SSRF guard)."""

from __future__ import annotations

import pytest

from services.common.allowlist import host_allowed


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3", "app.localhost"]
)
def test_loopback_allowed_by_default(host: str) -> None:
    """Loopback needs no configuration."""
    assert host_allowed(host, [])


@pytest.mark.parametrize(
    "host",
    ["10.0.0.5", "192.168.1.1", "169.254.169.254", "example.com", "metadata.google.internal"],
)
def test_everything_else_refused_by_default(host: str) -> None:
    """Private, link-local, metadata and public hosts are refused unless listed."""
    assert not host_allowed(host, [])


def test_wildcard_matches_subdomains_only() -> None:
    """`*.example.com` allows shop.example.com but not example.com or badexample.com."""
    assert host_allowed("shop.example.com", ["*.example.com"])
    assert not host_allowed("example.com", ["*.example.com"])
    assert not host_allowed("badexample.com", ["*.example.com"])
