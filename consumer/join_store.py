"""One records partition's pending predictions, for the late-label join (#15): a RocksDB
directory that may be far larger than memory, restored from a compacted changelog topic.

**Entries.** ``record_id -> PendingPrediction``, encoded by ``encode_entry``: version byte 1,
then ``<BqqqqdB`` (flags: bit 0 joined, bit 1 model version present; record offset; event
time in ms; the records watermark before the record, in ms; model version or 0; prediction, NaN
without a champion; number of segment values), then each segment value as ``<H`` length +
UTF-8. 43 bytes plus the segment. ``decode_entry`` checks
every byte and raises ``EntryRefused`` with a stable ``reason``.

**Changelog.** One message per changed entry, key = record_id in UTF-8, value = the encoded
entry, or a tombstone when the entry expired. It is the source of truth: the local DB is a cache
of it, and records the changelog offset it reflects.

**On disk.** The default column family holds ``e<record_id>`` -> entry and ``m:*`` ->
metadata (layout version, changelog position, pending count, each ``<q``); the column family
``time_index`` holds ``<u64 big-endian event_time_ms + 2**63><record_id>`` -> empty, so that
expiry is a range scan from the oldest time. A WriteBatch spans both families atomically.

**Transactions.** Writes go to an in-memory buffer that reads see first; ``changes()`` gives the
buffer as changelog messages for the checkpoint's Kafka transaction; ``commit`` writes it,
the index changes and the metadata as one RocksDB WriteBatch (atomic, in the WAL), so a
``kill -9`` at any moment leaves the DB at some committed state; ``discard`` drops it. Replaying
the changelog from an older recorded position is always safe: a message sets its key to its
value, so re-applying messages converges to the same state.

Single-threaded: one partition, one owner.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import msgspec
import numpy as np
from confluent_kafka import Consumer, Message
from rocksdict import (
    BlockBasedIndexType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from levydrift.errors import BrokerUnavailableError, LevyDriftError, MissingTopicError
from levydrift.kafka import read_ranges, topic_partitions, watermarks
from levydrift.kafka.messages import offset_of
from schemas.levy_record import TEXT_MAX_CHARS

ENTRY_VERSION = 1
LAYOUT_VERSION = b"1"  # the key spaces above; another value on open means wipe and replay
MAX_SEGMENT_VALUES = 8
MAX_SEGMENT_VALUE_BYTES = 1024
MAX_KEY_BYTES = 4 * TEXT_MAX_CHARS  # a record_id is at most 64 characters of UTF-8
MIN_EVENT_TIME_MS = -(2**63)
MAX_EVENT_TIME_MS = 2**63 - 1

# Stable reasons for refused changelog messages (metric labels).
REASONS = ("truncated", "version", "flags", "range", "too_many_values", "too_large", "utf8",
           "trailing", "key")

_FIXED = struct.Struct("<BBqqqqdB")
_LENGTH = struct.Struct("<H")
_TIME = struct.Struct(">Q")
_INT = struct.Struct("<q")
_JOINED, _HAS_VERSION = 1, 2
_FLAG_BYTE, _TIME_AT = 1, 10  # where the flags and the event time sit in an encoded entry

_ENTRY, _ENTRY_END = b"e", b"f"
_INDEX_FAMILY = "time_index"
_INDEX_START, _INDEX_END = b"", b"\xff" * 9
_META_LAYOUT, _META_POSITION, _META_PENDING = b"m:layout", b"m:position", b"m:pending"
_BEYOND_EVERY_KEY = b"\xff" * (9 + MAX_KEY_BYTES)
_TIME_SHIFT = 2**63  # event times are stored unsigned, so that byte order is time order
_NO_TIME = 2**63  # above every event time: "no entry"
_MISSING: Any = object()
JoinOutcome = Literal["joined", "duplicate", "unmatched", "expired"]
_REPLAY_CHUNK = 10_000
# ``_FIXED`` as a numpy record (packed, 43 bytes), to decode a turn's entries in one call.
_FIXED_DTYPE = np.dtype([("version", "u1"), ("flags", "u1"), ("offset", "<i8"), ("time", "<i8"),
                         ("watermark", "<i8"), ("model", "<i8"), ("prediction", "<f8"),
                         ("count", "u1")])
assert _FIXED_DTYPE.itemsize == _FIXED.size
# The same without the segment's count byte: what ``put_batch`` packs for many rows at once.
_HEAD_DTYPE = np.dtype(_FIXED_DTYPE.descr[:-1])
_SEGMENT_CACHE_SIZE = 4096
# ``JoinedBatch.outcomes`` codes, in ``OUTCOMES`` order.
JOINED, DUPLICATE, UNMATCHED, EXPIRED = 0, 1, 2, 3
OUTCOMES: tuple[JoinOutcome, ...] = ("joined", "duplicate", "unmatched", "expired")
NO_VERSION = -1  # ``JoinedBatch.model_version`` of an entry without one (versions are >= 0)


class JoinStoreError(LevyDriftError):
    """The join store cannot be used: its changelog cannot be read, or its DB not opened."""


class EntryRefused(JoinStoreError):
    """A join-store entry or changelog key that must not be used; ``reason`` is one of
    ``REASONS`` (a stable metric label)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PendingPrediction(msgspec.Struct, frozen=True):
    """What the error needs when the record's label arrives. NaN predictions compare unequal
    (as floats do): compare entries by ``encode_entry`` where that matters."""

    record_offset: int
    event_time_ms: int
    model_version: int | None
    prediction: float  # NaN when no champion scored the record
    segment: tuple[str, ...]
    joined: bool = False
    # The partition's records watermark (latest event time seen) *before* this record: a
    # label whose time that watermark had reached came before this record (consumer/labels.py).
    watermark_ms: int = -1


