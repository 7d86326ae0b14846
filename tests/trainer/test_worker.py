"""The trainer worker on a real broker: drift event to exactly one gated, published version."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from levydrift import settings as settings_module
from levydrift.artifacts import load_version_dir
from levydrift.errors import RegistryError
from levydrift.simulator import LevySimulator, SimulatorConfig, to_records
from schemas.drift_event import (
    DetectorSpec,
    DriftEvent,
    DriftSignal,
    Onset,
    SourceOffsets,
    WindowSummary,
)
from schemas.model_version import ModelVersionEvent
from tests.kafka_helpers import create_topic, read_all, wait_until
from trainer.config import TrainerSettings
from trainer.registry import ModelRegistry
from trainer.registry_lineage import window_ranges
from trainer.worker import TrainWorker

REPO = Path(__file__).resolve().parents[2]
NAME = "levy-impact"
SIMULATOR = LevySimulator(SimulatorConfig(seed=7, labelled_share=0.6, parcels=5_000))


class Stack:
    """Throwaway topics, a registry and a config file for one test."""

    def __init__(self, bootstrap: str, unique: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.records = f"records-{unique}"
        self.drift = f"drift-{unique}"
        self.versions = f"versions-{unique}"
        self.labels = f"labels-{unique}"  # created by the tests that use it (`create_labels`)
        self.group = f"trainer-{unique}"
        self.root = tmp_path / "models"
        self.unique = unique
        self.produced = 0
        create_topic(bootstrap, self.records, partitions=2)
        create_topic(bootstrap, self.drift)
        create_topic(bootstrap, self.versions, config={"cleanup.policy": "compact"})

    def config_file(self, tmp_path: Path, max_iter: int = 30) -> Path:
        path = tmp_path / f"trainer-{max_iter}.toml"
        path.write_text(f"""
[kafka]
bootstrap_servers = "{self.bootstrap}"
[topics]
records = "{self.records}"
drift_events = "{self.drift}"
model_versions = "{self.versions}"
labels = "{self.labels}"
[trainer]
group_id = "{self.group}"
transactional_id_prefix = "trainer-{self.unique}"
window_records = 2000
min_training_records = 100
max_iter = {max_iter}
episode_linger_s = 0.2
episode_gap_s = 0.0
poll_timeout_s = 0.2
[registry]
root = "{self.root}"
[metrics]
port = 0
[detectors]
composition_window_s = 300
""")
        return path

    def produce_records(self, count: int) -> dict[int, int]:
        """Append ``count`` simulator records; returns {partition: last offset}."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        last: dict[int, int] = {}

        def delivered(error, message) -> None:
            assert error is None
            last[message.partition()] = max(last.get(message.partition(), -1), message.offset())

        for record in to_records(SIMULATOR.columns(self.produced, self.produced + count)):
            producer.produce(self.records, key=record["parcel_id"].encode(),
                             value=orjson.dumps(record), on_delivery=delivered)
            producer.poll(0)
        producer.flush(30)
        self.produced += count
        return last

    def create_labels(self) -> None:
        create_topic(self.bootstrap, self.labels, partitions=2)

    def produce_late_labels(self, count: int) -> dict[str, tuple[int, int]]:
        """``count`` records without their levy, then the labels of those the simulator gave
        one, in another order; returns each label's (partition, offset) by record id."""
        records = to_records(SIMULATOR.columns(self.produced, self.produced + count))
        self.produced += count
        labels = [{"schema_version": 1, "record_id": r["record_id"],
                   "parcel_id": r["parcel_id"], "tax_year": r["tax_year"],
                   "actual_levy_amount": r["actual_levy_amount"], "event_time": r["event_time"]}
                  for r in records if "actual_levy_amount" in r]
        random.Random(5).shuffle(labels)
        self._produce(self.records, [{k: v for k, v in r.items() if k != "actual_levy_amount"}
                                     for r in records])
        return self._produce(self.labels, labels)

    def _produce(self, topic: str, documents: list[dict]) -> dict[str, tuple[int, int]]:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        placed: dict[str, tuple[int, int]] = {}

        def delivered(error, message) -> None:
            assert error is None
            placed[orjson.loads(message.value())["record_id"]] = (message.partition(),
                                                                 message.offset())

        for document in documents:
            producer.produce(topic, key=document["parcel_id"].encode(),
                             value=orjson.dumps(document), on_delivery=delivered)
            producer.poll(0)
        producer.flush(30)
        return placed

    def send_event(self, last_offsets: dict[int, int], detected_at: str,
                   event_id: str | None = None, topic: str | None = None,
                   onset: Onset | None = None, segment: str | None = None) -> DriftEvent:
        """A performance drift event on ``topic`` (the records by default) whose current
        window ends at the lowest partition's last offset."""
        topic = topic or self.records
        partition = min(last_offsets)
        end = last_offsets[partition]
        summary = WindowSummary(n=100, mean=0.0, std=1.0)
        event = DriftEvent(
            event_id=event_id or str(uuid.uuid4()), model_name=NAME, model_version=None,
            kind="performance",
            signals=(DriftSignal("abs_error", DetectorSpec("page_hinkley", {"delta": 0.1}),
                                 9.0, 5.0, 1.2, summary, summary),),
            reference_window=SourceOffsets(topic, partition, 0, max(0, end - 200)),
            current_window=SourceOffsets(topic, partition, max(0, end - 199), end),
            detected_at=detected_at, consumer_group="levy-drift-monitor", onset=onset,
            segment=segment)
        self.send_raw(event.to_bytes())
        return event

    def send_raw(self, value: bytes) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap})
        producer.produce(self.drift, key=NAME.encode(), value=value)
        producer.flush(30)

    def committed(self) -> int:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            offset = consumer.committed([TopicPartition(self.drift, 0)], timeout=10)[0].offset
        finally:
            consumer.close()
        return max(offset, 0)

    def version_events(self) -> list[ModelVersionEvent]:
        return [ModelVersionEvent.from_bytes(m.value())
                for m in read_all(self.bootstrap, self.versions)]


