"""``levydrift check``: the consumer's detector bank over a file of levy records.

The successor of ``python ml/hooks/drift_detector.py --data-path ... --trigger-retraining``.
Rows are fed in file order (their arrival order) with row positions in place of Kafka offsets,
through the same ``SegmentedBank`` and the same model signals (``levydrift.signals``) as the
consumer. The baseline is, in order: ``--reference FILE``; the champion's reference sample (its
holdout, as the consumer uses it); else each segment learns its reference from its first
``detectors.segment_warmup_records`` values, as the consumer does from the start of a partition.
The output and the JSON summary say which. A file no longer than ``detectors.warmup_records``
rows with no reference cannot be judged (exit 2). A reference (file or champion sample) warms
every segment up before the file's rows.

Handled drift is handled once: with ``--trigger-retraining`` the drift episodes are planned as
the trainer worker plans them (``TrainWorker.plan``: events already in a version's lineage, or
covered by a version trained on the same data or within the episode gap, are not retrained), so
a second run on the same file trains nothing.

Exit codes: 0 no drift, 1 drift, 2 usage error or bad file, 3 broker unreachable
(``--publish-events``).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from detectors.bank import DetectorStatus
from detectors.config import DetectorSettings
from detectors.decision import DriftDecision, SignalFinding
from detectors.errors import DetectorConfigError
from detectors.reference import Reference, reference_for_signals
from detectors.segments import SegmentedBank
from levydrift import settings as settings_module
from levydrift.errors import UsageError
from levydrift.levyfile import read_levy_file
from levydrift.logs import configure as configure_logging
from levydrift.progress import Progress
from levydrift.settings import KafkaSettings, LoggingSettings, TopicSettings
from levydrift.signals import ModelScorer, signal_columns
from trainer.config import TrainerSection

log = logging.getLogger(__name__)

EXIT_NO_DRIFT = 0
EXIT_DRIFT = 1
CHECK_SLICE_ROWS = 262_144  # rows fed to the detectors at a time, between progress updates
CHECK_GROUP = "levydrift-check"  # the "consumer group" named in drift events from a file


@dataclass(frozen=True)
class CheckSettings:
    """What ``levydrift check`` and ``levydrift schedule`` read from the shared settings."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    logging: LoggingSettings = field(default_factory=LoggingSettings)


def load_check_settings(path: str | None) -> CheckSettings:
    """Load and validate; any problem is a one-line ``ConfigError``."""
    return settings_module.load(CheckSettings, path)


@dataclass
class CheckResult:
    """One check: the file's signal columns and the bank's decisions (positions = row - 1)."""

    source: str
    rows: int
    columns: dict[str, np.ndarray]
    decisions: list[DriftDecision]
    model: str
    model_version: int | None
    reference: str
    duration_s: float = 0.0
    # The data as a training window ({topic, partition, first_offset, last_offset}); the topic
    # names the content (file.<name>.<sha256>), so the same data is recognised as handled.
    window: dict[str, Any] = field(default_factory=dict)
    reference_kind: str = "warm-up"  # "file" | "champion" | "warm-up": see ``Baseline``
    # The baseline's values per signal (the report draws them against the current rows).
    reference_columns: dict[str, np.ndarray] = field(default_factory=dict)
    signal_kinds: dict[str, str] = field(default_factory=dict)  # every configured signal
    detector_status: list[DetectorStatus] = field(default_factory=list)  # at the last row

    @property
    def drifted(self) -> bool:
        return bool(self.decisions)

    @property
    def exit_code(self) -> int:
        return EXIT_DRIFT if self.decisions else EXIT_NO_DRIFT

    def drifted_signals(self) -> list[str]:
        """Each drifted signal once, in order of first detection."""
        names: list[str] = []
        for decision in self.decisions:
            names.extend(s for s in decision.signal_names if s not in names)
        return names

    def findings(self) -> list[tuple[DriftDecision, SignalFinding]]:
        return [(decision, finding) for decision in self.decisions
                for finding in decision.signals]


