"""``DetectorSettings``: the ``[detectors]`` section of the service settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from detectors.errors import DetectorConfigError

DEFAULT_NUMERIC = ("assessed_value", "market_value", "exemption_amount", "levy_rate",
                   "prior_levy_amount", "new_construction_value")
DEFAULT_CATEGORICAL = ("county", "tax_district", "property_class")
MAX_COMPOSITION_LATENESS_S = 366 * 86400
STRATA_KEYS = ("stratify_by", "stratum_warmup_records")
RUNTIME_KEYS = ("threads",)  # how the bank runs, not what it decides


@dataclass(frozen=True)
class DetectorSettings:
    """Which signals are watched, by which detectors, and how often they may cry wolf.

    ``false_alarm_rate`` is the budget of false alarms per value *per signal*; it is split
    evenly over the one-sided tests watching that signal (see detectors/CALIBRATION.md). The
    default, 1e-8, is an order below "one per ten million" so that ten million stationary
    records per signal pass without a false decision with high probability rather than
    with probability e^-1.
    Shift sizes are in reference standard deviations (normal scores). After a signal's
    alarm, it relearns its reference from its next ``relearn_records`` values (the old
    reference no longer describes the stream), so one change yields one decision.
    """

    numeric_signals: tuple[str, ...] = DEFAULT_NUMERIC
    categorical_signals: tuple[str, ...] = DEFAULT_CATEGORICAL
    prediction_signals: tuple[str, ...] = ("prediction",)
    performance_signals: tuple[str, ...] = ("abs_error", "relative_error")
    false_alarm_rate: float = 1e-8
    cooldown_records: int = 2000
    warmup_records: int = 5000
    min_instances: int = 100
    page_hinkley: bool = True
    mean_shift_min: float = 0.25
    mean_shift_max: float = 1.0
    mean_shift_levels: int = 3
    spread: bool = True
    spread_shift_min: float = 0.25
    spread_shift_max: float = 0.5
    spread_shift_levels: int = 2
    adwin: bool = True
    adwin_clock: int = 32
    categorical: bool = True
    category_shift: float = 0.05
    new_category_share: float = 0.01
    max_categories: int = 64
    performance_upward_only: bool = True
    relearn_records: int = 2000
    summary_window: int = 512
    reference_prior_cap: int = 50000
    # Segments (detectors/segments.py): numeric signals are judged per segment, the mix of
    # categories per closed event-time window (see detectors/CALIBRATION.md section 7).
    # How numeric values become normal scores: "mid_rank" (a value on an atom of the
    # reference, such as a district's levy rate, gets the atom's mid-rank), "randomised" (a
    # uniform draw within the atom: N(0, 1) scores even for a signal with a handful of
    # values; the segment banks use it) or "given" (values are scores already: the segment
    # layer's pooled bank) or "uniform" (values are probabilities already, the stratum
    # layer's: see detectors/strata.py).
    scoring: str = "mid_rank"
    segment_by: tuple[str, ...] = ("county",)
    # Within a segment, each record's numeric values are scored against its stratum's own
    # reference (detectors/strata.py): a district's levy rate is its own, so districts
    # arriving in turn are no change. Fields already in segment_by are ignored here. Off by
    # default: a stratum judges only after its own warm-up (CALIBRATION.md 7).
    stratify_by: tuple[str, ...] = ()
    stratum_warmup_records: int = 2000
    segment_warmup_records: int = 2000
    max_segments: int = 64
    pooled: bool = True
    composition_window_s: int = 86400
    composition_lateness_s: int = 3600
    composition_sustain: int = 2
    composition_min_change: float = 0.02
    # Threads a big batch's signals are fed on (detectors/parallel.py): 0 = one per core this
    # process may use. How fast, not what is decided: not part of a snapshot's settings.
    threads: int = field(default=0, compare=False)

    def validate(self) -> None:
        """Raise ``DetectorConfigError`` with a one-line reason for an invalid combination."""
        _check_signals(self)
        _check_numbers(self)
        _check_detectors(self)

    def all_signals(self) -> tuple[str, ...]:
        return (self.numeric_signals + self.categorical_signals + self.prediction_signals
                + self.performance_signals)

    def strata_fields(self) -> tuple[str, ...]:
        """The ``stratify_by`` fields that refine the segments (empty: no strata)."""
        return tuple(name for name in self.stratify_by if name not in self.segment_by)

    def numeric_like(self) -> tuple[str, ...]:
        """Signals with numeric values: features, predictions, errors."""
        return self.numeric_signals + self.prediction_signals + self.performance_signals

    def kind_of(self, signal: str) -> str:
        if signal in self.prediction_signals:
            return "prediction"
        if signal in self.performance_signals:
            return "performance"
        return "distribution"

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON types, without the runtime ones (``threads``). Strata keys at
        their defaults are left out, so settings (and snapshots) written before strata
        existed read back as what they were."""
        data = {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items() if key not in RUNTIME_KEYS}
        for key in STRATA_KEYS:
            if data[key] == STRATA_DEFAULTS[key]:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectorSettings:
        fields: dict[str, Any] = {key: tuple(value) if isinstance(value, list) else value
                                  for key, value in data.items()}
        return cls(**fields)


