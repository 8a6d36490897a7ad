"""Steps, emulation and accounts on real Chromium against the demo site, with a NodeLink peer."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from demo.site import DemoSite
from services import __version__
from services.browser_node import AccountStates, ArtifactStore, BrowserPool, SessionRunner
from services.browser_node._link import NodeStatus, SchedulerLink
from services.browser_node._patterns import dwell_duration
from services.common.spec import Step
from services.common.types import (
    Cell,
    ErrorClass,
    Geolocation,
    JobEnvelope,
    NodeInfo,
    NodeLoad,
    NodeState,
    Outcome,
    SessionResult,
)
from smartfleet.v1 import node_link_pb2, node_link_pb2_grpc

# One browser pool for the module: the tests share its event loop.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(30),
    pytest.mark.asyncio(loop_scope="module"),
]

RUN_ID = "run-steps"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_jobs = itertools.count(1)


class FakeAccountLink(node_link_pb2_grpc.NodeLinkServiceServicer):
    """The scheduler's account side of NodeLink: storage state and proxy per account."""

    def __init__(self) -> None:
        self.states: dict[str, bytes] = {}
        self.gets: list[str] = []
        self.puts: list[tuple[str, dict[str, Any]]] = []

    async def GetAccountState(
        self, request: Any, context: Any
    ) -> node_link_pb2.GetAccountStateResponse:
        self.gets.append(request.account)
        if request.account == "undecryptable":  # as when the scheduler's secret key changed
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "cannot be decrypted")
        if request.account not in self.states:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no account {request.account!r}")
        return node_link_pb2.GetAccountStateResponse(
            account=request.account, storage_state=self.states[request.account]
        )

    async def PutAccountState(
        self, request: Any, context: Any
    ) -> node_link_pb2.PutAccountStateResponse:
        self.puts.append((request.account, json.loads(request.storage_state)))
        self.states[request.account] = request.storage_state
        return node_link_pb2.PutAccountStateResponse()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def link() -> AsyncIterator[tuple[FakeAccountLink, SchedulerLink]]:
    fake = FakeAccountLink()
    server = grpc.aio.server()
    node_link_pb2_grpc.add_NodeLinkServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = SchedulerLink(
        address=f"127.0.0.1:{port}",
        info=lambda: NodeInfo(
            node_id="node-steps", host="test", engines=("chromium",), labels={}, slots=1
        ),
        status=lambda: NodeStatus(
            load=NodeLoad(busy_slots=0, free_slots=1), state=NodeState.READY, slots=1
        ),
        on_command=lambda _: None,
    )
    try:
        yield fake, client
    finally:
        await client.stop()
        await server.stop(0)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool(link: tuple[FakeAccountLink, SchedulerLink]) -> AsyncIterator[BrowserPool]:
    async with BrowserPool(accounts=AccountStates(source=link[1])) as browser_pool:
        yield browser_pool


@pytest.fixture
def fake(link: tuple[FakeAccountLink, SchedulerLink]) -> FakeAccountLink:
    return link[0]


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def runner(pool: BrowserPool, artifacts: ArtifactStore) -> SessionRunner:
    return SessionRunner(pool=pool, node_id="node-steps", artifacts=artifacts)


@pytest.fixture
def site(demo_site: DemoSite) -> Iterator[str]:
    yield demo_site.url


def job(target: str, *steps: dict[str, Any], timeout: float = 10, **fields: Any) -> JobEnvelope:
    values: dict[str, Any] = {
        "job_id": f"job-{next(_jobs)}",
        "attempt": 1,
        "run_id": RUN_ID,
        "index": 0,
        "target_url": target,
        "engine": "chromium",
        "session_timeout": timedelta(seconds=timeout),
        "deadline": datetime.now(UTC) + timedelta(minutes=1),
        "steps": tuple(Step.model_validate(step) for step in steps),
        **fields,
    }
    return JobEnvelope(**values)


