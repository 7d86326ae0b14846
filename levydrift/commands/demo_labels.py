"""The demo's last act: an exemption-policy change that only the late labels show.

From record ``start`` on, the records travel without their levies, as on a real stream: each
bill's actual levy is a label on the labels topic, dated ``LABEL_DELAY`` after its record and
produced after the records that reach its date (``levydrift.simulator.arrivals``). From record
``start + WARMUP_RECORDS`` the bills apply a homestead relief that no record field shows
(``SimulatorConfig.relief_at``: the homestead-relief change on top of the reassessed county),
so the features and the champion's predictions stay as they were and only the errors of the
joined labels move. The act waits for the consumer's performance drift event on the labels
topic, for the trainer's retrain on the joined labels, and for every label to be joined.

Event time runs one second per record, so the act spans hours of it, not a levy cycle: the
delays are minutes, a real roll's months scaled down to fit the demo.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from levydrift.commands.demo_narrator import DemoFailed, Narrator
from levydrift.commands.demo_services import Services
from levydrift.commands.demo_stream import DemoTopics
from levydrift.features import TARGET, to_model_frame
from levydrift.simulator import (
    LabelDelay,
    LevySimulator,
    SimulatorConfig,
    arrivals,
    record_id,
    to_labels,
    to_records,
)
from schemas.drift_event import DriftEvent
from schemas.model_version import ModelVersionEvent
from trainer.registry import ModelRegistry

MODEL = "levy-impact"
# The error detectors on labels learn each county's errors (2,000 per partition,
# detectors.segment_warmup_records) before they judge: the labels of this many records warm
# the larger counties up (Benton's after about 14,300 labels), with room for the delay.
WARMUP_RECORDS = 18_000
RELIEF_RECORDS = 4_000  # streamed once the bills carry the relief
# A median of 30 minutes of event time (1,800 records), 90 % of labels within 13-68 minutes.
LABEL_DELAY = LabelDelay(median_days=30 / 1440, sigma=0.5)
LABELS = "levydrift_consumer_labels_total"
LABEL_ERROR = "levydrift_consumer_label_abs_error"
LABEL_LAG = "levydrift_consumer_label_lag_seconds"
RETRAINS = "levydrift_trainer_retrains_total"
CONSUMER_CHAMPION_GAUGE = "levydrift_consumer_champion_version"
Message = tuple[str, dict[str, Any]]  # (topic, record or label)


@dataclass
class LateLabelsAct:
    """Records without levies, their labels later, a relief only the labels show."""

    narrator: Narrator
    topics: DemoTopics
    services: Services
    registry_root: Path
    step_timeout_s: float
    base: SimulatorConfig  # the story so far (the reassessed county)
    champion: int  # the version serving as the act begins
    start: int  # the first record of the act
    facts: dict[str, Any] = field(default_factory=dict)
    narrated: set[str] = field(default_factory=set)  # drift event ids told

    @property
    def relief_at(self) -> int:
        return self.start + WARMUP_RECORDS

    @property
    def stop(self) -> int:
        return self.relief_at + RELIEF_RECORDS

    def simulator(self) -> LevySimulator:
        """The story's world, every bill labelled (each becomes final), the relief on top."""
        return LevySimulator(replace(self.base, labelled_share=1.0, relief_at=self.relief_at,
                                     label_delay=LABEL_DELAY))

    # ------------------------------------------------------------------ the act

    def run(self) -> dict[str, Any]:
        say = self.narrator.say
        self.facts.update(started_at=self.narrator.elapsed(), relief_at=self.relief_at)
        say(f"final act: from record {self.start:,} the records carry no levy; each bill's "
            f"actual levy follows on {self.topics.names.labels} once final, "
            f"{describe_delay(LABEL_DELAY)} after its record")
        messages = list(self.arrivals())
        first_label = next(at for at, (topic, _) in enumerate(messages)
                           if topic == self.topics.names.labels)
        lead = messages[:first_label]
        before, after = self.split_at(messages[first_label:], self.relief_at)
        truth = LevySimulator(SimulatorConfig(scenario="homestead-relief")).ground_truth()
        failed = self.services.metric("trainer", RETRAINS, 'outcome="failed"') or 0
        # The consumer lets a partition's waiting labels go after IDLE_RELEASE_S without its
        # records by the clock, whether or not records are still to come (consumer/labels.py):
        # after the pause since the last act, labels fetched before their partition's next
        # records would go unmatched. So the records ahead of the first label go first, and
        # the rest once the consumer has scored them: from then on the records never pause.
        self.stream(lead)
        self.wait_scored(self.start + len(lead))
        self.stream(before)
        say(f"scenario homestead-relief from record {self.relief_at:,}: {truth.description}")
        self.stream(after)
        self.wait_label_drift()
        self.wait_retrain(failed)
        self.wait_taken(self.facts["labels"])
        self.narrate_label_events()  # any seen since
        self.report_labels()
        self.compare_models()
        return self.facts

    def arrivals(self) -> Iterator[Message]:
        """(topic, message) in arrival order: the act's records, without levies, and their
        labels, each after the records that reach its event time."""
        first = record_id(self.base.seed, self.start)
        names = self.topics.names
        for stretch in arrivals(self.simulator(), self.stop):
            merged = stretch.interleave(to_records(stretch.records), to_labels(stretch.labels))
            for is_label, message in merged:
                if message["record_id"] >= first:  # the earlier records carried their levies
                    yield (names.labels if is_label else names.records), message

    def split_at(self, messages: list[Message], index: int) -> tuple[list[Message],
                                                                     list[Message]]:
        """The messages before record ``index`` arrives, and from it on."""
        first, records = record_id(self.base.seed, index), self.topics.names.records
        cut = next((at for at, (topic, message) in enumerate(messages)
                    if topic == records and message["record_id"] >= first), len(messages))
        return messages[:cut], messages[cut:]

    def stream(self, messages: list[Message]) -> None:
        names = self.topics.names
        records = [record_index_of(m) for topic, m in messages if topic == names.records]
        labels = len(messages) - len(records)
        span = f"records {min(records):,}-{max(records):,}"
        self.topics.send(messages, f"{span} and {labels:,} labels")
        self.facts["labels"] = self.facts.get("labels", 0) + labels
        self.narrator.say(f"streamed {span} without levies to {names.records}"
                          + (f" and, interleaved as they become final, {labels:,} labels to "
                             f"{names.labels}" if labels else " (no bill final yet)"))

    def wait_scored(self, total: int) -> None:
        def scored() -> float:
            return self.services.metric("consumer", "levydrift_consumer_records_total",
                                        'outcome="valid"') or 0

        self.narrator.wait(f"the consumer to score {total:,} records",
                           lambda: scored() >= total, self.step_timeout_s,
                           lambda: f"{scored():,.0f} scored; {self.services.status('consumer')}")

    def outcomes(self) -> dict[str, float]:
        """The labels the consumer has taken, by outcome."""
        return {outcome: self.services.metric("consumer", LABELS, f'outcome="{outcome}"') or 0
                for outcome in ("joined", "unmatched", "duplicate", "expired")}

    def wait_taken(self, total: int) -> None:
        """Until the consumer has taken every label (those still waiting when the records end
        go after some seconds without records; consumer/labels.py)."""
        def status() -> str:
            counts = ", ".join(f"{n:,.0f} {o}" for o, n in self.outcomes().items() if n)
            return f"{counts or 'none yet'}; {self.services.status('consumer')}"

        self.narrator.wait(f"the consumer to take all {total:,} labels",
                           lambda: sum(self.outcomes().values()) >= total, self.step_timeout_s,
                           status)

    def label_error(self, version: int | None = None) -> float:
        """Mean abs error of the joined labels of ``version``'s predictions (the consumer's
        summary)."""
        version = self.champion if version is None else version
        where = f'model_version="{version}"'
        total = self.services.metric("consumer", f"{LABEL_ERROR}_sum", where) or 0.0
        count = self.services.metric("consumer", f"{LABEL_ERROR}_count", where) or 0.0
        return total / count if count else float("nan")

    # ------------------------------------------------------------------ drift and retrain

    def label_events(self) -> list[tuple[float, DriftEvent]]:
        observed = self.topics.observed
        with observed.lock:
            return [(at, event) for at, event in observed.drift_events
                    if event.current_window.topic == self.topics.names.labels]

    def wait_label_drift(self) -> None:
        self.narrator.wait("a drift event from the labels", self.label_events,
                           self.step_timeout_s, lambda: self.services.status("consumer"))
        self.narrate_label_events()

    def narrate_label_events(self) -> None:
        for at, event in self.label_events():
            if event.event_id not in self.narrated:
                self.narrated.add(event.event_id)
                self.narrate_drift(at, event)

    def narrate_drift(self, at: float, event: DriftEvent) -> None:
        window = event.current_window
        signals = ", ".join(f"{s.signal} ({s.detector.name}, effect {s.effect_size:+.2f})"
                            for s in event.signals)
        index = record_index(self.base, event.detected_at)
        segment = event.segment or "the whole stream (every county)"
        self.facts.setdefault("drift", []).append({
            "partition": window.partition, "kind": event.kind, "segment": segment,
            "signal": event.signals[0].signal, "version": event.model_version,
            "delay": index - self.relief_at, "event_id": event.event_id})
        self.narrator.say(
            f"DRIFT found from the LABELS on partition {window.partition} ({event.kind}): "
            f"{signals}; segment: {segment}; attributed to version {event.model_version}, "
            f"which made those predictions; window {window.topic}[{window.partition}] offsets "
            f"{window.first_offset:,}-{window.last_offset:,}; the label that tipped it is "
            f"dated {event.detected_at} (record clock {index:,}: "
            f"{index - self.relief_at:,} records after the relief began); seen {at:.1f}s "
            "into the demo")

    def wait_retrain(self, failed_before: float) -> None:
        """The trainer's answer to the labels' drift: a version (promoted or rejected), or a
        failed retrain."""
        self.narrator.say("the trainer worker retrains on the drift episode (window: the "
                          "records whose labels the drift events name, levies joined from "
                          "the labels topic) ...")

        def answer() -> ModelVersionEvent | str | None:
            for _, event in self.topics.observed.versions:
                if event.version > self.champion:
                    return event
            failed = self.services.metric("trainer", RETRAINS, 'outcome="failed"') or 0
            return "failed" if failed > failed_before else None

        result = self.narrator.wait("the trainer's retrain on the joined labels", answer,
                                    self.step_timeout_s, lambda: self.services.status("trainer"))
        self.narrate_label_events()  # the other partition's, seen while the trainer lingered
        if not isinstance(result, ModelVersionEvent):
            raise DemoFailed("the retrain on the joined labels failed; see "
                             f"{self.services.log_path('trainer')}")
        self.narrate_version(result)

    def narrate_version(self, event: ModelVersionEvent) -> None:
        lineage = ModelRegistry(self.registry_root).get(MODEL, event.version).lineage
        labels = lineage.get("labels") or {}
        ranges = "; ".join(f"p{o.partition} {o.first_offset:,}-{o.last_offset:,}"
                           for o in event.training_offsets
                           if o.topic == self.topics.names.labels)
        triggered = set(event.trigger_event_ids) <= {d["event_id"] for d in self.facts["drift"]}
        candidate, champion = event.candidate_metrics, event.champion_metrics
        gate = (f"candidate MAE ${candidate.mae:,.2f} vs champion (version {self.champion}) "
                f"${champion.mae:,.2f}" if champion else "no champion")
        self.facts.update(version=event.version, decision=event.decision, gate=gate,
                          joined_records=labels.get("joined_records", 0))
        joined = self.facts["joined_records"]
        self.narrator.say(
            f"retrained on {event.training_record_count:,} records, "
            + ("all" if joined == event.training_record_count else f"{joined:,}")
            + f" with levies joined from the labels ({self.topics.names.labels} offsets "
            f"{ranges or 'none'})"
            + (", triggered by the labels' drift events" if triggered else "")
            + f"; gate on the same {event.holdout_records:,}-record holdout: {gate} "
            f"(R² {candidate.r2:.4f})")
        if event.decision != "promoted":
            self.narrator.say(f"version {event.version} {event.decision.upper()} by the gate; "
                              f"version {self.champion} stays champion")
            return
        self.narrator.say(f"version {event.version} PROMOTED to champion; model-version event "
                          f"on {self.topics.names.model_versions}")
        self.narrator.wait(
            f"the consumer to swap to version {event.version}",
            lambda: self.services.metric("consumer", CONSUMER_CHAMPION_GAUGE) == event.version,
            self.step_timeout_s, lambda: self.services.status("consumer"))
        self.narrator.say(f"consumer SWAPPED to version {event.version}")

    # ------------------------------------------------------------------ the tally

    def report_labels(self) -> None:
        """What became of the labels, how late they came, and what the records topic saw."""
        count = self.services.metric("consumer", f"{LABEL_LAG}_count") or 0.0
        lag_s = (self.services.metric("consumer", f"{LABEL_LAG}_sum") or 0.0) / max(count, 1.0)
        outcomes = self.outcomes()
        self.facts.update(lag_s=lag_s, outcomes=outcomes)
        lag_records = lag_s * 1000 / self.base.event_interval_ms
        self.narrator.say(
            f"the consumer took all {self.facts['labels']:,} labels: "
            + ", ".join(f"{n:,.0f} {o}" for o, n in outcomes.items())
            + f"; the joined came a mean {lag_s / 60:,.1f} minutes of event time "
            f"({lag_records:,.0f} records) after their records; version {self.champion}'s "
            f"mean abs error on its joined labels: ${self.label_error():,.2f}")
        records = self.topics.names.records
        with self.topics.observed.lock:
            seen = [event for at, event in self.topics.observed.drift_events
                    if at >= self.facts["started_at"] and event.current_window.topic == records]
        self.facts["records_events"] = len(seen)
        if not seen:
            self.narrator.say(f"no drift event on {records} during the act: no record field "
                              f"and none of version {self.champion}'s predictions moved; only "
                              "the labels showed the relief")
        else:
            self.narrator.say(f"{len(seen)} drift event(s) on {records} during the act too: "
                              + "; ".join(f"{e.kind} {e.signals[0].signal} p"
                                          f"{e.current_window.partition}" for e in seen))

    def compare_models(self) -> None:
        """The act's champion on the bills before and after the relief, and the retrained
        version after it."""
        simulator = self.simulator()
        registry = ModelRegistry(self.registry_root)
        champion, retrained = self.champion, self.facts["version"]
        self.facts["mae_before_relief"], _ = labelled_error(
            registry.load_model(MODEL, champion),
            simulator.columns(self.relief_at - RELIEF_RECORDS, self.relief_at))
        after = simulator.columns(self.relief_at, self.stop)
        for version in {champion, retrained}:
            self.facts[f"mae_v{version}"], count = labelled_error(
                registry.load_model(MODEL, version), after)
        self.narrator.say(
            f"on the {count:,} bills after the relief version {champion} errs by "
            f"${self.facts[f'mae_v{champion}']:,.2f} on average (on the {count:,} before "
            f"it: ${self.facts['mae_before_relief']:,.2f}), version {retrained} by "
            f"${self.facts[f'mae_v{retrained}']:,.2f}")


