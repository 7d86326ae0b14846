"""``CompositionMonitor``: which categories (counties, districts, classes...) make up the
stream, judged per closed event-time window, never by arrival order.

Each record counts in the window of its event time (``composition_window_s`` long). A window
closes once the largest event time seen is ``composition_lateness_s`` past its end; records
of an already closed window are late (counted, not judged). At each close, every categorical
signal's window shares are compared with the reference shares (a two-sample test per
category, Bonferroni over categories; see detectors/CALIBRATION.md section 7). A window
deviates when that test rejects and one category's share moved by at least
``composition_min_change``; ``composition_sustain`` deviating windows in a row make one
decision, after which the signal's reference becomes those windows (one change, one
decision). A category the reference never saw, once it holds ``new_category_share`` of a
closed window, is one decision on its own (a new county is a finding, once). The first
window with enough records began before the monitor did, so it is partial: it is judged
for new categories only, and the reference (without a champion's) is the next one.

Only counts per window enter a decision, so any order of the records within a window gives
the same decisions. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from detectors.channels import DetectorStatus
from detectors.config import DetectorSettings
from detectors.decision import DetectorFiring, DriftDecision, SignalFinding, WindowSummary
from detectors.reference import CategoricalReference
from schemas.timestamps import CANONICAL_FORM

MISSING = "(missing)"
MAX_TRACKED_CATEGORIES = 5000  # per signal and window; rarer ones count as "(other)"
OTHER = "(other)"
# A category column coded: a code per record (-1 = missing) and each code's name.
Coded = tuple[np.ndarray, list[str]]


class CompositionMonitor:
    """Event-time windows of category counts for ``signals``."""

    def __init__(self, settings: DetectorSettings, signals: tuple[str, ...]) -> None:
        self.settings = settings
        self.signals = signals
        self.window_ms = settings.composition_window_s * 1000
        self.lateness_ms = settings.composition_lateness_s * 1000
        self.watermark: int | None = None  # largest event time seen (ms)
        self.closed_below: int | None = None  # windows with index < this are closed
        # open windows: index -> {"n", "first", "last", "counts": {signal: {name: count}}}
        self.open: dict[int, dict[str, Any]] = {}
        self.reference: dict[str, dict[str, float]] = {}  # signal -> counts
        self.streak: dict[str, list[dict[str, Any]]] = {name: [] for name in signals}
        self.reported_new: dict[str, list[str]] = {name: [] for name in signals}
        self.late_records = 0
        self.windows_closed = 0
        # Whether a window with enough records to judge has closed: the first one began
        # before the monitor did (a partition started mid-day, a file cut mid-day), so its
        # mix is partial and is neither judged nor learnt from (see ``_judge``).
        self.started = False
        # signal -> (statistic, threshold) of its last judged window: for status() only
        self.last_test: dict[str, tuple[float, float]] = {}

    # ------------------------------------------------------------------ reference
    def set_reference(self, references: Mapping[str, CategoricalReference],
                      keep: bool = False) -> None:
        """Reference shares from training data (counts = shares x n). ``keep``: only for
        signals without a reference yet (a new champion's: see ``SegmentedBank.rebaseline``)."""
        for name, ref in references.items():
            if name in self.signals and not (keep and name in self.reference):
                self.reference[name] = {k: v * ref.n for k, v in ref.shares.items()}
                self.streak[name] = []

    # ------------------------------------------------------------------ feeding
    def update(self, columns: Mapping[str, Any], positions: np.ndarray,
               times_ms: np.ndarray, coded: Mapping[str, Coded] | None = None
               ) -> list[DriftDecision]:
        """Count one batch (``times_ms``: event time per record, int64 ms; negative = none)
        and judge every window it closes. ``coded``: columns the caller already coded
        (``code_column``); the others are coded here, once per batch."""
        n = len(positions)
        if n == 0:
            return []
        coded = dict(coded or {})
        for name in self.signals:
            if name not in coded and columns.get(name) is not None:
                coded[name] = code_column(columns[name])
        window, bound = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        counted, raises = np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.int64)
        n_raises, late, running = _window_bounds(
            np.ascontiguousarray(times_ms, dtype=np.int64),
            -1 if self.watermark is None else self.watermark,
            -1 if self.closed_below is None else self.closed_below, self.window_ms,
            self.lateness_ms, window, bound, counted, raises)
        self.late_records += int(late)
        decisions: list[DriftDecision] = []
        start = 0
        for index in raises[:n_raises].tolist() + [n]:
            self._count(coded, positions, window, counted, start, index)
            if index < n:
                decisions += self._close_below(int(bound[index]), int(positions[index]))
            start = index
        if running >= 0:
            self.watermark = int(running)
        return decisions

    def _count(self, coded: Mapping[str, Coded], positions: np.ndarray, window: np.ndarray,
               counted: np.ndarray, start: int, stop: int) -> None:
        if stop <= start:
            return
        rows = np.flatnonzero(counted[start:stop]) + start
        if not rows.size:
            return
        windows = window[rows]
        one = windows.min() == windows.max()  # nearly always: no sort to find the windows
        for index in (windows[:1] if one else np.unique(windows)):
            members = rows if one else rows[windows == index]
            state = self.open.setdefault(int(index), {
                "n": 0, "first": int(positions[members[0]]), "last": 0,
                "counts": {name: {} for name in self.signals}})
            state["n"] += int(members.size)
            state["first"] = min(state["first"], int(positions[members[0]]))
            state["last"] = max(state["last"], int(positions[members[-1]]))
            whole = members.size == len(positions)  # the batch: its codes are in order
            for name in self.signals:
                if name in coded:
                    codes, names = coded[name]
                    _tally(state["counts"][name], codes if whole else codes[members], names,
                           whole)

    def close_all(self, position: int) -> list[DriftDecision]:
        """End of input: judge every open window (decisions at ``position``)."""
        if not self.open:
            return []
        return self._close_below(max(self.open) + 1, position)

    def _close_below(self, bound: int, position: int) -> list[DriftDecision]:
        decisions = []
        for index in sorted(i for i in self.open if i < bound):
            decisions += self._judge(index, self.open.pop(index), position)
            self.windows_closed += 1
        self.closed_below = bound if self.closed_below is None else max(self.closed_below,
                                                                        bound)
        return decisions

    # ------------------------------------------------------------------ judging
    def _judge(self, index: int, state: dict[str, Any], position: int) -> list[DriftDecision]:
        """The window's decisions. The first window with enough records is partial: records
        of it arrived before the monitor started, and in county slices which counties those
        were is no accident (taken as the reference, or judged against one, it made one to
        four false share decisions per start). It is judged for new categories only."""
        decisions = []
        partial, judged = not self.started, False
        for name in self.signals:
            counts = state["counts"][name]
            total = sum(counts.values())
            if total < self.settings.min_instances:
                continue
            judged = True
            reference = self.reference.get(name)
            if reference is None:
                if not partial:  # the first whole window is the reference
                    self.reference[name] = dict(counts)
                continue
            window = {"index": index, "n": total, "first": state["first"],
                      "last": state["last"], "counts": counts}
            if not partial:
                statistic, threshold, _, _ = self._test(reference, counts, total)
                self.last_test[name] = (statistic, threshold)
            decision = self._new_categories(name, window, position)
            if decision is None and not partial:
                decision = self._share_change(name, window, position)
            if decision is not None:
                decisions.append(decision)
        self.started = self.started or judged
        return decisions

    def _new_categories(self, name: str, window: dict[str, Any],
                        position: int) -> DriftDecision | None:
        reference = self.reference[name]
        total = window["n"]
        new = sorted(category for category, count in window["counts"].items()
                     if category not in reference and category not in self.reported_new[name]
                     and count / total >= self.settings.new_category_share)
        if not new:
            return None
        self.reported_new[name].extend(new)
        share = sum(window["counts"][c] for c in new) / total
        firing = DetectorFiring("new_category", (("categories", ",".join(new)[:256]),
                                                 ("min_share",
                                                  self.settings.new_category_share)),
                                share, self.settings.new_category_share, "up")
        for category in new:  # part of the mix from now on
            reference[category] = float(window["counts"][category])
        return self._decision(name, [window], firing, share, position, tuple(new))

    def _share_change(self, name: str, window: dict[str, Any],
                      position: int) -> DriftDecision | None:
        statistic, threshold, moved, change = self._test(self.reference[name],
                                                         window["counts"], window["n"])
        streak = self.streak[name]
        deviates = statistic > threshold and abs(change) >= self.settings.composition_min_change
        if not deviates or (streak and math.copysign(1, change) != streak[-1]["sign"]):
            streak.clear()
        if not deviates:
            return None
        streak.append({**window, "sign": math.copysign(1, change), "statistic": statistic,
                       "threshold": threshold, "moved": moved, "change": change})
        if len(streak) < self.settings.composition_sustain:
            return None
        windows = list(streak)
        streak.clear()
        merged: dict[str, float] = {}
        for item in windows:
            for category, count in item["counts"].items():
                merged[category] = merged.get(category, 0) + count
        self.reference[name] = merged  # the new normal
        last = windows[-1]
        firing = DetectorFiring(
            "composition_share_test",
            (("category", str(moved)[:256]), ("window_s", self.settings.composition_window_s),
             ("sustain", self.settings.composition_sustain),
             ("min_change", self.settings.composition_min_change)),
            float(last["statistic"]), float(last["threshold"]), "up" if change > 0 else "down")
        return self._decision(name, windows, firing, float(change), position)

    def _test(self, reference: dict[str, float], counts: dict[str, int],
              total: int) -> tuple[float, float, str, float]:
        """Largest two-sample z over the categories whose share moved by at least
        ``composition_min_change`` (over all of them when none did), its Bonferroni
        threshold, the category and its share change. The per-window budget is the
        per-value rate times the window's values (see CALIBRATION.md section 7).

        Material categories first: a small category the reference lacks (a county below
        ``new_category_share``, never added) has a large z and a small change, and as the
        largest z it hid every other category's move."""
        ref_total = sum(reference.values())
        categories = sorted(set(reference) | set(counts))
        alpha = min(self.settings.false_alarm_rate * total, 0.01)
        threshold = NormalDist().inv_cdf(1.0 - alpha / (2 * max(len(categories), 1)))
        best = (0.0, "", 0.0)
        for category in categories:
            p_ref = reference.get(category, 0.0) / ref_total
            p_win = counts.get(category, 0) / total
            pooled = (reference.get(category, 0.0) + counts.get(category, 0)) / (
                ref_total + total)
            spread = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / ref_total + 1 / total))
            z = (p_win - p_ref) / spread
            if (self._material(p_win - p_ref), abs(z)) > (self._material(best[2]),
                                                          abs(best[0])):
                best = (z, category, p_win - p_ref)
        return abs(best[0]), threshold, best[1], best[2]

    def _material(self, change: float) -> bool:
        return abs(change) >= self.settings.composition_min_change

    def _decision(self, name: str, windows: list[dict[str, Any]], firing: DetectorFiring,
                  effect: float, position: int, new: tuple[str, ...] = ()) -> DriftDecision:
        reference = self.reference_summary(name)
        merged: dict[str, int] = {}
        for item in windows:
            for category, count in item["counts"].items():
                merged[category] = merged.get(category, 0) + count
        n = sum(merged.values())
        current = WindowSummary(
            n=n, first_position=min(w["first"] for w in windows),
            last_position=max(w["last"] for w in windows), summarised=n,
            category_shares=_top_shares(merged, n), new_categories=new)
        first = windows[0]
        finding = SignalFinding(name, (firing,), effect, "share_change", reference, current)
        return DriftDecision(kind="distribution", detected_at=position, signals=(finding,),
                             onset_at=first["first"], onset_time_ms=first["index"]
                             * self.window_ms, onset_window_ms=first["index"] * self.window_ms)

    def status(self) -> list[DetectorStatus]:
        """Per signal: the two-sample statistic of its last judged window against its
        threshold; warming up until a window was judged against a reference."""
        rows = []
        for name in self.signals:
            statistic, threshold = self.last_test.get(name, (0.0, float("nan")))
            rows.append(DetectorStatus(name, "composition", statistic, threshold,
                                       name not in self.last_test))
        return rows

    def reference_summary(self, name: str) -> WindowSummary:
        counts = self.reference.get(name, {})
        n = int(round(sum(counts.values())))
        return WindowSummary(n=n, first_position=None, last_position=None, summarised=n,
                             category_shares=_top_shares(counts, max(n, 1)))

    # ------------------------------------------------------------------ snapshot
    def state(self) -> dict[str, Any]:
        # ``started`` only where a closed window does not already say it (only windows too
        # small to judge closed so far): snapshots stay what they were before the flag.
        flag = {} if self.started == (self.windows_closed > 0) else {"started": self.started}
        return {"watermark": self.watermark, "closed_below": self.closed_below,
                "open": [[index, {**w, "counts": {k: list(v.items())
                                                  for k, v in w["counts"].items()}}]
                         for index, w in sorted(self.open.items())],
                "reference": {k: list(v.items()) for k, v in self.reference.items()},
                "streak": {k: [{**w, "counts": list(w["counts"].items())} for w in v]
                           for k, v in self.streak.items()},
                "reported_new": self.reported_new, "late_records": self.late_records,
                "windows_closed": self.windows_closed, **flag}

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore ``state()``; a malformed state raises ``ValueError``/``KeyError``/
        ``TypeError`` (the segment layer turns them into ``SnapshotError``)."""
        self.watermark = _optional_int(state["watermark"])
        self.closed_below = _optional_int(state["closed_below"])
        self.open = {}
        for index, window in state["open"]:
            self.open[int(index)] = {
                "n": int(window["n"]), "first": int(window["first"]),
                "last": int(window["last"]),
                "counts": {str(k): {str(c): int(n) for c, n in v}
                           for k, v in window["counts"].items()}}
        self.reference = {str(k): {str(c): _count(n) for c, n in v}
                          for k, v in state["reference"].items()}
        self.streak = {name: [] for name in self.signals}
        for name, items in state["streak"].items():
            if name in self.streak:
                self.streak[name] = [{**w, "counts": {str(c): int(n) for c, n in w["counts"]}}
                                     for w in items]
        self.reported_new = {name: [str(c) for c in state["reported_new"].get(name, [])]
                             for name in self.signals}
        self.late_records = int(state["late_records"])
        self.windows_closed = int(state["windows_closed"])
        # Snapshots from before the flag: a window closed means one was judged or learnt.
        self.started = bool(state.get("started", self.windows_closed > 0))


@njit(cache=True)
def _window_bounds(times: np.ndarray, watermark: int, closed_below: int, window_ms: int,
                   lateness_ms: int, window: np.ndarray, bound: np.ndarray,
                   counted: np.ndarray, raises: np.ndarray) -> tuple[int, int, int]:
    """Per record (times: ms, negative = none): its window (-1: none), the windows closed
    once it is seen (``bound``: those below, from the running largest time less the
    lateness; -1 before any time), and whether it is counted (dated and not late). Fills
    ``raises`` with the records at which ``bound`` rises; returns (how many, late records,
    largest time seen or -1)."""
    running, previous, n_raises, late = watermark, closed_below, 0, 0
    for index in range(times.shape[0]):
        time = times[index]
        dated = time >= 0
        if dated and time > running:
            running = time
        bound[index] = (running - lateness_ms) // window_ms if running >= 0 else -1
        window[index] = time // window_ms if dated else -1
        is_late = dated and window[index] < bound[index]
        late += is_late
        counted[index] = dated and not is_late
        if bound[index] > previous:
            raises[n_raises] = index
            n_raises += 1
        previous = bound[index]
    return n_raises, late, running


def code_column(column: Any) -> Coded:
    """A category column as codes (numbered in order of first appearance, -1 = missing) and
    each code's name (an empty value reads as missing)."""
    codes, uniques = pd.factorize(np.asarray(column, dtype=object))
    return codes, _names(uniques)


