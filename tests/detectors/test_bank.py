"""DetectorBank behaviour: quiet when nothing changes, one decision per change, named."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from detectors import DetectorBank, DetectorSettings, DriftDecision, Reference
from detectors.synthetic import stationary_batch

SETTINGS = DetectorSettings(warmup_records=1000, cooldown_records=1500)


def reference(seed: int = 0, n: int = 20000) -> Reference:
    return Reference.from_columns(stationary_batch(SETTINGS, n, np.random.default_rng(seed)))


def feed(bank: DetectorBank, columns: dict, first: int, batch: int = 4096
         ) -> list[DriftDecision]:
    n = len(next(iter(columns.values())))
    positions = np.arange(first, first + n, dtype=np.int64)
    decisions = []
    for start in range(0, n, batch):
        chunk = {name: values[start:start + batch] for name, values in columns.items()}
        decisions += bank.update(chunk, positions[start:start + batch])
    return decisions


def shifted(columns: dict, signal: str, start: int, sigmas: float,
            scale: float | None = None) -> dict:
    """Shift one numeric signal by ``sigmas`` of its own spread (measured before ``start``
    unless ``scale`` is given) from ``start`` on."""
    columns = {name: values.copy() for name, values in columns.items()}
    values = columns[signal]
    values[start:] += sigmas * (scale if scale is not None else values[:start].std())
    return columns


def test_stationary_stream_gives_no_decision() -> None:
    bank = DetectorBank(SETTINGS, reference())
    stream = stationary_batch(SETTINGS, 150000, np.random.default_rng(1))
    assert feed(bank, stream, 0) == []


def test_mean_shift_gives_one_decision_naming_the_signal() -> None:
    bank = DetectorBank(SETTINGS, reference())
    stream = shifted(stationary_batch(SETTINGS, 12000, np.random.default_rng(2)),
                     "levy_rate", 6000, 1.0)
    decisions = feed(bank, stream, 1000)
    assert len(decisions) == 1
    decision = decisions[0]
    assert decision.kind == "distribution"
    assert decision.signal_names == ("levy_rate",)
    assert 7000 <= decision.detected_at <= 7000 + 100
    finding = decision.signals[0]
    assert finding.effect_measure == "mean_shift"
    assert finding.effect_size > 0.5
    assert finding.current.first_position >= 6900
    assert finding.current.mean > finding.reference.mean
    assert all(f.statistic > f.threshold for f in finding.firings)
    assert decision.current_positions == (finding.current.first_position, decision.detected_at)


def test_signals_drifting_together_share_one_decision() -> None:
    bank = DetectorBank(SETTINGS, reference())
    stream = stationary_batch(SETTINGS, 12000, np.random.default_rng(3))
    for name in ("assessed_value", "market_value"):
        stream = shifted(stream, name, 6000, 1.5)
    decisions = feed(bank, stream, 0)
    assert len(decisions) == 1
    assert "assessed_value" in decisions[0].signal_names or "market_value" in decisions[
        0].signal_names


def test_prediction_and_performance_signals_get_their_kinds() -> None:
    bank = DetectorBank(SETTINGS, reference())
    stream = stationary_batch(SETTINGS, 12000, np.random.default_rng(4))
    stream = shifted(stream, "prediction", 5000, 1.0)
    stream = shifted(stream, "abs_error", 5000, 2.0)
    kinds = {d.kind: d.signal_names for d in feed(bank, stream, 0)}
    assert kinds["prediction"] == ("prediction",)
    assert "abs_error" in kinds["performance"]


def test_falling_error_is_not_a_performance_alarm() -> None:
    bank = DetectorBank(SETTINGS, reference())
    stream = stationary_batch(SETTINGS, 12000, np.random.default_rng(5))
    for name in ("abs_error", "relative_error"):
        stream[name][5000:] *= 0.3
    assert [d for d in feed(bank, stream, 0) if d.kind == "performance"] == []


def test_variance_increase_is_detected_by_the_spread_detector() -> None:
    bank = DetectorBank(SETTINGS, reference())
    stream = stationary_batch(SETTINGS, 15000, np.random.default_rng(6))
    rate = stream["levy_rate"]
    mean = rate.mean()
    rate[5000:] = mean + (rate[5000:] - mean) * 2.0
    decisions = feed(bank, stream, 0)
    assert [d.signal_names for d in decisions] == [("levy_rate",)]
    detectors = {f.detector for f in decisions[0].signals[0].firings}
    assert "spread_page_hinkley" in detectors


def test_new_category_is_detected_and_named() -> None:
    bank = DetectorBank(SETTINGS, reference())
    stream = stationary_batch(SETTINGS, 10000, np.random.default_rng(7))
    rows = np.random.default_rng(8).random(10000) < 0.05
    rows[:5000] = False
    stream["property_class"][rows] = "wind-farm"
    decisions = feed(bank, stream, 0)
    assert len(decisions) == 1
    finding = decisions[0].signals[0]
    assert finding.signal == "property_class"
    assert "wind-farm" in finding.current.new_categories
    assert finding.firings[0].parameters[0] == ("bucket", "(new)")
    assert 5000 < decisions[0].detected_at < 5600


def test_category_share_shift_is_detected() -> None:
    bank = DetectorBank(SETTINGS, reference())
    stream = stationary_batch(SETTINGS, 20000, np.random.default_rng(9))
    rng = np.random.default_rng(10)
    classes = stream["property_class"]
    move = (np.arange(20000) >= 5000) & (classes == "residential") & (rng.random(20000) < 0.2)
    classes[move] = "commercial"  # about 11 points from residential to commercial
    decisions = feed(bank, stream, 0)
    assert [d.signal_names for d in decisions] == [("property_class",)]
    assert decisions[0].signals[0].effect_measure == "share_change"


def test_one_big_parcel_is_not_a_change() -> None:
    bank = DetectorBank(SETTINGS, reference())
    stream = stationary_batch(SETTINGS, 20000, np.random.default_rng(11))
    stream["assessed_value"][::500] = 1e11  # a handful of enormous parcels
    assert feed(bank, stream, 0) == []


def test_batches_and_single_records_give_identical_decisions() -> None:
    settings = dataclasses.replace(SETTINGS, cooldown_records=200, warmup_records=300)
    stream = stationary_batch(settings, 2600, np.random.default_rng(12))
    stream = shifted(stream, "levy_rate", 900, 2.0)
    stream = shifted(stream, "prediction", 1500, 2.0)
    stream["abs_error"][::3] = np.nan  # actuals known for two records in three
    stream["county"][1800:] = "county-new"
    batched = feed(DetectorBank(settings), stream, 0, batch=1000)
    single = feed(DetectorBank(settings), stream, 0, batch=1)
    assert len(batched) >= 3
    assert [d.to_dict() for d in single] == [d.to_dict() for d in batched]


def test_rebaseline_to_the_new_regime_stays_quiet() -> None:
    bank = DetectorBank(SETTINGS, reference())
    before = shifted(stationary_batch(SETTINGS, 30000, np.random.default_rng(13)),
                     "market_value", 2000, 1.0)
    assert len(feed(bank, before, 0)) == 1
    new_reference = Reference.from_columns({k: v[5000:] for k, v in before.items()})
    bank.rebaseline(new_reference)
    after = shifted(stationary_batch(SETTINGS, 60000, np.random.default_rng(14)),
                    "market_value", 0, 1.0, scale=before["market_value"][:2000].std())
    assert feed(bank, after, 30000) == []


def test_rebaseline_without_reference_warms_up_again() -> None:
    bank = DetectorBank(SETTINGS, reference())
    bank.rebaseline()
    assert all(row.warming_up for row in bank.status())
    feed(bank, stationary_batch(SETTINGS, 2000, np.random.default_rng(15)), 0)
    assert not any(row.warming_up for row in bank.status())
    ref = bank.reference()
    assert ref.numeric["levy_rate"].n == SETTINGS.warmup_records
    assert ref.numeric["levy_rate"].first_position == 0


def test_status_reports_statistic_and_threshold_for_every_detector() -> None:
    bank = DetectorBank(SETTINGS, reference())
    feed(bank, stationary_batch(SETTINGS, 3000, np.random.default_rng(16)), 0)
    rows = bank.status()
    signals = {row.signal for row in rows}
    assert signals == set(SETTINGS.all_signals())
    assert all(0.0 <= row.statistic < row.threshold for row in rows)


def test_reference_survives_a_dict_round_trip() -> None:
    ref = reference(17, 5000)
    again = Reference.from_dict(ref.to_dict())
    assert again == ref


@pytest.mark.parametrize("bad", [np.array([3, 2]), np.array([[1, 2]]), np.array([1, 2, 2]),
                                 np.array([1, 2, 3, 4, 0])])
def test_positions_must_increase(bad: np.ndarray) -> None:
    bank = DetectorBank(SETTINGS, reference())
    with pytest.raises(ValueError):
        bank.update({"levy_rate": np.ones(bad.size)}, bad.ravel() if bad.ndim == 1 else bad)


@pytest.mark.parametrize("good", [[], [7], [1, 2, 9, 10]])
def test_increasing_positions_are_taken(good: list[int]) -> None:
    bank = DetectorBank(SETTINGS, reference())
    bank.update({"levy_rate": np.ones(len(good))}, good)
    assert bank.records_seen == len(good)


def test_positions_must_continue_after_the_last_batch() -> None:
    bank = DetectorBank(SETTINGS, reference())
    bank.update({"levy_rate": np.ones(3)}, np.array([5, 6, 7]))
    with pytest.raises(ValueError, match="not after"):
        bank.update({"levy_rate": np.ones(1)}, np.array([7]))


def test_lists_with_missing_values_are_accepted() -> None:
    bank = DetectorBank(SETTINGS, reference())
    bank.update({"levy_rate": [0.01, None, 0.012], "county": ["county-01", None, ""]},
                [1, 2, 3])
    rows = {row.signal: row for row in bank.status()}
    assert rows["levy_rate"].statistic >= 0.0
    assert int(bank.channels["levy_rate"].counters[0]) == 2
    assert int(bank.channels["county"].counters[0]) == 1


def test_rebaseline_of_some_signals_leaves_the_others_watching() -> None:
    bank = DetectorBank(DetectorSettings(numeric_signals=("a", "b"), categorical_signals=(),
                                         prediction_signals=(), performance_signals=(),
                                         warmup_records=200))
    rng = np.random.default_rng(5)
    bank.update({"a": rng.normal(size=400), "b": rng.normal(size=400)}, np.arange(400))
    bank.rebaseline(signals=("b",))
    assert bank.channels["a"].reference is not None
    assert bank.channels["b"].reference is None
