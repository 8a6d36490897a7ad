#!/usr/bin/env bash
# `make demo`: start the demo site and a local stack, run 100 real browser sessions against four
# of its pages, show progress and a summary, stop everything. Exits 0 only if every session ok.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
SMARTCTL="$VENV/bin/smartctl"
PY="$VENV/bin/python"
DATA_DIR="${DEMO_DATA_DIR:-.smartfleet/demo}"
SESSIONS="${DEMO_SESSIONS:-100}"
START_TIMEOUT="${DEMO_START_TIMEOUT:-180}"

mkdir -p "$DATA_DIR"
chmod 700 "$DATA_DIR"
site_log="$DATA_DIR/demo-site.log"
up_log="$DATA_DIR/up.log"
site_pid=""
up_pid=""

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if [[ -n "$up_pid$site_pid" ]]; then
    echo "stopping the stack and the demo site…"
    # TERM, not INT: background jobs of a script start with SIGINT ignored.
    for pid in $up_pid $site_pid; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $up_pid $site_pid; do wait "$pid" 2>/dev/null || true; done
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  echo "demo: $1" >&2
  if [[ -n "${2:-}" && -f "$2" ]]; then
    echo "--- last lines of $2" >&2
    tail -n 30 "$2" >&2
  fi
  exit 2
}

# 1. The demo site on a free port; it prints "demo site on http://127.0.0.1:PORT".
"$SMARTCTL" demo-site --port 0 >"$site_log" 2>&1 &
site_pid=$!
site_url=""
for _ in $(seq 1 100); do
  site_url="$(sed -n 's/^demo site on \(http[^ ]*\).*/\1/p' "$site_log" | head -n 1)"
  [[ -n "$site_url" ]] && break
  kill -0 "$site_pid" 2>/dev/null || fail "the demo site exited" "$site_log"
  sleep 0.1
done
[[ -n "$site_url" ]] || fail "the demo site did not start" "$site_log"
echo "demo site: $site_url"

# 2. The stack: NATS, scheduler, gateway, one browser node, on free ports.
echo "starting the stack (logs in $DATA_DIR/logs)…"
"$SMARTCTL" up --data-dir "$DATA_DIR" --gateway-port 0 --scheduler-port 0 \
  --start-timeout "$START_TIMEOUT" >"$up_log" 2>&1 &
up_pid=$!

# Ready when stack.json names this `up` as its supervisor (not one left by an earlier run).
stack_ready() {
  "$PY" - "$DATA_DIR/stack.json" "$up_pid" <<'PYEOF' 2>/dev/null
import json, sys
with open(sys.argv[1], encoding="utf-8") as handle:
    sys.exit(0 if json.load(handle).get("supervisor_pid") == int(sys.argv[2]) else 1)
PYEOF
}
deadline=$((SECONDS + START_TIMEOUT * 3))
until stack_ready; do
  kill -0 "$up_pid" 2>/dev/null || fail "smartctl up exited" "$up_log"
  ((SECONDS < deadline)) || fail "the stack did not start in time" "$up_log"
  sleep 0.2
done
echo "stack is up"

# 3. The run: 100 sessions over four pages, started at once, then followed to the end.
run_id="$("$SMARTCTL" --data-dir "$DATA_DIR" run create \
  --target "$site_url/" --target "$site_url/about" --target "$site_url/products" \
  --target "$site_url/redirect-chain" --sessions "$SESSIONS" --name demo --start)"

code=0
"$SMARTCTL" --data-dir "$DATA_DIR" run watch "$run_id" || code=$?
exit "$code"