# ---------------------------------------------------------------------- the check itself

@dataclass(frozen=True)
class Baseline:
    """What the current rows are compared against; ``reference`` None means the warm-up."""

    reference: Reference | None
    description: str
    kind: str  # "file" | "champion" | "warm-up"
    columns: dict[str, np.ndarray] | None = None  # the values it was built from


def warmup_baseline(detectors: DetectorSettings) -> Baseline:
    return Baseline(None, f"each segment's first {detectors.segment_warmup_records:,} values "
                          "(warm-up, no champion reference sample)", "warm-up")


def run_check(columns: dict[str, np.ndarray], detectors: DetectorSettings,
              scorer: ModelScorer | None = None, baseline: Baseline | None = None,
              source: str = "", model: str = "",
              window: dict[str, Any] | None = None,
              progress: Progress | None = None) -> CheckResult:
    """Feed ``columns`` (arrival order) through a fresh bank; pure apart from the model."""
    started = time.perf_counter()
    rows = len(columns["record_id"])
    if progress is not None:
        progress.phase(f"scoring {rows:,} rows" if scorer else f"preparing {rows:,} rows")
    columns = signal_columns(dict(columns), scorer)
    baseline = baseline or warmup_baseline(detectors)
    bank = SegmentedBank(detectors, baseline.reference)
    if baseline.kind == "file":  # baseline rows seed every segment; the champion's holdout
        bank.learn(baseline.columns)  # sample is used as the consumer uses it

    if progress is not None:
        progress.phase("running the detectors")
    decisions = []
    # In slices, to show progress: the bank gives the same decisions however a stream is cut.
    for start in range(0, rows, CHECK_SLICE_ROWS):
        stop = min(rows, start + CHECK_SLICE_ROWS)
        decisions.extend(bank.update({name: values[start:stop] for name, values in columns.items()},
                                     np.arange(start, stop, dtype=np.int64)))
        if progress is not None:
            progress.update(stop)
    decisions.extend(bank.finish())  # end of input closes every event-time window
    reference_columns = baseline.columns if baseline.columns is not None else {
        name: column[:detectors.warmup_records] for name, column in columns.items()}
    return CheckResult(
        source, rows, columns, decisions, model, scorer.version if scorer else None,
        baseline.description, time.perf_counter() - started, dict(window or {}), baseline.kind,
        reference_columns=reference_columns,
        signal_kinds={name: detectors.kind_of(name) for name in detectors.all_signals()},
        detector_status=bank.status())


def file_baseline(path: Path, detectors: DetectorSettings,
                  scorer: ModelScorer | None) -> Baseline:
    """``--reference FILE``: its records (scored by the champion, if any) describe normal."""
    columns = signal_columns(dict(read_levy_file(path)), scorer)
    return Baseline(reference_for_signals(columns, detectors.all_signals()),
                    f"{path} ({len(columns['record_id']):,} rows, --reference)", "file",
                    columns)


def champion_baseline(registry_root: str, model: str, version: int,
                      detectors: DetectorSettings) -> Baseline | None:
    """The champion's reference sample (``reference.parquet``, its holdout with predictions
    and errors), as the consumer uses it; None when the version has none."""
    from levydrift.artifacts import load_reference_sample
    from trainer.registry import ModelRegistry

    version_dir = ModelRegistry(registry_root).version_dir(model, version)
    sample = load_reference_sample(version_dir)
    if sample is None:
        return None
    columns = {name: sample[name].to_numpy() for name in sample.columns}
    return Baseline(reference_for_signals(columns, detectors.all_signals()),
                    f"champion {model} v{version} reference sample ({len(sample):,} holdout "
                    f"rows, {version_dir / 'reference.parquet'})", "champion", columns)


