"""Kafka I/O shared by every service: client configs, reachability, admin, and reading a
topic's partitions to a position (``read_ranges``). The transactional output the services
write through is ``levydrift.kafka.transactions``."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from levydrift.errors import BrokerUnavailableError, MissingTopicError
from levydrift.kafka.messages import offset_of, partition_of
from levydrift.settings import KafkaSettings


def admin_client(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(kafka.client_config(**{"logger": _quiet_logger()}))


def partition_count(client: Consumer | Producer, topic: str, timeout_s: float) -> int:
    """How many partitions ``topic`` has (0: none known), asked of the brokers through
    ``client``, whose own view of the topic is refreshed by the answer. Raises
    ``KafkaException`` when no broker answers."""
    found = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    return 0 if found is None or found.error is not None else len(found.partitions)


# Throughput tuning: defaults, which the same property under kafka.client replaces (latency
# against batching is the deployment's call). Idempotence and acks=all are not: exactly-once
# needs them, so they override whatever kafka.client says.
PRODUCER_TUNING: Final[Mapping[str, Any]] = MappingProxyType(
    {"linger.ms": 5, "compression.type": "lz4"})


def producer_config(kafka: KafkaSettings, tuning: Mapping[str, Any] = PRODUCER_TUNING,
                    **overrides: Any) -> dict[str, Any]:
    """An idempotent producer's configuration: ``tuning`` under kafka.client, then what the
    caller needs (``transactional.id`` where it writes exactly once)."""
    return kafka.client_config(tuning, **{"enable.idempotence": True, "acks": "all",
                                          "logger": _quiet_logger(), **overrides})


# librdkafka stops fetching a partition whose local queue passed its thresholds (100,000
# messages by default) and looks again only after this backoff, 1 s by default. A consumer
# that drains the queue in under a second (the service does at ~100k records/s) then waits
# on an empty queue for the rest of it: 1.56x the service's steady rate from a backlog
# (bench/RESULTS-consumer.md). The queue's thresholds still bound its memory; it is now
# kept full (~40 MiB more resident at the default 100,000 messages).
# A default: the same property under kafka.client wins.
FETCH_QUEUE_BACKOFF_MS: Final = 100


def consumer_config(kafka: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Manual commits and read-committed isolation: the project's consumers never auto-commit."""
    return kafka.client_config({"fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS},
                               **{"group.id": group_id, "enable.auto.commit": False,
                                  "enable.auto.offset.store": False,
                                  "auto.offset.reset": "earliest",
                                  "isolation.level": "read_committed",
                                  "logger": _quiet_logger(), **overrides})


def ensure_reachable(admin: AdminClient, kafka: KafkaSettings,
                     topics: Iterable[str] = ()) -> None:
    """Raise ``BrokerUnavailableError`` unless the cluster answers a metadata request, and
    ``MissingTopicError`` if any of ``topics`` does not exist."""
    try:
        metadata = admin.list_topics(timeout=kafka.request_timeout_s)
    except KafkaException as error:
        raise BrokerUnavailableError(
            f"Kafka at {kafka.bootstrap_servers} did not answer within "
            f"{kafka.request_timeout_s:g}s ({error.args[0].str() if error.args else error}); "
            "start it with deploy/kafka/local-kafka start or set LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS"
        ) from None
    if not metadata.brokers:
        raise BrokerUnavailableError(f"Kafka at {kafka.bootstrap_servers} lists no brokers")
    missing = sorted(set(topics) - set(metadata.topics))
    if missing:
        raise MissingTopicError(f"topic {missing[0]} does not exist on {kafka.bootstrap_servers}; "
                                "create the project's topics with `levydrift topics create`")


def topic_partitions(reader: Consumer, topic: str, timeout_s: float) -> list[int]:
    """The partition numbers of ``topic``, sorted. Raises ``MissingTopicError`` when it does
    not exist (a setting to fix, not an outage to wait out), ``BrokerUnavailableError`` when
    its partitions cannot be listed."""
    try:
        metadata = reader.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as error:
        raise BrokerUnavailableError(f"listing {topic}: {error.args[0].str()}") from None
    if metadata is None or (metadata.error is not None
                            and metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
        raise MissingTopicError(f"topic {topic} does not exist; create the project's topics "
                                "with `levydrift topics create`")
    if metadata.error is not None or not metadata.partitions:
        raise BrokerUnavailableError(f"topic {topic} has no partitions available")
    return sorted(metadata.partitions)


def watermarks(reader: Consumer, topic: str, timeout_s: float,
               only: Collection[int] | None = None) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}``: each partition's first offset and the offset after its
    last (the high watermark; under read-committed, aborted records below it never arrive).
    ``only``: ask just those of the topic's partitions (one request each), leaving out any the
    topic does not have; the topic is listed either way, so a long-lived reader sees
    partitions added since it last looked."""
    try:
        return {partition: reader.get_watermark_offsets(TopicPartition(topic, partition),
                                                        timeout=timeout_s)
                for partition in topic_partitions(reader, topic, timeout_s)
                if only is None or partition in only}
    except KafkaException as error:
        raise BrokerUnavailableError(f"reading {topic}'s offsets: {error.args[0].str()}") \
            from None


# How ``read_ranges`` consumes: up to READ_BATCH messages per call, waiting at most READ_WAIT_S.
# consume() returns with that many or at its timeout, so a range's last, partial batch waits
# the timeout out (and a range ending on a transaction marker, which is never delivered, always
# does): short, as the read ends on the reader's positions anyway.
READ_BATCH: Final = 500
READ_WAIT_S: Final = 0.02


def read_ranges(reader: Consumer, topic: str, ranges: Mapping[int, tuple[int, int]], *,
                timeout_s: float, idle: bool = False, release: bool = False
                ) -> Iterator[Message]:
    """Every message of ``topic`` the reader may see with ``first <= offset < stop``, for each
    ``partition: (first, stop)`` of ``ranges`` (the reader is assigned exactly those, and
    stays so unless ``release``: then it is unassigned once the read ends, and prefetches no
    further; a reader that reads further back next would fetch those records again). A fetch
    already in flight is not called back: a reader whose next request must not wait behind it
    needs a short fetch.wait.max.ms (a broker answers a connection's requests in order).

    The stopping rule: a partition is done once the reader's *position* reaches ``stop``, not
    when offset ``stop - 1`` arrives, because aborted transactions, their markers and compacted
    gaps are never delivered. ``timeout_s`` bounds the whole read or, with ``idle``, the time
    without a message. Raises ``BrokerUnavailableError`` on a read error or a timeout (an
    outage, or an open transaction holding the stable offset back)."""
    pending = {partition: stop for partition, (first, stop) in ranges.items() if stop > first}
    assigned = [TopicPartition(topic, partition) for partition in pending]
    try:
        # Empty ranges too: a reader that goes on consuming sees what arrives there later.
        reader.assign([TopicPartition(topic, p, first) for p, (first, _) in ranges.items()])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"reading {topic}: nothing {'arrived' if idle else 'finished'} within "
                    f"{timeout_s:g}s (partitions {sorted(pending)} unfinished)")
            batch = reader.consume(READ_BATCH, READ_WAIT_S)
            if batch and idle:
                deadline = time.monotonic() + timeout_s
            yield from _in_range(batch, pending, topic)
            for position in reader.position(assigned):
                if position.offset >= pending.get(position.partition, 0):
                    pending.pop(position.partition, None)
        if release:
            reader.unassign()
    except KafkaException as error:
        raise BrokerUnavailableError(f"reading {topic}: {error.args[0].str()}") from None


def _in_range(batch: list[Message], pending: dict[int, int], topic: str) -> Iterator[Message]:
    for message in batch:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                raise BrokerUnavailableError(
                    f"reading {topic}[{message.partition()}]: {error.str()}")
            continue
        stop = pending.get(partition_of(message))
        if stop is not None and offset_of(message) < stop:
            yield message


def read_to_end(reader: Consumer, topic: str, timeout_s: float) -> Iterator[Message]:
    """Every message of ``topic`` (all partitions) from its start to the end it has when the
    read starts (``read_ranges`` from each partition's low to its high watermark)."""
    ranges = watermarks(reader, topic, timeout_s)
    yield from read_ranges(reader, topic, ranges, timeout_s=timeout_s)


def _quiet_logger() -> Any:
    """librdkafka logs through Python logging (JSON lines) instead of raw stderr."""
    return logging.getLogger("librdkafka")