class RunningWorker:
    """A TrainWorker in a thread of this process."""

    def __init__(self, config_path: Path) -> None:
        self.worker = TrainWorker(settings_module.load(TrainerSettings, config_path, environ={}))
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


@pytest.fixture
def stack(kafka_bootstrap: str, unique: str, tmp_path: Path) -> Stack:
    return Stack(kafka_bootstrap, unique, tmp_path)


def test_drift_event_to_one_published_version_then_a_rejected_one(stack: Stack,
                                                                  tmp_path: Path) -> None:
    ends = stack.produce_records(3000)
    worker = RunningWorker(stack.config_file(tmp_path, max_iter=60))
    try:
        event = stack.send_event(ends, "2026-03-01T00:00:00Z")
        published = wait_until(stack.version_events, 120, "the first model-version event")
        registry = ModelRegistry(stack.root)
        assert registry.versions(NAME) == [1]
        info = registry.get(NAME, 1)
        assert sorted(p.name for p in info.path.iterdir()) == [
            "lineage.json", "manifest.json", "metrics.json", "model.skops", "published.json",
            "reference.parquet"]
        assert registry.champion(NAME) == 1
        history = registry.training_history(NAME)
        assert [(row["version"], row["outcome"]) for row in history] == [("1", "promoted")]
        assert history[0]["trigger_event_ids"] == event.event_id

        (message,) = published
        assert message.decision == "promoted" and message.version == 1
        assert message.previous_version is None
        assert message.artifact_sha256 == info.sha256
        assert message.trigger_event_ids == (event.event_id,)
        assert message.training_record_count == info.lineage["training_window"]["record_count"]
        assert [o.last_offset for o in message.training_offsets] == [
            o["last_offset"] for o in info.lineage["training_window"]["offsets"]]
        assert message.candidate_metrics.mae == info.metrics["candidate"]["mae"]
        assert message.feature_signature == info.manifest["feature_signature"]
        assert load_version_dir(info.path, message.artifact_sha256) is not None
        # The stream's mix while the window's records came, over its whole 5-minute windows
        # (records 1 s apart; the edges, held in part, left out): every record scanned,
        # labelled or not, so more than the labelled rows trained on.
        mix = info.manifest["composition"]
        assert mix["window_s"] == 300 and mix["windows"] >= 3
        assert info.lineage["training_window"]["record_count"] \
            < sum(mix["counts"]["county"].values()) < info.lineage["scanned_records"]
        read_back = {o.partition: o.last_offset for o in message.training_offsets}
        assert read_back == ends  # the event's partition ends where the event says

        # The same event again: acknowledged, nothing else changes.
        stack.send_raw(event.to_bytes())
        wait_until(lambda: stack.committed() == 2, 60, "the duplicate to be committed")
        assert registry.versions(NAME) == [1]
        assert len(stack.version_events()) == 1
        assert len(registry.training_history(NAME)) == 1
    finally:
        worker.stop()

    # A much weaker candidate (2 boosting rounds) on new data is rejected, and published so.
    ends = stack.produce_records(2000)
    worker = RunningWorker(stack.config_file(tmp_path, max_iter=2))
    try:
        second = stack.send_event(ends, "2026-03-02T00:00:00Z")
        events = wait_until(lambda: (e := stack.version_events()) and len(e) == 2 and e, 120,
                            "the second model-version event")
        rejected = events[-1]
        assert rejected.decision == "rejected" and rejected.version == 2
        assert rejected.previous_version == 1
        assert rejected.trigger_event_ids == (second.event_id,)
        assert rejected.champion_metrics is not None
        assert rejected.candidate_metrics.mae > rejected.champion_metrics.mae
        registry = ModelRegistry(stack.root)
        assert registry.champion(NAME) == 1
        assert registry.get(NAME, 2).manifest["status"] == "rejected"
    finally:
        worker.stop()


