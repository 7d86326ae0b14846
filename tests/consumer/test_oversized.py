"""Oversized records and refused dead letters never stop a partition: a record too large to
copy is dead-lettered as a bounded copy with a pointer to the original, and a dead letter Kafka
refuses steps down to a headers-only form (or, failing even that, is dropped and counted)."""

from __future__ import annotations

import dataclasses
import random

import orjson
from confluent_kafka import Consumer, Producer

from consumer import metrics
from consumer.config import ConsumerSection, ConsumerSettings
from consumer.dead_letters import DeadLetterWriter
from consumer.service import ConsumerService
from levydrift.commands.topics import create_topics
from levydrift.kafka import admin_client
from levydrift.kafka.transactions import TransactionAborted, TransactionalOutput, producer_overrides
from levydrift.settings import KafkaSettings, MetricsSettings, TopicSettings
from levydrift.simulator import LevySimulator, SimulatorConfig
from schemas.dead_letter import MAX_DEAD_LETTER_BYTES, dead_letter, source_of
from schemas.errors import Reason, Rejection
from tests.consumer.harness import committed_total
from tests.kafka_helpers import create_topic, read_all, scratch_dir

GOOD = 1200


def project_topics(bootstrap: str, unique: str) -> TopicSettings:
    """Topics made as `levydrift topics create` makes them, under unique names."""
    topics = TopicSettings(records=f"rec-{unique}", dead_letters=f"dlq-{unique}",
                           drift_events=f"drift-{unique}", model_versions=f"versions-{unique}",
                           detector_state=f"state-{unique}", labels=f"labels-{unique}",
                           join_changelog=f"changelog-{unique}", records_partitions=1)
    create_topics(admin_client(KafkaSettings(bootstrap_servers=bootstrap)), topics, 1, 30)
    return topics


def settings_for(bootstrap: str, topics: TopicSettings, group: str) -> ConsumerSettings:
    return ConsumerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=topics,
        consumer=ConsumerSection(group_id=group, instance_id="solo", batch_size=400,
                                 checkpoint_interval_s=0.2, state_dir=scratch_dir(group)),
        metrics=MetricsSettings(port=0))


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes, list]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "message.max.bytes": 2_000_000})
    for key, value, headers in messages:
        producer.produce(topic, key=key, value=value, headers=headers)
        producer.poll(0)
    assert producer.flush(60) == 0


def good_records(count: int) -> list[tuple[bytes, bytes, list]]:
    return [(record["parcel_id"].encode(), orjson.dumps(record), [])
            for record in LevySimulator(SimulatorConfig(seed=3)).records(0, count)]


def run_to_end(settings: ConsumerSettings, total: int) -> ConsumerService:
    """Until ``total`` records are committed: processed is not enough where a transaction
    aborts (a refused dead letter) and its records are replayed."""
    service = ConsumerService(settings)
    service.run(stop_when=lambda s: sum(m.committed.next_offset for m in s.monitors.values()
                                        if m.committed is not None) >= total)
    return service


def incomplete(form: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "levydrift_consumer_dead_letters_incomplete_total", {"form": form}) or 0.0


def test_oversized_records_are_dead_lettered_as_bounded_copies(kafka_bootstrap: str,
                                                               unique: str) -> None:
    topics = project_topics(kafka_bootstrap, unique)
    huge_value = b'{"record_id": "' + b"x" * 1_000_000 + b'"}' + b" " * 83  # 1,000,100 bytes
    assert len(huge_value) == 1_000_100
    messages = good_records(GOOD)
    messages[100] = (b"P-huge-value", huge_value, [("source-system", b"assessor-7")])
    messages[500] = (b"k" * 600_000, b"{not json", [])
    messages[900] = (b"P-huge-header", b"{not json", [("trace", b"t" * 600_000)])
    produce(kafka_bootstrap, topics.records, messages)
    truncated_before = incomplete("truncated")

    run_to_end(settings_for(kafka_bootstrap, topics, f"g-{unique}"), GOOD)

    letters = {source_of(m.headers()).offset: m
               for m in read_all(kafka_bootstrap, topics.dead_letters)}
    assert sorted(letters) == [100, 500, 900]
    for letter in letters.values():
        size = (len(letter.key() or b"") + len(letter.value() or b"")
                + sum(len(name) + len(data or b"") for name, data in letter.headers()))
        assert size <= MAX_DEAD_LETTER_BYTES
    big = source_of(letters[100].headers())
    assert (big.reason, big.truncated, big.original_value_bytes) == ("too_large", ("value",),
                                                                     1_000_100)
    assert huge_value.startswith(letters[100].value())
    assert letters[100].key() == b"P-huge-value"
    assert ("source-system", b"assessor-7") in letters[100].headers()
    assert source_of(letters[500].headers()).truncated == ("key",)
    assert letters[500].value() == b"{not json"
    assert source_of(letters[900].headers()).truncated == ("headers",)
    assert incomplete("truncated") - truncated_before >= 3


