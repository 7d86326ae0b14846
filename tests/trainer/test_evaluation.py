"""trainer.evaluation: holdout metrics and the promotion gate."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluation import HoldoutMetrics, gate, holdout_metrics


def test_metrics_of_a_known_error() -> None:
    actual = np.array([100.0, 200.0, 0.0, 400.0])
    predicted = np.array([110.0, 190.0, 5.0, 400.0])
    metrics = holdout_metrics(actual, predicted)
    assert metrics.mae == pytest.approx(25 / 4)
    assert metrics.rmse == pytest.approx(np.sqrt(225 / 4))
    # $0 levy: the denominator is floored at $1, so MAPE stays finite.
    assert metrics.mape == pytest.approx((0.1 + 0.05 + 5.0 + 0.0) / 4)
    assert metrics.r2 == pytest.approx(1 - 225 / np.sum((actual - actual.mean()) ** 2))


def test_perfect_predictions() -> None:
    actual = np.array([1.0, 2.0, 3.0])
    assert holdout_metrics(actual, actual) == HoldoutMetrics(0.0, 0.0, 0.0, 1.0)


def test_mismatched_arrays_are_refused() -> None:
    with pytest.raises(ValueError):
        holdout_metrics(np.ones(3), np.ones(2))


def _with_mae(mae: float) -> HoldoutMetrics:
    return HoldoutMetrics(mae=mae, rmse=mae, mape=0.01, r2=0.99)


def test_no_champion_promotes() -> None:
    assert gate(_with_mae(50.0), None, margin=0.01).promote


@pytest.mark.parametrize(("candidate", "promote"), [(98.9, True), (99.0, True), (99.5, False),
                                                    (120.0, False)])
def test_candidate_must_beat_the_champion_by_the_margin(candidate: float, promote: bool) -> None:
    decision = gate(_with_mae(candidate), _with_mae(100.0), margin=0.01)
    assert decision.promote is promote
    assert decision.decision == ("promoted" if promote else "rejected")
