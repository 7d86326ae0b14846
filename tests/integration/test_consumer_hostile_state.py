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
from detectors import DetectorBank, DetectorSettings
from levydrift.settings import KafkaSettings, MetricsSettings, TopicSettings
from levydrift.simulator import LevySimulator, SimulatorConfig
from tests.integration.consumer_harness import Topics, committed_total
from tests.kafka_helpers import read_all

DETECTORS = DetectorSettings(warmup_records=200, relearn_records=200, min_instances=30)
FIRST, SECOND = 400, 100  # records per partition in each run


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


def wrong_shape(bank: bytes) -> bytes:
    header, arrays = snapshot_parts(bank)
    manifest = header["channels"]["levy_rate"]["arrays"]
    manifest[0][2] = [manifest[0][2][0] + 1, manifest[0][2][1]]
    return forge_bank(header, arrays + bytes(8 * manifest[0][2][1]))


def mistyped(bank: bytes) -> bytes:
    header, arrays = snapshot_parts(bank)
    header["records_seen"] = "many"
    return forge_bank(header, arrays)


def nan_cusum(bank: bytes) -> bytes:
    """Well-formed, but a NaN CUSUM would loop the compiled crossing search for ever."""
    header, arrays = snapshot_parts(bank)
    offset = 0
    for name, info in header["channels"].items():
        for key, _, shape in info["arrays"]:
            size = 8 * int(np.prod(shape))
            if (name, key) == ("county", "cusum"):
                nan = np.full(shape, np.nan).tobytes()
                return forge_bank(header, arrays[:offset] + nan + arrays[offset + size:])
            offset += size
    raise AssertionError("no county CUSUM in the snapshot")


def ahead(bank: bytes) -> bytes:
    """A bank claiming to have seen offsets beyond the one its envelope names."""
    header, arrays = snapshot_parts(bank)
    header["last_position"] += 1000
    return forge_bank(header, arrays)


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


CASES = {
    "truncated": Case(0, lambda good: with_bank(good[0], lambda b: b[: len(b) // 2]),
                      "corrupt", True),
    "bad magic": Case(1, lambda good: with_bank(good[1], lambda b: b"PKZIP!" + b[6:]),
                      "magic", True),
    "bad version": Case(2, lambda good: with_bank(good[2], lambda b: b[:6] + b"\x09\x00"
                                                  + b[8:]), "version", True),
    "zip bomb": Case(3, lambda good: with_bank(good[3], zip_bomb), "corrupt", True),
    "wrong shapes": Case(4, lambda good: with_bank(good[4], wrong_shape), "shape", True),
    "huge declared lengths": Case(5, lambda good: with_bank(good[5], lambda b: forge_bank(
        *snapshot_parts(b), declared=0xFFFFFFF0)), "too_large", True),
    "non-JSON header": Case(6, lambda good: [struct.pack(">I", 9) + b"{not json" + good[6]],
                            "envelope", True),
    "wrong types in header": Case(7, lambda good: with_bank(good[7], mistyped), "header",
                                  True),
    "relabelled partition": Case(8, lambda good: [good[9]], "foreign", True),
    "other group": Case(9, lambda good: [envelope_with(good[9], group="someone-else")],
                        "foreign", True),
    "tombstone after a good value": Case(10, lambda good: [None], None, True),
    "newer valid after a bad one": Case(11, lambda good: [b"\xff garbage", good[11]], None,
                                        False),
    "NaN in a detector": Case(12, lambda good: with_bank(good[12], nan_cusum), "shape", True),
    "bank ahead of its offset": Case(13, lambda good: with_bank(good[13], ahead),
                                     "inconsistent", True),
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
                                 checkpoint_interval_s=0.2),
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
        "records_seen": {p: DetectorBank.restore(decode_state(final[keys[p]]).bank,
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
