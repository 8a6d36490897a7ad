"""The CLI profile file: named contexts (gateway, token file, CA file, default output).

`$XDG_CONFIG_HOME/smartfleet/config.yaml` (else `~/.config/smartfleet/config.yaml`), like
kubectl's contexts:

    current_context: prod
    contexts:
      prod: {gateway: fleet.example.com:443, token_file: ~/.config/smartfleet/prod.token,
             ca_file: ~/.config/smartfleet/ca.pem, output: wide}

A context holds where the token is, never the token itself.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cli._errors import CliError

CONTEXT_KEYS = ("gateway", "token_file", "ca_file", "output")


def profile_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "smartfleet" / "config.yaml"


@dataclass(slots=True, kw_only=True)
class Context:
    gateway: str = ""
    token_file: str = ""
    ca_file: str = ""
    output: str = ""

    def token(self) -> str | None:
        """The token the context's token file holds (first non-comment line)."""
        if not self.token_file:
            return None
        path = Path(self.token_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise CliError(
                f"cannot read the context's token file {path}: {error.strerror or error}"
            ) from error
        for line in lines:
            if line.strip() and not line.lstrip().startswith("#"):
                return line.strip()
        raise CliError(f"the context's token file {path} holds no token")


@dataclass(slots=True, kw_only=True)
class Profile:
    current_context: str = ""
    contexts: dict[str, Context] = field(default_factory=dict)

    def context(self, name: str | None = None) -> tuple[str, Context] | None:
        """The named context (an error when unknown), or the current one, or None."""
        chosen = name or self.current_context
        if not chosen:
            return None
        found = self.contexts.get(chosen)
        if found is None:
            known = ", ".join(sorted(self.contexts)) or "none yet"
            raise CliError(
                f"no context {chosen!r} in {profile_path()} (contexts: {known}); "
                "add one with `smartctl config set-context NAME --gateway HOST:PORT`"
            )
        return chosen, found


def load_profile(path: Path | None = None) -> Profile:
    """The profile file, or an empty profile when there is none."""
    path = path or profile_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Profile()
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror or error}") from error
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise CliError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise CliError(f"{path}: expected a mapping with current_context and contexts")
    contexts: dict[str, Context] = {}
    raw_contexts = document.get("contexts") or {}
    if not isinstance(raw_contexts, dict):
        raise CliError(f"{path}: contexts must be a mapping of names to contexts")
    for name, raw in raw_contexts.items():
        if not isinstance(raw, dict):
            raise CliError(f"{path}: contexts.{name} must be a mapping")
        unknown = sorted(set(raw) - set(CONTEXT_KEYS))
        if unknown:
            raise CliError(
                f"{path}: contexts.{name}: unknown key {unknown[0]!r} "
                f"(keys: {', '.join(CONTEXT_KEYS)})"
            )
        contexts[str(name)] = Context(**{key: str(value) for key, value in raw.items()})
    return Profile(current_context=str(document.get("current_context") or ""), contexts=contexts)


def save_profile(profile: Profile, path: Path | None = None) -> Path:
    """Write the profile atomically, readable by its owner only."""
    path = path or profile_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    content: dict[str, Any] = {
        "current_context": profile.current_context,
        "contexts": {
            name: {key: value for key, value in asdict(context).items() if value}
            for name, context in sorted(profile.contexts.items())
        },
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        yaml.safe_dump(content, handle, sort_keys=False)
    os.replace(tmp, path)
    return path