def test_a_drift_event_found_from_labels_retrains_on_the_records_labelled_since_its_onset(
        stack: Stack, tmp_path: Path) -> None:
    stack.create_labels()
    labels_at = stack.produce_late_labels(4000)
    last = {p: max(o for q, o in labels_at.values() if q == p) for p in (0, 1)}
    onset = last[0] // 2  # an offset of labels partition 0: records partition 0's labels
    worker = RunningWorker(stack.config_file(tmp_path))
    try:
        event = stack.send_event({0: last[0]}, "2026-03-01T00:00:00Z", topic=stack.labels,
                                 onset=Onset(onset, None))
        (published,) = wait_until(stack.version_events, 120, "the model-version event")
        registry = ModelRegistry(stack.root)
        lineage = registry.get(NAME, 1).lineage
        since_onset = sum(1 for p, o in labels_at.values() if p == 0 and o >= onset)
        elsewhere = min(1000, sum(1 for p, _ in labels_at.values() if p == 1))  # the quota
        assert lineage["training_window"]["record_count"] == since_onset + elsewhere
        assert lineage["labels"]["joined_records"] == since_onset + elsewhere
        labels = {r["partition"]: r for r in window_ranges(lineage, stack.labels)}
        assert (labels[0]["first_offset"], labels[0]["last_offset"]) == (onset, last[0])
        assert labels[1]["last_offset"] == last[1]
        assert {r["partition"] for r in window_ranges(lineage, stack.records)} == {0, 1}
        assert {(o.topic, o.partition) for o in published.training_offsets} == {
            (topic, p) for topic in (stack.records, stack.labels) for p in (0, 1)}

        # A later event on labels the version already trained on: the same episode.
        stack.send_event({0: last[0] - 10}, "2026-03-02T00:00:00Z", topic=stack.labels)
        wait_until(lambda: stack.committed() == 2, 60, "the second event to be committed")
        assert registry.versions(NAME) == [1]
        assert registry.version_for_event(NAME, event.event_id) is not None
    finally:
        worker.stop()


