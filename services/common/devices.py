"""Names of the Playwright device descriptors ("Pixel 7", "Desktop Chrome", …) a matrix may use."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path


@cache
def device_names() -> frozenset[str]:
    return frozenset(json.loads((Path(__file__).parent / "devices.json").read_text()))
