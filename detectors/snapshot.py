"""Snapshot format of a ``DetectorBank`` (no pickle).

    b"LDSNAP" | u16 format version | zlib( u32 header length | header | array bytes )

The header is JSON (orjson): settings, bank counters, and per channel its reference, warm-up
bookkeeping, never-seen category names and a manifest of its state arrays (name, dtype,
shape); the arrays follow in manifest order as little-endian raw bytes. What goes in comes
from ``DetectorBank.state()`` (each channel's ``state()``) and goes back through
``DetectorBank.from_state()``: this module frames, bounds and type-checks, the channels judge
whether their state fits them.

Snapshots come back from a Kafka topic that anyone with write access can fill, so ``decode``
treats them as hostile input (see its docstring).
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import numpy as np
import orjson

from detectors.bank import BankState, DetectorBank
from detectors.channels import MAX_NEW_NAMES
from detectors.config import DetectorSettings
from detectors.decision import KINDS
from detectors.errors import DetectorConfigError, SnapshotError
from detectors.reference import (
    KNOT_PROBABILITIES,
    MAX_STORED_CATEGORIES,
    SUMMARY_PROBABILITIES,
    Reference,
)
from detectors.state import (
    CODES,
    ArraySpec,
    ChannelState,
    check_array,
    check_complete,
    is_int,
    json_int,
    json_object,
    json_optional_int,
)

MAGIC = b"LDSNAP"
FORMAT_VERSION = 1
MAX_NAME_BYTES = 256  # per category name in the header, JSON escapes included
MAX_KNOTS = len(KNOT_PROBABILITIES)

Manifest = list[tuple[str, str, tuple[int, ...]]]  # (array, dtype code, shape), stored order


def encode(bank: DetectorBank) -> bytes:
    state = bank.state()
    header: dict[str, Any] = {
        "settings": bank.settings.to_dict(),
        "records_seen": state.records_seen,
        "last_position": state.last_position,
        "cooldown_until": state.cooldown_until,
        "absorbed_alarms": state.absorbed_alarms,
        "reference": state.reference.to_dict(),
        "channels": {},
    }
    blobs: list[bytes] = []
    for name, channel in state.channels.items():
        manifest = []
        for key, array in channel.arrays.items():
            dtype = CODES[array.dtype]
            manifest.append([key, dtype, list(array.shape)])
            blobs.append(np.ascontiguousarray(array, dtype=dtype).tobytes())
        header["channels"][name] = {"arrays": manifest, **channel.values}
    header_bytes = orjson.dumps(header)
    body = struct.pack("<I", len(header_bytes)) + header_bytes + b"".join(blobs)
    return MAGIC + struct.pack("<H", FORMAT_VERSION) + zlib.compress(body, 6)


def decode(data: bytes, settings: DetectorSettings) -> DetectorBank:
    """Rebuild a bank from ``encode``'s bytes, trusting nothing in them: every size, type,
    shape and index is checked against what ``settings`` allow before it is used, and the
    decompressed length is bounded, so damaged or hostile bytes raise ``SnapshotError`` and
    nothing else."""
    reader = _Inflater(_compressed_body(data))
    header = _read_header(reader, settings)
    try:
        return _restore(header, reader, settings)
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError,
            DetectorConfigError) as error:  # a check missed below must still be this error
        raise SnapshotError(f"detector snapshot does not fit the detectors: {error}",
                            "header") from None


def _compressed_body(data: bytes) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview) or bytes(data[:6]) != MAGIC:
        raise SnapshotError("not a detector-bank snapshot (bad magic bytes)", "magic")
    if len(data) < len(MAGIC) + 2:
        raise SnapshotError("detector snapshot truncated before its format version")
    (version,) = struct.unpack_from("<H", data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise SnapshotError(f"detector snapshot format {version} is not supported "
                            f"(this build reads {FORMAT_VERSION})", "version")
    return bytes(data[len(MAGIC) + 2:])


class _Inflater:
    """zlib decompression that never produces more than is asked for."""

    def __init__(self, compressed: bytes) -> None:
        self._stream = zlib.decompressobj()
        self._pending = compressed

    def read(self, size: int) -> bytes:
        out = bytearray()
        try:
            while len(out) < size and self._pending:
                chunk = self._stream.decompress(self._pending, size - len(out))
                self._pending = self._stream.unconsumed_tail
                out += chunk
                if not chunk and not self._pending:
                    break
        except zlib.error as error:
            raise SnapshotError(f"corrupt detector snapshot: {error}") from None
        if len(out) < size:
            raise SnapshotError(f"corrupt detector snapshot: truncated ({len(out)} of {size} "
                                "bytes)")
        return bytes(out)

    def expect_end(self) -> None:
        try:
            extra = self._stream.decompress(self._pending, 1)
        except zlib.error as error:
            raise SnapshotError(f"corrupt detector snapshot: {error}") from None
        if extra or not self._stream.eof or self._stream.unused_data:
            raise SnapshotError("corrupt detector snapshot: bytes after the last array")


def max_header_bytes(settings: DetectorSettings) -> int:
    """The largest header a bank with ``settings`` writes: settings, references (category
    shares included), warm-up names, with room to spare."""
    names = MAX_STORED_CATEGORIES + settings.warmup_records + MAX_NEW_NAMES
    return ((1 << 20) + len(settings.all_signals()) * (64 << 10)
            + len(settings.categorical_signals) * names * MAX_NAME_BYTES)


def _read_header(reader: _Inflater, settings: DetectorSettings) -> dict[str, Any]:
    (length,) = struct.unpack("<I", reader.read(4))
    limit = max_header_bytes(settings)
    if length > limit:
        raise SnapshotError(f"detector snapshot header declares {length} bytes, more than the "
                            f"{limit} these settings can produce", "too_large")
    try:
        header = orjson.loads(reader.read(length))
    except orjson.JSONDecodeError as error:
        raise SnapshotError(f"detector snapshot header is not JSON: {error}", "header") from None
    return json_object(header, "header")


def _restore(header: dict[str, Any], reader: _Inflater,
             settings: DetectorSettings) -> DetectorBank:
    reference = _reference(header.get("reference"))
    fresh = DetectorBank(settings, reference)
    if header.get("settings") != settings.to_dict():
        return fresh  # new settings: keep references only
    counters = _counters(header)
    channels = json_object(header.get("channels"), "channels")
    specs = fresh.state_specs()
    if set(channels) != set(specs):
        raise SnapshotError(f"detector snapshot holds signals {sorted(channels)}, the settings "
                            f"{sorted(specs)}", "shape")
    infos = {name: json_object(channels[name], f"channel {name}") for name in specs}
    manifests = {name: _manifest(name, infos[name], specs[name]) for name in specs}
    blob = reader.read(sum(_nbytes(shape) for manifest in manifests.values()
                           for _, _, shape in manifest))
    reader.expect_end()
    offset = 0
    states = {}
    for name, manifest in manifests.items():
        arrays = {}
        for key, dtype, shape in manifest:
            count = _nbytes(shape) // 8
            arrays[key] = np.frombuffer(blob, dtype=dtype, count=count,
                                        offset=offset).reshape(shape).copy()
            offset += count * 8
        values = {key: value for key, value in infos[name].items() if key != "arrays"}
        states[name] = ChannelState(values, arrays)
    return DetectorBank.from_state(settings, BankState(**counters, reference=reference,
                                                       channels=states))


def _counters(header: dict[str, Any]) -> dict[str, Any]:
    """The bank's episode counters, checked."""
    counters: dict[str, Any] = {
        "records_seen": json_int(header.get("records_seen"), "records_seen", low=0),
        "last_position": json_optional_int(header.get("last_position"), "last_position")}
    for field in ("cooldown_until", "absorbed_alarms"):
        values = json_object(header.get(field), field)
        if set(values) != set(KINDS):
            raise SnapshotError(f"detector snapshot {field} names {sorted(values)}, expected "
                                f"{list(KINDS)}", "header")
        counters[field] = {kind: json_int(values[kind], f"{field}.{kind}") for kind in KINDS}
    return counters