def test_a_county_labels_event_retrains_on_its_labels_since_the_onset_and_the_rest(
        stack: Stack, tmp_path: Path) -> None:
    stack.create_labels()
    labels_at = stack.produce_late_labels(4000)
    last = {p: max(o for q, o in labels_at.values() if q == p) for p in (0, 1)}
    onset = last[0] // 2
    worker = RunningWorker(stack.config_file(tmp_path))
    try:
        stack.send_event({0: last[0]}, "2026-03-01T00:00:00Z", topic=stack.labels,
                         onset=Onset(onset, None), segment="county=Grant")
        wait_until(stack.version_events, 120, "the model-version event")
        lineage = ModelRegistry(stack.root).get(NAME, 1).lineage
    finally:
        worker.stop()
    assert lineage["post_change_label_segments"] == {"0": ["county=Grant"]}
    since_onset = sum(1 for p, o in labels_at.values() if p == 0 and o >= onset)
    elsewhere = min(1000, sum(1 for p, _ in labels_at.values() if p == 1))
    # Beyond the cut window (as the whole-stream event above): partition 0's other counties
    # labelled before the onset, read as a second range of the records partition.
    assert lineage["training_window"]["record_count"] > since_onset + elsewhere
    assert len([r for r in window_ranges(lineage, stack.records) if r["partition"] == 0]) == 2


def test_a_bad_drift_event_and_a_failed_training_keep_the_worker_serving(
        stack: Stack, tmp_path: Path) -> None:
    worker = RunningWorker(stack.config_file(tmp_path))
    try:
        stack.send_raw(b"not json")
        # No records at all: training fails, no version, a failed history row.
        stack.send_event({0: 0}, "2026-03-01T00:00:00Z")
        wait_until(lambda: stack.committed() == 2, 60, "both events to be committed")
        registry = ModelRegistry(stack.root)
        assert registry.versions(NAME) == []
        assert [row["outcome"] for row in registry.training_history(NAME)] == ["failed"]
        assert stack.version_events() == []
        assert worker.thread.is_alive()
    finally:
        worker.stop()


def _start_subprocess(config: Path) -> tuple[subprocess.Popen, list[str]]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")}
    process = subprocess.Popen([sys.executable, "-m", "levydrift.cli", "--config", str(config),
                                "train-worker"], cwd=REPO, env=environment,
                               stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")),
                     daemon=True).start()
    return process, lines


def _json_or_none(line: str) -> dict | None:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def test_kill_during_training_then_restart_yields_exactly_one_version(
        stack: Stack, tmp_path: Path) -> None:
    ends = stack.produce_records(3000)
    config = stack.config_file(tmp_path, max_iter=400)  # long enough to be killed mid-fit
    process, lines = _start_subprocess(config)
    try:
        event = stack.send_event(ends, "2026-03-01T00:00:00Z")
        wait_until(lambda: any("fitting a candidate" in line for line in lines), 120,
                   "the worker to start fitting")
        # Every log line is one JSON object (partition numbers as keys used to break it).
        assert not any("Logging error" in line for line in lines), "".join(lines)[-3000:]
        (started,) = [entry for entry in map(_json_or_none, lines)
                      if entry and entry["message"] == "training started"]
        window = event.current_window
        assert started["window_ends"] == {str(window.partition): window.last_offset}
        process.kill()  # SIGKILL: no cleanup of any kind
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert ModelRegistry(stack.root).versions(NAME) == []  # nothing visible half-done

    process, lines = _start_subprocess(config)
    try:
        wait_until(stack.version_events, 180, "the model-version event after restart")
        wait_until(lambda: stack.committed() == 1, 60, "the drift event to be committed")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    registry = ModelRegistry(stack.root)
    (version,) = registry.versions(NAME)
    assert registry.get(NAME, version).lineage["drift_event_ids"] == [event.event_id]
    assert [e.version for e in stack.version_events()] == [version]
    assert list((stack.root / NAME / "staging").iterdir()) == []


