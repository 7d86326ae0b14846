"""``SegmentedBank``: drift detection that holds whatever order records arrive in.

Records are routed by their segment key (``detectors.segment_by``, default county) to that
segment's ``DetectorBank``, which watches the numeric, prediction and performance signals
against the segment's own reference, in the records' original relative order. Three layers
make one decision stream:

* **segments**: one ``DetectorBank`` per segment (numeric-like signals only), so a county
  that uploads its roll in slices is compared with its own past, not with the mix;
* **pooled**: one ``DetectorBank`` (location Page-Hinkley) over every record's location score
  against its own segment's reference. Those scores are N(0, 1) under no change whatever the
  arrival order, and a change of the whole stream moves all of them, so it is found as fast
  as by one stream-wide bank. A segment decision whose change began before the pooled
  detectors decided the same signal and direction (or within ``cooldown_records`` after) is
  that same change: absorbed. A pooled decision whose evidence since its onset is one
  segment's is named after that segment;
* **composition** (``detectors.composition``): which counties, districts and classes make
  up the stream, judged per closed event-time window.

Decisions name their segment (``county=Yakima``; empty for the pooled and composition
layers), the estimated onset and an episode identity. Pure: no I/O, no clock.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from statistics import NormalDist
from typing import Any, cast

import numpy as np
import orjson
import pandas as pd

from detectors import kernels as k
from detectors.bank import DetectorBank, check_positions
from detectors.channels import Alarm, DetectorStatus, NumericChannel
from detectors.composition import Coded, CompositionMonitor, code_column, event_times_ms
from detectors.config import DetectorSettings
from detectors.decision import KINDS, DriftDecision, SignalFinding
from detectors.errors import DetectorConfigError, SnapshotError
from detectors.parallel import run_each
from detectors.recent import Batch, RecentRecords
from detectors.reference import KNOT_PROBABILITIES, NumericReference, Reference
from detectors.snapshot import decode, encode
from detectors.stacks import POOLED, SegmentStack, fits_pool
from detectors.strata import StrataScaler
from schemas.drift_event import MISSING_SEGMENT_LABEL, OTHER_SEGMENT_LABEL

__all__ = ["OTHER_SEGMENT", "SegmentedBank", "is_single_bank_snapshot"]

MAGIC = b"LDSEGS"
FORMAT_VERSION = 1
SINGLE_BANK_MAGIC = b"LDSNAP"
# The labels drift events carry (the trainer reads them back: schemas.drift_event)
OTHER_SEGMENT = OTHER_SEGMENT_LABEL  # segments beyond max_segments share one bank
MISSING = MISSING_SEGMENT_LABEL
# A pooled decision is one segment's when that segment's scores since the onset are shifted
# (|z| of their sum >= 3 in the decision's direction) and the other segments' are not (< 2)...
ATTRIBUTE_SEGMENT_Z, ATTRIBUTE_REST_Z = 3.0, 2.0
# ... or when that segment's records are nearly all the evidence (its slice was arriving).
ATTRIBUTE_ALONE_SHARE = 0.9
ATTRIBUTE_REST_SHARE = 0.2
MIN_LEARNED_VALUES = 200  # a baseline file's segment with fewer values keeps warming up
MAX_HEADER_BYTES = 16 << 20
MAX_NAME_CHARS = 512


def uniform_reference() -> NumericReference:
    """The segments' reference under strata: U(0, 1) itself (their input is each value's
    probability under its stratum's reference)."""
    probabilities = np.clip(KNOT_PROBABILITIES, 1e-7, 1 - 1e-7)
    return NumericReference(n=10_000_000, mean=0.5, std=float(np.sqrt(1 / 12)),
                            quantiles=(0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99),
                            knots=tuple(map(float, probabilities)),
                            below=tuple(map(float, probabilities)),
                            at_or_below=tuple(map(float, probabilities)))


def standard_normal_reference() -> NumericReference:
    """The pooled layer's reference: N(0, 1) itself (its input is already normal scores)."""
    normal = NormalDist()
    probabilities = np.clip(KNOT_PROBABILITIES, 1e-7, 1 - 1e-7)
    knots = [normal.inv_cdf(float(p)) for p in probabilities]
    return NumericReference(n=10_000_000, mean=0.0, std=1.0,
                            quantiles=tuple(normal.inv_cdf(p) for p in
                                            (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)),
                            knots=tuple(knots), below=tuple(map(float, probabilities)),
                            at_or_below=tuple(map(float, probabilities)))


