"""Rows for every table of the baseline schema, as a version of that schema wrote them.

Used by tests/integration/test_migrations.py: NULLs, big counters, unicode, nested JSON, sealed
account state and arbitrary bytes, so an upgrade that loses or changes any of them is seen.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet

T0 = datetime(2026, 11, 30, 23, 59, 58, 123456, tzinfo=UTC)
SEAL = Fernet(Fernet.generate_key())
STORAGE_STATE = json.dumps({"cookies": [{"name": "sid", "value": "s3cr3t"}], "origins": []})
EVERY_BYTE = bytes(range(256))


def sample_rows() -> dict[str, list[dict[str, Any]]]:
    """Two or more rows per table, with NULLs, big counters, unicode, nested JSON and bytes."""
    later = T0 + timedelta(minutes=5)
    return {
        "runs": [
            {
                "id": f"run{n}",
                "name": ("smoke ✓ " * n).strip(),
                "status": status,
                "priority": n - 1,
                "spec": {"targets": ["http://127.0.0.1:8080/"], "sessions": 10**6, "n": [n, None]},
                "planned": 10**12 + n,
                "next_index": 3,
                "dispatched": 3,
                "succeeded": 2**40,
                "failed": 1,
                "retrying": 0,
                "in_flight": 1,
                "dead": 0,
                "cancelled": n,
                "expedited_at": later if n == 2 else None,
                "created_at": T0,
                "started_at": T0 + timedelta(seconds=1),
                "finished_at": None if n == 1 else later,
            }
            for n, status in ((1, "running"), (2, "completed"))
        ],
        "jobs": [
            {
                "id": f"run1:{index}",
                "run_id": "run1",
                "index": index,
                "attempt": index + 1,
                "status": status,
                "pool": "chromium",
                "target_url": "http://127.0.0.1:8080/" + "é" * index,
                "cell": {"device": "Pixel 7", "locale": "de-DE", "labels": {"region": "eu"}},
                "account": "alice" if index else None,
                "outcome": None if status == "dispatched" else "ok",
                "error": "timeout after 30s" if status == "retry_wait" else None,
                "dispatched_at": T0,
                "deadline": later,
                "retry_at": later if status == "retry_wait" else None,
                "finished_at": later if status == "succeeded" else None,
            }
            for index, status in enumerate(("succeeded", "retry_wait", "dispatched"))
        ],
        "results": [
            {
                "job_id": f"run1:{index}",
                "attempt": 1,
                "run_id": "run1",
                "index": index,
                "outcome": outcome,
                "error_class": "none" if outcome == "ok" else "transient",
                "http_status": 200 if outcome == "ok" else 0,
                "duration_ms": 1234.5678,
                "node_id": "host-a-local",
                "engine": "chromium",
                "cell_key": "Pixel 7|de-DE",
                "account": "alice",
                "started_at": T0,
                "finished_at": later,
                "stored_at": later + timedelta(microseconds=7),
                "detail": {"final_url": "http://127.0.0.1:8080/", "redirects": [], "lcp_ms": 812.5},
            }
            for index, outcome in enumerate(("ok", "timeout"))
        ],
        "nodes": [
            {
                "id": "host-a-local",
                "host": "host-a",
                "info": {"engines": ["chromium"], "labels": {"region": "eu"}, "slots": 8},
                "state": "ready",
                "slots": 8,
                "busy_slots": 3,
                "free_slots": 5,
                "cpu_percent": 37.25,
                "rss_bytes": 3 * 2**31,
                "registered_at": T0,
                "last_heartbeat": later,
            }
        ],
        "accounts": [
            {
                "name": "alice",
                "labels": {"team": "ops"},
                "proxy": "http://user:***@proxy.test:3128",
                "proxy_sealed": SEAL.encrypt(b"http://user:pw@proxy.test:3128"),
                "sessions_per_hour": 30,
                "cooldown_s": 600.0,
                "status": "active",
                "cooldown_until": later,
                "storage_state": SEAL.encrypt(STORAGE_STATE.encode()),
                "last_turn": 41,
                "created_at": T0,
                "updated_at": later,
            },
            {
                "name": "bob",
                "labels": {},
                "proxy": "",
                "proxy_sealed": None,
                "sessions_per_hour": 0,
                "cooldown_s": 0.5,
                "status": "disabled",
                "cooldown_until": None,
                # Not a Fernet token: bytes must come back exactly, whatever they are.
                "storage_state": EVERY_BYTE,
                "last_turn": 0,
                "created_at": T0,
                "updated_at": T0,
            },
        ],
        "account_uses": [
            {"account": "alice", "used_at": T0 + timedelta(seconds=n)} for n in range(3)
        ],
        "schedules": [
            {
                "name": "checkout",
                "cron": "*/5 * * * *",
                "timezone": "Europe/Berlin",
                "template": {"targets": ["http://127.0.0.1:8080/checkout"], "sessions": 5},
                "paused": False,
                "next_fire_at": later,
                "last_fire_at": T0,
                "last_run_id": "run2",
                "runs_created": 12,
                "firing_tick": later,
                "firing_since": T0,
                "created_at": T0,
                "updated_at": later,
            },
            {
                "name": "nightly",
                "cron": "0 3 * * *",
                "timezone": "UTC",
                "template": {"targets": ["http://127.0.0.1:8080/"]},
                "paused": True,
                "next_fire_at": None,
                "last_fire_at": None,
                "last_run_id": "",
                "runs_created": 0,
                "firing_tick": None,
                "firing_since": None,
                "created_at": T0,
                "updated_at": T0,
            },
        ],
    }
