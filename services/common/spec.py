"""RunSpec: what a run does, validated in full before anything is stored.

The same shape is the proto-JSON of `smartfleet.v1.RunSpec` (proto field names), the YAML/JSON
that `smartctl run create -f` reads, and what the database keeps. Durations are `timedelta`
here and strings ("500ms", "5s", "2m") at the edges.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from services.common.allowlist import host_allowed
from services.common.devices import device_names
from services.common.durations import parse_duration
from services.common.errors import InvalidArgument

# `noop` is benchmark-only: served by nodes started with SMARTFLEET_NODE_ENGINE=noop, it
# completes jobs without a browser. A run gets it only by naming it; the default is chromium.
Engine = Literal["chromium", "firefox", "webkit", "noop"]
ENGINES: tuple[str, ...] = ("chromium", "firefox", "webkit", "noop")
MAX_SESSIONS = 100_000_000
MAX_TARGETS = 1_000
MAX_STEPS = 200
MAX_CELLS = 10_000
MAX_DIMENSION = 100


def _to_timedelta(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


def proto_duration(value: timedelta) -> str:
    """The proto-JSON spelling of a duration: decimal seconds with an `s`."""
    seconds = Decimal(value.days * 86_400 + value.seconds) + Decimal(value.microseconds) / 1_000_000
    return f"{seconds.normalize():f}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(_to_timedelta),
    PlainSerializer(proto_duration, return_type=str, when_used="json"),
]
Weight = Annotated[float, Field(ge=0, le=1_000_000)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=2000)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _NestedFieldError(ValueError):
    """A check on the whole spec that is about one nested field: parse_spec reports it there."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)"
        ) from None
    return value


def _check_pattern(value: str) -> str:
    """URL patterns are globs, or regular expressions written /like this/."""
    if len(value) > 2 and value.startswith("/") and value.endswith("/"):
        if len(value) > 202:
            # Patterns run on the nodes; keep them small enough to reason about.
            raise ValueError("a /regex/ pattern is at most 200 characters")
        try:
            re.compile(value[1:-1])
        except re.error as error:
            raise ValueError(f"invalid regular expression: {error}") from None
    return value


# ----------------------------------------------------------------------------- steps


class GotoStep(_Model):
    url: str = Field("", max_length=2048)
    wait_until: Literal["load", "domcontentloaded", "networkidle", "commit"] = "load"


