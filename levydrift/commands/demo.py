"""``levydrift demo``: the whole loop on the local broker, narrated as it happens.

Topics of its own (``levy-demo-<run>.*``, deleted afterwards) and a fresh registry
(``demo-output/models``) make every run independent of the last. A first model is trained on
simulated history and published; ``levydrift consume`` and ``levydrift train-worker`` run as
real subprocesses; a baseline and then a ``reassessment`` are streamed; everything narrated
is read back from the real topics, the services' metrics endpoints and the registry.

Each step waits for a condition, saying what it waits for and how it is going, for up to
``--step-timeout`` seconds (generous: a loaded machine fits a model many times slower than a
quiet one); only a step that never happens ends the demo with exit code 1. The demo's own logs
(librdkafka's included) go to ``<output>/demo.log`` as JSON lines, never into the narration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from levydrift import settings as settings_module
from levydrift.commands.topics import create_topics
from levydrift.errors import LevyDriftError, UsageError
from levydrift.features import TARGET, to_model_frame
from levydrift.kafka import admin_client, consumer_config, ensure_reachable, producer_config
from levydrift.logs import configure as configure_logging
from levydrift.settings import AdminSettings, TopicSettings
from levydrift.simulator import LevySimulator, SimulatorConfig
from schemas.drift_event import DriftEvent
from schemas.model_version import ModelVersionEvent
from trainer.config import TrainerSection, TrainerSettings
from trainer.registry import ModelRegistry

MODEL = "levy-impact"
SCENARIO = "reassessment"
MAGNITUDE = 0.5  # assessed values of one county x 1.5: a re-valuation the detectors must see
# The county re-valued: Benton (28 % of records) has each partition's 2,000-value segment
# warm-up behind it by the change (detectors.segment_warmup_records).
COUNTY = "Benton"
HISTORY_RECORDS = 3_000  # the first model's (small) training set
HISTORY_START = 1_000_000  # history drawn from the same simulated roll, apart from the stream
BASELINE_RECORDS = 16_000  # > partitions x the detectors' 5,000-record warm-up
CHANGE_RECORDS = 6_000  # streamed after the change, before the new model arrives
AFTER_RECORDS = 8_000  # streamed once the new model serves
LABELLED_SHARE = 0.5
PARTITIONS = 2
CONSUMER_PORT, TRAINER_PORT = 9108, 9109
# How long one step may take before the demo gives up. A quiet 2-core machine needs < 15 s for
# any step; a loaded one was seen taking 55 s to fit version 2.
DEFAULT_STEP_TIMEOUT_S = 600.0
PROGRESS_EVERY_S = 5.0  # a progress line this often while waiting (when not on a terminal)


class DemoFailed(LevyDriftError):
    """A step did not happen within the step timeout, or a service died."""

    exit_code = 1


@dataclass
class Observed:
    """What the watcher has seen on the topics (appended by its thread)."""

    drift_events: list[tuple[float, DriftEvent]] = field(default_factory=list)
    versions: list[tuple[float, ModelVersionEvent]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Narrator:
    """Timestamped lines, and a progress line while waiting (rewritten in place on a tty)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tty = sys.stdout.isatty()
        self._last_progress = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        if self.tty:
            sys.stdout.write("\r\033[K")
        print(f"[{self.elapsed():5.1f}s] {text}", flush=True)

    def progress(self, text: str) -> None:
        now = time.monotonic()
        if self.tty:
            sys.stdout.write(f"\r\033[K          ... {text}")
            sys.stdout.flush()
        elif now - self._last_progress >= PROGRESS_EVERY_S:  # logs and CI: a line now and then
            print(f"[{self.elapsed():5.1f}s] ... {text}", flush=True)
            self._last_progress = now

    def wait(self, what: str, condition: Callable[[], Any], limit_s: float,
             status: Callable[[], str] = lambda: "") -> Any:
        """Poll ``condition`` until truthy, showing what is awaited, for how long so far and
        ``status()``; raise ``DemoFailed`` after ``limit_s``."""
        started = time.monotonic()
        self._last_progress = started  # the first progress line after PROGRESS_EVERY_S
        while True:
            result = condition()
            if result:
                return result
            waited = time.monotonic() - started
            if waited >= limit_s:
                raise DemoFailed(f"{what} did not happen within {limit_s:g}s (the step "
                                 "timeout; raise it with --step-timeout)")
            detail = status()
            self.progress(f"waiting for {what}: {waited:.0f}s so far (up to {limit_s:g}s)"
                          + (f"; {detail}" if detail else ""))
            time.sleep(0.25)


