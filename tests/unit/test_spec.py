"""Run spec validation: every refusal names the field and the reason."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.common.errors import InvalidArgument
from services.common.spec import validate_spec

LOCAL = "http://127.0.0.1:8080/"


def refusal(data: dict[str, object], allowed: list[str] | None = None) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        validate_spec(data, allowed_hosts=allowed or [])
    return caught.value


def test_minimal_spec_gets_defaults() -> None:
    """A spec with targets and sessions is valid and takes fast pacing, chromium, 60s timeout."""
    spec = validate_spec({"targets": [LOCAL], "sessions": 3}, allowed_hosts=[])
    assert (spec.pacing.mode, spec.engine, spec.limits.session_timeout) == (
        "fast",
        "chromium",
        timedelta(seconds=60),
    )


def test_negative_sessions_names_the_field() -> None:
    """Negative sessions are refused as spec.sessions with the bound."""
    error = refusal({"targets": [LOCAL], "sessions": -5})
    assert error.field == "spec.sessions"
    assert error.reason == "must be ≥ 1"


def test_non_http_url_names_the_target_index() -> None:
    """A non-http target is refused with its index in the path."""
    error = refusal({"targets": [LOCAL, "ftp://127.0.0.1/file"], "sessions": 1})
    assert error.field == "spec.targets[1]"
    assert "not an http or https URL" in error.reason


def test_unknown_field_is_refused() -> None:
    """An unknown field is named, not ignored."""
    error = refusal({"targets": [LOCAL], "sessions": 1, "sesions": 2})
    assert error.field == "spec.sesions"
    assert "Extra inputs are not permitted" in error.reason


def test_host_outside_allowlist_is_refused() -> None:
    """A public or private host not in the allowlist is refused (the SSRF guard)."""
    for url in ("https://example.com/", "http://10.0.0.1/", "http://169.254.169.254/latest"):
        error = refusal({"targets": [url], "sessions": 1})
        assert error.field == "spec.targets[0]"
        assert "allowlist" in error.reason


def test_allowlisted_host_and_wildcard_are_accepted() -> None:
    """Hosts named in config, exactly or by *.suffix, are accepted."""
    spec = validate_spec(
        {"targets": ["https://shop.example.com/", "https://example.org/"], "sessions": 1},
        allowed_hosts=["*.example.com", "example.org"],
    )
    assert len(spec.targets) == 2


def test_session_timeout_bounds() -> None:
    """A session timeout under one second is refused under spec.limits.session_timeout."""
    error = refusal({"targets": [LOCAL], "sessions": 1, "limits": {"session_timeout": 0.2}})
    assert error.field == "spec.limits.session_timeout"


def test_no_targets_is_refused() -> None:
    """An empty target list is refused."""
    assert refusal({"targets": [], "sessions": 1}).field == "spec.targets"


def test_invalid_step_names_index_field_and_reason() -> None:
    """A step missing its selector is refused as spec.steps[N].<action>.<field>."""
    error = refusal({"targets": [LOCAL], "sessions": 1, "steps": [{"goto": {}}, {"click": {}}]})
    assert (error.field, error.reason) == ("spec.steps[1].click.selector", "is required")


def test_step_with_two_actions_is_refused() -> None:
    """Each step has exactly one action."""
    error = refusal(
        {
            "targets": [LOCAL],
            "sessions": 1,
            "steps": [{"click": {"selector": "a"}, "hover": {"selector": "a"}}],
        }
    )
    assert error.field == "spec.steps[0]"
    assert "exactly one action" in error.reason


def test_screenshot_needs_an_artifact_policy_that_keeps_it() -> None:
    """A screenshot step under artifacts: never is refused rather than silently dropped."""
    error = refusal({"targets": [LOCAL], "sessions": 1, "steps": [{"screenshot": {}}]})
    assert error.field == "spec.steps[0].screenshot"


def test_unknown_device_is_refused() -> None:
    """Matrix devices must be Playwright device names."""
    error = refusal(
        {"targets": [LOCAL], "sessions": 1, "matrix": {"devices": [{"name": "Nokia 3310"}]}}
    )
    assert error.field == "spec.matrix.devices[0].name"


def test_long_regex_pattern_is_refused() -> None:
    """URL /regex/ patterns are bounded, since nodes evaluate them."""
    error = refusal(
        {"targets": [LOCAL], "sessions": 1, "steps": [{"wait_for": {"url": "/" + "a" * 300 + "/"}}]}
    )
    assert error.field == "spec.steps[0].wait_for"