def _manifest(channel: str, info: dict[str, Any], specs: dict[str, ArraySpec]) -> Manifest:
    """The channel's array manifest, checked against the arrays the channel accepts (before
    any array is read, so a hostile manifest cannot make the reader inflate much)."""
    entries = info.get("arrays")
    required = sum(spec.required for spec in specs.values())
    if not isinstance(entries, list) or len(entries) > required + 1:
        raise SnapshotError(f"channel {channel}: array manifest is not a short list", "header")
    manifest: Manifest = []
    seen: set[str] = set()
    for entry in entries:
        if (not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str)
                or not isinstance(entry[1], str) or not isinstance(entry[2], list)
                or len(entry[2]) > 2 or not all(is_int(n) and n >= 0 for n in entry[2])):
            raise SnapshotError(f"channel {channel}: malformed manifest entry "
                                f"{str(entry)[:80]}", "header")
        key, dtype, shape = entry[0], entry[1], tuple(entry[2])
        if key in seen:
            raise SnapshotError(f"channel {channel}: array {key} listed twice", "shape")
        seen.add(key)
        check_array(channel, specs, key, dtype, shape)
        manifest.append((key, dtype, shape))
    check_complete(channel, specs, seen)
    return manifest


def _reference(value: Any) -> Reference:
    data = json_object(value, "reference")
    if data.get("version") != 1:
        raise SnapshotError(f"unknown reference version {str(data.get('version'))[:20]}",
                            "header")
    for name, entry in json_object(data.get("numeric"), "reference.numeric").items():
        _check_numeric_reference(name, json_object(entry, f"reference {name}"))
    for name, entry in json_object(data.get("categorical"), "reference.categorical").items():
        _check_categorical_reference(name, json_object(entry, f"reference {name}"))
    return Reference.from_dict(data)


