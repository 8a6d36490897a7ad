"""Node step parts that need no browser: URL patterns, templates, dwell, emulation, accounts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from services.browser_node._accounts import (
    AccountRefused,
    AccountState,
    AccountStates,
    proxy_settings,
    storage_state_from_json,
)
from services.browser_node._artifacts import ArtifactStore, default_artifact_dir
from services.browser_node._emulation import UnknownDevice, context_options
from services.browser_node._failures import navigation_error_class
from services.browser_node._patterns import dwell_duration, resolve_url, url_matches
from services.common.config import NodeSettings
from services.common.spec import DwellStep
from services.common.types import Cell, ErrorClass, Geolocation

pytestmark = pytest.mark.timeout(10)

PIXEL = {
    "user_agent": "Mozilla/5.0 (Linux; Android 14; Pixel 7) Mobile",
    "viewport": {"width": 412, "height": 839},
    "device_scale_factor": 2.625,
    "is_mobile": True,
    "has_touch": True,
    "default_browser_type": "chromium",
}


@pytest.mark.parametrize(
    ("pattern", "url", "expected"),
    [
        ("**/cart", "https://shop.example.com/a/cart", True),
        ("**/cart", "https://shop.example.com/cart?x=1", False),
        ("https://shop.example.com/*", "https://shop.example.com/cart", True),
        ("https://shop.example.com/*", "https://shop.example.com/a/cart", False),
        ("**/search?q=*", "http://h/search?q=shoes", True),
        ("**/search?q=*", "http://h/searchXq=shoes", False),
        ("**/{cart,basket}", "http://h/basket", True),
        ("/\\/orders\\/\\d+$/", "http://h/orders/42", True),
        ("/\\/orders\\/\\d+$/", "http://h/orders/new", False),
    ],
)
def test_url_patterns(pattern: str, url: str, expected: bool) -> None:
    """Globs match the whole URL (`*` stops at `/`, `?` is literal); /regex/ is searched."""
    assert url_matches(pattern, url) is expected


def test_goto_url_template() -> None:
    """{target}, {index}, {run_id} are filled in; relative URLs resolve against the target."""
    target = "http://127.0.0.1:8080/shop/"
    assert resolve_url("", target=target, index=3, run_id="r1") == target
    assert resolve_url("cart?i={index}", target=target, index=3, run_id="r1") == (
        "http://127.0.0.1:8080/shop/cart?i=3"
    )
    assert resolve_url("/me?run={run_id}", target=target, index=3, run_id="r1") == (
        "http://127.0.0.1:8080/me?run=r1"
    )
    assert resolve_url("{target}#top", target=target, index=3, run_id="r1") == f"{target}#top"


def test_dwell_is_deterministic_and_bounded() -> None:
    """The same (seed, job, step) gives the same dwell; all dwells lie within min..max."""
    params = DwellStep(min=timedelta(seconds=1), max=timedelta(seconds=3))
    first = dwell_duration(params, seed=7, job_index=11, step_index=2)
    assert first == dwell_duration(params, seed=7, job_index=11, step_index=2)
    values = {
        dwell_duration(params, seed=7, job_index=job, step_index=step)
        for job in range(30)
        for step in range(3)
    }
    assert len(values) > 80
    assert all(timedelta(seconds=1) <= value <= timedelta(seconds=3) for value in values)
    fixed = DwellStep(min=timedelta(milliseconds=500))
    assert dwell_duration(fixed, seed=1, job_index=1, step_index=1) == timedelta(milliseconds=500)


def test_device_emulation_keeps_traffic_marked() -> None:
    """A device's descriptor is applied, its user agent still carries the product token."""
    cell = Cell(
        device="Pixel 7",
        locale="de-DE",
        timezone="Europe/Berlin",
        geolocation=Geolocation(latitude=52.52, longitude=13.4),
    )
    options = context_options(
        cell, devices={"Pixel 7": PIXEL}, default_user_agent="Chrome", product_token="Smartfleet/1"
    )
    assert options["user_agent"] == f"{PIXEL['user_agent']} Smartfleet/1"
    assert options["viewport"] == {"width": 412, "height": 839} and options["is_mobile"] is True
    assert "default_browser_type" not in options
    assert (options["locale"], options["timezone_id"]) == ("de-DE", "Europe/Berlin")
    assert options["geolocation"]["latitude"] == 52.52
    assert options["permissions"] == ["geolocation"]


def test_default_cell_uses_the_browser_user_agent() -> None:
    """With no device the browser's own user agent is marked, and nothing else is set."""
    options = context_options(
        Cell(), devices={}, default_user_agent="HeadlessChrome/156", product_token="Smartfleet/1"
    )
    assert options == {"user_agent": "HeadlessChrome/156 Smartfleet/1"}


