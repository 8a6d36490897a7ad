"""Bytes for a run's sketches (the run's sketch column): versioned, compact, checked on read.

    version u8 (1) | flags u8 (bit 0: the rest is zlib-compressed) | body
    body   = relative_accuracy f64 | metric names: u8 n, n * str | cells: u32 n, n * cell
    cell   = device, locale, timezone, engine: str | labels: u8 n, n * (str, str)
             | geolocation: u8 0, or u8 1 and latitude, longitude, accuracy f64
             | outcomes: u8 n, n * (str, u64) | a sketch per metric
    sketch = count u64; when count > 0: zeros u64, total, lo, hi f64, bins u32 n;
             when n > 0: min_key i32, width u8 (1, 2, 4 or 8), n * unsigned counts that wide
    str    = u16 length, UTF-8

Little-endian throughout. Metric names are written so that a reader can refuse bytes with a
metric list it does not know instead of misreading them.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Mapping

from services.common.thresholds import METRIC_NAMES
from services.common.types import Cell, Geolocation
from services.scheduler._metric_sketch import RELATIVE_ACCURACY, CellSketches, MetricSketch

VERSION = 1
_ZLIB = 0x01
# Below this the zlib header costs more than it saves.
_COMPRESS_ABOVE = 128
# A decoded body may not exceed this (a corrupt or hostile length cannot exhaust memory).
_MAX_BODY = 64 * 1024 * 1024
_MAX_BINS = 100_000
_WIDTHS = (("B", 2**8), ("H", 2**16), ("I", 2**32), ("Q", 2**64))
_CODES = {array(code).itemsize: code for code, _ in _WIDTHS}


class SketchFormatError(ValueError):
    """Bytes that are not a run's sketches of a known version."""


class _Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def pack(self, fmt: str, *values: object) -> None:
        self.parts.append(struct.pack("<" + fmt, *values))

    def text(self, value: str) -> None:
        data = value.encode()
        self.pack("H", len(data))
        self.parts.append(data)

    def sketch(self, sketch: MetricSketch) -> None:
        self.pack("Q", sketch.count)
        if not sketch.count:
            return
        self.pack("Qddd", sketch.zeros, sketch.total, sketch.lo, sketch.hi)
        store = sketch.store
        if sketch.count == sketch.zeros:
            self.pack("I", 0)
            return
        first = store.min_key - store.offset
        # Bins hold whole counts (as floats); the narrowest width that holds the largest wins.
        counts = list(map(int, store.bins[first : store.max_key - store.offset + 1]))
        largest = max(counts)
        width = next(code for code, limit in _WIDTHS if largest < limit)
        packed = array(width, counts)
        if sys.byteorder != "little":
            packed.byteswap()
        self.pack("IiB", len(counts), store.min_key, packed.itemsize)
        self.parts.append(packed.tobytes())