# --- the entry codec -----------------------------------------------------------------------


def encode_entry(entry: PendingPrediction) -> bytes:
    """The versioned binary form; raises ``EntryRefused`` for what ``decode_entry`` would
    refuse, so nothing is written that cannot be read back."""
    return _encode(entry.record_offset, entry.event_time_ms, entry.model_version,
                   entry.prediction, _encode_segment(entry.segment), entry.joined,
                   entry.watermark_ms)


def _encode(record_offset: int, event_time_ms: int, model_version: int | None,
            prediction: float, segment: bytes, joined: bool = False,
            watermark_ms: int = -1) -> bytes:
    if record_offset < 0 or (model_version is not None and model_version < 0) \
            or math.isinf(prediction):
        raise EntryRefused(f"entry out of range: offset {record_offset}, model version "
                           f"{model_version}, prediction {prediction}", "range")
    flags = (_JOINED if joined else 0) | (0 if model_version is None else _HAS_VERSION)
    try:
        return _FIXED.pack(ENTRY_VERSION, flags, record_offset, event_time_ms, watermark_ms,
                           model_version or 0, prediction, segment[0]) + segment[1:]
    except struct.error as error:
        raise EntryRefused(f"entry out of range: {error}", "range") from None


def _encode_rows(record_offsets: Collection[int], event_times_ms: Collection[int],
                 predictions: Collection[float], segments: Collection[tuple[str, ...]],
                 model_version: int | None, watermarks_ms: Collection[int] | None
                 ) -> tuple[list[bytes], int]:
    """``_encode`` for many new (not joined) entries scored by one model version, and the
    oldest event time: the fixed parts packed by numpy in one go, each row's segment bytes
    (encoded once per distinct segment) appended; the same bytes and the same refusals as
    ``_encode`` row by row (but a prediction of None reads as NaN: no prediction)."""
    count = len(event_times_ms)
    try:
        times = np.asarray(event_times_ms, dtype=np.int64)
        offsets = np.asarray(record_offsets, dtype=np.int64)
        marks = np.full(count, -1, dtype=np.int64) if watermarks_ms is None \
            else np.asarray(watermarks_ms, dtype=np.int64)
        scores = np.asarray(predictions, dtype=np.float64)
    except (OverflowError, TypeError, ValueError) as error:  # as struct.pack refuses them
        raise EntryRefused(f"entry out of range: {error}", "range") from None
    if (model_version is not None and not 0 <= model_version < 2**63) \
            or bool((offsets < 0).any()) or bool(np.isinf(scores).any()):
        raise EntryRefused(f"entry out of range: an offset below 0, model version "
                           f"{model_version} or an infinite prediction", "range")
    head = np.empty(count, dtype=_HEAD_DTYPE)
    head["version"] = ENTRY_VERSION
    head["flags"] = 0 if model_version is None else _HAS_VERSION
    head["offset"], head["time"], head["watermark"] = offsets, times, marks
    head["model"] = model_version or 0
    head["prediction"] = scores
    packed, size = head.tobytes(), _HEAD_DTYPE.itemsize
    encoded: dict[tuple[str, ...], bytes] = {}
    tails = []
    for segment in segments:
        tail = encoded.get(segment)
        if tail is None:
            tail = encoded[segment] = _encode_segment(tuple(segment))
        tails.append(tail)
    return [packed[at:at + size] + tail
            for at, tail in zip(range(0, count * size, size), tails, strict=True)], \
        int(times.min())


def _encode_segment(values: tuple[str, ...]) -> bytes:
    """The segment values with their count first (a byte) and each length (``<H``)."""
    if len(values) > MAX_SEGMENT_VALUES:
        raise EntryRefused(f"{len(values)} segment values, at most {MAX_SEGMENT_VALUES}",
                           "too_many_values")
    parts = [bytes((len(values),))]
    for value in values:
        try:
            data = value.encode()
        except UnicodeEncodeError:
            raise EntryRefused("a segment value is not valid Unicode", "utf8") from None
        if len(data) > MAX_SEGMENT_VALUE_BYTES:
            raise EntryRefused(f"a segment value of {len(data)} bytes, at most "
                               f"{MAX_SEGMENT_VALUE_BYTES}", "too_large")
        parts += (_LENGTH.pack(len(data)), data)
    return b"".join(parts)


def decode_entry(data: bytes) -> PendingPrediction:
    """An encoded entry, every byte checked; raises ``EntryRefused``."""
    if len(data) < _FIXED.size:
        raise EntryRefused(f"entry of {len(data)} bytes, shorter than its fixed part",
                           "truncated")
    version, flags, offset, event_time, watermark, model_version, prediction, count = \
        _FIXED.unpack_from(data)
    if version != ENTRY_VERSION:
        raise EntryRefused(f"entry version {version} is not supported (expected "
                           f"{ENTRY_VERSION})", "version")
    if flags & ~(_JOINED | _HAS_VERSION) or (not flags & _HAS_VERSION and model_version):
        raise EntryRefused(f"entry flags {flags:#04x} with model version {model_version}",
                           "flags")
    if offset < 0 or model_version < 0 or math.isinf(prediction):
        raise EntryRefused(f"entry out of range: offset {offset}, model version "
                           f"{model_version}, prediction {prediction}", "range")
    if count > MAX_SEGMENT_VALUES:
        raise EntryRefused(f"{count} segment values, at most {MAX_SEGMENT_VALUES}",
                           "too_many_values")
    segment, end = _decode_segment(data, _FIXED.size, count)
    if end != len(data):
        raise EntryRefused(f"{len(data) - end} bytes after the entry", "trailing")
    return PendingPrediction(offset, event_time, model_version if flags & _HAS_VERSION else None,
                             prediction, segment, bool(flags & _JOINED), watermark)


