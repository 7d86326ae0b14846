"""Hostile or damaged detector state never stops the consumer. Each case writes something to one
partition's key on the real state topic after a first run; the second run must refuse it with
one log line naming the key and offset, count it by reason, start that partition's detectors
fresh from the committed offset, and leave the other partitions untouched. Only the latest
value of a key counts, and a tombstone clears it."""

from __future__ import annotations

import logging
import resource
import struct
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from consumer import metrics
from consumer.config import ConsumerSection, ConsumerSettings
from consumer.service import ConsumerService
from consumer.state import decode_state, encode_state, state_key
from detectors import DetectorSettings
from detectors.segments import SegmentedBank
from levydrift.settings import KafkaSettings, MetricsSettings, TopicSettings
from levydrift.simulator import LevySimulator, SimulatorConfig
from tests.consumer.harness import Topics, committed_total
from tests.kafka_helpers import read_all, scratch_dir

DETECTORS = DetectorSettings(warmup_records=200, relearn_records=200, min_instances=30)
FIRST, SECOND = 400, 100  # records per partition in each run
# A segmented snapshot (detectors.segments): b"LDSEGS" | u16 version | u32 length |
# zlib(header JSON) | ring | pooled bank | segment banks, each bank an LDSNAP blob.
FRAME = struct.Struct("<6sHI")


@dataclass
class Frame:
    """A segmented snapshot taken apart; ``framed()`` puts it back with correct lengths."""

    header: dict
    ring: bytes
    pool: bytes
    segments: list[tuple[str, bytes]]

    @classmethod
    def parse(cls, data: bytes) -> Frame:
        _, _, length = FRAME.unpack_from(data)
        header = orjson.loads(zlib.decompress(data[FRAME.size:FRAME.size + length]))
        offset = FRAME.size + length
        ring = data[offset:offset + header["ring"]]
        offset += header["ring"]
        pool = data[offset:offset + header["pool"]]
        offset += header["pool"]
        segments = []
        for label, size in header["segments"]:
            segments.append((label, data[offset:offset + size]))
            offset += size
        assert offset == len(data)
        return cls(header, ring, pool, segments)

    def framed(self, packed_header: bytes | None = None, **declared: object) -> bytes:
        """The frame with its true part lengths, or the ``declared`` ones."""
        header = {**self.header, "ring": len(self.ring), "pool": len(self.pool),
                  "segments": [[label, len(blob)] for label, blob in self.segments],
                  **declared}
        packed = (zlib.compress(orjson.dumps(header), 6) if packed_header is None
                  else packed_header)
        return (FRAME.pack(b"LDSEGS", 1, len(packed)) + packed + self.ring + self.pool
                + b"".join(blob for _, blob in self.segments))


def in_frame(change: Callable[[Frame], bytes | None]) -> Callable[[bytes], bytes]:
    """A change of the unpacked frame: it edits the frame in place (re-framed with correct
    lengths) or returns the bytes to write itself."""
    def make(data: bytes) -> bytes:
        frame = Frame.parse(data)
        forged = change(frame)
        return frame.framed() if forged is None else forged
    return make


