"""``levydrift demo``: the whole loop on the local broker, narrated as it happens.

Topics of its own (``levy-demo-<run>.*``, deleted afterwards) and a fresh registry
(``demo-output/models``) make every run independent of the last. A first model is trained on
simulated history and published; ``levydrift consume`` and ``levydrift train-worker`` run as
real subprocesses; a baseline and then a ``reassessment`` are streamed; a last act
(``demo_labels.LateLabelsAct``) streams records without levies, their labels later, and a
homestead relief only the labels show. Everything narrated is read back from the real topics,
the services' metrics endpoints and the registry.

Each step waits for a condition, saying what it waits for and how it is going, for up to
``--step-timeout`` seconds (generous: a loaded machine fits a model many times slower than a
quiet one); only a step that never happens ends the demo with exit code 1. The demo's own logs
(librdkafka's included) go to ``<output>/demo.log`` as JSON lines, never into the narration.

``Demo`` tells the story; its helpers do the work: ``demo_stream.DemoTopics`` (the run's
topics, streamed to and watched), ``demo_services.Services`` (the two services as child
processes, and their metrics), ``demo_narrator.Narrator`` (the narration and the waits) and
``demo_labels.LateLabelsAct`` (the last act).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from levydrift import settings as settings_module
from levydrift.commands.demo_labels import LateLabelsAct, labelled_error, record_index
from levydrift.commands.demo_narrator import DemoFailed, Narrator
from levydrift.commands.demo_services import Services
from levydrift.commands.demo_stream import DemoTopics
from levydrift.errors import UsageError
from levydrift.features import to_model_frame
from levydrift.kafka import admin_client, ensure_reachable
from levydrift.logs import configure as configure_logging
from levydrift.settings import AdminSettings, RegistrySettings
from levydrift.simulator import LevySimulator, SimulatorConfig
from schemas.drift_event import DriftEvent
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
# How long one step may take before the demo gives up. A quiet 2-core machine needs < 15 s for
# any step; a loaded one was seen taking 55 s to fit version 2.
DEFAULT_STEP_TIMEOUT_S = 600.0
ABS_ERROR_GAUGE = "levydrift_consumer_prediction_abs_error"
CONSUMER_CHAMPION_GAUGE = "levydrift_consumer_champion_version"


class Demo:
    """The story: each step of the loop, done by the helpers, waited for and narrated."""

    def __init__(self, settings: AdminSettings, output: Path,
                 step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S) -> None:
        self.settings = settings
        self.output = output
        self.step_timeout_s = step_timeout_s
        self.narrator = Narrator()
        self.run_id = uuid.uuid4().hex[:8]
        self.topics = DemoTopics(settings.kafka, self.run_id, PARTITIONS, self.narrator,
                                 step_timeout_s)
        self.services = Services(output)
        self.facts: dict[str, Any] = {}  # what the summary reports

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
        self.facts["baseline_gauge"] = self.services.metric("consumer", ABS_ERROR_GAUGE)
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
        self.facts["late"] = LateLabelsAct(
            self.narrator, self.topics, self.services, self.registry_root, self.step_timeout_s,
            self.simulator().config, self.facts["promoted"], start + AFTER_RECORDS).run()
        self.print_summary()
        self.print_files()
        return 0

    def prepare(self) -> None:
        if self.registry_root.exists():
            shutil.rmtree(self.registry_root)
        self.registry_root.mkdir(parents=True)
        created = self.topics.create(self.settings.topics.replication_factor)
        self.narrator.say(f"created {created} topics {self.topics.prefix}.* "
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
        registry.mark_published(MODEL, info.version, {"topic": self.topics.names.model_versions,
                                                      "decision": "promoted"})
        mae = info.metrics["candidate"]["mae"]
        self.facts["v1_holdout_mae"] = mae
        self.narrator.say(f"version 1 trained on {HISTORY_RECORDS:,} simulated historical "
                          f"records (holdout MAE ${mae:,.2f}), promoted and published")

    def trainer_settings(self) -> TrainerSettings:
        section = replace(TrainerSection(), transactional_id_prefix=self.topics.prefix)
        return TrainerSettings(kafka=self.settings.kafka, topics=self.topics.names,
                               trainer=section, registry=RegistrySettings(str(self.registry_root)))

    def start_services(self) -> None:
        services = self.services
        services.start(self.run_id, self.settings.kafka, self.topics.names, self.registry_root)
        self.topics.start_watching()
        self.narrator.wait(
            "the consumer to load version 1",
            lambda: services.metric("consumer", CONSUMER_CHAMPION_GAUGE) == 1,
            self.step_timeout_s, lambda: services.status("consumer"))
        self.narrator.wait("the trainer worker's metrics", lambda: services.metric(
            "trainer", "levydrift_trainer_champion_version") is not None, self.step_timeout_s,
            lambda: services.status("trainer"))
        self.narrator.say(f"started levydrift consume (pid {services.processes['consumer'].pid}, "
                          f"metrics :{services.ports['consumer']}) and levydrift train-worker "
                          f"(pid {services.processes['trainer'].pid}, metrics "
                          f":{services.ports['trainer']}); the consumer serves version 1")

    def stop_services(self) -> None:
        self.topics.stop_watching()
        self.services.stop()

    def stream(self, start: int, stop: int, label: str) -> None:
        self.topics.produce(self.simulator().record_batches(start, stop), label)
        self.narrator.say(f"streamed records {start:,}-{stop - 1:,} ({label}) to "
                          f"{self.topics.names.records}")

    def wait_consumed(self, total: int) -> None:
        def consumed() -> float:
            return self.services.metric("consumer", "levydrift_consumer_records_total",
                                        'outcome="valid"') or 0

        self.narrator.wait(f"the consumer to score {total:,} records",
                           lambda: consumed() >= total, self.step_timeout_s,
                           lambda: f"{consumed():,.0f} scored; "
                                   f"{self.services.status('consumer')}")

    def wait_drift(self) -> None:
        observed = self.topics.observed
        self.narrator.wait("a drift event", lambda: observed.drift_events,
                           self.step_timeout_s, lambda: self.services.status("consumer"))
        seen = 0
        # One change gives one event per partition: narrate the others as they arrive.
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline and seen < PARTITIONS:
            with observed.lock:
                fresh = observed.drift_events[seen:]
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
        versions = self.topics.observed.versions
        _, event = self.narrator.wait(
            "the trainer to publish version 2", lambda: next(
                ((at, e) for at, e in versions if e.version >= 2), None),
            self.step_timeout_s, lambda: self.services.status("trainer"))
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
                          f"on {self.topics.names.model_versions}")

    def wait_swap(self) -> None:
        version = self.facts["promoted"]
        self.narrator.wait(
            f"the consumer to swap to version {version}",
            lambda: self.services.metric("consumer", CONSUMER_CHAMPION_GAUGE) == version,
            self.step_timeout_s, lambda: self.services.status("consumer"))
        self.narrator.say(f"consumer SWAPPED to version {version} "
                          f"(levydrift_consumer_champion_version = {version}) and re-baselined "
                          "its detectors")

    def compare_models(self, start: int, stop: int) -> None:
        """Version 1 and the new champion on the records after the change, and version 1 on
        the baseline: the new model should err about as little as the old one did before."""
        registry = ModelRegistry(self.registry_root)
        new = self.facts["promoted"]
        after = self.simulator().columns(start, stop)
        for version in (1, new):
            self.facts[f"mae_v{version}"], labelled = labelled_error(
                registry.load_model(MODEL, version), after)
        self.facts["after_gauge"] = self.services.metric("consumer", ABS_ERROR_GAUGE)
        self.facts["mae_baseline"], _ = labelled_error(
            registry.load_model(MODEL, 1), self.simulator().columns(0, BASELINE_RECORDS))
        self.narrator.say(
            f"performance on the {labelled:,} labelled records after the swap: "
            f"version 1 would err by ${self.facts['mae_v1']:,.2f} on average, version {new} "
            f"errs by ${self.facts[f'mae_v{new}']:,.2f} (baseline with version 1: "
            f"${self.facts['mae_baseline']:,.2f}; consumer gauge now "
            f"${self.facts['after_gauge']:,.2f})")

    def print_summary(self) -> None:
        new = self.facts["promoted"]
        drift = self.facts.get("drift", [])
        late = self.facts["late"]
        retrained = late["version"]
        latest = retrained if late["decision"] == "promoted" else new
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
            ("late labels", f"{late['labels']:,}, a mean {late['lag_s'] / 60:,.1f} min of event "
                            "time after their records"),
            ("true change (labels)", f"record {late['relief_at']:,} (homestead-relief: the "
                                     "bills alone)"),
            ("label drift events", f"{len(late['drift'])}: " + "; ".join(
                f"p{d['partition']} {d['kind']} {d['signal']} of version {d['version']}, "
                f"+{d['delay']:,} records" for d in late["drift"])
                + f"; records topic: {late['records_events']}"),
            ("retrain on labels", f"version {late['version']} {late['decision']}: "
                                  f"{late['gate']}"),
            (f"MAE after relief, v{new}", f"${late[f'mae_v{new}']:,.2f}"),
            *([(f"MAE after relief, v{retrained}", f"${late[f'mae_v{retrained}']:,.2f}")]
              if retrained != new else []),
            ("champion now", f"version {latest}"),
        ]
        width = max(len(name) for name, _ in rows)
        print("\nsummary")
        for name, value in rows:
            print(f"  {name:<{width}}  {value}")

    def print_files(self) -> None:
        new = self.facts["promoted"]
        model_dir = self.registry_root / MODEL
        ports = self.services.ports
        print("\nfiles and endpoints")
        print(f"  model v{new}:           {model_dir / 'versions' / str(new) / 'model.skops'}")
        print(f"  gate metrics:       {model_dir / 'versions' / str(new) / 'metrics.json'}")
        print(f"  training history:   {model_dir / 'training_history.csv'}")
        print(f"  service logs:       {self.output / 'consumer.log'}, "
              f"{self.output / 'trainer.log'}")
        print(f"  consumer metrics:   http://127.0.0.1:{ports['consumer']}/metrics "
              "(while it runs)")
        print(f"  trainer metrics:    http://127.0.0.1:{ports['trainer']}/metrics "
              "(while it runs)")

    def record_index(self, event_time: str) -> int:
        """The simulator's record index of an event time, to measure the delay after the
        known change."""
        return record_index(self.simulator().config, event_time)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="the drift -> retrain -> promote -> swap loop on the local broker",
        description="Create demo topics, train a first model, start levydrift consume and "
                    "levydrift train-worker, stream a baseline and a reassessment, and narrate "
                    "drift, retraining, promotion and the model swap; then stream records "
                    "without levies and their labels later, with a homestead relief only the "
                    "labels show, and narrate the performance drift found from them and the "
                    "retrain on the joined labels. Each step waits up to "
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
            demo.topics.delete()
        if demo.services.processes:
            print(f"stopped the services; logs in {demo.output}", flush=True)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt  # unwinds through the cleanup in _run