def _check_numeric_reference(name: str, entry: dict[str, Any]) -> None:
    json_int(entry.get("n"), f"reference {name} n", low=1)
    _numbers(entry.get("quantiles"), f"reference {name} quantiles",
             length=len(SUMMARY_PROBABILITIES))
    for field in ("mean", "std"):
        _numbers([entry.get(field)], f"reference {name} {field}")
    knots = _numbers(entry.get("knots"), f"reference {name} knots")
    if not 1 <= len(knots) <= MAX_KNOTS or np.any(np.diff(knots) <= 0):
        raise SnapshotError(f"reference {name}: knots must be 1..{MAX_KNOTS} increasing values",
                            "header")
    for field in ("below", "at_or_below"):
        shares = _numbers(entry.get(field), f"reference {name} {field}", length=len(knots))
        if np.any(shares < 0) or np.any(shares > 1):
            raise SnapshotError(f"reference {name}: {field} outside [0, 1]", "header")
    _positions(name, entry)


def _check_categorical_reference(name: str, entry: dict[str, Any]) -> None:
    json_int(entry.get("n"), f"reference {name} n", low=1)
    shares = entry.get("shares")
    if (not isinstance(shares, list) or not 1 <= len(shares) <= MAX_STORED_CATEGORIES
            or not all(isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                       for item in shares)):
        raise SnapshotError(f"reference {name}: shares must be [name, share] pairs", "header")
    values = _numbers([item[1] for item in shares], f"reference {name} shares")
    unseen = _numbers([entry.get("unseen_rate")], f"reference {name} unseen_rate")
    if np.any(values < 0) or np.any(values > 1) or not 0 <= unseen[0] <= 1:
        raise SnapshotError(f"reference {name}: shares outside [0, 1]", "header")
    _positions(name, entry)


def _positions(name: str, entry: dict[str, Any]) -> None:
    for field in ("first_position", "last_position"):
        json_optional_int(entry.get(field), f"reference {name} {field}")


def _nbytes(shape: tuple[int, ...]) -> int:
    return math.prod(shape) * 8


def _numbers(value: Any, what: str, length: int | None = None) -> np.ndarray:
    if (not isinstance(value, list) or (length is not None and len(value) != length)
            or not all((isinstance(v, int | float) and not isinstance(v, bool)) for v in value)):
        raise SnapshotError(f"detector snapshot {what} must be a list of numbers", "header")
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise SnapshotError(f"detector snapshot {what} must be finite", "header")
    return array
