"""Late labels (issue 15): the consumer with a label per record flowing beside the consumer
without labels, and the join store's restore for 1M and 10M pending predictions.

    python bench/bench_labels.py [--records 300000] [--repeat 3] [--label-delay-hours 2]
                                 [--pending 1000000 [10000000 ...]] [--restore-repeat 3]
                                 [--skip-consume] [--skip-restore] [--bootstrap HOST:PORT]
                                 [--kafka-data DIR]

(``--records 1000000`` for 1M records; ``--pending 1000000 10000000`` adds the 10M restore,
which takes minutes.)

1. **With labels vs without**, as users run them: each contender is a ``levydrift consume``
   process started from this one (``bench_consumer.run_service``), with a fresh group, a
   champion model serving (trained here, saved to a registry and announced on the
   model-versions topic, so every record gets a prediction for its label to join), timed from
   launch until its committed offset reaches the end of the pre-filled topics, and at steady
   state (records processed between 20 % and 90 % of the stream, from its /metrics page).
   The topics, one partition each, are filled once: the records without their actual levy, and
   on the co-partitioned labels topic one label per record, produced in arrival order, after
   the records whose event time passes it (``levydrift.simulator.arrivals``: the record's event
   time plus a log-normal delay, median ``--label-delay-hours`` with records one second apart).
   The labels of the last records fall due only after the stream ends (the consumer would
   release them after ``IDLE_RELEASE_S`` without records); they are not produced, so every label
   takes its turn during the run.
   - without: ``LEVYDRIFT_CONSUMER_JOIN_LABELS=false``; done when the records are committed;
   - with: the join on (the default); done when the records are committed and its latest
     committed checkpoint on the detector-state topic has taken every label. Its
     ``levydrift_consumer_labels_total{outcome="joined"}`` must count every label.
   Interleaved (the order alternates), repeated, min / median / max, and the ratio with/without
   of the same repetition (issue 15 asks for at least 0.7).
2. **Restore** of N pending predictions: a join store is filled as the consumer fills it
   (``put_batch`` of 10,000 scored records at a time) and its ``changes()`` produced to a
   compacted one-partition changelog topic in Kafka transactions of 100,000, the store committed
   after each with its changelog position, as the checkpoint does. Then
   ``restore_from_changelog`` is timed into an empty store (cold: the whole changelog) and into
   the store that wrote it (warm: up to date, nothing to replay), the store's disk (``du`` of
   its RocksDB directory) and the changelog topic's size (its log segments in the broker's data
   directory, when this machine has it, and the bytes of its keys and values) reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from bench_consumer import (  # the same bench directory
    REPO,
    Timing,
    create_topics,
    delete_topics,
    metric_total,
    ratio_spread,
    run_service,
    spread,
    topic_names,
)
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from machine import describe

from consumer.join_store import JoinStore, restore_from_changelog
from consumer.state import decode_state, state_key
from levydrift.artifacts import save_model
from levydrift.features import feature_signature, to_model_frame
from levydrift.kafka import producer_config
from levydrift.kafka.transactions import TRANSACTIONAL_TUNING, producer_overrides
from levydrift.settings import KafkaSettings
from levydrift.simulator import (
    LabelDelay,
    LevySimulator,
    SimulatorConfig,
    arrivals,
    to_labels,
    to_records,
)
from schemas.drift_event import SourceOffsets
from schemas.model_version import Metrics, ModelVersionEvent
from trainer.model import fit_model

MODEL = "levy-impact"  # consumer.model_name's default
SEED = 11
TRAINING_RECORDS = 20_000
JOINED = 'levydrift_consumer_labels_total{outcome="joined"}'
PUT_BATCH = 10_000  # scored records per put_batch, as a few consumer batches
TRANSACTION_ENTRIES = 100_000  # changelog messages per transaction
COUNTIES = ("Benton", "Cook", "Dane", "King", "Maricopa", "Travis")  # segment values
T0_MS = 1_767_225_600_000  # 2026-01-01


# --- 1. with labels vs without -------------------------------------------------------------


def produce(producer: Producer, topic: str, key: bytes | None, value: bytes | None,
            **options: Any) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value, **options)
            return
        except BufferError:
            producer.poll(0.05)


def prefill(bootstrap: str, names: dict[str, str], records: int, delay_hours: float,
            with_labels: bool = True) -> tuple[int, int]:
    """The records (no inline actual levy) and the labels that fall due among them, in arrival
    order (no label ``with_labels`` false); returns (labels produced, labels left out: due
    after the last record)."""
    simulator = LevySimulator(SimulatorConfig(
        seed=SEED, scenario="none", labelled_share=1.0,
        label_delay=LabelDelay(median_days=delay_hours / 24, sigma=0.5)))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                         "compression.type": "lz4", "batch.size": 1_000_000})
    produced = left_out = seen = 0
    for block in arrivals(simulator, records):
        count = len(block.records["record_id"])
        seen += count
        if not with_labels:
            items: Iterable[tuple[bool, dict[str, Any]]] = ((False, record)
                                                  for record in to_records(block.records))
        else:
            labels = to_labels(block.labels)
            if seen == records:  # labels after the last record: due only once the stream ended
                keep = int(np.searchsorted(block.label_slots, count))
                left_out += len(labels) - keep
                labels = labels[:keep]
            items = block.interleave(to_records(block.records), labels)
        for is_label, item in items:
            produce(producer, names["labels"] if is_label else names["records"],
                    item["parcel_id"].encode(), orjson.dumps(item))
            produced += is_label
    if producer.flush(120):
        raise SystemExit("prefill: messages not delivered")
    return produced, left_out


def publish_champion(bootstrap: str, topic: str, registry: Path) -> None:
    """Version 1 of the model, trained on the stream's first records, in ``registry`` as the
    trainer lays it out, announced as promoted (as tests/consumer/test_models.py does)."""
    simulator = LevySimulator(SimulatorConfig(seed=SEED, scenario="none", labelled_share=1.0))
    model = fit_model(to_model_frame(simulator.columns(0, TRAINING_RECORDS),
                                     include_target=True))
    directory = registry / MODEL / "versions" / "1"
    directory.mkdir(parents=True)
    sha = save_model(model, directory / "model.skops")
    (directory / "manifest.json").write_text(json.dumps(
        {"model": MODEL, "version": 1, "sha256": sha, "artifact": "model.skops"}))
    event = ModelVersionEvent(
        model_name=MODEL, version=1, previous_version=None, decision="promoted",
        artifact_uri=str(directory / "model.skops"), artifact_sha256=sha,
        holdout_records=0, candidate_metrics=Metrics(mae=0.0, rmse=0.0, mape=0.0, r2=1.0),
        champion_metrics=None,
        training_offsets=(SourceOffsets("bench", 0, 0, TRAINING_RECORDS - 1),),
        training_record_count=TRAINING_RECORDS, trigger_event_ids=(),
        feature_signature=feature_signature(), code_version="bench",
        created_at="2026-01-01T00:00:00Z")
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=MODEL.encode(), value=event.to_bytes())
    if producer.flush(30):
        raise SystemExit("the model-version event was not delivered")


class CommittedLabels:
    """Where a service's committed checkpoint stands in the labels topic: its latest committed
    snapshot on the detector-state topic (read_committed)."""

    def __init__(self, bootstrap: str, state_topic: str, key: bytes) -> None:
        self.key = key
        self.next_offset = 0
        self.reader = Consumer({"bootstrap.servers": bootstrap,
                                "group.id": f"bench-watch-{uuid.uuid4().hex[:8]}",
                                "enable.auto.commit": False, "isolation.level": "read_committed",
                                "enable.partition.eof": False})
        self.reader.assign([TopicPartition(state_topic, 0, OFFSET_BEGINNING)])

    def taken(self) -> int:
        """The first label offset not in the latest committed checkpoint."""
        while messages := self.reader.consume(1000, 0.05):
            for message in messages:
                if message.error() is None and message.key() == self.key and message.value():
                    self.next_offset = decode_state(message.value()).labels_next_offset or 0
        return self.next_offset

    def close(self) -> None:
        self.reader.close()


def run_contender(bootstrap: str, names: dict[str, str], records: int, labels: int,
                  workdir: Path, with_labels: bool) -> Timing:
    if not with_labels:
        return run_service(bootstrap, names, records, workdir,
                           extra_env={"LEVYDRIFT_CONSUMER_JOIN_LABELS": "false"})
    group = f"bench-{uuid.uuid4().hex[:8]}"
    # A changelog of its own: the topic is not named per group, so a fresh group on the last
    # run's changelog would restore that run's store (every label a duplicate).
    names = {**names, "join_changelog": f"{names['join_changelog']}-{group}"}
    admin = create_topics(bootstrap, {"join_changelog": names["join_changelog"]})
    watch = CommittedLabels(bootstrap, names["detector_state"],
                            state_key(group, names["records"], 0))
    try:
        return run_service(bootstrap, names, records, workdir, group=group,
                           done=lambda: watch.taken() >= labels)
    finally:
        watch.close()
        delete_topics(admin, [names["join_changelog"]])


def bench_consume(bootstrap: str, records: int, repeat: int, delay_hours: float) -> None:
    run = uuid.uuid4().hex[:8]
    names = topic_names(run)
    admin = create_topics(bootstrap, names)
    try:
        started = time.monotonic()
        labels, left_out = prefill(bootstrap, names, records, delay_hours)
        print(f"records: {records:,} on one partition, no inline actual levy; labels: "
              f"{labels:,} on the co-partitioned labels topic, one per record, median delay "
              f"{delay_hours:g} h of event time (records 1 s apart: ~{delay_hours * 3600:,.0f} "
              f"records later); {left_out:,} labels of the last records, due after the stream "
              f"ends, left out; filled in {time.monotonic() - started:.0f} s")
        print(f"champion: version 1 trained on {TRAINING_RECORDS:,} records (trainer defaults); "
              f"{repeat} interleaved repetitions, the order alternating; broker on the same "
              "machine")
        without: list[Timing] = []
        with_: list[Timing] = []
        with tempfile.TemporaryDirectory() as directory:
            workdir = Path(directory)
            publish_champion(bootstrap, names["model_versions"], workdir / "models")
            for repetition in range(repeat):
                order = (False, True) if repetition % 2 == 0 else (True, False)
                for with_labels in order:
                    timing = run_contender(bootstrap, names, records, labels, workdir,
                                           with_labels)
                    (with_ if with_labels else without).append(timing)
                    report_run(timing, with_labels)
        print(f"\n{'records/s (min median max)':<36} {'end to end':>32}   {'steady state':>32}")
        for name, timings in (("levydrift consume, no labels", without),
                              ("levydrift consume, labels flowing", with_)):
            print(f"{name:<36} {spread([t.end_to_end for t in timings])}   "
                  f"{spread([t.steady for t in timings])}")
        print("with labels / without, same repetition (min / median / max): end to end "
              + ratio_spread([w.end_to_end / o.end_to_end for w, o in zip(with_, without,
                                                                          strict=True)])
              + "; steady state "
              + ratio_spread([w.steady / o.steady for w, o in zip(with_, without, strict=True)]))
        print("resident memory over each run (MiB, min-max): without "
              + ", ".join(f"{low:.0f}-{high:.0f}" for low, high in (t.rss_mib for t in without))
              + "; with " + ", ".join(f"{low:.0f}-{high:.0f}"
                                      for low, high in (t.rss_mib for t in with_)))
        joined = [int(metric_total(t.metrics, JOINED)) for t in with_]
        if any(count != labels for count in joined):
            raise SystemExit(f"labels joined {joined}, expected {labels:,} in every run")
    finally:
        delete_topics(admin, names.values())


def report_run(timing: Timing, with_labels: bool) -> None:
    page = timing.metrics
    champion = metric_total(page, "levydrift_consumer_champion_version{")
    line = (f"  {'with' if with_labels else 'without'} labels: {timing.end_to_end:,.0f} rec/s "
            f"end to end, {timing.steady:,.0f} steady; champion version {champion:g}; load "
            f"average {os.getloadavg()[0]:.1f}")
    if with_labels:
        outcomes = {outcome: int(metric_total(
            page, f'levydrift_consumer_labels_total{{outcome="{outcome}"}}'))
            for outcome in ("joined", "duplicate", "unmatched", "expired", "dead_lettered")}
        line += f"; labels {', '.join(f'{k} {v:,}' for k, v in outcomes.items())}"
    print(line, flush=True)


# --- 2. restore ------------------------------------------------------------------------------


def du_bytes(path: Path) -> int:
    """Disk used (as ``du``: allocated blocks) by the files below ``path``."""
    return sum(entry.stat().st_blocks * 512 for entry in path.rglob("*") if entry.is_file())


def fill_changelog(bootstrap: str, topic: str, store: JoinStore, entries: int) -> int:
    """``entries`` newly scored records into ``store``, its changes produced to ``topic`` in
    transactions, the store committed after each; returns the bytes of keys and values."""
    producer = Producer(producer_config(KafkaSettings(bootstrap_servers=bootstrap),
                                        TRANSACTIONAL_TUNING,
                                        **producer_overrides(f"bench-fill-{uuid.uuid4().hex}",
                                                             60)))
    producer.init_transactions(30)
    ends = [0]
    payload = 0

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            raise SystemExit(f"changelog message not delivered: {error}")
        ends[0] = max(ends[0], (message.offset() or 0) + 1)

    rng = np.random.default_rng(1)
    for first in range(0, entries, TRANSACTION_ENTRIES):
        stop = min(entries, first + TRANSACTION_ENTRIES)
        for start in range(first, stop, PUT_BATCH):
            end = min(stop, start + PUT_BATCH)
            offsets = np.arange(start, end, dtype=np.int64)
            times = T0_MS + offsets * 1000
            store.put_batch([f"sim-{SEED}-{i:010d}" for i in range(start, end)], offsets, times,
                            np.round(rng.lognormal(8, 1, end - start), 2),
                            [(COUNTIES[i % len(COUNTIES)],) for i in range(start, end)], 1,
                            watermarks_ms=times - 1000)
        producer.begin_transaction()
        for key, value in store.changes():
            payload += len(key) + len(value or b"")
            produce(producer, topic, key, value, partition=0, on_delivery=delivered)
        producer.flush(120)
        producer.commit_transaction(60)
        store.commit(ends[0])
    return payload


def reader_config(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "group.id": f"bench-restore-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False}


def topic_log_bytes(kafka_data: Path | None, topic: str) -> int | None:
    directory = kafka_data / f"{topic}-0" if kafka_data is not None else None
    if directory is None or not directory.is_dir():
        return None
    return sum(segment.stat().st_size for segment in directory.glob("*.log"))


def bench_restore(bootstrap: str, entries: int, repeat: int, kafka_data: Path | None,
                  scratch: Path) -> None:
    topic = f"bench-changelog-restore-{uuid.uuid4().hex[:8]}"
    admin = create_topics(bootstrap, {"join_changelog": topic})
    directory = Path(tempfile.mkdtemp(prefix="bench-restore-", dir=scratch))
    try:
        started = time.monotonic()
        with JoinStore(directory / "writer") as writer:
            payload = fill_changelog(bootstrap, topic, writer, entries)
            assert writer.pending_count() == entries
        filled = time.monotonic() - started
        log_bytes = topic_log_bytes(kafka_data, topic)
        writer_disk = du_bytes(directory / "writer")
        cold: list[float] = []
        cold_disk: list[int] = []
        for attempt in range(repeat):
            path = directory / f"cold-{attempt}"
            started = time.monotonic()
            with JoinStore(path) as store:
                stats = restore_from_changelog(store, reader_config(bootstrap), topic, 0, 3600)
                if store.pending_count() != entries or stats.replayed != entries:
                    raise SystemExit(f"cold restore: {stats.replayed:,} replayed, "
                                     f"{store.pending_count():,} pending, not {entries:,}")
            cold.append(time.monotonic() - started)
            cold_disk.append(du_bytes(path))
            shutil.rmtree(path)
        warm: list[float] = []
        for _ in range(repeat):
            started = time.monotonic()  # a restart: open the DB, read nothing, commit nothing
            with JoinStore(directory / "writer") as store:
                stats = restore_from_changelog(store, reader_config(bootstrap), topic, 0, 3600)
                if stats.replayed or stats.wiped:
                    raise SystemExit(f"warm restore replayed {stats.replayed} (wiped "
                                     f"{stats.wiped})")
            warm.append(time.monotonic() - started)
        transactions = -(-entries // TRANSACTION_ENTRIES)
        print(f"\n{entries:,} pending predictions (changelog filled in {filled:.0f} s, "
              f"{transactions} transactions)")
        print(f"  cold restore (open an empty store, replay the whole changelog), s: "
              f"{seconds_spread(cold)} ({entries / statistics.median(cold):,.0f} entries/s)")
        print(f"  warm restore (open the up-to-date store, nothing to replay), s: "
              f"{seconds_spread(warm)}")
        print("  store on disk (du of the RocksDB directory): restored "
              + ", ".join(f"{size / 2**20:,.0f}" for size in cold_disk)
              + f" MiB; the writer's (after its {transactions} commits) "
              f"{writer_disk / 2**20:,.0f} MiB")
        topic_size = "not found here" if log_bytes is None else f"{log_bytes / 2**20:,.0f} MiB"
        print(f"  changelog topic: log segments {topic_size} (lz4, as the consumer produces); "
              f"keys and values {payload / 2**20:,.0f} MiB ({payload / entries:.0f} B/entry)",
              flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        delete_topics(admin, [topic])


def seconds_spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def default_kafka_data() -> Path | None:
    """The local broker's data directory (deploy/kafka/local-kafka keeps it in the main
    worktree's .kafka/data, or in $LOCAL_KAFKA_STATE/data)."""
    if os.environ.get("LOCAL_KAFKA_STATE"):
        return Path(os.environ["LOCAL_KAFKA_STATE"]) / "data"
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute",
                                 "--git-common-dir"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    data = Path(common).parent / ".kafka" / "data"
    return data if data.is_dir() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--label-delay-hours", type=float, default=2.0)
    parser.add_argument("--pending", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--restore-repeat", type=int, default=3)
    parser.add_argument("--skip-consume", action="store_true")
    parser.add_argument("--skip-restore", action="store_true")
    parser.add_argument("--bootstrap", default=os.environ.get(
        "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--kafka-data", type=Path, default=default_kafka_data(),
                        help="the broker's data directory, for the changelog topic's size")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the restore's RocksDB directories go")
    arguments = parser.parse_args()
    print(describe())
    if not arguments.skip_consume:
        bench_consume(arguments.bootstrap, arguments.records, arguments.repeat,
                      arguments.label_delay_hours)
    if not arguments.skip_restore:
        for entries in arguments.pending:
            bench_restore(arguments.bootstrap, entries, arguments.restore_repeat,
                          arguments.kafka_data, arguments.scratch)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
