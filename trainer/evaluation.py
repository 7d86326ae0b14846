"""Holdout metrics and the promotion gate.

Candidate and champion are always scored on the same holdout rows, so their metrics compare
like with like. The gate is MAE-based (dollars are what a levy error costs): a candidate is
promoted when there is no champion, or when its MAE beats the champion's by at least
``margin`` (a fraction: 0.01 = 1 % better). Anything else is a rejection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Denominator floor for MAPE: a fully exempt parcel's levy can be $0.
MAPE_FLOOR_DOLLARS = 1.0


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


def gate(candidate: HoldoutMetrics, champion: HoldoutMetrics | None,
         margin: float) -> GateDecision:
    """Promote when there is no champion or the candidate's MAE is at least ``margin`` better."""
    if champion is None:
        return GateDecision(True, "no champion to compare with")
    required = champion.mae * (1.0 - margin)
    if candidate.mae <= required:
        return GateDecision(True, f"candidate MAE {candidate.mae:.2f} beats champion "
                                  f"{champion.mae:.2f} by at least {margin:.1%}")
    return GateDecision(False, f"candidate MAE {candidate.mae:.2f} is not {margin:.1%} better "
                               f"than champion {champion.mae:.2f} (needed <= {required:.2f})")