def ok(result: SessionResult) -> SessionResult:
    assert result.outcome is Outcome.OK, (result.error, result.steps)
    assert all(step.status == "ok" for step in result.steps), result.steps
    return result


def cookie_state(value: str) -> bytes:
    cookie = {
        "name": "session",
        "value": value,
        "domain": "127.0.0.1",
        "path": "/",
        "expires": -1,
        "httpOnly": False,
        "secure": False,
        "sameSite": "Lax",
    }
    return json.dumps({"cookies": [cookie], "origins": []}).encode()


# --- one test per step type -----------------------------------------------------------------


async def test_goto_fills_the_url_template(runner: SessionRunner, site: str) -> None:
    """goto resolves {index}/{run_id} relative to the target and {target}; the first is measured."""
    result = ok(
        await runner.run(
            job(
                f"{site}/",
                {"goto": {"url": "products?i={index}&run={run_id}"}},
                {"goto": {"url": "{target}about", "wait_until": "domcontentloaded"}},
                {"extract": {"name": "title", "selector": "h1"}},
                index=7,
            )
        )
    )
    assert result.final_url == f"{site}/products?i=7&run={RUN_ID}"
    assert result.http_status == 200 and result.timing.load_ms > 0
    assert result.extracted == {"title": "About"}
    assert [step.action for step in result.steps] == ["goto", "goto", "extract"]


async def test_wait_for_selector_url_and_load_state(runner: SessionRunner, site: str) -> None:
    """wait_for waits for a late element, a URL glob or /regex/ after a click, and a load state."""
    ok(
        await runner.run(
            job(
                f"{site}/form",
                {"wait_for": {"selector": "#late"}},
                {"goto": {"url": "/"}},
                {"click": {"selector": "a[href='/about']"}},
                {"wait_for": {"url": "**/about"}},
                {"wait_for": {"url": "/:\\d+/about$/"}},
                {"wait_for": {"load_state": "networkidle"}},
                {"assert": {"text": "Served on loopback"}},
            )
        )
    )


async def test_wait_for_that_never_happens_is_a_timeout(runner: SessionRunner, site: str) -> None:
    """A wait_for past its own timeout ends the session as a transient timeout naming the step."""
    result = await runner.run(
        job(f"{site}/form", {"wait_for": {"selector": "#never"}, "timeout": "400ms"})
    )
    assert (result.outcome, result.error_class) == (Outcome.TIMEOUT, ErrorClass.TRANSIENT)
    assert "step 0 (wait_for)" in result.error and "'#never'" in result.error
    assert result.steps[0].status == "failed" and result.duration_ms < 3_000


async def test_step_timeout_never_exceeds_the_session(runner: SessionRunner, site: str) -> None:
    """A step with a 30 s timeout in a 2 s session is cut short by the session timeout."""
    result = await runner.run(
        job(f"{site}/form", {"wait_for": {"selector": "#never"}, "timeout": "30s"}, timeout=2)
    )
    assert (result.outcome, result.error_class) == (Outcome.TIMEOUT, ErrorClass.TRANSIENT)
    assert "session timeout of 2s" in result.error
    assert result.duration_ms < 3_500


async def test_click(runner: SessionRunner, site: str) -> None:
    """click presses the button, whose handler writes the greeting."""
    result = ok(
        await runner.run(
            job(
                f"{site}/form",
                {"click": {"selector": "#greet"}},
                {"extract": {"name": "greeting", "selector": "#greeting"}},
            )
        )
    )
    assert result.extracted["greeting"] == "Hello, stranger (red)!"


async def test_fill(runner: SessionRunner, site: str) -> None:
    """fill types into the input (its input event fires)."""
    result = ok(
        await runner.run(
            job(
                f"{site}/form",
                {"fill": {"selector": "#name", "value": "Ada"}},
                {"click": {"selector": "#greet"}},
                {"extract": {"name": "echo", "selector": "#name-echo"}},
                {"extract": {"name": "greeting", "selector": "#greeting"}},
            )
        )
    )
    assert result.extracted == {"echo": "Ada", "greeting": "Hello, Ada (red)!"}


