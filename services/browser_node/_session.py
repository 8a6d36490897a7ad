"""One session: its steps (or the default scenario) in a fresh context, and its outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from services.browser_node._accounts import AccountRefused, AccountStateUnavailable
from services.browser_node._allowlist import scheme_allowed, target_allowed
from services.browser_node._artifacts import ArtifactStore, ArtifactUploader
from services.browser_node._backoff import Backoff
from services.browser_node._emulation import UnknownDevice
from services.browser_node._failures import StepFailed, navigation_error_class
from services.browser_node._measurements import PageMeter
from services.browser_node._observed import Observation, first_line, looks_crashed
from services.browser_node._pool import BrowserPool
from services.browser_node._steps import StepExecutor
from services.common.durations import format_duration
from services.common.errors import SmartfleetError, Unavailable
from services.common.types import ErrorClass, JobEnvelope, Outcome, SessionResult

logger = logging.getLogger(__name__)

ENGINE = "chromium"
# Past the session timeout, how long closing the context, a failure screenshot and writing
# back account state may still take.
_TEARDOWN_SLACK = timedelta(seconds=5)
_WRITE_BACK_TIMEOUT = timedelta(seconds=4)
# Reading the page's measurements at the end: at most this, less once the session is past due.
_MEASURE_TIMEOUT = timedelta(seconds=1)
_TRACE_TIMEOUT = timedelta(seconds=10)
_UPLOAD_ATTEMPTS = 3


def _upload_backoff() -> Backoff:
    return Backoff(initial=timedelta(milliseconds=500), maximum=timedelta(seconds=4))


def _checked_scheme(url: str) -> bool:
    """Requests the allowlist governs: the network ones (data: and blob: never leave the page)."""
    return url.startswith(("http:", "https:", "ws:", "wss:"))


def _console_errors(seen: Observation) -> tuple[str, ...]:
    """The page's console errors, and first what the allowlist refused (the page may not say)."""
    if not seen.refused_requests:
        return tuple(seen.console_errors)
    refused = (
        f"Smartfleet refused {seen.refused_requests} request(s) to hosts outside the run's "
        f"allowlist: {', '.join(seen.refused_hosts)}"
    )
    return (refused, *seen.console_errors)