def load_scorer(registry_root: str, model: str) -> tuple[ModelScorer | None, str]:
    """The champion of ``model`` in the registry (verified artifact), or None with the reason
    the model signals are skipped."""
    from trainer.registry import ModelRegistry

    registry = ModelRegistry(registry_root)
    version = registry.champion(model) if model in registry.model_names() else None
    if version is None:
        return None, f"no champion of {model} in {registry.root}: prediction and error " \
                     "signals not checked"
    return ModelScorer(registry.load_model(model, version), version), ""


# ---------------------------------------------------------------------- output

def describe(result: CheckResult) -> list[str]:
    """Human-readable lines: the verdict, then one line per drifted signal."""
    model = (f"model {result.model} v{result.model_version}" if result.model_version
             else "no model")
    lines = [f"{result.source}: {result.rows:,} rows; {model}; reference: {result.reference}"]
    if not result.drifted:
        lines.append("no drift")
        return lines
    lines.append(f"DRIFT: {len(result.decisions)} episode(s), signals "
                 + ", ".join(result.drifted_signals()))
    for decision, finding in result.findings():
        lines.append("  " + finding_line(decision, finding, result.reference_kind))
    return lines


def finding_line(decision: DriftDecision, finding: SignalFinding,
                 reference_kind: str = "file") -> str:
    firing = _strongest(finding)
    current = rows_text(finding.current.first_position, decision.detected_at)
    reference = rows_text(finding.reference.first_position, finding.reference.last_position,
                          reference_kind)
    where = f" in {decision.segment}" if decision.segment else ""
    return (f"{decision.kind:<12} {finding.signal:<22} at row {decision.detected_at + 1:,}: "
            f"{effect_text(finding)}; rows {current} vs reference {reference} "
            f"({firing.detector} {firing.direction}){where}")


def segment_name(decision: DriftDecision) -> str:
    """Where a decision was made: its segment (``county=Grant``) or the whole stream."""
    return decision.segment or "whole stream"


def onset_row(decision: DriftDecision, finding: SignalFinding) -> int | None:
    """1-based row where the change is estimated to begin: the segment layer's onset, else the
    start of the finding's current window."""
    onset = decision.onset_at if decision.onset_at is not None else finding.current.first_position
    return None if onset is None or onset < 0 else onset + 1


def segment_table(result: CheckResult) -> list[dict[str, Any]]:
    """One row per segment (or the whole stream) with drift: its signals, first onset and
    first detection (1-based rows), in order of first detection."""
    rows: dict[str, dict[str, Any]] = {}
    for decision, finding in result.findings():
        row = rows.setdefault(segment_name(decision), {
            "segment": segment_name(decision), "signals": [], "kinds": [],
            "onset_row": onset_row(decision, finding),
            "detected_row": decision.detected_at + 1, "episodes": 0})
        if finding.signal not in row["signals"]:
            row["signals"].append(finding.signal)
        if decision.kind not in row["kinds"]:
            row["kinds"].append(decision.kind)
        row["episodes"] += 1
    return sorted(rows.values(), key=lambda row: row["detected_row"])


def effect_text(finding: SignalFinding) -> str:
    """The effect with its unit: reference standard deviations (rank-based normal scores),
    a ratio of spreads, or percentage points of a category's share."""
    size = finding.effect_size
    if finding.effect_measure == "mean_shift":
        return f"mean shift {size:+.2f} sd"
    if finding.effect_measure == "std_ratio":
        return f"spread ×{size:.2f}"
    moved = top_category(finding)
    points = f"{size * 100:+.1f} pp"
    return f"share of {moved!r} {points}" if moved else f"share change {points}"


def signal_table(result: CheckResult) -> list[dict[str, Any]]:
    """One row per configured signal: drift (its first finding), clean (the detector nearest
    its threshold at the last row) or not checked (and why). Rows are 1-based."""
    findings: dict[str, list[tuple[DriftDecision, SignalFinding]]] = {}
    for decision, finding in result.findings():
        findings.setdefault(finding.signal, []).append((decision, finding))
    statuses: dict[str, list[DetectorStatus]] = {}
    for status in result.detector_status:
        statuses.setdefault(status.signal, []).append(status)
    return [_signal_row(result, name, kind, findings.get(name, []), statuses.get(name, []))
            for name, kind in result.signal_kinds.items()]