async def test_press_on_an_element_and_on_the_page(runner: SessionRunner, site: str) -> None:
    """press with a selector focuses the element; without one it goes to the page's keyboard."""
    result = ok(
        await runner.run(
            job(
                f"{site}/form",
                {"press": {"selector": "#name", "key": "Enter"}},
                {"extract": {"name": "first", "selector": "#last-key"}},
                {"press": {"key": "Escape"}},
                {"extract": {"name": "second", "selector": "#last-key"}},
            )
        )
    )
    assert result.extracted == {"first": "Enter", "second": "Escape"}


async def test_select(runner: SessionRunner, site: str) -> None:
    """select picks an option by label or value."""
    result = ok(
        await runner.run(
            job(
                f"{site}/form",
                {"select": {"selector": "#colour", "values": ["Blue"]}},
                {"extract": {"name": "by_label", "selector": "#colour-echo"}},
                {"select": {"selector": "#colour", "values": ["green"]}},
                {"extract": {"name": "by_value", "selector": "#colour-echo"}},
            )
        )
    )
    assert result.extracted == {"by_label": "blue", "by_value": "green"}


async def test_hover(runner: SessionRunner, site: str) -> None:
    """hover moves the mouse over the target, which reveals hidden text."""
    result = await runner.run(
        job(
            f"{site}/form",
            {"assert": {"text": "Revealed by hover"}, "timeout": "300ms"},
            {"hover": {"selector": "#hover-target"}},
            {"assert": {"text": "Revealed by hover"}},
        )
    )
    assert result.outcome is Outcome.ASSERTION_FAILED  # not visible before the hover
    result = ok(
        await runner.run(
            job(
                f"{site}/form",
                {"hover": {"selector": "#hover-target"}},
                {"assert": {"text": "Revealed by hover"}},
            )
        )
    )


async def test_scroll_by_to_element_and_to_bottom(runner: SessionRunner, site: str) -> None:
    """scroll by pixels, to an element, and (neither given) to the bottom of the page."""
    result = ok(
        await runner.run(
            job(
                f"{site}/form",
                {"scroll": {"dy": 400}},
                {"assert": {"text": "Scrolled: 400"}},
                {"scroll": {"selector": "#middle"}},
                {"dwell": {"min": "150ms"}},
                {"extract": {"name": "middle", "selector": "#scroll-pos"}},
                {"scroll": {}},
                {"assert": {"text": "reached the bottom"}},
            )
        )
    )
    assert int(result.extracted["middle"]) > 400


async def test_dwell_is_seeded_and_within_bounds(runner: SessionRunner, site: str) -> None:
    """dwell waits a seeded time between min and max: the same for the same seed, index and step."""
    dwell = {"dwell": {"min": "200ms", "max": "700ms"}}
    params = Step.model_validate(dwell).dwell
    assert params is not None
    expected = dwell_duration(params, seed=42, job_index=3, step_index=0)
    assert expected == dwell_duration(params, seed=42, job_index=3, step_index=0)
    assert timedelta(milliseconds=200) <= expected <= timedelta(milliseconds=700)
    spread = {dwell_duration(params, seed=seed, job_index=3, step_index=0) for seed in range(20)}
    assert len(spread) > 15 and all(
        timedelta(milliseconds=200) <= d <= timedelta(milliseconds=700) for d in spread
    )
    for _ in range(2):
        result = ok(await runner.run(job(f"{site}/about", dwell, seed=42, index=3)))
        measured = result.steps[0].duration_ms
        # Never shorter than the seeded time; a busy machine may add a little.
        assert (
            expected.total_seconds() * 1000 - 5 <= measured < expected.total_seconds() * 1000 + 500
        )


