"""trainer.evaluation: holdout metrics and the promotion gate."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluation import (
    HoldoutMetrics,
    SliceComparison,
    gate,
    holdout_metrics,
    slice_comparisons,
)


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


def _slices(candidate_mae: dict[str, float], champion_mae: dict[str, float],
            rows: int = 300) -> list[SliceComparison]:
    """The comparisons of holdouts where each county's errors are constant."""
    counties = np.repeat(list(candidate_mae), rows)
    actual = np.zeros(counties.size)
    candidate = np.array([candidate_mae[c] for c in counties])
    champion = np.array([champion_mae[c] for c in counties])
    return slice_comparisons("county", counties, actual, candidate, champion)


def test_slices_compare_both_models_per_county_in_order_of_appearance() -> None:
    counties = np.array(["Yakima"] * 250 + ["Grant"] * 300 + ["Benton"] * 10)
    actual = np.full(counties.size, 100.0)
    candidate = np.where(counties == "Grant", 130.0, 95.0)
    champion = np.full(counties.size, 110.0)
    found = slice_comparisons("county", counties, actual, candidate, champion)
    assert found == [SliceComparison("county=Yakima", 250, 5.0, 10.0),
                     SliceComparison("county=Grant", 300, 30.0, 10.0)]  # Benton: too few rows
    assert found[0].worse_by() == pytest.approx(-0.5)
    assert found[1].worse_by() == pytest.approx(2.0)


def test_a_candidate_better_overall_but_failing_one_county_is_rejected() -> None:
    slices = _slices({"Grant": 10.0, "Yakima": 70.0}, {"Grant": 90.0, "Yakima": 50.0})
    decision = gate(_with_mae(40.0), _with_mae(70.0), margin=0.01, slices=slices,
                    slice_tolerance=0.1)
    assert not decision.promote
    assert "40.0% worse on county=Yakima" in decision.reason
    assert "trainer.slice_tolerance" in decision.reason


@pytest.mark.parametrize(("yakima", "promote"), [(54.9, True), (55.1, False)])
def test_a_county_may_be_worse_within_the_tolerance(yakima: float, promote: bool) -> None:
    slices = _slices({"Grant": 10.0, "Yakima": yakima}, {"Grant": 90.0, "Yakima": 50.0})
    decision = gate(_with_mae(30.0), _with_mae(70.0), margin=0.01, slices=slices,
                    slice_tolerance=0.1)
    assert decision.promote is promote


def test_a_champion_with_no_error_on_a_county_vetoes_any_error_there() -> None:
    slices = _slices({"Grant": 1.0}, {"Grant": 0.0})
    assert not gate(_with_mae(1.0), _with_mae(5.0), margin=0.01, slices=slices).promote
