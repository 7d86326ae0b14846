"""One channel per signal: its reference (or warm-up), detector state arrays, and how an alarm
of its detectors becomes a ``SignalFinding``. Channels never look at each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from detectors import kernels as k
from detectors.calibration import (
    adwin_delta,
    categorical_threshold,
    design_shifts,
    page_hinkley_threshold,
)
from detectors.config import DetectorSettings
from detectors.decision import DetectorFiring, SignalFinding, WindowSummary
from detectors.reference import SUMMARY_PROBABILITIES, CategoricalReference, NumericReference

ADWIN_MAX_BUCKETS, ADWIN_MIN_WINDOW, ADWIN_GRACE = 5, 5, 10  # river's defaults
CATEGORY_REFRESH = 512  # values between recomputations of the ratios; a power of two
MAX_NEW_NAMES = 32  # never-seen categories tracked by name; later ones share one code
NO_SCORES = np.zeros(0)
MIN_SPREAD_VALUES = 20  # distinct reference values below which a segment has no spread test


@dataclass(frozen=True)
class Alarm:
    index: int  # index in the batch of the record at which the signal's detectors fired
    finding: SignalFinding


@dataclass(frozen=True)
class DetectorStatus:
    signal: str
    detector: str
    statistic: float
    threshold: float
    warming_up: bool


class NumericChannel:
    """A numeric signal: rank-based standardisation, Page-Hinkley on location and spread,
    ADWIN on location."""

    def __init__(self, name: str, settings: DetectorSettings,
                 reference: NumericReference | None) -> None:
        self.name = name
        self.settings = settings
        self.upward_only = (settings.performance_upward_only
                            and name in settings.performance_signals)
        self._build_parameters()
        self.scoring = {"mid_rank": k.SCORE_MID_RANK, "randomised": k.SCORE_RANDOMISED,
                        "given": k.SCORE_GIVEN}[settings.scoring]
        self.ring_values = np.zeros(settings.summary_window)
        self.ring_positions = np.zeros(settings.summary_window, dtype=np.int64)
        self.counters = np.zeros(2, dtype=np.int64)
        self.warmup_values: list[np.ndarray] = []
        self.warmup_first: int | None = None
        self.warmup_last: int | None = None
        self.reference: NumericReference | None = None
        self.start_warmup()
        if reference is not None:
            self.set_reference(reference)

    # ------------------------------------------------------------------ configuration
    def _build_parameters(self) -> None:
        s = self.settings
        sides = 1 if self.upward_only else 2
        mode = k.MODE_UP if self.upward_only else k.MODE_BOTH
        families = []
        if s.page_hinkley:
            families += [("page_hinkley", k.SOURCE_LOCATION, shift) for shift in
                         design_shifts(s.mean_shift_min, s.mean_shift_max, s.mean_shift_levels)]
        if s.spread and not self.upward_only:  # an error can only worsen upwards
            families += [("spread_page_hinkley", k.SOURCE_SPREAD, shift) for shift in
                         design_shifts(s.spread_shift_min, s.spread_shift_max,
                                       s.spread_shift_levels)]
        tests = sides * len(families) + (1 if s.adwin else 0)
        self.rate_per_test = s.false_alarm_rate / tests
        self.ph_names = [name for name, _, _ in families]
        self.ph_par = np.zeros((len(families), 6))
        for row, (_, source, shift) in enumerate(families):
            delta = shift / 2.0
            self.ph_par[row] = (delta, page_hinkley_threshold(delta, 1.0 / self.rate_per_test),
                                s.min_instances, 1.0, mode, source)
        self.ph_thresholds = self.ph_par[:, k.PH_THRESHOLD].copy()
        self.aw_par = np.array([adwin_delta(self.rate_per_test, s.adwin_clock), s.adwin_clock,
                                ADWIN_MAX_BUCKETS, ADWIN_MIN_WINDOW, ADWIN_GRACE,
                                1.0 if s.adwin else 0.0, 1.0 if self.upward_only else 0.0])

    def reset_detectors(self) -> None:
        n_ph = self.ph_par.shape[0]
        self.ph_f = np.zeros((n_ph, k.PH_FLOAT_COLUMNS))
        self.ph_i = np.zeros((n_ph, 2), dtype=np.int64)
        for row in range(n_ph):
            k.ph_reset(self.ph_f, self.ph_i, row)
        self.aw_s = np.zeros(k.AW_SCALARS)
        self.aw_totals = np.zeros((k.AW_MAX_LEVELS, ADWIN_MAX_BUCKETS + 1))
        self.aw_variances = np.zeros((k.AW_MAX_LEVELS, ADWIN_MAX_BUCKETS + 1))
        self.aw_counts = np.zeros(k.AW_MAX_LEVELS, dtype=np.int64)
        k.adwin_reset(self.aw_s, self.aw_totals, self.aw_variances, self.aw_counts)
        self.alarm = np.zeros((n_ph + 1, k.AL_COLUMNS))

    def set_reference(self, reference: NumericReference) -> None:
        self.reference = reference
        self.knots, self.below, self.at_or_below = reference.arrays()
        self.u_min = reference.u_min()
        self.warmup_values, self.warmup_first, self.warmup_last = [], None, None
        # A segment's signal with a handful of values (a county's levy rate: one per
        # district) has no spread of its own: its "spread" is the district mix, which
        # composition judges per event-time window. Spread detectors stay silent on it.
        discrete = (self.scoring == k.SCORE_RANDOMISED
                    and len(reference.knots) < MIN_SPREAD_VALUES)
        spread_rows = self.ph_par[:, k.PH_SOURCE] == k.SOURCE_SPREAD
        self.ph_par[:, k.PH_THRESHOLD] = np.where(discrete & spread_rows, np.inf,
                                                  self.ph_thresholds)

    def start_warmup(self, length: int | None = None) -> None:
        """Learn a new reference from the next ``length`` values (default: the warm-up
        length) before detecting again; after an alarm the old reference is stale."""
        self.reference = None
        self.warmup_target = length or self.settings.warmup_records
        self.warmup_values, self.warmup_first, self.warmup_last = [], None, None
        self.reset_detectors()

    # ------------------------------------------------------------------ feeding
    def feed(self, column: Any, positions: np.ndarray,
             scores: np.ndarray | None = None) -> list[Alarm]:
        """Feed one batch. With ``scores`` (same length, NaN-filled by the caller), also
        write each value's location score against the reference that judged it (NaN while
        warming up): the segment layer pools them, exactly, whatever the batching."""
        values = np.ascontiguousarray(column, dtype=np.float64)
        alarms: list[Alarm] = []
        start = 0
        while start < values.shape[0]:
            if self.reference is None:
                start = self._warm(values, positions, start)
                continue
            start = k.run_numeric(
                values, positions, start, self.knots, self.below, self.at_or_below,
                self.u_min, self.ph_par, self.ph_f, self.ph_i, self.aw_par, self.aw_s,
                self.aw_totals, self.aw_variances, self.aw_counts, self.ring_values,
                self.ring_positions, self.counters, self.alarm,
                self.scoring, NO_SCORES if scores is None else scores)
            if self.alarm[:, k.AL_FIRED].any():
                alarms.append(Alarm(start - 1, self._finding()))
                self.alarm[:, :] = 0.0
                self.start_warmup(self.settings.relearn_records)
        return alarms

    def _warm(self, values: np.ndarray, positions: np.ndarray, start: int) -> int:
        """Collect (re)learning values from ``start``; once there are enough, build the
        reference. Returns the batch index from which detection resumes."""
        have = sum(chunk.size for chunk in self.warmup_values)
        present = np.flatnonzero(~np.isnan(values[start:])) + start
        take = present[: self.warmup_target - have]
        if take.size:
            self.warmup_values.append(values[take])
            if self.warmup_first is None:
                self.warmup_first = int(positions[take[0]])
            self.warmup_last = int(positions[take[-1]])
        if have + take.size < self.warmup_target:
            return values.shape[0]
        reference = NumericReference.from_values(np.concatenate(self.warmup_values),
                                                 self.warmup_first, self.warmup_last)
        self.set_reference(reference)
        return int(take[-1]) + 1

    # ------------------------------------------------------------------ explanation
    def _finding(self) -> SignalFinding:
        count = int(self.counters[k.C_COUNT])
        fired = np.flatnonzero(self.alarm[:, k.AL_FIRED])
        change = int(self.alarm[fired, k.AL_CHANGE].min())
        firings = tuple(self._firing(row) for row in fired)
        window, positions = recent(self.ring_values, self.ring_positions, self.counters,
                                   max(1, count - change))
        z, _ = k.standardise(window, self.knots, self.below, self.at_or_below, self.u_min)
        location = any(f.detector != "spread_page_hinkley" for f in firings)
        effect = float(z.mean()) if location else float(z.std())
        current = numeric_summary(window, positions, max(1, count - change))
        return SignalFinding(self.name, firings, effect,
                             "mean_shift" if location else "std_ratio",
                             reference_summary(self.reference), current)

    def _firing(self, row: int) -> DetectorFiring:
        statistic, threshold, direction = self.alarm[row, 1:4]
        if row < len(self.ph_names):
            par = self.ph_par[row]
            name = self.ph_names[row]
            parameters = (("delta", float(par[k.PH_DELTA])), ("threshold", float(threshold)),
                          ("min_instances", float(par[k.PH_MIN_INSTANCES])),
                          ("alpha", float(par[k.PH_ALPHA])))
        else:
            name = "adwin"
            parameters = (("delta", float(self.aw_par[k.AW_DELTA])),
                          ("clock", float(self.aw_par[k.AW_CLOCK])))
        return DetectorFiring(name, parameters, float(statistic), float(threshold),
                              "up" if direction > 0 else "down")

    def status(self) -> list[DetectorStatus]:
        warming = self.reference is None
        rows = [DetectorStatus(self.name, f"{name}[delta={par[k.PH_DELTA]:.4g}]",
                               float(k.ph_statistic(par, f)), float(par[k.PH_THRESHOLD]),
                               warming)
                for name, par, f in zip(self.ph_names, self.ph_par, self.ph_f, strict=True)]
        if self.settings.adwin:
            out = np.zeros(4)
            ratio = 0.0
            if self.aw_s[k.AW_WIDTH] > ADWIN_GRACE:
                k.adwin_check(self.aw_par, self.aw_s, self.aw_totals, self.aw_counts, out, True)
                ratio = float(out[3])
            rows.append(DetectorStatus(self.name, "adwin", ratio, 1.0, warming))
        return rows

    # ------------------------------------------------------------------ snapshot
    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"ph_f": self.ph_f, "ph_i": self.ph_i, "aw_s": self.aw_s,
                  "aw_counts": self.aw_counts, "ring_values": self.ring_values,
                  "ring_positions": self.ring_positions, "counters": self.counters}
        levels = int(self.aw_s[k.AW_LEVELS])
        arrays["aw_totals"] = self.aw_totals[:levels]
        arrays["aw_variances"] = self.aw_variances[:levels]
        if self.warmup_values:
            arrays["warmup"] = np.concatenate(self.warmup_values)
        return arrays

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for key in ("ph_f", "ph_i", "aw_s", "aw_counts", "ring_values", "ring_positions",
                    "counters"):
            getattr(self, key)[...] = arrays[key]
        levels = arrays["aw_totals"].shape[0]
        self.aw_totals[:levels] = arrays["aw_totals"]
        self.aw_variances[:levels] = arrays["aw_variances"]
        if "warmup" in arrays:
            self.warmup_values = [arrays["warmup"].copy()]


class CategoricalChannel:
    """A categorical signal: two-sided Bernoulli CUSUMs per category bucket."""

    def __init__(self, name: str, settings: DetectorSettings,
                 reference: CategoricalReference | None) -> None:
        self.name = name
        self.settings = settings
        self.ring_codes = np.zeros(settings.summary_window, dtype=np.int64)
        self.ring_positions = np.zeros(settings.summary_window, dtype=np.int64)
        self.counters = np.zeros(3, dtype=np.int64)
        self.alarm = np.zeros(6)
        self.start_warmup()
        if reference is not None:
            self.set_reference(reference)

    def start_warmup(self) -> None:
        self.reference: CategoricalReference | None = None
        self.warmup_names: list[str] = []
        self.warmup_first: int | None = None
        self.warmup_last: int | None = None
        self.new_names: list[tuple[str, int]] = []  # (name, first position), code order

    def set_reference(self, reference: CategoricalReference) -> None:
        s = self.settings
        self.reference = reference
        self.warmup_names, self.warmup_first, self.warmup_last = [], None, None
        self.new_names = []
        known = list(reference.shares)[: s.max_categories]
        self.known = known
        self.n_known = len(known)
        self.code_of = {name: i for i, name in enumerate(known)}
        for name in list(reference.shares)[s.max_categories:]:
            self.code_of[name] = self.n_known
        seen = 1.0 - reference.unseen_rate
        shares = [reference.shares[name] * seen for name in known]
        other = sum(reference.shares.values()) * seen - sum(shares)
        self.shares = np.array(shares + [max(other, 0.0), reference.unseen_rate])
        buckets = self.n_known + 2
        self.rate_per_test = s.false_alarm_rate / (2 * buckets)
        self.par = np.array([categorical_threshold(self.rate_per_test), s.category_shift,
                             s.new_category_share, CATEGORY_REFRESH])
        self.state = np.zeros(4)
        self.counts = np.zeros(buckets)
        self.llr = np.zeros((4, buckets))
        self.cusum = np.zeros((2, buckets))
        self.book = np.zeros((4, buckets), dtype=np.int64)
        self.state[k.CS_GATE_AFTER_ALARM] = s.relearn_records
        k.category_restart(self.state, self.counts, self.cusum, self.book, self.counters,
                           int(self.counters[k.C_COUNT]),
                           float(min(reference.n, s.reference_prior_cap)), s.min_instances)

    def bucket_name(self, bucket: int) -> str:
        if bucket < self.n_known:
            return self.known[bucket]
        return "(other)" if bucket == self.n_known else "(new)"

    def code_name(self, code: int) -> str:
        if code <= self.n_known:
            return self.bucket_name(code)
        new_index = code - self.n_known - 1
        return self.new_names[new_index][0] if new_index < len(self.new_names) else "(more new)"

    # ------------------------------------------------------------------ feeding
    def feed(self, column: Any, positions: np.ndarray) -> list[Alarm]:
        column = np.asarray(column, dtype=object)
        alarms: list[Alarm] = []
        start = 0
        if self.reference is None:
            labels, uniques = pd.factorize(column, use_na_sentinel=True)
            start = self._warm(labels, uniques, positions)
            if self.reference is None:
                return alarms
        codes = np.full(len(column), -1, dtype=np.int64)
        codes[start:] = self._codes(column[start:], positions[start:])
        while start < codes.shape[0]:
            start = k.run_categorical(
                codes, positions, start, self.n_known, self.par, self.state, self.counts,
                self.shares, self.llr, self.cusum, self.book, self.ring_codes,
                self.ring_positions, self.counters, self.alarm)
            if self.alarm[0]:
                alarms.append(Alarm(start - 1, self._finding()))
                self.alarm[:] = 0.0
        return alarms

    def _codes(self, column: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Bucket codes of a column. factorize numbers categories in order of first
        appearance, so never-seen names get their codes in stream order whatever the
        batching."""
        labels, uniques = pd.factorize(column, use_na_sentinel=True)
        mapping = np.full(len(uniques) + 1, -1, dtype=np.int64)  # last slot: missing
        for label, value in enumerate(uniques):
            name = str(value)
            if name == "":
                continue
            code = self.code_of.get(name)
            if code is None:
                first = int(np.argmax(labels == label))
                code = self._code_for(name, int(positions[first]))
            mapping[label] = code
        return mapping[labels]

    def _code_for(self, name: str, position: int) -> int:
        code = self.code_of.get(name)
        if code is not None:
            return code
        for index, (known_new, _) in enumerate(self.new_names):
            if known_new == name:
                return self.n_known + 1 + index
        if len(self.new_names) < MAX_NEW_NAMES:
            self.new_names.append((name, position))
            return self.n_known + len(self.new_names)
        return self.n_known + 1 + MAX_NEW_NAMES

    def _warm(self, labels: np.ndarray, uniques: Any, positions: np.ndarray) -> int:
        need = self.settings.warmup_records - len(self.warmup_names)
        present = np.flatnonzero(labels >= 0)
        present = present[[str(uniques[labels[i]]) != "" for i in present]] if len(
            present) else present
        take = present[:need]
        if take.size:
            self.warmup_names.extend(str(uniques[labels[i]]) for i in take)
            if self.warmup_first is None:
                self.warmup_first = int(positions[take[0]])
            self.warmup_last = int(positions[take[-1]])
        if len(self.warmup_names) < self.settings.warmup_records:
            return labels.shape[0]
        self.set_reference(CategoricalReference.from_values(
            self.warmup_names, self.warmup_first, self.warmup_last))
        return int(take[-1]) + 1

    # ------------------------------------------------------------------ explanation
    def _finding(self) -> SignalFinding:
        count = int(self.counters[k.C_COUNT])
        bucket = int(self.alarm[5])
        n = max(1, count - int(self.alarm[4]))
        codes, positions = recent(self.ring_codes, self.ring_positions, self.counters, n)
        names = [self.code_name(int(c)) for c in codes]
        current_shares = _shares(names)
        new = tuple(sorted({name for c, name in zip(codes, names, strict=True)
                            if c > self.n_known}))
        if bucket == self.n_known + 1:  # reference share of a never-seen category: 0
            effect = sum(share for name, share in current_shares if name in new)
        else:
            bucket_codes = codes == bucket if bucket < self.n_known else (
                codes == self.n_known)
            effect = float(bucket_codes.mean()) - float(self.shares[bucket])
        firing = DetectorFiring(
            "category_cusum",
            (("bucket", self.bucket_name(bucket)), ("shift", float(
                self.par[k.CP_NEW_SHIFT] if bucket == self.n_known + 1
                else self.par[k.CP_SHIFT]))),
            float(self.alarm[1]), float(self.alarm[2]), "up" if self.alarm[3] > 0 else "down")
        current = WindowSummary(n=n, first_position=_first_position(positions),
                                last_position=int(positions[-1]), summarised=len(codes),
                                category_shares=tuple(current_shares), new_categories=new)
        ref = self.reference
        reference = WindowSummary(n=ref.n, first_position=ref.first_position,
                                  last_position=ref.last_position, summarised=ref.n,
                                  category_shares=tuple(list(ref.shares.items())[:20]))
        return SignalFinding(self.name, (firing,), float(effect), "share_change", reference,
                             current)

    def status(self) -> list[DetectorStatus]:
        warming = self.reference is None
        statistic = 0.0 if warming else self._current_statistic()
        threshold = float(self.par[k.CP_THRESHOLD]) if not warming else float("nan")
        return [DetectorStatus(self.name, "category_cusum", statistic, threshold, warming)]

    def _current_statistic(self) -> float:
        """Largest CUSUM value as if every bucket were brought up to date (read-only: a
        real catch-up here would change rounding and so future decisions)."""
        pending = self.counters[k.C_COUNT] - self.book[k.CB_CURRENT]
        if self.state[k.CS_SINCE] < self.state[k.CS_GATE]:
            return 0.0
        rise = np.maximum(self.cusum[0] + pending * self.llr[1], 0.0)
        fall = self.cusum[1] + pending * self.llr[3]
        return float(max(rise.max(), fall.max()))

    # ------------------------------------------------------------------ snapshot
    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"ring_codes": self.ring_codes, "ring_positions": self.ring_positions,
                  "counters": self.counters}
        if self.reference is not None:
            arrays.update(state=self.state, counts=self.counts, llr=self.llr,
                          cusum=self.cusum, book=self.book)
        return arrays

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for key, value in arrays.items():
            getattr(self, key)[...] = value


