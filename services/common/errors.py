"""One error hierarchy; the gRPC interceptor maps each class to a status code."""

from __future__ import annotations

import grpc


class SmartfleetError(Exception):
    """Root of every error Smartfleet raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(SmartfleetError):
    """A request field is malformed; `field` is its dotted path, `reason` says why."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


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


class Unavailable(SmartfleetError):
    code = grpc.StatusCode.UNAVAILABLE


class BrowserNotFound(SmartfleetError):
    """No usable browser on this host."""

    code = grpc.StatusCode.FAILED_PRECONDITION
