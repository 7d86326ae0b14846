"""Late labels on the real broker: records now, their actual levies weeks later on the labels
topic, across partitions. A change that shows only in the bills is found from the labels alone
and attributed to the model version that made the predictions; kill -9 during the join changes
no event, no detector state and no join."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from consumer.join_store import decode_entry
from levydrift.features import to_model_frame
from levydrift.simulator import (
    LabelDelay,
    LevySimulator,
    SimulatorConfig,
    arrivals,
    to_labels,
    to_records,
)
from tests.consumer.harness import (
    ConsumerRun,
    Topics,
    committed_total,
    comparable,
    drift_events,
    final_states,
    produce_values,
    wait_processed,
)
from tests.consumer.test_models import free_port, publish_model, scrape
from tests.kafka_helpers import read_all, wait_until
from trainer.model import ModelParams, fit_model

PARTITIONS = 2
RECORDS = 24_000
CHANGE_AT = 12_000
MINUTE_MS = 60_000
# A record a minute: the stream spans ~17 days; bills follow their records by ~2 days, so most
# labels arrive while records still flow, interleaved with them, out of order.
DELAY = LabelDelay(median_days=2.0, sigma=0.5, max_days=10.0)
# 500-value references per county and partition: enough labels before the change for every
# county's error detectors to be judging when it comes.
DETECTOR_ENV = {"LEVYDRIFT_DETECTORS_SEGMENT_WARMUP_RECORDS": "500"}


def simulator(seed: int = 21) -> LevySimulator:
    return LevySimulator(SimulatorConfig(
        seed=seed, scenario="homestead-relief", change_at=CHANGE_AT, labelled_share=1.0,
        event_interval_ms=MINUTE_MS, label_delay=DELAY))


def produce_stream(bootstrap: str, topics: Topics, source: LevySimulator) -> int:
    """Records without their levies and, in arrival order among them, the labels; both keyed
    by parcel, so a label lands in its record's partition. Returns the number of labels."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 20})
    labels = 0
    for block in arrivals(source, RECORDS):
        for is_label, value in block.interleave(to_records(block.records),
                                                to_labels(block.labels)):
            topic = topics.names["labels"] if is_label else topics.names["records"]
            while True:
                try:
                    producer.produce(topic, key=value["parcel_id"].encode(),
                                     value=orjson.dumps(value))
                    break
                except BufferError:
                    producer.poll(0.1)
            labels += is_label
    assert producer.flush(60) == 0
    return labels


def champion_registry(bootstrap: str, topics: Topics, source: LevySimulator,
                      tmp_path: Path) -> Path:
    """Version 1, trained on the stream's own pre-change history (levies inline), published
    before any consumer starts, so every prediction is version 1's."""
    history = LevySimulator(SimulatorConfig(seed=source.config.seed, labelled_share=1.0,
                                            event_interval_ms=MINUTE_MS))
    model = fit_model(to_model_frame(history.columns(500_000, 506_000), include_target=True),
                      ModelParams(max_iter=30))
    registry = tmp_path / "models"
    publish_model(bootstrap, topics.names["model_versions"], registry, 1, model, tmp_path)
    return registry


def labels_joined(port: int) -> float:
    return scrape(port).get(("levydrift_consumer_labels_total", (("outcome", "joined"),)), 0.0)


def labels_taken(bootstrap: str, topics: Topics) -> int:
    """Labels behind the committed checkpoints (each partition's first label not yet taken)."""
    return sum(state[1] or 0 for state in final_states(bootstrap, topics).values())


def label_events(bootstrap: str, topics: Topics) -> list:
    return [e for e in drift_events(bootstrap, topics)
            if e.current_window.topic == topics.names["labels"]]


def first_changed_labels(bootstrap: str, topics: Topics) -> dict[int, int]:
    """partition -> offset of its first label for a record from after the change (labels come
    out of record order, so labels of older records still arrive after it)."""
    first: dict[int, int] = {}
    for message in read_all(bootstrap, topics.names["labels"]):
        index = int(orjson.loads(message.value())["record_id"].rsplit("-", 1)[1])
        if index >= CHANGE_AT:
            first.setdefault(message.partition(), message.offset())
    return first


@dataclass
class Stream:
    topics: Topics
    registry: Path
    labels: int


def labelled_stream(bootstrap: str, name: str, tmp_path: Path) -> Stream:
    topics = Topics(name, PARTITIONS).create(bootstrap)
    source = simulator()
    registry = champion_registry(bootstrap, topics, source, tmp_path)
    return Stream(topics, registry, produce_stream(bootstrap, topics, source))


