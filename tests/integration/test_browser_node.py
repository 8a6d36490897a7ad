"""Browser node against real parts: Chromium, the demo site, nats-server, and a NodeLink peer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from demo.site import DemoSite
from services import __version__
from services.browser_node import BrowserNode, BrowserPool, SessionRunner
from services.browser_node.server import serve
from services.common.bus import (
    STREAM,
    JobBus,
    message_id,
    node_pools,
    pool_consumer,
    pool_subject,
)
from services.common.config import NodeSettings
from services.common.contracts import envelope_to_bytes, node_info_from_pb, result_from_pb
from services.common.nats_server import EmbeddedNatsServer
from services.common.types import Cell, ErrorClass, JobEnvelope, Outcome, SessionResult
from smartfleet.v1 import node_link_pb2, node_link_pb2_grpc, nodes_pb2

pytestmark = [pytest.mark.browser, pytest.mark.timeout(45)]

POOL = "chromium"
EU_POOL = "chromium.region_eu"
ACK_WAIT = timedelta(seconds=5)


# --- fixtures (nats_server and demo_site come from tests/conftest.py) -----------------------


@pytest.fixture
async def nc(nats_server: EmbeddedNatsServer) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def pool() -> AsyncIterator[BrowserPool]:
    async with BrowserPool() as browser_pool:
        yield browser_pool


@pytest.fixture
def runner(pool: BrowserPool) -> SessionRunner:
    return SessionRunner(pool=pool, node_id="node-test")


class FakeScheduler(node_link_pb2_grpc.NodeLinkServiceServicer):
    """A real NodeLink server that, like the scheduler, creates the node's pool consumers on Register."""

    def __init__(self, js: JetStreamContext) -> None:
        self._bus = JobBus(js, ack_wait=ACK_WAIT)
        self.results: dict[tuple[str, int], SessionResult] = {}
        self.known: set[str] = set()
        self.registrations = 0
        self.report_attempts = 0
        self.reports_open = asyncio.Event()
        self.reports_open.set()
        self.commands: list[node_link_pb2.NodeCommand] = []
        self.states: list[int] = []
        self.info: nodes_pb2.NodeInfo | None = None

    async def RegisterNode(self, request: Any, context: Any) -> node_link_pb2.RegisterNodeResponse:
        self.info = request.info
        await self._bus.ensure_stream()
        info = node_info_from_pb(request.info)
        for pool in node_pools(info.engines, info.labels):
            await self._bus.ensure_pool(pool)
        self.known.add(request.info.node_id)
        self.registrations += 1
        return node_link_pb2.RegisterNodeResponse(
            heartbeat_interval=duration_pb2.Duration(nanos=200_000_000)
        )

    async def Heartbeat(self, request: Any, context: Any) -> node_link_pb2.HeartbeatResponse:
        self.states.append(request.state)
        commands, self.commands = self.commands, []
        return node_link_pb2.HeartbeatResponse(
            known=request.node_id in self.known, commands=commands
        )

    async def ReportResults(
        self, request: Any, context: Any
    ) -> node_link_pb2.ReportResultsResponse:
        self.report_attempts += 1
        if not self.reports_open.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "scheduler database is down")
        stored = []
        for message in request.results:
            key = (message.job_id, message.attempt)
            stored.append(
                node_link_pb2.StoredResult(
                    job_id=key[0], attempt=key[1], new=key not in self.results
                )
            )
            self.results.setdefault(key, result_from_pb(message))
        return node_link_pb2.ReportResultsResponse(stored=stored)

    async def ReportInProgress(
        self, request: Any, context: Any
    ) -> node_link_pb2.ReportInProgressResponse:
        return node_link_pb2.ReportInProgressResponse()


