"""Bank decisions to drift events (schema v1), with Kafka offsets for the windows.

The consumer feeds each partition's bank with Kafka offsets as positions, so a decision's window
positions are already offsets of that partition. Each event names its segment, the estimated
onset (offset and event time) and the episode identity (segment, primary signal, direction,
onset window), the same on every partition that sees the same change. The event id and
``detected_at`` (the event time of the record at which the detectors fired) depend only on the
records, so a replay after a crash produces byte-identical events.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from detectors.decision import DetectorFiring, DriftDecision, SignalFinding
from detectors.decision import WindowSummary as BankWindow
from schemas.drift_event import (
    DetectorSpec,
    DriftEvent,
    DriftSignal,
    Episode,
    Onset,
    SourceOffsets,
    WindowSummary,
    drift_episode_id,
    drift_event_id,
)

EFFECT_UNITS = {"mean_shift": "sd", "std_ratio": "ratio", "share_change": "share"}

def decision_to_event(decision: DriftDecision, topic: str, partition: int, *, group: str,
                      model_name: str, model_version: int | None,
                      detected_at: str) -> DriftEvent:
    """The drift event of one decision made on ``topic``/``partition`` by consumer ``group``
    watching ``model_name``."""
    current_first, current_last = decision.current_positions
    current_first = current_last if current_first is None else current_first
    reference_first, reference_last = decision.reference_positions
    if reference_first is None or reference_last is None:  # reference from training data
        reference_first = reference_last = current_first
    return DriftEvent(
        event_id=drift_event_id(model_name, group, topic, partition, decision.detected_at,
                                decision.signal_names),
        model_name=model_name,
        model_version=model_version,
        kind=decision.kind,  # type: ignore[arg-type]
        signals=tuple(_signal(finding) for finding in decision.signals),
        reference_window=SourceOffsets(topic, partition, reference_first, reference_last),
        current_window=SourceOffsets(topic, partition, current_first, current_last),
        detected_at=detected_at,
        consumer_group=group,
        segment=decision.segment,
        onset=_onset(decision, current_first, current_last),
        episode=_episode(decision, model_name),
    )


def _onset(decision: DriftDecision, first: int, last: int) -> Onset | None:
    """The estimated onset, within the current window (a change that began before the bank
    saw any record of this partition starts at the window's first offset)."""
    if decision.onset_at is None:
        return None
    offset = min(max(decision.onset_at, first, 0), last)
    return Onset(offset, _rfc3339(decision.onset_time_ms))


def _episode(decision: DriftDecision, model_name: str) -> Episode:
    segment, signal, direction, window_ms = decision.episode
    onset_window = _rfc3339(window_ms)
    return Episode(drift_episode_id(model_name, segment, signal, direction, onset_window),
                   segment, signal, direction, onset_window)


def _rfc3339(milliseconds: int | None) -> str | None:
    """RFC 3339 (UTC, milliseconds) for the contract's years 1900-2199; None otherwise."""
    if milliseconds is None:
        return None
    try:
        moment = datetime.fromtimestamp(milliseconds / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    if not 1900 <= moment.year <= 2199:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _signal(finding: SignalFinding) -> DriftSignal:
    firing = max(finding.firings, key=_strength)
    return DriftSignal(
        signal=finding.signal,
        detector=DetectorSpec(firing.detector, {key: value for key, value in firing.parameters}),
        statistic=_finite(firing.statistic),
        threshold=_finite(firing.threshold),
        effect_size=_finite(finding.effect_size),
        reference=_window(finding.reference),
        current=_window(finding.current),
        effect_measure=finding.effect_measure,
        effect_unit=EFFECT_UNITS.get(finding.effect_measure),
        window_scale=None if finding.scale == "value" else finding.scale,
    )


def _strength(firing: DetectorFiring) -> float:
    return firing.statistic / firing.threshold if firing.threshold else math.inf


def _window(window: BankWindow) -> WindowSummary:
    return WindowSummary(
        n=window.n,
        mean=_finite_or_none(window.mean),
        std=_finite_or_none(window.std),
        quantiles={f"p{round(probability * 100)}": float(value)
                   for probability, value in window.quantiles if math.isfinite(value)},
        category_shares={name[:64]: float(share) for name, share in window.category_shares},
    )


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
