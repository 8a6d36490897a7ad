"""The gateway: the public, authenticated edge of the Fleet API."""

from services.gateway.server import GatewayService, serve

__all__ = ["GatewayService", "serve"]
