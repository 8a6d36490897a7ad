"""Help-text fixes for Typer: flags show no `<bool>` placeholder (`--start`, not `--start <bool>`)."""

from __future__ import annotations

from typing import Any

from typer.core import TyperOption

_display_type_rich = TyperOption.display_type_rich


def _flag_without_type(self: TyperOption, ctx: Any) -> str | None:
    # A flag takes no value, so a type placeholder only misleads.
    if self.is_flag:
        return None
    return _display_type_rich(self, ctx)


def install() -> None:
    """Patch Typer's help rendering once (idempotent)."""
    if getattr(TyperOption.display_type_rich, "__name__", "") != _flag_without_type.__name__:
        TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]
