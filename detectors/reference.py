"""``Reference``: what "normal" looks like for each signal.

Built from the champion's training data (``Reference.from_columns``) or from the bank's
warm-up window. Numeric signals keep a quantile table used for rank-based standardisation
(heavy-tailed money values become normal scores, so one huge parcel is not a change) plus
mean/std/quantiles for explanations; categorical signals keep category shares and the
Good-Turing estimate of how often a never-seen category turns up.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from detectors.errors import DetectorConfigError

# Probabilities of the standardisation knots: dense in the tails, 1% steps in the body.
KNOT_PROBABILITIES = np.concatenate([
    [0.0, 0.0005, 0.001, 0.002, 0.005], np.linspace(0.01, 0.99, 99),
    [0.995, 0.998, 0.999, 0.9995, 1.0]])
SUMMARY_PROBABILITIES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
MAX_STORED_CATEGORIES = 5000
MIN_REFERENCE_VALUES = 50


@functools.lru_cache(maxsize=64)  # warm-ups have a few sizes; references of any size still work
def knot_indices(n: int) -> np.ndarray:
    """Where ``np.quantile(data, KNOT_PROBABILITIES, method="inverted_cdf")`` takes its
    values in ``n`` sorted values, computed as numpy computes it (index n * p - 1, the next
    one up unless that is whole, at least 0): a reference is learned per district and signal,
    and on sorted data the quantile call was half of it. A test holds the two equal."""
    index = n * KNOT_PROBABILITIES - 1
    previous = np.floor(index)
    chosen: np.ndarray = np.where(index - previous == 0, previous, previous + 1).astype(np.intp)
    chosen[chosen < 0] = 0
    chosen.flags.writeable = False  # shared by every reference of n values
    return chosen


def sorted_finite(values: np.ndarray) -> np.ndarray:
    """A reference's values, sorted, without NaN and infinities; enough of them or
    ``DetectorConfigError``."""
    data = np.sort(np.asarray(values, dtype=np.float64))
    data = data[np.isfinite(data)]
    if data.size < MIN_REFERENCE_VALUES:
        raise DetectorConfigError(
            f"reference needs >= {MIN_REFERENCE_VALUES} finite values, got {data.size}")
    return data


def knot_tables(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The standardisation table of ``sorted_finite`` values: the knots, and the share of
    values below and at or below each."""
    n = data.size
    knots = np.unique(data[knot_indices(n)])  # sorted already: no np.quantile partition
    below = np.searchsorted(data, knots, side="left") / n
    at_or_below = np.searchsorted(data, knots, side="right") / n
    return knots, below, at_or_below


def u_min_for(n: int) -> float:
    """Smallest CDF value a stream value maps to under a reference of ``n`` values: half a
    reference observation."""
    return max(0.5 / (n + 1), 1e-6)


@dataclass(frozen=True)
class NumericReference:
    n: int
    mean: float
    std: float
    quantiles: tuple[float, ...]  # at SUMMARY_PROBABILITIES
    knots: tuple[float, ...]
    below: tuple[float, ...]  # reference share strictly below each knot
    at_or_below: tuple[float, ...]
    first_position: int | None = None
    last_position: int | None = None

    @classmethod
    def from_values(cls, values: np.ndarray, first_position: int | None = None,
                    last_position: int | None = None) -> NumericReference:
        data = sorted_finite(values)
        knots, below, at_or_below = knot_tables(data)
        quantiles = np.quantile(data, SUMMARY_PROBABILITIES)
        return cls(n=int(data.size), mean=float(data.mean()), std=float(data.std()),
                   quantiles=tuple(quantiles.tolist()), knots=tuple(knots.tolist()),
                   below=tuple(below.tolist()), at_or_below=tuple(at_or_below.tolist()),
                   first_position=first_position, last_position=last_position)

    def u_min(self) -> float:
        return u_min_for(self.n)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.asarray(self.knots, dtype=np.float64),
                np.asarray(self.below, dtype=np.float64),
                np.asarray(self.at_or_below, dtype=np.float64))


@dataclass(frozen=True)
class CategoricalReference:
    n: int
    shares: dict[str, float]  # most frequent first
    unseen_rate: float
    first_position: int | None = None
    last_position: int | None = None

    @classmethod
    def from_values(cls, values: Any, first_position: int | None = None,
                    last_position: int | None = None) -> CategoricalReference:
        names = [str(v) for v in values if not _is_missing(v)]
        labels, counts = np.unique(np.asarray(names, dtype=object), return_counts=True)
        return replace(cls.from_counts(dict(zip(labels.tolist(), counts.tolist(), strict=True))),
                       first_position=first_position, last_position=last_position)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int]) -> CategoricalReference:
        """The shares of values already counted (category -> count), most frequent first,
        at most ``MAX_STORED_CATEGORIES``; ``from_values`` counts them."""
        kept = {str(name): int(count) for name, count in counts.items() if int(count) > 0}
        n = sum(kept.values())
        if n < MIN_REFERENCE_VALUES:
            raise DetectorConfigError(
                f"reference needs >= {MIN_REFERENCE_VALUES} category values, got {n}")
        ordered = sorted(kept.items(), key=lambda item: (-item[1], item[0]))
        singletons = sum(1 for _, count in ordered if count == 1)
        unseen = min(max(singletons / n, 0.5 / n), 0.05)  # Good-Turing, bounded
        return cls(n=n, shares={name: count / n for name, count in
                                ordered[:MAX_STORED_CATEGORIES]}, unseen_rate=unseen)


