"""Proof that the broker is a real Kafka: idempotent producer, consumer groups with committed
offsets, and transactions whose aborted writes a read_committed consumer never sees."""

from __future__ import annotations

import subprocess
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from tests.kafka_helpers import create_topic, read_all


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value=value, key=value)
    assert producer.flush(30) == 0


def consume(consumer: Consumer, count: int) -> list[bytes]:
    values: list[bytes] = []
    for _ in range(200):
        if len(values) >= count:
            break
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            values.append(message.value())
    return values


def group_consumer(bootstrap: str, group: str, topic: str) -> Consumer:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    return consumer


def test_idempotent_producer_and_group_resume_from_committed_offset(
        kafka_bootstrap: str, unique: str) -> None:
    topic, group = f"broker-resume-{unique}", f"group-{unique}"
    create_topic(kafka_bootstrap, topic)
    values = [f"record-{i}".encode() for i in range(10)]
    produce(kafka_bootstrap, topic, values)

    first = group_consumer(kafka_bootstrap, group, topic)
    assert consume(first, 4)[:4] == values[:4]
    first.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    first.close()

    second = group_consumer(kafka_bootstrap, group, topic)
    assert consume(second, 6) == values[4:]
    committed = second.committed([TopicPartition(topic, 0)], timeout=10)
    assert committed[0].offset == 4
    second.close()


def test_aborted_transaction_is_invisible_to_read_committed(
        kafka_bootstrap: str, unique: str) -> None:
    topic = f"broker-txn-{unique}"
    create_topic(kafka_bootstrap, topic)
    producer = Producer({"bootstrap.servers": kafka_bootstrap,
                         "transactional.id": f"txn-{unique}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed")
    producer.commit_transaction(30)

    committed_view = [m.value() for m in read_all(kafka_bootstrap, topic, "read_committed")]
    uncommitted_view = [m.value() for m in read_all(kafka_bootstrap, topic, "read_uncommitted")]
    assert committed_view == [b"committed"]
    assert uncommitted_view == [b"aborted", b"committed"]


def test_topics_create_is_idempotent_with_compacted_topics(
        kafka_bootstrap: str, unique: str) -> None:
    names = {
        "LEVYDRIFT_TOPICS_RECORDS": f"records-{unique}",
        "LEVYDRIFT_TOPICS_DEAD_LETTERS": f"dlq-{unique}",
        "LEVYDRIFT_TOPICS_DRIFT_EVENTS": f"drift-{unique}",
        "LEVYDRIFT_TOPICS_MODEL_VERSIONS": f"versions-{unique}",
        "LEVYDRIFT_TOPICS_DETECTOR_STATE": f"state-{unique}",
        "LEVYDRIFT_TOPICS_LABELS": f"labels-{unique}",
        "LEVYDRIFT_TOPICS_JOIN_CHANGELOG": f"changelog-{unique}",
    }
    env = {"LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "LEVYDRIFT_TOPICS_RECORDS_PARTITIONS": "3", "PATH": "/usr/bin:/bin", **names}
    command = [sys.executable, "-m", "levydrift.cli", "topics", "create"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout.count(": created") == 7
    assert second.stdout.count(": exists") == 7

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    metadata = admin.list_topics(timeout=10)
    for co_partitioned in ("RECORDS", "LABELS", "JOIN_CHANGELOG"):
        assert len(metadata.topics[names[f"LEVYDRIFT_TOPICS_{co_partitioned}"]].partitions) == 3
    policies, retention_days = {}, {}
    for name in names.values():
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        configs = admin.describe_configs([resource])[resource].result(timeout=10)
        policies[name] = configs["cleanup.policy"].value
        retention_days[name] = int(configs["retention.ms"].value) / 86_400_000
    # Records and labels outlive the label horizon (548 days): the trainer reads the records
    # of the labels it trains on.
    assert retention_days[names["LEVYDRIFT_TOPICS_RECORDS"]] == 580
    assert retention_days[names["LEVYDRIFT_TOPICS_LABELS"]] == 580
    assert policies[names["LEVYDRIFT_TOPICS_MODEL_VERSIONS"]] == "compact"
    assert policies[names["LEVYDRIFT_TOPICS_DETECTOR_STATE"]] == "compact"
    assert policies[names["LEVYDRIFT_TOPICS_JOIN_CHANGELOG"]] == "compact"
    assert policies[names["LEVYDRIFT_TOPICS_LABELS"]] == "delete"
    assert policies[names["LEVYDRIFT_TOPICS_RECORDS"]] == "delete"


def test_topics_create_adds_partitions_where_they_may_grow(kafka_bootstrap: str,
                                                          unique: str) -> None:
    """Raising the partition settings and running `topics create` again adds partitions to
    the co-partitioned records, labels and changelog together, and to the event streams;
    the compacted topics read as each key's latest value keep theirs and say why."""
    names = {f"LEVYDRIFT_TOPICS_{name}": f"{name.lower()}-{unique}" for name in (
        "RECORDS", "DEAD_LETTERS", "DRIFT_EVENTS", "MODEL_VERSIONS", "DETECTOR_STATE",
        "LABELS", "JOIN_CHANGELOG")}
    env = {"LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "PATH": "/usr/bin:/bin",
           **names}
    command = [sys.executable, "-m", "levydrift.cli", "topics", "create"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60, env={
        **env, "LEVYDRIFT_TOPICS_RECORDS_PARTITIONS": "2"})
    assert first.returncode == 0, first.stderr
    grown = subprocess.run(command, capture_output=True, text=True, timeout=60, env={
        **env, "LEVYDRIFT_TOPICS_RECORDS_PARTITIONS": "3",
        "LEVYDRIFT_TOPICS_OTHER_PARTITIONS": "2"})
    assert grown.returncode == 0, grown.stderr
    said = dict(line.split(": ", 1) for line in grown.stdout.splitlines())
    for name in ("RECORDS", "LABELS", "JOIN_CHANGELOG"):
        assert said[names[f"LEVYDRIFT_TOPICS_{name}"]] == "grew from 2 to 3 partitions"
    for name in ("DEAD_LETTERS", "DRIFT_EVENTS"):
        assert said[names[f"LEVYDRIFT_TOPICS_{name}"]] == "grew from 1 to 2 partitions"
    for name in ("MODEL_VERSIONS", "DETECTOR_STATE"):
        assert said[names[f"LEVYDRIFT_TOPICS_{name}"]].startswith(
            "exists (1 partition, not raised to 2: its readers take each key's latest value")
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    counts = {name: len(metadata.topics[topic].partitions) for name, topic in names.items()}
    assert counts == {**dict.fromkeys(names, 2), "LEVYDRIFT_TOPICS_RECORDS": 3,
                      "LEVYDRIFT_TOPICS_LABELS": 3, "LEVYDRIFT_TOPICS_JOIN_CHANGELOG": 3,
                      "LEVYDRIFT_TOPICS_MODEL_VERSIONS": 1,
                      "LEVYDRIFT_TOPICS_DETECTOR_STATE": 1}
