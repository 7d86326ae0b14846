"""Late labels from the simulator: delays follow the stated distribution, every label belongs
to a record and comes after it (in event time and in arrival), the stream is deterministic per
seed, and homestead-relief moves the actual levies alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from scipy import stats

from levydrift.simulator import (
    CHUNK_RECORDS,
    DAY_MS,
    LABEL_FIELDS,
    ORDERS,
    RECORD_FIELDS,
    LabelDelay,
    LevySimulator,
    SimulatorConfig,
    arrivals,
    to_labels,
)
from schemas.levy_label import decode_levy_label

SEED = 17
INTERLEAVED = LabelDelay(median_days=2.0, sigma=1.0)  # labels among the records, not after


def simulate(scenario: str = "none", **overrides: Any) -> LevySimulator:
    settings: dict[str, Any] = {"seed": SEED, "scenario": scenario, "change_at": 3_000,
                                "parcels": 2_000, "labelled_share": 0.5,
                                "event_interval_ms": 600_000, "label_delay": INTERLEAVED}
    settings.update(overrides)
    return LevySimulator(SimulatorConfig(**settings))


# ----------------------------------------------------------------- the delay distribution

def test_delays_are_lognormal_with_the_stated_median_and_sigma():
    simulator = simulate(label_delay=LabelDelay())
    days = simulator.label_delays_ms(0, 4 * CHUNK_RECORDS) / DAY_MS
    logs = np.log(days)
    assert np.median(days) == pytest.approx(90.0, rel=0.01)
    assert logs.std() == pytest.approx(0.5, rel=0.01)
    assert stats.kstest(logs, stats.norm(np.log(90.0), 0.5).cdf).pvalue > 0.01
    assert np.quantile(days, [0.05, 0.95]) == pytest.approx([39.5, 204.8], rel=0.02)


def test_delays_are_clipped_to_the_maximum_and_to_one_millisecond():
    clipped = simulate(label_delay=LabelDelay(max_days=100.0)).label_delays_ms(0, 100_000)
    assert clipped.max() == 100 * DAY_MS
    # P(90 * exp(0.5 z) >= 100) = P(z >= 0.211) = 0.417
    assert np.mean(clipped == 100 * DAY_MS) == pytest.approx(0.417, abs=0.01)
    tiny = simulate(label_delay=LabelDelay(median_days=1e-12, sigma=0.1)).label_delays_ms(0, 99)
    assert (tiny == 1).all()


def test_a_delay_depends_on_its_record_alone():
    """Not on the range asked for, the scenario or the other records; the parameters scale
    every delay alike (one standard-normal draw per record)."""
    simulator = simulate()
    whole = simulator.label_delays_ms(CHUNK_RECORDS - 50, CHUNK_RECORDS + 50)
    pieces = np.concatenate([simulator.label_delays_ms(CHUNK_RECORDS - 50, CHUNK_RECORDS + 7),
                             simulator.label_delays_ms(CHUNK_RECORDS + 7, CHUNK_RECORDS + 50)])
    assert np.array_equal(whole, pieces)
    assert np.array_equal(simulate("homestead-relief").label_delays_ms(0, 500),
                          simulator.label_delays_ms(0, 500))
    doubled = simulate(label_delay=LabelDelay(median_days=4.0, sigma=1.0))
    assert np.allclose(doubled.label_delays_ms(0, 500), 2 * simulator.label_delays_ms(0, 500),
                       atol=1)


@pytest.mark.parametrize("setting", [{"median_days": 0}, {"median_days": float("nan")},
                                     {"sigma": -0.1}, {"max_days": 0}, {"max_days": 1e9}])
def test_bad_delay_settings_are_refused(setting):
    with pytest.raises(ValueError, match="label delay"):
        SimulatorConfig(label_delay=LabelDelay(**setting)).validate()


# ----------------------------------------------------------------- labels and their records

def test_every_label_belongs_to_a_labelled_record_and_follows_it():
    simulator = simulate()
    records = simulator.columns(0, 6_000)
    labels = simulator.labels(0, 6_000)
    labelled = ~np.isnan(records["actual_levy_amount"])
    assert list(labels) == list(LABEL_FIELDS)
    assert labelled.mean() == pytest.approx(0.5, abs=0.03)
    assert list(labels["record_id"]) == list(records["record_id"][labelled])
    for name in ("parcel_id", "tax_year", "actual_levy_amount"):
        assert np.array_equal(labels[name], records[name][labelled])
    assert (labels["event_time"] > records["event_time"][labelled]).all()


@pytest.mark.parametrize("scenario", ["none", "homestead-relief", "unit-bug"])
def test_the_label_codec_accepts_every_label(scenario):
    labels = to_labels(simulate(scenario).labels(0, 6_000))
    assert labels
    for label in labels:
        decoded = decode_levy_label(orjson.dumps(label))
        assert (decoded.record_id, decoded.actual_levy_amount, decoded.event_time) == (
            label["record_id"], label["actual_levy_amount"], label["event_time"])


def test_the_same_seed_gives_the_same_merged_stream_and_another_does_not():
    def merged(seed: int) -> bytes:
        out = []
        for arrived in arrivals(simulate(seed=seed), 5_000, "shuffled", batch_records=999):
            items = arrived.interleave(arrived.records["record_id"].tolist(),
                                       to_labels(arrived.labels))
            out += [orjson.dumps(item) for item in items]
        return b"\n".join(out)

    assert merged(SEED) == merged(SEED)
    assert merged(SEED) != merged(SEED + 1)


def merged_stream(simulator: LevySimulator, records: int, order: str,
                  **options: Any) -> list[tuple[bool, dict[str, Any]]]:
    stream: list[tuple[bool, dict[str, Any]]] = []
    for arrived in arrivals(simulator, records, order, **options):
        rows = pd.DataFrame(arrived.records).to_dict("records")
        stream += arrived.interleave(rows, to_labels(arrived.labels))
    return stream


def epoch_ms(text: str) -> int:
    return int(np.datetime64(text.rstrip("Z"), "ms").astype(np.int64))


def record_ms(record: dict[str, Any]) -> int:
    return int(record["event_time"].value // 10**6)  # a pandas Timestamp


@pytest.mark.parametrize("order", ORDERS)
def test_a_label_arrives_after_its_record_once_the_records_pass_its_event_time(order):
    """The rule of ``arrivals``: after its record, and before the first later record that
    takes the watermark (the latest record event time so far) past the label's event time;
    labels together in event-time order."""
    simulator = simulate()
    stream = merged_stream(simulator, 6_000, order, batch_records=1_000)
    assert sorted(item["record_id"] for is_label, item in stream if not is_label) == list(
        simulator.columns(0, 6_000)["record_id"])
    assert sorted(item["record_id"] for is_label, item in stream if is_label) == sorted(
        simulator.labels(0, 6_000)["record_id"])
    position_of = {item["record_id"]: position for position, (is_label, item)
                   in enumerate(stream) if not is_label}
    watermarks = np.maximum.accumulate([record_ms(item) if not is_label else -(2**62)
                                        for is_label, item in stream])
    previous_due = None
    for position, (is_label, item) in enumerate(stream):
        if not is_label:
            previous_due = None
            continue
        due = epoch_ms(item["event_time"])
        own = position_of[item["record_id"]]
        assert own < position
        if any(not flag for flag, _ in stream[own + 1:position]):  # it waited: not too early
            assert watermarks[position] <= due
        following = next((p for p in range(position + 1, len(stream)) if not stream[p][0]),
                         None)
        assert following is None or watermarks[following] > due  # nor too late
        assert previous_due is None or previous_due <= due
        previous_due = due


def test_in_time_order_a_label_sits_between_the_records_at_and_after_its_time():
    stream = merged_stream(simulate(), 6_000, "time", batch_records=777)
    last_record_ms = None
    for position, (is_label, item) in enumerate(stream):
        if not is_label:
            last_record_ms = record_ms(item)
            continue
        due = epoch_ms(item["event_time"])
        assert last_record_ms is not None and last_record_ms <= due
        following = next((r for flag, r in stream[position + 1:] if not flag), None)
        assert following is None or record_ms(following) > due


def test_labels_still_waiting_when_the_records_end_arrive_after_them_in_time_order():
    stream = merged_stream(simulate(label_delay=LabelDelay(), event_interval_ms=1000), 3_000,
                           "time")
    kinds = [is_label for is_label, _ in stream]
    assert kinds == [False] * 3_000 + [True] * (len(kinds) - 3_000)  # 50 min of records
    times = [epoch_ms(item["event_time"]) for is_label, item in stream if is_label]
    assert times == sorted(times) and len(times) == pytest.approx(1_500, rel=0.1)


def test_records_carry_the_actual_levy_only_when_asked_to():
    simulator = simulate()
    expected = simulator.columns(0, 2_000)["actual_levy_amount"]
    plain = next(arrivals(simulator, 2_000))
    inline = next(arrivals(simulator, 2_000, inline_actuals=True))
    assert np.isnan(plain.records["actual_levy_amount"]).all()
    assert np.array_equal(inline.records["actual_levy_amount"], expected, equal_nan=True)
    assert list(plain.records) == list(RECORD_FIELDS)


# ----------------------------------------------------------------- the performance-only change

def test_homestead_relief_moves_the_actual_levies_and_nothing_the_model_sees():
    change, total = 3_000, 9_000
    relief, none = simulate("homestead-relief").columns(0, total), simulate().columns(0, total)
    for name in RECORD_FIELDS[:-1]:
        assert np.array_equal(relief[name], none[name]), name
    changed = np.flatnonzero((relief["actual_levy_amount"] != none["actual_levy_amount"])
                             & ~np.isnan(none["actual_levy_amount"]))
    assert changed.size and changed.min() >= change
    after = slice(change, total)
    homestead = ((none["property_class"][after] == "residential")
                 & (none["exemption_amount"][after] >= 50_000)
                 & ~np.isnan(none["actual_levy_amount"][after]))
    ratio = relief["actual_levy_amount"][after][homestead] / none["actual_levy_amount"][after][
        homestead]
    assert np.median(ratio) < 0.9  # bills of homesteads fall
    assert set(relief["property_class"][changed]) == {"residential"}
    truth = simulate("homestead-relief").ground_truth(total)
    assert truth.expected_kinds == ["performance"]
    assert truth.affected_signals == ["actual_levy_amount"]
    labels = simulate("homestead-relief").labels(0, total)
    assert not np.array_equal(labels["actual_levy_amount"],
                              simulate().labels(0, total)["actual_levy_amount"])


def test_a_relief_on_top_of_a_scenario_moves_only_the_levies_from_its_index_on():
    total, relief_at = 9_000, 6_000
    alone = simulate(relief_at=3_000).frame(0, total, components=True)
    assert alone.equals(simulate("homestead-relief").frame(0, total, components=True))
    stacked = simulate("reassessment", relief_at=relief_at).columns(0, total)
    reassessed = simulate("reassessment").columns(0, total)
    for name in RECORD_FIELDS[:-1]:
        assert np.array_equal(stacked[name], reassessed[name]), name
    moved = np.flatnonzero(~np.isnan(reassessed["actual_levy_amount"])
                           & (stacked["actual_levy_amount"] != reassessed["actual_levy_amount"]))
    assert moved.size > 100 and moved.min() >= relief_at
    assert (stacked["actual_levy_amount"][moved] < reassessed["actual_levy_amount"][moved]).all()
    with pytest.raises(ValueError, match="twice"):
        simulate("homestead-relief", relief_at=10)
    with pytest.raises(ValueError, match="relief index"):
        simulate(relief_at=-1)