def _signal_row(result: CheckResult, name: str, kind: str,
                found: list[tuple[DriftDecision, SignalFinding]],
                statuses: list[DetectorStatus]) -> dict[str, Any]:
    row: dict[str, Any] = {"signal": name, "kind": kind}
    if found:
        decision, finding = found[0]
        firing = _strongest(finding)
        segments = sorted({segment_name(d) for d, _ in found})
        return {**row, "status": "drift", "detector": firing.detector,
                "direction": firing.direction, "statistic": firing.statistic,
                "threshold": firing.threshold, "effect": effect_text(finding),
                "effect_measure": finding.effect_measure, "effect_size": finding.effect_size,
                "onset_row": onset_row(decision, finding), "segments": segments,
                "detected_row": decision.detected_at + 1, "episodes": len(found)}
    reason = _not_checked(result, name, kind, statuses)
    if reason:
        return {**row, "status": "not checked", "reason": reason}
    nearest = max(statuses, key=lambda s: s.statistic / s.threshold
                  if s.threshold and np.isfinite(s.threshold) else 0.0)
    return {**row, "status": "clean", "detector": nearest.detector,
            "statistic": nearest.statistic, "threshold": nearest.threshold,
            "reason": "nearest its threshold at the last row"}


def _not_checked(result: CheckResult, name: str, kind: str,
                 statuses: list[DetectorStatus]) -> str:
    column = result.columns.get(name)
    if column is None:
        return "not in the data"
    if np.asarray(column).dtype.kind == "f" and not np.isfinite(column).any():
        if kind in ("prediction", "performance") and result.model_version is None:
            return "no champion model to predict with"
        return "no labelled rows" if kind == "performance" else "no values"
    if not statuses or all(status.warming_up for status in statuses):
        return "still warming up at the last row (too few values for a reference)"
    return ""


def _strongest(finding: SignalFinding) -> Any:
    return max(finding.firings, key=lambda f: f.statistic / f.threshold if f.threshold else 0)


def top_category(finding: SignalFinding) -> str | None:
    """The category whose share moved most between the windows."""
    reference = dict(finding.reference.category_shares)
    current = dict(finding.current.category_shares)
    names = set(reference) | set(current) | set(finding.current.new_categories)
    if not names:
        return None
    return max(sorted(names), key=lambda n: abs(current.get(n, 0.0) - reference.get(n, 0.0)))


def rows_text(first: int | None, last: int | None, reference_kind: str = "file") -> str:
    if first is None or last is None or first < 0:  # a reference not taken from these rows
        return "(champion's reference sample)" if reference_kind == "champion" \
            else "(reference file)"
    return f"{first + 1:,}-{last + 1:,}"


def summary(result: CheckResult) -> dict[str, Any]:
    """The JSON summary (rows are 1-based, like the printed ones)."""
    return {
        "source": result.source, "rows": result.rows, "drift": result.drifted,
        "exit_code": result.exit_code, "model": result.model,
        "model_version": result.model_version, "reference": result.reference,
        "reference_kind": result.reference_kind, "window": result.window,
        "duration_s": round(result.duration_s, 3),
        "drifted_signals": result.drifted_signals(),
        "signals": signal_table(result),
        "segments": segment_table(result),
        "episodes": [{
            "kind": decision.kind, "detected_at_row": decision.detected_at + 1,
            "segment": segment_name(decision),
            "onset_row": (decision.onset_at + 1 if decision.onset_at is not None
                          and decision.onset_at >= 0 else None),
            "signals": [_finding_summary(decision, finding) for finding in decision.signals],
        } for decision in result.decisions],
    }