def code_dictionary(indices: np.ndarray, values: np.ndarray) -> Coded:
    """``code_column`` of a column stored as a dictionary: ``indices`` (-1 = missing) into
    distinct ``values``. The same codes and names, hashing an integer per record rather than
    a string (~10x cheaper)."""
    codes, first = pd.factorize(indices)
    missing = np.flatnonzero(first < 0)
    if missing.size:  # -1 is a value to factorize: it becomes code -1, later codes close up
        slot = int(missing[0])
        codes = np.where(codes == slot, -1, codes - (codes > slot))
        first = np.delete(first, slot)
    return codes, _names(values[first])


# The share of rows at each end whose windows may lie beyond the edges: a record dated years
# off (a typo in a year, a default date) must not make a partial day look whole.
EDGE_ROWS_SHARE = 0.001


class WindowTally:
    """Category counts per event-time window, added chunk by chunk in any order (a training
    window's records as the reader scans them); ``whole()`` gives them over the windows
    strictly between the first and the last the rows reach. Rows read by arrival begin and
    end inside windows they hold only part of, and in county slices which counties that part
    holds is no accident: its mix is not the stream's. The first and last are the windows of
    the rows ``EDGE_ROWS_SHARE`` in from each end, so a few stray dates do not move them."""

    def __init__(self, window_s: int) -> None:
        self.window_ms = window_s * 1000
        self.counts: dict[int, dict[str, dict[str, int]]] = {}  # window -> column -> counts
        self.rows: dict[int, int] = {}  # window -> rows

    def add(self, columns: Mapping[str, Any], times_ms: np.ndarray) -> None:
        """Rows (one array per category column, their event times in ms; negative: none,
        left out)."""
        times = np.asarray(times_ms, dtype=np.int64)
        dated = times >= 0
        # One sort per column over (window, category) pairs: a chunk read in county slices
        # spans every window of the span, and a pass per window would cost windows x rows.
        found, slots, rows = np.unique(times[dated] // self.window_ms, return_inverse=True,
                                       return_counts=True)
        windows = found.tolist()
        for window, count in zip(windows, rows.tolist(), strict=True):
            self.counts.setdefault(window, {})
            self.rows[window] = self.rows.get(window, 0) + count
        for name, column in columns.items():
            codes, names = code_column(np.asarray(column, dtype=object)[dated])
            labels = [MISSING, *names]  # "" and None both read as missing
            pairs, tallies = np.unique(slots * len(labels) + codes + 1, return_counts=True)
            for pair, tally in zip(pairs.tolist(), tallies.tolist(), strict=True):
                slot, label = divmod(pair, len(labels))
                into = self.counts[windows[slot]].setdefault(name, {})
                into[labels[label]] = into.get(labels[label], 0) + tally

    def whole(self) -> tuple[dict[str, dict[str, int]], set[int]]:
        """(column -> category -> count over the whole windows, those windows)."""
        if not self.rows:
            return {}, set()
        ordered = sorted(self.rows)
        reached = np.cumsum([self.rows[window] for window in ordered])
        edge = reached[-1] * EDGE_ROWS_SHARE
        first = ordered[int(np.searchsorted(reached, edge, side="right"))]
        last = ordered[int(np.searchsorted(reached, reached[-1] - edge, side="left"))]
        inside = {window for window in ordered if first < window < last}
        return merge_counts(self.counts[window] for window in sorted(inside)), inside


