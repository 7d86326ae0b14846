"""Holdout metrics and the promotion gate.

Candidate and champion are always scored on the same holdout rows, so their metrics compare
like with like. The gate is MAE-based (dollars are what a levy error costs): a candidate is
promoted when there is no champion, or when its MAE beats the champion's by at least
``margin`` (a fraction: 0.01 = 1 % better), and it is not worse than the champion by more than
``slice_tolerance`` on any county with ``SLICE_MIN_ROWS`` holdout rows: levy drift is
usually one county's, and a window whose newest records are that county's upload can fit a
model that wins overall while failing the parcels of every other county. Anything else is a
rejection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Denominator floor for MAPE: a fully exempt parcel's levy can be $0.
MAPE_FLOOR_DOLLARS = 1.0
# A county with fewer holdout rows is too noisy to veto a candidate on its own.
SLICE_MIN_ROWS = 200
# How much worse than the champion a county may be. A good candidate's worst county was up to
# 19 % worse on fresh records; one trained without a county's records, 5-48 times
# (bench/bench_county_retrain.py).
SLICE_TOLERANCE = 0.25


@dataclass(frozen=True)
class HoldoutMetrics:
    mae: float
    rmse: float
    mape: float  # a fraction, not percent
    r2: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> HoldoutMetrics:
        return cls(float(document["mae"]), float(document["rmse"]), float(document["mape"]),
                   float(document["r2"]))


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str

    @property
    def decision(self) -> str:
        return "promoted" if self.promote else "rejected"


@dataclass(frozen=True)
class SliceComparison:
    """Candidate and champion on the holdout rows of one slice (``county=Grant``)."""

    name: str
    rows: int
    candidate_mae: float
    champion_mae: float

    def worse_by(self) -> float:
        """How much worse the candidate is, as a fraction of the champion's MAE (< 0: better)."""
        if self.champion_mae <= 0:
            return float("inf") if self.candidate_mae > 0 else 0.0
        return self.candidate_mae / self.champion_mae - 1.0


def slice_comparisons(field: str, values: np.ndarray, actual: np.ndarray,
                      candidate: np.ndarray, champion: np.ndarray,
                      min_rows: int = SLICE_MIN_ROWS) -> list[SliceComparison]:
    """Per value of ``field`` with at least ``min_rows`` rows, both models' MAE on its rows;
    the values in order of first appearance."""
    names, first, slice_of, counts = np.unique(np.asarray(values).astype(str),
                                               return_index=True, return_inverse=True,
                                               return_counts=True)
    ours = np.bincount(slice_of, np.abs(np.asarray(candidate, dtype=float) - actual))
    theirs = np.bincount(slice_of, np.abs(np.asarray(champion, dtype=float) - actual))
    return [SliceComparison(f"{field}={names[i]}", int(counts[i]), float(ours[i] / counts[i]),
                            float(theirs[i] / counts[i]))
            for i in np.argsort(first) if counts[i] >= min_rows]


def holdout_metrics(actual: np.ndarray, predicted: np.ndarray) -> HoldoutMetrics:
    """MAE, RMSE, MAPE (with a $1 denominator floor) and R² of ``predicted`` against ``actual``."""
    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    if actual.shape != predicted.shape or actual.size == 0:
        raise ValueError(f"need equal, non-empty arrays, got {actual.shape} and {predicted.shape}")
    error = predicted - actual
    total = float(np.sum((actual - actual.mean()) ** 2))
    r2 = 1.0 - float(np.sum(error ** 2)) / total if total > 0 else 0.0
    return HoldoutMetrics(
        mae=float(np.mean(np.abs(error))),
        rmse=float(np.sqrt(np.mean(error ** 2))),
        mape=float(np.mean(np.abs(error) / np.maximum(np.abs(actual), MAPE_FLOOR_DOLLARS))),
        r2=r2,
    )


def gate(candidate: HoldoutMetrics, champion: HoldoutMetrics | None, margin: float,
         slices: Sequence[SliceComparison] = (),
         slice_tolerance: float = SLICE_TOLERANCE) -> GateDecision:
    """Promote when there is no champion, or the candidate's MAE is at least ``margin``
    better and no slice's MAE more than ``slice_tolerance`` worse than the champion's."""
    if champion is None:
        return GateDecision(True, "no champion to compare with")
    required = champion.mae * (1.0 - margin)
    if candidate.mae > required:
        return GateDecision(False, f"candidate MAE {candidate.mae:.2f} is not {margin:.1%} "
                                   f"better than champion {champion.mae:.2f} (needed <= "
                                   f"{required:.2f})")
    overall = (f"candidate MAE {candidate.mae:.2f} beats champion {champion.mae:.2f} by at "
               f"least {margin:.1%}")
    worst = max(slices, key=SliceComparison.worse_by, default=None)
    if worst is not None and worst.worse_by() > slice_tolerance:
        return GateDecision(False, f"{overall}, but is {worst.worse_by():.1%} worse on "
                                   f"{worst.name} (MAE {worst.candidate_mae:.2f} against "
                                   f"{worst.champion_mae:.2f} on {worst.rows} holdout rows; "
                                   f"trainer.slice_tolerance {slice_tolerance:.0%})")
    return GateDecision(True, overall)
