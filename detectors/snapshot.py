"""Snapshot format of a ``DetectorBank`` (no pickle).

    b"LDSNAP" | u16 format version | zlib( u32 header length | header | array bytes )

The header is JSON (orjson): settings, bank counters, and per channel its reference, warm-up
bookkeeping, never-seen category names and a manifest of its state arrays (name, dtype,
shape); the arrays follow in manifest order as little-endian raw bytes. Restoring rebuilds the
channels from the settings, then overwrites their state from the arrays.

Snapshots come back from a Kafka topic that anyone with write access can fill, so ``decode``
treats them as hostile input (see its docstring).
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from detectors import kernels as k
from detectors.channels import (
    ADWIN_MAX_BUCKETS,
    MAX_NEW_NAMES,
    CategoricalChannel,
    NumericChannel,
)
from detectors.config import DetectorSettings
from detectors.decision import KINDS
from detectors.errors import DetectorConfigError, SnapshotError
from detectors.reference import (
    KNOT_PROBABILITIES,
    MAX_STORED_CATEGORIES,
    SUMMARY_PROBABILITIES,
    Reference,
)

if TYPE_CHECKING:
    from detectors.bank import DetectorBank

MAGIC = b"LDSNAP"
FORMAT_VERSION = 1
DTYPES = {"float64": "<f8", "int64": "<i8"}
MAX_NAME_BYTES = 256  # per category name in the header, JSON escapes included
MAX_KNOTS = len(KNOT_PROBABILITIES)
# State arrays that only ever hold finite numbers (Page-Hinkley's minimum starts at infinity).
FINITE_ARRAYS = frozenset({"aw_s", "aw_totals", "aw_variances", "state", "counts", "llr",
                           "cusum"})


def encode(bank: DetectorBank) -> bytes:
    header: dict[str, Any] = {
        "settings": bank.settings.to_dict(),
        "records_seen": bank.records_seen,
        "last_position": bank.last_position,
        "cooldown_until": bank.cooldown_until,
        "absorbed_alarms": bank.absorbed_alarms,
        "reference": bank.reference().to_dict(),
        "channels": {},
    }
    blobs: list[bytes] = []
    for name, channel in bank.channels.items():
        manifest = []
        for key, array in channel.state_arrays().items():
            dtype = DTYPES[array.dtype.name]
            manifest.append([key, dtype, list(array.shape)])
            blobs.append(np.ascontiguousarray(array, dtype=dtype).tobytes())
        header["channels"][name] = {"arrays": manifest, **_channel_extras(channel)}
    header_bytes = orjson.dumps(header)
    body = struct.pack("<I", len(header_bytes)) + header_bytes + b"".join(blobs)
    return MAGIC + struct.pack("<H", FORMAT_VERSION) + zlib.compress(body, 6)


def _channel_extras(channel: NumericChannel | CategoricalChannel) -> dict[str, Any]:
    extras: dict[str, Any] = {"warmup_first": channel.warmup_first,
                              "warmup_last": channel.warmup_last}
    if isinstance(channel, CategoricalChannel):
        extras["warmup_names"] = channel.warmup_names
        extras["new_names"] = [list(item) for item in channel.new_names]
    else:
        extras["warmup_target"] = channel.warmup_target
    return extras


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
    return _object(header, "header")


def _restore(header: dict[str, Any], reader: _Inflater,
             settings: DetectorSettings) -> DetectorBank:
    from detectors.bank import DetectorBank

    reference = _reference(header.get("reference"))
    if header.get("settings") != settings.to_dict():
        return DetectorBank(settings, reference)  # new settings: keep references only
    bank = DetectorBank(settings, reference)
    _load_counters(bank, header)
    channels = _object(header.get("channels"), "channels")
    if set(channels) != set(bank.channels):
        raise SnapshotError(f"detector snapshot holds signals {sorted(channels)}, the settings "
                            f"{sorted(bank.channels)}", "shape")
    manifests = {name: _manifest(channel, _object(channels[name], f"channel {name}"))
                 for name, channel in bank.channels.items()}
    blob = reader.read(sum(_nbytes(shape) for manifest in manifests.values()
                           for _, _, shape in manifest))
    reader.expect_end()
    offset = 0
    for name, channel in bank.channels.items():
        arrays = {}
        for key, dtype, shape in manifests[name]:
            count = _nbytes(shape) // 8
            arrays[key] = np.frombuffer(blob, dtype=dtype, count=count,
                                        offset=offset).reshape(shape).copy()
            offset += count * 8
        _load_channel(channel, _object(channels[name], f"channel {name}"), arrays)
    return bank


def _load_counters(bank: DetectorBank, header: dict[str, Any]) -> None:
    bank.records_seen = _int(header.get("records_seen"), "records_seen", low=0)
    bank.last_position = _optional_int(header.get("last_position"), "last_position")
    for field in ("cooldown_until", "absorbed_alarms"):
        values = _object(header.get(field), field)
        if set(values) != set(KINDS):
            raise SnapshotError(f"detector snapshot {field} names {sorted(values)}, expected "
                                f"{list(KINDS)}", "header")
        setattr(bank, field, {kind: _int(values[kind], f"{field}.{kind}") for kind in KINDS})


def _manifest(channel: NumericChannel | CategoricalChannel,
              info: dict[str, Any]) -> list[tuple[str, str, tuple[int, ...]]]:
    """The channel's array manifest, checked against the arrays the channel has."""
    expected = {key: (DTYPES[array.dtype.name], array.shape)
                for key, array in channel.state_arrays().items()}
    entries = info.get("arrays")
    if not isinstance(entries, list) or len(entries) > len(expected) + 1:
        raise SnapshotError(f"channel {channel.name}: array manifest is not a short list",
                            "header")
    manifest, seen = [], set()
    for entry in entries:
        if (not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str)
                or not isinstance(entry[1], str) or not isinstance(entry[2], list)
                or len(entry[2]) > 2 or not all(_is_int(n) and n >= 0 for n in entry[2])):
            raise SnapshotError(f"channel {channel.name}: malformed manifest entry "
                                f"{str(entry)[:80]}", "header")
        key, dtype, shape = entry[0], entry[1], tuple(entry[2])
        if key in seen:
            raise SnapshotError(f"channel {channel.name}: array {key} listed twice", "shape")
        seen.add(key)
        _check_shape(channel, key, dtype, shape, expected)
        manifest.append((key, dtype, shape))
    missing = set(expected) - seen
    if missing:
        raise SnapshotError(f"channel {channel.name}: arrays {sorted(missing)} missing",
                            "shape")
    return manifest