async def test_extract_text_attribute_and_lists(runner: SessionRunner, site: str) -> None:
    """extract takes text or an attribute, of the first match or (all) of every match."""
    result = ok(
        await runner.run(
            job(
                f"{site}/products",
                {"extract": {"name": "title", "selector": "h1"}},
                {"extract": {"name": "first_sku", "selector": ".product", "attribute": "data-sku"}},
                {"extract": {"name": "names", "selector": ".product", "all": True}},
                {
                    "extract": {
                        "name": "skus",
                        "selector": ".product",
                        "attribute": "data-sku",
                        "all": True,
                    }
                },
                {"extract": {"name": "none", "selector": ".no-such", "all": True}},
            )
        )
    )
    assert result.extracted == {
        "title": "Products",
        "first_sku": "sku-1",
        "names": [f"Product {n}" for n in range(1, 6)],
        "skus": [f"sku-{n}" for n in range(1, 6)],
        "none": [],
    }


async def test_assert_passes(runner: SessionRunner, site: str) -> None:
    """Every kind of assertion that holds lets the session succeed."""
    result = ok(
        await runner.run(
            job(
                f"{site}/products",
                {"assert": {"status": 200}},
                {"assert": {"text": "Product 3"}},
                {"assert": {"selector": ".product", "count": 5}},
                {"assert": {"selector": ".product", "min_count": 3}},
                {"assert": {"selector": "#products"}},
                {"assert": {"url": "**/products"}},
                {"assert": {"url": "/products$/"}},
            )
        )
    )
    assert len(result.steps) == 7


async def test_assert_fails_naming_the_step(runner: SessionRunner, site: str) -> None:
    """A failed assertion is assertion_failed (permanent), naming the step, expected and found."""
    result = await runner.run(
        job(
            f"{site}/products",
            {"goto": {}},
            {"assert": {"selector": ".product", "count": 4}, "timeout": "500ms"},
            {"extract": {"name": "never", "selector": "h1"}},
        )
    )
    assert (result.outcome, result.error_class) == (
        Outcome.ASSERTION_FAILED,
        ErrorClass.PERMANENT,
    )
    assert "step 1 (assert)" in result.error
    assert "exactly 4 element(s) matching '.product'" in result.error and "found 5" in result.error
    assert [step.status for step in result.steps] == ["ok", "failed"]
    assert result.extracted == {}


async def test_status_assert_takes_over_http_errors(runner: SessionRunner, site: str) -> None:
    """A 404 does not end a session whose steps assert a status: the assertion decides."""
    result = ok(await runner.run(job(f"{site}/gone", {"goto": {}}, {"assert": {"status": 404}})))
    assert result.http_status == 404
    failed = await runner.run(
        job(f"{site}/gone", {"goto": {}}, {"extract": {"name": "h", "selector": "h1"}})
    )
    assert (failed.outcome, failed.error_class) == (Outcome.HTTP_ERROR, ErrorClass.PERMANENT)


async def test_screenshot_produces_png_artifacts(
    runner: SessionRunner, artifacts: ArtifactStore, site: str
) -> None:
    """screenshot keeps a PNG of the page (full page) and of an element, referenced by key."""
    envelope = job(
        f"{site}/products",
        {"screenshot": {"name": "page", "full_page": True}},
        {"screenshot": {"selector": "#products"}},
        artifacts="always",
    )
    result = ok(await runner.run(envelope))
    assert result.artifacts[:2] == (
        f"{RUN_ID}/{envelope.job_id}/1/page.png",
        f"{RUN_ID}/{envelope.job_id}/1/step-1.png",
    )
    # `always` also keeps the final page, the trace and the HAR (tests/integration/test_artifacts.py).
    pngs = [key for key in result.artifacts if key.endswith(".png")]
    assert [key.rsplit("/", 1)[1] for key in pngs] == ["page.png", "step-1.png", "final.png"]
    for key in pngs:
        assert artifacts.path(key).read_bytes().startswith(PNG_MAGIC)


