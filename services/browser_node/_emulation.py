"""A matrix cell as browser-context options: device descriptor, locale, time zone, position."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.common.errors import SmartfleetError
from services.common.types import Cell


class UnknownDevice(SmartfleetError):
    """The cell names a device this node's Playwright has no descriptor for."""

    def __init__(self, device: str, playwright_version: str) -> None:
        super().__init__(
            f"device {device!r} is not known to this node's Playwright {playwright_version}"
        )
        self.device = device


def context_options(
    cell: Cell,
    *,
    devices: Mapping[str, Mapping[str, Any]],
    default_user_agent: str,
    product_token: str = "",
    playwright_version: str = "",
) -> dict[str, Any]:
    """Keyword arguments for `browser.new_context` that put a session into `cell`.

    The device's user agent (or the browser's own) keeps the product token: emulating a phone
    does not turn traffic marking off.
    """
    options: dict[str, Any] = {}
    if cell.device:
        descriptor = devices.get(cell.device)
        if descriptor is None:
            raise UnknownDevice(cell.device, playwright_version)
        # default_browser_type says which engine the device ships with; not a context option.
        options.update((k, v) for k, v in descriptor.items() if k != "default_browser_type")
    user_agent = str(options.get("user_agent") or default_user_agent)
    if user_agent and product_token:
        user_agent = f"{user_agent} {product_token}"
    if user_agent:
        options["user_agent"] = user_agent
    if cell.locale:
        options["locale"] = cell.locale
    if cell.timezone:
        options["timezone_id"] = cell.timezone
    if cell.geolocation is not None:
        options["geolocation"] = {
            "latitude": cell.geolocation.latitude,
            "longitude": cell.geolocation.longitude,
            "accuracy": cell.geolocation.accuracy,
        }
        options["permissions"] = ["geolocation"]
    return options
