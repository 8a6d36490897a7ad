"""The benchmark-only `noop` engine: completes a job at once, without a browser.

It measures orchestration alone (dispatch, bus, reporting, storage). A node runs it only when
started with `SMARTFLEET_NODE_ENGINE=noop`, and then serves nothing but the `noop` pools; a run
reaches it only by naming `engine: noop`. Never a default.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.common.types import ErrorClass, JobEnvelope, Outcome, SessionResult

NOOP_ENGINE = "noop"


class NoopRunner:
    """The `SessionRunner` interface the worker uses, with an empty session."""

    def __init__(self, *, node_id: str) -> None:
        self._node_id = node_id

    async def run(self, envelope: JobEnvelope) -> SessionResult:
        if envelope.engine and envelope.engine != NOOP_ENGINE:
            # As SessionRunner does: another node may serve that engine.
            return self._result(
                envelope,
                Outcome.INTERNAL_ERROR,
                ErrorClass.TRANSIENT,
                f"engine {envelope.engine!r} is not served by this node (it runs {NOOP_ENGINE})",
            )
        return self._result(envelope, Outcome.OK, ErrorClass.NONE)

    def cancelled(
        self, envelope: JobEnvelope, *, started_at: datetime | None = None
    ) -> SessionResult:
        return self._result(
            envelope,
            Outcome.CANCELLED,
            ErrorClass.PERMANENT,
            "the run was cancelled",
            started_at=started_at,
        )

    def _result(
        self,
        envelope: JobEnvelope,
        outcome: Outcome,
        error_class: ErrorClass,
        error: str = "",
        *,
        started_at: datetime | None = None,
    ) -> SessionResult:
        finished_at = datetime.now(UTC)
        started_at = started_at or finished_at
        return SessionResult(
            job_id=envelope.job_id,
            attempt=envelope.attempt,
            run_id=envelope.run_id,
            index=envelope.index,
            outcome=outcome,
            error_class=error_class,
            error=error,
            started_at=started_at,
            finished_at=finished_at,
            duration_ms=(finished_at - started_at).total_seconds() * 1000,
            node_id=self._node_id,
            engine=NOOP_ENGINE,
            target_url=envelope.target_url,
            cell=envelope.cell,
            account=envelope.account,
        )
