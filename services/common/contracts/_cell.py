"""The Cell codec: a matrix cell to and from its protobuf message and its database JSON."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from services.common.contracts._enums import engine_name, engine_number
from services.common.types import Cell, Geolocation
from smartfleet.v1 import runs_pb2


def cell_to_pb(cell: Cell) -> runs_pb2.Cell:
    message = runs_pb2.Cell(
        device=cell.device,
        locale=cell.locale,
        timezone=cell.timezone,
        engine=engine_number(cell.engine),
        key=cell.key,
    )
    if cell.labels:  # filling a map field is slow even when empty
        message.labels.update(cell.labels)
    if cell.geolocation is not None:
        message.geolocation.CopyFrom(
            runs_pb2.Geolocation(
                latitude=cell.geolocation.latitude,
                longitude=cell.geolocation.longitude,
                accuracy=cell.geolocation.accuracy,
            )
        )
    return message


def cell_from_pb(message: runs_pb2.Cell) -> Cell:
    geolocation = None
    if message.HasField("geolocation"):
        g = message.geolocation
        geolocation = Geolocation(latitude=g.latitude, longitude=g.longitude, accuracy=g.accuracy)
    return Cell(
        device=message.device,
        locale=message.locale,
        timezone=message.timezone,
        geolocation=geolocation,
        engine=engine_name(message.engine) or "chromium",
        labels=tuple(sorted(message.labels.items())),
    )


@lru_cache(maxsize=4096)
def cell_key(cell: Cell) -> str:
    """`cell.key`, made once per cell (it is written with every result)."""
    return cell.key


@lru_cache(maxsize=4096)
def cell_to_json(cell: Cell) -> dict[str, object]:
    """The cell as the database keeps it (jobs.cell, results.detail.cell); a run has few cells
    and many jobs, so each cell's JSON is made once (treat it as read-only)."""
    geo = cell.geolocation
    return {
        "device": cell.device,
        "locale": cell.locale,
        "timezone": cell.timezone,
        "geolocation": None
        if geo is None
        else {"latitude": geo.latitude, "longitude": geo.longitude, "accuracy": geo.accuracy},
        "engine": cell.engine,
        "labels": [list(pair) for pair in cell.labels],
    }


def cell_from_json(data: dict[str, Any]) -> Cell:
    geo = data.get("geolocation")
    return Cell(
        device=str(data.get("device", "")),
        locale=str(data.get("locale", "")),
        timezone=str(data.get("timezone", "")),
        geolocation=Geolocation(**geo) if isinstance(geo, dict) else None,
        engine=str(data.get("engine", "chromium")),
        labels=tuple((str(k), str(v)) for k, v in data.get("labels") or []),
    )