class SessionRunner:
    """Runs one job envelope in a fresh context of the pool; never raises for a session failure."""

    def __init__(
        self,
        *,
        pool: BrowserPool,
        node_id: str,
        default_timeout: timedelta = timedelta(seconds=60),
        artifacts: ArtifactStore | None = None,
        uploader: ArtifactUploader | None = None,
    ) -> None:
        self._pool = pool
        self._node_id = node_id
        self._default_timeout = default_timeout
        self.artifacts = artifacts or ArtifactStore()
        # Where kept artifacts go (the scheduler's store); None keeps them in `artifacts`.
        self._uploader = uploader

    async def run(self, envelope: JobEnvelope) -> SessionResult:
        started_at = datetime.now(UTC)
        started = time.monotonic()
        seen = Observation()
        if refusal := self._refuse(envelope):
            seen.fail(*refusal)
        else:
            timeout = self._timeout(envelope)
            try:
                await self._execute(envelope, seen, timeout=timeout)
            except asyncio.CancelledError:
                self.artifacts.discard(seen.artifacts)  # nobody will see the result
                raise
            except Exception as error:
                # A failure already recorded stays: the hard stop may hit during the teardown.
                if seen.outcome is Outcome.OK:
                    self._classify(error, seen, envelope=envelope, timeout=timeout)
            if seen.artifacts and seen.outcome is Outcome.OK and envelope.artifacts != "always":
                await asyncio.to_thread(self.artifacts.discard, list(seen.artifacts))
                seen.artifacts.clear()
            if seen.artifacts and self._uploader is not None:
                await self._upload(envelope, seen)
        return self._result(envelope, seen, started_at=started_at, started=started)

    async def _upload(self, envelope: JobEnvelope, seen: Observation) -> None:
        """Move the kept artifacts into the scheduler's store; an artifact that cannot be
        stored is left out of the result (with a warning) rather than referenced in vain."""
        assert self._uploader is not None
        stored = []
        outage = False
        for key in seen.artifacts:
            if outage:  # the store stays unreachable: do not wait for it once per artifact
                logger.warning("artifact %s not stored: the scheduler is unavailable", key)
                continue
            path = self.artifacts.path(key)
            name = key.rsplit("/", 1)[-1]
            backoff = _upload_backoff()
            for attempt in range(_UPLOAD_ATTEMPTS):
                try:
                    stored.append(
                        await self._uploader.put_artifact(
                            run_id=envelope.run_id,
                            job_id=envelope.job_id,
                            attempt=envelope.attempt,
                            name=name,
                            path=path,
                        )
                    )
                    break
                except FileNotFoundError:
                    logger.warning("artifact %s vanished before its upload", key)
                    break
                except Unavailable as error:
                    if attempt + 1 == _UPLOAD_ATTEMPTS:
                        logger.warning("artifact %s not stored: %s", key, error.message)
                        outage = True
                    else:
                        await asyncio.sleep(backoff.next().total_seconds())
                except SmartfleetError as error:
                    logger.warning("artifact %s not stored: %s", key, error.message)
                    break
        await asyncio.to_thread(self.artifacts.discard, list(seen.artifacts))
        seen.artifacts[:] = stored

    def cancelled(
        self, envelope: JobEnvelope, *, started_at: datetime | None = None
    ) -> SessionResult:
        """The result of a session stopped (or never started) because its run was cancelled."""
        seen = Observation()
        seen.fail(Outcome.CANCELLED, ErrorClass.PERMANENT, "the run was cancelled")
        started_at = started_at or datetime.now(UTC)
        started = time.monotonic() - (datetime.now(UTC) - started_at).total_seconds()
        return self._result(envelope, seen, started_at=started_at, started=started)

    def _result(
        self, envelope: JobEnvelope, seen: Observation, *, started_at: datetime, started: float
    ) -> SessionResult:
        return SessionResult(
            job_id=envelope.job_id,
            attempt=envelope.attempt,
            run_id=envelope.run_id,
            index=envelope.index,
            outcome=seen.outcome,
            error_class=seen.error_class,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            duration_ms=(time.monotonic() - started) * 1000,
            node_id=self._node_id,
            engine=ENGINE,
            error=seen.error,
            http_status=seen.http_status,
            target_url=envelope.target_url,
            final_url=seen.final_url,
            redirect_chain=seen.redirect_chain,
            timing=seen.timing,
            browser_version=self._pool.browser_version,
            cell=envelope.cell,
            extracted=dict(seen.extracted),
            steps=tuple(seen.steps),
            account=envelope.account,
            artifacts=tuple(seen.artifacts),
            vitals=seen.vitals,
            bytes_transferred=seen.bytes_transferred,
            request_count=seen.request_count,
            console_errors=_console_errors(seen),
        )

    def _refuse(self, envelope: JobEnvelope) -> tuple[Outcome, ErrorClass, str] | None:
        """Reasons not to open a browser at all."""
        if envelope.engine and envelope.engine != ENGINE:
            # Another node may serve that engine, so the scheduler may retry it elsewhere.
            return (
                Outcome.INTERNAL_ERROR,
                ErrorClass.TRANSIENT,
                f"engine {envelope.engine!r} is not served by this node (it runs {ENGINE})",
            )
        if not scheme_allowed(envelope.target_url):
            return (
                Outcome.NAVIGATION_ERROR,
                ErrorClass.PERMANENT,
                f"target {envelope.target_url!r} is not an http(s) URL",
            )
        if not target_allowed(envelope.target_url, envelope.allowed_hosts):
            return (
                Outcome.BLOCKED_BY_ALLOWLIST,
                ErrorClass.PERMANENT,
                f"host {urlsplit(envelope.target_url).hostname!r} is not in the run's allowlist",
            )
        return None

    def _timeout(self, envelope: JobEnvelope) -> timedelta:
        return (
            envelope.session_timeout
            if envelope.session_timeout > timedelta()
            else self._default_timeout
        )

    async def _execute(
        self, envelope: JobEnvelope, seen: Observation, *, timeout: timedelta
    ) -> None:
        deadline = asyncio.get_running_loop().time() + timeout.total_seconds()
        # The hard stop also covers a driver that stops answering.
        async with asyncio.timeout(timeout.total_seconds() + _TEARDOWN_SLACK.total_seconds()):
            recording = envelope.artifacts in ("on_failure", "always")
            har_key = self._key(envelope, "session", ".har") if recording else ""
            har_path = self.artifacts.path(har_key) if har_key else None
            if har_path is not None:
                await asyncio.to_thread(har_path.parent.mkdir, parents=True, exist_ok=True)
            async with self._pool.session(
                run_id=envelope.run_id,
                cell=envelope.cell,
                account=envelope.account,
                job_id=envelope.job_id,
                har_path=har_path,
            ) as page:
                page.on("crash", lambda _: setattr(seen, "page_crashed", True))
                if recording:
                    await page.context.tracing.start(screenshots=True, snapshots=True)
                meter = PageMeter(page, seen)
                await meter.attach()
                await self._guard_navigations(page, envelope.allowed_hosts, seen)
                executor = StepExecutor(
                    page=page,
                    envelope=envelope,
                    seen=seen,
                    deadline=deadline,
                    session_timeout=timeout,
                    artifacts=self.artifacts,
                )
                try:
                    await executor.run()
                except StepFailed as failure:
                    seen.fail(failure.outcome, failure.error_class, failure.message)
                except Exception as error:
                    self._classify(error, seen, envelope=envelope, timeout=timeout)
                left = deadline - asyncio.get_running_loop().time()
                await meter.read(within=min(_MEASURE_TIMEOUT.total_seconds(), max(0.25, left)))
                if seen.outcome is not Outcome.OK:
                    await executor.capture_failure()
                else:
                    if envelope.artifacts == "always":
                        await executor.capture_final()
                    if envelope.account and envelope.write_back_state:
                        await self._write_back(page, envelope, seen)
                if recording:
                    await self._stop_trace(page, envelope, seen)
            # The HAR is complete once the context closed.
            if har_path is not None and await asyncio.to_thread(har_path.exists):
                seen.artifacts.append(har_key)

    def _key(self, envelope: JobEnvelope, name: str, suffix: str) -> str:
        return self.artifacts.key(
            run_id=envelope.run_id,
            job_id=envelope.job_id,
            attempt=envelope.attempt,
            name=name,
            suffix=suffix,
        )

    async def _stop_trace(self, page: Page, envelope: JobEnvelope, seen: Observation) -> None:
        """Save the Playwright trace when the policy keeps this session's artifacts."""
        keep = envelope.artifacts == "always" or seen.outcome is not Outcome.OK
        key = self._key(envelope, "trace", ".zip") if keep else ""
        try:
            await asyncio.wait_for(
                page.context.tracing.stop(path=self.artifacts.path(key) if key else None),
                _TRACE_TIMEOUT.total_seconds(),
            )
        except (PlaywrightError, TimeoutError) as error:
            logger.debug("no trace for %s: %s", envelope.job_id, first_line(error))
        else:
            if key:
                seen.artifacts.append(key)

    async def _write_back(self, page: Page, envelope: JobEnvelope, seen: Observation) -> None:
        """Store the cookies and local storage the session ended with, for the account's next one.

        Only after a session that succeeded: a failed one may end half signed in.
        """
        accounts = self._pool.accounts
        if accounts is None:
            seen.fail(Outcome.INTERNAL_ERROR, ErrorClass.TRANSIENT, "no account link to write to")
            return
        try:
            state: Any = await asyncio.wait_for(
                page.context.storage_state(), _WRITE_BACK_TIMEOUT.total_seconds()
            )
            await accounts.write_back(envelope.account, dict(state), job_id=envelope.job_id)
        except (PlaywrightError, TimeoutError, SmartfleetError) as error:
            error_class = (
                ErrorClass.ACCOUNT if isinstance(error, AccountRefused) else ErrorClass.TRANSIENT
            )
            detail = error.message if isinstance(error, SmartfleetError) else first_line(error)
            seen.fail(
                Outcome.INTERNAL_ERROR,
                error_class,
                f"the account's storage state was not written back: {detail}",
            )

    @staticmethod
    async def _guard_navigations(
        page: Page, allowed_hosts: tuple[str, ...], seen: Observation
    ) -> None:
        """Refuse, unsent, every request of the page to a host outside the allowlist.

        A refused document (redirect hops included) ends the session `blocked_by_allowlist`;
        a refused subresource (image, script, XHR...) only fails that request, as an ad blocker
        would. Playwright's `route` sees only the first request of a redirect chain, so this
        pauses requests with CDP's Fetch domain instead; with `*` in the allowlist nothing is
        paused (no added latency).
        """
        if "*" in allowed_hosts:
            return
        cdp = await page.context.new_cdp_session(page)
        tree = await cdp.send("Page.getFrameTree")
        main_frame = tree["frameTree"]["frame"]["id"]

        async def on_paused(event: dict[str, Any]) -> None:
            request_id, url = event["requestId"], event["request"]["url"]
            try:
                if not _checked_scheme(url) or target_allowed(url, allowed_hosts):
                    await cdp.send("Fetch.continueRequest", {"requestId": request_id})
                    return
                if event.get("resourceType") == "Document":
                    seen.blocked_url = url
                    if event.get("frameId") == main_frame:
                        seen.blocked_main_frame = url
                else:
                    seen.refuse_subresource(url)
                await cdp.send(
                    "Fetch.failRequest", {"requestId": request_id, "errorReason": "BlockedByClient"}
                )
            except PlaywrightError:
                pass  # the page went away meanwhile

        cdp.on("Fetch.requestPaused", on_paused)
        await cdp.send(
            "Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]}
        )

    @staticmethod
    def _classify(
        error: Exception, seen: Observation, *, envelope: JobEnvelope, timeout: timedelta
    ) -> None:
        if isinstance(error, PlaywrightTimeout | TimeoutError):
            seen.fail(
                Outcome.TIMEOUT,
                ErrorClass.TRANSIENT,
                f"the page did not finish loading within the session timeout of "
                f"{format_duration(timeout)}",
            )
        elif seen.blocked_url:
            host = urlsplit(seen.blocked_url).hostname
            seen.fail(
                Outcome.BLOCKED_BY_ALLOWLIST,
                ErrorClass.PERMANENT,
                f"navigation to {host!r} (from a redirect or the page) is not in the run's allowlist",
            )
        elif isinstance(error, PlaywrightError):
            message = first_line(error)
            if seen.page_crashed or looks_crashed(error):
                seen.fail(Outcome.BROWSER_CRASH, ErrorClass.TRANSIENT, message)
            else:
                error_class = navigation_error_class(message, account=envelope.account)
                seen.fail(Outcome.NAVIGATION_ERROR, error_class, message)
        elif isinstance(error, AccountRefused):
            # The account, not the job, is the problem: the scheduler moves the job to another.
            seen.fail(Outcome.INTERNAL_ERROR, ErrorClass.ACCOUNT, error.message)
        elif isinstance(error, AccountStateUnavailable | UnknownDevice):
            seen.fail(Outcome.INTERNAL_ERROR, ErrorClass.TRANSIENT, error.message)
        elif isinstance(error, SmartfleetError):
            # The pool could not give a browser (launch failed): the node's fault, not the job's.
            seen.fail(Outcome.BROWSER_CRASH, ErrorClass.TRANSIENT, error.message)
        else:
            logger.exception("session failed unexpectedly")
            seen.fail(
                Outcome.INTERNAL_ERROR, ErrorClass.TRANSIENT, f"{type(error).__name__}: {error}"
            )