def _check_shape(channel: NumericChannel | CategoricalChannel, key: str, dtype: str,
                 shape: tuple[int, ...], expected: dict[str, tuple[str, tuple]]) -> None:
    if key == "warmup" and isinstance(channel, NumericChannel) and channel.reference is None:
        want_dtype = DTYPES["float64"]
        fits = len(shape) == 1 and shape[0] <= _max_warmup(channel.settings)
    elif key in ("aw_totals", "aw_variances") and key in expected:
        want_dtype, want = expected[key]
        fits = len(shape) == 2 and 1 <= shape[0] <= k.AW_MAX_LEVELS and shape[1] == want[1]
    elif key in expected:
        want_dtype, want = expected[key]
        fits = shape == want
    else:
        raise SnapshotError(f"channel {channel.name}: unexpected array {key}", "shape")
    if dtype != want_dtype or not fits:
        raise SnapshotError(f"channel {channel.name}: array {key} is {dtype}{list(shape)}, "
                            "which does not fit the detectors", "shape")


def _load_channel(channel: NumericChannel | CategoricalChannel, info: dict[str, Any],
                  arrays: dict[str, np.ndarray]) -> None:
    _check_ring(channel, arrays)
    _check_numbers(channel.name, arrays)
    channel.warmup_first = _optional_int(info.get("warmup_first"), "warmup_first")
    channel.warmup_last = _optional_int(info.get("warmup_last"), "warmup_last")
    if isinstance(channel, CategoricalChannel):
        names = info.get("warmup_names")
        if (not isinstance(names, list) or len(names) > channel.settings.warmup_records
                or not all(isinstance(name, str) for name in names)):
            raise SnapshotError(f"channel {channel.name}: bad warmup_names", "header")
        channel.warmup_names = names
        channel.new_names = _new_names(channel.name, info.get("new_names"))
    else:
        _check_adwin(channel.name, arrays)
        channel.warmup_target = _int(info.get("warmup_target"), "warmup_target", low=1,
                                     high=_max_warmup(channel.settings))
        if "warmup" in arrays and arrays["warmup"].shape[0] > channel.warmup_target:
            raise SnapshotError(f"channel {channel.name}: warm-up longer than its target",
                                "shape")
    channel.load_arrays(arrays)


