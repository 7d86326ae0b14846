"""The levy simulator: determinism, the record contract, levy arithmetic, and for each scenario
that the change shows in the data from the stated index on (and, if temporary, stops when
stated) and not before, compared with the ``none`` stream of the same seed."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import orjson
import pandas as pd
import pytest

from levydrift.simulator import (
    CHUNK_RECORDS,
    NEW_PROPERTY_CLASS,
    NOISE_SIGMA,
    RECORD_FIELDS,
    SCENARIOS,
    LevySimulator,
    SimulatorConfig,
    record_id,
    to_records,
)

SEED = 11
CHANGE = 12_000
WINDOW = 8_000
TOTAL = CHANGE + 2 * WINDOW
PARCELS = 5_000
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def simulate(scenario: str = "none", **overrides: object) -> LevySimulator:
    settings: dict[str, object] = {"seed": SEED, "scenario": scenario, "change_at": CHANGE,
                                   "parcels": PARCELS, "labelled_share": 0.5}
    settings.update(overrides)
    return LevySimulator(SimulatorConfig(**settings))  # type: ignore[arg-type]


_frames: dict[tuple[str, int | None, float | None], pd.DataFrame] = {}


def frame(scenario: str, duration: int | None = None,
          magnitude: float | None = None) -> pd.DataFrame:
    """Records 0..TOTAL-1 with the levy formula's parts, cached: tests share them."""
    key = (scenario, duration, magnitude)
    if key not in _frames:
        simulator = simulate(scenario, duration=duration, magnitude=magnitude)
        _frames[key] = simulator.frame(0, TOTAL, components=True)
    return _frames[key]


def before(data: pd.DataFrame) -> pd.DataFrame:
    return data.iloc[CHANGE - WINDOW:CHANGE]


def after(data: pd.DataFrame) -> pd.DataFrame:
    return data.iloc[CHANGE:CHANGE + WINDOW]


def assert_same_before_change(data: pd.DataFrame) -> None:
    """Before the change index a scenario's records are exactly those of ``none``."""
    pd.testing.assert_frame_equal(data.iloc[:CHANGE], frame("none").iloc[:CHANGE])


def ratio_to_none(data: pd.DataFrame, column: str, window, mask=None) -> float:
    """Median of ``column`` over ``none``'s, record by record, in a window."""
    ours, base = window(data), window(frame("none"))
    if mask is not None:
        ours, base = ours[mask(ours)], base[mask(ours)]
    return float(np.median(ours[column].to_numpy() / base[column].to_numpy()))


# ----------------------------------------------------------------- determinism and contract

def test_same_seed_gives_the_same_bytes_and_another_seed_does_not():
    def encoded(seed: int) -> bytes:
        records = simulate("reassessment", seed=seed).records(0, 3_000)
        return b"\n".join(orjson.dumps(record) for record in records)

    assert encoded(SEED) == encoded(SEED)
    assert encoded(SEED) != encoded(SEED + 1)


def test_a_record_does_not_depend_on_the_range_it_is_generated_in():
    simulator = simulate("gradual", change_at=CHUNK_RECORDS - 10, duration=50)
    whole = simulator.frame(CHUNK_RECORDS - 100, CHUNK_RECORDS + 100)
    pieces = pd.concat([simulator.frame(CHUNK_RECORDS - 100, CHUNK_RECORDS + 3),
                        simulator.frame(CHUNK_RECORDS + 3, CHUNK_RECORDS + 100)],
                       ignore_index=True)
    pd.testing.assert_frame_equal(whole, pieces)
    assert list(simulator.records(CHUNK_RECORDS, CHUNK_RECORDS + 1)) == \
        to_records(simulator.columns(CHUNK_RECORDS, CHUNK_RECORDS + 1))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_record_satisfies_the_record_contract(scenario):
    records = list(simulate(scenario, change_at=1_000, duration=2_000).records(0, 6_000))
    for record in records:
        assert set(record) - {"actual_levy_amount"} == set(RECORD_FIELDS[:-1])
        assert record["schema_version"] == 1
        assert 1900 <= record["tax_year"] <= 2100
        for name in ("assessed_value", "market_value", "exemption_amount",
                     "prior_levy_amount", "new_construction_value", "actual_levy_amount"):
            if name in record:
                assert math.isfinite(record[name]) and 0 <= record[name] <= 1e12, (name, record)
        assert record["exemption_amount"] <= record["assessed_value"]
        assert 0 < record["levy_rate"] <= 0.1
        for name in ("record_id", "parcel_id", "county", "tax_district", "property_class"):
            assert isinstance(record[name], str) and 1 <= len(record[name]) <= 64
        assert RFC3339_UTC.match(record["event_time"])
    assert len({record["record_id"] for record in records}) == len(records)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_record_codec_accepts_every_record(scenario):
    levy_record = pytest.importorskip("schemas.levy_record")
    for record in simulate(scenario, change_at=1_000, duration=2_000).records(0, 6_000):
        decoded = levy_record.decode_levy_record(orjson.dumps(record))
        assert decoded.parcel_id == record["parcel_id"]
        assert decoded.actual_levy_amount == record.get("actual_levy_amount")


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_the_labelled_share_of_records_carries_the_actual_levy(share):
    records = list(simulate(labelled_share=share).records(0, 4_000))
    labelled = sum("actual_levy_amount" in record for record in records) / len(records)
    assert labelled == pytest.approx(share, abs=0.03)