def merge_counts(parts: Iterable[Mapping[str, Mapping[str, int]]]) -> dict[str, dict[str, int]]:
    """Column -> category -> count, summed over ``parts``."""
    total: dict[str, dict[str, int]] = {}
    for part in parts:
        for name, counts in part.items():
            into = total.setdefault(name, {})
            for category, count in counts.items():
                into[category] = into.get(category, 0) + count
    return total


def whole_window_counts(columns: Mapping[str, Any], times_ms: np.ndarray, window_s: int
                        ) -> tuple[dict[str, dict[str, int]], int]:
    """``WindowTally`` of one set of rows: (column -> category -> count over its whole
    windows, how many those are); a column without rows in them counts nothing."""
    tally = WindowTally(window_s)
    tally.add(columns, times_ms)
    counts, windows = tally.whole()
    return {name: counts.get(name, {}) for name in columns}, len(windows)


def _names(uniques: Any) -> list[str]:
    return [str(u) if str(u) else MISSING for u in uniques]


def _tally(into: dict[str, int], codes: np.ndarray, names: list[str], whole: bool) -> None:
    """Add a window's records (``codes``) to its counts by name: missing first, then the
    categories in order of first appearance among these records (the counts' order is
    part of the snapshot), beyond ``MAX_TRACKED_CATEGORIES`` names as "(other)". ``whole``:
    these are the batch's records, in which codes are numbered by first appearance."""
    tally = np.bincount(codes + 1, minlength=len(names) + 1).tolist()  # slot 0: missing
    labels = [MISSING, *names]
    slots = (range(len(labels)) if whole
             else [0, *(code + 1 for code in _first_seen(codes) if code >= 0)])
    for slot in slots:
        count = tally[slot]
        if not count:
            continue
        category = labels[slot]
        key = category if (category in into or len(into) < MAX_TRACKED_CATEGORIES) else OTHER
        into[key] = into.get(key, 0) + count