def _finding_summary(decision: DriftDecision, finding: SignalFinding) -> dict[str, Any]:
    firing = _strongest(finding)

    def rows(first: int | None, last: int | None) -> list[int] | None:
        return None if first is None or last is None else [first + 1, last + 1]

    return {
        "signal": finding.signal, "effect_size": finding.effect_size,
        "effect_measure": finding.effect_measure, "effect": effect_text(finding),
        "detector": firing.detector, "direction": firing.direction,
        "statistic": firing.statistic, "threshold": firing.threshold,
        "reference_rows": rows(finding.reference.first_position,
                               finding.reference.last_position),
        "current_rows": rows(finding.current.first_position, decision.detected_at),
        "reference_mean": finding.reference.mean, "current_mean": finding.current.mean,
        "reference_std": finding.reference.std, "current_std": finding.current.std,
    }


# ---------------------------------------------------------------------- retraining

@dataclass(frozen=True)
class RetrainOutcome:
    """What ``--trigger-retraining`` did: trained a version, found every episode handled
    already, or handed the events to the trainer worker."""

    action: str  # "trained" | "handled" | "published"
    line: str
    version: Any = None  # trainer.registry.VersionInfo when trained
    handled_by: dict[str, int] = field(default_factory=dict)  # drift event id -> version


def retrain_once(result: CheckResult, settings: CheckSettings,
                 registry_root: str) -> RetrainOutcome:
    """Retrain on the drift episodes no version has handled yet, planned by the trainer
    worker's own rules; train nothing when all are handled."""
    from trainer.cli import _version_line
    from trainer.registry import ModelRegistry

    events = file_events(result, settings)
    plan = _worker(settings, registry_root, result.model).plan(events)
    fresh = {event.event_id for event in plan.fresh}
    lineage = ModelRegistry(registry_root).handled_event_ids(result.model)
    handled = {event.event_id: lineage.get(event.event_id, plan.covered.get(event.event_id))
               for event in events if event.event_id not in fresh}
    if not plan.fresh:
        versions = sorted({v for v in handled.values() if v is not None})
        return RetrainOutcome("handled", "drift already handled by version(s) "
                              + ", ".join(map(str, versions)) + "; nothing retrained",
                              handled_by=handled)
    info = train_on_result(result, settings, registry_root, plan.fresh)
    return RetrainOutcome("trained", _version_line(info), info, handled)


def trained_on_same_data(result: CheckResult, registry_root: str) -> int | None:
    """The newest version trained on exactly this data (same content hash), if any."""
    from trainer.registry import ModelRegistry

    registry = ModelRegistry(registry_root)
    for version in reversed(registry.versions(result.model)):
        windows = registry.get(result.model, version).lineage.get("training_window", {})
        if any(w.get("topic") == result.window.get("topic") for w in windows.get("offsets", [])):
            return version
    return None


def train_on_result(result: CheckResult, settings: CheckSettings, registry_root: str,
                    events: list[Any]) -> Any:
    """Train a candidate on the data's most recent labelled rows and gate it against the
    registry's champion (the trainer's own run); returns the ``VersionInfo``."""
    from levydrift.features import to_model_frame
    from trainer.events import code_version
    from trainer.model import ModelParams
    from trainer.registry import ModelRegistry
    from trainer.training import TrainingRequest, train_and_register
    from trainer.worker import event_summary

    section = settings.trainer
    frame = to_model_frame(result.columns, include_target=True)
    labelled = frame[np.isfinite(frame["actual_levy_amount"].to_numpy(float))]
    frame = labelled.iloc[-section.window_records:].reset_index(drop=True)
    return train_and_register(ModelRegistry(registry_root), result.model, TrainingRequest(
        frame=frame, trigger_event_ids=[event.event_id for event in events],
        training_offsets=[result.window],
        code_version=section.code_version or code_version(),
        holdout_fraction=section.holdout_fraction, gate_margin=section.gate_margin,
        min_training_records=section.min_training_records,
        params=ModelParams(max_iter=section.max_iter),
        extra_lineage={"source": result.source,
                       "drifted_signals": result.drifted_signals(),
        "signals": signal_table(result),
                       "drift_events": [event_summary(event) for event in events]}))