def test_event_times_step_from_the_start_time():
    records = list(simulate(event_interval_ms=250).records(0, 5))
    assert [r["event_time"] for r in records[:2]] == ["2026-01-01T00:00:00.000Z",
                                                      "2026-01-01T00:00:00.250Z"]


@pytest.mark.parametrize("setting", [{"scenario": "drift"}, {"labelled_share": 1.5},
                                     {"change_at": -1}, {"duration": 0}, {"tax_year": 1800}])
def test_bad_settings_are_refused(setting):
    with pytest.raises(ValueError):
        SimulatorConfig(**setting).validate()  # type: ignore[arg-type]


# ----------------------------------------------------------------- the levy arithmetic

def test_actual_levy_is_taxable_value_times_rate_plus_special_assessments_with_noise():
    data = frame("none").dropna(subset=["actual_levy_amount"])
    taxable = data.assessed_value - data.exemption_amount
    assert (data.levy_taxable_value == taxable).all()
    formula = taxable * data.levy_rate + data.special_assessment
    relative = (data.actual_levy_amount / formula - 1).abs()
    # Billing noise is 0.4 %; about 1 % of bills carry a supplemental correction.
    assert (relative < 4 * NOISE_SIGMA + 0.01 / formula).mean() > 0.97
    assert relative.median() < NOISE_SIGMA
    exempt = data[data.property_class == "exempt"]
    assert (exempt.levy_taxable_value == 0).all()
    assert (exempt.actual_levy_amount < 3 * exempt.special_assessment).all()


def test_residential_homesteads_are_exempt_and_classes_differ_in_value():
    data = frame("none")
    residential = data[data.property_class == "residential"]
    assert 0.5 < (residential.exemption_amount >= 50_000).mean() < 0.8
    medians = data.groupby("property_class").assessed_value.median()
    assert medians["industrial"] > medians["commercial"] > medians["residential"]
    farms = data[data.property_class == "agricultural"]
    # Farms are assessed at current use, far below market.
    assert (farms.assessed_value / farms.market_value).median() < 0.5


def test_one_rate_per_district_and_rates_compress_when_the_levy_limit_binds():
    """Under inflation x1.1 no district's total levy may grow past its limit: its rate falls
    to at most limit / (1.1 base), i.e. rate_after * 1.1 >= rate_before >= rate_after;
    districts well under their limit keep their voted rate."""
    none, inflated = frame("none"), frame("gradual", duration=1, magnitude=0.1)
    assert (none.groupby("tax_district").levy_rate.nunique() == 1).all()
    rate_before = none.groupby("tax_district").levy_rate.first()
    rate_after = after(inflated).groupby("tax_district").levy_rate.first()
    assert (rate_after <= rate_before).all()
    assert (rate_after * 1.1 >= rate_before - 2e-7).all()  # rates have 7 decimals
    compressed = rate_after < rate_before
    assert 0 < compressed.sum() < len(compressed)


# ----------------------------------------------------------------- scenarios

def test_none_has_no_change_in_its_ground_truth():
    truth = simulate().ground_truth(TOTAL)
    assert (truth.scenario, truth.change_index, truth.end_index) == ("none", None, None)
    assert truth.affected_signals == []


def test_reassessment_raises_one_countys_assessed_values_from_the_change_on():
    simulator = simulate("reassessment")
    truth = simulator.ground_truth()
    (county,) = truth.affected_counties
    data = frame("reassessment")
    assert_same_before_change(data)

    def in_county(window: pd.DataFrame) -> pd.Series:
        return window.county == county

    assert ratio_to_none(data, "assessed_value", after, in_county) == pytest.approx(1.25, 1e-3)
    assert ratio_to_none(data, "market_value", after, in_county) == 1.0
    assert ratio_to_none(data, "assessed_value", after, lambda w: ~in_county(w)) == 1.0
    rates = after(data)[in_county(after(data))].levy_rate.mean()
    assert rates < after(frame("none"))[in_county(after(data))].levy_rate.mean()
    assert truth.affected_signals[0] == "assessed_value"