def _first_seen(codes: np.ndarray) -> list[int]:
    """The codes present, in order of first appearance."""
    present, first = np.unique(codes, return_index=True)
    ordered: list[int] = present[np.argsort(first, kind="stable")].tolist()
    return ordered


def _top_shares(counts: Mapping[str, float], n: float) -> tuple[tuple[str, float], ...]:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:20]
    return tuple((name, float(count) / n) for name, count in ordered)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _count(value: Any) -> float:
    """A reference count as it was saved: a window's counts are integers, a champion's are
    shares x n; keeping the type keeps a re-taken snapshot byte-identical."""
    return value if isinstance(value, int) and not isinstance(value, bool) else float(value)


def event_times_ms(column: Any) -> np.ndarray:
    """Event times as int64 epoch milliseconds (-1 where missing or unparseable): from
    datetime64 values, integer milliseconds, or RFC 3339 strings."""
    array = np.asarray(column)
    if array.dtype.kind == "M":
        values = array.astype("datetime64[ms]").astype(np.int64)
        return np.where(np.isnat(array), -1, values)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    fast = _canonical_rfc3339_ms(array)
    if fast is not None:
        return fast
    parsed = pd.to_datetime(pd.Series(array, dtype=object), utc=True, format="ISO8601",
                            errors="coerce")
    values = parsed.to_numpy(dtype="datetime64[ns]")
    out = values.astype("datetime64[ms]").astype(np.int64)
    return np.where(np.isnat(values), -1, out)


