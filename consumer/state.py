"""Detector-state checkpoints on the compacted state topic.

One record per (group, topic, partition), keyed ``group|topic|partition``. Its value is a small
envelope: a 4-byte header length, a JSON header (format version, the offset the state belongs to,
the champion version the bank was baselined against), then the bank's own snapshot bytes. The
snapshot is produced in the same transaction that commits the consumed offsets, so the latest
committed snapshot always belongs to the committed offset.

A snapshot larger than ``consumer.state_record_max_bytes`` (900,000 by default: Kafka refuses a
record above the producer's ``message.max.bytes``, 1,000,000, and the topic's
``max.message.bytes``, 1,048,588; each segment adds ~41 KiB) is written as parts in the same
transaction: the first under the key itself, part ``i`` under ``key|part=i``, each with the part
count and the CRC-32 of the whole value. A restore joins the latest parts of the key and uses
them only when all are there and agree.

Only the latest value of a key counts, and a tombstone clears it. That value is decoded only
when it is needed, and trusted in nothing: a value that cannot be read, fails its bounds or
names another group, topic or partition is refused with one log line naming its key and
offset, counted in ``levydrift_consumer_state_restore_failures_total{reason}``, and the
partition starts fresh detectors from its committed offset.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from confluent_kafka import Consumer

from consumer import metrics
from levydrift.errors import BrokerUnavailableError, LevyDriftError, MissingTopicError
from levydrift.kafka import read_to_end
from levydrift.kafka.messages import offset_of, partition_of

log = logging.getLogger(__name__)

ENVELOPE_VERSION = 1
MAX_ENVELOPE_HEADER_BYTES = 4096  # the header is a handful of short fields
_HEADER_LENGTH = struct.Struct(">I")
STATE_RECORD_MAX_BYTES = 900_000
PART_MAGIC = b"LDPART1"  # never the start of an envelope (its header length is <= 4096)
_PART_HEADER = struct.Struct(">7sIII")  # magic, part index, part count, CRC-32 of the whole
_PART_SUFFIX = b"|part="


class StateRestoreError(LevyDriftError):
    """The state topic could not be read to its end in time, or holds an unreadable snapshot."""


class StateRefused(StateRestoreError):
    """A detector-state value that must not be restored; ``reason`` is a stable metric label."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StoredState:
    """The latest value of one key on the state topic, not decoded yet."""

    key: bytes
    partition: int  # of the state topic
    offset: int
    value: bytes
    # The latest value of each ``key|part=i`` (a snapshot written in parts), by ``i``.
    parts: Mapping[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionState:
    """A bank snapshot and where in the stream it belongs."""

    group: str
    topic: str
    partition: int
    next_offset: int           # the first offset not yet reflected in the bank
    model_version: int | None  # champion the bank was baselined against
    bank: bytes
    # The label join (consumer/labels.py), when labels are joined: the first label offset not
    # yet taken, the records watermark (epoch ms) and the error detectors' snapshot.
    labels_next_offset: int | None = None
    watermark_ms: int | None = None
    error_bank: bytes = b""


def resume_point(committed_offset: int, low_watermark: int,
                 saved: PartitionState | None) -> tuple[int, PartitionState | None]:
    """Where a newly assigned partition resumes, and the snapshot to resume with (or None for
    fresh detectors).

    The committed offset rules: the snapshot is used only when it belongs to exactly that
    offset. They differ when an operator reset the group's offsets, or the offsets expired while
    the compacted snapshot stayed; then the snapshot describes other records and is dropped. With
    no committed offset at all, the snapshot's own offset is used while the log still holds it.
    """
    if committed_offset >= 0:
        if saved is not None and saved.next_offset != committed_offset:
            return committed_offset, None
        return committed_offset, saved
    if saved is not None and saved.next_offset >= low_watermark:
        return saved.next_offset, saved
    return low_watermark, None


def state_key(group: str, topic: str, partition: int) -> bytes:
    return f"{group}|{topic}|{partition}".encode()


def encode_state(state: PartitionState) -> bytes:
    fields: dict[str, Any] = {
        "v": ENVELOPE_VERSION, "group": state.group, "topic": state.topic,
        "partition": state.partition, "next_offset": state.next_offset,
        "model_version": state.model_version}
    if state.labels_next_offset is not None:  # added compatibly: older readers ignore them
        fields.update(labels_next_offset=state.labels_next_offset,
                      watermark_ms=state.watermark_ms, error_bank_bytes=len(state.error_bank))
    header = orjson.dumps(fields)
    return _HEADER_LENGTH.pack(len(header)) + header + state.bank + state.error_bank


def part_key(key: bytes, index: int) -> bytes:
    return key + _PART_SUFFIX + str(index).encode()


def split_part_key(key: bytes) -> tuple[bytes, int] | None:
    """(the snapshot's key, the part number) of a ``part_key``, else None."""
    base, suffix, number = key.rpartition(_PART_SUFFIX)
    return (base, int(number)) if suffix and number.isdigit() else None


def state_records(key: bytes, value: bytes,
                  max_bytes: int = STATE_RECORD_MAX_BYTES) -> list[tuple[bytes, bytes]]:
    """The (key, value) records that carry ``value``: itself when it fits in ``max_bytes``,
    else parts of at most ``max_bytes`` each (see the module docstring)."""
    if len(value) <= max_bytes:
        return [(key, value)]
    size = max_bytes - _PART_HEADER.size
    chunks = [value[start:start + size] for start in range(0, len(value), size)]
    checksum = zlib.crc32(value)
    return [(key if index == 0 else part_key(key, index),
             _PART_HEADER.pack(PART_MAGIC, index, len(chunks), checksum) + chunk)
            for index, chunk in enumerate(chunks)]


def joined_value(stored: StoredState) -> bytes:
    """The whole value of ``stored``, its parts joined; raises ``StateRefused`` when a part is
    missing or belongs to another snapshot."""
    if not stored.value.startswith(PART_MAGIC):
        return stored.value
    _, count, checksum = _part_header(stored.value, 0, None)
    chunks = [stored.value[_PART_HEADER.size:]]
    for index in range(1, count):
        part = stored.parts.get(index)
        if part is None:
            raise StateRefused(f"detector-state part {index} of {count} is missing",
                               "incomplete")
        _part_header(part, index, (count, checksum))
        chunks.append(part[_PART_HEADER.size:])
    value = b"".join(chunks)
    if zlib.crc32(value) != checksum:
        raise StateRefused("detector-state parts do not add up to the value they were cut "
                           "from (CRC-32 mismatch)", "corrupt")
    return value


def _part_header(value: bytes, index: int,
                 expected: tuple[int, int] | None) -> tuple[int, int, int]:
    """(index, count, checksum) of a part, checked against its place and the first part's."""
    if len(value) < _PART_HEADER.size or not value.startswith(PART_MAGIC):
        raise StateRefused(f"detector-state part {index} is not a part", "incomplete")
    _, at, count, checksum = _PART_HEADER.unpack_from(value)
    if at != index or count < 2 or (expected is not None and (count, checksum) != expected):
        raise StateRefused(f"detector-state part {index} belongs to another snapshot "
                           f"(part {at} of {count})", "incomplete")
    return at, count, checksum


def decode_state(value: bytes) -> PartitionState:
    """The envelope, every field checked; raises ``StateRefused``."""
    if len(value) < _HEADER_LENGTH.size:
        raise StateRefused("unreadable detector-state record: shorter than its header length",
                           "envelope")
    (length,) = _HEADER_LENGTH.unpack_from(value)
    if length > min(MAX_ENVELOPE_HEADER_BYTES, len(value) - _HEADER_LENGTH.size):
        raise StateRefused(f"unreadable detector-state record: header of {length} bytes "
                           f"declared in a record of {len(value)}", "envelope")
    try:
        header = orjson.loads(value[4:4 + length])
    except orjson.JSONDecodeError as error:
        raise StateRefused(f"unreadable detector-state record: {error}", "envelope") from None
    if not isinstance(header, dict):
        raise StateRefused("unreadable detector-state record: header is not an object",
                           "envelope")
    version = header.get("v")
    if version != ENVELOPE_VERSION:
        raise StateRefused(f"detector-state envelope version {str(version)[:20]} is not "
                           f"supported (expected {ENVELOPE_VERSION})", "version")
    body = value[4 + length:]
    error_bytes = _field(header, "error_bank_bytes", int, optional=True) or 0
    if error_bytes > len(body):
        raise StateRefused(f"unreadable detector-state record: error_bank_bytes {error_bytes} "
                           f"exceeds the {len(body)} bytes that follow the header", "envelope")
    split = len(body) - error_bytes
    watermark = header.get("watermark_ms")
    if watermark is not None and (not isinstance(watermark, int) or isinstance(watermark, bool)
                                  or watermark < -1):
        raise StateRefused("unreadable detector-state record: watermark_ms is "
                           f"{type(watermark).__name__}, expected int", "envelope")
    return PartitionState(_field(header, "group", str), _field(header, "topic", str),
                          _field(header, "partition", int), _field(header, "next_offset", int),
                          _field(header, "model_version", int, optional=True),
                          body[:split],
                          _field(header, "labels_next_offset", int, optional=True),
                          watermark, body[split:])


def _field(header: dict[str, Any], name: str, kind: type[Any], optional: bool = False) -> Any:
    value = header.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
        raise StateRefused(f"unreadable detector-state record: {name} is "
                           f"{type(value).__name__}, expected {kind.__name__}", "envelope")
    return value


def restorable_state(stored: StoredState | None, group: str, topic: str,
                     partition: int) -> PartitionState | None:
    """The envelope of ``stored`` if it can be used for ``group``/``topic``/``partition``,
    else None (refused: logged and counted)."""
    if stored is None:
        return None
    try:
        state = decode_state(joined_value(stored))
    except StateRefused as refusal:
        refuse_state(stored, refusal.reason, str(refusal))
        return None
    if (state.group, state.topic, state.partition) != (group, topic, partition):
        refuse_state(stored, "foreign", f"the snapshot belongs to {state.group}|{state.topic}|"
                                        f"{state.partition}"[:300])
        return None
    return state


def refuse_state(stored: StoredState, reason: str, message: str) -> None:
    """One log line naming the key and offset, and a count by reason."""
    metrics.STATE_RESTORE_FAILURES.labels(reason=reason).inc()
    log.warning("detector state refused; starting fresh detectors", extra={
        "key": stored.key.decode("utf-8", "backslashreplace")[:300],
        "state_partition": stored.partition, "offset": stored.offset, "reason": reason,
        "error": message[:300]})


def read_latest_states(consumer_config: dict, state_topic: str, keys: set[bytes],
                       timeout_s: float) -> dict[bytes, StoredState | None]:
    """The latest committed value of each key, undecoded (``None`` where there is none or a
    tombstone came last).

    Reads the state topic from its start to its end. The end is the high watermark seen when the
    read starts; the read stops once the consumer's *position* reaches it, so aborted
    transactions, their markers and compacted gaps never leave it waiting for an offset that
    cannot arrive.
    """
    reader = Consumer({**consumer_config, "enable.partition.eof": False})
    try:
        return _read_to_end(reader, state_topic, keys, timeout_s)
    finally:
        reader.close()


def _read_to_end(reader: Consumer, topic: str, keys: set[bytes],
                 timeout_s: float) -> dict[bytes, StoredState | None]:
    latest: dict[bytes, StoredState | None] = dict.fromkeys(keys)
    parts: dict[bytes, dict[int, bytes]] = {}
    try:
        for message in read_to_end(reader, topic, timeout_s):
            key, value = message.key(), message.value()
            if key in latest:
                latest[key] = None if value is None else StoredState(
                    key, partition_of(message), offset_of(message), value)
            elif key is not None and (part := split_part_key(key)) and part[0] in latest:
                _keep_part(parts.setdefault(part[0], {}), part[1], value)
    except MissingTopicError:
        raise StateRestoreError(f"detector-state topic {topic} does not exist; "
                                "create it with `levydrift topics create`") from None
    except BrokerUnavailableError as error:
        raise StateRestoreError(f"detector state: {error}; if the topic is just large, raise "
                                "consumer.restore_timeout_s") from None
    return {key: stored if stored is None or key not in parts else replace(
        stored, parts=parts[key]) for key, stored in latest.items()}


def _keep_part(held: dict[int, bytes], number: int, value: bytes | None) -> None:
    """The latest value of part ``number`` of a wanted key (a tombstone removes it)."""
    if value is None:
        held.pop(number, None)
    else:
        held[number] = value