def test_a_dead_letter_the_broker_refuses_becomes_headers_only(kafka_bootstrap: str,
                                                               unique: str) -> None:
    """The dead-letter topic takes at most 20 kB per batch: the 30 kB copy is refused in its
    delivery report, the transaction aborts, and the replay sends the headers-only form."""
    topics = dataclasses.replace(project_topics(kafka_bootstrap, unique),
                                 dead_letters=f"small-dlq-{unique}")
    create_topic(kafka_bootstrap, topics.dead_letters, config={"max.message.bytes": "20000"})
    messages = good_records(GOOD)
    noise = random.Random(unique).randbytes(30_000)  # incompressible: lz4 cannot shrink it
    messages[300] = (b"P-big", b"{" + noise, [("source-system", b"assessor-7")])
    messages[1000] = (b"P-small", b"{not json", [])
    produce(kafka_bootstrap, topics.records, messages)
    pointer_before = incomplete("pointer")

    run_to_end(settings_for(kafka_bootstrap, topics, f"g-{unique}"), GOOD)

    letters = read_all(kafka_bootstrap, topics.dead_letters)
    sources = sorted(source_of(m.headers()).offset for m in letters)
    assert sources == [300, 1000], "each dead letter exactly once"
    [big] = [m for m in letters if source_of(m.headers()).offset == 300]
    assert (big.key(), big.value()) == (None, None)
    source = source_of(big.headers())
    assert source.truncated == ("key", "value", "headers")
    assert source.original_value_bytes == 30_001
    assert incomplete("pointer") - pointer_before >= 1
    assert committed_total(kafka_bootstrap, f"g-{unique}", topics.records, 1) == GOOD


def write_and_commit(bootstrap: str, unique: str, topic: str, letters: list,
                     **client: object) -> int:
    """Produce ``letters`` through a writer and commit the way the service does: after an
    aborted transaction, produce them again. Returns how many attempts were aborted."""
    output = TransactionalOutput(lambda: Producer({
        "bootstrap.servers": bootstrap, **producer_overrides(f"tx-{unique}", 30), **client}), 30)
    output.init()
    writer = DeadLetterWriter(output, topic)
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{unique}"})
    try:
        for aborted in range(3):
            for dead in letters:
                writer.produce(dead)
            try:
                output.commit([], group)
                return aborted
            except TransactionAborted:
                continue
        raise AssertionError("still aborting after two step-downs")
    finally:
        group.close()


def letter(offset: int, size: int) -> tuple:
    value = b"{" + random.Random(offset).randbytes(size)
    return dead_letter(b"P-1", value, [("source-system", b"assessor-7")],
                       Rejection(Reason.NOT_JSON, None, "bad"), "levy.records", 0, offset,
                       now_ms=0)


def test_a_dead_letter_the_client_refuses_steps_down_at_once(kafka_bootstrap: str,
                                                             unique: str) -> None:
    topic = f"dlq-{unique}"
    create_topic(kafka_bootstrap, topic)
    aborted = write_and_commit(kafka_bootstrap, unique, topic, [letter(7, 50_000), letter(8, 100)],
                               **{"message.max.bytes": 10_000})
    assert aborted == 0  # refused before it was queued: nothing to abort
    letters = {source_of(m.headers()).offset: m for m in read_all(kafka_bootstrap, topic)}
    assert source_of(letters[7].headers()).truncated == ("key", "value", "headers")
    assert letters[7].value() is None
    assert letters[8].value() == letter(8, 100)[1]


def test_a_dead_letter_refused_in_every_form_is_dropped_and_counted(kafka_bootstrap: str,
                                                                    unique: str) -> None:
    """The client refuses the copy, the broker (100-byte limit) the headers-only form."""
    topic = f"dlq-{unique}"
    create_topic(kafka_bootstrap, topic, config={"max.message.bytes": "100"})
    dropped_before = incomplete("dropped")
    aborted = write_and_commit(kafka_bootstrap, unique, topic, [letter(9, 5000)],
                               **{"message.max.bytes": 1000})
    assert aborted == 1
    assert incomplete("dropped") - dropped_before == 1
    assert read_all(kafka_bootstrap, topic) == []