@dataclass
class Demo:
    settings: AdminSettings
    output: Path
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S
    narrator: Narrator = field(default_factory=Narrator)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    observed: Observed = field(default_factory=Observed)
    stop_watching: threading.Event = field(default_factory=threading.Event)
    ports: dict[str, int] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def topics(self) -> TopicSettings:
        prefix = f"levy-demo-{self.run_id}"
        return TopicSettings(records=f"{prefix}.records", dead_letters=f"{prefix}.records.dlq",
                             drift_events=f"{prefix}.drift-events",
                             model_versions=f"{prefix}.model-versions",
                             detector_state=f"{prefix}.detector-state",
                             records_partitions=PARTITIONS)

    @property
    def registry_root(self) -> Path:
        return self.output / "models"

    def simulator(self) -> LevySimulator:
        return LevySimulator(SimulatorConfig(scenario=SCENARIO, change_at=BASELINE_RECORDS,
                                             magnitude=MAGNITUDE, county=COUNTY,
                                             labelled_share=LABELLED_SHARE))

    # ------------------------------------------------------------------ the story

    def run(self) -> int:
        say = self.narrator.say
        kafka = self.settings.kafka
        ensure_reachable(admin_client(kafka), kafka)
        say(f"levy-drift demo (run {self.run_id}) on Kafka at {kafka.bootstrap_servers}")
        self.prepare()
        self.train_first_model()
        self.start_services()
        self.stream(0, BASELINE_RECORDS, "baseline")
        self.wait_consumed(BASELINE_RECORDS)
        self.facts["baseline_gauge"] = self.metric("consumer", "levydrift_consumer_"
                                                   "prediction_abs_error")
        say(f"baseline scored by version 1; consumer's mean abs error gauge: "
            f"${self.facts['baseline_gauge']:,.2f}")
        truth = self.simulator().ground_truth()
        say(f"scenario {SCENARIO} from record {BASELINE_RECORDS:,}: {truth.description}")
        self.stream(BASELINE_RECORDS, BASELINE_RECORDS + CHANGE_RECORDS, SCENARIO)
        self.wait_drift()
        self.wait_new_version()
        self.wait_swap()
        start = BASELINE_RECORDS + CHANGE_RECORDS
        self.stream(start, start + AFTER_RECORDS, f"{SCENARIO} (continued)")
        self.wait_consumed(start + AFTER_RECORDS)
        self.compare_models(start, start + AFTER_RECORDS)
        self.print_summary()
        return 0

    def prepare(self) -> None:
        if self.registry_root.exists():
            shutil.rmtree(self.registry_root)
        self.registry_root.mkdir(parents=True)
        outcome = create_topics(admin_client(self.settings.kafka), self.topics,
                                self.settings.topics.replication_factor,
                                self.settings.kafka.request_timeout_s)
        self.narrator.say(f"created {len(outcome)} topics levy-demo-{self.run_id}.* "
                          f"(records: {PARTITIONS} partitions); registry {self.registry_root}")

    def train_first_model(self) -> None:
        # lazy: scikit-learn (seconds to import), only once the demo trains
        from trainer.events import registration_event
        from trainer.model import ModelParams
        from trainer.training import TrainingRequest, train_and_register
        from trainer.worker import publish_decision

        self.narrator.say(f"training version 1 on {HISTORY_RECORDS:,} simulated historical "
                          "records ...")
        history = LevySimulator(SimulatorConfig(labelled_share=1.0)).columns(
            HISTORY_START, HISTORY_START + HISTORY_RECORDS)
        registry = ModelRegistry(self.registry_root)
        info = train_and_register(registry, MODEL, TrainingRequest(
            frame=to_model_frame(history, include_target=True), trigger_event_ids=[],
            training_offsets=[{"topic": "simulated-history", "partition": 0,
                               "first_offset": HISTORY_START,
                               "last_offset": HISTORY_START + HISTORY_RECORDS - 1}],
            code_version="levydrift demo", params=ModelParams()))
        publish_decision(self.trainer_settings(), registration_event(info))
        registry.mark_published(MODEL, info.version, {"topic": self.topics.model_versions,
                                                      "decision": "promoted"})
        mae = info.metrics["candidate"]["mae"]
        self.facts["v1_holdout_mae"] = mae
        self.narrator.say(f"version 1 trained on {HISTORY_RECORDS:,} simulated historical "
                          f"records (holdout MAE ${mae:,.2f}), promoted and published")

    def trainer_settings(self) -> TrainerSettings:
        section = replace(TrainerSection(), registry_root=str(self.registry_root),
                          transactional_id_prefix=f"levy-demo-{self.run_id}")
        return TrainerSettings(kafka=self.settings.kafka, topics=self.topics, trainer=section)

    # ------------------------------------------------------------------ processes

    def start_services(self) -> None:
        self.ports = {"consumer": free_port(CONSUMER_PORT), "trainer": free_port(TRAINER_PORT)}
        common = self.service_environment()
        self.spawn("consumer", ["consume"], {
            **common, "LEVYDRIFT_METRICS_PORT": str(self.ports["consumer"]),
            "LEVYDRIFT_CONSUMER_GROUP_ID": f"levy-demo-{self.run_id}-monitor",
            "LEVYDRIFT_CONSUMER_INSTANCE_ID": f"demo-{self.run_id}",
            "LEVYDRIFT_CONSUMER_REGISTRY_ROOT": str(self.registry_root),
            "LEVYDRIFT_CONSUMER_BATCH_SIZE": "1000",
            "LEVYDRIFT_CONSUMER_CHECKPOINT_INTERVAL_S": "0.5"})
        self.spawn("trainer", ["train-worker"], {
            **common, "LEVYDRIFT_METRICS_PORT": str(self.ports["trainer"]),
            "LEVYDRIFT_TRAINER_GROUP_ID": f"levy-demo-{self.run_id}-trainer",
            "LEVYDRIFT_TRAINER_TRANSACTIONAL_ID_PREFIX": f"levy-demo-{self.run_id}",
            "LEVYDRIFT_TRAINER_REGISTRY_ROOT": str(self.registry_root),
            "LEVYDRIFT_TRAINER_WINDOW_RECORDS": "10000",
            # Both partitions' events of one change arrive within a few seconds: one retrain.
            "LEVYDRIFT_TRAINER_EPISODE_LINGER_S": "3"})
        threading.Thread(target=self.watch_topics, name="demo-watcher", daemon=True).start()
        self.narrator.wait(
            "the consumer to load version 1", lambda: self.metric(
                "consumer", "levydrift_consumer_champion_version") == 1, self.step_timeout_s,
            lambda: self.service_status("consumer"))
        self.narrator.wait("the trainer worker's metrics", lambda: self.metric(
            "trainer", "levydrift_trainer_champion_version") is not None, self.step_timeout_s,
            lambda: self.service_status("trainer"))
        self.narrator.say(f"started levydrift consume (pid {self.processes['consumer'].pid}, "
                          f"metrics :{self.ports['consumer']}) and levydrift train-worker (pid "
                          f"{self.processes['trainer'].pid}, metrics :{self.ports['trainer']}); "
                          "the consumer serves version 1")

    def service_environment(self) -> dict[str, str]:
        # Kafka connection settings pass through; everything else is the demo's own.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LEVYDRIFT_") or k.startswith("LEVYDRIFT_KAFKA_")}
        env.pop("LEVYDRIFT_CONFIG", None)
        topics = self.topics
        env.update({"LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka.bootstrap_servers,
                    "LEVYDRIFT_TOPICS_RECORDS": topics.records,
                    "LEVYDRIFT_TOPICS_DEAD_LETTERS": topics.dead_letters,
                    "LEVYDRIFT_TOPICS_DRIFT_EVENTS": topics.drift_events,
                    "LEVYDRIFT_TOPICS_MODEL_VERSIONS": topics.model_versions,
                    "LEVYDRIFT_TOPICS_DETECTOR_STATE": topics.detector_state,
                    "LEVYDRIFT_METRICS_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1"})
        return env

    def spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = (self.output / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "levydrift.cli", *command], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()

    def check_processes(self) -> str:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise DemoFailed(f"{name} exited with code {process.returncode}; see "
                                 f"{self.output / (name + '.log')}")
        return ""

    def service_status(self, name: str) -> str:
        """What a service last logged (its log is JSON lines), to show while waiting on it."""
        self.check_processes()
        last = ""
        with contextlib.suppress(OSError), (self.output / f"{name}.log").open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 4096))
            for line in log.read().decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    last = json.loads(line).get("message") or last
        return f"{name}: {last}" if last else f"{name}: starting"

    def stop_services(self) -> None:
        self.stop_watching.set()
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # ------------------------------------------------------------------ the stream

    def stream(self, start: int, stop: int, label: str) -> None:
        producer = Producer(producer_config(self.settings.kafka))
        for batch in self.simulator().record_batches(start, stop):
            for record in batch:
                while True:
                    try:
                        producer.produce(self.topics.records, value=orjson.dumps(record),
                                         key=record["parcel_id"].encode())
                        break
                    except BufferError:
                        producer.poll(0.1)
            producer.poll(0)
        self.narrator.wait(f"Kafka to acknowledge the {label} records",
                           lambda: producer.flush(1.0) == 0, self.step_timeout_s,
                           lambda: f"{len(producer):,} unacknowledged")
        self.narrator.say(f"streamed records {start:,}-{stop - 1:,} ({label}) to "
                          f"{self.topics.records}")

    def wait_consumed(self, total: int) -> None:
        def consumed() -> float:
            return self.metric("consumer", "levydrift_consumer_records_total",
                               'outcome="valid"') or 0

        self.narrator.wait(f"the consumer to score {total:,} records",
                           lambda: consumed() >= total, self.step_timeout_s,
                           lambda: f"{consumed():,.0f} scored; {self.service_status('consumer')}")

    def watch_topics(self) -> None:
        """Read the drift-event and model-version topics as they are committed."""
        reader = Consumer(consumer_config(self.settings.kafka, f"levy-demo-{self.run_id}-watch"))
        reader.assign([TopicPartition(self.topics.drift_events, 0, 0),
                       TopicPartition(self.topics.model_versions, 0, 0)])
        try:
            while not self.stop_watching.is_set():
                for message in reader.consume(50, 0.2):
                    if message.error() is not None or message.value() is None:
                        if message.error() and message.error().code() != KafkaError._PARTITION_EOF:
                            self.facts.setdefault("watch_errors", []).append(message.error().str())
                        continue
                    self.record(message.topic(), message.value())
        finally:
            reader.close()

    def record(self, topic: str, value: bytes) -> None:
        now = self.narrator.elapsed()
        with self.observed.lock:
            if topic == self.topics.drift_events:
                self.observed.drift_events.append((now, DriftEvent.from_bytes(value)))
            else:
                self.observed.versions.append((now, ModelVersionEvent.from_bytes(value)))

    # ------------------------------------------------------------------ the narrated steps

    def wait_drift(self) -> None:
        self.narrator.wait("a drift event", lambda: self.observed.drift_events,
                           self.step_timeout_s, lambda: self.service_status("consumer"))
        seen = 0
        # One change gives one event per partition: narrate the others as they arrive.
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline and seen < PARTITIONS:
            with self.observed.lock:
                fresh = self.observed.drift_events[seen:]
            for at, event in fresh:
                self.narrate_drift(at, event)
            seen += len(fresh)
            time.sleep(0.2)

    def narrate_drift(self, at: float, event: DriftEvent) -> None:
        index = self.record_index(event.detected_at)
        delay = index - BASELINE_RECORDS
        signals = ", ".join(f"{s.signal} ({s.detector.name}, effect {s.effect_size:+.2f})"
                            for s in event.signals)
        self.facts.setdefault("drift", []).append(
            {"partition": event.current_window.partition, "signals": signals, "delay": delay,
             "kind": event.kind})
        self.narrator.say(f"DRIFT detected on partition {event.current_window.partition} "
                          f"({event.kind}): {signals}; at record {index:,}, {delay:,} records "
                          f"after the true change (seen {at:.1f}s into the demo)")

    def wait_new_version(self) -> None:
        self.narrator.say("the trainer worker retrains on the drift episode "
                          "(window read back from the records topic) ...")
        _, event = self.narrator.wait(
            "the trainer to publish version 2", lambda: next(
                ((at, e) for at, e in self.observed.versions if e.version >= 2), None),
            self.step_timeout_s, lambda: self.service_status("trainer"))
        candidate, champion = event.candidate_metrics, event.champion_metrics
        self.facts["gate"] = (f"candidate MAE ${candidate.mae:,.2f} vs champion "
                              f"${champion.mae:,.2f}" if champion else "no champion")
        self.narrator.say(f"retrained on {event.training_record_count:,} labelled records; gate "
                          f"on the same {event.holdout_records:,}-record holdout: "
                          f"{self.facts['gate']} (R² {candidate.r2:.4f})")
        if event.decision != "promoted":
            raise DemoFailed(f"the gate {event.decision} version {event.version} "
                             f"({self.facts['gate']})")
        self.facts["promoted"] = event.version
        self.narrator.say(f"version {event.version} PROMOTED to champion; model-version event "
                          f"on {self.topics.model_versions}")

    def wait_swap(self) -> None:
        version = self.facts["promoted"]
        self.narrator.wait(f"the consumer to swap to version {version}", lambda: self.metric(
            "consumer", "levydrift_consumer_champion_version") == version, self.step_timeout_s,
            lambda: self.service_status("consumer"))
        self.narrator.say(f"consumer SWAPPED to version {version} "
                          f"(levydrift_consumer_champion_version = {version}) and re-baselined "
                          "its detectors")

    def compare_models(self, start: int, stop: int) -> None:
        registry = ModelRegistry(self.registry_root)
        columns = self.simulator().columns(start, stop)
        labelled = np.isfinite(columns[TARGET])
        frame = to_model_frame({k: v[labelled] for k, v in columns.items()})
        actual = columns[TARGET][labelled]
        for version in (1, self.facts["promoted"]):
            predicted = registry.load_model(MODEL, version).predict(frame)
            self.facts[f"mae_v{version}"] = float(np.mean(np.abs(predicted - actual)))
        self.facts["after_gauge"] = self.metric("consumer",
                                                "levydrift_consumer_prediction_abs_error")
        baseline = self.simulator().columns(0, BASELINE_RECORDS)
        known = np.isfinite(baseline[TARGET])
        before = registry.load_model(MODEL, 1).predict(
            to_model_frame({k: v[known] for k, v in baseline.items()}))
        self.facts["mae_baseline"] = float(np.mean(np.abs(before - baseline[TARGET][known])))
        new = self.facts["promoted"]
        self.narrator.say(
            f"performance on the {int(labelled.sum()):,} labelled records after the swap: "
            f"version 1 would err by ${self.facts['mae_v1']:,.2f} on average, version {new} "
            f"errs by ${self.facts[f'mae_v{new}']:,.2f} (baseline with version 1: "
            f"${self.facts['mae_baseline']:,.2f}; consumer gauge now "
            f"${self.facts['after_gauge']:,.2f})")

    def print_summary(self) -> None:
        new = self.facts["promoted"]
        drift = self.facts.get("drift", [])
        rows = [
            ("run time", f"{self.narrator.elapsed():.1f}s"),
            ("records streamed", f"{BASELINE_RECORDS + CHANGE_RECORDS + AFTER_RECORDS:,} "
                                 f"({PARTITIONS} partitions)"),
            ("true change", f"record {BASELINE_RECORDS:,} ({SCENARIO}, magnitude {MAGNITUDE})"),
            ("drift events", f"{len(drift)}: " + "; ".join(
                f"p{d['partition']} {d['signals'].split(' (')[0]} +{d['delay']} records"
                for d in drift)),
            ("gate", self.facts["gate"]),
            ("champion", f"version 1 -> version {new} (consumer swapped)"),
            ("MAE baseline, v1", f"${self.facts['mae_baseline']:,.2f}"),
            ("MAE after change, v1", f"${self.facts['mae_v1']:,.2f}"),
            (f"MAE after change, v{new}", f"${self.facts[f'mae_v{new}']:,.2f}"),
        ]
        width = max(len(name) for name, _ in rows)
        print("\nsummary")
        for name, value in rows:
            print(f"  {name:<{width}}  {value}")
        model_dir = self.registry_root / MODEL
        print("\nfiles and endpoints")
        print(f"  model v{new}:           {model_dir / 'versions' / str(new) / 'model.skops'}")
        print(f"  gate metrics:       {model_dir / 'versions' / str(new) / 'metrics.json'}")
        print(f"  training history:   {model_dir / 'training_history.csv'}")
        print(f"  service logs:       {self.output / 'consumer.log'}, "
              f"{self.output / 'trainer.log'}")
        print(f"  consumer metrics:   http://127.0.0.1:{self.ports['consumer']}/metrics "
              "(while it runs)")
        print(f"  trainer metrics:    http://127.0.0.1:{self.ports['trainer']}/metrics "
              "(while it runs)")

    # ------------------------------------------------------------------ helpers

    def metric(self, service: str, name: str, labels: str = "") -> float | None:
        """One sample from a service's /metrics page; None if absent or not answering."""
        url = f"http://127.0.0.1:{self.ports[service]}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name) and labels in line and not line.startswith("#"):
                head, _, value = line.rpartition(" ")
                if head.split("{")[0] == name:
                    return float(value)
        return None

    def record_index(self, event_time: str) -> int:
        """The simulator's record index of an event time (records are 1 s apart from its
        start time), to measure the delay after the known change."""
        config = self.simulator().config
        moment = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
        elapsed_ms = (moment - config.start_time).total_seconds() * 1000
        return int(round(elapsed_ms / config.event_interval_ms))

    def delete_topics(self) -> None:
        topics = self.topics
        names = [topics.records, topics.dead_letters, topics.drift_events,
                 topics.model_versions, topics.detector_state]
        futures = admin_client(self.settings.kafka).delete_topics(names, operation_timeout=10)
        for future in futures.values():
            with contextlib.suppress(Exception):  # best effort: a leftover topic is harmless
                future.result()


