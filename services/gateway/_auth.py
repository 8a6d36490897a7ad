"""Bearer-token authentication for every Fleet call, unary and streaming alike."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from services.common.grpc_server import rewrap

# Health checks and reflection stay open so load balancers and grpcurl can probe the edge.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Accepts `authorization: Bearer <token>` when the token's SHA-256 is configured.

    Tokens are kept only as digests and compared in constant time. A refused call gets
    UNAUTHENTICATED through a handler of the method's own shape, so streams fail cleanly too.
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = [
            token.removeprefix("sha256:") if token.startswith("sha256:") else token_digest(token)
            for token in tokens
        ]
        if not self._digests:
            raise ValueError("the gateway needs at least one token (SMARTFLEET_GATEWAY_TOKENS)")

    def _authorized(self, metadata: Iterable[tuple[str, Any]] | None) -> str | None:
        """None when authorized, else the reason."""
        values = [value for key, value in metadata or () if key == "authorization"]
        if not values:
            return "missing bearer token: send `authorization: Bearer <token>` metadata"
        scheme, _, token = str(values[0]).partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "malformed authorization metadata: expected `Bearer <token>`"
        digest = token_digest(token.strip())
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return None if matched else "invalid token"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_OPEN_PREFIXES):
            return handler
        reason = self._authorized(handler_call_details.invocation_metadata)
        if reason is None:
            return handler

        if handler.response_streaming:

            async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
                yield  # pragma: no cover - makes this an async generator like the real handler

            return rewrap(handler, deny_stream)

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

        return rewrap(handler, deny)
