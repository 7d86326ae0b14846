"""Detector-state checkpoints on the compacted state topic.

One record per (group, topic, partition), keyed ``group|topic|partition``. Its value is a small
envelope: a 4-byte header length, a JSON header (format version, the offset the state belongs to,
the champion version the bank was baselined against), then the bank's own snapshot bytes. The
snapshot is produced in the same transaction that commits the consumed offsets, so the latest
committed snapshot always belongs to the committed offset.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from levydrift.errors import LevyDriftError

ENVELOPE_VERSION = 1
_HEADER_LENGTH = struct.Struct(">I")


class StateRestoreError(LevyDriftError):
    """The state topic could not be read to its end in time, or holds an unreadable snapshot."""


@dataclass(frozen=True)
class PartitionState:
    """A bank snapshot and where in the stream it belongs."""

    group: str
    topic: str
    partition: int
    next_offset: int           # the first offset not yet reflected in the bank
    model_version: int | None  # champion the bank was baselined against
    bank: bytes


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
    header = orjson.dumps({"v": ENVELOPE_VERSION, "group": state.group, "topic": state.topic,
                           "partition": state.partition, "next_offset": state.next_offset,
                           "model_version": state.model_version})
    return _HEADER_LENGTH.pack(len(header)) + header + state.bank


def decode_state(value: bytes) -> PartitionState:
    try:
        (length,) = _HEADER_LENGTH.unpack_from(value)
        header = orjson.loads(value[4:4 + length])
        if header["v"] != ENVELOPE_VERSION:
            raise StateRestoreError(f"detector-state envelope version {header['v']} is not "
                                    f"supported (expected {ENVELOPE_VERSION})")
        return PartitionState(header["group"], header["topic"], int(header["partition"]),
                              int(header["next_offset"]), header["model_version"],
                              value[4 + length:])
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise StateRestoreError(f"unreadable detector-state record: {error}") from None


def read_latest_states(consumer_config: dict, state_topic: str, keys: set[bytes],
                       timeout_s: float) -> dict[bytes, PartitionState | None]:
    """The latest committed snapshot for each key (``None`` where there is none).

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
                 timeout_s: float) -> dict[bytes, PartitionState | None]:
    latest: dict[bytes, PartitionState | None] = dict.fromkeys(keys)
    metadata = reader.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise StateRestoreError(f"detector-state topic {topic} does not exist; "
                                "create it with `levydrift topics create`")
    ends = {}
    for partition in metadata.partitions:
        low, high = reader.get_watermark_offsets(TopicPartition(topic, partition),
                                                 timeout=timeout_s)
        if high > low:
            ends[partition] = high
    if not ends:
        return latest
    assignment = [TopicPartition(topic, p, 0) for p in ends]
    reader.assign([TopicPartition(topic, p, -2) for p in ends])  # -2: from the beginning
    deadline = time.monotonic() + timeout_s
    while ends:
        if time.monotonic() > deadline:
            raise StateRestoreError(f"reading detector state from {topic} took more than "
                                    f"{timeout_s:g}s; raise consumer.restore_timeout_s")
        for message in reader.consume(1000, 0.2):
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise StateRestoreError(f"reading {topic}: {message.error().str()}")
            if message.key() in latest and message.value() is not None:
                latest[message.key()] = decode_state(message.value())
        for position in reader.position(assignment):
            if position.offset >= ends.get(position.partition, 0):
                ends.pop(position.partition, None)
    return latest