def record_index_of(message: dict[str, Any]) -> int:
    """The simulator's index of a record (or of a label's record), from its record id."""
    return int(message["record_id"].rsplit("-", 1)[1])


def describe_delay(delay: LabelDelay) -> str:
    """The delay distribution in minutes: its median and its 5th-95th percentiles."""
    low, high = (delay.median_days * 1440 * np.exp(delay.sigma * z) for z in (-1.645, 1.645))
    return (f"a median {delay.median_days * 1440:,.0f} minutes of event time (log-normal, "
            f"90 % within {low:,.0f}-{high:,.0f} minutes)")


def record_index(config: SimulatorConfig, event_time: str) -> int:
    """The simulator's record index of an event time (records are ``event_interval_ms``
    apart from its start time)."""
    moment = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
    elapsed_ms = (moment - config.start_time).total_seconds() * 1000
    return int(round(elapsed_ms / config.event_interval_ms))


def labelled_error(model: Any, columns: dict[str, np.ndarray]) -> tuple[float, int]:
    """``model``'s mean absolute error on the labelled records of ``columns``, and how many
    records are labelled."""
    labelled = np.isfinite(columns[TARGET])
    predicted = model.predict(to_model_frame({k: v[labelled] for k, v in columns.items()}))
    return float(np.mean(np.abs(predicted - columns[TARGET][labelled]))), int(labelled.sum())