def test_levy_rate_change_raises_the_rate_of_the_voting_districts():
    simulator = simulate("levy-rate-change")
    districts = simulator.ground_truth().affected_districts
    data = frame("levy-rate-change")
    assert_same_before_change(data)
    voting = after(data).tax_district.isin(districts)
    difference = after(data).levy_rate - after(frame("none")).levy_rate
    assert difference[voting].to_numpy() == pytest.approx(0.004, abs=1e-6)
    assert (difference[~voting] == 0).all()
    assert len(districts) == 3 and voting.mean() > 0.02


def test_exemption_policy_changes_the_levy_while_the_features_barely_move():
    data = frame("exemption-policy")
    assert_same_before_change(data)
    none = frame("none")
    features = [name for name in RECORD_FIELDS if name not in ("actual_levy_amount",
                                                               "exemption_amount")]
    pd.testing.assert_frame_equal(after(data)[features], after(none)[features])
    # A few records already show the raised exemption; the mean moves a little.
    exemption_shift = after(data).exemption_amount.mean() / after(none).exemption_amount.mean()
    assert 1.0 < exemption_shift < 1.06

    def old_formula_error(window: pd.DataFrame) -> float:
        labelled = window.dropna(subset=["actual_levy_amount"])
        predicted = ((labelled.assessed_value - labelled.exemption_amount) * labelled.levy_rate
                     + labelled.special_assessment)
        return float((labelled.actual_levy_amount - predicted).abs().mean())

    assert old_formula_error(before(data)) == pytest.approx(old_formula_error(before(none)))
    assert old_formula_error(after(data)) > 5 * old_formula_error(before(data))


def test_unit_bug_sends_one_countys_money_in_thousands_until_it_ends():
    duration = 3_000
    simulator = simulate("unit-bug", duration=duration)
    truth = simulator.ground_truth()
    assert truth.end_index == CHANGE + duration
    (county,) = truth.affected_counties
    data = frame("unit-bug", duration)
    assert_same_before_change(data)
    during = data.iloc[CHANGE:CHANGE + duration]
    base = frame("none").iloc[CHANGE:CHANGE + duration]
    in_county = during.county == county
    for name in ("assessed_value", "market_value", "prior_levy_amount"):
        expected = base[name][in_county].to_numpy() / 1000
        # Money keeps cents, so a $100 levy becomes 0.10.
        assert during[name][in_county].to_numpy() == pytest.approx(expected, abs=0.0051), name
        assert (during[name][~in_county] == base[name][~in_county]).all()
    assert (during.levy_rate == base.levy_rate).all()
    pd.testing.assert_frame_equal(data.iloc[truth.end_index:],
                                  frame("none").iloc[truth.end_index:])


def test_new_property_class_appears_only_after_the_change():
    data = frame("new-property-class")
    assert_same_before_change(data)
    share_after = (after(data).property_class == NEW_PROPERTY_CLASS.name).mean()
    assert (data.iloc[:CHANGE].property_class != NEW_PROPERTY_CLASS.name).all()
    assert share_after == pytest.approx(0.10, abs=0.015)


