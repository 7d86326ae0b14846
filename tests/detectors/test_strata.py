"""District strata (detectors/strata.py) fed from lists: each value is scored against its own
district's reference, so districts arriving in turn are no change, while a change of one
district is found in its county, once; the strata's state survives a snapshot."""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.events import decision_to_event
from detectors import kernels as k
from detectors.config import DetectorSettings
from detectors.errors import DetectorConfigError, SnapshotError
from detectors.reference import NumericReference, Reference
from detectors.segments import SegmentedBank
from detectors.strata import StrataScaler

DAY_MS = 86_400_000
SETTINGS = DetectorSettings(
    numeric_signals=("x",), categorical_signals=("county",), prediction_signals=(),
    performance_signals=(), warmup_records=300, segment_warmup_records=300,
    stratify_by=("tax_district",), stratum_warmup_records=300, relearn_records=300,
    cooldown_records=300,
    composition_window_s=86_400, composition_lateness_s=0, min_instances=50)
# Each district its own level and spread; D3 is one value (a district's levy rate).
DISTRICTS = {"A": {"A1": (0.0, 1.0), "A2": (4.0, 0.5), "A3": (9.0, 0.0)},
             "B": {"B1": (-3.0, 2.0), "B2": (1.0, 1.0)}}


def district_stream(records: int, seed: int, per_day: int = 6_000,
                    shift: tuple[str, float, int] | None = None,
                    districts: dict[str, dict[str, tuple[float, float]]] = DISTRICTS
                    ) -> dict[str, np.ndarray]:
    """Records whose event times run in order, re-ordered within each day by county then
    district (districts certify in turn); ``shift`` = (district, change, from this event-time
    index on)."""
    rng = np.random.default_rng(seed)
    pairs = [(county, district) for county, group in districts.items() for district in group]
    pick = rng.integers(len(pairs), size=records)
    county = np.array([pairs[i][0] for i in pick], dtype=object)
    district = np.array([pairs[i][1] for i in pick], dtype=object)
    level = np.array([districts[c][d][0] for c, d in zip(county, district, strict=True)])
    spread = np.array([districts[c][d][1] for c, d in zip(county, district, strict=True)])
    x = level + spread * rng.normal(size=records)
    if shift is not None:
        name, change, start = shift
        x[start:] += np.where(district[start:] == name, change, 0.0)
    times = np.arange(records, dtype=np.int64) * (DAY_MS // per_day)
    order = np.lexsort((np.arange(records), district, county, times // DAY_MS))
    columns = {"county": county, "tax_district": district, "x": x, "event_time": times,
               "index": np.arange(records)}
    return {name: values[order] for name, values in columns.items()}


def feed(bank: SegmentedBank, columns: dict[str, np.ndarray], batch: int = 1000,
         start: int = 0) -> list:
    decisions = []
    n = len(columns["x"])
    for first in range(0, n, batch):
        part = {name: values[first:first + batch] for name, values in columns.items()}
        decisions += bank.update(part, np.arange(start + first, start + min(n, first + batch),
                                                 dtype=np.int64))
    return decisions


def numeric(decisions: list) -> list:
    return [d for d in decisions if "x" in d.signal_names]


# ---------------------------------------------------------------------- the scaler itself

def test_values_before_the_warm_up_are_not_judged_and_after_it_are_uniform() -> None:
    rng = np.random.default_rng(3)
    scaler = StrataScaler(("x",), warmup=2_000)
    n = 40_000
    values = np.concatenate([rng.normal(100.0, 20.0, n // 2), np.full(n // 2, 0.0123)])
    labels = np.array(["d1"] * (n // 2) + ["d2"] * (n // 2), dtype=object)
    order = rng.permutation(n)
    values, labels = values[order], labels[order]
    groups = (labels == "d2").astype(np.int64)
    strata = scaler.strata_of(np.zeros(n, dtype=np.int32), groups,
                              np.array(["d1", "d2"], dtype=object))
    out = np.full(n, np.nan)
    scaler.scores("x", values, np.arange(n), strata, np.arange(n), out)
    for stratum in (0, 1):
        mine = np.flatnonzero(strata == stratum)
        assert np.isnan(out[mine[:2_000]]).all(), "the first 2,000 values are its warm-up"
        probabilities = out[mine[2_000:]]
        assert np.isfinite(probabilities).all()
        # U(0, 1) whatever the stratum's level, spread or atom: each tenth holds about a
        # tenth (a reference of 2,000 values places its deciles within ~1 point)
        tenths = np.bincount((probabilities * 10).astype(int), minlength=10) / len(mine[2_000:])
        assert np.abs(tenths - 0.1).max() < 0.03, (stratum, tenths)


def test_batches_of_any_size_give_the_same_scores() -> None:
    rng = np.random.default_rng(4)
    n = 5_000
    values = rng.normal(size=n) + rng.integers(3, size=n)
    groups = rng.integers(3, size=n)
    labels = np.array(["a", "b", "c"], dtype=object)
    whole = StrataScaler(("x",), warmup=400)
    expected = np.full(n, np.nan)
    strata = whole.strata_of(np.zeros(n, dtype=np.int32), groups, labels)
    whole.scores("x", values, np.arange(n), strata, np.arange(n), expected)
    cut = StrataScaler(("x",), warmup=400)
    got = np.full(n, np.nan)
    for first in range(0, n, 333):
        part = slice(first, first + 333)
        m = len(values[part])
        out = np.full(m, np.nan)
        where = cut.strata_of(np.zeros(m, dtype=np.int32), groups[part], labels)
        cut.scores("x", values[part], np.arange(first, first + m), where, np.arange(m), out)
        got[part] = out
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 700),
       nan_share=st.sampled_from([0.0, 0.2, 0.9]))
def test_each_stratum_learns_from_its_first_values_in_record_order_however_batched(
        seed: int, batch: int, nan_share: float) -> None:
    # The warm-up buffer holds every warming stratum's values together; each stratum must
    # still learn from exactly its own first ``warmup`` values (NaN skipped), in record order,
    # be judged from the record after the last of them, and the buffer must be given back.
    rng = np.random.default_rng(seed)
    n, warmup = 3_000, 150
    groups = rng.choice(5, size=n, p=[0.5, 0.3, 0.1, 0.07, 0.03])  # the rarest may not warm
    values = rng.normal(size=n) * (1 + groups) + 10 * groups
    values[rng.random(n) < nan_share] = np.nan
    labels = np.array(list("abcde"), dtype=object)
    scaler = StrataScaler(("x",), warmup=warmup)
    out = np.full(n, np.nan)
    for first in range(0, n, batch):
        part = slice(first, first + batch)
        m = len(values[part])
        where = scaler.strata_of(np.zeros(m, dtype=np.int32), groups[part], labels)
        scores = np.full(m, np.nan)
        scaler.scores("x", values[part], np.arange(first, first + m), where, np.arange(m),
                      scores)
        out[part] = scores
    tables = scaler.tables["x"]
    for group in range(5):
        stratum = scaler.keys.get((0, str(labels[group])))
        if stratum is None:
            continue
        mine = np.flatnonzero((groups == group) & ~np.isnan(values))
        if len(mine) < warmup:
            assert not tables.ready[stratum] and tables.counts[stratum] == len(mine)
            assert np.isnan(out[groups == group]).all()
            continue
        learned = NumericReference.from_values(values[mine[:warmup]]).arrays()
        m = int(tables.n_knots[stratum])
        for got, want in zip((tables.knots[stratum, :m], tables.below[stratum, :m],
                              tables.at_or_below[stratum, :m]), learned, strict=True):
            np.testing.assert_array_equal(got, want)
        assert np.isnan(out[mine[:warmup]]).all()
        assert np.isfinite(out[mine[warmup:]]).all()
    still = tables.counts[:len(scaler.keys)][~tables.ready[:len(scaler.keys)]].sum()
    assert tables.warm_size == still  # learned strata's values leave the buffer
    if not still:  # ... and once every stratum has learned, so does its memory
        assert len(tables.warm_values) == 0


def test_the_same_district_name_in_two_segments_is_two_strata() -> None:
    scaler = StrataScaler(("x",), warmup=100)
    strata = scaler.strata_of(np.array([0, 1, 0, 1], dtype=np.int32), np.zeros(4, dtype=np.int64),
                              np.array(["D1"], dtype=object))
    assert strata.tolist() == [0, 1, 0, 1]


def test_relearning_one_segment_leaves_the_others_strata_alone() -> None:
    scaler = StrataScaler(("x",), warmup=100)
    n = 1_000
    segments = np.arange(n, dtype=np.int32) % 2
    strata = scaler.strata_of(segments, np.zeros(n, dtype=np.int64), np.array(["D"]))
    scaler.scores("x", np.random.default_rng(1).normal(size=n), np.arange(n), strata,
                  np.arange(n), np.full(n, np.nan))
    assert scaler.judging("x") == {0, 1}
    scaler.relearn("x", 1)
    assert scaler.judging("x") == {0}


# ---------------------------------------------------------------------- in the segmented bank

def test_districts_arriving_in_turn_are_no_drift_with_strata() -> None:
    columns = district_stream(60_000, seed=1)
    assert feed(SegmentedBank(SETTINGS), columns) == []
    # The same records judged against their county's mix: each district's plateau alarms.
    assert len(feed(SegmentedBank(replace(SETTINGS, stratify_by=())), columns)) > 0


def test_a_change_of_one_district_is_found_in_its_county_after_its_onset_once() -> None:
    change = 30_000  # event-time index; in arrival order the first changed record is later
    columns = district_stream(90_000, seed=2, shift=("A2", 1.0, change))
    onset = int(np.flatnonzero(columns["index"] >= change)[0])
    decisions = numeric(feed(SegmentedBank(SETTINGS), columns))
    assert decisions, "the district's change must be found"
    assert all(d.detected_at >= onset for d in decisions)
    assert decisions[0].segment == "county=A"
    # The county's strata re-learn after the decision: the changed district arrives again
    # every day, and its new level is not a new change (without re-learning: one a day).
    assert len([d for d in decisions if d.segment == "county=A"]) == 1, [
        (d.segment, d.detected_at) for d in decisions]


def test_findings_and_their_events_say_what_their_window_summaries_are_in() -> None:
    """With strata a county's windows hold probabilities under each district's reference,
    the pooled layer's hold normal scores; events say so (``window_scale``), as raw values
    need no word."""
    columns = district_stream(90_000, seed=2, shift=("A2", 1.0, 30_000))
    columns["x"][60_000:] += 3.0  # then the whole stream: a pooled decision too
    scales = {}
    for stratify_by in (("tax_district",), ()):
        bank = SegmentedBank(replace(SETTINGS, stratify_by=stratify_by))
        for decision in numeric(feed(bank, columns)):
            finding = next(f for f in decision.signals if f.signal == "x")
            scales.setdefault((stratify_by, finding.scale), decision)
            event = decision_to_event(decision, "levy.records", 0, group="g",
                                      model_name="m", model_version=None,
                                      detected_at="2026-01-01T00:00:00.000Z")
            signal = next(s for s in event.signals if s.signal == "x")
            assert signal.window_scale == (None if finding.scale == "value"
                                           else finding.scale)
            if finding.scale == "stratum_probability":
                assert 0.0 <= finding.current.mean <= 1.0  # type: ignore[operator]
    assert {scale for (_, scale) in scales} == {"stratum_probability", "normal_score", "value"}
    assert (("tax_district",), "stratum_probability") in scales
    assert ((), "value") in scales


def test_batching_and_the_lean_pooled_loop_change_no_decision_with_strata() -> None:
    columns = district_stream(60_000, seed=5, shift=("B1", 1.5, 25_000))
    expected = feed(SegmentedBank(SETTINGS), columns, batch=1_000)
    assert numeric(expected)
    assert feed(SegmentedBank(SETTINGS), columns, batch=777) == expected
    plain = SegmentedBank(SETTINGS)
    assert plain.pool is not None
    for channel in plain.pool.channels.values():
        channel.location_only = False  # type: ignore[union-attr]
    assert feed(plain, columns, batch=1_000) == expected


def test_a_signal_its_districts_know_as_one_value_has_no_spread_test() -> None:
    """Like a levy rate: each of A's districts one value. The first district to learn
    decides, so any batching gives the same tests (and a restored bank keeps them)."""
    rates = {"A": {"A1": (0.011, 0.0), "A2": (0.013, 0.0)}, "B": DISTRICTS["B"]}
    columns = district_stream(20_000, seed=6, districts=rates)
    for batch in (1_000, 333):
        bank = SegmentedBank(SETTINGS)
        feed(bank, columns, batch=batch)
        restored = SegmentedBank.restore(bank.snapshot(), SETTINGS)
        feed(restored, {name: values[:1] for name, values in columns.items()}, start=20_000)
        for each in (bank, restored):
            quiet = {label: bool(np.isinf(each.segments[label].channels["x"].ph_par[:, 1]).any())
                     for label in each.segments}
            assert quiet == {"county=A": True, "county=B": False}


def test_a_segment_whose_strata_still_warm_up_says_so() -> None:
    bank = SegmentedBank(SETTINGS)
    feed(bank, district_stream(600, seed=7))
    assert all(row.warming_up for row in bank.status() if row.signal == "x"
               and not row.detector.startswith("pooled_"))
    feed(bank, district_stream(20_000, seed=8), start=600)
    assert not all(row.warming_up for row in bank.status() if row.signal == "x")


def test_baseline_rows_give_each_stratum_its_reference() -> None:
    """``learn`` (``check --reference``): a stratum with 200 baseline values judges from the
    stream's first record, long before its own warm-up would end."""
    settings = replace(SETTINGS, stratum_warmup_records=5_000)
    baseline = district_stream(6_000, seed=9)  # ~1,200 values per district
    columns = district_stream(12_000, seed=10, shift=("A1", 2.0, 1_000))
    taught = SegmentedBank(settings)
    taught.learn(baseline)
    assert taught.strata is not None and taught.strata.judging("x") == {0, 1}
    found = numeric(feed(taught, columns))
    assert found and found[0].segment == "county=A"
    assert numeric(feed(SegmentedBank(settings), columns)) == [], "untaught: still warming"


# ---------------------------------------------------------------------- snapshots

@pytest.mark.parametrize("at", [700, 40_000])  # strata warming up; all learned, after a change
def test_a_restored_bank_continues_exactly_with_its_strata(at: int) -> None:
    columns = district_stream(80_000, seed=11, shift=("A1", 1.0, 30_000))
    straight = SegmentedBank(SETTINGS)
    head = {name: values[:at] for name, values in columns.items()}
    tail = {name: values[at:] for name, values in columns.items()}
    feed(straight, head)
    restored = SegmentedBank.restore(straight.snapshot(), SETTINGS)
    assert restored.snapshot() == straight.snapshot()

    after = feed(straight, tail, start=at)
    assert feed(restored, tail, start=at) == after
    assert restored.snapshot() == straight.snapshot()


def test_a_snapshot_from_before_strata_restarts_the_segments_on_the_normal_scale() -> None:
    columns = district_stream(60_000, seed=12)
    old = SegmentedBank(replace(SETTINGS, stratify_by=()))
    feed(old, {name: values[:20_000] for name, values in columns.items()})
    bank = SegmentedBank.restore(old.snapshot(), SETTINGS)
    for segment in bank.segments.values():
        assert segment.channels["x"].reference is bank.uniform  # not the raw-value one
    rest = {name: values[20_000:] for name, values in columns.items()}
    decisions = feed(bank, rest, start=20_000)
    assert numeric(decisions) == []
    # ... and the other way: stratified state into a bank without strata re-warms.
    back = SegmentedBank.restore(bank.snapshot(), replace(SETTINGS, stratify_by=()))
    assert all(s.channels["x"].reference is None for s in back.segments.values())


def test_damaged_strata_state_is_refused_with_snapshot_error() -> None:
    bank = SegmentedBank(SETTINGS)
    feed(bank, district_stream(5_000, seed=13))
    assert bank.strata is not None
    good = bank.strata.to_bytes()
    count = len(bank.segments)
    restored = StrataScaler.from_bytes(good, ("x",), 300, count)
    assert restored.keys == bank.strata.keys
    raw = zlib.decompress(good)
    for damaged in (good[:-5], zlib.compress(raw[:-8]), zlib.compress(raw + b"\0" * 8),
                    zlib.compress(raw.replace(b'"reference"', b'"referenxe"', 1)),
                    b"not zlib"):
        with pytest.raises(SnapshotError):
            StrataScaler.from_bytes(damaged, ("x",), 300, count)
    with pytest.raises(SnapshotError):  # a stratum of a segment the snapshot does not have
        StrataScaler.from_bytes(good, ("x",), 300, 1)
    warming_bank = SegmentedBank(SETTINGS)
    feed(warming_bank, district_stream(700, seed=13))
    assert warming_bank.strata is not None
    raw = zlib.decompress(warming_bank.strata.to_bytes())
    count = len(warming_bank.segments)
    header_length = int.from_bytes(raw[:4], "little")
    header = orjson.loads(raw[4:4 + header_length])
    warming = next(entry for entry in header["entries"] if entry[2] == "warmup")
    at = header["entries"].index(warming)
    header["entries"].insert(at, warming)  # the same stratum's warm-up twice
    arrays = raw[4 + header_length:]
    before = sum(8 * (3 * e[3] if e[2] == "reference" else e[3]) for e in header["entries"][:at])
    arrays = arrays[:before] + arrays[before:before + 8 * warming[3]] + arrays[before:]
    repeated = orjson.dumps(header)
    StrataScaler.from_bytes(zlib.compress(raw), ("x",), 300, count)  # as written: restores
    with pytest.raises(SnapshotError, match="repeated"):
        StrataScaler.from_bytes(zlib.compress(len(repeated).to_bytes(4, "little") + repeated
                                              + arrays), ("x",), 300, count)


def test_bad_stratify_settings_are_one_line_errors() -> None:
    for bad in (replace(SETTINGS, stratify_by=("",)),
                replace(SETTINGS, stratify_by=("a", "a")),
                replace(SETTINGS, stratum_warmup_records=10)):
        with pytest.raises(DetectorConfigError) as error:
            bad.validate()
        assert "\n" not in str(error.value) and "strat" in str(error.value)


def test_strata_fields_already_segments_are_no_strata() -> None:
    settings = replace(SETTINGS, segment_by=("county", "tax_district"))
    assert settings.strata_fields() == ()
    assert SegmentedBank(settings).strata is None


def test_a_champion_holdout_gives_the_model_signals_their_district_references_at_once(
        ) -> None:
    """A new champion's predictions differ from the last one's: its holdout rows (its
    predictions, out of sample) teach each district, so the prediction is judged from the
    swap on, not after each district's next warm-up. The fields keep their own."""
    settings = replace(SETTINGS, prediction_signals=("prediction",),
                       stratum_warmup_records=2_000)
    columns = district_stream(30_000, seed=14)
    columns["prediction"] = columns["x"] * 3.0 + 1.0
    holdout = {name: values[:6_000] for name, values in district_stream(6_000, seed=15).items()}
    holdout["prediction"] = holdout["x"] * 3.0 + 1.0
    with_rows = replace(Reference(), rows=holdout)
    bank = SegmentedBank(settings, with_rows)
    assert bank.strata is not None
    assert bank.strata.judging("prediction") == {0, 1} and bank.strata.judging("x") == set()
    assert feed(bank, columns) == []  # the holdout describes the stream: no decision
    bank.rebaseline(with_rows)
    assert bank.strata.judging("prediction") == {0, 1}
    assert bank.strata.judging("x") == {0, 1}, "the fields keep their references"
    bank.rebaseline(Reference())  # no rows: the districts learn it from the stream
    assert bank.strata.judging("prediction") == set()


def test_the_late_label_error_bank_has_no_strata() -> None:
    from consumer.labels import error_settings

    assert error_settings(SETTINGS).strata_fields() == ()


def test_each_value_is_scored_under_its_own_strata_table_whatever_the_mix() -> None:
    """``kernels.stratum_scores`` takes the rows stratum by stratum (``group_rows``'
    grouping); each value still gets ``randomised_cdf`` under its own stratum's table (with
    the strata's salt), a stratum still warming up leaves its rows NaN, and rows not asked
    for are left alone."""
    rng = np.random.default_rng(11)
    n, n_strata = 3_000, 7
    tables = StrataScaler(("x",), warmup=10).tables["x"]
    tables.grow(n_strata)
    for stratum in range(n_strata):  # one-atom, continuous and discrete references
        spread = rng.normal(size=(1, 400, 4)[stratum % 3]) * (stratum + 1)
        tables.set_reference(stratum, np.resize(spread, 400))
    values = rng.normal(size=n) * 3
    strata = rng.integers(n_strata, size=n)
    values[rng.random(n) < 0.1] = np.nan
    values[::7] = tables.knots[strata[::7], 0]  # on an atom: the draw decides
    positions = np.arange(n, dtype=np.int64) * 5 + 3
    rows = np.flatnonzero(rng.random(n) < 0.8)
    ready_from = np.zeros(n_strata, dtype=np.int64)
    ready_from[4] = 1_500  # still warming up before row 1,500
    out = np.full(n, -1.0)
    grouping = k.group_rows(rows, strata, n_strata)
    k.stratum_scores(values, grouping, n_strata, positions, ready_from, tables.knots,
                     tables.below, tables.at_or_below, tables.n_knots, tables.u_min, out)
    expected = np.full(n, -1.0)
    for i in rows.tolist():
        s, m = strata[i], tables.n_knots[strata[i]]
        if i < ready_from[s] or np.isnan(values[i]):
            expected[i] = np.nan
            continue
        expected[i] = k.randomised_cdf(values[i], positions[i] ^ k.STRATUM_DRAW_SALT,
                                       tables.knots[s, :m], tables.below[s, :m],
                                       tables.at_or_below[s, :m], tables.u_min[s])
    np.testing.assert_array_equal(out, expected)
    assert np.isnan(out[rows][strata[rows] == 4][:10]).all()
