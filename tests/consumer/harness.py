"""Run ``levydrift consume`` as a real subprocess against a real broker, and observe it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from consumer.state import (
    PartitionState,
    StoredState,
    decode_state,
    joined_value,
    split_part_key,
)
from levydrift.simulator import LevySimulator, SimulatorConfig
from schemas.drift_event import DriftEvent
from tests.kafka_helpers import create_topic, read_all, wait_until

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Topics:
    """A private set of the project's topics for one test."""

    suffix: str
    records_partitions: int = 1
    records_topic: str | None = None  # read an existing records topic instead of a new one
    labels_topic: str | None = None  # likewise for the labels

    @property
    def names(self) -> dict[str, str]:
        return {"records": self.records_topic or f"rec-{self.suffix}",
                "dead_letters": f"dlq-{self.suffix}",
                "drift_events": f"drift-{self.suffix}",
                "model_versions": f"versions-{self.suffix}",
                "detector_state": f"state-{self.suffix}",
                "labels": self.labels_topic or f"labels-{self.suffix}",
                "join_changelog": f"changelog-{self.suffix}"}

    def create(self, bootstrap: str) -> Topics:
        compacted = {"cleanup.policy": "compact"}
        if self.records_topic is None:
            create_topic(bootstrap, self.names["records"], self.records_partitions)
        create_topic(bootstrap, self.names["dead_letters"])
        create_topic(bootstrap, self.names["drift_events"])
        create_topic(bootstrap, self.names["model_versions"], config=compacted)
        create_topic(bootstrap, self.names["detector_state"], config=compacted)
        if self.labels_topic is None:
            create_topic(bootstrap, self.names["labels"], self.records_partitions)
        create_topic(bootstrap, self.names["join_changelog"], self.records_partitions,
                     config=compacted)
        return self

    def environment(self) -> dict[str, str]:
        return {f"LEVYDRIFT_TOPICS_{key.upper()}": value for key, value in self.names.items()}


@dataclass
class ConsumerRun:
    """One ``levydrift consume`` process. Every one started is in ``STARTED`` until a test's
    end kills it (tests/consumer/conftest.py): one left behind by a failed test would fence
    the next test's instance of the same instance id."""

    bootstrap: str
    topics: Topics
    group: str
    instance: str
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsumerRun:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")}
        env.update({"LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                    "LEVYDRIFT_CONSUMER_GROUP_ID": self.group,
                    "LEVYDRIFT_CONSUMER_INSTANCE_ID": self.instance,
                    "LEVYDRIFT_CONSUMER_CHECKPOINT_INTERVAL_S": "0.3",
                    "LEVYDRIFT_CONSUMER_BATCH_SIZE": "1000",
                    "LEVYDRIFT_METRICS_PORT": "0",
                    # Each instance its own disk, as on separate machines.
                    "LEVYDRIFT_CONSUMER_STATE_DIR": str(
                        self.log_path.parent / f"state-{self.instance}"),
                    **self.topics.environment(), **self.extra_env})
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "levydrift.cli", "consume"],
                                        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        STARTED.append(self)
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


STARTED: list[ConsumerRun] = []


def kill_leftovers() -> None:
    while STARTED:
        run = STARTED.pop()
        if run.alive():
            run.kill()


def produce_scenario(bootstrap: str, topic: str, scenario: str, records: int, change_at: int,
                     seed: int = 7, **config: Any) -> LevySimulator:
    simulator = LevySimulator(SimulatorConfig(seed=seed, scenario=scenario, change_at=change_at,
                                              **config))
    produce_values(bootstrap, topic, ((r["parcel_id"].encode(), orjson.dumps(r))
                                      for r in simulator.records(0, records)))
    return simulator


def produce_values(bootstrap: str, topic: str,
                   pairs: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 20})
    count = 0
    for key, value in pairs:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    assert producer.flush(60) == 0
    return count


def committed_total(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Sum of the group's committed offsets (records fully processed). Offsets still pending in
    an open transaction do not count; read_uncommitted keeps the probe from waiting for them."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "isolation.level": "read_uncommitted", "enable.auto.commit": False})
    wanted = [TopicPartition(topic, p) for p in range(partitions)]
    try:
        # A broker that just started answers "not coordinator" until it has loaded the group.
        offsets = wait_until(lambda: _committed_or_none(probe, wanted), 60,
                             f"the coordinator of group {group}")
    finally:
        probe.close()
    return sum(max(position.offset, 0) for position in offsets)


def _committed_or_none(probe: Consumer, partitions: list[TopicPartition]) -> list | None:
    try:
        return probe.committed(partitions, timeout=10)
    except KafkaException as error:
        if error.args[0].retriable() or error.args[0].code() in _NOT_READY:
            return None
        raise


_NOT_READY = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
              KafkaError.COORDINATOR_NOT_AVAILABLE)


def wait_processed(bootstrap: str, group: str, topics: Topics, total: int,
                   timeout_s: float = 120, runs: Iterable[ConsumerRun] = ()) -> None:
    """Wait until the group has committed every record of the records topic."""
    runs = list(runs)

    def done() -> bool:
        for run in runs:
            assert run.alive(), f"consumer exited early:\n{run.log()[-3000:]}"
        return committed_total(bootstrap, group, topics.names["records"],
                               topics.records_partitions) >= total

    wait_until(done, timeout_s, f"group {group} to commit {total} records", interval_s=0.2)


def latest_states(bootstrap: str, topics: Topics) -> dict[int, PartitionState]:
    """partition -> the latest committed snapshot, its parts joined when it was written in
    parts (a large one)."""
    values: dict[bytes, bytes | None] = {}
    for message in read_all(bootstrap, topics.names["detector_state"]):
        values[message.key()] = message.value()
    parts: dict[bytes, dict[int, bytes]] = {}
    for key, value in values.items():
        part = split_part_key(key)
        if part is not None and value is not None:
            parts.setdefault(part[0], {})[part[1]] = value
    latest: dict[int, PartitionState] = {}
    for key, value in values.items():
        if value is None or split_part_key(key) is not None:
            continue
        stored = StoredState(key, 0, 0, value, parts.get(key, {}))
        state = decode_state(joined_value(stored))
        latest[state.partition] = state
    return latest


def final_banks(bootstrap: str, topics: Topics) -> dict[int, tuple[int, bytes]]:
    """partition -> (next offset, bank bytes) of the latest committed snapshot."""
    return {partition: (state.next_offset, state.bank)
            for partition, state in latest_states(bootstrap, topics).items()}


def final_states(bootstrap: str, topics: Topics) -> dict[int, tuple]:
    """partition -> the latest committed snapshot's offsets (records, labels), records
    watermark and both banks' bytes."""
    return {partition: (state.next_offset, state.labels_next_offset, state.watermark_ms,
                        state.bank, state.error_bank)
            for partition, state in latest_states(bootstrap, topics).items()}


def drift_events(bootstrap: str, topics: Topics) -> list[DriftEvent]:
    return [DriftEvent.from_bytes(m.value())
            for m in read_all(bootstrap, topics.names["drift_events"])]


def per_partition(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Comparable events by the source partition they describe, in order within each: the order
    a partition's events are produced in is guaranteed; the interleaving of partitions is not."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        grouped.setdefault(event["current_window"]["partition"], []).append(event)
    return grouped


def comparable(event: DriftEvent) -> dict[str, Any]:
    """An event without the fields that name the consumer group (which differs between runs)."""
    data = event.to_dict()
    data.pop("event_id")
    data.pop("consumer_group")
    return data