@pytest.fixture
async def scheduler(nc: NatsClient) -> AsyncIterator[tuple[FakeScheduler, str]]:
    fake = FakeScheduler(nc.jetstream())
    server = grpc.aio.server()
    node_link_pb2_grpc.add_NodeLinkServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def node_settings(
    tmp_path: Path, nats_url: str, scheduler_addr: str, **overrides: Any
) -> NodeSettings:
    values: dict[str, Any] = {
        "node_id": "node-test",
        "node_slots": 3,
        "node_listen": "127.0.0.1:0",
        "scheduler_addr": scheduler_addr,
        "nats_url": nats_url,
        "shutdown_grace": timedelta(seconds=2),
        "ready_file": str(tmp_path / "node.ready.json"),
        **overrides,
    }
    return NodeSettings(**values)


def envelope(url: str, *, job_id: str = "job-1", timeout: float = 10, **fields: Any) -> JobEnvelope:
    values: dict[str, Any] = {
        "job_id": job_id,
        "attempt": 1,
        "run_id": "run-1",
        "index": 0,
        "target_url": url,
        "engine": POOL,
        "session_timeout": timedelta(seconds=timeout),
        "deadline": datetime.now(UTC) + timedelta(minutes=1),
        **fields,
    }
    return JobEnvelope(**values)


async def publish(js: JetStreamContext, job: JobEnvelope, pool: str = POOL) -> None:
    await js.publish(
        pool_subject(pool),
        envelope_to_bytes(job),
        stream=STREAM,
        headers={"Nats-Msg-Id": message_id(job.job_id, job.attempt)},
    )