def two_promoted_versions(stack: Stack) -> ModelRegistry:
    """Versions 1 and 2 trained from files and both promoted, none announced."""
    from levydrift.features import to_model_frame
    from trainer.model import ModelParams
    from trainer.training import TrainingRequest, train_and_register

    registry = ModelRegistry(stack.root)
    for start in (0, 3000):
        frame = to_model_frame(SIMULATOR.columns(start, start + 3000), include_target=True)
        train_and_register(registry, NAME, TrainingRequest(
            frame=frame, trigger_event_ids=[], code_version="test",
            training_offsets=[{"topic": stack.records, "partition": 0, "first_offset": start,
                               "last_offset": start + 2999}],
            gate_margin=-1.0, min_training_records=100, params=ModelParams(max_iter=20)))
    assert registry.champion(NAME) == 2
    return registry


def test_rollback_restores_the_previous_champion_and_publishes_it(
        stack: Stack, tmp_path: Path) -> None:
    registry = two_promoted_versions(stack)
    completed = subprocess.run(
        [sys.executable, "-m", "levydrift.cli", "--config", str(stack.config_file(tmp_path)),
         "registry", "rollback", NAME], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")})
    assert completed.returncode == 0, completed.stderr
    assert "champion 2 -> 1" in completed.stdout
    assert registry.champion(NAME) == 1
    assert registry.alias_history(NAME)[-1]["action"] == "rolled_back"
    # The rollback first announced what the registry held and the topic lacked: version 2.
    announced, event = stack.version_events()
    assert (announced.decision, announced.version) == ("promoted", 2)
    assert (event.decision, event.version, event.previous_version) == ("rolled_back", 1, 2)
    assert event.artifact_sha256 == registry.get(NAME, 1).sha256


def test_train_from_a_file_publishes_each_version_once_and_blames_no_crash(
        stack: Stack, tmp_path: Path) -> None:
    data = tmp_path / "levy.csv"
    SIMULATOR.frame(0, 3000).to_csv(data, index=False)
    for run in (1, 2):
        completed = subprocess.run(
            [sys.executable, "-m", "levydrift.cli", "--config", str(stack.config_file(tmp_path)),
             "train", "--data-path", str(data), "--publish"], cwd=REPO, capture_output=True,
            text=True, timeout=300,
            env={k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")})
        assert completed.returncode == 0, completed.stderr
        assert "a crash had kept" not in completed.stderr  # nothing crashed
        assert [event.version for event in stack.version_events()] == list(range(1, run + 1))
    registry = ModelRegistry(stack.root)
    assert all(registry.get(NAME, version).published for version in (1, 2))


def test_the_champion_gauge_follows_a_rollback_made_while_the_worker_runs(
        stack: Stack, tmp_path: Path) -> None:
    from trainer import metrics

    two_promoted_versions(stack)

    def gauge() -> float | None:
        return metrics.REGISTRY.get_sample_value("levydrift_trainer_champion_version",
                                                 {"model": NAME})

    worker = RunningWorker(stack.config_file(tmp_path))
    try:
        wait_until(lambda: gauge() == 2, 60, "the worker to report champion 2")
        completed = subprocess.run(
            [sys.executable, "-m", "levydrift.cli", "--config", str(stack.config_file(tmp_path)),
             "registry", "rollback", "--no-publish", NAME], cwd=REPO, capture_output=True,
            text=True, timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")})
        assert completed.returncode == 0, completed.stderr
        wait_until(lambda: gauge() == 1, 60, "the champion gauge to follow the rollback")
    finally:
        worker.stop()


def test_a_missing_records_topic_is_a_setting_to_fix_not_an_outage_to_wait_out(
        kafka_bootstrap: str, unique: str) -> None:
    from levydrift.errors import MissingTopicError
    from levydrift.settings import KafkaSettings
    from trainer.window import read_training_window

    with pytest.raises(MissingTopicError, match=f"records-{unique}-absent"):
        read_training_window(KafkaSettings(bootstrap_servers=kafka_bootstrap),
                             f"records-{unique}-absent", {0: 10}, 100, 1000)


def test_the_training_window_starts_at_the_onset(stack: Stack) -> None:
    from levydrift.settings import KafkaSettings
    from trainer.window import read_training_window

    last = stack.produce_records(3_000)
    onsets = {partition: end // 2 for partition, end in last.items()}
    kafka = KafkaSettings(bootstrap_servers=stack.bootstrap)
    since_onset = read_training_window(kafka, stack.records, dict(last), 10_000, 100_000,
                                       onsets)
    whole = read_training_window(kafka, stack.records, dict(last), 10_000, 100_000)
    for window in since_onset.offsets:
        assert window["first_offset"] >= onsets[window["partition"]]
    assert {w["partition"]: w["first_offset"] for w in whole.offsets} != {
        w["partition"]: w["first_offset"] for w in since_onset.offsets}
    assert 0 < len(since_onset.frame) < len(whole.frame)


def test_a_county_drift_window_takes_that_county_since_the_onset_and_the_rest_before_it(
        stack: Stack) -> None:
    from levydrift.settings import KafkaSettings
    from trainer.window import read_training_window

    last = stack.produce_records(3_000)
    onsets = {partition: end // 2 for partition, end in last.items()}
    changed = {partition: ({"county": "Grant"},) for partition in last}
    window = read_training_window(KafkaSettings(bootstrap_servers=stack.bootstrap),
                                  stack.records, dict(last), 10_000, 100_000, onsets,
                                  changed_segments=changed)
    expected: dict[str, int] = {}
    for message in read_all(stack.bootstrap, stack.records):
        record = orjson.loads(message.value())
        if record.get("actual_levy_amount") is None:
            continue  # not a training row
        if record["county"] != "Grant" or message.offset() >= onsets[message.partition()]:
            expected[record["county"]] = expected.get(record["county"], 0) + 1
    assert window.frame["county"].value_counts().to_dict() == expected
    # Each row's record is known (the gate keeps the champion's training rows out of the
    # holdout by them): Grant's rows all come from after the onset.
    partitions, offsets = window.record_offsets.T
    grant = window.frame["county"].to_numpy() == "Grant"
    assert len(offsets) == len(window.frame)
    assert all(offsets[grant] >= np.array([onsets[p] for p in partitions[grant]]))
    assert any(offsets[~grant] < np.array([onsets[p] for p in partitions[~grant]]))
    grant_before = sum(1 for m in read_all(stack.bootstrap, stack.records)
                       if orjson.loads(m.value())["county"] == "Grant"
                       and m.offset() < onsets[m.partition()])
    assert grant_before > 0, "no Grant record before the onset: the test would prove nothing"
    assert window.lineage()["post_change_segments"] == {str(p): ["county=Grant"] for p in last}
    # The other counties' records before the onset are in: the window reaches back before it.
    assert all(w["first_offset"] < onsets[w["partition"]] for w in window.offsets)


def test_a_worker_with_an_unwritable_registry_says_so_at_start(tmp_path: Path) -> None:
    """Not at the first drift event, hours later, after a training run."""
    (tmp_path / "models").write_text("a file where the registry root should be")
    config = tmp_path / "levydrift.toml"
    config.write_text(f'[registry]\nroot = "{tmp_path / "models"}"\n')
    worker = TrainWorker(settings_module.load(TrainerSettings, config, environ={}))
    with pytest.raises(RegistryError, match="cannot write to the model registry"):
        worker.run()


def test_a_lone_drift_event_is_taken_at_once_not_after_the_poll_timeout(
        stack: Stack, tmp_path: Path) -> None:
    # consume() returns with as many messages as asked for or at its timeout: asked for a
    # batch, a lone event sat out poll_timeout_s (20 s here) before its retrain began.
    ends = stack.produce_records(3000)
    config = stack.config_file(tmp_path)
    config.write_text(config.read_text().replace("poll_timeout_s = 0.2", "poll_timeout_s = 20"))
    worker = RunningWorker(config)
    try:
        stack.send_event(ends, "2026-03-01T00:00:00Z")
        sent = time.monotonic()
        wait_until(stack.version_events, 60, "the model-version event")
        assert time.monotonic() - sent < 15
    finally:
        worker.stop()
