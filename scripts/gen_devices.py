"""Write services/common/devices.json: the Playwright device descriptor names the scheduler accepts.

The node emulates from `playwright.devices` itself; the scheduler validates run specs against
this list without starting a Playwright driver. tests/unit/test_devices.py fails on drift.
"""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import sync_playwright

TARGET = Path(__file__).resolve().parent.parent / "services" / "common" / "devices.json"


def installed_device_names() -> list[str]:
    with sync_playwright() as playwright:
        return sorted(playwright.devices)


if __name__ == "__main__":
    TARGET.write_text(json.dumps(installed_device_names(), indent=0) + "\n")
    print(f"wrote {TARGET}")
