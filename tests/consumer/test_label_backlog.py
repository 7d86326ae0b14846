"""Labels piling up while records are quiet (bills certified after the roll was scored): the
consumer fetches them as fast as it takes them, not one batch per wait for records that are not
coming."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer

from consumer import service as service_module
from consumer.config import ConsumerSection, ConsumerSettings
from consumer.service import ConsumerService
from levydrift.settings import KafkaSettings, MetricsSettings, TopicSettings
from levydrift.simulator import LevySimulator, SimulatorConfig
from tests.consumer.harness import Topics, produce_values

BATCH = 200
RECORDS = 100
LABELS_PER_RECORD = 40  # 4,000 labels: 20 full label fetches once the records are done


class WaitCountingConsumer(Consumer):
    """The real consumer; the records consumer counts its fetches that waited and found
    nothing."""

    empty_waits = 0

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.reads_records = not str(config["group.id"]).endswith(".labels")

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        messages = super().consume(num_messages, timeout)
        if self.reads_records and timeout > 0 and not messages:
            WaitCountingConsumer.empty_waits += 1
        return messages


def label_for(record: dict[str, Any], number: int) -> bytes:
    return orjson.dumps({"schema_version": 1, "record_id": record["record_id"],
                         "parcel_id": record["parcel_id"], "tax_year": record["tax_year"],
                         "actual_levy_amount": 1000.0 + number,
                         "event_time": record["event_time"]})


def test_a_label_backlog_on_quiet_records_is_fetched_without_waiting(
        kafka_bootstrap: str, unique: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    topics = Topics(unique).create(kafka_bootstrap)
    records = list(LevySimulator(SimulatorConfig(seed=5)).records(0, RECORDS))
    produce_values(kafka_bootstrap, topics.names["records"],
                   ((r["parcel_id"].encode(), orjson.dumps(r)) for r in records))
    labels = produce_values(kafka_bootstrap, topics.names["labels"], (
        (record["parcel_id"].encode(), label_for(record, number))
        for number in range(LABELS_PER_RECORD) for record in records))
    monkeypatch.setattr(service_module, "Consumer", WaitCountingConsumer)
    WaitCountingConsumer.empty_waits = 0
    service = ConsumerService(ConsumerSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        topics=TopicSettings(**topics.names),
        consumer=ConsumerSection(group_id=f"g-{unique}", instance_id="solo", batch_size=BATCH,
                                 checkpoint_interval_s=0.2, state_dir=str(tmp_path / "state")),
        metrics=MetricsSettings(port=0)))

    def every_label_taken(running: ConsumerService) -> bool:
        return any(monitor.labels is not None and monitor.labels.next_offset >= labels
                   for monitor in running.monitors.values())

    assert labels == RECORDS * LABELS_PER_RECORD
    assert service.run(stop_when=every_label_taken) == 0
    # Before the fix: one empty records fetch of batch_timeout_s per label fetch (~20 here).
    # Now only while the label reader has nothing yet (start) or less than a batch (the end).
    assert WaitCountingConsumer.empty_waits <= 5, WaitCountingConsumer.empty_waits