def run_to_the_end(bootstrap: str, stream: Stream, group: str, instance: str, log: Path,
                   env: dict[str, str] | None = None) -> int:
    """One consumer through every record and every label; returns how many it joined."""
    port = free_port()
    run = ConsumerRun(bootstrap, stream.topics, group, instance, log, extra_env={
        **DETECTOR_ENV, "LEVYDRIFT_METRICS_PORT": str(port),
        "LEVYDRIFT_REGISTRY_ROOT": str(stream.registry), **(env or {})}).start()
    wait_processed(bootstrap, group, stream.topics, RECORDS, runs=[run])
    wait_until(lambda: not run.alive() or labels_taken(bootstrap, stream.topics)
               >= stream.labels, 180, "every label to take its turn")
    joined = labels_joined(port)
    assert run.stop() == 0, run.log()[-3000:]
    return int(joined)


def test_a_change_only_the_bills_show_is_found_from_the_labels(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    stream = labelled_stream(kafka_bootstrap, unique, tmp_path)
    group = f"g-{unique}"
    joined = run_to_the_end(kafka_bootstrap, stream, group, "solo", tmp_path / "c.log")
    assert joined == stream.labels  # each exactly once

    found = label_events(kafka_bootstrap, stream.topics)
    assert found, "the homestead relief in the bills was not found from the labels"
    changed = first_changed_labels(kafka_bootstrap, stream.topics)
    for event in found:
        assert event.kind == "performance"
        assert event.model_version == 1  # the version whose predictions the labels scored
        window = event.current_window
        assert window.last_offset >= changed[window.partition], \
            "a labels event before any changed bill: a false alarm"
    # Nothing in the records themselves moved: no record-side event names the change.
    records_events = [e for e in drift_events(kafka_bootstrap, stream.topics)
                      if e.current_window.topic == stream.topics.names["records"]
                      and e.kind == "performance"]
    assert records_events == []


@pytest.mark.slow
def test_kill_minus_nine_during_the_join_changes_nothing(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    stream = labelled_stream(kafka_bootstrap, f"ref-{unique}", tmp_path)
    run_to_the_end(kafka_bootstrap, stream, f"ref-{unique}", "ref", tmp_path / "ref.log")
    expected_events = [comparable(e) for e in drift_events(kafka_bootstrap, stream.topics)]
    assert any(e["current_window"]["topic"] == stream.topics.names["labels"]
               for e in expected_events), "no labels event: the comparison proves little"
    expected_states = final_states(kafka_bootstrap, stream.topics)
    expected_joins = joined_entries(kafka_bootstrap, stream.topics)

    topics = Topics(f"crash-{unique}", PARTITIONS, stream.topics.names["records"],
                    stream.topics.names["labels"]).create(kafka_bootstrap)
    announcement = read_all(kafka_bootstrap, stream.topics.names["model_versions"])[-1]
    produce_values(kafka_bootstrap, topics.names["model_versions"],
                   [(announcement.key(), announcement.value())])  # the same version 1
    crashed = Stream(topics, stream.registry, stream.labels)
    env = {**DETECTOR_ENV, "LEVYDRIFT_CONSUMER_BATCH_SIZE": "200",
           "LEVYDRIFT_CONSUMER_CHECKPOINT_INTERVAL_S": "0.1",
           "LEVYDRIFT_REGISTRY_ROOT": str(stream.registry)}
    group, randomness = f"crash-{unique}", random.Random(unique)
    for attempt in range(4):
        run = ConsumerRun(kafka_bootstrap, topics, group, "crashy",
                          tmp_path / f"crash-{attempt}.log", extra_env=env).start()
        target = RECORDS * (0.15 * (attempt + 1) + randomness.uniform(0.0, 0.05))
        wait_until(lambda run=run, target=target: committed_total(
            kafka_bootstrap, group, topics.names["records"], PARTITIONS) >= target
            or not run.alive(), 120, f"progress past {target:.0f} records")
        assert run.alive(), run.log()[-3000:]
        run.kill()
    run_to_the_end(kafka_bootstrap, crashed, group, "crashy", tmp_path / "crash-last.log", env)

    events = [comparable(e) for e in drift_events(kafka_bootstrap, topics)]
    assert by_source(events) == by_source(expected_events)
    assert final_states(kafka_bootstrap, topics) == expected_states
    assert joined_entries(kafka_bootstrap, topics) == expected_joins


def by_source(events: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """Events by the topic and partition they were found in, in order within each: records
    and labels of one partition are judged by separate detectors, whose events interleave
    as the two topics happened to be fetched."""
    grouped: dict[tuple[str, int], list[dict]] = {}
    for event in events:
        window = event["current_window"]
        grouped.setdefault((window["topic"], window["partition"]), []).append(event)
    return grouped


def joined_entries(bootstrap: str, topics: Topics) -> dict[bytes, bool]:
    """The join changelog's latest committed value per record: joined or waiting. A label
    joined twice, or lost, changes the final error detectors; one joined to the wrong record
    changes this."""
    latest: dict[bytes, bool] = {}
    for message in read_all(bootstrap, topics.names["join_changelog"]):
        key, value = message.key(), message.value()
        key = key[2 + int.from_bytes(key[:2], "big"):]  # the group's prefix off: groups differ
        if value is None:
            latest.pop(key, None)
        else:
            latest[key] = decode_entry(value).joined
    return latest