@dataclass(frozen=True)
class Reference:
    """Per-signal reference statistics; serialisable with ``to_dict``/``from_dict``.
    ``rows``: the sample they were built from (a champion's holdout), when kept, so that
    finer references (each district's, ``detectors.strata``) can be learned from it too;
    not serialised."""

    numeric: dict[str, NumericReference] = field(default_factory=dict)
    categorical: dict[str, CategoricalReference] = field(default_factory=dict)
    rows: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any],
                     positions: np.ndarray | None = None) -> Reference:
        """Numeric columns (float/int dtype) get quantile tables, others category shares."""
        numeric, categorical = {}, {}
        first = int(positions[0]) if positions is not None and len(positions) else None
        last = int(positions[-1]) if positions is not None and len(positions) else None
        for name, column in columns.items():
            array = np.asarray(column)
            if array.dtype.kind in "fiub":
                numeric[name] = NumericReference.from_values(array.astype(np.float64),
                                                             first, last)
            else:
                categorical[name] = CategoricalReference.from_values(array, first, last)
        return cls(numeric=numeric, categorical=categorical)

    def signals(self) -> set[str]:
        return set(self.numeric) | set(self.categorical)

    def with_composition(self, counts: Mapping[str, Mapping[str, int]],
                         windows: int) -> Reference:
        """The category shares of a champion's training window counted over its ``windows``
        whole event-time windows (``composition.whole_window_counts``, kept in its manifest)
        in place of its holdout's, which has the window's skewed edges. A column counted over
        no whole window, or too few values, has none: composition then takes the stream's own
        first whole window."""
        categorical = dict(self.categorical)
        for name, counted in counts.items():
            categorical.pop(name, None)
            if windows > 0 and sum(counted.values()) >= MIN_REFERENCE_VALUES:
                categorical[name] = CategoricalReference.from_counts(counted)
        return replace(self, categorical=categorical)

    def merged(self, other: Reference) -> Reference:
        return Reference(numeric={**self.numeric, **other.numeric},
                         categorical={**self.categorical, **other.categorical})

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "numeric": {name: _numeric_dict(ref) for name, ref in self.numeric.items()},
            "categorical": {name: _categorical_dict(ref)
                            for name, ref in self.categorical.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        if data.get("version") != 1:
            raise DetectorConfigError(f"unknown reference version {data.get('version')!r}")
        numeric = {name: NumericReference(
            n=int(d["n"]), mean=float(d["mean"]), std=float(d["std"]),
            quantiles=tuple(d["quantiles"]), knots=tuple(d["knots"]), below=tuple(d["below"]),
            at_or_below=tuple(d["at_or_below"]), first_position=d.get("first_position"),
            last_position=d.get("last_position")) for name, d in data["numeric"].items()}
        categorical = {name: CategoricalReference(
            n=int(d["n"]), shares={str(k): float(v) for k, v in d["shares"]},
            unseen_rate=float(d["unseen_rate"]), first_position=d.get("first_position"),
            last_position=d.get("last_position")) for name, d in data["categorical"].items()}
        return cls(numeric=numeric, categorical=categorical)


def reference_for_signals(columns: Mapping[str, Any], signals: Iterable[str]) -> Reference:
    """A reference for each of ``signals`` that ``columns`` (a sample: the champion's holdout,
    a reference file) describes with enough values. Signals left out (absent, or too few
    values, as the error signals of a sample without labels) warm up in the bank instead."""
    usable: dict[str, Any] = {}
    for name in signals:
        if name not in columns:
            continue
        column = np.asarray(columns[name])
        present = (np.isfinite(column).sum() if column.dtype.kind == "f"
                   else sum(not _is_missing(value) for value in column))
        if present >= MIN_REFERENCE_VALUES:
            usable[name] = column
    return Reference.from_columns(usable)


def _numeric_dict(ref: NumericReference) -> dict[str, Any]:
    return {"n": ref.n, "mean": ref.mean, "std": ref.std, "quantiles": list(ref.quantiles),
            "knots": list(ref.knots), "below": list(ref.below),
            "at_or_below": list(ref.at_or_below), "first_position": ref.first_position,
            "last_position": ref.last_position}


def _categorical_dict(ref: CategoricalReference) -> dict[str, Any]:
    # A list of pairs keeps the order (most frequent first) through any JSON library.
    return {"n": ref.n, "shares": [[k, v] for k, v in ref.shares.items()],
            "unseen_rate": ref.unseen_rate, "first_position": ref.first_position,
            "last_position": ref.last_position}


def _is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and value != value)