def _worker(settings: CheckSettings, registry_root: str, model: str) -> Any:
    """A trainer worker (not started: no Kafka) for its ``plan`` of drift events."""
    from trainer.config import TrainerSettings
    from trainer.worker import TrainWorker

    return TrainWorker(TrainerSettings(kafka=settings.kafka, topics=settings.topics,
                                       trainer=replace(settings.trainer, model_name=model,
                                                       registry_root=registry_root)))


def file_events(result: CheckResult, settings: CheckSettings) -> list[Any]:
    """Drift events (schema v1) for the decisions, with the rows as offsets of the data's
    window topic (``file.<name>.<hash>``: the trainer's convention for file windows)."""
    from consumer.config import ConsumerSection, ConsumerSettings
    from consumer.events import decision_to_event

    consumer_settings = ConsumerSettings(
        topics=settings.topics, consumer=replace(ConsumerSection(), group_id=CHECK_GROUP,
                                                 model_name=result.model))
    times = result.columns["event_time"]
    return [decision_to_event(decision, result.window["topic"], 0, consumer_settings,
                              result.model_version, str(times[decision.detected_at]))
            for decision in result.decisions]


def publish_events(result: CheckResult, settings: CheckSettings) -> int:
    """Send the drift events to the drift-events topic for the trainer worker."""
    from confluent_kafka import Producer

    from levydrift.errors import BrokerUnavailableError
    from levydrift.kafka import admin_client, ensure_reachable, producer_config

    ensure_reachable(admin_client(settings.kafka), settings.kafka)
    producer = Producer(producer_config(settings.kafka))
    failures: list[str] = []
    events = file_events(result, settings)
    for event in events:
        producer.produce(settings.topics.drift_events, value=event.to_bytes(),
                         key=result.model.encode(),
                         on_delivery=lambda error, _m: failures.append(error.str()) if error
                         else None)
    if producer.flush(settings.kafka.request_timeout_s) or failures:
        raise BrokerUnavailableError(
            f"publishing drift events to {settings.topics.drift_events} failed: "
            f"{failures[0] if failures else 'not acknowledged in time'}")
    return len(events)


# ---------------------------------------------------------------------- command line

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check", help="run the drift detectors over a file of levy records",
        description="Run the consumer's detector bank over a CSV, Parquet or JSONL file of "
                    "levy records (in arrival order). Exit codes: 0 no drift, 1 drift, "
                    "2 usage error or bad file, 3 broker unreachable.")
    parser.add_argument("--data-path", required=True, type=Path, metavar="FILE",
                        help="levy records (.csv, .parquet, .jsonl) in arrival order")
    parser.add_argument("--reference", type=Path, metavar="FILE",
                        help="baseline records (default: the champion's reference sample, "
                             "else the first detectors.warmup_records rows of --data-path)")
    parser.add_argument("--report", type=Path, metavar="PATH",
                        help="write an HTML report (a table of every signal, distributions "
                             "and time course per drifted one) and a JSON summary: PATH.html "
                             "+ PATH.json, or PATH/index.html + PATH/summary.json")
    parser.add_argument("--trigger-retraining", action="store_true",
                        help="on drift no version has handled yet, train a candidate on the "
                             "file and gate it against the registry's champion (or, with "
                             "--publish-events, leave that to the trainer worker)")
    parser.add_argument("--publish-events", action="store_true",
                        help="with --trigger-retraining: publish the drift events to the "
                             "drift-events topic instead of training here")
    parser.add_argument("--model", help="model name (default: trainer.model_name)")
    parser.add_argument("--registry", metavar="DIR",
                        help="registry root (default: trainer.registry_root)")
    parser.set_defaults(handler=_run)