def test_unknown_device_is_refused() -> None:
    """A device this Playwright has no descriptor for is a clear error, not a desktop session."""
    with pytest.raises(UnknownDevice, match="'Nokia 3310'"):
        context_options(Cell(device="Nokia 3310"), devices={}, default_user_agent="x")


def test_proxy_settings() -> None:
    """A proxy URL becomes Playwright's settings, with credentials split out."""
    assert proxy_settings("") is None
    assert proxy_settings("proxy.corp:3128") == {"server": "http://proxy.corp:3128"}
    assert proxy_settings("socks5://u%40x:p%3Aw@gw.example:1080") == {
        "server": "socks5://gw.example:1080",
        "username": "u@x",
        "password": "p:w",
    }


def test_storage_state_must_be_playwright_json() -> None:
    """Empty state is none; anything but storage-state JSON refuses the account."""
    assert storage_state_from_json("a", b"") is None
    assert storage_state_from_json("a", b'{"cookies": [], "origins": []}') == {
        "cookies": [],
        "origins": [],
    }
    with pytest.raises(AccountRefused, match="not JSON"):
        storage_state_from_json("a", b"{nope")
    with pytest.raises(AccountRefused, match="storage-state"):
        storage_state_from_json("a", b'{"cookies": 5}')


def test_account_state_repr_hides_secrets() -> None:
    """Storage state and proxy credentials never show up in a log line."""
    state = AccountState(account="a", storage_state={"cookies": ["secret"]}, proxy="http://u:p@h")
    assert "secret" not in repr(state) and "u:p" not in repr(state)


class _Source:
    def __init__(self) -> None:
        self.gets = 0
        self.puts: list[AccountState] = []

    async def get_account_state(self, account: str, *, job_id: str) -> AccountState:
        self.gets += 1
        return AccountState(account=account, storage_state={"cookies": []}, proxy="p:1")

    async def put_account_state(self, state: AccountState, *, job_id: str) -> None:
        self.puts.append(state)


async def test_account_states_cache_and_write_back() -> None:
    """State is cached until fresh=True; a write-back sends only storage state and updates the cache."""
    source = _Source()
    states = AccountStates(source=source, ttl=timedelta(minutes=1))
    await states.get("a", job_id="r-0")
    await states.get("a", job_id="r-1")
    assert source.gets == 1
    await states.get("a", job_id="r-2", fresh=True)
    assert source.gets == 2
    await states.write_back("a", {"cookies": [{"name": "n"}]}, job_id="r-2")
    assert source.puts[0].proxy == "" and source.puts[0].storage_state == {
        "cookies": [{"name": "n"}]
    }
    cached = await states.get("a", job_id="r-3")
    assert (cached.storage_state, cached.proxy, source.gets) == (
        {"cookies": [{"name": "n"}]},
        "p:1",
        2,
    )


def test_artifact_keys_stay_inside_the_store(tmp_path: Path) -> None:
    """Keys are run/job/attempt/name.png with unsafe characters replaced: no way out of the root."""
    store = ArtifactStore(tmp_path)
    key = store.key(run_id="../..", job_id="a/b", attempt=2, name="..")
    assert key == "_../a_b/2/_.png"
    assert store.path(key).resolve().is_relative_to(tmp_path.resolve())
    path = store.path(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    store.discard([key])
    assert list(tmp_path.iterdir()) == []


def test_artifact_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """SMARTFLEET_ARTIFACT_DIR sets the node's artifact_dir; unset, a folder under the temp dir."""
    monkeypatch.setenv("SMARTFLEET_ARTIFACT_DIR", str(tmp_path))
    assert ArtifactStore(NodeSettings().artifact_dir).root == tmp_path
    monkeypatch.delenv("SMARTFLEET_ARTIFACT_DIR")
    assert NodeSettings().artifact_dir is None
    assert ArtifactStore(None).root == default_artifact_dir()
    assert default_artifact_dir().name == "smartfleet-artifacts"


def test_proxy_failures_of_account_browsers_are_the_accounts() -> None:
    """A proxy error in an account's browser blames the account; elsewhere it is transient."""
    message = "Page.goto: net::ERR_PROXY_CONNECTION_FAILED at http://x/"
    assert navigation_error_class(message, account="a") is ErrorClass.ACCOUNT
    assert navigation_error_class(message, account="") is ErrorClass.TRANSIENT
    assert (
        navigation_error_class("net::ERR_CONNECTION_REFUSED", account="a") is ErrorClass.TRANSIENT
    )