class WaitForStep(_Model):
    selector: str = Field("", max_length=2000)
    state: Literal["visible", "attached", "detached", "hidden"] = "visible"
    url: str = Field("", max_length=2048)
    load_state: Literal["", "load", "domcontentloaded", "networkidle"] = ""

    @model_validator(mode="after")
    def _exactly_one(self) -> WaitForStep:
        given = [name for name in ("selector", "url", "load_state") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("wait_for needs exactly one of selector, url, load_state")
        _check_pattern(self.url)
        return self


class ClickStep(_Model):
    selector: NonEmpty


class FillStep(_Model):
    selector: NonEmpty
    value: str = Field("", max_length=100_000)


class PressStep(_Model):
    selector: str = Field("", max_length=2000)
    key: Annotated[str, Field(min_length=1, max_length=100)]


class SelectStep(_Model):
    selector: NonEmpty
    values: list[str] = Field(min_length=1, max_length=100)


class HoverStep(_Model):
    selector: NonEmpty


class ScrollStep(_Model):
    selector: str = Field("", max_length=2000)
    dx: int = Field(0, ge=-1_000_000, le=1_000_000)
    dy: int = Field(0, ge=-1_000_000, le=1_000_000)


class DwellStep(_Model):
    min: Duration
    max: Duration | None = None

    @model_validator(mode="after")
    def _ordered(self) -> DwellStep:
        upper = self.max if self.max is not None else self.min
        if self.min < timedelta(0) or upper < self.min:
            raise ValueError("dwell needs 0 <= min <= max")
        if upper > timedelta(minutes=30):
            raise ValueError("dwell is at most 30m")
        return self


class ExtractStep(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
    selector: NonEmpty
    attribute: str = Field("", max_length=200)
    all: bool = False


class AssertStep(_Model):
    status: int = Field(0, ge=0, le=599)
    text: str = Field("", max_length=10_000)
    selector: str = Field("", max_length=2000)
    count: int | None = Field(None, ge=0)
    min_count: int | None = Field(None, ge=0)
    url: str = Field("", max_length=2048)

    @model_validator(mode="after")
    def _one_check(self) -> AssertStep:
        given = [name for name in ("status", "text", "selector", "url") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("assert needs exactly one of status, text, selector, url")
        if (self.count is not None or self.min_count is not None) and not self.selector:
            raise ValueError("count and min_count go with selector")
        _check_pattern(self.url)
        return self


class ScreenshotStep(_Model):
    selector: str = Field("", max_length=2000)
    full_page: bool = False
    name: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$")


ACTIONS = (
    "goto",
    "wait_for",
    "click",
    "fill",
    "press",
    "select",
    "hover",
    "scroll",
    "dwell",
    "extract",
    "assert",
    "screenshot",
)


class Step(_Model):
    timeout: Duration = timedelta(seconds=30)
    optional: bool = False
    goto: GotoStep | None = None
    wait_for: WaitForStep | None = None
    click: ClickStep | None = None
    fill: FillStep | None = None
    press: PressStep | None = None
    select: SelectStep | None = None
    hover: HoverStep | None = None
    scroll: ScrollStep | None = None
    dwell: DwellStep | None = None
    extract: ExtractStep | None = None
    assert_: AssertStep | None = Field(None, alias="assert")
    screenshot: ScreenshotStep | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [action for action in ACTIONS if self.params_of(action) is not None]
        if len(given) != 1:
            raise ValueError(f"a step needs exactly one action: {', '.join(ACTIONS)}")
        if not timedelta(milliseconds=100) <= self.timeout <= timedelta(hours=1):
            raise ValueError("timeout must be between 100ms and 1h")
        return self

    def params_of(self, action: str) -> BaseModel | None:
        value: BaseModel | None = getattr(self, "assert_" if action == "assert" else action)
        return value

    @property
    def action(self) -> str:
        return next(action for action in ACTIONS if self.params_of(action) is not None)


# ----------------------------------------------------------------------------- matrix


class Geolocation(_Model):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    accuracy: float = Field(0, ge=0)


class DeviceWeight(_Model):
    name: NonEmpty
    weight: Weight = 1.0

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in device_names():
            raise ValueError(
                f"unknown device {value!r}; use a Playwright device name like 'Pixel 7' or 'Desktop Chrome'"
            )
        return value


class LocaleWeight(_Model):
    locale: Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
    timezone: str = ""
    geolocation: Geolocation | None = None
    weight: Weight = 1.0

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_timezone(value) if value else value


class EngineWeight(_Model):
    engine: Engine
    weight: Weight = 1.0


class LabelsWeight(_Model):
    labels: dict[str, str] = Field(min_length=1, max_length=20)
    weight: Weight = 1.0


class Matrix(_Model):
    devices: list[DeviceWeight] = Field(default_factory=list, max_length=MAX_DIMENSION)
    locales: list[LocaleWeight] = Field(default_factory=list, max_length=MAX_DIMENSION)
    engines: list[EngineWeight] = Field(default_factory=list, max_length=len(ENGINES))
    labels: list[LabelsWeight] = Field(default_factory=list, max_length=MAX_DIMENSION)

    @model_validator(mode="after")
    def _bounded(self) -> Matrix:
        cells = 1
        for name in ("devices", "locales", "engines", "labels"):
            dimension = getattr(self, name)
            if dimension and sum(entry.weight for entry in dimension) <= 0:
                raise ValueError(f"{name}: the weights add up to zero")
            cells *= max(1, len(dimension))
        if cells > MAX_CELLS:
            raise ValueError(f"the matrix has {cells} cells; at most {MAX_CELLS}")
        return self


# ----------------------------------------------------------------------------- pacing, limits


class Phase(_Model):
    name: str = Field("", max_length=100)
    duration: Duration
    arrival_rate: float = Field(0.0, ge=0, le=100_000)
    ramp_to: float | None = Field(None, ge=0, le=100_000)

    @model_validator(mode="after")
    def _positive(self) -> Phase:
        if self.duration <= timedelta(0):
            raise ValueError("duration must be positive")
        return self

    @property
    def arrivals(self) -> Fraction:
        """Sessions the phase places: its rate integrated over its duration, exactly."""
        seconds = Fraction(self.duration // timedelta(microseconds=1), 1_000_000)
        end = self.arrival_rate if self.ramp_to is None else self.ramp_to
        return seconds * (Fraction(self.arrival_rate) + Fraction(end)) / 2


class Diurnal(_Model):
    timezone: str = "UTC"
    hourly_weights: list[Weight] = Field(min_length=24, max_length=24)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_timezone(value)

    @field_validator("hourly_weights")
    @classmethod
    def _some_weight(cls, value: list[float]) -> list[float]:
        if sum(value) <= 0:
            raise ValueError("at least one hour needs a positive weight")
        return value


class Pacing(_Model):
    mode: Literal["fast", "window", "phases"] = "fast"
    window: Duration | None = None
    jitter: float | None = Field(None, ge=0, le=1)
    phases: list[Phase] = Field(default_factory=list, max_length=100)
    diurnal: Diurnal | None = None

    @model_validator(mode="after")
    def _mode_fields(self) -> Pacing:
        if self.mode == "window":
            if self.window is None or not timedelta(seconds=1) <= self.window <= timedelta(days=31):
                raise ValueError("window pacing needs a window between 1s and 31d")
        elif self.window is not None:
            raise ValueError("window goes with mode: window")
        if self.mode == "phases" and not self.phases:
            raise ValueError("phases pacing needs at least one phase")
        if self.mode != "phases" and self.phases:
            raise ValueError("phases go with mode: phases")
        if self.diurnal is not None and self.mode != "window":
            raise ValueError("diurnal goes with mode: window")
        return self


class Limits(_Model):
    max_concurrency: int = Field(0, ge=0, le=1_000_000)
    session_timeout: Duration = timedelta(seconds=60)
    per_host_rate: float = Field(0.0, ge=0, le=100_000)
    per_host_burst: int = Field(0, ge=0, le=100_000)
    engine_concurrency: dict[Engine, Annotated[int, Field(ge=0, le=1_000_000)]] = Field(
        default_factory=dict
    )

    @field_validator("session_timeout")
    @classmethod
    def _timeout_range(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(hours=2):
            raise ValueError("must be between 1s and 2h")
        return value


DEFAULT_BACKOFF = (timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=45))


class RetryPolicy(_Model):
    max_attempts: int = Field(4, ge=1, le=20)
    backoff: list[Duration] = Field(default_factory=lambda: list(DEFAULT_BACKOFF), max_length=20)

    @field_validator("backoff")
    @classmethod
    def _bounded(cls, value: list[timedelta]) -> list[timedelta]:
        for position, wait in enumerate(value):
            if not timedelta(0) <= wait <= timedelta(days=7):
                raise ValueError(f"[{position}] must be between 0s and 7d")
        return value or list(DEFAULT_BACKOFF)

    def wait_before(self, attempt: int) -> timedelta:
        """The wait before `attempt` (2 for the first retry); the last entry repeats."""
        return self.backoff[min(attempt - 2, len(self.backoff) - 1)]


class AccountSelector(_Model):
    labels: dict[str, str] = Field(default_factory=dict, max_length=20)
    names: list[str] = Field(default_factory=list, max_length=1000)
    write_back: bool = False

    @model_validator(mode="after")
    def _something(self) -> AccountSelector:
        if not self.labels and not self.names:
            raise ValueError("an account selector needs labels or names")
        return self


# ----------------------------------------------------------------------------- the spec


class RunSpec(_Model):
    name: str = Field("", max_length=200)
    targets: list[str] = Field(min_length=1, max_length=MAX_TARGETS)
    sessions: int = Field(ge=1, le=MAX_SESSIONS)
    pacing: Pacing = Field(default_factory=Pacing)
    limits: Limits = Field(default_factory=Limits)
    engine: Engine = "chromium"
    priority: int = Field(0, ge=0, le=100)
    seed: int = Field(0, ge=0, lt=2**64)
    steps: list[Step] = Field(default_factory=list, max_length=MAX_STEPS)
    matrix: Matrix = Field(default_factory=Matrix)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    accounts: AccountSelector | None = None
    artifacts: Literal["never", "on_failure", "always"] = "never"

    @field_validator("targets")
    @classmethod
    def _http_urls(cls, targets: list[str]) -> list[str]:
        for index, url in enumerate(targets):
            try:
                parts = urlsplit(url)
            except ValueError:
                raise ValueError(f"[{index}] {url!r} is not a valid URL") from None
            if parts.scheme not in ("http", "https"):
                raise ValueError(f"[{index}] {url!r} is not an http or https URL")
            if not parts.hostname:
                raise ValueError(f"[{index}] {url!r} has no host")
            if len(url) > 2048:
                raise ValueError(f"[{index}] is longer than 2048 characters")
        return targets

    @model_validator(mode="after")
    def _phases_place_every_session(self) -> RunSpec:
        if self.pacing.mode == "phases":
            # Job i is due where the cumulative arrivals reach i: i < total is inside the phases.
            placed = math.ceil(sum((phase.arrivals for phase in self.pacing.phases), Fraction(0)))
            if placed < self.sessions:
                raise _NestedFieldError(
                    ("pacing", "phases"),
                    f"the phases place only {placed} of {self.sessions} sessions",
                )
        return self

    @model_validator(mode="after")
    def _screenshots_kept(self) -> RunSpec:
        if self.artifacts == "never":
            for index, step in enumerate(self.steps):
                if step.screenshot is not None:
                    raise _NestedFieldError(
                        ("steps", index, "screenshot"),
                        "artifacts is 'never', so the screenshot would be dropped; "
                        "set artifacts to on_failure or always",
                    )
        return self

    @property
    def engines(self) -> tuple[str, ...]:
        return tuple(entry.engine for entry in self.matrix.engines) or (self.engine,)

    def to_json(self) -> dict[str, Any]:
        """The proto-JSON shape (what the database keeps and `RunSpec` messages parse)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = "spec"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "assert_":
            path += ".assert"
        elif part.startswith(("function-", "tagged-union")):
            continue
        else:
            path += f".{part}"
    return path


_PLAIN: dict[str, str] = {
    "missing": "is required",
    "greater_than_equal": "must be ≥ {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be ≤ {le}",
    "less_than": "must be < {lt}",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
    "string_too_long": "must be at most {max_length} characters",
    "string_too_short": "must be at least {min_length} characters",
}


def _plain(kind: str, ctx: dict[str, Any], message: str) -> str:
    """pydantic's wording of the common checks, said the way an API error says it."""
    template = _PLAIN.get(kind)
    if template is None:
        return message
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return message


def parse_spec(data: dict[str, Any]) -> RunSpec:
    """Build a RunSpec or raise InvalidArgument naming every bad field and why."""
    try:
        return RunSpec.model_validate(data)
    except ValidationError as error:
        violations = []
        for each in error.errors():
            message = str(each["msg"]).removeprefix("Value error, ")
            loc = tuple(each["loc"])
            cause = each.get("ctx", {}).get("error")
            if isinstance(cause, _NestedFieldError):
                loc = (*loc, *cause.loc)
            if message.startswith("[") and "] " in message:
                # Validators over lists put the element index first; fold it into the path.
                position, _, message = message[1:].partition("] ")
                loc = (*loc, int(position))
            message = _plain(each.get("type", ""), each.get("ctx") or {}, message)
            violation = (_field_path(loc), message)
            if violation not in violations:
                violations.append(violation)
        raise InvalidArgument.of(violations) from None


def validate_spec(data: dict[str, Any], *, allowed_hosts: list[str]) -> RunSpec:
    """parse_spec, then the server's own rules: every target host must be allowlisted."""
    spec = parse_spec(data)
    violations = []
    for index, url in enumerate(spec.targets):
        host = urlsplit(url).hostname or ""
        if not host_allowed(host, allowed_hosts):
            violations.append(
                (
                    f"spec.targets[{index}]",
                    f"host {host!r} is not in the scheduler's target allowlist "
                    "(loopback and SMARTFLEET_ALLOWED_HOSTS)",
                )
            )
    for index, step in enumerate(spec.steps):
        if step.goto is not None and urlsplit(step.goto.url).hostname:
            host = urlsplit(step.goto.url).hostname or ""
            if "{" not in host and not host_allowed(host, allowed_hosts):
                violations.append(
                    (
                        f"spec.steps[{index}].goto.url",
                        f"host {host!r} is not in the scheduler's target allowlist",
                    )
                )
    if violations:
        raise InvalidArgument.of(violations)
    return spec