_DEFAULTS = DetectorSettings()
STRATA_DEFAULTS = {"stratify_by": list(_DEFAULTS.stratify_by),
                   "stratum_warmup_records": _DEFAULTS.stratum_warmup_records}


def _check_fields(key: str, fields: Any, example: str) -> None:
    """A list of at most 4 distinct record field names (segment or stratum keys)."""
    if not isinstance(fields, tuple) or not all(isinstance(f, str) and f.strip() for f in fields):
        raise DetectorConfigError(f"detectors.{key} must be a list of field names ({example})")
    if len(set(fields)) != len(fields) or len(fields) > 4:
        raise DetectorConfigError(f"detectors.{key}: at most 4 distinct fields")


def _check_signals(s: DetectorSettings) -> None:
    _check_fields("segment_by", s.segment_by, 'e.g. ["county"]; [] = one segment')
    _check_fields("stratify_by", s.stratify_by, 'e.g. ["tax_district"]; [] = no strata')
    names = s.all_signals()
    if not names:
        raise DetectorConfigError("detectors: no signals configured; list at least one")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise DetectorConfigError("detectors: signal names must be non-empty strings")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DetectorConfigError(
            f"detectors: signal {duplicates[0]!r} is listed twice; each signal has one type")


def _check_numbers(s: DetectorSettings) -> None:
    checks = [
        (0.0 < s.false_alarm_rate < 0.01, "false_alarm_rate must be within (0, 0.01)"),
        (s.cooldown_records >= 0, "cooldown_records must be >= 0"),
        (s.warmup_records >= 200, "warmup_records must be >= 200 (quantiles need data)"),
        (1 <= s.min_instances <= 100000, "min_instances must be within 1..100000"),
        (0.0 < s.mean_shift_min <= s.mean_shift_max <= 10.0,
         "mean_shift_min/max must satisfy 0 < min <= max <= 10"),
        (0.0 < s.spread_shift_min <= s.spread_shift_max <= 10.0,
         "spread_shift_min/max must satisfy 0 < min <= max <= 10"),
        (1 <= s.mean_shift_levels <= 8, "mean_shift_levels must be within 1..8"),
        (1 <= s.spread_shift_levels <= 8, "spread_shift_levels must be within 1..8"),
        (1 <= s.adwin_clock <= 1024, "adwin_clock must be within 1..1024"),
        (0.0 < s.category_shift < 0.5, "category_shift must be within (0, 0.5)"),
        (0.0 < s.new_category_share < 0.5, "new_category_share must be within (0, 0.5)"),
        (1 <= s.max_categories <= 1024, "max_categories must be within 1..1024"),
        (200 <= s.relearn_records <= 1000000, "relearn_records must be within 200..1000000"),
        (16 <= s.summary_window <= 65536, "summary_window must be within 16..65536"),
        (s.reference_prior_cap >= 1, "reference_prior_cap must be >= 1"),
        (200 <= s.segment_warmup_records <= 1000000,
         "segment_warmup_records must be within 200..1000000"),
        (s.scoring in ("mid_rank", "randomised", "given", "uniform"),
         "scoring must be one of mid_rank, randomised, given, uniform"),
        (s.scoring != "given" or not s.spread, "scoring = given needs spread = false"),
        (100 <= s.stratum_warmup_records <= 1000000,
         "stratum_warmup_records must be within 100..1000000"),
        (1 <= s.max_segments <= 4096, "max_segments must be within 1..4096"),
        (0 <= s.threads <= 64, "threads must be within 0..64 (0: one per core)"),
        (60 <= s.composition_window_s <= 366 * 86400,
         "composition_window_s must be within 60..31622400 (one minute to a year)"),
        (0 <= s.composition_lateness_s <= MAX_COMPOSITION_LATENESS_S,
         f"composition_lateness_s must be within 0..{MAX_COMPOSITION_LATENESS_S}"),
        (1 <= s.composition_sustain <= 100, "composition_sustain must be within 1..100"),
        (0.0 < s.composition_min_change < 0.5, "composition_min_change must be within (0, 0.5)"),
    ]
    for ok, message in checks:
        if not ok:
            raise DetectorConfigError(f"detectors.{message}")
    if s.mean_shift_levels > 1 and s.mean_shift_min == s.mean_shift_max:
        raise DetectorConfigError(
            "detectors.mean_shift_levels > 1 needs mean_shift_min < mean_shift_max")
    if s.spread_shift_levels > 1 and s.spread_shift_min == s.spread_shift_max:
        raise DetectorConfigError(
            "detectors.spread_shift_levels > 1 needs spread_shift_min < spread_shift_max")


def _check_detectors(s: DetectorSettings) -> None:
    if s.numeric_like() and not (s.page_hinkley or s.adwin or s.spread):
        raise DetectorConfigError(
            "detectors: numeric signals are configured but page_hinkley, adwin and spread "
            "are all off; enable one or remove the signals")
    if (s.performance_signals and s.performance_upward_only
            and not (s.page_hinkley or s.adwin)):
        raise DetectorConfigError(
            "detectors: performance signals need page_hinkley or adwin (spread is not used "
            "on upward-only error signals)")
    if s.categorical_signals and not s.categorical:
        raise DetectorConfigError(
            "detectors: categorical_signals are configured but categorical is off; enable it "
            "or set categorical_signals = []")
