"""The join store's changelog on a real broker: what a store publishes transactionally (aborted
transactions included) restores, read_committed, into a fresh store equal to it; a store with
an older recorded position catches up from there; a position the topic does not have wipes the
store first; damaged messages are skipped and counted.

``python -m tests.consumer.test_join_changelog [entries]`` prints restore figures (broker from
LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS, default 127.0.0.1:9092)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.join_store import (
    JoinStore,
    JoinStoreError,
    PendingPrediction,
    changelog_prefix,
    encode_entry,
    restore_from_changelog,
)
from tests.consumer.test_join_store import history_step, state
from tests.kafka_helpers import create_topic

PARTITION = 1  # of two: the other holds another store's changelog, never read
COMPACTED = {"cleanup.policy": "compact"}


class Changelog:
    """One store's changelog partition, written as the checkpoint writes it: a transaction per
    commit, the store committed after Kafka with the next offset."""

    def __init__(self, bootstrap: str, topic: str, partition: int = PARTITION) -> None:
        self.topic, self.partition = topic, partition
        self.producer = Producer({"bootstrap.servers": bootstrap,
                                  "transactional.id": f"join-{uuid.uuid4().hex[:8]}"})
        self.producer.init_transactions(30)

    def publish(self, store: JoinStore, abort: bool = False) -> None:
        offsets: list[int] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            assert error is None, error
            offsets.append(message.offset())  # type: ignore[arg-type]

        self.producer.begin_transaction()
        for key, value in store.changes():
            self.producer.produce(self.topic, key=key, value=value, partition=self.partition,
                                  on_delivery=delivered)
        assert self.producer.flush(30) == 0
        if abort:
            self.producer.abort_transaction(30)
            store.discard()
            return
        self.producer.commit_transaction(30)
        store.commit(max(offsets) + 1 if offsets else None)


def reader(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "group.id": f"restore-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False}


def write_history(bootstrap: str, topic: str, store: JoinStore, steps: range) -> None:
    changelog = Changelog(bootstrap, topic)
    for step in steps:
        if step == 5:  # first an aborted attempt that differs from what is then committed
            store.put("aborted", PendingPrediction(1, 50_000, 1, 1.0, ()))
            history_step(store, step + 100)
            changelog.publish(store, abort=True)
        history_step(store, step)
        changelog.publish(store)


def high_watermark(bootstrap: str, topic: str) -> int:
    consumer = Consumer(reader(bootstrap))
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, PARTITION), timeout=10)[1]
    finally:
        consumer.close()


@pytest.fixture
def topic(kafka_bootstrap: str, unique: str) -> str:
    name = f"join-changelog-{unique}"
    create_topic(kafka_bootstrap, name, partitions=2, config=COMPACTED)
    other = Producer({"bootstrap.servers": kafka_bootstrap})  # another store's partition
    other.produce(name, key=b"s1-0", value=b"not this partition", partition=0)
    assert other.flush(30) == 0
    return name


def test_restore_gives_the_store_that_wrote_the_changelog(
        kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    with JoinStore(tmp_path / "writer") as writer:
        write_history(kafka_bootstrap, topic, writer, range(1, 9))
        expected = state(writer)
    with JoinStore(tmp_path / "fresh") as fresh:
        stats = restore_from_changelog(fresh, reader(kafka_bootstrap), topic, PARTITION, 30)
        assert state(fresh)[:2] == expected[:2]
        assert fresh.get("aborted") is None and fresh.get("s105-0") is None
        assert (stats.start_offset, stats.wiped, stats.skipped) == (0, True, {})
        assert fresh.changelog_position() == stats.end_offset == high_watermark(
            kafka_bootstrap, topic)
        assert stats.replayed > 8 * 2000  # the aborted transaction's are not among them
        again = restore_from_changelog(fresh, reader(kafka_bootstrap), topic, PARTITION, 30)
        assert (again.start_offset, again.replayed, again.wiped) == (stats.end_offset, 0, False)
        assert state(fresh)[:2] == expected[:2]


def test_restore_from_a_stale_position_catches_up(
        kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    writer = JoinStore(tmp_path / "writer")
    write_history(kafka_bootstrap, topic, writer, range(1, 4))
    with JoinStore(tmp_path / "stale") as stale:
        restore_from_changelog(stale, reader(kafka_bootstrap), topic, PARTITION, 30)
        recorded = stale.changelog_position()
        assert recorded is not None
    write_history(kafka_bootstrap, topic, writer, range(4, 9))
    expected = state(writer)
    writer.close()
    with JoinStore(tmp_path / "stale") as stale:
        stats = restore_from_changelog(stale, reader(kafka_bootstrap), topic, PARTITION, 30)
        assert (stats.start_offset, stats.wiped) == (recorded, False)
        assert state(stale)[:2] == expected[:2]
        stale.commit(recorded // 2)  # an older position: replaying from it is safe
        stats = restore_from_changelog(stale, reader(kafka_bootstrap), topic, PARTITION, 30)
        assert (stats.start_offset, stats.wiped) == (recorded // 2, False)
        assert state(stale)[:2] == expected[:2]


def test_a_position_past_the_end_wipes_the_store_first(
        kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    with JoinStore(tmp_path / "writer") as writer:
        write_history(kafka_bootstrap, topic, writer, range(1, 3))
        expected = state(writer)
    with JoinStore(tmp_path / "other") as other:  # the topic was recreated under it
        other.put("from-the-old-topic", PendingPrediction(1, 20_000, 1, 1.0, ()))
        other.commit(10**9)
        stats = restore_from_changelog(other, reader(kafka_bootstrap), topic, PARTITION, 30)
        assert (stats.start_offset, stats.wiped) == (0, True)
        assert state(other)[:2] == expected[:2]


def test_a_position_below_the_low_watermark_wipes_the_store_first(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    topic = f"join-changelog-deleted-{unique}"
    create_topic(kafka_bootstrap, topic, partitions=2,
                 config={"cleanup.policy": "compact,delete"})
    with JoinStore(tmp_path / "writer") as writer:
        write_history(kafka_bootstrap, topic, writer, range(1, 3))
        middle = writer.changelog_position()
        assert middle is not None
        write_history(kafka_bootstrap, topic, writer, range(3, 5))
    with JoinStore(tmp_path / "stale") as stale:
        stale.put("s1-0", PendingPrediction(1, 10_000, 1, 1.0, ()))
        stale.commit(middle // 2)
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        done = admin.delete_records([TopicPartition(topic, PARTITION, middle)],
                                    operation_timeout=30)
        for future in done.values():
            future.result()
        stats = restore_from_changelog(stale, reader(kafka_bootstrap), topic, PARTITION, 30)
        assert (stats.start_offset, stats.wiped) == (middle, True)
        assert stale.get("s1-0") is None  # all its messages are below the new low watermark
        assert stale.get("s4-0") is not None


def test_damaged_messages_are_skipped_and_counted(
        kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    good = encode_entry(PendingPrediction(1, 10_000, 1, 1.0, ("Cook",)))
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for key, value in [(b"kept", good), (b"damaged", good), (b"damaged", good[:-3]),
                       (b"\xff\xfe", good), (b"versioned", b"\x07" + good[1:]),
                       (b"k" * 300, good)]:
        producer.produce(topic, key=key, value=value, partition=PARTITION)
    assert producer.flush(30) == 0
    with JoinStore(tmp_path / "p") as store:
        stats = restore_from_changelog(store, reader(kafka_bootstrap), topic, PARTITION, 30)
        assert stats.replayed == 2
        assert stats.skipped == {"truncated": 1, "key": 2, "version": 1}
        assert state(store)[0] == {"kept": good}


def test_a_missing_partition_or_topic_is_a_clear_error(
        kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    with JoinStore(tmp_path / "p") as store:
        with pytest.raises(JoinStoreError, match="no partition 7"):
            restore_from_changelog(store, reader(kafka_bootstrap), topic, 7, 30)
        with pytest.raises(JoinStoreError, match="does not exist"):
            restore_from_changelog(store, reader(kafka_bootstrap), f"{topic}-missing", 0, 30)


# --- figures ----------------------------------------------------------------------------------


def bench(bootstrap: str, entries: int = 100_000) -> None:
    """Publish ``entries`` new entries (10k per transaction), then restore them into an empty
    store; prints the seconds and rate."""
    topic = f"join-changelog-bench-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=2, config=COMPACTED)
    with tempfile.TemporaryDirectory() as directory:
        writer = JoinStore(Path(directory) / "writer")
        changelog = Changelog(bootstrap, topic)
        for start in range(0, entries, 10_000):
            count = min(10_000, entries - start)
            writer.put_batch([f"sim-1-{i:010d}" for i in range(start, start + count)],
                             list(range(start, start + count)),
                             [1_700_000_000_000 + i for i in range(start, start + count)],
                             [float(i) for i in range(count)],
                             [("Cook", "residential")] * count, 3)
            changelog.publish(writer)
        writer.close()
        with JoinStore(Path(directory) / "restored") as restored:
            stats = restore_from_changelog(restored, reader(bootstrap), topic, PARTITION, 300)
            size = sum(f.stat().st_size for f in (Path(directory) / "restored").rglob("*"))
        print(f"restore of {stats.replayed} messages: {stats.seconds:.2f} s "
              f"({stats.replayed / stats.seconds:,.0f} msg/s), {size / 2**20:.1f} MiB on disk")
    admin = AdminClient({"bootstrap.servers": bootstrap})  # alive until the delete is done
    for future in admin.delete_topics([topic]).values():
        future.result()


def test_groups_sharing_the_changelog_restore_only_their_own_entries(
        kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for group, record in (("monitor", "r1"), ("monitor|b", "r2"), ("monitor", "r3")):
        value = encode_entry(PendingPrediction(1, 10_000, 1, 1.0, (), joined=group != "monitor"))
        producer.produce(topic, key=changelog_prefix(group) + record.encode(), value=value,
                         partition=PARTITION)
    assert producer.flush(30) == 0
    with JoinStore(tmp_path / "monitor") as store:
        restore_from_changelog(store, reader(kafka_bootstrap), topic, PARTITION, 30,
                               changelog_prefix("monitor"))
        assert sorted(record for record, _ in store.committed_items()) == ["r1", "r3"]
        assert store.changelog_position() == high_watermark(kafka_bootstrap, topic)


if __name__ == "__main__":
    started = time.monotonic()
    bench(os.environ.get("LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
          int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
    print(f"({time.monotonic() - started:.1f} s in all)")