async def test_artifacts_policy(runner: SessionRunner, artifacts: ArtifactStore, site: str) -> None:
    """on_failure keeps screenshots (plus one at the failure) only of failed sessions; never takes none."""
    shot = {"screenshot": {"name": "shot"}}
    passed = ok(await runner.run(job(f"{site}/about", shot, artifacts="on_failure")))
    assert passed.artifacts == () and not any(artifacts.root.rglob("*.png"))
    failing = job(
        f"{site}/about",
        shot,
        {"assert": {"text": "nope"}, "timeout": "200ms"},
        artifacts="on_failure",
    )
    failed = await runner.run(failing)
    assert failed.outcome is Outcome.ASSERTION_FAILED
    assert [key.rsplit("/", 1)[1] for key in failed.artifacts] == [
        "shot.png",
        "failure.png",
        "trace.zip",
        "session.har",
    ]
    assert all(artifacts.path(key).is_file() for key in failed.artifacts)
    never = await runner.run(job(f"{site}/about", shot, artifacts="never"))
    assert never.outcome is Outcome.OK and never.artifacts == ()
    assert never.steps[0].status == "skipped" and "never" in never.steps[0].error


async def test_optional_step_is_skipped(runner: SessionRunner, site: str) -> None:
    """An optional step whose element is absent is skipped and the session goes on."""
    result = await runner.run(
        job(
            f"{site}/form",
            {"click": {"selector": "#cookie-banner"}, "optional": True, "timeout": "300ms"},
            {"click": {"selector": "#greet"}},
            {"assert": {"text": "Hello, stranger"}},
        )
    )
    assert result.outcome is Outcome.OK, result.error
    assert [step.status for step in result.steps] == ["skipped", "ok", "ok"]
    assert "no element matches '#cookie-banner'" in result.steps[0].error


async def test_missing_element_fails_the_session(runner: SessionRunner, site: str) -> None:
    """A required interaction whose element never appears is assertion_failed (permanent)."""
    result = await runner.run(
        job(f"{site}/form", {"click": {"selector": "#cookie-banner"}, "timeout": "300ms"})
    )
    assert (result.outcome, result.error_class) == (
        Outcome.ASSERTION_FAILED,
        ErrorClass.PERMANENT,
    )
    assert result.error == "step 0 (click): no element matches '#cookie-banner' within 300ms"


# --- emulation --------------------------------------------------------------------------------


async def test_cell_emulation(runner: SessionRunner, demo_site: DemoSite) -> None:
    """A Pixel 7 / de-DE / Asia/Tokyo cell with a position: the page sees all of it, still marked."""
    cell = Cell(
        device="Pixel 7",
        locale="de-DE",
        timezone="Asia/Tokyo",
        geolocation=Geolocation(latitude=35.68, longitude=139.69),
    )
    result = ok(
        await runner.run(
            job(
                f"{demo_site.url}/env",
                {"assert": {"text": "35.68,139.69"}},
                *(
                    {"extract": {"name": name, "selector": f"#{name}"}}
                    for name in ("ua", "lang", "tz", "viewport", "touch")
                ),
                cell=cell,
            )
        )
    )
    found = result.extracted
    assert "Pixel 7" in found["ua"] and "Mobile" in found["ua"]
    assert found["ua"].endswith(f" Smartfleet/{__version__}")
    assert (found["lang"], found["tz"], found["viewport"]) == (
        "de-DE",
        "Asia/Tokyo",
        "412x839@2.625",
    )
    assert int(found["touch"]) > 0
    assert result.cell == cell
    assert any("Pixel 7" in agent and "Smartfleet/" in agent for agent in demo_site.user_agents)


# --- accounts ---------------------------------------------------------------------------------