def test_gradual_inflation_ramps_up_from_the_change_then_stays():
    ramp = WINDOW
    data = frame("gradual", ramp)
    assert_same_before_change(data)
    ratio = data.assessed_value / frame("none").assessed_value
    early = ratio.iloc[CHANGE:CHANGE + 200].median()
    middle = ratio.iloc[CHANGE + ramp // 2 - 100:CHANGE + ramp // 2 + 100].median()
    assert early == pytest.approx(1.0, abs=0.01)
    assert middle == pytest.approx(1.15, abs=0.01)
    assert ratio.iloc[CHANGE + ramp:].to_numpy() == pytest.approx(1.3, rel=1e-4)
    # Whole dollars jitter the ratio record by record; block medians rise steadily.
    blocks = ratio.iloc[CHANGE:CHANGE + ramp].to_numpy().reshape(8, -1)
    assert (np.diff(np.median(blocks, axis=1)) > 0.03).all()


def test_variance_widens_the_spread_of_values_but_not_their_median():
    data = frame("variance")
    assert_same_before_change(data)

    def log_spread(window: pd.DataFrame) -> float:
        residential = window[window.property_class == "residential"]
        return float(np.log(residential.assessed_value).std())

    assert log_spread(after(data)) / log_spread(after(frame("none"))) == pytest.approx(1.6, 0.05)
    assert ratio_to_none(data, "assessed_value", after) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("scenario", SCENARIOS[1:])
def test_ground_truth_names_the_change_record_and_serialises(scenario):
    simulator = simulate(scenario)
    truth = simulator.ground_truth(TOTAL)
    assert truth.change_index == CHANGE
    assert truth.change_record_id == record_id(SEED, CHANGE)
    change_record = next(simulator.records(CHANGE, CHANGE + 1))
    assert truth.change_event_time == change_record["event_time"]
    assert set(truth.affected_signals) <= set(RECORD_FIELDS)
    assert truth.affected_signals and truth.expected_kinds and truth.description
    assert json.loads(orjson.dumps(truth.to_dict()))["scenario"] == scenario


# ---------------------------------------------------------------------- arrival orders

@pytest.mark.parametrize("order", ["shuffled", "county-batches", "district-sorted",
                                   "roll-cycle"])
def test_arrival_orders_only_reorder_within_a_day(order: str) -> None:
    from levydrift.simulator import ordered_blocks

    simulator = simulate(event_interval_ms=10_000)  # 8,640 records a day
    total = 20_000
    blocks = list(ordered_blocks(simulator, total, order))
    arrived = {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}
    original = simulator.columns(0, total)
    index = np.array([int(rid.rsplit("-", 1)[1]) for rid in arrived["record_id"]])
    assert sorted(index.tolist()) == list(range(total))  # every record once
    for name in ("assessed_value", "county", "event_time", "tax_district"):
        assert np.array_equal(arrived[name], original[name][index], equal_nan=False) or (
            name == "assessed_value")
    assert np.array_equal(arrived["event_time"], original["event_time"][index])
    day = (index * 10_000) // 86_400_000
    assert np.all(np.diff(day) >= 0)  # a day's uploads arrive before the next day's
    assert not np.array_equal(index, np.arange(total))


def test_county_batches_arrive_in_slices_of_one_county() -> None:
    from levydrift.simulator import COUNTY_SLICE_RECORDS, arrival_order

    columns = simulate().columns(0, 30_000)
    order = arrival_order(columns, "county-batches", seed=1)
    counties = columns["county"][order]
    runs = np.flatnonzero(counties[1:] != counties[:-1]).size + 1
    assert runs <= 30_000 // COUNTY_SLICE_RECORDS + 5 * 2
    assert np.array_equal(np.sort(order), np.arange(30_000))


def test_district_sorted_order_is_sorted_by_district() -> None:
    from levydrift.simulator import arrival_order

    columns = simulate().columns(0, 5_000)
    districts = columns["tax_district"][arrival_order(columns, "district-sorted")]
    assert list(districts) == sorted(districts)


@pytest.mark.parametrize("scenario", ["reassessment", "district-levy-change", "unit-bug"])
def test_one_county_scenarios_name_their_segment(scenario: str) -> None:
    simulator = simulate(scenario, county="Grant")
    truth = simulator.ground_truth(TOTAL)
    assert truth.segment == "county=Grant" and truth.affected_counties == ["Grant"]
    before, after = simulate("none", county="Grant").columns(0, TOTAL), simulator.columns(0, TOTAL)
    changed = np.flatnonzero(
        (before["assessed_value"] != after["assessed_value"])
        | (before["levy_rate"] != after["levy_rate"]))
    assert changed.size and changed.min() >= CHANGE
    assert set(after["county"][changed]) == {"Grant"}
    if scenario == "district-levy-change":
        assert set(after["tax_district"][changed]) == set(truth.affected_districts)
        assert len(truth.affected_districts) == 1


def test_an_unknown_county_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown county 'Atlantis'"):
        SimulatorConfig(county="Atlantis").validate()


def test_simulate_command_writes_the_same_records_in_another_order(tmp_path) -> None:
    from levydrift.cli import main
    from levydrift.levyfile import read_levy_file

    paths = {}
    for order in ("time", "county-batches"):
        paths[order] = tmp_path / f"{order}.jsonl"
        assert main(["simulate", "--order", order, "--records", "5000", "--county", "Grant",
                     "--scenario", "reassessment", "--output", str(paths[order])]) == 0
    timed, batched = (read_levy_file(paths[o]) for o in ("time", "county-batches"))
    assert list(timed["record_id"]) != list(batched["record_id"])
    order = np.argsort(batched["record_id"])
    for name in ("record_id", "county", "assessed_value", "event_time"):
        assert list(batched[name][order]) == list(timed[name])
    truth = json.loads((tmp_path / "county-batches.jsonl.truth.json").read_text())
    assert truth["segment"] == "county=Grant"