def encode(cells: Mapping[Cell, CellSketches]) -> bytes:
    out = _Writer()
    out.pack("dB", RELATIVE_ACCURACY, len(METRIC_NAMES))
    for name in METRIC_NAMES:
        out.text(name)
    out.pack("I", len(cells))
    for cell, sketches in cells.items():
        for value in (cell.device, cell.locale, cell.timezone, cell.engine):
            out.text(value)
        out.pack("B", len(cell.labels))
        for key, value in cell.labels:
            out.text(key)
            out.text(value)
        geo = cell.geolocation
        if geo is None:
            out.pack("B", 0)
        else:
            out.pack("Bddd", 1, geo.latitude, geo.longitude, geo.accuracy)
        out.pack("B", len(sketches.outcomes))
        for outcome, count in sketches.outcomes.items():
            out.text(str(outcome))
            out.pack("Q", count)
        for sketch in sketches.metrics:
            out.sketch(sketch)
    body = b"".join(out.parts)
    if len(body) > _COMPRESS_ABOVE:
        packed = zlib.compress(body, 6)
        if len(packed) < len(body):
            return bytes((VERSION, _ZLIB)) + packed
    return bytes((VERSION, 0)) + body


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.at = 0

    def take(self, size: int) -> memoryview:
        end = self.at + size
        if end > len(self.data):
            raise SketchFormatError("sketch bytes end early")
        chunk, self.at = self.data[self.at : end], end
        return chunk

    def unpack(self, fmt: str) -> tuple[object, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def int(self, fmt: str) -> int:
        (value,) = self.unpack(fmt)
        assert isinstance(value, int)
        return value

    def float(self) -> float:
        (value,) = self.unpack("d")
        assert isinstance(value, float)
        return value

    def text(self) -> str:
        try:
            return str(self.take(self.int("H")), "utf-8")
        except UnicodeDecodeError:
            raise SketchFormatError("a name in the sketch bytes is not UTF-8") from None

    def sketch(self) -> MetricSketch:
        sketch = MetricSketch()
        sketch.count = self.int("Q")
        if not sketch.count:
            return sketch
        sketch.zeros = self.int("Q")
        sketch.total, sketch.lo, sketch.hi = self.float(), self.float(), self.float()
        size = self.int("I")
        if size:
            if size > _MAX_BINS:
                raise SketchFormatError(f"a sketch claims {size} bins")
            min_key, width = self.int("i"), self.int("B")
            if width not in _CODES:
                raise SketchFormatError(f"bin width {width} is not 1, 2, 4 or 8")
            counts = array(_CODES[width])
            counts.frombytes(self.take(size * width))
            if sys.byteorder != "little":
                counts.byteswap()
            if not counts[0] or not counts[-1]:
                raise SketchFormatError("a sketch's bins do not start and end with a value")
            # DenseStore's documented attributes: its bins from min_key, nothing allocated around.
            store = sketch.store
            store.bins = list(map(float, counts))
            store.offset = store.min_key = min_key
            store.max_key = min_key + size - 1
            store.count = float(sum(counts))
        if sketch.store.count + sketch.zeros != sketch.count or sketch.lo > sketch.hi:
            raise SketchFormatError("a sketch's counts do not add up")
        return sketch


def _body(data: bytes) -> bytes:
    if len(data) < 2:
        raise SketchFormatError("sketch bytes are too short")
    if data[0] != VERSION:
        raise SketchFormatError(
            f"sketch format version {data[0]} is unknown (this reads {VERSION})"
        )
    if data[1] & ~_ZLIB:
        raise SketchFormatError(f"unknown sketch flags {data[1]:#x}")
    if not data[1] & _ZLIB:
        return data[2:]
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(data[2:], _MAX_BODY)
    except zlib.error as error:
        raise SketchFormatError(f"sketch bytes do not inflate: {error}") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise SketchFormatError("sketch bytes are truncated or too large")
    return body


def decode(data: bytes) -> dict[Cell, CellSketches]:
    reader = _Reader(_body(bytes(data)))
    accuracy, metric_count = reader.float(), reader.int("B")
    if accuracy != RELATIVE_ACCURACY:
        raise SketchFormatError(
            f"sketches of relative accuracy {accuracy} cannot join these ({RELATIVE_ACCURACY})"
        )
    names = tuple(reader.text() for _ in range(metric_count))
    if names != METRIC_NAMES:
        raise SketchFormatError(f"sketch metrics {names} differ from {METRIC_NAMES}")
    cells: dict[Cell, CellSketches] = {}
    for _ in range(reader.int("I")):
        device, locale, timezone, engine = (reader.text() for _ in range(4))
        labels = tuple((reader.text(), reader.text()) for _ in range(reader.int("B")))
        geolocation = None
        if reader.int("B"):
            latitude, longitude, accuracy = reader.float(), reader.float(), reader.float()
            geolocation = Geolocation(latitude=latitude, longitude=longitude, accuracy=accuracy)
        cell = Cell(
            device=device,
            locale=locale,
            timezone=timezone,
            engine=engine,
            labels=labels,
            geolocation=geolocation,
        )
        sketches = CellSketches()
        for _ in range(reader.int("B")):
            outcome = reader.text()
            sketches.outcomes[outcome] = reader.int("Q")
        sketches.metrics = tuple(reader.sketch() for _ in METRIC_NAMES)
        if cell in cells:
            raise SketchFormatError(f"cell {cell.key!r} appears twice")
        cells[cell] = sketches
    if reader.at != len(reader.data):
        raise SketchFormatError("unexpected bytes after the last cell")
    return cells