def _run(arguments: argparse.Namespace) -> int:
    if arguments.publish_events and not arguments.trigger_retraining:
        raise UsageError("--publish-events only makes sense with --trigger-retraining")
    settings = load_check_settings(arguments.config)
    configure_logging(settings.logging.level)
    with Progress("check", unit="rows") as progress:
        result = check_file(arguments.data_path, settings, arguments.reference,
                            arguments.model, arguments.registry, progress=progress)
    for line in describe(result):
        print(line)
    if arguments.report is not None:
        from levydrift.report import write_report

        html, json_path = write_report(result, arguments.report)
        print(f"report: {html} (summary {json_path})")
    if result.drifted and arguments.trigger_retraining:
        print(trigger_retraining(result, settings, arguments.registry,
                                 arguments.publish_events).line)
    return result.exit_code


def check_file(path: Path, settings: CheckSettings, reference: Path | None = None,
               model: str | None = None, registry: str | None = None,
               note: Callable[[str], None] = lambda text: print(f"note: {text}"),
               progress: Progress | None = None) -> CheckResult:
    """Read, validate and check one file against the registry's champion."""
    from trainer.cli import file_window

    if progress is not None:
        progress.phase(f"reading {path}")
    columns = read_levy_file(path, progress)
    if progress is not None:
        progress.total = len(columns["record_id"])
    return check_columns(columns, settings, str(path),
                         file_window(path, len(columns["record_id"])), reference, model,
                         registry, note, progress)


def check_columns(columns: dict[str, np.ndarray], settings: CheckSettings, source: str,
                  window: dict[str, Any], reference: Path | None = None,
                  model: str | None = None, registry: str | None = None,
                  note: Callable[[str], None] = log.info,
                  progress: Progress | None = None) -> CheckResult:
    """Check records (a file's, a topic window's) against the baseline ``choose_baseline``
    picks, scored by the registry's champion."""
    model = model or settings.trainer.model_name
    registry = registry or settings.trainer.registry_root
    scorer, missing_model = load_scorer(registry, model)
    if missing_model:
        note(missing_model)
    try:
        baseline = choose_baseline(settings.detectors, scorer, reference, registry, model)
        rows = len(columns["record_id"])
        if baseline.kind == "warm-up" and rows <= settings.detectors.warmup_records:
            raise ShortInputError(
                f"{source}: {rows:,} rows cannot be judged: the detectors learn their "
                f"reference from the first {settings.detectors.warmup_records:,} values and "
                "there is no reference; pass --reference FILE (baseline rows) or a longer "
                "file")
        return run_check(columns, settings.detectors, scorer, baseline, source=source,
                         model=model, window=window, progress=progress)
    except DetectorConfigError as error:  # a reference too small to describe a signal
        raise UsageError(f"{reference or source}: {error}") from None


def choose_baseline(detectors: DetectorSettings, scorer: ModelScorer | None,
                    reference: Path | None, registry: str, model: str) -> Baseline:
    """``--reference FILE``, else the champion's reference sample, else the warm-up."""
    if reference is not None:
        return file_baseline(reference, detectors, scorer)
    if scorer is not None and scorer.version is not None:
        baseline = champion_baseline(registry, model, scorer.version, detectors)
        if baseline is not None:
            return baseline
    return warmup_baseline(detectors)


class ShortInputError(UsageError):
    """Too few rows to judge, and no reference: exit 2, never a silent "no drift"."""


def trigger_retraining(result: CheckResult, settings: CheckSettings, registry: str | None,
                       publish: bool) -> RetrainOutcome:
    if publish:
        count = publish_events(result, settings)
        return RetrainOutcome("published", f"retraining: published {count} drift event(s) "
                              f"to {settings.topics.drift_events} for the trainer worker")
    outcome = retrain_once(result, settings, registry or settings.trainer.registry_root)
    return replace(outcome, line=f"retraining: {outcome.line}")