def free_port(preferred: int) -> int:
    """``preferred`` when it is free (the documented ports), else any free port."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise DemoFailed("no free TCP port for a metrics endpoint")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="the drift -> retrain -> promote -> swap loop on the local broker",
        description="Create demo topics, train a first model, start levydrift consume and "
                    "levydrift train-worker, stream a baseline and a reassessment, and narrate "
                    "drift, retraining, promotion and the model swap. Each step waits up to "
                    "--step-timeout seconds and says what it waits for; exit 0 when every step "
                    "happened, 1 when one did not.")
    parser.add_argument("--output-dir", type=Path, default=Path("demo-output"), metavar="DIR",
                        help="where the registry (DIR/models) and service logs go "
                             "(default demo-output)")
    parser.add_argument("--keep-topics", action="store_true",
                        help="keep the run's levy-demo-<run>.* topics afterwards")
    parser.add_argument("--step-timeout", type=float, default=DEFAULT_STEP_TIMEOUT_S,
                        metavar="SECONDS",
                        help="how long one step (a retrain, say) may take before the demo "
                             f"gives up (default {DEFAULT_STEP_TIMEOUT_S:.0f})")
    parser.set_defaults(handler=_run)


def _run(arguments: argparse.Namespace) -> int:
    settings = settings_module.load(AdminSettings, arguments.config)
    if not arguments.step_timeout > 0:
        raise UsageError(f"--step-timeout must be > 0 seconds, got {arguments.step_timeout:g}")
    arguments.output_dir.mkdir(parents=True, exist_ok=True)
    demo = Demo(settings, arguments.output_dir.resolve(), arguments.step_timeout)
    # JSON lines in a file: nothing a Kafka client logs interrupts the narration.
    configure_logging(settings.logging.level, (demo.output / "demo.log").open("a"))
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return demo.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        demo.stop_services()
        if not arguments.keep_topics:
            demo.delete_topics()
        if demo.processes:
            print(f"stopped the services; logs in {demo.output}", flush=True)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt  # unwinds through the cleanup in _run