async def test_accounts_are_isolated(
    runner: SessionRunner, pool: BrowserPool, fake: FakeAccountLink, site: str
) -> None:
    """Accounts see only their own cookie, each in its own browser, apart from account-less ones."""
    fake.states.update({"alice": cookie_state("alice"), "bob": cookie_state("bob")})
    who = ({"goto": {"url": "/me"}}, {"extract": {"name": "who", "selector": "#who"}})
    alice, bob, nobody = await asyncio.gather(
        runner.run(job(site, *who, account="alice")),
        runner.run(job(site, *who, account="bob")),
        runner.run(job(site, *who)),
    )
    assert ok(alice).extracted["who"] == "signed in as alice" and alice.account == "alice"
    assert ok(bob).extracted["who"] == "signed in as bob"
    assert ok(nobody).extracted["who"] == "anonymous"
    browsers = [pool.browser_for("alice"), pool.browser_for("bob"), pool.browser_for()]
    assert all(browser is not None for browser in browsers)
    assert len({id(browser) for browser in browsers}) == 3
    async with pool.session(run_id=RUN_ID, account="alice") as page:
        assert page.context.browser is pool.browser_for("alice")


async def test_write_back_persists_the_new_cookie(
    runner: SessionRunner, fake: FakeAccountLink, site: str
) -> None:
    """With write_back_state the cookie a session got is stored via PutAccountState and reused."""
    fake.states["carol"] = b""
    login = job(
        site,
        {"goto": {"url": "/login?user=carol"}},
        {"assert": {"text": "signed in as carol"}},
        account="carol",
        write_back_state=True,
    )
    ok(await runner.run(login))
    (account, state) = fake.puts[-1]
    assert account == "carol"
    assert {"name": "session", "value": "carol"}.items() <= state["cookies"][0].items()
    again = ok(
        await runner.run(
            job(
                site,
                {"goto": {"url": "/me"}},
                {"extract": {"name": "who", "selector": "#who"}},
                account="carol",
            )
        )
    )
    assert again.extracted["who"] == "signed in as carol"
    assert fake.gets.count("carol") == 1  # one fetch for the new browser, then the cache


async def test_account_state_errors(runner: SessionRunner, site: str) -> None:
    """An unknown account blames the account (class `account`); a scheduler-side problem is transient."""
    unknown = await runner.run(job(site, account="nobody-here"))
    assert (unknown.outcome, unknown.error_class) == (Outcome.INTERNAL_ERROR, ErrorClass.ACCOUNT)
    assert "'nobody-here'" in unknown.error
    locked = await runner.run(job(site, account="undecryptable"))
    assert (locked.outcome, locked.error_class) == (Outcome.INTERNAL_ERROR, ErrorClass.TRANSIENT)
    assert "FAILED_PRECONDITION" in locked.error


async def test_account_browsers_capped_and_closed_when_idle(
    link: tuple[FakeAccountLink, SchedulerLink], site: str, tmp_path: Path
) -> None:
    """Beyond the cap the least recently used account browser closes; idle ones close too."""
    fake, client = link
    fake.states.update({"dave": b"", "erin": b""})
    async with BrowserPool(
        accounts=AccountStates(source=client),
        max_account_browsers=1,
        account_idle=timedelta(milliseconds=400),
    ) as capped:
        runner = SessionRunner(pool=capped, node_id="node-steps", artifacts=ArtifactStore(tmp_path))
        ok(await runner.run(job(f"{site}/about", account="dave")))
        dave = capped.browser_for("dave")
        assert dave is not None and dave.is_connected()
        ok(await runner.run(job(f"{site}/about", account="erin")))
        assert not dave.is_connected() and capped.browser_for("dave") is None
        erin = capped.browser_for("erin")
        assert erin is not None
        for _ in range(40):  # retired first, closed a moment later
            if capped.account_browsers == 0 and not erin.is_connected():
                break
            await asyncio.sleep(0.1)
        assert capped.account_browsers == 0 and not erin.is_connected()
        assert capped.browser_for() is not None  # the shared browser stays