async def eventually(
    check: Callable[[], Any], *, timeout: float = 20, what: str = "condition"
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def stream_messages(js: JetStreamContext) -> int:
    return (await js.stream_info(STREAM)).state.messages


async def stream_empty(js: JetStreamContext) -> bool:
    return await stream_messages(js) == 0


async def health_status(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2
        )
    return reply.status


# --- the session runner -------------------------------------------------------------------


async def test_session_ok_with_timings(runner: SessionRunner, demo_site: DemoSite) -> None:
    """A plain page loads as `ok` with status 200, the final URL and plausible timings."""
    result = await runner.run(envelope(f"{demo_site.url}/"))
    assert result.outcome is Outcome.OK and result.error_class is ErrorClass.NONE, result.error
    assert result.http_status == 200
    assert result.final_url == f"{demo_site.url}/"
    assert result.redirect_chain == ()
    assert 0 < result.timing.ttfb_ms <= result.timing.dom_content_loaded_ms <= result.timing.load_ms
    assert result.timing.load_ms < result.duration_ms < 10_000
    assert result.browser_version and result.node_id == "node-test" and result.engine == POOL


async def test_session_records_redirect_chain(runner: SessionRunner, demo_site: DemoSite) -> None:
    """Both redirect hops are recorded in order and the final URL is where the chain ends."""
    result = await runner.run(
        envelope(f"{demo_site.url}/redirect-chain", allowed_hosts=("127.0.0.1",))
    )
    assert result.outcome is Outcome.OK, result.error
    assert result.redirect_chain == (f"{demo_site.url}/redirect-chain", f"{demo_site.url}/redirect")
    assert result.final_url == f"{demo_site.url}/"
    assert result.http_status == 200


async def test_session_server_error_is_transient(
    runner: SessionRunner, demo_site: DemoSite
) -> None:
    """A 500 is an http_error worth retrying (transient) and keeps the status."""
    result = await runner.run(envelope(f"{demo_site.url}/error"))
    assert (result.outcome, result.error_class, result.http_status) == (
        Outcome.HTTP_ERROR,
        ErrorClass.TRANSIENT,
        500,
    )


async def test_session_not_found_is_permanent(runner: SessionRunner, demo_site: DemoSite) -> None:
    """A 404 is an http_error that retrying will not fix (permanent)."""
    result = await runner.run(envelope(f"{demo_site.url}/no-such-page"))
    assert (result.outcome, result.error_class, result.http_status) == (
        Outcome.HTTP_ERROR,
        ErrorClass.PERMANENT,
        404,
    )


async def test_session_timeout(runner: SessionRunner, demo_site: DemoSite) -> None:
    """A page slower than the session timeout ends as a transient timeout, near the timeout."""
    result = await runner.run(envelope(f"{demo_site.url}/slow?ms=3000", timeout=1))
    assert (result.outcome, result.error_class) == (Outcome.TIMEOUT, ErrorClass.TRANSIENT)
    assert "1s" in result.error
    assert 900 <= result.duration_ms < 2_900


async def test_session_blocks_host_outside_allowlist(runner: SessionRunner) -> None:
    """A target whose host is not allowlisted (here cloud metadata) is refused, permanent, unsent."""
    result = await runner.run(
        envelope("http://169.254.169.254/latest/meta-data/", allowed_hosts=("example.com",))
    )
    assert (result.outcome, result.error_class) == (
        Outcome.BLOCKED_BY_ALLOWLIST,
        ErrorClass.PERMANENT,
    )
    assert "169.254.169.254" in result.error
    assert result.duration_ms < 100  # no browser work at all


async def test_session_allowlist_keeps_loopback(runner: SessionRunner, demo_site: DemoSite) -> None:
    """As on the scheduler, loopback stays allowed when the allowlist names other hosts."""
    result = await runner.run(envelope(f"{demo_site.url}/about", allowed_hosts=("example.com",)))
    assert result.outcome is Outcome.OK, result.error


@pytest.fixture
def redirect_away() -> Iterator[str]:
    """A loopback page that redirects to the cloud metadata address."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/go"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def answering_proxy(page_for: Callable[[str], bytes]) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP proxy that answers every request itself (`page_for(url)`, HTML when it
    is not empty) and records the URLs asked for, in the absolute form proxies get."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = page_for(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if body else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def egress_proxy() -> Iterator[tuple[str, list[str]]]:
    """A proxy answering every request with the same page."""
    with answering_proxy(lambda _: b"<html><body>via the egress proxy</body></html>") as proxy:
        yield proxy


async def test_node_proxy_carries_sessions_without_account(
    egress_proxy: tuple[str, list[str]],
) -> None:
    """With a node proxy, the shared browser's sessions reach the web through it."""
    proxy, seen = egress_proxy
    async with BrowserPool(proxy=proxy) as proxied:
        session = SessionRunner(pool=proxied, node_id="node-test")
        result = await session.run(
            envelope("http://shop.example.com/cart", allowed_hosts=("shop.example.com",))
        )
    assert result.outcome is Outcome.OK, result.error
    assert "http://shop.example.com/cart" in seen


@pytest.fixture
def mixed_site_proxy() -> Iterator[tuple[str, list[str]]]:
    """A proxy serving shop.example.com, whose page also loads from hosts of other parties."""
    page = (
        b"<html><body><script src='http://shop.example.com/app.js'></script>"
        b"<img src='http://tracker.example.net/pixel.gif'>"
        b"<script src='http://cdn.example.org/lib.js'></script>ok</body></html>"
    )
    with answering_proxy(lambda url: page if url.endswith("/page") else b"") as proxy:
        yield proxy


async def test_session_refuses_subresources_off_allowlist(
    mixed_site_proxy: tuple[str, list[str]],
) -> None:
    """Subresources on hosts outside the allowlist are refused unsent; the session still succeeds."""
    proxy, seen = mixed_site_proxy
    async with BrowserPool(proxy=proxy) as proxied:
        session = SessionRunner(pool=proxied, node_id="node-test")
        result = await session.run(
            envelope("http://shop.example.com/page", allowed_hosts=("shop.example.com",))
        )
    assert result.outcome is Outcome.OK, result.error
    assert "http://shop.example.com/app.js" in seen
    assert not [url for url in seen if "tracker.example.net" in url or "cdn.example.org" in url]
    assert "refused 2 request(s)" in result.console_errors[0]
    assert "tracker.example.net" in result.console_errors[0]
    assert "cdn.example.org" in result.console_errors[0]


async def test_session_blocks_redirect_off_allowlist(
    runner: SessionRunner, redirect_away: str
) -> None:
    """A redirect to a host outside the allowlist fails before its request is sent (SSRF guard)."""
    result = await runner.run(envelope(redirect_away, allowed_hosts=("example.com",), timeout=5))
    assert (result.outcome, result.error_class) == (
        Outcome.BLOCKED_BY_ALLOWLIST,
        ErrorClass.PERMANENT,
    )
    assert "169.254.169.254" in result.error
    assert result.duration_ms < 4_000  # refused, not a connect timeout


async def test_session_traffic_is_marked(runner: SessionRunner, demo_site: DemoSite) -> None:
    """The site sees the Smartfleet token in the User-Agent and the run id in X-Smartfleet-Run."""
    await runner.run(envelope(f"{demo_site.url}/", run_id="run-marked"))
    assert demo_site.run_headers == {"run-marked"}
    assert demo_site.user_agents and all(
        agent.endswith(f" Smartfleet/{__version__}") for agent in demo_site.user_agents
    )


async def test_session_survives_browser_crash(
    pool: BrowserPool, runner: SessionRunner, demo_site: DemoSite
) -> None:
    """A browser killed mid-session gives browser_crash (transient); the next session relaunches it."""
    running = asyncio.create_task(runner.run(envelope(f"{demo_site.url}/slow?ms=3000")))
    await eventually(lambda: demo_site.hits.get("/slow"), what="the slow page to be requested")
    assert pool._current is not None  # the pool's one warm browser
    cdp = await pool._current.browser.new_browser_cdp_session()
    processes = (await cdp.send("SystemInfo.getProcessInfo"))["processInfo"]
    os.kill(next(p["id"] for p in processes if p["type"] == "browser"), signal.SIGKILL)
    crashed = await running
    assert (crashed.outcome, crashed.error_class) == (Outcome.BROWSER_CRASH, ErrorClass.TRANSIENT)
    again = await runner.run(envelope(f"{demo_site.url}/about"))
    assert again.outcome is Outcome.OK, again.error


# --- the whole node: worker, link, reporter -------------------------------------------------


@pytest.fixture
async def node_env(
    tmp_path: Path,
    nats_server: EmbeddedNatsServer,
    nc: NatsClient,
    scheduler: tuple[FakeScheduler, str],
) -> AsyncIterator[Callable[..., NodeSettings]]:
    _, address = scheduler

    def make(**overrides: Any) -> NodeSettings:
        return node_settings(tmp_path, nats_server.url, address, **overrides)

    yield make


async def test_node_runs_jobs_reports_and_acks(
    node_env: Callable[..., NodeSettings],
    scheduler: tuple[FakeScheduler, str],
    nc: NatsClient,
    demo_site: DemoSite,
    tmp_path: Path,
) -> None:
    """Published envelopes all run, every result reaches the scheduler, and the stream ends empty."""
    fake, _ = scheduler
    js = nc.jetstream()
    async with BrowserNode(settings=node_env()) as node:
        await eventually(
            lambda: node.worker is not None and node.worker.bound.is_set(), what="bind"
        )
        assert fake.registrations == 1
        paths = ["/", "/about", "/products", "/redirect-chain", "/error", "/", "/about"]
        for number, path in enumerate(paths):
            await publish(
                js, envelope(f"{demo_site.url}{path}", job_id=f"job-{number}", index=number)
            )
        await eventually(lambda: len(fake.results) == len(paths), what="all results")
        await eventually(lambda: stream_empty(js), what="every message acked")
        assert await health_status(node.address) == health_pb2.HealthCheckResponse.SERVING
        ready = json.loads((tmp_path / "node.ready.json").read_text())
        assert ready["node"] == node.address and ready["node_id"] == "node-test"
    outcomes = [fake.results[(f"job-{n}", 1)].outcome for n in range(len(paths))]
    assert outcomes == [Outcome.OK] * 4 + [Outcome.HTTP_ERROR] + [Outcome.OK] * 2
    assert all(result.node_id == "node-test" for result in fake.results.values())
    info = await js.consumer_info(STREAM, pool_consumer(POOL))
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_node_acks_only_after_result_stored(
    node_env: Callable[..., NodeSettings],
    scheduler: tuple[FakeScheduler, str],
    nc: NatsClient,
    demo_site: DemoSite,
) -> None:
    """While the scheduler cannot store results the message stays unacked; it is acked once stored."""
    fake, _ = scheduler
    js = nc.jetstream()
    fake.reports_open.clear()
    async with BrowserNode(settings=node_env()) as node:
        await eventually(
            lambda: node.worker is not None and node.worker.bound.is_set(), what="bind"
        )
        await publish(js, envelope(f"{demo_site.url}/about"))
        await eventually(lambda: fake.report_attempts >= 2, what="report retries")
        info = await js.consumer_info(STREAM, pool_consumer(POOL))
        assert info.num_ack_pending == 1 and await stream_messages(js) == 1
        fake.reports_open.set()
        await eventually(lambda: ("job-1", 1) in fake.results, what="the stored result")
        await eventually(lambda: stream_empty(js), what="the ack")
    assert fake.results[("job-1", 1)].outcome is Outcome.OK


async def test_node_terminates_undecodable_envelope(
    node_env: Callable[..., NodeSettings],
    scheduler: tuple[FakeScheduler, str],
    nc: NatsClient,
    demo_site: DemoSite,
) -> None:
    """A message that is not a job envelope is terminated, and the jobs after it still run."""
    fake, _ = scheduler
    js = nc.jetstream()
    async with BrowserNode(settings=node_env()) as node:
        await eventually(
            lambda: node.worker is not None and node.worker.bound.is_set(), what="bind"
        )
        await js.publish(pool_subject(POOL), b"\xff\xfenot a protobuf", stream=STREAM)
        await publish(js, envelope(f"{demo_site.url}/"))
        await eventually(lambda: ("job-1", 1) in fake.results, what="the valid job's result")
        await eventually(lambda: stream_empty(js), what="both messages settled")
    info = await js.consumer_info(STREAM, pool_consumer(POOL))
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_node_shutdown_gives_back_unfinished_jobs(
    node_env: Callable[..., NodeSettings],
    scheduler: tuple[FakeScheduler, str],
    nc: NatsClient,
    demo_site: DemoSite,
) -> None:
    """On stop a session that outlives the grace is naked: no result, the message is available again."""
    fake, _ = scheduler
    js = nc.jetstream()
    node = BrowserNode(settings=node_env(shutdown_grace=timedelta(milliseconds=500)))
    await node.start()
    try:
        await eventually(
            lambda: node.worker is not None and node.worker.bound.is_set(), what="bind"
        )
        await publish(js, envelope(f"{demo_site.url}/slow?ms=4000"))
        await eventually(
            lambda: node.worker is not None and node.worker.busy == 1, what="the session"
        )
    finally:
        started = asyncio.get_running_loop().time()
        await node.stop()
        await node.stop()  # idempotent
    assert asyncio.get_running_loop().time() - started < 3.5
    assert fake.results == {}
    # Naked, so it comes back at once, well before the 5 s ack wait would have released it.
    psub = await js.pull_subscribe_bind(consumer=pool_consumer(POOL), stream=STREAM)
    (again,) = await psub.fetch(batch=1, timeout=2)
    assert again.metadata.num_delivered == 2
    await again.ack()
    assert nodes_pb2.NODE_STATE_DRAINED in fake.states


async def test_node_cancels_sessions_of_a_cancelled_run(
    node_env: Callable[..., NodeSettings],
    scheduler: tuple[FakeScheduler, str],
    nc: NatsClient,
    demo_site: DemoSite,
) -> None:
    """A cancel_run command stops the run's session, which reports `cancelled` and is acked."""
    fake, _ = scheduler
    js = nc.jetstream()
    async with BrowserNode(settings=node_env()) as node:
        await eventually(
            lambda: node.worker is not None and node.worker.bound.is_set(), what="bind"
        )
        await publish(js, envelope(f"{demo_site.url}/slow?ms=5000", run_id="run-cancel"))
        await eventually(
            lambda: node.worker is not None and node.worker.busy == 1, what="the session"
        )
        fake.commands.append(node_link_pb2.NodeCommand(cancel_run="run-cancel"))
        await eventually(
            lambda: ("job-1", 1) in fake.results, timeout=4, what="the cancelled result"
        )
        await eventually(lambda: stream_empty(js), what="the ack")
    result = fake.results[("job-1", 1)]
    assert (result.outcome, result.error_class) == (Outcome.CANCELLED, ErrorClass.PERMANENT)


async def test_node_registers_again_when_scheduler_forgets_it(
    node_env: Callable[..., NodeSettings], scheduler: tuple[FakeScheduler, str]
) -> None:
    """A heartbeat answered with known=false makes the node register again."""
    fake, _ = scheduler
    async with BrowserNode(settings=node_env()):
        await eventually(lambda: fake.registrations == 1, what="registration")
        # Registration carries the Playwright and browser versions.
        assert fake.info is not None and fake.info.playwright_version
        assert fake.info.browser_versions["chromium"][0].isdigit()
        fake.known.clear()  # as after a scheduler restart with a fresh database
        await eventually(lambda: fake.registrations == 2, what="re-registration")


async def test_node_without_browser_is_not_serving(
    node_env: Callable[..., NodeSettings], scheduler: tuple[FakeScheduler, str], tmp_path: Path
) -> None:
    """With no launchable browser, health says NOT_SERVING and the node never registers for jobs."""
    fake, _ = scheduler
    settings = node_env(browser_path=str(tmp_path / "no-such-chrome"))
    async with BrowserNode(settings=settings) as node:
        await asyncio.sleep(0.5)
        assert await health_status(node.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert fake.registrations == 0 and node.worker is None


async def test_node_follows_slots_and_drain_commands(
    node_env: Callable[..., NodeSettings],
    scheduler: tuple[FakeScheduler, str],
    nc: NatsClient,
    demo_site: DemoSite,
) -> None:
    """set_slots changes what the node reports; drain stops fetching and ends in state DRAINED."""
    fake, _ = scheduler
    js = nc.jetstream()
    async with BrowserNode(settings=node_env()) as node:
        await eventually(
            lambda: node.worker is not None and node.worker.bound.is_set(), what="bind"
        )
        fake.commands.append(node_link_pb2.NodeCommand(set_slots=5))
        await eventually(lambda: node.worker is not None and node.worker.slots == 5, what="5 slots")
        fake.commands.append(node_link_pb2.NodeCommand(drain=True))
        await eventually(
            lambda: fake.states and fake.states[-1] == nodes_pb2.NODE_STATE_DRAINED, what="drained"
        )
        await publish(js, envelope(f"{demo_site.url}/"))
        await asyncio.sleep(1.5)
        assert fake.results == {} and await stream_messages(js) == 1


async def test_cordoned_then_drained_node_stops_fetching_and_reports_drained(
    node_env: Callable[..., NodeSettings],
    scheduler: tuple[FakeScheduler, str],
    nc: NatsClient,
    demo_site: DemoSite,
) -> None:
    """Cordon stops fetching, drain reports drained once the running session ends, uncordon resumes."""
    fake, _ = scheduler
    js = nc.jetstream()
    async with BrowserNode(settings=node_env()) as node:
        await eventually(
            lambda: node.worker is not None and node.worker.bound.is_set(), what="bind"
        )
        await publish(js, envelope(f"{demo_site.url}/slow?ms=3000", job_id="job-slow"))
        await eventually(
            lambda: node.worker is not None and node.worker.busy == 1, what="the session"
        )
        fake.commands.append(node_link_pb2.NodeCommand(cordon=True))
        await eventually(
            lambda: fake.states and fake.states[-1] == nodes_pb2.NODE_STATE_CORDONED,
            what="cordoned",
        )
        await publish(js, envelope(f"{demo_site.url}/", job_id="job-after"))
        fake.commands.append(node_link_pb2.NodeCommand(drain=True))
        await eventually(
            lambda: fake.states and fake.states[-1] == nodes_pb2.NODE_STATE_DRAINING,
            what="draining",
        )
        await eventually(
            lambda: fake.states and fake.states[-1] == nodes_pb2.NODE_STATE_DRAINED, what="drained"
        )
        # The running session finished; the job published after the cordon was never taken.
        assert set(fake.results) == {("job-slow", 1)}
        await asyncio.sleep(0.5)
        assert ("job-after", 1) not in fake.results and await stream_messages(js) == 1
        fake.commands.append(node_link_pb2.NodeCommand(cordon=False))
        await eventually(lambda: ("job-after", 1) in fake.results, what="jobs again")
        assert fake.states[-1] == nodes_pb2.NODE_STATE_READY


async def test_sigterm_drains_within_grace_and_gives_back_the_rest(
    node_env: Callable[..., NodeSettings],
    scheduler: tuple[FakeScheduler, str],
    nc: NatsClient,
    demo_site: DemoSite,
) -> None:
    """SIGTERM to a serving node: it stops within the grace, naks the unfinished job, ends drained."""
    fake, _ = scheduler
    js = nc.jetstream()
    serving = asyncio.create_task(serve(node_env(shutdown_grace=timedelta(milliseconds=500))))
    try:
        await eventually(lambda: fake.registrations == 1, what="registration")
        await publish(js, envelope(f"{demo_site.url}/slow?ms=5000"))

        async def taken() -> bool:
            info = await js.consumer_info(STREAM, pool_consumer(POOL))
            return info.num_ack_pending == 1

        await eventually(taken, what="the session")
        started = asyncio.get_running_loop().time()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(asyncio.shield(serving), timeout=10)
    finally:
        if not serving.done():
            serving.cancel()
    assert asyncio.get_running_loop().time() - started < 4
    assert fake.results == {} and nodes_pb2.NODE_STATE_DRAINED in fake.states
    psub = await js.pull_subscribe_bind(consumer=pool_consumer(POOL), stream=STREAM)
    (again,) = await psub.fetch(batch=1, timeout=2)
    assert again.metadata.num_delivered == 2
    await again.ack()


def max_overlap(results: Any) -> int:
    """The most sessions that ran at the same moment, from their start and finish times."""
    edges = sorted(
        [(result.started_at, 1) for result in results]
        + [(result.finished_at, -1) for result in results]
    )
    running = peak = 0
    for _, step in edges:  # at a tie a finish (-1) sorts first
        running += step
        peak = max(peak, running)
    return peak


async def test_labelled_node_takes_jobs_of_every_pool_within_its_slots(
    node_env: Callable[..., NodeSettings],
    scheduler: tuple[FakeScheduler, str],
    nc: NatsClient,
    demo_site: DemoSite,
) -> None:
    """A node labelled region=eu runs jobs of `chromium` and `chromium.region_eu`, never over its slots."""
    fake, _ = scheduler
    js = nc.jetstream()
    # A backlog in both pools before the node comes up (the scheduler made them for a node
    # like it before), so the node could take more than its slots at once if it were careless.
    bus = JobBus(js, ack_wait=ACK_WAIT)
    await bus.ensure_stream()
    for pool in node_pools([POOL], {"region": "eu"}):
        await bus.ensure_pool(pool)
    eu = Cell(labels=(("region", "eu"),))
    jobs = [(f"job-{n}", EU_POOL if n % 2 else POOL) for n in range(6)]
    for number, (job_id, pool) in enumerate(jobs):
        job = envelope(
            f"{demo_site.url}/slow?ms=600",
            job_id=job_id,
            index=number,
            cell=eu if pool == EU_POOL else Cell(),
        )
        await publish(js, job, pool)
    async with BrowserNode(settings=node_env(node_slots=2, node_labels="region=eu")) as node:
        await eventually(lambda: len(fake.results) == len(jobs), what="all results")
        assert node.worker is not None and {POOL, EU_POOL} <= set(node.worker.pools)
        # Plus the pools of its automatic browser=<major> label (every subset of its labels).
        assert set(node.worker.pools) == set(node_pools([POOL], node.labels))
        assert node.labels.keys() == {"region", "browser"}
        await eventually(lambda: stream_empty(js), what="every message acked")
    assert all(result.outcome is Outcome.OK for result in fake.results.values())
    assert max_overlap(fake.results.values()) == 2
    for pool in (POOL, EU_POOL):
        info = await js.consumer_info(STREAM, pool_consumer(pool))
        assert info.num_ack_pending == 0 and info.num_pending == 0
        assert info.delivered.consumer_seq >= 3


async def test_unlabelled_node_never_takes_labelled_jobs(
    node_env: Callable[..., NodeSettings],
    scheduler: tuple[FakeScheduler, str],
    nc: NatsClient,
    demo_site: DemoSite,
) -> None:
    """A node without region=eu leaves the jobs of `chromium.region_eu` waiting in the stream."""
    fake, _ = scheduler
    js = nc.jetstream()
    async with BrowserNode(settings=node_env()) as node:
        await eventually(
            lambda: node.worker is not None and node.worker.bound.is_set(), what="bind"
        )
        assert node.worker is not None and EU_POOL not in node.worker.pools
        assert node.worker.pools == tuple(node_pools([POOL], node.labels))
        # As if a labelled node had registered: the labelled pool's consumer exists.
        await JobBus(js, ack_wait=ACK_WAIT).ensure_pool(EU_POOL)
        eu = Cell(labels=(("region", "eu"),))
        await publish(js, envelope(f"{demo_site.url}/", job_id="eu-job", cell=eu), EU_POOL)
        await publish(js, envelope(f"{demo_site.url}/about", job_id="plain-job"))
        await eventually(lambda: ("plain-job", 1) in fake.results, what="the plain job's result")
        await asyncio.sleep(0.5)
        assert set(fake.results) == {("plain-job", 1)}
    info = await js.consumer_info(STREAM, pool_consumer(EU_POOL))
    assert info.num_pending == 1 and info.num_ack_pending == 0
    assert info.delivered.consumer_seq == 0
    assert await stream_messages(js) == 1


async def test_node_keeps_taking_jobs_after_nats_restart(
    tmp_path: Path, demo_site: DemoSite
) -> None:
    """After nats-server restarts (same port and store) the node reconnects and jobs flow again."""
    first = EmbeddedNatsServer(tmp_path / "nats")
    url = await first.start()
    port = int(url.rsplit(":", 1)[1])
    client = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    fake = FakeScheduler(client.jetstream())
    server = grpc.aio.server()
    node_link_pb2_grpc.add_NodeLinkServiceServicer_to_server(fake, server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    restarted: EmbeddedNatsServer | None = None
    try:
        async with BrowserNode(settings=node_settings(tmp_path, url, address)) as node:
            js = client.jetstream()
            await eventually(
                lambda: node.worker is not None and node.worker.bound.is_set(), what="bind"
            )
            await publish(js, envelope(f"{demo_site.url}/", job_id="before"))
            await eventually(lambda: ("before", 1) in fake.results, what="the first result")
            await first.stop()
            restarted = EmbeddedNatsServer(tmp_path / "nats", port=port)
            await restarted.start()
            await eventually(lambda: client.is_connected, what="the test client to reconnect")
            await publish(js, envelope(f"{demo_site.url}/about", job_id="after"))
            await eventually(
                lambda: ("after", 1) in fake.results, timeout=30, what="the second result"
            )
            await eventually(lambda: stream_empty(js), what="both acked")
    finally:
        await client.close()
        await server.stop(0)
        if restarted is not None:
            await restarted.stop()
        await first.stop()
