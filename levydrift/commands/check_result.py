"""What a check found: its settings, its result, and the read-outs of a result that the
command line, the HTML report, the schedule and the daily job share (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from consumer.config import ConsumerSection
from detectors.config import DetectorSettings
from detectors.decision import DriftDecision, SignalFinding
from levydrift import settings as settings_module
from levydrift.settings import KafkaSettings, LoggingSettings, RegistrySettings, TopicSettings
from schemas.levy_record import FIELDS
from trainer.config import TrainerSection

if TYPE_CHECKING:  # the detectors' modules load numba: ``check``'s command line reads the
    from detectors.bank import DetectorStatus  # file while they load

# What a check reads of a file: all but the record and parcel ids (validated all the same),
# 2 M Python strs for 1 M rows that nothing here reads.
CHECKED_FIELDS = tuple(name for name in FIELDS if name not in ("record_id", "parcel_id"))
EXIT_NO_DRIFT = 0
EXIT_DRIFT = 1


@dataclass(frozen=True)
class CheckSettings:
    """What ``levydrift check`` and ``levydrift schedule`` read from the shared settings."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    consumer: ConsumerSection = field(default_factory=ConsumerSection)  # its date allowance
    trainer: TrainerSection = field(default_factory=TrainerSection)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    def validate(self) -> None:
        # lazy: the record schema loads numpy, which building the CLI parser must not
        from levydrift.signals import check_detector_fields

        check_detector_fields(self.detectors)


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
        if reference_kind == "warm-up":  # strata: each value against its own stratum's
            return "(each stratum's first values)"
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
        "window_scale": finding.scale,  # what the means and stds are in (SignalFinding)
    }


# ---------------------------------------------------------------------- retraining