# The producers' one format, "2026-01-01T18:17:48.000Z": its fields sit at fixed offsets.
CANONICAL_LENGTH = len(CANONICAL_FORM)
CANONICAL_SEPARATORS = np.frombuffer(CANONICAL_FORM.encode("ascii"), dtype=np.uint8)
CANONICAL_DAYS_BEFORE_MONTH = np.array([0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304,
                                        334], dtype=np.int64)
CANONICAL_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31],
                                   dtype=np.int64)


def _canonical_rfc3339_ms(array: np.ndarray) -> np.ndarray | None:
    """Epoch ms of strings that are all ``YYYY-MM-DDTHH:MM:SS.sssZ`` (years 1970-2199), read
    from their bytes in a compiled loop: pandas' parser cost ~10 % of the segment layer's
    time. None when any value is not of that form (pandas then reads the batch, so both
    paths give the same times; ASCII bytes of the form are read as their text)."""
    if array.ndim != 1 or not array.size or array.dtype.kind not in "OU":
        return None
    chars = _joined_chars(array)
    if chars is None:
        # One byte more than the form: a longer value shows in it; a shorter one, or a
        # value that is no text (None reads "None"), fails the form's check below.
        width = CANONICAL_LENGTH + 1
        try:
            text = array.astype(f"S{width}")
        except (UnicodeEncodeError, TypeError, ValueError):
            return None
        chars = text.view(np.uint8).reshape(len(text), width)
        if chars[:, CANONICAL_LENGTH].any():
            return None
    out = np.empty(len(chars), dtype=np.int64)
    if not _parse_canonical(chars, CANONICAL_SEPARATORS, CANONICAL_DAYS_BEFORE_MONTH,
                            CANONICAL_DAYS_IN_MONTH, out):
        return None
    return out