def recent(ring: np.ndarray, ring_positions: np.ndarray, counters: np.ndarray,
           n: int) -> tuple[np.ndarray, np.ndarray]:
    """The last min(n, ring size, values seen) values of a ring buffer, oldest first."""
    size = ring.shape[0]
    m = int(min(n, size, counters[k.C_COUNT]))
    head = int(counters[k.C_RING_HEAD])
    index = (np.arange(head - m, head) % size) if m else np.zeros(0, dtype=np.int64)
    return ring[index], ring_positions[index]


def _first_position(positions: np.ndarray) -> int | None:
    """Exact when the whole window is still in the ring (n <= summary_window); otherwise the
    earliest position held: the window began at or before it."""
    return int(positions[0]) if len(positions) else None


def numeric_summary(values: np.ndarray, positions: np.ndarray, n: int) -> WindowSummary:
    quantiles = np.quantile(values, SUMMARY_PROBABILITIES) if len(values) else []
    return WindowSummary(
        n=n, first_position=_first_position(positions),
        last_position=int(positions[-1]) if len(positions) else None,
        summarised=len(values), mean=float(values.mean()) if len(values) else None,
        std=float(values.std()) if len(values) else None,
        quantiles=tuple(zip(SUMMARY_PROBABILITIES, map(float, quantiles), strict=False)))


def reference_summary(ref: NumericReference) -> WindowSummary:
    return WindowSummary(n=ref.n, first_position=ref.first_position,
                         last_position=ref.last_position, summarised=ref.n, mean=ref.mean,
                         std=ref.std,
                         quantiles=tuple(zip(SUMMARY_PROBABILITIES, ref.quantiles,
                                             strict=True)))


def _shares(names: list[str]) -> list[tuple[str, float]]:
    if not names:
        return []
    labels, counts = np.unique(np.asarray(names, dtype=object), return_counts=True)
    order = np.lexsort((labels.astype(str), -counts))
    return [(str(labels[i]), float(counts[i] / len(names))) for i in order[:20]]
