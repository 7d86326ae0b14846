"""Kafka client plumbing shared by every service: client configs, reachability, admin."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException
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


def _quiet_logger() -> Any:
    """librdkafka logs through Python logging (JSON lines) instead of raw stderr."""
    import logging

    return logging.getLogger("librdkafka")