def in_pool(make_bank: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """ONE inner bank transformed (the pooled bank: its detectors have a reference from the
    start, so all their arrays exist while the segment banks still warm up), re-framed."""
    def change(frame: Frame) -> None:
        assert frame.pool.startswith(b"LDSNAP")
        frame.pool = make_bank(frame.pool)
    return in_frame(change)


def snapshot_parts(bank: bytes) -> tuple[dict, bytes]:
    body = zlib.decompress(bank[8:])
    (length,) = struct.unpack_from("<I", body)
    return orjson.loads(body[4:4 + length]), body[4 + length:]


def forge_bank(header: dict, arrays: bytes, declared: int | None = None) -> bytes:
    raw = orjson.dumps(header)
    length = len(raw) if declared is None else declared
    return b"LDSNAP\x01\x00" + zlib.compress(struct.pack("<I", length) + raw + arrays)


def with_bank(good: bytes, make: Callable[[bytes], bytes]) -> list[bytes]:
    state = decode_state(good)
    return [encode_state(replace(state, bank=make(state.bank)))]


def zip_bomb(bank: bytes) -> bytes:
    """The snapshot followed by 400 MB of zeros, in well under a megabyte."""
    header, arrays = snapshot_parts(bank)
    raw = orjson.dumps(header)
    packer = zlib.compressobj(9)
    chunks = [b"LDSNAP\x01\x00", packer.compress(struct.pack("<I", len(raw)) + raw + arrays)]
    chunks += [packer.compress(bytes(1 << 20)) for _ in range(400)]
    return b"".join(chunks) + packer.flush()


def header_bomb(frame: Frame) -> bytes:
    """The frame header followed by 64 MB of zeros inside its zlib stream."""
    packer = zlib.compressobj(9)
    chunks = [packer.compress(orjson.dumps(frame.header))]
    chunks += [packer.compress(bytes(1 << 20)) for _ in range(64)]
    return frame.framed(b"".join(chunks) + packer.flush())


def huge_frame_header(frame: Frame) -> bytes:
    data = frame.framed()
    return data[:8] + struct.pack("<I", 0xFFFFFFF0) + data[12:]


def huge_segment(frame: Frame) -> bytes:
    """A segment bank declared 2**62 bytes long."""
    [label, _], *rest = [[name, len(blob)] for name, blob in frame.segments]
    return frame.framed(segments=[[label, 1 << 62], *rest])


def mistyped_frame(frame: Frame) -> None:
    frame.header["records_seen"] = "many"


def ahead(frame: Frame) -> None:
    """A bank claiming to have seen offsets beyond the one its envelope names."""
    frame.header["last_position"] += 1000


def wrong_shape(bank: bytes) -> bytes:
    header, arrays = snapshot_parts(bank)
    manifest = header["channels"]["levy_rate"]["arrays"]
    manifest[0][2] = [manifest[0][2][0] + 1, manifest[0][2][1]]
    return forge_bank(header, arrays + bytes(8 * manifest[0][2][1]))


def huge_bank_header(bank: bytes) -> bytes:
    return forge_bank(*snapshot_parts(bank), declared=0xFFFFFFF0)


def mistyped(bank: bytes) -> bytes:
    header, arrays = snapshot_parts(bank)
    header["records_seen"] = "many"
    return forge_bank(header, arrays)


def nan_in(signal: str, array: str) -> Callable[[bytes], bytes]:
    """Well-formed, but a NaN in detector state would poison (or loop) the compiled code."""
    def make(bank: bytes) -> bytes:
        header, arrays = snapshot_parts(bank)
        offset = 0
        for name, info in header["channels"].items():
            for key, _, shape in info["arrays"]:
                size = 8 * int(np.prod(shape))
                if (name, key) == (signal, array):
                    nan = np.full(shape, np.nan).tobytes()
                    return forge_bank(header, arrays[:offset] + nan + arrays[offset + size:])
                offset += size
        raise AssertionError(f"no {signal} {array} in the snapshot")
    return make


def envelope_with(good: bytes, **fields: object) -> bytes:
    length = struct.unpack_from(">I", good)[0]
    header = {**orjson.loads(good[4:4 + length]), **fields}
    raw = orjson.dumps(header)
    return struct.pack(">I", len(raw)) + raw + good[4 + length:]


@dataclass(frozen=True)
class Case:
    """What to write after the first run to partition ``partition``'s key, given the good
    values of every partition; the refusal reason expected (None: none); whether the
    partition must start fresh."""

    partition: int
    write: Callable[[dict[int, bytes]], list[bytes | None]]
    reason: str | None
    fresh: bool
    says: str = ""  # in the refusal's error: the check that refused it


CASES = {
    # The segmented frame.
    "truncated": Case(0, lambda good: with_bank(good[0], lambda b: b[: len(b) // 2]),
                      "corrupt", True, says="do not add up"),
    "bad magic": Case(1, lambda good: with_bank(good[1], lambda b: b"PKZIP!" + b[6:]),
                      "magic", True, says="bad magic"),
    "bad version": Case(2, lambda good: with_bank(good[2], lambda b: b[:6] + b"\x09\x00"
                                                  + b[8:]), "version", True, says="format 9"),
    "zip bomb in the frame header": Case(3, lambda good: with_bank(
        good[3], in_frame(header_bomb)), "too_large", True, says="inflates beyond"),
    "huge declared header length": Case(4, lambda good: with_bank(
        good[4], in_frame(huge_frame_header)), "too_large", True, says="bytes allowed"),
    "huge declared bank length": Case(5, lambda good: with_bank(
        good[5], in_frame(huge_segment)), "corrupt", True, says="do not add up"),
    "wrong types in header": Case(6, lambda good: with_bank(good[6], in_frame(mistyped_frame)),
                                  "header", True, says="'many'"),
    "bank ahead of its offset": Case(7, lambda good: with_bank(good[7], in_frame(ahead)),
                                     "inconsistent", True, says="has seen offset"),
    "single-bank snapshot from before segments": Case(8, lambda good: with_bank(
        good[8], lambda b: Frame.parse(b).pool), None, True),  # a warning, not a refusal
    # One inner bank, re-framed with correct lengths.
    "zip bomb in a bank": Case(9, lambda good: with_bank(good[9], in_pool(zip_bomb)),
                               "corrupt", True, says="after the last array"),
    "huge declared lengths in a bank": Case(10, lambda good: with_bank(
        good[10], in_pool(huge_bank_header)), "too_large", True, says="header declares"),
    "wrong shapes": Case(11, lambda good: with_bank(good[11], in_pool(wrong_shape)), "shape",
                         True, says="does not fit"),
    "NaN in a detector": Case(12, lambda good: with_bank(
        good[12], in_pool(nan_in("levy_rate", "ph_f"))), "shape", True, says="ph_f holds NaN"),
    "wrong types in a bank header": Case(13, lambda good: with_bank(good[13],
                                                                    in_pool(mistyped)),
                                         "header", True, says="records_seen must be"),
    # The envelope.
    "non-JSON header": Case(14, lambda good: [struct.pack(">I", 9) + b"{not json" + good[14]],
                            "envelope", True),
    "relabelled partition": Case(15, lambda good: [good[16]], "foreign", True),
    "other group": Case(16, lambda good: [envelope_with(good[16], group="someone-else")],
                        "foreign", True),
    "tombstone after a good value": Case(17, lambda good: [None], None, True),
    "newer valid after a bad one": Case(18, lambda good: [b"\xff garbage", good[18]], None,
                                        False),
}
PARTITIONS = len(CASES) + 1  # the last partition is left alone


def produce_records(bootstrap: str, topic: str, first: int, per_partition: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 20})
    records = LevySimulator(SimulatorConfig(seed=9)).records(
        first * PARTITIONS, (first + per_partition) * PARTITIONS)
    for index, record in enumerate(records):
        producer.produce(topic, key=record["parcel_id"].encode(), value=orjson.dumps(record),
                         partition=index % PARTITIONS)
        producer.poll(0)
    assert producer.flush(60) == 0


def run_consumer(bootstrap: str, topics: Topics, group: str, total: int) -> None:
    settings = ConsumerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap), topics=TopicSettings(**topics.names),
        consumer=ConsumerSection(group_id=group, instance_id="solo", batch_size=500,
                                 checkpoint_interval_s=0.2, state_dir=scratch_dir(group)),
        detectors=DETECTORS, metrics=MetricsSettings(port=0))
    deadline = time.monotonic() + 180

    def done(service: ConsumerService) -> bool:
        return (sum(m.next_offset for m in service.monitors.values()) >= total
                or time.monotonic() > deadline)

    service = ConsumerService(settings)
    service.run(stop_when=done)
    assert time.monotonic() <= deadline, "the consumer did not get through the records"


