"""``StrataScaler``: each record's numeric values as probabilities under its stratum's own
reference, before its segment's detectors see them.

A segment (a county) is made of strata (its tax districts, ``detectors.stratify_by``) whose
levels differ: a district's levy rate is its own. Records sorted by district within a county
arrive as one district's plateau after another, which detectors judging raw values against
the county's mix call drift (667 false decisions per million records in district-sorted
order, bench/RESULTS-detectors.md). Under its own district's reference, each value's
probability is U(0, 1) under no change whatever order the districts arrive in, while a change of one
district or of the whole county still moves the scores (CALIBRATION.md 7).

A stratum learns its reference from its first ``warmup`` values of each signal; until then
its values are not judged (NaN). Pure: no I/O, no clock.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from detectors import kernels as k
from detectors.channels import MIN_SPREAD_VALUES
from detectors.errors import SnapshotError
from detectors.reference import KNOT_PROBABILITIES, knot_tables, sorted_finite, u_min_for

__all__ = ["MAX_STRATA", "OTHER_STRATUM", "StrataScaler"]

MAX_STRATA = 4096  # beyond: a segment's further strata share its OTHER_STRATUM
OTHER_STRATUM = "(other)"
MAX_KNOTS = len(KNOT_PROBABILITIES)
MAX_STRATA_HEADER_BYTES = 8 << 20
MAX_STRATA_BYTES = 256 << 20  # inflated; bounds what a hostile snapshot can make us allocate
MAX_STRATUM_LABEL_CHARS = 512


@dataclass
class _Tables:
    """One signal's stratum references, padded to ``MAX_KNOTS``; warm-ups under way, as one
    buffer of (stratum, value) in arrival order, so a batch goes in by one compiled call."""

    knots: np.ndarray = field(default_factory=lambda: np.zeros((0, MAX_KNOTS)))
    below: np.ndarray = field(default_factory=lambda: np.zeros((0, MAX_KNOTS)))
    at_or_below: np.ndarray = field(default_factory=lambda: np.zeros((0, MAX_KNOTS)))
    n_knots: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    u_min: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ready: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # warm-up
    warm_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    warm_strata: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    warm_size: int = 0
    # Per segment code: whether its spread tests are silent (see ``StrataScaler.quiet_spread``)
    quiet: dict[int, bool] = field(default_factory=dict)
    # Reference and quiet-flag changes; per signal, as the segments feed signals in parallel.
    changes: int = field(default=0, compare=False)
    # How many strata were all ready at the last look (-1: not all); ``relearn`` resets it.
    all_ready: int = field(default=-1, compare=False)

    def grow(self, strata: int) -> None:
        if strata <= len(self.ready):
            return
        size = max(strata, 2 * len(self.ready), 8)
        for name in ("knots", "below", "at_or_below", "n_knots", "u_min", "ready", "counts"):
            old = getattr(self, name)
            grown = np.zeros((size,) + old.shape[1:], dtype=old.dtype)
            grown[:len(old)] = old
            setattr(self, name, grown)

    def set_reference(self, stratum: int, values: np.ndarray) -> None:
        """The stratum's reference from ``values``; its warm-up is the caller's to forget."""
        data = sorted_finite(values)  # the table only: a district's summary goes nowhere
        knots, below, at_or_below = knot_tables(data)
        m = len(knots)
        self.knots[stratum, :m], self.below[stratum, :m] = knots, below
        self.at_or_below[stratum, :m] = at_or_below
        self.n_knots[stratum], self.u_min[stratum] = m, u_min_for(data.size)
        self.ready[stratum] = True

    def reserve(self, extra: int) -> None:
        """Room for ``extra`` more warm-up values."""
        needed = self.warm_size + extra
        if needed > len(self.warm_values):
            self._resize(max(needed, 2 * len(self.warm_values)))

    def add_warmup(self, stratum: int, values: np.ndarray) -> None:
        self.reserve(len(values))
        end = self.warm_size + len(values)
        self.warm_values[self.warm_size:end], self.warm_strata[self.warm_size:end] = \
            values, stratum
        self.warm_size = end
        self.counts[stratum] += len(values)

    def warmup_values(self) -> dict[int, np.ndarray]:
        """Each warming stratum's values, in arrival order."""
        size = self.warm_size
        if not size:
            return {}
        strata = self.warm_strata[:size]
        order = np.argsort(strata, kind="stable")
        codes, starts = np.unique(strata[order], return_index=True)
        chunks = np.split(self.warm_values[:size][order], starts[1:])
        return dict(zip(codes.tolist(), chunks, strict=True))

    def take_warmups(self, strata: np.ndarray) -> dict[int, np.ndarray]:
        """Take the warm-ups of ``strata`` (full: they learn now) out of the buffer."""
        values, of = self._take(strata)
        return {stratum: values[of == stratum] for stratum in strata.tolist()}

    def forget_warmups(self, strata: np.ndarray | list[int]) -> None:
        """Drop the warm-ups of ``strata`` (they have learned, or must learn again)."""
        self._take(np.asarray(strata, dtype=np.int64))

    def _take(self, strata: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``strata``'s values out of the buffer (and their strata), the others' order
        kept."""
        among = np.zeros(len(self.counts), dtype=np.bool_)
        among[strata] = True
        values, of, self.warm_size = k.extract_warmups(self.warm_values, self.warm_strata,
                                                       self.warm_size, among)
        self.counts[strata] = 0
        if 4 * self.warm_size < len(self.warm_values):  # give memory back as strata learn
            self._resize(2 * self.warm_size)
        return values, of

    def _resize(self, capacity: int) -> None:
        size = self.warm_size
        values, strata = np.empty(capacity), np.empty(capacity, dtype=np.int32)
        values[:size], strata[:size] = self.warm_values[:size], self.warm_strata[:size]
        self.warm_values, self.warm_strata = values, strata

    def discrete(self, stratum: int) -> bool:
        """A reference of a handful of distinct values (a district's levy rate, exemptions
        that are mostly zero or the flat homestead amount)."""
        return bool(self.ready[stratum] and self.n_knots[stratum] < MIN_SPREAD_VALUES)


class StrataScaler:
    """Per numeric signal, a reference per stratum; ``scores`` turns a batch's values into
    probabilities under them (the segments score those as they score raw values against a
    reference: ``kernels.SCORE_UNIFORM``)."""

    def __init__(self, signals: tuple[str, ...], warmup: int) -> None:
        self.signals = signals
        self.warmup = warmup
        self.keys: dict[tuple[int, str], int] = {}  # (segment code, stratum label) -> index
        self.tables = {name: _Tables() for name in signals}
        self._segments: list[int] = []  # segment code of each stratum, kept with ``keys``
        self._ready_from_start = np.zeros(0, dtype=np.int64)  # every stratum ready: from row 0

    # ------------------------------------------------------------------ strata
    def strata_of(self, segment_codes: np.ndarray, groups: np.ndarray,
                  labels: np.ndarray) -> np.ndarray:
        """Each record's stratum index from its segment code and stratum group (``labels``:
        the text of each group); strata met for the first time are made in order of first
        appearance, so the same records make the same strata however they are batched."""
        n = len(segment_codes)
        if not n:
            return np.zeros(0, dtype=np.int64)
        width = max(len(labels), 1)
        pairs = segment_codes.astype(np.int64) * width + groups
        present = np.bincount(pairs)
        index = np.zeros(len(present), dtype=np.int64)
        texts = [str(label) for label in labels.tolist()]
        new = []
        for pair in np.flatnonzero(present).tolist():
            found = self.keys.get((pair // width, texts[pair % width]))
            if found is None:
                new.append(pair)
            else:
                index[pair] = found
        if new:  # made in order of first appearance (the only order a new one has)
            firsts = sorted((int(np.argmax(pairs == pair)), pair) for pair in new)
            for _, pair in firsts:
                index[pair] = self._stratum(pair // width, texts[pair % width])
        strata: np.ndarray = index[pairs]
        return strata

    def _stratum(self, segment: int, label: str) -> int:
        found = self.keys.get((segment, label))
        if found is not None:
            return found
        if len(self.keys) >= MAX_STRATA:
            label = OTHER_STRATUM
            found = self.keys.get((segment, label))
            if found is not None:
                return found
        self.keys[(segment, label)] = len(self.keys)
        self._segments.append(segment)
        for tables in self.tables.values():
            tables.grow(len(self.keys))
        return len(self.keys) - 1

    # ------------------------------------------------------------------ scoring
    def grouping(self, strata: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``rows`` grouped by their stratum, as ``scores`` takes them (``strata``: each
        record's, from ``strata_of``)."""
        return k.group_rows(rows, strata, len(self.keys))

    def scores(self, signal: str, values: np.ndarray, positions: np.ndarray,
               strata: np.ndarray, rows: np.ndarray, out: np.ndarray,
               grouping: np.ndarray | None = None) -> None:
        """``out[rows]``: the probabilities of ``values[rows]`` (one signal, ``rows``
        ascending) against each record's stratum; NaN while its stratum warms up (the values
        go to its warm-up instead). ``grouping``: ``self.grouping(strata, rows)``, when the
        caller has it (every signal of a batch shares it)."""
        tables = self.tables[signal]
        known = len(self.keys)
        if tables.all_ready != known:  # strata added, or some learning again, since
            tables.all_ready = known if tables.ready[:known].all() else -1
        if tables.all_ready == known:  # the usual case, once every stratum has its reference
            if len(self._ready_from_start) != known:
                self._ready_from_start = np.zeros(known, dtype=np.int64)
            ready_from = self._ready_from_start  # read-only in the compiled call
        else:
            ready = tables.ready[:known]
            ready_from = np.where(ready, 0, len(values))
            tables.reserve(len(rows))
            tables.warm_size = k.collect_stratum_warmups(
                values, rows, strata, tables.ready, tables.counts, self.warmup,
                tables.warm_values, tables.warm_strata, tables.warm_size, ready_from)
            filled = np.flatnonzero(~ready & (tables.counts[:known] >= self.warmup))
            if filled.size:
                self._learn(tables, filled, ready_from[filled])
        if grouping is None:
            grouping = self.grouping(strata, rows)
        k.stratum_scores(values, grouping, known, positions, ready_from, tables.knots,
                         tables.below, tables.at_or_below, tables.n_knots, tables.u_min, out)

    def _learn(self, tables: _Tables, strata: np.ndarray, ready_from: np.ndarray) -> None:
        """``strata`` (warm-ups full) take their references, judged from ``ready_from``."""
        chunks = tables.take_warmups(strata)
        for stratum in strata.tolist():
            tables.set_reference(stratum, chunks[stratum])
            tables.changes += 1
        self._set_quiet(tables, sorted(zip(ready_from.tolist(), strata.tolist(), strict=True)))

    def _set_quiet(self, tables: _Tables, learned: list[tuple[int, int]]) -> None:
        """A segment's spread tests follow the first of its strata to learn the signal (in
        record order: the same however the records are batched); until then the segment
        judges none of the signal's values, so nothing is judged under another rule."""
        for _, stratum in learned:
            segment = self.segment_of(stratum)
            if segment not in tables.quiet:
                tables.quiet[segment] = tables.discrete(stratum)
                tables.changes += 1

    def segment_of(self, stratum: int) -> int:
        return self._segments[stratum]

    def changes_of(self, signal: str) -> int:
        """Counts ``signal``'s reference and quiet-flag changes, for ``quiet_spread``'s
        callers."""
        return self.tables[signal].changes

    # ------------------------------------------------------------------ re-learning
    def relearn(self, signal: str, segment: int | None = None) -> None:
        """The strata of ``segment`` (None: all) learn ``signal``'s reference again from
        their next values: after a change the old ones no longer describe them."""
        tables = self.tables[signal]
        again = [stratum for (code, _), stratum in self.keys.items()
                 if segment is None or code == segment]
        tables.all_ready = -1
        for stratum in again:
            tables.ready[stratum] = False
            tables.quiet.pop(self._segments[stratum], None)
        tables.forget_warmups(again)
        tables.changes += 1

    def adopt_warmups(self, min_values: int, signals: tuple[str, ...] | None = None) -> None:
        """Strata with at least ``min_values`` warm-up values of ``signals`` (default: all)
        take them as their reference (a baseline file shorter than the warm-up)."""
        for name, tables in self.tables.items():
            if signals is not None and name not in signals:
                continue
            known = len(self.keys)
            adopted = np.flatnonzero(~tables.ready[:known]
                                     & (tables.counts[:known] >= max(min_values, 1)))
            self._learn(tables, adopted, np.zeros(len(adopted), dtype=np.int64))

    def quiet_spread(self, signal: str) -> set[int]:
        """Codes of the segments whose spread of ``signal`` is no test: the first of their
        strata to learn it knows it as a handful of values (a district's levy rate;
        exemptions mostly zero or the flat homestead amount: alike in every district).
        Randomised scores on such atoms are N(0, 1) only as far as the reference's atom
        shares are exact; with 2,000 values per stratum the spread tests then cried wolf (an
        exemption spread in 1 M stationary records)."""
        return {code for code, quiet in self.tables[signal].quiet.items() if quiet}

    def judging(self, signal: str) -> set[int]:
        """Codes of the segments with a stratum that judges ``signal`` (has a reference)."""
        ready = self.tables[signal].ready
        return {code for (code, _), stratum in self.keys.items() if ready[stratum]}

    # ------------------------------------------------------------------ snapshot
    def to_bytes(self) -> bytes:
        """``zlib(u32 header length | header JSON | float64 arrays)``: the strata, and per
        signal each stratum's reference tables or warm-up values, in header order."""
        arrays: list[np.ndarray] = []
        entries = []
        for signal, tables in self.tables.items():
            chunks = tables.warmup_values()
            for stratum in range(len(self.keys)):
                if tables.ready[stratum]:
                    m = int(tables.n_knots[stratum])
                    entries.append([signal, stratum, "reference", m,
                                    float(tables.u_min[stratum])])
                    arrays += [tables.knots[stratum, :m], tables.below[stratum, :m],
                               tables.at_or_below[stratum, :m]]
                elif stratum in chunks:
                    chunk = chunks[stratum]
                    entries.append([signal, stratum, "warmup", int(chunk.size), 0.0])
                    arrays.append(chunk)
        header = orjson.dumps({"strata": [[code, label] for code, label in self.keys],
                               "entries": entries,
                               "quiet": {signal: sorted(tables.quiet.items())
                                         for signal, tables in self.tables.items()}})
        body = b"".join(np.ascontiguousarray(a, dtype="<f8").tobytes() for a in arrays)
        return zlib.compress(struct.pack("<I", len(header)) + header + body, 6)

    @classmethod
    def from_bytes(cls, data: bytes, signals: tuple[str, ...], warmup: int,
                   segments: int) -> StrataScaler:
        """Rebuild from ``to_bytes()``; malformed input raises ``SnapshotError``. Signals
        not in ``signals`` are dropped; strata of a segment code >= ``segments`` refused."""
        try:
            inflate = zlib.decompressobj()
            raw = inflate.decompress(data, MAX_STRATA_BYTES)
            if inflate.unconsumed_tail or not inflate.eof or inflate.unused_data:
                raise SnapshotError("strata state is not one whole zlib stream", "corrupt")
        except zlib.error as error:
            raise SnapshotError(f"corrupt strata state: {error}", "corrupt") from None
        if len(raw) < 4:
            raise SnapshotError("strata state truncated", "corrupt")
        (length,) = struct.unpack_from("<I", raw)
        if length > MAX_STRATA_HEADER_BYTES or 4 + length > len(raw):
            raise SnapshotError("strata state header length out of range", "corrupt")
        try:
            header = orjson.loads(raw[4:4 + length])
            scaler = cls(signals, warmup)
            scaler._load_strata(header["strata"], segments)
            scaler._load_entries(header["entries"], raw[4 + length:], warmup)
            scaler._load_quiet(header["quiet"], segments)
        except SnapshotError:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError,
                OverflowError) as error:
            raise SnapshotError(f"strata state: {type(error).__name__}: {error}",
                                "header") from None
        return scaler

    def _load_strata(self, strata: Any, segments: int) -> None:
        if not isinstance(strata, list) or len(strata) > MAX_STRATA + segments:
            raise SnapshotError("strata state: the strata list is malformed or too long",
                                "header")
        for code, label in strata:
            if (not _is_count(code) or code >= segments or not isinstance(label, str)
                    or len(label) > MAX_STRATUM_LABEL_CHARS or (code, label) in self.keys):
                raise SnapshotError("strata state: malformed or repeated stratum", "header")
            self.keys[(code, label)] = len(self.keys)
            self._segments.append(code)
        for tables in self.tables.values():
            tables.grow(len(self.keys))

    def _load_quiet(self, quiet: Any, segments: int) -> None:
        if not isinstance(quiet, dict):
            raise SnapshotError("strata state: quiet flags are not an object", "header")
        for signal, flags in quiet.items():
            tables = self.tables.get(signal)
            for code, flag in flags:
                if not _is_count(code) or code >= segments or not isinstance(flag, bool):
                    raise SnapshotError("strata state: malformed quiet flag", "header")
                if tables is not None:
                    tables.quiet[code] = flag

    def _load_entries(self, entries: Any, body: bytes, warmup: int) -> None:
        if not isinstance(entries, list):
            raise SnapshotError("strata state: entries are not a list", "header")
        offset, seen = 0, set()
        for signal, stratum, kind, count, u_min in entries:
            if not (_is_count(stratum) and stratum < len(self.keys) and _is_count(count)
                    and (signal, stratum) not in seen):
                raise SnapshotError("strata state: malformed or repeated entry", "header")
            seen.add((signal, stratum))
            if kind == "reference" and 1 <= count <= MAX_KNOTS and 0.0 < u_min < 0.5:
                knots, below, at_or_below = _floats(body, offset, 3 * count).reshape(3, count)
                offset += 24 * count
                if not (np.all(np.diff(knots) > 0) and np.all(below <= at_or_below)
                        and below.min() >= 0.0 and at_or_below.max() <= 1.0):
                    raise SnapshotError(f"strata state: {signal} reference tables out of "
                                        "order", "corrupt")
                tables = self.tables.get(signal)
                if tables is not None:
                    tables.knots[stratum, :count], tables.below[stratum, :count] = knots, below
                    tables.at_or_below[stratum, :count] = at_or_below
                    tables.n_knots[stratum], tables.u_min[stratum] = count, u_min
                    tables.ready[stratum] = True
            elif kind == "warmup" and count <= warmup:
                values = _floats(body, offset, count)
                offset += 8 * count
                if signal in self.tables and count:
                    self.tables[signal].add_warmup(stratum, values)
            else:
                raise SnapshotError(f"strata state: bad {str(kind)[:20]} entry", "header")
        if offset != len(body):
            raise SnapshotError("strata state: array bytes do not match the entries",
                                "corrupt")


def _floats(body: bytes, offset: int, count: int) -> np.ndarray:
    if offset + 8 * count > len(body):
        raise SnapshotError("strata state truncated in its arrays", "corrupt")
    values = np.frombuffer(body, dtype="<f8", count=count, offset=offset).astype(np.float64)
    if not np.isfinite(values).all():
        raise SnapshotError("strata state holds a value that is not finite", "corrupt")
    return values


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
