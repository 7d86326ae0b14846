"""``levydrift check``: the consumer's detector bank over a file of levy records.

The successor of ``python ml/hooks/drift_detector.py --data-path ... --trigger-retraining``.
Rows are fed in file order (their arrival order) with row positions in place of Kafka offsets,
through the same ``SegmentedBank`` and the same model signals (``levydrift.signals``) as the
consumer. Without ``--reference`` each segment learns its reference from its first
``detectors.warmup_records`` rows, as the consumer does from the start of a partition; a file
no longer than that warm-up cannot be judged (exit 2). With ``--reference`` the reference rows
warm every segment up first.

Exit codes: 0 no drift, 1 drift, 2 usage error or bad file, 3 broker unreachable
(``--publish-events``).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.config import DetectorSettings
from detectors.decision import DriftDecision, SignalFinding
from detectors.errors import DetectorConfigError
from detectors.reference import MIN_REFERENCE_VALUES, Reference
from detectors.segments import SegmentedBank
from levydrift import settings as settings_module
from levydrift.errors import UsageError
from levydrift.levyfile import read_levy_file
from levydrift.logs import configure as configure_logging
from levydrift.settings import KafkaSettings, LoggingSettings, TopicSettings
from levydrift.signals import ModelScorer, signal_columns
from trainer.config import TrainerSection

log = logging.getLogger(__name__)

EXIT_NO_DRIFT = 0
EXIT_DRIFT = 1
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

def run_check(columns: dict[str, np.ndarray], detectors: DetectorSettings,
              scorer: ModelScorer | None = None,
              reference_columns: dict[str, np.ndarray] | None = None,
              source: str = "", model: str = "") -> CheckResult:
    """Feed ``columns`` (arrival order) through a fresh bank; pure apart from the model."""
    started = time.perf_counter()
    rows = len(columns["record_id"])
    columns = signal_columns(dict(columns), scorer)
    reference_text = (f"each segment's first {detectors.segment_warmup_records:,} values "
                      "(warm-up, as the consumer)")
    bank = SegmentedBank(detectors)
    if reference_columns is not None:
        scored = signal_columns(dict(reference_columns), scorer)
        bank = SegmentedBank(detectors, reference_from(scored, detectors))
        bank.learn(scored)
        reference_text = f"{len(reference_columns['record_id']):,} reference rows"
    decisions = bank.update(columns, np.arange(rows, dtype=np.int64)) + bank.finish()
    return CheckResult(source, rows, columns, decisions, model,
                       scorer.version if scorer else None, reference_text,
                       time.perf_counter() - started)


def reference_from(columns: dict[str, np.ndarray], detectors: DetectorSettings) -> Reference:
    """A reference for every watched signal with enough values (errors need labels)."""
    usable = {}
    for name in detectors.all_signals():
        column = columns.get(name)
        if column is None:
            continue
        if column.dtype.kind == "f" and np.isfinite(column).sum() < MIN_REFERENCE_VALUES:
            continue
        usable[name] = column
    return Reference.from_columns(usable)


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
        lines.append("  " + finding_line(decision, finding))
    return lines


def finding_line(decision: DriftDecision, finding: SignalFinding) -> str:
    firing = max(finding.firings, key=lambda f: f.statistic / f.threshold if f.threshold else 0)
    current = rows_text(finding.current.first_position, decision.detected_at)
    reference = rows_text(finding.reference.first_position, finding.reference.last_position)
    return (f"{decision.kind:<12} {finding.signal:<22} at row {decision.detected_at + 1:,}: "
            f"{effect_text(finding)}; rows {current} vs reference {reference} "
            f"({firing.detector} {firing.direction})")


def effect_text(finding: SignalFinding) -> str:
    size = finding.effect_size
    if finding.effect_measure == "mean_shift":
        return f"mean shift {size:+.2f} sd"
    if finding.effect_measure == "std_ratio":
        return f"spread x{size:.2f}"
    moved = top_category(finding)
    return f"share of {moved!r} {size:+.1%}" if moved else f"share change {size:+.1%}"


def top_category(finding: SignalFinding) -> str | None:
    """The category whose share moved most between the windows."""
    reference = dict(finding.reference.category_shares)
    current = dict(finding.current.category_shares)
    names = set(reference) | set(current) | set(finding.current.new_categories)
    if not names:
        return None
    return max(sorted(names), key=lambda n: abs(current.get(n, 0.0) - reference.get(n, 0.0)))


def rows_text(first: int | None, last: int | None) -> str:
    if first is None or last is None or first < 0:  # reference rows sit before row 1
        return "(reference file)"
    return f"{first + 1:,}-{last + 1:,}"


def summary(result: CheckResult) -> dict[str, Any]:
    """The JSON summary (rows are 1-based, like the printed ones)."""
    return {
        "source": result.source, "rows": result.rows, "drift": result.drifted,
        "exit_code": result.exit_code, "model": result.model,
        "model_version": result.model_version, "reference": result.reference,
        "duration_s": round(result.duration_s, 3),
        "drifted_signals": result.drifted_signals(),
        "episodes": [{
            "kind": decision.kind, "detected_at_row": decision.detected_at + 1,
            "signals": [_finding_summary(decision, finding) for finding in decision.signals],
        } for decision in result.decisions],
    }


def _finding_summary(decision: DriftDecision, finding: SignalFinding) -> dict[str, Any]:
    firing = max(finding.firings, key=lambda f: f.statistic / f.threshold if f.threshold else 0)

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

def retrain_on_file(result: CheckResult, path: Path, settings: CheckSettings,
                    registry_root: str) -> str:
    """Train a candidate on the file's most recent labelled rows and gate it against the
    registry's champion (the trainer's own run); returns the version line."""
    from levydrift.features import to_model_frame
    from trainer.cli import _version_line, file_window
    from trainer.events import code_version
    from trainer.model import ModelParams
    from trainer.registry import ModelRegistry
    from trainer.training import TrainingRequest, train_and_register

    section = settings.trainer
    frame = to_model_frame(result.columns, include_target=True)
    labelled = frame[np.isfinite(frame["actual_levy_amount"].to_numpy(float))]
    frame = labelled.iloc[-section.window_records:].reset_index(drop=True)
    event_ids = [event.event_id for event in file_events(result, path, settings)]
    info = train_and_register(ModelRegistry(registry_root), result.model, TrainingRequest(
        frame=frame, trigger_event_ids=event_ids,
        training_offsets=[file_window(path, result.rows)],
        code_version=section.code_version or code_version(),
        holdout_fraction=section.holdout_fraction, gate_margin=section.gate_margin,
        min_training_records=section.min_training_records,
        params=ModelParams(max_iter=section.max_iter),
        extra_lineage={"source_file": str(path.resolve()),
                       "drifted_signals": result.drifted_signals()}))
    return _version_line(info)


def file_events(result: CheckResult, path: Path, settings: CheckSettings) -> list[Any]:
    """Drift events (schema v1) for the decisions, with the file's rows as offsets of a
    ``file.<name>`` topic (the trainer's convention for file windows)."""
    from dataclasses import replace

    from consumer.config import ConsumerSection, ConsumerSettings
    from consumer.events import decision_to_event
    from trainer.cli import file_window

    topic = file_window(path, result.rows)["topic"]
    consumer_settings = ConsumerSettings(
        topics=settings.topics, consumer=replace(ConsumerSection(), group_id=CHECK_GROUP,
                                                 model_name=result.model))
    times = result.columns["event_time"]
    return [decision_to_event(decision, topic, 0, consumer_settings, result.model_version,
                              str(times[decision.detected_at]))
            for decision in result.decisions]


def publish_events(result: CheckResult, path: Path, settings: CheckSettings) -> int:
    """Send the drift events to the drift-events topic for the trainer worker."""
    from confluent_kafka import Producer

    from levydrift.errors import BrokerUnavailableError
    from levydrift.kafka import admin_client, ensure_reachable, producer_config

    ensure_reachable(admin_client(settings.kafka), settings.kafka)
    producer = Producer(producer_config(settings.kafka))
    failures: list[str] = []
    events = file_events(result, path, settings)
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
                        help="baseline records (default: the first detectors.warmup_records "
                             "rows of --data-path)")
    parser.add_argument("--report", type=Path, metavar="PATH",
                        help="write an HTML report with a plot per drifted signal and a JSON "
                             "summary: PATH.html + PATH.json, or PATH/index.html + "
                             "PATH/summary.json")
    parser.add_argument("--trigger-retraining", action="store_true",
                        help="on drift, train a candidate on the file and gate it against the "
                             "registry's champion (or, with --publish-events, leave that to "
                             "the trainer worker)")
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
    result = check_file(arguments.data_path, settings, arguments.reference,
                        arguments.model, arguments.registry)
    for line in describe(result):
        print(line)
    if arguments.report is not None:
        from levydrift.report import write_report

        html, json_path = write_report(result, arguments.report)
        print(f"report: {html} (summary {json_path})")
    if result.drifted and arguments.trigger_retraining:
        print(trigger_retraining(result, arguments.data_path, settings,
                                 arguments.registry, arguments.publish_events))
    return result.exit_code


