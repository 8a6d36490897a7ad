"""Run reports as files: JUnit XML for CI systems and a self-contained HTML page.

Pure functions of a run, its statistics and its results (read once, as a stream). A session
counts by its last attempt, as the run's counters do. Everything from the run (names, URLs,
error texts) is escaped: a run named `<script>` renders as that text.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from xml.etree import ElementTree

from cli._data import enum_field_text
from cli._results import reason_text
from cli._text import metric_text, ms_text, plural, timestamp_text
from cli._views import outcome_rows, run_duration_text, run_status
from smartfleet.v1 import common_pb2, results_pb2, runs_pb2

_REASONS_PER_CASE = 5


@dataclass(slots=True)
class _Reason:
    job: str  # the first job that failed this way
    count: int = 0


@dataclass(slots=True)
class CaseTally:
    """One JUnit testcase: the sessions of one target in one matrix cell."""

    target: str
    cell: str
    sessions: int = 0
    failed: int = 0
    seconds: float = 0.0
    reasons: dict[str, _Reason] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.target} [{self.cell or 'default'}]"

    def top_reasons(self) -> list[tuple[str, int, str]]:
        """(reason, count, example job), most frequent first."""
        ordered = sorted(self.reasons.items(), key=lambda item: -item[1].count)
        return [(text, reason.count, reason.job) for text, reason in ordered]


@dataclass(slots=True)
class FailedSession:
    job_id: str
    attempt: int
    outcome: str
    error: str
    target: str
    cell: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _Seen:
    """A job's last attempt as far as read; outcome is empty when it was ok."""

    attempt: int
    index: int
    target: str
    cell: str
    seconds: float
    outcome: str
    error: str


@dataclass(slots=True)
class ReportModel:
    run: runs_pb2.Run
    stats: runs_pb2.RunStats
    cases: list[CaseTally]
    failed_sessions: list[FailedSession]  # the first few, for the HTML page

    @property
    def failures(self) -> int:
        return sum(case.failed for case in self.cases)

    @property
    def sessions(self) -> int:
        return sum(case.sessions for case in self.cases)


def build_report(
    run: runs_pb2.Run,
    stats: runs_pb2.RunStats,
    results: Iterable[results_pb2.SessionResult],
    *,
    max_failed_sessions: int = 20,
) -> ReportModel:
    """Tally every session by its last attempt into (target x cell) cases.

    Keeps one small record per job (not the results), so memory grows with the run's jobs only.
    """
    last: dict[str, _Seen] = {}
    for result in results:
        seen = last.get(result.job_id)
        if seen is None or result.attempt >= seen.attempt:
            ok = result.outcome == common_pb2.OUTCOME_OK
            last[result.job_id] = _Seen(
                attempt=result.attempt,
                index=result.index,
                target=result.target_url,
                cell=result.cell.key,
                seconds=result.duration_ms / 1000,
                outcome="" if ok else enum_field_text(result, "outcome"),
                error="" if ok else result.error,
            )
    cases: dict[tuple[str, str], CaseTally] = {}
    failed: list[FailedSession] = []
    for job_id, seen in sorted(last.items(), key=lambda item: item[1].index):
        case = cases.setdefault(
            (seen.target, seen.cell), CaseTally(target=seen.target, cell=seen.cell)
        )
        case.sessions += 1
        case.seconds += seen.seconds
        if not seen.outcome:
            continue
        case.failed += 1
        text = f"{seen.outcome}: {reason_text(seen.error) or '(no error text)'}"
        case.reasons.setdefault(text, _Reason(job=job_id)).count += 1
        if len(failed) < max_failed_sessions:
            failed.append(
                FailedSession(
                    job_id=job_id,
                    attempt=seen.attempt,
                    outcome=seen.outcome,
                    error=seen.error,
                    target=seen.target,
                    cell=seen.cell,
                )
            )
    ordered = sorted(cases.values(), key=lambda case: (case.target, case.cell))
    return ReportModel(run=run, stats=stats, cases=ordered, failed_sessions=failed)


def junit_xml(model: ReportModel) -> bytes:
    """One testsuite for the run, one testcase per target x cell; failures carry the errors."""
    run = model.run
    suites = ElementTree.Element(
        "testsuites",
        name="smartfleet",
        tests=str(len(model.cases)),
        failures=str(sum(1 for case in model.cases if case.failed)),
    )
    suite = ElementTree.SubElement(
        suites,
        "testsuite",
        name=run.name or run.id,
        id=run.id,
        tests=str(len(model.cases)),
        failures=str(sum(1 for case in model.cases if case.failed)),
        errors="0",
        skipped="0",
        time=f"{sum(case.seconds for case in model.cases):.3f}",
        timestamp=run.started_at.ToJsonString() if run.started_at.seconds else "",
    )
    properties = ElementTree.SubElement(suite, "properties")
    for name, value in (
        ("run_id", run.id),
        ("status", run_status(run)),
        ("sessions", str(model.sessions)),
        ("failed_sessions", str(model.failures)),
    ):
        ElementTree.SubElement(properties, "property", name=name, value=value)
    for case in model.cases:
        element = ElementTree.SubElement(
            suite,
            "testcase",
            classname=case.target,
            name=case.cell or "default",
            time=f"{case.seconds:.3f}",
        )
        if case.failed:
            reasons = case.top_reasons()
            headline = (
                f"{case.failed} of {plural(case.sessions, 'session')} failed: {reasons[0][0]}"
            )
            failure = ElementTree.SubElement(
                element, "failure", message=headline, type=reasons[0][0].split(":", 1)[0]
            )
            failure.text = "\n".join(
                f"{count}x {text} (e.g. job {job})"
                for text, count, job in reasons[:_REASONS_PER_CASE]
            )
        ElementTree.SubElement(
            element, "system-out"
        ).text = f"{case.sessions - case.failed} ok, {case.failed} failed"
    ElementTree.indent(suites)
    return ElementTree.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#1b1f24}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{margin-top:2rem;font-size:1.15rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{font-weight:600;background:#f5f6f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37}.bad{color:#cf222e}.muted{color:#656d76}
