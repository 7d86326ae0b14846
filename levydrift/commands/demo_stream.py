"""The demo's own topics (``levy-demo-<run>.*``): created, streamed to, watched for drift
events and model versions, and deleted afterwards."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from levydrift.commands.demo_narrator import Narrator
from levydrift.commands.topics import create_topics
from levydrift.kafka import admin_client, consumer_config, producer_config
from levydrift.settings import KafkaSettings, TopicSettings
from schemas.drift_event import DriftEvent
from schemas.model_version import ModelVersionEvent


@dataclass
class Observed:
    """What the watcher has seen on the topics (appended by its thread), each with the
    demo's elapsed time when it was seen."""

    drift_events: list[tuple[float, DriftEvent]] = field(default_factory=list)
    versions: list[tuple[float, ModelVersionEvent]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class DemoTopics:
    """The run's topics and the demo's reads and writes on them."""

    def __init__(self, kafka: KafkaSettings, run_id: str, partitions: int,
                 narrator: Narrator, step_timeout_s: float) -> None:
        self.kafka = kafka
        self.prefix = f"levy-demo-{run_id}"
        self.names = TopicSettings(
            records=f"{self.prefix}.records", dead_letters=f"{self.prefix}.records.dlq",
            drift_events=f"{self.prefix}.drift-events",
            model_versions=f"{self.prefix}.model-versions",
            detector_state=f"{self.prefix}.detector-state", labels=f"{self.prefix}.labels",
            join_changelog=f"{self.prefix}.join-changelog", records_partitions=partitions)
        self.narrator = narrator
        self.step_timeout_s = step_timeout_s
        self.observed = Observed()
        self._stop_watching = threading.Event()

    def create(self, replication_factor: int) -> int:
        """Create the topics; returns how many."""
        return len(create_topics(admin_client(self.kafka), self.names, replication_factor,
                                 self.kafka.request_timeout_s))

    def delete(self) -> None:
        names = [self.names.records, self.names.dead_letters, self.names.drift_events,
                 self.names.model_versions, self.names.detector_state, self.names.labels,
                 self.names.join_changelog]
        futures = admin_client(self.kafka).delete_topics(names, operation_timeout=10)
        for future in futures.values():
            with contextlib.suppress(Exception):  # best effort: a leftover topic is harmless
                future.result()

    def produce(self, batches: Iterable[list[dict[str, Any]]], label: str) -> None:
        """Write the records to the records topic, keyed by parcel, and wait until Kafka has
        acknowledged every one."""
        self.send(((self.names.records, record) for batch in batches for record in batch),
                  f"{label} records")

    def send(self, messages: Iterable[tuple[str, dict[str, Any]]], what: str) -> None:
        """Write each (topic, record or label) in the order given, keyed by parcel, and wait
        until Kafka has acknowledged every one."""
        producer = Producer(producer_config(self.kafka))
        for count, (topic, message) in enumerate(messages, 1):
            while True:
                try:
                    producer.produce(topic, value=orjson.dumps(message),
                                     key=message["parcel_id"].encode())
                    break
                except BufferError:
                    producer.poll(0.1)
            if count % 10_000 == 0:
                producer.poll(0)
        self.narrator.wait(f"Kafka to acknowledge the {what}",
                           lambda: producer.flush(1.0) == 0, self.step_timeout_s,
                           lambda: f"{len(producer):,} unacknowledged")

    def start_watching(self) -> None:
        threading.Thread(target=self._watch, name="demo-watcher", daemon=True).start()

    def stop_watching(self) -> None:
        self._stop_watching.set()

    def _watch(self) -> None:
        """Read the drift-event and model-version topics as they are committed."""
        reader = Consumer(consumer_config(self.kafka, f"{self.prefix}-watch"))
        reader.assign([TopicPartition(self.names.drift_events, 0, 0),
                       TopicPartition(self.names.model_versions, 0, 0)])
        try:
            while not self._stop_watching.is_set():
                for message in reader.consume(50, 0.2):
                    error, topic, value = message.error(), message.topic(), message.value()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            self.observed.errors.append(error.str())
                        continue
                    if topic is not None and value is not None:
                        self._record(topic, value)
        finally:
            reader.close()

    def _record(self, topic: str, value: bytes) -> None:
        now = self.narrator.elapsed()
        with self.observed.lock:
            if topic == self.names.drift_events:
                self.observed.drift_events.append((now, DriftEvent.from_bytes(value)))
            else:
                self.observed.versions.append((now, ModelVersionEvent.from_bytes(value)))
