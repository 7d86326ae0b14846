"""The training window joins records to their late labels (levy.labels), on a real broker."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from levydrift.features import TARGET
from levydrift.settings import KafkaSettings
from levydrift.simulator import LevySimulator, SimulatorConfig, to_records
from tests.kafka_helpers import create_topic
from trainer.window import TrainingWindow, read_training_window

# Every record has its actual levy, so a test decides which ones carry it inline.
SIMULATOR = LevySimulator(SimulatorConfig(seed=11, labelled_share=1.0, parcels=5_000))


def label_for(record: dict[str, Any], amount: float | None = None) -> dict[str, Any]:
    """The label (levy label v1) of a simulator record: its actual levy, or ``amount``."""
    return {"schema_version": 1, "record_id": record["record_id"],
            "parcel_id": record["parcel_id"], "tax_year": record["tax_year"],
            "actual_levy_amount": record["actual_levy_amount"] if amount is None else amount,
            "event_time": record["event_time"]}


def without_levy(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "actual_levy_amount"}


@dataclass
class Placed:
    """Where each message went: (partition, offset) by record id."""

    at: dict[str, tuple[int, int]] = field(default_factory=dict)
    last: dict[int, int] = field(default_factory=dict)


class Topics:
    """A records topic and a labels topic of this test's own (co-partitioned by default)."""

    def __init__(self, bootstrap: str, unique: str, partitions: int = 2,
                 label_partitions: int | None = None) -> None:
        self.bootstrap = bootstrap
        self.records = f"records-{unique}"
        self.labels = f"labels-{unique}"
        self.kafka = KafkaSettings(bootstrap_servers=bootstrap)
        create_topic(bootstrap, self.records, partitions=partitions)
        if label_partitions != 0:
            create_topic(bootstrap, self.labels, partitions=label_partitions or partitions)

    def produce(self, topic: str, documents: list[dict[str, Any]]) -> Placed:
        """Each document keyed by its parcel id (so a label lands in its record's partition)."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        placed = Placed()

        def delivered(error: Any, message: Any) -> None:
            assert error is None
            record_id = orjson.loads(message.value())["record_id"]
            placed.at[record_id] = (message.partition(), message.offset())
            placed.last[message.partition()] = max(placed.last.get(message.partition(), -1),
                                                   message.offset())

        for document in documents:
            producer.produce(topic, key=document["parcel_id"].encode(),
                             value=orjson.dumps(document), on_delivery=delivered)
            producer.poll(0)
        producer.flush(30)
        return placed

    def window(self, window_records: int = 100_000, max_scan_records: int = 1_000_000,
               **bounds: Any) -> TrainingWindow:
        return read_training_window(self.kafka, self.records, bounds.pop("ends", {}),
                                    window_records, max_scan_records, bounds.pop("starts", None),
                                    labels_topic=self.labels, **bounds)


def levies(window: TrainingWindow) -> list[float]:
    return sorted(window.frame[TARGET].tolist())


def shuffled(items: list[dict[str, Any]], seed: int = 3) -> list[dict[str, Any]]:
    """Labels arrive in another order than their records did."""
    copy = list(items)
    random.Random(seed).shuffle(copy)
    return copy


@pytest.fixture
def topics(kafka_bootstrap: str, unique: str) -> Topics:
    return Topics(kafka_bootstrap, unique)


def test_records_without_inline_levies_train_on_exactly_their_joined_labels(
        topics: Topics) -> None:
    records = to_records(SIMULATOR.columns(0, 1_200))
    topics.produce(topics.records, [without_levy(r) for r in records])
    labelled = records[::3]  # a third get their levy later; the rest are no training rows
    topics.produce(topics.labels, shuffled([label_for(r) for r in labelled]))

    window = topics.window()

    assert len(window.frame) == len(labelled) == window.joined_records
    assert levies(window) == sorted(r["actual_levy_amount"] for r in labelled)
    assert window.labels_topic == topics.labels
    assert window.scanned_records == len(records)
    assert window.lineage()["labels"]["joined_records"] == len(labelled)
    assert window.lineage()["labels"]["inline_records"] == 0
    assert {(r["topic"], r["partition"]) for r in window.offsets} == {
        (topic, p) for topic in (topics.records, topics.labels) for p in (0, 1)}


def test_the_first_label_wins_a_label_beats_the_inline_levy_and_stray_labels_are_ignored(
        topics: Topics) -> None:
    records = to_records(SIMULATOR.columns(0, 600))
    inline, bare = records[:300], records[300:]
    topics.produce(topics.records, inline + [without_levy(r) for r in bare])
    stranger = {**records[0], "record_id": "not-in-the-window"}
    first = [label_for(r, r["actual_levy_amount"] + 0.5) for r in bare[:100]]
    corrected = [label_for(r, r["actual_levy_amount"] + 0.25) for r in inline[:50]]
    topics.produce(topics.labels, first + corrected + [label_for(stranger, 1.0)])
    # Second labels of the same records: duplicates, the first by offset counts.
    topics.produce(topics.labels, [label_for(r, 7.0) for r in bare[:100] + inline[:50]])

    window = topics.window()

    expected = ([r["actual_levy_amount"] + 0.5 for r in bare[:100]]
                + [r["actual_levy_amount"] + 0.25 for r in inline[:50]]
                + [r["actual_levy_amount"] for r in inline[50:]])
    assert levies(window) == sorted(expected)
    assert window.joined_records == 150


def test_labels_in_any_partition_are_found_when_the_topics_are_not_co_partitioned(
        kafka_bootstrap: str, unique: str) -> None:
    topics = Topics(kafka_bootstrap, unique, partitions=2, label_partitions=3)
    records = to_records(SIMULATOR.columns(0, 400))
    topics.produce(topics.records, [without_levy(r) for r in records])
    topics.produce(topics.labels, [label_for(r) for r in records])

    window = topics.window()

    assert levies(window) == sorted(r["actual_levy_amount"] for r in records)


def test_inline_levies_without_a_labels_topic_train_as_before(
        kafka_bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    topics = Topics(kafka_bootstrap, unique, label_partitions=0)  # an old deployment
    records = to_records(SIMULATOR.columns(0, 900))
    inline = records[::2]
    topics.produce(topics.records, inline + [without_levy(r) for r in records[1::2]])

    with caplog.at_level(logging.INFO, logger="trainer"):
        window = topics.window()

    assert levies(window) == sorted(r["actual_levy_amount"] for r in inline)
    assert window.labels_topic is None and window.joined_records == 0
    assert window.lineage()["labels"] is None
    assert {r["topic"] for r in window.offsets} == {topics.records}
    said = [r for r in caplog.records if "labels topic does not exist" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


def test_a_labels_event_window_holds_the_records_labelled_from_its_onset_on(
        topics: Topics) -> None:
    records = to_records(SIMULATOR.columns(0, 1_000))
    inline = records[::5]  # no label: not in a window of labels, whatever their levies
    labelled = [r for r in records if r not in inline]
    topics.produce(topics.records, [r if r in inline else without_levy(r) for r in records])
    placed = topics.produce(topics.labels, shuffled([label_for(r) for r in labelled]))
    onsets = {partition: last // 2 for partition, last in placed.last.items()}
    # The detection point, as the worker passes it: the window still runs past it, to the
    # newest label (what came after the change is what the new model must learn).
    detected = {partition: onset + 10 for partition, onset in onsets.items()}

    window = topics.window(label_starts=onsets, label_ends=detected)

    after = [r for r in labelled
             if placed.at[r["record_id"]][1] >= onsets[placed.at[r["record_id"]][0]]]
    assert 0 < len(after) < len(labelled)
    assert levies(window) == sorted(r["actual_levy_amount"] for r in after)
    label_ranges = {r["partition"]: r for r in window.offsets if r["topic"] == topics.labels}
    for partition, onset in onsets.items():
        assert label_ranges[partition]["first_offset"] == onset
        assert label_ranges[partition]["last_offset"] == placed.last[partition]


def test_a_county_labels_event_window_adds_the_other_counties_labelled_before_its_onset(
        topics: Topics) -> None:
    records = to_records(SIMULATOR.columns(0, 1_000))
    inline = records[::5]
    labelled = [r for r in records if r not in inline]
    topics.produce(topics.records, [r if r in inline else without_levy(r) for r in records])
    placed = topics.produce(topics.labels, shuffled([label_for(r) for r in labelled]))
    onsets = {partition: last // 2 for partition, last in placed.last.items()}
    grant = {partition: ({"county": "Grant"},) for partition in onsets}

    # As the worker reads a Grant labels event's window: the labels from the onset, then
    # the records of the other counties, labelled (or levied inline) whenever.
    cut = topics.window(label_starts=onsets, label_ends=onsets)
    window = cut.merged(topics.window(other_segments_of=grant))

    def label_after_onset(record: dict[str, Any]) -> bool:
        partition, offset = placed.at[record["record_id"]]
        return offset >= onsets[partition]

    expected = [r for r in labelled if label_after_onset(r)]
    expected += [r for r in records if r["county"] != "Grant" and r not in expected]
    assert any(r["county"] == "Grant" and not label_after_onset(r) for r in labelled)
    assert levies(window) == sorted(r["actual_levy_amount"] for r in expected)
    assert len(window.record_offsets) == len(window.frame) == len(expected)
    assert np.all(np.diff(window.record_times) >= 0)  # oldest to newest, both reads merged


def test_a_record_sent_twice_is_one_training_row_its_newest(topics: Topics) -> None:
    records = to_records(SIMULATOR.columns(0, 600))
    topics.produce(topics.records, records)
    again = [dict(r, actual_levy_amount=r["actual_levy_amount"] + 1.0) for r in records[:200]]
    topics.produce(topics.records, again)  # a county's slice uploaded again, corrected

    window = topics.window()

    assert len(window.frame) == 600
    assert window.lineage()["duplicate_records"] == 200
    assert levies(window) == sorted([r["actual_levy_amount"] for r in again]
                                    + [r["actual_levy_amount"] for r in records[200:]])


def test_a_labels_event_window_without_an_onset_ends_at_its_last_label(
        topics: Topics) -> None:
    records = to_records(SIMULATOR.columns(0, 600))
    topics.produce(topics.records, [without_levy(r) for r in records])
    placed = topics.produce(topics.labels, [label_for(r) for r in records])
    ends = {partition: last - 50 for partition, last in placed.last.items()}

    window = topics.window(label_ends=ends)

    before = [r for r in records
              if placed.at[r["record_id"]][1] <= ends[placed.at[r["record_id"]][0]]]
    assert levies(window) == sorted(r["actual_levy_amount"] for r in before)


def test_the_labels_scan_is_bounded(topics: Topics) -> None:
    records = to_records(SIMULATOR.columns(0, 800))
    topics.produce(topics.records, [without_levy(r) for r in records])
    topics.produce(topics.labels, [label_for(r) for r in records])

    window = topics.window(window_records=200, max_scan_records=400)

    assert window.scanned_labels <= 400
    assert 0 < len(window.frame) <= 200
    assert np.isfinite(window.frame[TARGET]).all()


def test_a_deployments_long_fetch_wait_does_not_hold_up_each_range_read(
        kafka_bootstrap: str, unique: str) -> None:
    """The window is read range after range, each chunk's labels looked up by time, on one
    connection: a fetch that long-polled at a partition's end held the next request up for
    fetch.wait.max.ms (20 s here, what kafka.client sets; minutes for this window)."""
    topics = Topics(kafka_bootstrap, unique, partitions=3)
    topics.kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap,
                                 client={"fetch.wait.max.ms": "20000"})
    records = to_records(SIMULATOR.columns(0, 3_000))
    topics.produce(topics.records, [without_levy(r) for r in records])
    topics.produce(topics.labels, shuffled([label_for(r) for r in records[::2]]))
    started = time.monotonic()

    window = topics.window(window_records=600)

    assert time.monotonic() - started < 20
    assert len(window.frame) == 600 == window.joined_records
