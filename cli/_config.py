"""Where the gateway is and which token to use: flags, SMARTFLEET_* env, or <data-dir>/stack.json."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli._errors import CliError
from cli._profile import Context

DEFAULT_DATA_DIR = ".smartfleet"
STACK_FILE = "stack.json"


def stack_file(data_dir: Path) -> Path:
    return data_dir / STACK_FILE


def write_stack_file(data_dir: Path, content: dict[str, Any]) -> Path:
    """Atomically write stack.json readable by its owner only (it holds the token)."""
    target = stack_file(data_dir)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2)
        handle.write("\n")
    os.chmod(tmp, 0o600)  # in case the file already existed with a wider mode
    os.replace(tmp, target)
    return target


def read_stack_file(data_dir: Path) -> dict[str, Any] | None:
    """The stack description `smartctl up` wrote in `data_dir`, or None when there is none."""
    path = stack_file(data_dir)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise CliError(f"cannot read {path}: {error}") from error
    if not isinstance(content, dict):
        raise CliError(f"cannot read {path}: not a JSON object")
    return content


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """How to reach the gateway; `source` says where the address came from (for messages)."""

    gateway: str
    token: str | None
    source: str
    timeout: float = 15.0
    ca_file: str | None = None  # TLS with this CA; plaintext (loopback stacks) without


def resolve_connection(
    *,
    gateway: str | None,
    token: str | None,
    data_dir: Path,
    timeout: float = 15.0,
    ca_file: str | None = None,
    context: Context | None = None,
    context_name: str = "",
) -> Connection:
    """Flags and env first, then the profile's context, then a local `smartctl up`'s stack.json.

    A token (or CA) from a context or stack.json is only ever used with the gateway it belongs
    to: an explicit --gateway elsewhere does not get it.
    """
    if context is not None and context.gateway and (not gateway or gateway == context.gateway):
        return Connection(
            gateway=context.gateway,
            token=token or context.token(),
            source=f"context {context_name}" if not gateway else "--gateway",
            timeout=timeout,
            ca_file=ca_file or context.ca_file or None,
        )
    if gateway and token:
        return Connection(
            gateway=gateway, token=token, source="--gateway", timeout=timeout, ca_file=ca_file
        )
    stack = read_stack_file(data_dir)
    if not gateway:
        if stack is None or not stack.get("gateway"):
            raise CliError(
                f"no gateway to talk to: no {stack_file(data_dir)} found. "
                "Start a local stack with `smartctl up` (in another terminal), "
                "or pass --gateway HOST:PORT and --token "
                "(env SMARTFLEET_GATEWAY_ADDR, SMARTFLEET_TOKEN), "
                "or pick a context (`smartctl config ls`), "
                "or point --data-dir at the directory `smartctl up` uses."
            )
        return Connection(
            gateway=str(stack["gateway"]),
            token=token or _str_or_none(stack.get("token")),
            source=str(stack_file(data_dir)),
            timeout=timeout,
            ca_file=ca_file,
        )
    if not token and stack is not None and stack.get("gateway") == gateway:
        token = _str_or_none(stack.get("token"))
    return Connection(
        gateway=gateway, token=token, source="--gateway", timeout=timeout, ca_file=ca_file
    )


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None
