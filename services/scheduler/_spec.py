"""RunSpec: what a run does, validated before anything is stored."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.common.allowlist import host_allowed
from services.common.errors import InvalidArgument

Engine = Literal["chromium", "firefox", "webkit"]
MAX_SESSIONS = 100_000_000
MAX_TARGETS = 1_000


class Pacing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["fast"] = "fast"


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrency: int = Field(0, ge=0, le=1_000_000)
    session_timeout: timedelta = timedelta(seconds=60)

    @field_validator("session_timeout")
    @classmethod
    def _timeout_range(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(hours=2):
            raise ValueError("must be between 1s and 2h")
        return value


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", max_length=200)
    targets: list[str] = Field(min_length=1, max_length=MAX_TARGETS)
    sessions: int = Field(ge=1, le=MAX_SESSIONS)
    pacing: Pacing = Field(default_factory=Pacing)
    limits: Limits = Field(default_factory=Limits)
    engine: Engine = "chromium"
    priority: int = Field(0, ge=0, le=100)
    seed: int = Field(0, ge=0)

    @field_validator("targets")
    @classmethod
    def _http_urls(cls, targets: list[str]) -> list[str]:
        for index, url in enumerate(targets):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                raise ValueError(f"[{index}] {url!r} is not an http or https URL")
            if not parts.hostname:
                raise ValueError(f"[{index}] {url!r} has no host")
            if len(url) > 2048:
                raise ValueError(f"[{index}] is longer than 2048 characters")
        return targets


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate_spec(data: dict[str, object], *, allowed_hosts: list[str]) -> RunSpec:
    """Build a RunSpec or raise InvalidArgument naming the first bad field and why."""
    try:
        spec = RunSpec.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        loc = tuple(first["loc"])
        if message.startswith("[") and "] " in message:
            # Validators over lists put the element index first; fold it into the path.
            position, _, message = message[1:].partition("] ")
            loc = (*loc, int(position))
        raise InvalidArgument(_field_path(loc), message) from None
    for index, url in enumerate(spec.targets):
        host = urlsplit(url).hostname or ""
        if not host_allowed(host, allowed_hosts):
            raise InvalidArgument(
                f"spec.targets[{index}]",
                f"host {host!r} is not in the scheduler's target allowlist "
                "(loopback and SMARTFLEET_ALLOWED_HOSTS)",
            )
    return spec