def _decode_segment(data: bytes, at: int, count: int) -> tuple[tuple[str, ...], int]:
    values = []
    for _ in range(count):
        if at + _LENGTH.size > len(data):
            raise EntryRefused("entry ends inside a segment value's length", "truncated")
        (length,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if length > MAX_SEGMENT_VALUE_BYTES:
            raise EntryRefused(f"a segment value of {length} bytes, at most "
                               f"{MAX_SEGMENT_VALUE_BYTES}", "too_large")
        if at + length > len(data):
            raise EntryRefused(f"a segment value of {length} bytes past the entry's end",
                               "truncated")
        try:
            values.append(data[at:at + length].decode())
        except UnicodeDecodeError:
            raise EntryRefused("a segment value is not valid UTF-8", "utf8") from None
        at += length
    return tuple(values), at


def decode_key(key: bytes | None) -> str:
    """A changelog key as a record_id; raises ``EntryRefused`` (reason ``key``)."""
    if not key or len(key) > MAX_KEY_BYTES:
        raise EntryRefused(f"changelog key of {len(key or b'')} bytes (1..{MAX_KEY_BYTES})",
                           "key")
    try:
        return key.decode()
    except UnicodeDecodeError:
        raise EntryRefused("changelog key is not valid UTF-8", "key") from None


def _time_of(value: bytes) -> int:
    """The event time of an entry this store encoded (or decoded successfully)."""
    return int(_INT.unpack_from(value, _TIME_AT)[0])


def _is_pending(value: bytes | None) -> bool:
    return value is not None and not value[_FLAG_BYTE] & _JOINED


def _index_key(event_time_ms: int, key: bytes) -> bytes:
    return _TIME.pack(event_time_ms + _TIME_SHIFT) + key


def _index_bound(event_time_ms: int) -> bytes:
    return _TIME.pack(min(max(event_time_ms, MIN_EVENT_TIME_MS), MAX_EVENT_TIME_MS)
                      + _TIME_SHIFT)


def _index_time(index_key: bytes) -> int:
    return int(_TIME.unpack_from(index_key)[0]) - _TIME_SHIFT


@dataclass
class JoinedBatch:
    """What ``JoinStore.join_batch`` found for each label, as columns: ``outcomes`` (codes
    ``JOINED`` .. ``EXPIRED``, see ``OUTCOMES``) and, where an entry was found, its event
    time, model version (``NO_VERSION`` for none), prediction and segment, as it was before
    the join (elsewhere -1, ``NO_VERSION``, NaN and None)."""

    outcomes: np.ndarray
    event_time_ms: np.ndarray
    model_version: np.ndarray
    prediction: np.ndarray
    segments: list[tuple[str, ...] | None]

    def __init__(self, count: int) -> None:
        self.outcomes = np.full(count, UNMATCHED, dtype=np.int8)
        self.event_time_ms = np.full(count, -1, dtype=np.int64)
        self.model_version = np.full(count, NO_VERSION, dtype=np.int64)
        self.prediction = np.full(count, np.nan)
        self.segments = [None] * count


def _exceeds(label_times: np.ndarray, event_times: np.ndarray, horizon_ms: int | None
             ) -> np.ndarray:
    """``label_time - event_time > horizon_ms`` for each pair, exactly (as Python integers)
    even where int64 arithmetic would overflow; all False without a horizon."""
    if horizon_ms is None:
        return np.zeros(len(label_times), dtype=bool)
    limit = 2**61  # (np.abs of the least int64 is negative: compare both ends)
    if -limit < horizon_ms < limit and bool(np.all((label_times > -limit) & (label_times < limit)
                                                & (event_times > -limit) & (event_times < limit))):
        return (label_times - event_times) > horizon_ms
    return np.array([label - event > horizon_ms for label, event
                     in zip(label_times.tolist(), event_times.tolist(), strict=True)], dtype=bool)


# --- the store ------------------------------------------------------------------------------


@dataclass
class ReplayCounts:
    """What ``apply_changelog`` did: messages applied, and refused ones by reason (a refused
    value drops its key: the latest value of the key is unusable, and an older one must not come
    back, or a label could be joined twice)."""

    replayed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


class JoinStore:
    """Pending predictions of one records partition (see the module docstring)."""

    def __init__(self, path: Path, *, sync: bool = False, cache_mib: int = 0) -> None:
        """``sync`` fsyncs the WAL on every commit (survives power loss, not only a crashed
        process); the changelog restores what an unsynced commit lost, so it is off by default.
        ``cache_mib`` > 0 bounds the memory of the filter and index blocks (see ``_options``)."""
        path.mkdir(parents=True, exist_ok=True)
        cache = Cache(cache_mib << 20) if cache_mib > 0 else None
        try:
            self._db = Rdict(str(path), _options(bloom=True, cache=cache),
                             column_families={_INDEX_FAMILY: _options(bloom=False, cache=cache)})
        except Exception as error:  # rocksdict raises a plain Exception
            raise JoinStoreError(f"join store {path}: {error}") from None
        self._index = self._db.get_column_family(_INDEX_FAMILY)
        self._index_handle = self._db.get_column_family_handle(_INDEX_FAMILY)
        self._write = WriteOptions()
        self._write.sync = sync
        self._buffer: dict[str, bytes | None] = {}  # uncommitted: encoded entry, None = deleted
        self._base: dict[str, int | None] = {}      # the committed event time of a buffered key
        self._pending_delta = 0
        self._stale_index: list[bytes] = []  # index keys without their entry, to delete
        self._buffer_floor = _NO_TIME  # no buffered entry is older
        self._segment_cache: dict[bytes, tuple[str, ...]] = {}  # see ``_segments``
        # Committed values ``has`` read, for the join of the same labels right after: a
        # read-through cache of the DB, cleared whenever the DB is written (``_clear``).
        self._read_ahead: dict[str, bytes | None] = {}
        if self._db.get(_META_LAYOUT) != LAYOUT_VERSION:  # new, or another layout: a cache
            self.reset()
        self._pending = self._read_int(_META_PENDING) or 0
        self._db_floor = self._first_indexed_time()  # no committed index key is older
        self._scan_floor = self._db_floor  # older committed keys are already in the buffer

    # reads

    def has(self, record_id: str) -> bool:
        """Whether an entry for ``record_id`` is in the store (the buffer included), without
        decoding it."""
        value = self._buffer.get(record_id, _MISSING)
        if value is _MISSING:  # ``get``: rocksdict's ``in`` takes twice as long
            value = self._read_ahead[record_id] = self._db.get(_ENTRY + record_id.encode())
        return value is not None

    def get(self, record_id: str) -> PendingPrediction | None:
        value = self._buffer.get(record_id, _MISSING)
        if value is _MISSING:
            value = self._db.get(_ENTRY + record_id.encode())
        return None if value is None else decode_entry(value)

    def pending_count(self) -> int:
        """Entries not joined yet, the buffer included."""
        return self._pending + self._pending_delta

    def table_readers_bytes(self) -> int:
        """Memory held outside any cache by the SST files' filters and indexes (what
        ``cache_mib`` bounds), both column families."""
        name = "rocksdb.estimate-table-readers-mem"
        return sum(family.property_int_value(name) or 0 for family in (self._db, self._index))

    def changelog_position(self) -> int | None:
        """The first changelog offset the committed DB does not reflect (None: unknown)."""
        return self._read_int(_META_POSITION)

    def committed_items(self) -> Iterator[tuple[str, bytes]]:
        """Every committed entry, encoded, in key order (for checks and tests)."""
        read = ReadOptions()
        read.set_iterate_upper_bound(_ENTRY_END)
        for key, value in self._db.items(from_key=_ENTRY, read_opt=read):
            yield cast(bytes, key)[1:].decode(), value

    def verify(self) -> list[str]:
        """Problems in the committed DB: index keys without their entry or with another time,
        entries without their index key, a pending count that is not the count. A full scan,
        for tests and operators."""
        entries = dict(self.committed_items())
        problems = []
        indexed: set[str] = set()
        for key in _raw_keys(self._index, _INDEX_START, _INDEX_END):
            record_id, event_time = key[8:].decode(), _index_time(key)
            if record_id not in entries or _time_of(entries[record_id]) != event_time:
                problems.append(f"index key {record_id}@{event_time} has no such entry")
            indexed.add(record_id)
        problems += [f"entry {record_id} is not indexed" for record_id in entries
                     if record_id not in indexed]
        pending, stored = sum(map(_is_pending, entries.values())), self._read_int(_META_PENDING)
        if pending != (stored or 0):
            problems.append(f"pending count {stored} but {pending} pending entries")
        return problems

    # writes (buffered)

    def put(self, record_id: str, entry: PendingPrediction) -> bool:
        """Store one entry (replacing any); True when it replaced one."""
        return bool(self._put([record_id], [encode_entry(entry)], entry.event_time_ms))

    def put_batch(self, record_ids: Collection[str], record_offsets: Collection[int],
                  event_times_ms: Collection[int], predictions: Collection[float],
                  segments: Collection[tuple[str, ...]], model_version: int | None,
                  watermarks_ms: Collection[int] | None = None,
                  keep_existing: bool = False) -> int:
        """Newly scored records, not joined, as columns (lists or numpy arrays), all scored by
        ``model_version``. Replaces entries with the same record_id (or, with
        ``keep_existing``, keeps them: a resent record must not undo its join); returns how
        many it replaced (or kept). A value that cannot be encoded raises ``EntryRefused`` and
        stores nothing."""
        if not len(record_ids) == len(record_offsets) == len(event_times_ms) \
                == len(predictions) == len(segments):
            raise ValueError("put_batch: the columns differ in length")
        if not len(record_ids):
            return 0
        values, oldest = _encode_rows(record_offsets, event_times_ms, predictions, segments,
                                      model_version, watermarks_ms)
        return self._put(_as_list(record_ids), values, oldest, keep_existing)

    def _put(self, record_ids: list[str], values: list[bytes], oldest: int,
             keep_existing: bool = False) -> int:
        """Buffer ``values``; one point lookup per id not buffered yet (its committed value:
        for the pending count and the index key a replacement deletes)."""
        buffer, base, get = self._buffer, self._base, self._db.get
        replaced = delta = 0
        for record_id, value in zip(record_ids, values, strict=True):
            previous = buffer.get(record_id, _MISSING)
            if previous is _MISSING:
                previous = get(_ENTRY + record_id.encode())
                base[record_id] = None if previous is None else _time_of(previous)
            if previous is not None:
                replaced += 1
                if keep_existing:
                    continue
                delta -= not previous[_FLAG_BYTE] & _JOINED
            buffer[record_id] = value
            delta += not value[_FLAG_BYTE] & _JOINED
        self._pending_delta += delta
        self._buffer_floor = min(self._buffer_floor, oldest)
        return replaced

    def _committed(self, record_ids: Iterable[str]) -> dict[str, bytes | None]:
        """The committed values of the ids not in the buffer (point lookups: rocksdict's
        multi-get is slower than a loop of them)."""
        get, buffer = self._db.get, self._buffer
        return {record_id: get(_ENTRY + record_id.encode()) for record_id in record_ids
                if record_id not in buffer}

    def join(self, record_id: str, label_time_ms: int | None = None,
             horizon_ms: int | None = None) -> tuple[JoinOutcome, PendingPrediction | None]:
        """A label for ``record_id``, with one lookup: ``("joined", entry)`` when an entry
        waited for it (it is marked joined now; the entry returned is as it was),
        ``("duplicate", entry)`` when it was joined already, ``("unmatched", None)``. Given
        the label's event time, an entry whose record came after the label's turn (its
        ``watermark_ms`` had reached the label's time) is ``("unmatched", entry)``, and one
        more than ``horizon_ms`` older than the label is ``("expired", entry)``; neither is
        marked. The consumer joins a turn's labels with ``join_batch``; this is the rule for
        one label, which the batch is tested against."""
        value = self._buffer.get(record_id, _MISSING)
        committed = value is _MISSING
        if committed:
            value = self._db.get(_ENTRY + record_id.encode())
        if value is None:
            return "unmatched", None
        if value[_FLAG_BYTE] & _JOINED:
            return "duplicate", decode_entry(value)
        entry = decode_entry(value)
        if label_time_ms is not None:
            if entry.watermark_ms >= label_time_ms:
                return "unmatched", entry
            if horizon_ms is not None and label_time_ms - entry.event_time_ms > horizon_ms:
                return "expired", entry
        event_time = entry.event_time_ms
        if committed:
            self._base[record_id] = event_time
        self._buffer[record_id] = value[:_FLAG_BYTE] + bytes((value[_FLAG_BYTE] | _JOINED,)) \
            + value[_FLAG_BYTE + 1:]
        self._pending_delta -= 1
        self._buffer_floor = min(self._buffer_floor, event_time)
        return "joined", entry

    def join_batch(self, record_ids: Sequence[str], label_times_ms: np.ndarray,
                   horizon_ms: int | None = None) -> JoinedBatch:
        """``join`` for a turn's labels at once, in order: the same outcomes and marks as
        calling ``join(record_ids[i], label_times_ms[i], horizon_ms)`` for each ``i`` in turn
        (a second label of a record joined earlier in the batch is a duplicate). One point
        lookup per label; the entries' fixed parts decoded and checked with numpy (every
        byte, as ``decode_entry``: a damaged entry raises its ``EntryRefused`` before any is
        marked); only the joined ones are written to the buffer."""
        count = len(record_ids)
        label_times = np.asarray(label_times_ms, dtype=np.int64)
        if len(label_times) != count:
            raise ValueError("join_batch: record_ids and label_times_ms differ in length")
        buffer, get, read_ahead = self._buffer, self._db.get, self._read_ahead
        values: list[bytes | None] = []
        committed: list[bool] = []
        append, mark = values.append, committed.append
        for record_id in record_ids:  # the one per-label loop: a lookup each
            value = buffer.get(record_id, _MISSING)
            if value is _MISSING:
                value = read_ahead.pop(record_id, _MISSING)
                if value is _MISSING:
                    value = get(_ENTRY + record_id.encode())
                mark(True)
            else:
                mark(False)
            append(value)
        found = np.fromiter((value is not None for value in values), dtype=bool, count=count)
        batch = JoinedBatch(count)
        where = np.flatnonzero(found)
        if not where.size:
            return batch
        present = cast("list[bytes]", [values[index] for index in where.tolist()])
        fixed = self._fixed(present)
        segments = self._segments(present)
        times, marks = fixed["time"], fixed["watermark"]
        versions = np.where(fixed["flags"] & _HAS_VERSION, fixed["model"], NO_VERSION)
        batch.event_time_ms[where] = times
        batch.model_version[where] = versions
        batch.prediction[where] = fixed["prediction"]
        for index, segment in zip(where.tolist(), segments, strict=True):
            batch.segments[index] = segment
        own_times = label_times[where]
        codes = np.full(where.size, JOINED, dtype=np.int8)
        late = _exceeds(own_times, times, horizon_ms)
        codes[late] = EXPIRED
        codes[marks >= own_times] = UNMATCHED  # checked before the horizon in ``join``
        codes[(fixed["flags"] & _JOINED) != 0] = DUPLICATE
        batch.outcomes[where] = codes
        joined = where[codes == JOINED]
        if joined.size and len(set(record_ids)) < count:  # a record labelled twice in the batch
            joined = self._first_joins(record_ids, where, batch)
        if joined.size:
            self._mark(record_ids, values, committed, joined, batch.event_time_ms)
        return batch

    @staticmethod
    def _fixed(present: list[bytes]) -> np.ndarray:
        """The fixed parts of encoded entries as a record array, each checked as
        ``decode_entry`` checks it (the first failing entry raises its refusal)."""
        if min(map(len, present)) < _FIXED.size:
            decode_entry(next(value for value in present if len(value) < _FIXED.size))
        fixed = np.frombuffer(b"".join([value[:_FIXED.size] for value in present]),
                              dtype=_FIXED_DTYPE)
        flags, model = fixed["flags"], fixed["model"]
        bad = (fixed["version"] != ENTRY_VERSION) \
            | ((flags & (0xFF ^ _JOINED ^ _HAS_VERSION)) != 0) \
            | (((flags & _HAS_VERSION) == 0) & (model != 0)) | (fixed["offset"] < 0) \
            | (model < 0) | np.isinf(fixed["prediction"]) \
            | (fixed["count"] > MAX_SEGMENT_VALUES)
        if bad.any():
            decode_entry(present[int(np.argmax(bad))])  # raises with its reason
        return fixed

    def _segments(self, present: list[bytes]) -> list[tuple[str, ...]]:
        """Each entry's segment values: its tail (count byte and values) decoded once and
        kept, as few tails repeat across entries (a county, a district)."""
        cache, out = self._segment_cache, []
        start = _FIXED.size - 1  # the count byte
        for value in present:
            tail = value[start:]
            segment = cache.get(tail)
            if segment is None:
                segment = decode_entry(value).segment  # checks every byte of the tail
                if len(cache) >= _SEGMENT_CACHE_SIZE:
                    cache.clear()
                cache[tail] = segment
            out.append(segment)
        return out

    @staticmethod
    def _first_joins(record_ids: Sequence[str], found: np.ndarray,
                     batch: JoinedBatch) -> np.ndarray:
        """Once a label of a record joined, every later label of it in the batch finds the
        entry joined (a duplicate, whatever it would have been), as label-by-label joins
        would. Returns the labels that join."""
        joined_ids: set[str] = set()
        first = []
        outcomes = batch.outcomes
        for index in found.tolist():
            record_id = record_ids[index]
            if record_id in joined_ids:
                outcomes[index] = DUPLICATE
            elif outcomes[index] == JOINED:
                joined_ids.add(record_id)
                first.append(index)
        return np.array(first, dtype=np.int64)

    def _mark(self, record_ids: Sequence[str], values: list[bytes | None], committed: list[bool],
              joined: np.ndarray, event_times: np.ndarray) -> None:
        buffer, base = self._buffer, self._base
        for index, event_time in zip(joined.tolist(), event_times[joined].tolist(), strict=True):
            record_id, value = record_ids[index], values[index]
            assert value is not None
            if committed[index]:
                base[record_id] = event_time
            buffer[record_id] = bytes((value[0], value[_FLAG_BYTE] | _JOINED)) \
                + value[_FLAG_BYTE + 1:]
        self._pending_delta -= joined.size
        self._buffer_floor = min(self._buffer_floor, int(event_times[joined].min()))

    def mark_joined(self, record_id: str) -> bool:
        """Mark the entry joined; False when there is none or it was joined already."""
        return self.join(record_id)[0] == "joined"

    def expire(self, before_ms: int) -> int:
        """Remove every entry whose event time is before ``before_ms``; returns how many.
        Two comparisons when nothing is that old: the buffer's and the DB's oldest event times
        not yet expired are kept (as lower bounds) on every write."""
        expired = 0
        if before_ms > self._buffer_floor:
            expired += self._expire_buffered(before_ms)
        if before_ms > self._scan_floor:
            expired += self._expire_committed(before_ms)
        return expired

    def _expire_buffered(self, before_ms: int) -> int:
        expired, floor = [], _NO_TIME
        for record_id, value in self._buffer.items():
            if value is not None:
                event_time = _time_of(value)
                if event_time < before_ms:
                    expired.append(record_id)
                else:
                    floor = min(floor, event_time)
        for record_id in expired:
            self._pending_delta -= _is_pending(self._buffer[record_id])
            self._buffer[record_id] = None
        self._buffer_floor = floor
        return len(expired)

    def _expire_committed(self, before_ms: int) -> int:
        """Committed entries older than ``before_ms`` that the buffer has not changed (a
        buffered key's time is the buffer's), from the scan floor on; the scan floor becomes
        the first indexed time not expired."""
        found: dict[str, int] = {}
        start, self._scan_floor = self._scan_floor, _NO_TIME
        for key in _raw_keys(self._index, _index_bound(start), _INDEX_END):
            event_time = _index_time(key)
            if event_time >= before_ms:
                self._scan_floor = event_time
                break
            record_id = key[8:].decode()
            if record_id not in self._buffer:
                found[record_id] = event_time
        old = self._committed(found)
        expired = 0
        for record_id, event_time in found.items():
            value = old[record_id]
            if value is None or _time_of(value) != event_time:  # never written so; repair
                self._stale_index.append(_index_key(event_time, record_id.encode()))
                continue
            self._base[record_id] = event_time
            self._buffer[record_id] = None
            self._pending_delta -= _is_pending(value)
            expired += 1
        return expired

    # transactions

    def changes(self, key_prefix: bytes = b"") -> list[tuple[bytes, bytes | None]]:
        """The buffer as changelog messages, key = ``key_prefix`` + record_id in UTF-8, None =
        tombstone (only for keys the committed DB holds)."""
        base = self._base
        return [(key_prefix + record_id.encode(), value)
                for record_id, value in self._buffer.items()
                if value is not None or base[record_id] is not None]

    def commit(self, changelog_next_offset: int | None) -> None:
        """Write the buffer, its index changes, the pending count and (unless None: keep the
        recorded one, which is older and so still safe) the changelog position as one
        WriteBatch; then clear the buffer."""
        batch = WriteBatch(raw_mode=True)
        put, delete, unpack, pack = batch.put, batch.delete, _INT.unpack_from, _TIME.pack
        base = self._base
        floor = self._scan_floor
        removed, added = [], []  # index keys, written after the entries: each run of inserts
        # then lands near the one before in its memtable (3x faster than interleaved)
        for record_id, value in self._buffer.items():  # one loop, inlined: ~10k per commit
            key = record_id.encode()
            old = base[record_id]
            if value is None:
                if old is not None:
                    delete(_ENTRY + key)
                    removed.append(pack(old + _TIME_SHIFT) + key)
                continue
            put(_ENTRY + key, value)
            event_time = unpack(value, _TIME_AT)[0]
            if old != event_time:
                if old is not None:
                    removed.append(pack(old + _TIME_SHIFT) + key)
                added.append(pack(event_time + _TIME_SHIFT) + key)
            if event_time < floor:
                floor = event_time
        if changelog_next_offset is not None:
            put(_META_POSITION, _INT.pack(changelog_next_offset))
        put(_META_PENDING, _INT.pack(self.pending_count()))
        index = self._index_handle
        for index_key in removed + self._stale_index:
            delete(index_key, index)
        for index_key in added:
            put(index_key, b"", index)
        self._db.write(batch, self._write)
        self._pending += self._pending_delta
        self._db_floor = floor
        self._clear()

    def discard(self) -> None:
        """Drop the buffer (the checkpoint's transaction was aborted)."""
        self._clear()

    def _clear(self) -> None:
        self._buffer.clear()
        self._read_ahead.clear()
        self._base.clear()
        self._stale_index.clear()
        self._pending_delta = 0
        self._buffer_floor = _NO_TIME
        self._scan_floor = self._db_floor

    def apply_changelog(self, messages: Iterable[tuple[bytes | None, bytes | None, int]]) \
            -> ReplayCounts:
        """Replay changelog messages ``(key, value or None, offset)`` in offset order into the
        committed DB, a WriteBatch per chunk with the position after its last message, so each
        chunk is atomic and replaying any message again converges to the same state. Refused
        messages are skipped and counted; a refused value drops its key (see ``ReplayCounts``).
        The buffer must be empty (replay happens before processing)."""
        if self._buffer:
            raise JoinStoreError("apply_changelog with uncommitted changes buffered")
        counts = ReplayCounts()
        chunk: dict[str, bytes | None] = {}
        last = -1
        for key, value, offset in messages:
            last = offset
            try:
                record_id = decode_key(key)
                if value is not None:
                    decode_entry(value)
            except EntryRefused as refusal:
                counts.skipped[refusal.reason] = counts.skipped.get(refusal.reason, 0) + 1
                if refusal.reason == "key":
                    continue
                value = None
            else:
                counts.replayed += 1
            chunk[record_id] = value  # the last value of a key in the chunk wins
            if len(chunk) >= _REPLAY_CHUNK:
                self._apply_chunk(chunk, last + 1)
                chunk = {}
        if last >= 0:
            self._apply_chunk(chunk, last + 1)
        return counts

    def _apply_chunk(self, chunk: dict[str, bytes | None], next_offset: int) -> None:
        old = self._committed(chunk)
        for record_id, value in chunk.items():
            previous = old[record_id]
            self._base[record_id] = None if previous is None else _time_of(previous)
            self._buffer[record_id] = value
            self._pending_delta += _is_pending(value) - _is_pending(previous)
        self.commit(next_offset)

    def reset(self) -> None:
        """Wipe everything, the position too (range deletions in one WriteBatch)."""
        batch = WriteBatch(raw_mode=True)
        batch.delete_range(b"", _BEYOND_EVERY_KEY)
        batch.delete_range(b"", _BEYOND_EVERY_KEY, self._index_handle)
        batch.put(_META_LAYOUT, LAYOUT_VERSION)
        self._db.write(batch, self._write)
        self._db.compact_range(None, None)
        self._index.compact_range(None, None)
        self._pending = 0
        self._db_floor = _NO_TIME
        self._clear()

    def close(self) -> None:
        del self._index, self._index_handle  # they hold the DB open
        self._db.close()

    def __enter__(self) -> JoinStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_int(self, key: bytes) -> int | None:
        value = self._db.get(key)
        return None if value is None else int(_INT.unpack(value)[0])

    def _first_indexed_time(self) -> int:
        for key in _raw_keys(self._index, _INDEX_START, _INDEX_END):
            return _index_time(key)
        return _NO_TIME


def _raw_keys(db: Rdict, start: bytes, stop: bytes) -> Iterator[bytes]:
    """The keys in ``[start, stop)`` (the DB is in raw mode: keys are bytes)."""
    read = ReadOptions()
    read.set_iterate_upper_bound(stop)
    return cast("Iterator[bytes]", db.keys(from_key=start, read_opt=read))


def _options(bloom: bool, cache: Cache | None = None) -> Options:
    """Bloom filters for the entries, in the memtable too: most lookups (a newly scored record)
    miss, and a miss then costs 0.2 us instead of 0.7 us. The index is only ever scanned.
    Memtables of 32 MiB (entries) and 16 MiB (index), two of each at most: a partition's store
    holds under 100 MiB of memtables (RocksDB's default would be 256).

    Without ``cache``, RocksDB keeps every SST file's filter and index in memory: ~1.5 MiB per
    million pending predictions. With it, both are partitioned (4 KiB pieces, read on demand)
    and held in that block cache, their top levels and level 0's pinned: memory stays bounded
    whatever the backlog, for ~20-28 % more write time and a miss at ~3.2 us instead of 2.3
    (bench/RESULTS-consumer.md, "Memory over 10 M records" and "A bound on the join
    store's filters"; 13 % of the consumer's steady rate at 10 M records)."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    options.set_max_background_jobs(2)
    options.set_compression_type(DBCompressionType.lz4())
    options.set_write_buffer_size((32 if bloom else 16) << 20)
    options.set_max_write_buffer_number(2)
    if bloom:
        options.set_memtable_prefix_bloom_ratio(0.1)
        options.set_memtable_whole_key_filtering(True)
    if bloom or cache is not None:
        options.set_block_based_table_factory(_table_options(bloom, cache))
    return options


def _table_options(bloom: bool, cache: Cache | None) -> BlockBasedOptions:
    table = BlockBasedOptions()
    if bloom:
        table.set_bloom_filter(10, False)
    if cache is not None:
        table.set_block_cache(cache)
        table.set_index_type(BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_metadata_block_size(4096)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_top_level_index_and_filter(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    return table


def _as_list(column: Collection[Any]) -> list[Any]:
    """numpy columns as Python scalars (``tolist`` is one C call), lists as they are."""
    tolist = getattr(column, "tolist", None)
    return tolist() if tolist is not None else list(column)


# --- restore --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreStats:
    """One restore: where it read from and to, what it did, how long it took."""

    start_offset: int
    end_offset: int     # the high watermark when the read started
    wiped: bool         # the DB was wiped first (no position, or one the topic no longer has)
    replayed: int
    skipped: dict[str, int]
    seconds: float


def changelog_prefix(owner: str) -> bytes:
    """What the changelog keys of ``owner`` (a consumer group) start with: its length, then
    its UTF-8, so no owner's keys can be read as another's. Groups share the changelog topic
    and each restores only its own keys."""
    data = owner.encode()
    return len(data).to_bytes(2, "big") + data


def changelog_reader(reader_config: Mapping[str, Any]) -> Consumer:
    """A consumer for ``restore_from_changelog`` to keep for every partition's restore. It
    reads history, so its fetch waits 10 ms at a partition's end: the next restore's offsets
    request queues behind a fetch in flight (a broker answers a connection in order)."""
    return Consumer({**reader_config, "isolation.level": "read_committed",
                     "enable.partition.eof": False, "fetch.wait.max.ms": 10})


def restore_from_changelog(store: JoinStore, reader: Consumer | Mapping[str, Any], topic: str,
                           partition: int, timeout_s: float,
                           key_prefix: bytes = b"") -> RestoreStats:
    """Bring ``store`` up to partition ``partition`` of the compacted changelog ``topic``, as
    committed (read_committed) up to its high watermark when the read starts. Only keys that
    start with ``key_prefix`` are this store's (see ``changelog_prefix``); ``timeout_s``
    bounds the time without a message, not the whole read (a large store takes minutes).
    ``reader``: a ``changelog_reader`` kept across restores (left with nothing assigned), or
    the configuration of one made for this restore alone.

    The read starts at the store's recorded position, or at the low watermark after wiping the
    store when the position is unknown, below the low watermark (compacted or deleted away) or
    above the high watermark (the topic was recreated or truncated)."""
    started = time.monotonic()
    if isinstance(reader, Consumer):
        consumer, own = reader, False
    else:
        consumer, own = changelog_reader(reader), True
    try:
        low, high = _partition_watermarks(consumer, topic, partition, timeout_s)
        position = store.changelog_position()
        wiped = position is None or not low <= position <= high
        if wiped:
            store.reset()
            position = low
        assert position is not None
        messages = read_ranges(consumer, topic, {partition: (position, high)},
                               timeout_s=timeout_s, idle=True, release=True)
        counts = store.apply_changelog(_owned(messages, key_prefix))
    except (MissingTopicError, BrokerUnavailableError) as error:
        raise JoinStoreError(f"join changelog {topic}[{partition}]: {error}") from None
    finally:
        if own:
            consumer.close()
    if store.changelog_position() != high:  # past markers and compacted gaps too
        store.commit(high)
    return RestoreStats(position, high, wiped, counts.replayed, counts.skipped,
                        time.monotonic() - started)


def _owned(messages: Iterable[Message], prefix: bytes
           ) -> Iterator[tuple[bytes | None, bytes | None, int]]:
    """The messages whose key starts with ``prefix``, the prefix taken off."""
    cut = len(prefix)
    for message in messages:
        key = message.key()
        if key is not None and key[:cut] == prefix:
            yield key[cut:], message.value(), offset_of(message)


def _partition_watermarks(reader: Consumer, topic: str, partition: int,
                          timeout_s: float) -> tuple[int, int]:
    marks = watermarks(reader, topic, timeout_s, only=(partition,))
    if partition not in marks:
        raise JoinStoreError(f"join changelog {topic} has no partition {partition} (it has "
                             f"{len(topic_partitions(reader, topic, timeout_s))}); it needs as "
                             "many as the records topic")
    return marks[partition]
