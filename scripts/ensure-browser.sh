#!/usr/bin/env bash
# Make sure the browser node has a Chromium to launch, in the order the node looks for one:
# SMARTFLEET_BROWSER_PATH, Playwright's own Chromium, a system Chromium/Chrome on PATH.
# Installs one only when none is found. Usage: scripts/ensure-browser.sh [PYTHON]
set -euo pipefail

PY="${1:-.venv/bin/python}"

if [[ -n "${SMARTFLEET_BROWSER_PATH:-}" ]]; then
  if [[ -x "$SMARTFLEET_BROWSER_PATH" ]] || command -v "$SMARTFLEET_BROWSER_PATH" >/dev/null 2>&1; then
    echo "browser: $SMARTFLEET_BROWSER_PATH (SMARTFLEET_BROWSER_PATH)"
    exit 0
  fi
  echo "error: SMARTFLEET_BROWSER_PATH=$SMARTFLEET_BROWSER_PATH is not an executable" >&2
  exit 1
fi

# Playwright's own Chromium: where its registry puts it (starting the driver is all this costs).
playwright_chromium() {
  "$PY" - <<'PYEOF' 2>/dev/null || true
import os
from playwright.sync_api import sync_playwright

with sync_playwright() as playwright:
    path = playwright.chromium.executable_path
print(path if os.access(path, os.X_OK) else "")
PYEOF
}

system_chromium() {
  local name
  for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null 2>&1; then
      command -v "$name"
      return 0
    fi
  done
  return 1
}

found="$(playwright_chromium)"
if [[ -n "$found" ]]; then
  echo "browser: $found (Playwright)"
  exit 0
fi
if found="$(system_chromium)"; then
  echo "browser: $found (system)"
  exit 0
fi

echo "no Chromium found; installing one"
if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
  if found="$(system_chromium)"; then
    echo "browser: $found (installed with apt-get)"
    exit 0
  fi
  echo "apt-get installed no chromium executable; trying Playwright" >&2
fi

if "$PY" -m playwright install chromium; then
  found="$(playwright_chromium)"
  if [[ -n "$found" ]]; then
    echo "browser: $found (installed with Playwright)"
    echo "if it fails to launch for missing libraries: sudo $PY -m playwright install-deps chromium"
    exit 0
  fi
fi

cat >&2 <<MSG
error: could not install a browser. Do one of:
  sudo apt-get install chromium                       (Debian/Ubuntu)
  $PY -m playwright install --with-deps chromium      (as root, with its system libraries)
  export SMARTFLEET_BROWSER_PATH=/path/to/chromium
MSG
exit 1