class SegmentedBank:
    """Per-segment banks, a pooled bank and event-time composition, fed like a
    ``DetectorBank``: ``update(columns, positions)`` -> ``DriftDecision``s."""

    def __init__(self, settings: DetectorSettings, reference: Reference | None = None) -> None:
        settings.validate()
        self.settings = settings
        share = 2.0 if settings.pooled and settings.page_hinkley else 1.0
        self.uniform = uniform_reference()
        # With strata, a segment's values reach it as probabilities under their stratum's
        # reference (detectors/strata.py); without, it scores them against its own.
        self.strata_fields = settings.strata_fields()
        self.strata = (StrataScaler(settings.numeric_like(), settings.stratum_warmup_records)
                       if self.strata_fields else None)
        # Each value is judged by its segment's tests and the pooled tests: half the budget
        # each keeps the union bound per value at false_alarm_rate (CALIBRATION.md 7).
        self.segment_settings = replace(
            settings, categorical_signals=(), false_alarm_rate=settings.false_alarm_rate / share,
            scoring="uniform" if self.strata is not None else "randomised",
            warmup_records=settings.segment_warmup_records,
            relearn_records=min(settings.relearn_records, settings.segment_warmup_records))
        self.pool: DetectorBank | None = None
        if share == 2.0:
            # Location Page-Hinkley only: a change of spread is each segment's to find, and
            # the pooled layer must stay cheap (it sees every record again).
            pool_settings = replace(self.segment_settings, adwin=False, spread=False,
                                    scoring="given")
            normal = standard_normal_reference()
            self.pool = DetectorBank(pool_settings, Reference(
                numeric={name: normal for name in settings.numeric_like()}))
        self.segments: dict[str, DetectorBank] = {}
        self.composition = CompositionMonitor(settings, self._composition_signals())
        if reference is not None:
            self.composition.set_reference(reference.categorical)
        self.records_seen = 0
        self.last_position: int | None = None
        # "segment/signal/direction" -> recent detections (segment "" = the whole stream)
        self.pooled_marks: dict[str, list[int]] = {}
        self.absorbed = 0
        self.codes: dict[str, int] = {}  # segment -> code in the recent-records ring
        # Per numeric signal, every segment's detector state stacked (fed in one call).
        self.stacks: dict[str, SegmentStack] = {}
        self.channel_order = {name: i for i, name in
                              enumerate(self.segment_settings.numeric_like())}
        self.recent = RecentRecords(settings.numeric_like())
        # Per signal, the strata's change count the segments' spread tests follow.
        self.spread_synced: dict[str, int] = {}
        if reference is not None:
            self._learn_model_strata(reference)

    def _uniform_reference(self, signals: tuple[str, ...]) -> Reference:
        """U(0, 1) for each of ``signals``: what stratum probabilities are under no change."""
        return Reference(numeric={name: self.uniform for name in signals})

    def _composition_signals(self) -> tuple[str, ...]:
        signals = tuple(self.settings.categorical_signals)
        if len(self.settings.segment_by) > 1:
            signals += ("+".join(self.settings.segment_by),)
        return signals

    # ------------------------------------------------------------------ feeding
    def update(self, columns: Mapping[str, Any], positions: Any,
               coded: Mapping[str, Coded] | None = None) -> list[DriftDecision]:
        """Feed one batch (arrival order): one array per signal, the segment fields and
        ``event_time`` (datetime64, int ms or RFC 3339 strings), and strictly increasing
        positions. ``coded``: category columns of the batch coded already, as
        ``code_column`` codes them. Returns the decisions, in order of detection."""
        positions = np.ascontiguousarray(positions, dtype=np.int64)
        check_positions(positions, self.last_position)
        n = len(positions)
        times = (event_times_ms(columns["event_time"]) if columns.get("event_time") is not None
                 else np.full(n, -1, dtype=np.int64))
        if len(times) != n:
            raise ValueError(f"event_time has {len(times)} values for {n} positions")
        # Each category column coded once, for routing and composition alike.
        given = coded or {}
        coded = {name: given[name] if name in given else code_column(columns[name])
                 for name in dict.fromkeys(self.settings.segment_by + self.strata_fields
                                           + self.composition.signals)
                 if columns.get(name) is not None}
        groups, labels = self._groups(coded, n)
        strata_groups = self._groups(coded, n, self.strata_fields) if self.strata else None
        if len(self.settings.segment_by) > 1:
            coded["+".join(self.settings.segment_by)] = (groups, [str(label) for label in labels])
        # The composition runs beside the signals (its state is its own).
        composing = partial(self.composition.update, columns, positions, times, coded)
        found, codes, scores, matrix = self._feed_segments(columns, positions, groups, labels,
                                                           strata_groups, composing)
        batch = Batch(positions, times, codes, scores, matrix)
        decisions = self._episodes(found, batch)
        self.recent.push(batch)
        self.records_seen += n
        if n:
            self.last_position = int(positions[-1])
        return decisions

    def finish(self) -> list[DriftDecision]:
        """End of input (a file): close every open event-time window and judge it, as if
        the watermark had passed them all; decisions are placed at the last position."""
        if self.last_position is None:
            return []
        found = [("composition", d) for d in self.composition.close_all(self.last_position)]
        empty = np.zeros(0, dtype=np.int64)
        return self._episodes(found, Batch(empty, empty, empty.astype(np.int32), {}))

    def learn(self, columns: Mapping[str, Any]) -> None:
        """Warm every segment up on reference rows (e.g. a baseline file) before the stream:
        they are fed at negative positions and their decisions dropped; a segment with at
        least ``MIN_LEARNED_VALUES`` baseline values takes them as its reference even if
        that is fewer than its warm-up. The composition reference comes from the
        ``Reference`` given to the constructor."""
        n = len(next(iter(columns.values()))) if columns else 0
        if self.last_position is not None or n == 0:
            return
        positions = np.arange(-n - 1, -1, dtype=np.int64)
        if self.strata is not None:  # the strata learn; the segments judge probabilities
            self._learn_strata(columns, positions)
            return
        self._feed_segments(columns, positions, *self.segment_groups(columns, n))
        self.pooled_marks = {}
        for bank in self.segments.values():  # a short baseline still sets each reference
            for channel in bank.channels.values():
                channel.adopt_warmup(MIN_LEARNED_VALUES)

    def _learn_model_strata(self, reference: Reference) -> None:
        """The prediction and error signals' strata from the champion's holdout rows (its
        predictions and errors, out of sample), so a new champion is watched in every
        district at once rather than after each district's next 2,000 values."""
        rows = reference.rows
        if self.strata is None or not rows:
            return
        model = self.settings.prediction_signals + self.settings.performance_signals
        n = len(next(iter(rows.values())))
        if n:
            self._learn_strata(rows, np.arange(-n - 1, -1, dtype=np.int64), model)

    def _learn_strata(self, columns: Mapping[str, Any], positions: np.ndarray,
                      signals: tuple[str, ...] | None = None) -> None:
        """Each stratum's reference of ``signals`` (default: all) from the baseline rows
        (from ``MIN_LEARNED_VALUES``)."""
        assert self.strata is not None
        n = len(positions)
        coded = {name: code_column(columns[name]) for name in
                 dict.fromkeys(self.settings.segment_by + self.strata_fields)
                 if columns.get(name) is not None}
        segment_codes = self._segment_codes(*self._groups(coded, n))
        strata = self.strata.strata_of(segment_codes, *self._groups(coded, n,
                                                                    self.strata_fields))
        every, scratch = np.arange(n), np.empty(n)
        signals = self.settings.numeric_like() if signals is None else signals
        for name in signals:
            if columns.get(name) is not None:
                values = np.ascontiguousarray(columns[name], dtype=np.float64)
                self.strata.scores(name, values, positions, strata, every, scratch)
        self.strata.adopt_warmups(MIN_LEARNED_VALUES, signals)

    def segment_keys(self, columns: Mapping[str, Any], n: int) -> np.ndarray:
        """Each record's segment label, e.g. ``county=Yakima`` (empty: no segmentation)."""
        fields = self.settings.segment_by
        if not fields:
            return np.full(n, "", dtype=object)
        keys = np.full(n, "", dtype=object)
        for number, name in enumerate(fields):
            column = columns.get(name)
            if column is None:
                codes, labels = np.zeros(n, dtype=np.int64), np.array([MISSING], dtype=object)
            else:  # label the few distinct values, not every record
                codes, uniques = pd.factorize(np.asarray(column, dtype=object))
                labels = np.array([str(u) if str(u) else MISSING for u in uniques] + [MISSING],
                                  dtype=object)
            prefix = ("," if number else "") + name + "="
            keys = keys + (prefix + labels)[codes]
        return keys

    def segment_groups(self, columns: Mapping[str, Any], n: int) -> tuple[np.ndarray,
                                                                         np.ndarray]:
        """``segment_keys`` as (group per record, label per group), groups numbered in order
        of first appearance, without building a string per record. Two groups may share a
        label (values whose text is the same, such as "" and a missing value)."""
        return self._groups({name: code_column(columns[name]) for name in self.settings.segment_by
                             if columns.get(name) is not None}, n)

    def _groups(self, coded: Mapping[str, Coded], n: int,
                fields: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``segment_groups`` from the segment fields already coded (or the groups of other
        ``fields``: the strata)."""
        fields = self.settings.segment_by if fields is None else fields
        if not fields:
            return np.zeros(n, dtype=np.int64), np.array([""] if n else [], dtype=object)
        single = coded.get(fields[0]) if len(fields) == 1 else None
        if single is not None and (not n or single[0].min() >= 0):
            # Codes already numbered in order of first appearance, none missing: the groups.
            prefix = fields[0] + "="
            return single[0].astype(np.int64), np.array([prefix + text for text in single[1]],
                                                        dtype=object)
        combined, labels = np.zeros(n, dtype=np.int64), np.array([""], dtype=object)
        for number, name in enumerate(fields):
            entry = coded.get(name)
            if entry is None:
                codes, texts = np.zeros(n, dtype=np.int64), [MISSING]
            else:  # label the few distinct values, not every record
                codes, texts = entry[0], [*entry[1], MISSING]
                codes = np.where(codes < 0, len(texts) - 1, codes)  # missing: the last label
            prefix = ("," if number else "") + name + "="
            field_labels = np.array([prefix + text for text in texts], dtype=object)
            combined, first = pd.factorize(combined * len(field_labels) + codes)
            labels = labels[first // len(field_labels)] + field_labels[first % len(field_labels)]
        return combined.astype(np.int64), labels

    def _feed_segments(self, columns: Mapping[str, Any], positions: np.ndarray,
                       groups: np.ndarray, labels: np.ndarray,
                       strata_groups: tuple[np.ndarray, np.ndarray] | None = None,
                       composing: Callable[[], list[DriftDecision]] | None = None
                       ) -> tuple[list[tuple[str, DriftDecision]], np.ndarray,
                                  dict[str, np.ndarray], np.ndarray | None]:
        """Each segment's records to its bank's channels (relative order kept), one compiled
        call per signal for every segment, then every record's score to the pooled bank.
        With strata, the values go as probabilities under each record's stratum.
        ``composing``: the composition's update, run beside the signals.
        Returns (layer, decision) pairs, each record's segment code, the pooled scores and,
        when every signal has a column, the same as rows in signal order."""
        signals = [name for name in self.settings.numeric_like() if columns.get(name) is not None]
        values = [np.ascontiguousarray(columns[name], dtype=np.float64) for name in signals]
        for name, column in zip(signals, values, strict=True):  # read, never written
            if column.shape != (len(positions),):
                raise ValueError(f"column {name!r} has {len(column)} values for "
                                 f"{len(positions)} positions")
        scores = np.full((len(signals), len(positions)), np.nan)
        segment_codes = self._segment_codes(groups, labels)
        every = np.arange(len(positions))
        strata = grouping = None
        if self.strata is not None:
            assert strata_groups is not None, "update() groups the records by stratum"
            strata = self.strata.strata_of(segment_codes, *strata_groups)
            grouping = self.strata.grouping(strata, every)
        banks = list(self.segments.values())  # in code order
        # Each segment's rows, ascending, after the segments' starts: one counting sort.
        grouped = k.group_rows(every, segment_codes, len(banks))
        bounds, order = grouped[:len(banks) + 1], grouped[len(banks) + 1:]
        routes = Routes(positions, order, bounds, (np.diff(bounds) > 0).tolist(), every, strata,
                        grouping)
        for name in signals:
            if name not in self.stacks:  # (setdefault would build a stack per call)
                self.stacks[name] = SegmentStack()
        tasks: list[Callable[[], list[Any]]] = [
            partial(self._feed_signal, name, values[row], scores[row], routes, banks)
            for row, name in enumerate(signals)]
        # The composition first: it holds the GIL most of its time; the signals' compiled
        # loops do not, so the other cores run them meanwhile.
        composed, *fed = run_each([composing or list, *tasks], scores.size,
                                  self.settings.threads)
        alarms: list[list[tuple[int, int, str, Alarm]]] = [[] for _ in banks]
        pooled_alarms: list[tuple[int, int, str, Alarm]] = []
        for name, found_here in zip(signals, fed, strict=True):
            for code, alarm in found_here:
                entry = (alarm.index, self.channel_order[name], name, alarm)
                (pooled_alarms if code == POOLED else alarms[code]).append(entry)
        found: list[tuple[str, DriftDecision]] = [("composition", d) for d in composed]
        starts = bounds.tolist()
        for code, label in enumerate(self.segments):
            lo, hi = starts[code], starts[code + 1]
            if hi == lo:
                continue
            if alarms[code]:  # the segment's positions, for its decisions
                found += [("segment", replace(d, segment=label)) for d in
                          banks[code].account(alarms[code], positions[order[lo:hi]])]
            else:
                banks[code].count(hi - lo, int(positions[order[hi - 1]]))
        pooled = dict(zip(signals, scores, strict=True))
        if self.pool is not None and signals:  # its channels were fed in the calls above
            found += [("pooled", d) for d in self.pool.account(pooled_alarms, positions)]
        whole = len(signals) == len(self.settings.numeric_like())
        return found, segment_codes, pooled, scores if whole else None

    def _feed_signal(self, name: str, values: np.ndarray, scores: np.ndarray, routes: Routes,
                     banks: list[DetectorBank]) -> list[tuple[int, Alarm]]:
        """One signal's batch through its strata (if any), its segments and its pooled
        channel; touches no other signal's state (``run_each`` runs signals side by side).
        With strata the segments get the values' stratum probabilities; ``scores`` gets
        the location scores."""
        relearn = None
        if self.strata is not None:
            assert routes.strata is not None, "update() groups the records by stratum"
            raw, values = values, np.empty_like(values)  # every row gets written
            self.strata.scores(name, raw, routes.positions, routes.strata, routes.every, values,
                               routes.strata_grouping)
            relearn = Relearn(self, name, raw, values, routes.positions, routes.strata)
            self._quiet_spread(name, banks)
        channels = [cast(NumericChannel, bank.channels[name]) for bank in banks]
        pool = None if self.pool is None else cast(NumericChannel, self.pool.channels[name])
        in_call = pool if pool is not None and fits_pool(pool) else None
        found = self.stacks[name].feed(values, routes.positions, routes.order, routes.bounds,
                                       routes.present, scores, channels, in_call, relearn)
        if pool is not None and in_call is None:  # warming up: through its own feed
            found += [(POOLED, alarm) for alarm in pool.feed(scores, routes.positions)]
        return found

    def _segment_codes(self, groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each record's segment code; segments met for the first time are made in order of
        first appearance."""
        by_group = np.array([self.codes[self._segment_for(str(label))] for label in labels],
                            dtype=np.int32)
        codes: np.ndarray = by_group[groups]
        return codes

    def _segment_for(self, label: str) -> str:
        if label in self.segments:
            return label
        if len(self.segments) >= self.settings.max_segments:
            label = OTHER_SEGMENT
            if label in self.segments:
                return label
        self.segments[label] = DetectorBank(self.segment_settings, self._segment_reference())
        self.codes[label] = len(self.codes)
        return label

    def _quiet_spread(self, name: str, banks: list[DetectorBank]) -> None:
        """Each segment's spread tests of ``name`` silent where its strata know it as a
        handful of values (``StrataScaler.quiet_spread``), once the strata changed."""
        assert self.strata is not None
        changes = self.strata.changes_of(name)
        if self.spread_synced.get(name) == changes:
            return
        quiet = self.strata.quiet_spread(name)
        for code, bank in enumerate(banks):
            channel = bank.channels.get(name)
            if isinstance(channel, NumericChannel):
                channel.quiet_spread(code in quiet)
        self.spread_synced[name] = changes

    def _segment_reference(self) -> Reference | None:
        """A new segment's: U(0, 1) when it is fed stratum probabilities, else its own
        warm-up."""
        if self.strata is None:
            return None
        return self._uniform_reference(self.segment_settings.numeric_like())

    # ------------------------------------------------------------------ episodes
    def _episodes(self, found: list[tuple[str, DriftDecision]],
                  batch: Batch) -> list[DriftDecision]:
        """In detection order (so batching never changes the outcome): name the segment of
        each pooled decision whose evidence is one segment's, absorb segment decisions of a
        change the pooled layer already reported, date each onset."""
        found.sort(key=lambda item: (item[1].detected_at, KINDS.index(item[1].kind),
                                     item[0], item[1].segment))
        decisions = []
        window_ms = self.settings.composition_window_s * 1000
        known: Batch | None = None
        for layer, decision in found:
            if known is None:
                known = self.recent.with_batch(batch)
            onset = decision.onset_at
            if onset is None:
                onset = decision.current_positions[0]
                onset = decision.detected_at if onset is None else onset
            if layer == "pooled":
                decision = replace(decision, segment=self._attribute(decision, onset, known))
            if layer == "segment" or (layer == "pooled" and decision.segment):
                # The same change, already reported by the other layer (same signal and
                # direction, or same kind within the cooldown): absorbed.
                kind_key = f"kind:{decision.segment}/{decision.kind}"
                recent = (self.pooled_marks.get(kind_key, [])
                          + self.pooled_marks.get(f"kind:/{decision.kind}", []))
                same_episode = any(decision.detected_at <= mark + self.settings.cooldown_records
                                   for mark in recent)
                kept = () if same_episode else tuple(
                    f for f in decision.signals
                    if not self._absorbed(decision.segment, f, onset))
                self._mark(decision)
                if not same_episode:
                    self.pooled_marks[kind_key] = [decision.detected_at]
                if not kept:
                    self.absorbed += 1
                    continue
                decision = replace(decision, signals=kept)
            elif layer == "pooled":
                self._mark(decision)
                self.pooled_marks[f"kind:/{decision.kind}"] = [decision.detected_at]
            onset_time = decision.onset_time_ms
            if onset_time is None:
                onset_time = _time_at(onset, known)
            decisions.append(replace(
                decision, onset_at=onset, onset_time_ms=onset_time,
                onset_window_ms=None if onset_time is None
                else onset_time // window_ms * window_ms))
        return decisions

    def _attribute(self, decision: DriftDecision, onset: int, known: Batch) -> str:
        """The segment a pooled decision belongs to, or "" for the whole stream: one
        segment's scores since the onset carry the shift and the rest's do not."""
        if not decision.signals or len(self.codes) < 2:
            return ""
        finding = decision.signals[0]
        scores = known.scores.get(finding.signal)
        if scores is None:
            return ""
        sign = 1.0 if _direction(finding) == "up" else -1.0
        inside = ((known.positions >= onset) & (known.positions <= decision.detected_at)
                  & np.isfinite(scores) & (known.codes >= 0))
        top = attributed_code(known.codes[inside], scores[inside] * sign, len(self.codes))
        if top < 0:
            return ""
        return next(label for label, code in self.codes.items() if code == top)

    def _mark(self, decision: DriftDecision) -> None:
        for finding in decision.signals:
            key = f"{decision.segment}/{finding.signal}/{_direction(finding)}"
            self.pooled_marks[key] = (self.pooled_marks.get(key, []) + [
                decision.detected_at])[-4:]

    def _absorbed(self, segment: str, finding: SignalFinding, onset: int) -> bool:
        direction = _direction(finding)
        marks = (self.pooled_marks.get(f"/{finding.signal}/{direction}", [])
                 + self.pooled_marks.get(f"{segment}/{finding.signal}/{direction}", []))
        # The segment's own onset estimate is noisy by tens of records: within the cooldown
        # after the pooled detection it is the same change.
        return any(onset <= mark + self.settings.cooldown_records for mark in marks)

    # ------------------------------------------------------------------ re-baselining
    def rebaseline(self, reference: Reference | None = None) -> None:
        """A new champion moves predictions and errors, not the records' fields: the model's
        signals re-learn in every segment (a stream-wide reference would make every segment
        whose level differs from the mix alarm, CALIBRATION.md 7), the fields keep their
        references and detectors (re-learning them too left every field unwatched for a
        segment warm-up after each retrain). So does composition: the shares it judges the
        stream's windows by held (or were replaced by the new mix at a decision), while the
        champion's holdout has its training window's mix, which a window read in arrival
        order skews (its last, partial day: one or two false share decisions per 200,000
        records after a swap in county slices, bench/bench_composition_starts.py); it takes
        the champion's shares only for a signal it has none for yet."""
        model = self.settings.prediction_signals + self.settings.performance_signals
        if self.strata is not None:  # each stratum re-learns them; segments judge at once
            for name in model:
                self.strata.relearn(name)
            if reference is not None:
                self._learn_model_strata(reference)
        for bank in self.segments.values():
            bank.rebaseline(self._uniform_reference(model) if self.strata else None, model)
        if self.pool is not None:
            self.pool.rebaseline(self.pool.reference(), model)
        if reference is not None:
            self.composition.set_reference(reference.categorical, keep=True)
        self.pooled_marks = {}

    # ------------------------------------------------------------------ observation
    def status(self) -> list[DetectorStatus]:
        """Per (signal, detector): the row with the largest statistic/threshold over the
        segments and the pooled layer (bounded labels for Prometheus)."""
        best: dict[tuple[str, str], DetectorStatus] = {}
        judging = ({name: self.strata.judging(name) for name in self.strata.signals}
                   if self.strata is not None else None)
        rows = [row for code, bank in enumerate(self.segments.values())
                for row in self._segment_status(code, bank, judging)]
        judged = {row.signal for row in rows if not row.warming_up}
        if self.pool is not None:  # the pooled layer only judges what some segment scores
            rows += [replace(row, detector="pooled_" + row.detector,
                             warming_up=row.warming_up or row.signal not in judged)
                     for row in self.pool.status()]
        rows += self.composition.status()
        for row in rows:
            key = (row.signal, row.detector)
            held = best.get(key)
            if held is None or _ratio(row) > _ratio(held):
                best[key] = row
        return list(best.values())

    @staticmethod
    def _segment_status(code: int, bank: DetectorBank,
                        judging: dict[str, set[int]] | None) -> list[DetectorStatus]:
        """A segment's rows; with strata (``judging``: per signal, the segments some stratum
        judges), a signal none of its strata judges yet is warming up (its detectors have
        the U(0, 1) reference from the start)."""
        rows = bank.status()
        if judging is None:
            return rows
        return [replace(row, warming_up=True)
                if row.signal in judging and code not in judging[row.signal] else row
                for row in rows]

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> bytes:
        """``LDSEGS | u16 version | u32 length | zlib(header JSON) | recent-records ring |
        pooled bank | segment banks | strata``. Each bank's bytes are
        ``DetectorBank.snapshot()``, the strata's ``StrataScaler.to_bytes()`` (none without
        strata); every part's length is in the header."""
        blobs = [(label, encode(bank)) for label, bank in self.segments.items()]
        pool = encode(self.pool) if self.pool is not None else b""
        ring = self.recent.to_bytes()
        strata = self.strata.to_bytes() if self.strata is not None else b""
        header = orjson.dumps({
            "settings": self.settings.to_dict(), "records_seen": self.records_seen,
            "last_position": self.last_position,
            "segments": [[label, len(blob)] for label, blob in blobs],
            "pool": len(pool), "composition": self.composition.state(),
            "pooled_marks": self.pooled_marks, "absorbed": self.absorbed,
            "ring": len(ring), "ring_held": self.recent.records_held(),
            **({"strata": len(strata)} if strata else {})})
        header = zlib.compress(header, 6)
        return (MAGIC + struct.pack("<HI", FORMAT_VERSION, len(header)) + header
                + ring + pool + b"".join(blob for _, blob in blobs) + strata)

    @classmethod
    def restore(cls, data: bytes, settings: DetectorSettings) -> SegmentedBank:
        """Rebuild from ``snapshot()`` bytes; any malformed input raises ``SnapshotError``.
        Under other settings, the banks restore their references only and the window state
        starts afresh."""
        header, offset = _parse_header(data)
        try:
            bank = cls(settings)
            saved_settings = DetectorSettings.from_dict(header["settings"])
            entries = _segment_entries(header["segments"], settings.max_segments + 1)
            pool_length = _length(header["pool"])
            ring_length = _length(header["ring"])
            strata_length = _length(header.get("strata", 0))  # none before strata existed
            if offset + ring_length + pool_length + strata_length + sum(
                    length for _, length in entries) != len(data):
                raise SnapshotError("segmented snapshot: bank sizes do not add up to the "
                                    "snapshot length (truncated or padded)", "corrupt")
            segment_settings = bank.segment_settings
            ring = data[offset:offset + ring_length]
            offset += ring_length
            if pool_length:
                pool = decode(data[offset:offset + pool_length],
                              bank.pool.settings if bank.pool else segment_settings)
                if bank.pool is not None:
                    bank.pool = pool
            offset += pool_length
            for label, length in entries:
                bank.segments[label] = decode(data[offset:offset + length], segment_settings)
                bank.codes[label] = len(bank.codes)
                offset += length
            bank._restore_strata(data[offset:], saved_settings)
            if saved_settings == settings:
                bank._load_state(header)
                bank.recent.load(ring, _length(header["ring_held"]))
            return bank
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError,
                DetectorConfigError, struct.error) as error:
            # Everything binary is checked above or by the banks: what is left is a header
            # field that is missing or of the wrong type.
            raise SnapshotError(f"segmented snapshot header: {type(error).__name__}: "
                                f"{error}", "header") from None

    def _restore_strata(self, data: bytes, saved: DetectorSettings) -> None:
        """The strata's references, when they were saved under the same segments, strata
        and warm-up. A snapshot whose segments were (or were not) fed stratum scores, unlike
        this bank's, holds references on the other scale: its segments start afresh."""
        if bool(data) != (self.strata is not None):
            self._restart_segment_references()
            return
        if self.strata is None or (saved.segment_by, saved.strata_fields(),
                                   saved.stratum_warmup_records) != (
                self.settings.segment_by, self.strata_fields,
                self.settings.stratum_warmup_records):
            return
        self.strata = StrataScaler.from_bytes(data, self.settings.numeric_like(),
                                              self.settings.stratum_warmup_records,
                                              len(self.segments))

    def _restart_segment_references(self) -> None:
        for bank in self.segments.values():
            for channel in bank.channels.values():
                if not isinstance(channel, NumericChannel):
                    continue
                channel.start_warmup(self.segment_settings.warmup_records)
                if self.strata is not None:
                    channel.set_reference(self.uniform)

    def _load_state(self, header: Mapping[str, Any]) -> None:
        self.records_seen = int(header["records_seen"])
        last = header["last_position"]
        self.last_position = None if last is None else int(last)
        self.composition.load(header["composition"])
        self.pooled_marks = {str(k): [int(v) for v in marks]
                             for k, marks in header["pooled_marks"].items()}
        self.absorbed = int(header["absorbed"])


@dataclass(frozen=True)
class Routes:
    """Where a batch's records go: their positions, each segment's rows (``order``
    between ``bounds``; ``present``: whether it has any) and, with strata, each record's
    stratum."""

    positions: np.ndarray
    order: np.ndarray
    bounds: np.ndarray
    present: list[bool]
    every: np.ndarray  # every row of the batch, in order
    strata: np.ndarray | None
    strata_grouping: np.ndarray | None  # every row grouped by stratum (StrataScaler.grouping)


@dataclass(slots=True)  # made per signal and batch: a frozen dataclass's __init__ is dear
class Relearn:
    """After a segment's alarm on a stratified signal: that segment's strata learn the
    signal again (their references describe the stream before the change) and the segment's
    records after the alarm are scored again (NaN while the strata warm up); the segment
    judges the new probabilities against U(0, 1) at once."""

    bank: SegmentedBank
    signal: str
    raw: np.ndarray  # the batch's values of the signal
    values: np.ndarray  # their stratum scores, rewritten in place
    positions: np.ndarray
    strata: np.ndarray

    def __call__(self, segment: int, channel: NumericChannel, rows: np.ndarray) -> None:
        scaler = self.bank.strata
        assert scaler is not None, "only a stratified bank re-learns strata"
        scaler.relearn(self.signal, segment)
        scaler.scores(self.signal, self.raw, self.positions, self.strata, rows, self.values)
        channel.set_reference(self.bank.uniform)
        channel.quiet_spread(segment in scaler.quiet_spread(self.signal))


def is_single_bank_snapshot(data: bytes) -> bool:
    """A snapshot from before segments (one ``DetectorBank`` per partition)."""
    return data.startswith(SINGLE_BANK_MAGIC)


def _parse_header(data: bytes) -> tuple[dict[str, Any], int]:
    if is_single_bank_snapshot(data):
        raise SnapshotError("single-bank detector snapshot (from before segment-aware "
                            "detection); it cannot seed segments", "version")
    if not data.startswith(MAGIC):
        raise SnapshotError("not a segmented detector snapshot (bad magic bytes)", "magic")
    fixed = len(MAGIC) + struct.calcsize("<HI")
    if len(data) < fixed:
        raise SnapshotError("segmented snapshot truncated in its header", "corrupt")
    version, length = struct.unpack_from("<HI", data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise SnapshotError(f"segmented snapshot format {version} is not supported (this "
                            f"build reads {FORMAT_VERSION})", "version")
    if length > MAX_HEADER_BYTES:
        raise SnapshotError(f"segmented snapshot header length {length} exceeds the "
                            f"{MAX_HEADER_BYTES} bytes allowed", "too_large")
    if fixed + length > len(data):
        raise SnapshotError(f"segmented snapshot header length {length} exceeds the data",
                            "corrupt")
    try:
        inflate = zlib.decompressobj()
        text = inflate.decompress(data[fixed:fixed + length], MAX_HEADER_BYTES)
        if inflate.unconsumed_tail:
            raise SnapshotError("segmented snapshot header inflates beyond "
                                f"{MAX_HEADER_BYTES} bytes", "too_large")
        if not inflate.eof or inflate.unused_data:
            raise SnapshotError("segmented snapshot header is not one whole zlib stream",
                                "corrupt")
    except zlib.error as error:
        raise SnapshotError(f"corrupt segmented snapshot header: {error}", "corrupt") from None
    try:
        header = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise SnapshotError(f"segmented snapshot header is not JSON: {error}",
                            "header") from None
    if not isinstance(header, dict):
        raise SnapshotError("segmented snapshot header is not an object", "header")
    return header, fixed + length


def _segment_entries(entries: Any, limit: int) -> list[tuple[str, int]]:
    if not isinstance(entries, list):
        raise SnapshotError("segmented snapshot: segment list is not a list", "header")
    if len(entries) > limit:
        raise SnapshotError(f"segmented snapshot lists {len(entries)} segments, more than the "
                            f"{limit} these settings allow", "too_large")
    out = []
    for entry in entries:
        if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str)
                or len(entry[0]) > MAX_NAME_CHARS):
            raise SnapshotError("segmented snapshot: malformed segment entry", "header")
        out.append((entry[0], _length(entry[1])))
    if len({label for label, _ in out}) != len(out):
        raise SnapshotError("segmented snapshot: a segment is listed twice", "header")
    return out


def _length(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SnapshotError(f"segmented snapshot: bad length {str(value)[:40]}", "header")
    return value


def attributed_code(codes: np.ndarray, values: np.ndarray, n_codes: int) -> int:
    """The segment code a pooled decision belongs to, or -1 for the whole stream, from the
    records between its onset and detection in arrival order (``codes``; ``values``: their
    scores, signed so that the decision's direction is up): one segment's scores carry the
    shift and the rest's do not, or its slice began within the window."""
    if not codes.size:
        return -1
    sums = np.bincount(codes, weights=values, minlength=n_codes)
    counts = np.bincount(codes, minlength=n_codes)
    strength = np.where(counts > 0, sums / np.sqrt(np.maximum(counts, 1)), 0.0)
    top = int(np.argmax(strength))
    if counts[top] == 0 or strength[top] < ATTRIBUTE_SEGMENT_Z:
        return -1
    rest_count, rest_sum = codes.size - counts[top], values.sum() - sums[top]
    rest = rest_sum / np.sqrt(rest_count) if rest_count else 0.0
    alone = counts[top] >= ATTRIBUTE_ALONE_SHARE * codes.size  # a slice of one segment
    # The onset is where the pooled statistic was lowest, so it reaches back over records
    # that happened to lean the decision's way: in slices, the previous slice's last
    # records. From the top segment's first record on, the window is (nearly) its own.
    began = counts[top] >= ATTRIBUTE_ALONE_SHARE * (codes.size - int(np.argmax(codes == top)))
    # Long windows make a segment reference's own small bias (~0.05 sd) "significant":
    # the rest also counts as unshifted when its mean moved a fifth of the top's or less.
    rest_mean = rest_sum / rest_count if rest_count else 0.0
    minor = rest_mean <= ATTRIBUTE_REST_SHARE * sums[top] / counts[top]
    return top if rest < ATTRIBUTE_REST_Z or alone or began or minor else -1


def _time_at(position: int, known: Batch) -> int | None:
    """Event time of the record at ``position``, or of the earliest known record after it
    when it is older than what is remembered."""
    index = int(np.searchsorted(known.positions, position))
    if index >= len(known.positions):
        return None
    later = known.times[index:]
    dated = np.flatnonzero(later >= 0)
    return int(later[dated[0]]) if dated.size else None


def _ratio(row: DetectorStatus) -> float:
    return row.statistic / row.threshold if row.threshold else 0.0


def _direction(finding: SignalFinding) -> str:
    strongest = max(finding.firings, key=lambda f: f.statistic / f.threshold if f.threshold
                    else 0.0)
    return strongest.direction