def check_file(path: Path, settings: CheckSettings, reference: Path | None = None,
               model: str | None = None, registry: str | None = None,
               note: Callable[[str], None] = lambda text: print(f"note: {text}")
               ) -> CheckResult:
    """Read, validate and check one file against the registry's champion."""
    model = model or settings.trainer.model_name
    scorer, missing_model = load_scorer(registry or settings.trainer.registry_root, model)
    if missing_model:
        note(missing_model)
    columns = read_levy_file(path)
    reference_columns = read_levy_file(reference) if reference is not None else None
    rows = len(columns["record_id"])
    if reference_columns is None and rows <= settings.detectors.warmup_records:
        raise ShortInputError(
            f"{path}: {rows:,} rows cannot be judged: the detectors learn their reference "
            f"from the first {settings.detectors.warmup_records:,} values and there is no "
            "reference; pass --reference FILE (baseline rows) or a longer file")
    try:
        return run_check(columns, settings.detectors, scorer, reference_columns,
                         source=str(path), model=model)
    except DetectorConfigError as error:  # a reference too small to describe a signal
        raise UsageError(f"{reference or path}: {error}") from None


class ShortInputError(UsageError):
    """Too few rows to judge, and no reference: exit 2, never a silent "no drift"."""


def trigger_retraining(result: CheckResult, path: Path, settings: CheckSettings,
                       registry: str | None, publish: bool) -> str:
    if publish:
        count = publish_events(result, path, settings)
        return (f"retraining: published {count} drift event(s) to "
                f"{settings.topics.drift_events} for the trainer worker")
    line = retrain_on_file(result, path, settings, registry or settings.trainer.registry_root)
    return f"retraining: {line}"
