"""``DriftDecision``: one drift episode, explained.

Positions are the caller's record positions (Kafka offsets in the consumer, row numbers in
the batch check). Effect sizes: ``mean_shift`` is the current window's mean normal score
(reference standard deviations, rank-based so outliers do not dominate); ``std_ratio`` is the
current window's normal-score std (1.0 = unchanged spread); ``share_change`` is the current
minus reference share of the bucket that moved (a never-seen category has reference share 0).

A numeric finding's window summaries (mean, std, quantiles) are in what its detectors were fed,
``SignalFinding.scale``: ``value`` (the signal's own units), ``normal_score`` (the pooled
layer: each record's normal score against its segment's reference) or ``stratum_probability``
(with strata: each value's probability under its stratum's reference, 0.5 = that stratum's
median).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("distribution", "prediction", "performance")


@dataclass(frozen=True)
class WindowSummary:
    """A window of one signal. The current window runs from the detectors' estimate of the
    change point to the detection; its statistics come from the last ``summarised`` values
    (the bank keeps ``summary_window`` per signal), so when ``summarised < n`` the
    ``first_position`` is the earliest position still held and the window began earlier.
    Reference windows from training data have no positions (None)."""

    n: int  # values in the window (a window of the reference: its size)
    first_position: int | None
    last_position: int | None
    summarised: int  # values the statistics below were computed from (<= n, ring-limited)
    mean: float | None = None
    std: float | None = None
    quantiles: tuple[tuple[float, float], ...] = ()  # (probability, value)
    category_shares: tuple[tuple[str, float], ...] = ()  # most frequent first
    new_categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetectorFiring:
    detector: str  # "page_hinkley" | "spread_page_hinkley" | "adwin" | "category_cusum"
    parameters: tuple[tuple[str, float | str], ...]
    statistic: float
    threshold: float
    direction: str  # "up" | "down"


@dataclass(frozen=True)
class SignalFinding:
    signal: str
    firings: tuple[DetectorFiring, ...]
    effect_size: float
    effect_measure: str  # "mean_shift" | "std_ratio" | "share_change"
    reference: WindowSummary
    current: WindowSummary
    scale: str = "value"  # value | normal_score | stratum_probability (module docstring)


@dataclass(frozen=True)
class DriftDecision:
    """One episode. The segment layer (``detectors.segments``) fills in where and since
    when: ``segment`` (``"county=Yakima"``; empty = the whole stream), ``onset_at`` (the
    position where the change is estimated to begin), ``onset_time_ms`` (its event time) and
    ``onset_window_ms`` (start of the event-time window holding it). ``episode`` is the
    identity downstream consumers group by: the same change seen on several partitions has
    the same episode."""

    kind: str  # one of KINDS
    detected_at: int  # position of the record at which the detectors fired
    signals: tuple[SignalFinding, ...]
    segment: str = ""
    onset_at: int | None = None
    onset_time_ms: int | None = None
    onset_window_ms: int | None = None

    @property
    def signal_names(self) -> tuple[str, ...]:
        return tuple(finding.signal for finding in self.signals)

    @property
    def direction(self) -> str:
        """Direction of the strongest firing of the first (primary) signal."""
        firings = self.signals[0].firings if self.signals else ()
        if not firings:
            return "up"
        return max(firings, key=lambda f: f.statistic / f.threshold if f.threshold
                   else 0.0).direction

    @property
    def episode(self) -> tuple[str, str, str, int | None]:
        """(segment, primary signal, direction, onset window start in ms)."""
        signal = self.signals[0].signal if self.signals else ""
        return (self.segment, signal, self.direction, self.onset_window_ms)

    @property
    def current_positions(self) -> tuple[int | None, int]:
        """(first, last) positions of the current window over all named signals."""
        firsts = [f.current.first_position for f in self.signals
                  if f.current.first_position is not None]
        return (min(firsts) if firsts else None, self.detected_at)

    @property
    def reference_positions(self) -> tuple[int | None, int | None]:
        """(first, last) positions of the reference window; None for training data."""
        firsts = [f.reference.first_position for f in self.signals
                  if f.reference.first_position is not None]
        lasts = [f.reference.last_position for f in self.signals
                 if f.reference.last_position is not None]
        return (min(firsts) if firsts else None, max(lasts) if lasts else None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["current_positions"] = list(self.current_positions)
        data["reference_positions"] = list(self.reference_positions)
        return data