def _joined_chars(array: np.ndarray) -> np.ndarray | None:
    """The values' bytes as rows (the form's 24, then "|"), when every value is ASCII text of
    24 characters: joined with "|" (which the form never holds) and encoded at once, ~3x
    cheaper than numpy's cast of each. None otherwise (the cast then decides)."""
    try:
        joined = "|".join(array.tolist()).encode("ascii")
    except (TypeError, UnicodeEncodeError):
        return None
    # With "|" at every 25th byte and none elsewhere (the form's check), each value is 24.
    width = CANONICAL_LENGTH + 1
    if len(joined) != width * len(array) - 1:
        return None
    chars = np.frombuffer(joined + b"|", dtype=np.uint8).reshape(len(array), width)
    return chars if bool((chars[:, CANONICAL_LENGTH] == ord("|")).all()) else None


@njit(cache=True)
def _parse_canonical(chars: np.ndarray, pattern: np.ndarray, days_before: np.ndarray,
                     days_in: np.ndarray, out: np.ndarray) -> bool:
    """Fill ``out`` with each row's epoch ms; False at the first row that is not a valid
    canonical time (digits where ``pattern`` has '0', its separators elsewhere)."""
    zero = ord("0")
    for row in range(chars.shape[0]):
        for column in range(pattern.shape[0]):
            c = chars[row, column]
            if pattern[column] == zero:
                if c < zero or c > zero + 9:
                    return False
            elif c != pattern[column]:
                return False
        year = _digits(chars, row, 0, 4)
        month, day = _digits(chars, row, 5, 2), _digits(chars, row, 8, 2)
        hour, minute = _digits(chars, row, 11, 2), _digits(chars, row, 14, 2)
        second, milli = _digits(chars, row, 17, 2), _digits(chars, row, 20, 3)
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        if not (1970 <= year < 2200 and 1 <= month <= 12):
            return False
        if not (1 <= day <= days_in[month] + (1 if leap and month == 2 else 0)
                and hour < 24 and minute < 60 and second < 60):
            return False
        # Days since 1970-01-01: whole years with their leap days, then this year's.
        past = year - 1
        leap_days = (past // 4 - past // 100 + past // 400) - 477  # 477 leap years to 1969
        days = ((year - 1970) * 365 + leap_days + days_before[month]
                + (1 if leap and month > 2 else 0) + day - 1)
        out[row] = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + milli
    return True


@njit(cache=True, inline="always")
def _digits(chars: np.ndarray, row: int, first: int, width: int) -> int:
    value = 0
    for column in range(first, first + width):
        value = value * 10 + (chars[row, column] - 48)
    return value
