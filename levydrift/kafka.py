"""Kafka client plumbing shared by every service: client configs, reachability, admin."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from levydrift.errors import BrokerUnavailableError, MissingTopicError
from levydrift.settings import KafkaSettings


def admin_client(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(kafka.client_config(**{"logger": _quiet_logger()}))


def producer_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Idempotent producer defaults; callers add ``transactional.id`` where they need EOS."""
    return kafka.client_config(**{"enable.idempotence": True, "acks": "all",
                                  "linger.ms": 5, "compression.type": "lz4",
                                  "logger": _quiet_logger(), **overrides})


def consumer_config(kafka: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Manual commits and read-committed isolation: the project's consumers never auto-commit."""
    return kafka.client_config(**{"group.id": group_id, "enable.auto.commit": False,
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


def read_to_end(reader: Consumer, topic: str, timeout_s: float) -> Iterator[Message]:
    """Every message of ``topic`` (all partitions) from its start to the end it has when the
    read starts. It stops on the reader's position, not on a last offset, so aborted
    transactions, their markers and compacted gaps never leave it waiting. Raises
    ``BrokerUnavailableError`` on a read error or after ``timeout_s``."""
    try:
        metadata = reader.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise MissingTopicError(f"topic {topic} does not exist; create the project's "
                                    "topics with `levydrift topics create`")
        ends = {}
        for partition in metadata.partitions:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, partition),
                                                     timeout=timeout_s)
            if high > low:
                ends[partition] = high
        assignment = [TopicPartition(topic, partition, 0) for partition in ends]
        reader.assign([TopicPartition(topic, partition, -2) for partition in ends])  # -2: start
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(f"reading {topic} to its end took over "
                                             f"{timeout_s:g}s")
            for message in reader.consume(500, 0.2):
                if message.error() is None:
                    yield message
                elif message.error().code() != KafkaError._PARTITION_EOF:
                    raise BrokerUnavailableError(f"reading {topic}: {message.error().str()}")
            for position in reader.position(assignment):
                if position.offset >= ends.get(position.partition, 0):
                    ends.pop(position.partition, None)
    except KafkaException as error:
        raise BrokerUnavailableError(f"reading {topic}: {error.args[0].str()}") from None


def _quiet_logger() -> Any:
    """librdkafka logs through Python logging (JSON lines) instead of raw stderr."""
    return logging.getLogger("librdkafka")