def latest_values(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    return {m.key(): m.value() for m in read_all(bootstrap, topic)}


def refusals() -> dict[str, float]:
    return {reason: metrics.REGISTRY.get_sample_value(
        "levydrift_consumer_state_restore_failures_total", {"reason": reason}) or 0.0
        for reason in metrics.STATE_REFUSALS}


@pytest.fixture(scope="module")
def outcome(kafka_bootstrap: str) -> dict:
    """Run, inject every case, run again; what the second run did."""
    suffix = uuid.uuid4().hex[:10]
    topics = Topics(f"hostile{suffix}", PARTITIONS).create(kafka_bootstrap)
    group = f"hostile{suffix}"
    records_topic, state_topic = topics.names["records"], topics.names["detector_state"]
    produce_records(kafka_bootstrap, records_topic, 0, FIRST)
    run_consumer(kafka_bootstrap, topics, group, FIRST * PARTITIONS)

    keys = {p: state_key(group, records_topic, p) for p in range(PARTITIONS)}
    values = latest_values(kafka_bootstrap, state_topic)
    good = {p: values[keys[p]] for p in range(PARTITIONS)}
    for value in good.values():  # the forger rebuilds a frame byte for byte
        bank = decode_state(value).bank
        assert Frame.parse(bank).framed() == bank
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 2_000_000})
    for case in CASES.values():
        for value in case.write(good):
            producer.produce(state_topic, key=keys[case.partition], value=value)
    assert producer.flush(30) == 0

    produce_records(kafka_bootstrap, records_topic, FIRST, SECOND)
    before = refusals()
    capture = _Capture()
    logging.getLogger("consumer.state").addHandler(capture)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        run_consumer(kafka_bootstrap, topics, group, (FIRST + SECOND) * PARTITIONS)
    finally:
        logging.getLogger("consumer.state").removeHandler(capture)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    after = refusals()
    final = latest_values(kafka_bootstrap, state_topic)
    return {
        "keys": keys, "lines": capture.records, "grown_kib": grown_kib,
        "counted": {reason: after[reason] - before[reason] for reason in after},
        "records_seen": {p: SegmentedBank.restore(decode_state(final[keys[p]]).bank,
                                                  DETECTORS).records_seen
                         for p in range(PARTITIONS)},
        "committed": committed_total(kafka_bootstrap, group, records_topic, PARTITIONS),
    }


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_hostile_state_is_refused_and_the_partition_starts_fresh(outcome: dict,
                                                                 name: str) -> None:
    case = CASES[name]
    key = outcome["keys"][case.partition].decode()
    lines = [r for r in outcome["lines"] if getattr(r, "key", None) == key]
    if case.reason is None:
        assert lines == []
    else:
        [line] = lines  # exactly one line per refused value
        assert line.getMessage().startswith("detector state refused")
        assert (line.reason, isinstance(line.offset, int)) == (case.reason, True)
        assert case.says in line.error, line.error
    expected_seen = SECOND if case.fresh else FIRST + SECOND
    assert outcome["records_seen"][case.partition] == expected_seen


@pytest.mark.slow
def test_refusals_are_counted_by_reason_and_nothing_else_is_disturbed(outcome: dict) -> None:
    expected: dict[str, float] = {}
    for case in CASES.values():
        if case.reason:
            expected[case.reason] = expected.get(case.reason, 0) + 1
    assert {r: n for r, n in outcome["counted"].items() if n} == expected
    assert outcome["records_seen"][PARTITIONS - 1] == FIRST + SECOND  # the untouched one
    assert outcome["committed"] == (FIRST + SECOND) * PARTITIONS  # nothing lost or redone
    assert outcome["grown_kib"] < 200_000, "the zip bomb was inflated"
