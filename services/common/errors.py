"""One error hierarchy; the gRPC interceptor maps each class to a status code."""

from __future__ import annotations

from collections.abc import Sequence

import grpc


class SmartfleetError(Exception):
    """Root of every error Smartfleet raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(SmartfleetError):
    """Request fields are malformed: `violations` lists each one's dotted path and why (the
    first is also `field` and `reason`)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str, *, more: Sequence[tuple[str, str]] = ()) -> None:
        self.violations = [(field, reason), *more]
        super().__init__("; ".join(f"{f}: {r}" if f else r for f, r in self.violations))
        self.field = field
        self.reason = reason

    @classmethod
    def of(cls, violations: Sequence[tuple[str, str]]) -> InvalidArgument:
        (field, reason), *more = violations
        return cls(field, reason, more=more)


class NotFound(SmartfleetError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class FailedPrecondition(SmartfleetError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class AlreadyExists(SmartfleetError):
    code = grpc.StatusCode.ALREADY_EXISTS

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} already exists")
        self.kind = kind
        self.key = key


class Unauthenticated(SmartfleetError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(SmartfleetError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(SmartfleetError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(SmartfleetError):
    code = grpc.StatusCode.UNAVAILABLE


class BrowserNotFound(SmartfleetError):
    """No usable browser on this host."""

    code = grpc.StatusCode.FAILED_PRECONDITION
