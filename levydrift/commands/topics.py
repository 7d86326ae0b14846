"""``levydrift topics create``: create (or converge) the project's topics with explicit settings."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from levydrift import settings as settings_module
from levydrift.errors import BrokerUnavailableError
from levydrift.kafka import admin_client, ensure_reachable
from levydrift.logs import configure as configure_logging
from levydrift.settings import AdminSettings, TopicSettings

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    # False for compacted topics read as each key's latest value: a key that moved partition
    # would leave its older value behind, and a reader could take that one.
    grows: bool = True


def topic_specs(topics: TopicSettings) -> list[TopicSpec]:
    """The project's topics and the settings each must have."""
    compacted = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1",
                 "segment.ms": str(HOUR_MS), "min.compaction.lag.ms": "0"}
    return [
        TopicSpec(topics.records, topics.records_partitions,
                  {"cleanup.policy": "delete",
                   "retention.ms": str(int(topics.records_retention_hours * HOUR_MS))}),
        TopicSpec(topics.dead_letters, topics.other_partitions,
                  {"cleanup.policy": "delete",
                   "retention.ms": str(int(topics.dead_letters_retention_hours * HOUR_MS))}),
        # Drift events explain why each model version exists: keep them.
        TopicSpec(topics.drift_events, topics.other_partitions,
                  {"cleanup.policy": "delete", "retention.ms": "-1"}),
        TopicSpec(topics.model_versions, topics.other_partitions, compacted, grows=False),
        # A snapshot per partition every checkpoint: small segments keep the uncompacted tail,
        # which a restore reads, short.
        TopicSpec(topics.detector_state, topics.other_partitions,
                  {**compacted, "segment.ms": str(HOUR_MS // 6),
                   "segment.bytes": str(16 * 1024 * 1024)}, grows=False),
        # Co-partitioned with records: partition p's labels are joined by the owner of p.
        TopicSpec(topics.labels, topics.records_partitions,
                  {"cleanup.policy": "delete",
                   "retention.ms": str(int(topics.records_retention_hours * HOUR_MS))}),
        # One partition per records partition, written only by its owner; the source of truth
        # for each partition's pending predictions (the local RocksDB is a cache of it). It is
        # written and read by partition number, never by key: it may grow.
        TopicSpec(topics.join_changelog, topics.records_partitions, compacted),
    ]


def create_topics(admin: AdminClient, topics: TopicSettings, replication_factor: int,
                  timeout_s: float) -> dict[str, str]:
    """Create missing topics; bring existing ones to the specified configs and partition
    counts (adding partitions; Kafka removes none). Returns ``{topic: what was done}``:
    "created", "exists", or what changed. Idempotent."""
    specs = topic_specs(topics)
    futures = admin.create_topics(
        [NewTopic(spec.name, spec.partitions, replication_factor, config=spec.config)
         for spec in specs],
        operation_timeout=timeout_s, request_timeout=timeout_s)
    outcome: dict[str, str] = {}
    existing: list[TopicSpec] = []
    for spec in specs:
        try:
            futures[spec.name].result()
            outcome[spec.name] = "created"
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerUnavailableError(
                    f"creating topic {spec.name} failed: {error.args[0].str()}") from None
            outcome[spec.name] = "exists"
            existing.append(spec)
    if existing:
        _converge_configs(admin, existing, timeout_s)
        outcome.update(_converge_partitions(admin, existing, timeout_s))
    return outcome


def _converge_partitions(admin: AdminClient, specs: list[TopicSpec],
                         timeout_s: float) -> dict[str, str]:
    """Add partitions where a topic that may grow has fewer than its spec, all in one request,
    so that co-partitioned topics (records, labels, changelog) differ for as short a time as
    can be. Any other difference is left and said so."""
    metadata = admin.list_topics(timeout=timeout_s).topics
    counts = {spec.name: len(metadata[spec.name].partitions) for spec in specs}
    outcome = {spec.name: _left_as_is(spec, counts[spec.name])
               for spec in specs if counts[spec.name] != spec.partitions}
    grow = [spec for spec in specs if spec.grows and counts[spec.name] < spec.partitions]
    if not grow:
        return outcome
    futures = admin.create_partitions([NewPartitions(spec.name, spec.partitions)
                                       for spec in grow], request_timeout=timeout_s)
    for spec in grow:
        try:
            futures[spec.name].result()
        except KafkaException as error:
            raise BrokerUnavailableError(
                f"adding partitions to topic {spec.name} failed: {error.args[0].str()}"
            ) from None
        outcome[spec.name] = f"grew from {counts[spec.name]} to {spec.partitions} partitions"
    return outcome


def _left_as_is(spec: TopicSpec, count: int) -> str:
    held = f"{count} partition{'' if count == 1 else 's'}"
    if count > spec.partitions:
        return f"exists ({held}, more than the {spec.partitions} configured: Kafka removes none)"
    return (f"exists ({held}, not raised to {spec.partitions}: its readers take each key's "
            "latest value, and keys would move partition)")


def _converge_configs(admin: AdminClient, specs: list[TopicSpec], timeout_s: float) -> None:
    resources = [
        ConfigResource(ConfigResource.Type.TOPIC, spec.name, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in spec.config.items()])
        for spec in specs]
    for resource, future in admin.incremental_alter_configs(
            resources, request_timeout=timeout_s).items():
        try:
            future.result()
        except KafkaException as error:
            raise BrokerUnavailableError(
                f"updating the settings of topic {resource.name} failed: {error.args[0].str()}"
            ) from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "topics", help="create the project's Kafka topics",
        description="Manage the project's Kafka topics (names and layout from the [topics] "
                    "settings).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    create = actions.add_parser(
        "create", help="create missing topics, converge existing ones",
        description="Create every topic the services use (records, dead letters, drift events, "
                    "model versions, detector state, labels, join changelog) where missing; "
                    "existing ones get the configured retention, and partitions up to the "
                    "configured count (Kafka removes none). Safe to run again.")
    create.set_defaults(handler=_run_create)


def _run_create(arguments: argparse.Namespace) -> int:
    config = settings_module.load(AdminSettings, arguments.config)
    configure_logging(config.logging.level)
    admin = admin_client(config.kafka)
    ensure_reachable(admin, config.kafka)
    outcome = create_topics(admin, config.topics, config.topics.replication_factor,
                            config.kafka.request_timeout_s)
    for name, state in outcome.items():
        print(f"{name}: {state}")
    return 0
