"""One channel per signal: its reference (or warm-up), detector state arrays, and how an alarm
of its detectors becomes a ``SignalFinding``. Channels never look at each other.

Every channel kind follows one protocol, ``Channel`` (the bytewax ``StatefulLogic`` way): the
bank feeds it, reads its status, and saves and resumes it through ``state()`` /
``from_state()`` without knowing which kind it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from typing import Any, Protocol, Self

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
from detectors.errors import SnapshotError
from detectors.reference import (
    SUMMARY_PROBABILITIES,
    CategoricalReference,
    NumericReference,
    Reference,
)
from detectors.state import (
    ArraySpec,
    ChannelState,
    check_layout,
    check_numbers,
    is_int,
    json_int,
    json_optional_int,
    layout_of,
)

ADWIN_MAX_BUCKETS, ADWIN_MIN_WINDOW, ADWIN_GRACE = 5, 5, 10  # river's defaults
CATEGORY_REFRESH = 512  # values between recomputations of the ratios; a power of two
MAX_NEW_NAMES = 32  # never-seen categories tracked by name; later ones share one code
NO_SCORES = np.zeros(0)
# What a channel's window summaries are in, by what it is fed (SignalFinding.scale; else
# "value").
WINDOW_SCALES = {k.SCORE_GIVEN: "normal_score", k.SCORE_UNIFORM: "stratum_probability"}
MIN_SPREAD_VALUES = 20  # distinct reference values below which a segment has no spread test
# State arrays that only ever hold finite numbers (Page-Hinkley's minimum starts at infinity).
NUMERIC_FINITE = frozenset({"aw_s", "aw_totals", "aw_variances"})
CATEGORICAL_FINITE = frozenset({"state", "counts", "llr", "cusum"})


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


class Channel(Protocol):
    """One signal's detectors as the bank sees them."""

    name: str

    def feed(self, column: Any, positions: np.ndarray,
             scores: np.ndarray | None = None) -> list[Alarm]:
        """Feed one batch; ``scores`` receives location scores where the channel has them."""
        ...

    def status(self) -> list[DetectorStatus]: ...

    def start_warmup(self) -> None:
        """Forget the reference and detector state; learn a reference again."""
        ...

    def use_reference(self, reference: Reference) -> None:
        """Take this signal's entry of ``reference``, if it has one."""
        ...

    def reference_part(self) -> Reference:
        """The reference in use (warm-up references included), as a one-signal ``Reference``."""
        ...

    def adopt_warmup(self, min_values: int) -> None:
        """End a warm-up early if it holds at least ``min_values`` values."""
        ...

    def state(self) -> ChannelState: ...

    def state_specs(self) -> dict[str, ArraySpec]:
        """The arrays ``from_state`` accepts for a channel built like this one (same settings,
        same reference), so a reader can bound what it reads before reading it."""
        ...

    @classmethod
    def from_state(cls, name: str, settings: DetectorSettings, reference: Reference,
                   state: ChannelState) -> Self:
        """The channel ``state()`` was taken from, rebuilt from the settings, the bank's
        references and the state; state that does not fit raises ``SnapshotError``."""
        ...