.bar{display:inline-block;height:.7rem;background:#cf222e;border-radius:2px}.bar.ok{background:#1a7f37}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #e3e6ea;border-radius:6px;padding:.6rem 1rem}
.card b{display:block;font-size:1.4rem}pre{white-space:pre-wrap;word-break:break-word;margin:0}
figure{margin:.5rem 0}figure img{max-width:100%;border:1px solid #e3e6ea}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


Screenshots = dict[tuple[str, int], list[tuple[str, bytes]]]


def html_report(model: ReportModel, *, screenshots: Screenshots) -> str:
    """The report page; `screenshots` maps (job, attempt) to PNGs inlined as data: URIs."""
    run, stats = model.run, model.stats
    counters = run.counters
    title = f"Smartfleet run {run.name or run.id}"
    cards = [
        ("status", run_status(run)),
        ("sessions", f"{counters.planned}"),
        ("ok", f"{counters.succeeded}"),
        ("failed", f"{counters.failed}"),
        ("success rate", f"{100 * stats.success_rate:.1f}%"),
        ("duration", run_duration_text(run)),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">run <code>{_e(run.id)}</code> · created {_e(timestamp_text(run.created_at))}'
        f" · targets {_e(', '.join(run.spec.targets))}</p>",
        '<div class="cards">',
        *(
            f'<div class="card" data-field="{_e(name)}"><span class="muted">{_e(name)}</span>'
            f"<b>{_e(value)}</b></div>"
            for name, value in cards
        ),
        "</div>",
        "<h2>Outcomes</h2><table><tr><th>outcome</th><th>count</th><th>share</th><th></th></tr>",
    ]
    total = stats.results or 1
    for name, count, share in outcome_rows(stats):
        css = "ok" if name == "ok" else "bad"
        width = max(1, round(300 * count / total))
        parts.append(
            f'<tr><td class="{css}">{_e(name)}</td><td class="num">{count}</td>'
            f'<td class="num">{_e(share)}</td><td><span class="bar {css}" style="width:{width}px">'
            "</span></td></tr>"
        )
    parts.append("</table><h2>Percentiles</h2><table>")
    parts.append("<tr><th>measure</th><th>p50</th><th>p95</th><th>p99 / max</th><th>n</th></tr>")
    parts.append(
        f'<tr><td>duration</td><td class="num">{_e(ms_text(stats.duration_p50_ms))}</td>'
        f'<td class="num">{_e(ms_text(stats.duration_p95_ms))}</td>'
        f'<td class="num">{_e(ms_text(stats.duration_max_ms))} (max)</td>'
        f'<td class="num">{stats.results}</td></tr>'
    )
    for metric in stats.metrics:
        parts.append(
            f"<tr><td>{_e(metric.name)}</td>"
            + "".join(
                f'<td class="num">{_e(metric_text(metric.name, value))}</td>'
                for value in (metric.p50, metric.p95, metric.p99)
            )
            + f'<td class="num">{metric.count}</td></tr>'
        )
    parts.append("</table><h2>Targets and cells</h2><table>")
    parts.append(
        "<tr><th>target</th><th>cell</th><th>sessions</th><th>failed</th><th>top reason</th></tr>"
    )
    for case in model.cases:
        reasons = case.top_reasons()
        parts.append(
            f"<tr><td>{_e(case.target)}</td><td>{_e(case.cell or 'default')}</td>"
            f'<td class="num">{case.sessions}</td>'
            f'<td class="num {"bad" if case.failed else "ok"}">{case.failed}</td>'
            f"<td>{_e(reasons[0][0]) if reasons else ''}</td></tr>"
        )
    parts.append("</table>")
    parts.append(_failures_html(model, screenshots))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _failures_html(model: ReportModel, screenshots: Screenshots) -> str:
    if not model.failed_sessions:
        return '<h2>Failures</h2><p class="ok">No session failed.</p>'
    parts = [f"<h2>Failures</h2><p>{plural(model.failures, 'failed session')}; the first "
             f"{len(model.failed_sessions)}:</p>"]  # fmt: skip
    for failed in model.failed_sessions:
        parts.append(
            f'<section class="failure" data-job="{_e(failed.job_id)}">'
            f"<h3>job <code>{_e(failed.job_id)}</code> · try {failed.attempt} · "
            f'<span class="bad">{_e(failed.outcome)}</span></h3>'
            f"<p>{_e(failed.target)} · {_e(failed.cell or 'default')}</p>"
            f"<pre>{_e(failed.error or '(no error text)')}</pre>"
        )
        for name, data in screenshots.get((failed.job_id, failed.attempt), []):
            encoded = base64.b64encode(data).decode("ascii")
            parts.append(
                f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{encoded}">'
                f'<figcaption class="muted">{_e(name)}</figcaption></figure>'
            )
        parts.append("</section>")
    return "\n".join(parts)
