"""An error in the middle of a batch commits nothing of it: the open transaction is aborted,
and a restart produces each dead letter exactly once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

import consumer.service as service_module
from consumer.config import ConsumerSection, ConsumerSettings
from consumer.service import ConsumerService
from levydrift.errors import ConfigError
from levydrift.kafka.transactions import FatalKafkaError
from levydrift.settings import KafkaSettings, MetricsSettings, TopicSettings
from levydrift.simulator import LevySimulator, SimulatorConfig
from schemas.dead_letter import source_of
from tests.consumer.harness import Topics
from tests.kafka_helpers import read_all, scratch_dir

PER_PARTITION = 3000
POISON_EVERY = 500


def produce_partitioned(bootstrap: str, topic: str) -> int:
    """Good records with a poison one every POISON_EVERY, on both partitions."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    records = LevySimulator(SimulatorConfig(seed=5)).records(0, 2 * PER_PARTITION)
    poison = 0
    for index, record in enumerate(records):
        value = orjson.dumps(record)
        if index % POISON_EVERY == 7:
            value, poison = b"{poison", poison + 1
        producer.produce(topic, key=b"k", value=value, partition=index % 2)
    assert producer.flush(30) == 0
    return poison


def settings_for(bootstrap: str, topics: Topics, group: str) -> ConsumerSettings:
    return ConsumerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=TopicSettings(**topics.names),
        consumer=ConsumerSection(group_id=group, instance_id="solo", batch_size=400,
                                 checkpoint_interval_s=0.2, state_dir=scratch_dir(group)),
        metrics=MetricsSettings(port=0))


def processed_all(service: ConsumerService) -> bool:
    return sum(m.next_offset for m in service.monitors.values()) >= 2 * PER_PARTITION


def test_an_error_mid_batch_commits_nothing_partial(kafka_bootstrap: str, unique: str,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    topics = Topics(unique, records_partitions=2).create(kafka_bootstrap)
    poison = produce_partitioned(kafka_bootstrap, topics.names["records"])
    group = f"g-{unique}"
    real = service_module.process_partition
    calls = {"dead_letters": 0, "failed": False}

    def fail_on_the_third_dead_letter(monitor, messages, champion, settings, produce):
        """The batch holding the third dead letter fails right after producing it: the
        transaction holds part of a partition's output and none of its offsets."""
        if calls["failed"]:
            return real(monitor, messages, champion, settings, produce)

        def produce_then_fail(topic, value, **kwargs):
            produce(topic, value, **kwargs)
            if topic == settings.topics.dead_letters:
                calls["dead_letters"] += 1
                if calls["dead_letters"] == 3:
                    calls["failed"] = True
                    raise RuntimeError("injected failure after a dead letter")

        return real(monitor, messages, champion, settings, produce_then_fail)

    monkeypatch.setattr(service_module, "process_partition", fail_on_the_third_dead_letter)
    with pytest.raises(RuntimeError, match="injected failure"):
        ConsumerService(settings_for(kafka_bootstrap, topics, group)).run(
            stop_when=processed_all)
    assert calls["failed"], "the failure was never injected"
    monkeypatch.setattr(service_module, "process_partition", real)

    ConsumerService(settings_for(kafka_bootstrap, topics, group)).run(stop_when=processed_all)
    letters = read_all(kafka_bootstrap, topics.names["dead_letters"])
    sources = sorted((s.partition, s.offset) for s in map(source_of,
                                                          (m.headers() for m in letters)))
    assert len(sources) == poison
    assert len(set(sources)) == poison, "a dead letter was committed twice"


def test_a_state_record_kafka_refuses_ends_the_run_with_what_to_change(
        kafka_bootstrap: str, unique: str) -> None:
    """A producer limit below consumer.state_record_max_bytes: the client refuses the
    snapshot's first part. The run ends with one message naming the setting to lower
    (not a traceback from the checkpoint, which a restart would meet again)."""
    topics = Topics(unique, records_partitions=2).create(kafka_bootstrap)
    produce_partitioned(kafka_bootstrap, topics.names["records"])
    settings = settings_for(kafka_bootstrap, topics, f"g-{unique}")
    settings = replace(
        settings, kafka=replace(settings.kafka, client={"message.max.bytes": "20000"}),
        consumer=replace(settings.consumer, state_record_max_bytes=30_000))
    with pytest.raises(FatalKafkaError, match="lower consumer.state_record_max_bytes"):
        ConsumerService(settings).run(stop_when=processed_all)


def test_a_state_dir_that_cannot_be_written_is_one_line_at_start(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """It was a traceback at the first partition assignment."""
    topics = Topics(unique, records_partitions=2).create(kafka_bootstrap)
    settings = settings_for(kafka_bootstrap, topics, f"g-{unique}")
    (tmp_path / "state").write_text("a file where the state directory should be")
    settings = replace(settings, consumer=replace(settings.consumer,
                                                  state_dir=str(tmp_path / "state")))
    with pytest.raises(ConfigError, match="consumer.state_dir .* a file is in the way"):
        ConsumerService(settings).run(stop_when=lambda service: True)


def test_a_state_topic_with_smaller_records_ends_the_run_at_once_then_parts_fit_it(
        kafka_bootstrap: str, unique: str) -> None:
    """The broker refuses a state record (the topic's max.message.bytes is 100,000): the run
    ends at the first checkpoint with the setting to lower, instead of aborting and replaying
    until consumer.outage_limit_s. Lowered below the topic's limit, parts fit."""
    topics = Topics(unique, records_partitions=2).create(kafka_bootstrap)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    limit = ConfigResource(ConfigResource.Type.TOPIC, topics.names["detector_state"],
                           incremental_configs=[ConfigEntry(
                               "max.message.bytes", "100000",
                               incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([limit]).values():
        future.result()
    produce_partitioned(kafka_bootstrap, topics.names["records"])
    settings = settings_for(kafka_bootstrap, topics, f"g-{unique}")
    with pytest.raises(FatalKafkaError, match=r"refused a detector-state record .*"
                                              r"lower consumer.state_record_max_bytes"):
        ConsumerService(settings).run(stop_when=processed_all)
    fitting = replace(settings, consumer=replace(settings.consumer,
                                                 state_record_max_bytes=60_000))
    ConsumerService(fitting).run(stop_when=processed_all)
    states = read_all(kafka_bootstrap, topics.names["detector_state"])
    assert any(b"|part=" in message.key() for message in states)