class NumericChannel:
    """A numeric signal: rank-based standardisation, Page-Hinkley on location and spread,
    ADWIN on location."""

    def __init__(self, name: str, settings: DetectorSettings,
                 reference: NumericReference | None) -> None:
        self.name = name
        self.settings = settings
        self.upward_only = (settings.performance_upward_only
                            and name in settings.performance_signals)
        self.rate_per_test, self.ph_names, self.ph_par, self.aw_par = _numeric_parameters(
            settings, self.upward_only)
        self.ph_thresholds = self.ph_par[:, k.PH_THRESHOLD].copy()
        self.scoring = {"mid_rank": k.SCORE_MID_RANK, "randomised": k.SCORE_RANDOMISED,
                        "given": k.SCORE_GIVEN, "uniform": k.SCORE_UNIFORM}[settings.scoring]
        self.ring_values = np.zeros(settings.summary_window)
        self.ring_positions = np.zeros(settings.summary_window, dtype=np.int64)
        self.counters = np.zeros(2, dtype=np.int64)
        n_ph = self.ph_par.shape[0]
        self.ph_f = np.zeros((n_ph, k.PH_FLOAT_COLUMNS))
        self.ph_i = np.zeros((n_ph, 2), dtype=np.int64)
        self.aw_s = np.zeros(k.AW_SCALARS)
        self.aw_totals = np.zeros((k.AW_MAX_LEVELS, ADWIN_MAX_BUCKETS + 1))
        self.aw_variances = np.zeros((k.AW_MAX_LEVELS, ADWIN_MAX_BUCKETS + 1))
        self.aw_counts = np.zeros(k.AW_MAX_LEVELS, dtype=np.int64)
        self.alarm = np.zeros((n_ph + 1, k.AL_COLUMNS))
        # Given scores, location Page-Hinkley only (the pooled layer): a leaner loop.
        self.location_only = bool(
            self.scoring == k.SCORE_GIVEN and not settings.adwin and n_ph
            and (self.ph_par[:, k.PH_SOURCE] == k.SOURCE_LOCATION).all())
        # The reference's lookup tables; empty while warming up.
        self.knots, self.below, self.at_or_below = np.zeros(0), np.zeros(0), np.zeros(0)
        self.u_min = 0.0
        self.warmup_values: list[np.ndarray] = []
        self.warmup_first: int | None = None
        self.warmup_last: int | None = None
        self.warmup_target = settings.warmup_records
        self.reference: NumericReference | None = None
        self.start_warmup()
        if reference is not None:
            self.set_reference(reference)

    # ------------------------------------------------------------------ configuration
    def reset_detectors(self) -> None:
        for array in (self.ph_f, self.ph_i, self.aw_s, self.aw_totals, self.aw_variances,
                      self.aw_counts, self.alarm):
            array.fill(0)
        for row in range(self.ph_par.shape[0]):
            k.ph_reset(self.ph_f, self.ph_i, row)
        k.adwin_reset(self.aw_s, self.aw_totals, self.aw_variances, self.aw_counts)

    def set_reference(self, reference: NumericReference) -> None:
        self.reference = reference
        self.knots, self.below, self.at_or_below = reference.arrays()
        self.u_min = reference.u_min()
        self.warmup_values, self.warmup_first, self.warmup_last = [], None, None
        # A segment's signal with a handful of values (a county's levy rate: one per
        # district) has no spread of its own: its "spread" is the district mix, which
        # composition judges per event-time window. Spread detectors stay silent on it.
        self.quiet_spread(self.scoring == k.SCORE_RANDOMISED
                          and len(reference.knots) < MIN_SPREAD_VALUES)

    def quiet_spread(self, quiet: bool) -> None:
        """Spread detectors silent (``quiet``) or back at their thresholds."""
        spread_rows = self.ph_par[:, k.PH_SOURCE] == k.SOURCE_SPREAD
        self.ph_par[:, k.PH_THRESHOLD] = np.where(quiet & spread_rows, np.inf,
                                                  self.ph_thresholds)

    def start_warmup(self, length: int | None = None) -> None:
        """Learn a new reference from the next ``length`` values (default: the warm-up
        length) before detecting again; after an alarm the old reference is stale."""
        self.reference = None
        self.warmup_target = length or self.settings.warmup_records
        self.warmup_values, self.warmup_first, self.warmup_last = [], None, None
        self.reset_detectors()

    def use_reference(self, reference: Reference) -> None:
        own = reference.numeric.get(self.name)
        if own is not None:
            self.reset_detectors()
            self.set_reference(own)

    def reference_part(self) -> Reference:
        return Reference() if self.reference is None else Reference(
            numeric={self.name: self.reference})

    def adopt_warmup(self, min_values: int) -> None:
        if self.reference is not None:
            return
        collected = np.concatenate(self.warmup_values) if self.warmup_values else np.zeros(0)
        if collected.size >= min_values:
            self.reset_detectors()
            self.set_reference(NumericReference.from_values(
                collected, self.warmup_first, self.warmup_last))

    # ------------------------------------------------------------------ feeding
    def feed(self, column: Any, positions: np.ndarray, scores: np.ndarray | None = None,
             after_alarm: Callable[[int], np.ndarray] | None = None) -> list[Alarm]:
        """Feed one batch. With ``scores`` (same length, NaN-filled by the caller), also
        write each value's location score against the reference that judged it (NaN while
        warming up): the segment layer pools them, exactly, whatever the batching.
        ``after_alarm(index)``: the values from ``index`` on, as they read after an alarm
        (the stratum layer re-learns its references then)."""
        values = np.ascontiguousarray(column, dtype=np.float64)
        alarms: list[Alarm] = []
        start = 0
        while start < values.shape[0]:
            if self.reference is None:
                start = self._warm(values, positions, start)
                continue
            start = self._run(values, positions, start, scores)
            if self.alarm[:, k.AL_FIRED].any():
                alarms.append(self.take_alarm(start - 1))
                if after_alarm is not None:
                    values = values.copy()
                    values[start:] = after_alarm(start)
        return alarms

    def take_alarm(self, index: int) -> Alarm:
        """The alarm the detectors just raised at batch ``index``; they restart and the
        reference is learned again (after an alarm the old one is stale)."""
        alarm = Alarm(index, self._finding())
        self.alarm[:, :] = 0.0
        self.start_warmup(self.settings.relearn_records)
        return alarm

    def _run(self, values: np.ndarray, positions: np.ndarray, start: int,
             scores: np.ndarray | None) -> int:
        """Detect from ``start`` up to and including the first alarm; returns where to go on."""
        if self.location_only and scores is None:
            return int(k.run_location_page_hinkley(
                values, positions, start, self.ph_par, self.ph_f, self.ph_i, self.aw_s,
                self.aw_totals, self.aw_variances, self.aw_counts, self.ring_values,
                self.ring_positions, self.counters, self.alarm))
        return int(k.run_numeric(
            values, positions, start, self.knots, self.below, self.at_or_below,
            self.u_min, self.ph_par, self.ph_f, self.ph_i, self.aw_par, self.aw_s,
            self.aw_totals, self.aw_variances, self.aw_counts, self.ring_values,
            self.ring_positions, self.counters, self.alarm,
            self.scoring, NO_SCORES if scores is None else scores))

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
            return int(values.shape[0])
        self.finish_warmup()
        return int(take[-1]) + 1

    def finish_warmup(self) -> None:
        """The warm-up values collected make the reference."""
        self.set_reference(NumericReference.from_values(
            np.concatenate(self.warmup_values), self.warmup_first, self.warmup_last))

    # ------------------------------------------------------------------ explanation
    def _finding(self) -> SignalFinding:
        count = int(self.counters[k.C_COUNT])
        fired = np.flatnonzero(self.alarm[:, k.AL_FIRED])
        change = int(self.alarm[fired, k.AL_CHANGE].min())
        firings = tuple(self._firing(int(row)) for row in fired)
        window, positions = recent(self.ring_values, self.ring_positions, self.counters,
                                   max(1, count - change))
        z, _ = k.standardise(window, self.knots, self.below, self.at_or_below, self.u_min)
        location = any(f.detector != "spread_page_hinkley" for f in firings)
        effect = float(z.mean()) if location else float(z.std())
        current = numeric_summary(window, positions, max(1, count - change))
        assert self.reference is not None  # alarms only fire against a reference
        return SignalFinding(self.name, firings, effect,
                             "mean_shift" if location else "std_ratio",
                             reference_summary(self.reference), current,
                             WINDOW_SCALES.get(self.scoring, "value"))

    def _firing(self, row: int) -> DetectorFiring:
        statistic, threshold, direction = self.alarm[row, 1:4]
        parameters: tuple[tuple[str, float], ...]
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
                k.adwin_check(self.aw_par, self.aw_s, self.aw_totals, self.aw_counts, out, True,
                              k.adwin_scratch(self.aw_totals))
                ratio = float(out[3])
            rows.append(DetectorStatus(self.name, "adwin", ratio, 1.0, warming))
        return rows

    # ------------------------------------------------------------------ state
    def _fixed_arrays(self) -> dict[str, np.ndarray]:
        """The state arrays whose shape the settings fix, in snapshot order."""
        return {"ph_f": self.ph_f, "ph_i": self.ph_i, "aw_s": self.aw_s,
                "aw_counts": self.aw_counts, "ring_values": self.ring_values,
                "ring_positions": self.ring_positions, "counters": self.counters}

    def state(self) -> ChannelState:
        arrays = self._fixed_arrays()
        levels = int(self.aw_s[k.AW_LEVELS])  # ADWIN's histogram beyond its levels is empty
        arrays["aw_totals"] = self.aw_totals[:levels]
        arrays["aw_variances"] = self.aw_variances[:levels]
        if self.warmup_values:
            arrays["warmup"] = np.concatenate(self.warmup_values)
        values = {"warmup_first": self.warmup_first, "warmup_last": self.warmup_last,
                  "warmup_target": self.warmup_target}
        return ChannelState(values, arrays)

    def state_specs(self) -> dict[str, ArraySpec]:
        specs = {key: ArraySpec.exactly(array) for key, array in self._fixed_arrays().items()}
        columns = self.aw_totals.shape[1]
        for key in ("aw_totals", "aw_variances"):
            specs[key] = ArraySpec("<f8", (1, columns), (k.AW_MAX_LEVELS, columns))
        if self.reference is None:
            specs["warmup"] = ArraySpec("<f8", (0,), (_max_warmup(self.settings),),
                                        required=False)
        return specs

    @classmethod
    def from_state(cls, name: str, settings: DetectorSettings, reference: Reference,
                   state: ChannelState) -> Self:
        channel = cls(name, settings, reference.numeric.get(name))
        channel._load(state)
        return channel

    def _load(self, state: ChannelState) -> None:
        arrays, values = _checked(self.name, state, self.state_specs(), NUMERIC_FINITE)
        self.warmup_first, self.warmup_last = _warmup_span(values)
        _check_adwin(self.name, arrays)
        self.warmup_target = json_int(values.get("warmup_target"), "warmup_target", low=1,
                                      high=_max_warmup(self.settings))
        if "warmup" in arrays and arrays["warmup"].shape[0] > self.warmup_target:
            raise SnapshotError(f"channel {self.name}: warm-up longer than its target",
                                "shape")
        for key, array in self._fixed_arrays().items():
            array[...] = arrays[key]
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
        self.reference: CategoricalReference | None = None
        self.warmup_names: list[str] = []
        self.warmup_first: int | None = None
        self.warmup_last: int | None = None
        self.new_names: list[tuple[str, int]] = []  # (name, first position), code order
        # Buckets and CUSUM state, sized by the reference's categories (none yet): the known
        # categories, then "other" and "new".
        self.known: list[str] = []
        self.n_known = 0
        self.code_of: dict[str, int] = {}
        self.rate_per_test = 0.0
        self.par = np.zeros(4)
        self.shares = np.zeros(2)
        self.cusum_state = np.zeros(4)  # CS_* scalars of the CUSUM loop
        self.counts = np.zeros(2)
        self.llr = np.zeros((4, 2))
        self.cusum = np.zeros((2, 2))
        self.book = np.zeros((4, 2), dtype=np.int64)
        if reference is not None:
            self.set_reference(reference)

    def start_warmup(self) -> None:
        self.reference = None
        self.warmup_names = []
        self.warmup_first = None
        self.warmup_last = None
        self.new_names = []

    def use_reference(self, reference: Reference) -> None:
        own = reference.categorical.get(self.name)
        if own is not None:
            self.set_reference(own)

    def reference_part(self) -> Reference:
        return Reference() if self.reference is None else Reference(
            categorical={self.name: self.reference})

    def adopt_warmup(self, min_values: int) -> None:
        """A categorical warm-up is never cut short: its reference names the categories."""

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
        self.cusum_state = np.zeros(4)
        self.counts = np.zeros(buckets)
        self.llr = np.zeros((4, buckets))
        self.cusum = np.zeros((2, buckets))
        self.book = np.zeros((4, buckets), dtype=np.int64)
        self.cusum_state[k.CS_GATE_AFTER_ALARM] = s.relearn_records
        k.category_restart(self.cusum_state, self.counts, self.cusum, self.book,
                           self.counters, int(self.counters[k.C_COUNT]),
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
    def feed(self, column: Any, positions: np.ndarray,
             scores: np.ndarray | None = None) -> list[Alarm]:
        """Feed one batch (categories have no location scores: ``scores`` stays as is)."""
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
                codes, positions, start, self.n_known, self.par, self.cusum_state,
                self.counts, self.shares, self.llr, self.cusum, self.book, self.ring_codes,
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
        codes: np.ndarray = mapping[labels]
        return codes

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
            return int(labels.shape[0])
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
        assert ref is not None  # alarms only fire against a reference
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
        if self.cusum_state[k.CS_SINCE] < self.cusum_state[k.CS_GATE]:
            return 0.0
        rise = np.maximum(self.cusum[0] + pending * self.llr[1], 0.0)
        fall = self.cusum[1] + pending * self.llr[3]
        return float(max(rise.max(), fall.max()))

    # ------------------------------------------------------------------ state
    def _state_arrays(self) -> dict[str, np.ndarray]:
        """The state arrays in snapshot order; the CUSUMs only once there is a reference."""
        arrays: dict[str, np.ndarray] = {
            "ring_codes": self.ring_codes, "ring_positions": self.ring_positions,
            "counters": self.counters}
        if self.reference is not None:
            arrays.update(state=self.cusum_state, counts=self.counts, llr=self.llr,
                          cusum=self.cusum, book=self.book)
        return arrays

    def state(self) -> ChannelState:
        values = {"warmup_first": self.warmup_first, "warmup_last": self.warmup_last,
                  "warmup_names": list(self.warmup_names),
                  "new_names": [list(item) for item in self.new_names]}
        return ChannelState(values, self._state_arrays())

    def state_specs(self) -> dict[str, ArraySpec]:
        return {key: ArraySpec.exactly(array) for key, array in self._state_arrays().items()}

    @classmethod
    def from_state(cls, name: str, settings: DetectorSettings, reference: Reference,
                   state: ChannelState) -> Self:
        channel = cls(name, settings, reference.categorical.get(name))
        channel._load(state)
        return channel

    def _load(self, state: ChannelState) -> None:
        arrays, values = _checked(self.name, state, self.state_specs(), CATEGORICAL_FINITE)
        self.warmup_first, self.warmup_last = _warmup_span(values)
        names = values.get("warmup_names")
        if (not isinstance(names, list) or len(names) > self.settings.warmup_records
                or not all(isinstance(name, str) for name in names)):
            raise SnapshotError(f"channel {self.name}: bad warmup_names", "header")
        self.warmup_names = names
        self.new_names = _new_names(self.name, values.get("new_names"))
        for key, array in self._state_arrays().items():
            array[...] = arrays[key]


def _numeric_parameters(settings: DetectorSettings, upward_only: bool
                        ) -> tuple[float, list[str], np.ndarray, np.ndarray]:
    """Rate per one-sided test, Page-Hinkley names and parameter rows, ADWIN parameters."""
    s = settings
    sides = 1 if upward_only else 2
    mode = k.MODE_UP if upward_only else k.MODE_BOTH
    families = []
    if s.page_hinkley:
        families += [("page_hinkley", k.SOURCE_LOCATION, shift) for shift in
                     design_shifts(s.mean_shift_min, s.mean_shift_max, s.mean_shift_levels)]
    if s.spread and not upward_only:  # an error can only worsen upwards
        families += [("spread_page_hinkley", k.SOURCE_SPREAD, shift) for shift in
                     design_shifts(s.spread_shift_min, s.spread_shift_max,
                                   s.spread_shift_levels)]
    tests = sides * len(families) + (1 if s.adwin else 0)
    rate_per_test = s.false_alarm_rate / tests
    ph_par = np.zeros((len(families), 6))
    for row, (_, source, shift) in enumerate(families):
        delta = shift / 2.0
        ph_par[row] = (delta, page_hinkley_threshold(delta, 1.0 / rate_per_test),
                       s.min_instances, 1.0, mode, source)
    aw_par = np.array([adwin_delta(rate_per_test, s.adwin_clock), s.adwin_clock,
                       ADWIN_MAX_BUCKETS, ADWIN_MIN_WINDOW, ADWIN_GRACE,
                       1.0 if s.adwin else 0.0, 1.0 if upward_only else 0.0])
    return rate_per_test, [name for name, _, _ in families], ph_par, aw_par


def merged_reference(channels: list[Channel]) -> Reference:
    """The references in use over ``channels``, in channel order."""
    return reduce(Reference.merged, (channel.reference_part() for channel in channels),
                  Reference())


def _max_warmup(settings: DetectorSettings) -> int:
    return max(settings.warmup_records, settings.relearn_records)


def _checked(channel: str, state: ChannelState, specs: dict[str, ArraySpec],
             finite: frozenset[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A channel's stored arrays and values, once their layout, ring and numbers pass."""
    check_layout(channel, specs, layout_of(state.arrays))
    _check_ring(channel, state.arrays)
    check_numbers(channel, state.arrays, finite)
    return state.arrays, state.values


def _warmup_span(values: dict[str, Any]) -> tuple[int | None, int | None]:
    return (json_optional_int(values.get("warmup_first"), "warmup_first"),
            json_optional_int(values.get("warmup_last"), "warmup_last"))


def _check_ring(channel: str, arrays: dict[str, np.ndarray]) -> None:
    """The compiled loops write at the ring head without bounds checks."""
    counters = arrays["counters"]
    size = arrays["ring_positions"].shape[0]
    if not 0 <= counters[k.C_RING_HEAD] < size or counters[k.C_COUNT] < 0:
        raise SnapshotError(f"channel {channel}: ring position out of range", "shape")


def _check_adwin(channel: str, arrays: dict[str, np.ndarray]) -> None:
    """ADWIN's level count and bucket counts index its histogram in compiled code, and its
    width is what its buckets hold (its cut test divides by the sub-windows' lengths)."""
    scalars, counts = arrays["aw_s"], arrays["aw_counts"]
    levels = arrays["aw_totals"].shape[0]
    if (not np.all(np.isfinite(scalars)) or scalars[k.AW_LEVELS] != levels
            or arrays["aw_variances"].shape[0] != levels or scalars[k.AW_WIDTH] < 0
            or np.any(counts < 0) or np.any(counts > ADWIN_MAX_BUCKETS)
            or np.any(counts[levels:] != 0)
            or scalars[k.AW_WIDTH] != float(np.sum(counts[:levels] << np.arange(levels)))):
        raise SnapshotError(f"channel {channel}: ADWIN state out of range", "shape")


def _new_names(channel: str, value: Any) -> list[tuple[str, int]]:
    if not isinstance(value, list) or len(value) > MAX_NEW_NAMES:
        raise SnapshotError(f"channel {channel}: bad new_names", "header")
    names = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and is_int(item[1])):
            raise SnapshotError(f"channel {channel}: bad new_names entry", "header")
        names.append((item[0], int(item[1])))
    return names


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