def _check_ring(channel: NumericChannel | CategoricalChannel,
                arrays: dict[str, np.ndarray]) -> None:
    """The compiled loops write at the ring head without bounds checks."""
    counters = arrays["counters"]
    size = arrays["ring_positions"].shape[0]
    if not 0 <= counters[k.C_RING_HEAD] < size or counters[k.C_COUNT] < 0:
        raise SnapshotError(f"channel {channel.name}: ring position out of range", "shape")


def _check_numbers(name: str, arrays: dict[str, np.ndarray]) -> None:
    """No NaN anywhere (a NaN CUSUM sends the categorical crossing search into an endless
    loop), and no infinity where the detectors never put one."""
    for key, array in arrays.items():
        if array.dtype.kind != "f":
            continue
        if np.isnan(array).any() or (key in FINITE_ARRAYS and not np.isfinite(array).all()):
            raise SnapshotError(f"channel {name}: array {key} holds NaN or infinite values",
                                "shape")


def _check_adwin(name: str, arrays: dict[str, np.ndarray]) -> None:
    """ADWIN's level count and bucket counts index its histogram in compiled code."""
    scalars, counts = arrays["aw_s"], arrays["aw_counts"]
    levels = arrays["aw_totals"].shape[0]
    if (not np.all(np.isfinite(scalars)) or scalars[k.AW_LEVELS] != levels
            or arrays["aw_variances"].shape[0] != levels or scalars[k.AW_WIDTH] < 0
            or np.any(counts < 0) or np.any(counts > ADWIN_MAX_BUCKETS)
            or np.any(counts[levels:] != 0)):
        raise SnapshotError(f"channel {name}: ADWIN state out of range", "shape")


def _new_names(channel: str, value: Any) -> list[tuple[str, int]]:
    if not isinstance(value, list) or len(value) > MAX_NEW_NAMES:
        raise SnapshotError(f"channel {channel}: bad new_names", "header")
    names = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and _is_int(item[1])):
            raise SnapshotError(f"channel {channel}: bad new_names entry", "header")
        names.append((item[0], item[1]))
    return names


def _reference(value: Any) -> Reference:
    data = _object(value, "reference")
    if data.get("version") != 1:
        raise SnapshotError(f"unknown reference version {str(data.get('version'))[:20]}",
                            "header")
    for name, entry in _object(data.get("numeric"), "reference.numeric").items():
        _check_numeric_reference(name, _object(entry, f"reference {name}"))
    for name, entry in _object(data.get("categorical"), "reference.categorical").items():
        _check_categorical_reference(name, _object(entry, f"reference {name}"))
    return Reference.from_dict(data)


def _check_numeric_reference(name: str, entry: dict[str, Any]) -> None:
    _int(entry.get("n"), f"reference {name} n", low=1)
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
    _int(entry.get("n"), f"reference {name} n", low=1)
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
        _optional_int(entry.get(field), f"reference {name} {field}")


def _max_warmup(settings: DetectorSettings) -> int:
    return max(settings.warmup_records, settings.relearn_records)


def _nbytes(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * 8


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SnapshotError(f"detector snapshot {what} is not an object", "header")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any, what: str, low: int = -(2 ** 63), high: int = 2 ** 63 - 1) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise SnapshotError(f"detector snapshot {what} must be an integer in [{low}, {high}]",
                            "header")
    return value


def _optional_int(value: Any, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _numbers(value: Any, what: str, length: int | None = None) -> np.ndarray:
    if (not isinstance(value, list) or (length is not None and len(value) != length)
            or not all((isinstance(v, int | float) and not isinstance(v, bool)) for v in value)):
        raise SnapshotError(f"detector snapshot {what} must be a list of numbers", "header")
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise SnapshotError(f"detector snapshot {what} must be finite", "header")
    return array
