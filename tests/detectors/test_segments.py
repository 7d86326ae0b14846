"""SegmentedBank and CompositionMonitor, fed from lists: arrival order must not matter, a
change confined to one segment is found there and named, the mix is judged per closed
event-time window, and snapshots are framed and bounds-checked."""

from __future__ import annotations

import hashlib
import logging
import re
import struct
import zlib
from dataclasses import replace

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.bank import DetectorBank
from detectors.composition import code_column, code_dictionary
from detectors.config import DetectorSettings
from detectors.errors import DetectorConfigError, SnapshotError
from detectors.reference import CategoricalReference, Reference
from detectors.segments import SegmentedBank, attributed_code
from detectors.snapshot import encode

DAY_MS = 86_400_000
SMALL = DetectorSettings(
    numeric_signals=("x",), categorical_signals=("county",), prediction_signals=(),
    performance_signals=(), warmup_records=200, segment_warmup_records=200,
    relearn_records=200, cooldown_records=200, composition_window_s=86_400,
    composition_lateness_s=0, min_instances=50)


def stream(levels: dict[str, float], records: int, rng: np.random.Generator,
           shift: tuple[str, float, int] | None = None,
           per_day: int = 10_000) -> dict[str, np.ndarray]:
    """Records in event-time order: county drawn by equal shares, x ~ N(level, 1); ``shift``
    = (county, sd, from record index)."""
    names = np.array(sorted(levels), dtype=object)
    county = names[rng.integers(len(names), size=records)]
    x = rng.normal(0.0, 1.0, records) + np.array([levels[c] for c in county])
    if shift is not None:
        name, size, start = shift
        x[start:] += np.where(county[start:] == name, size, 0.0)
    times = np.arange(records, dtype=np.int64) * (DAY_MS // per_day)
    return {"county": county, "x": x, "event_time": times}


def sliced(columns: dict[str, np.ndarray], slice_records: int) -> dict[str, np.ndarray]:
    """Each county in slices of ``slice_records`` rows, slices in turn (county-batches)."""
    county = columns["county"]
    slices = []
    for name in sorted(set(county.tolist())):
        rows = np.flatnonzero(county == name)
        slices.append([rows[i:i + slice_records] for i in range(0, rows.size, slice_records)])
    order = np.concatenate([part for group in zip(*slices, strict=False) for part in group])
    return {name: values[order] for name, values in columns.items()}


def feed(bank, columns: dict[str, np.ndarray], batch: int = 1000, start: int = 0) -> list:
    decisions = []
    n = len(columns["x"])
    for first in range(0, n, batch):
        part = {name: values[first:first + batch] for name, values in columns.items()}
        positions = np.arange(start + first, start + min(n, first + batch), dtype=np.int64)
        decisions += bank.update(part, positions)
    return decisions


def test_county_slices_with_different_levels_are_no_drift_per_segment() -> None:
    columns = sliced(stream({"A": 0.0, "B": 2.0, "C": -1.0}, 30_000,
                            np.random.default_rng(1)), 1500)
    assert feed(SegmentedBank(SMALL), columns) == []
    one_bank = DetectorBank(SMALL)  # the same order through one stream-wide bank
    assert len(feed(one_bank, {"x": columns["x"], "county": columns["county"]})) > 0


def test_a_change_in_one_segment_is_found_there_after_its_onset() -> None:
    change = 12_000
    columns = stream({"A": 0.0, "B": 2.0, "C": -1.0}, 24_000, np.random.default_rng(2),
                     shift=("B", 0.5, change))
    columns["index"] = np.arange(24_000)
    arrived = sliced(columns, 1500)
    shifted = (arrived["index"] >= change) & (arrived["county"] == "B")
    change = int(np.flatnonzero(shifted)[0])  # arrival position of the first changed record
    decisions = feed(SegmentedBank(SMALL), arrived)
    assert decisions, "a 0.5 sd shift of one county in 4,000 of its records"
    first = decisions[0]
    assert first.segment == "county=B" and first.signal_names == ("x",)
    assert first.detected_at >= change and first.onset_at is not None
    assert change - 600 <= first.onset_at <= first.detected_at
    assert first.direction == "up"
    window = first.onset_window_ms
    assert window is not None and window % DAY_MS == 0
    assert first.episode == ("county=B", "x", "up", window)


def test_batching_does_not_change_the_decisions() -> None:
    columns = stream({"A": 0.0, "B": 2.0}, 16_000, np.random.default_rng(3),
                     shift=("A", 1.0, 9_000))
    whole = feed(SegmentedBank(SMALL), columns, batch=16_000)
    assert whole
    for batch in (1, 7, 333, 4096):
        if batch == 1:
            part = {name: values[:3000] for name, values in columns.items()}
            head = feed(SegmentedBank(SMALL), part, batch=1)
            assert head == [d for d in whole if d.detected_at < 3000]
            continue
        assert feed(SegmentedBank(SMALL), columns, batch=batch) == whole


def test_a_whole_stream_shift_is_one_pooled_decision_not_one_per_segment() -> None:
    columns = stream({"A": 0.0, "B": 2.0, "C": -1.0, "D": 1.0}, 40_000,
                     np.random.default_rng(4))
    columns["x"][20_000:] += 1.0
    bank = SegmentedBank(SMALL)
    decisions = [d for d in feed(bank, columns) if d.signal_names == ("x",)]
    assert decisions and decisions[0].segment == "" and decisions[0].detected_at >= 20_000
    assert decisions[0].detected_at - 20_000 < 200  # pooled: as fast as one stream bank
    assert [d for d in decisions if d.segment and d.direction == "up"] == []
    assert bank.absorbed >= 1


def test_a_pooled_decision_goes_to_the_one_segment_whose_scores_carry_it() -> None:
    """``attributed_code`` on the records between a pooled decision's onset and detection
    (arrival order; scores signed in the decision's direction)."""
    # Interleaved: segment 1 shifted by 3 sd, the others not: segment 1's.
    codes = np.tile([0, 1, 2], 10)
    values = np.where(codes == 1, 3.0, 0.1)
    assert attributed_code(codes, values, 3) == 1
    # Every segment shifted alike: the whole stream's.
    assert attributed_code(codes, np.full(codes.size, 3.0), 3) == -1
    # Nothing moved the decision's way.
    assert attributed_code(codes, np.full(codes.size, -1.0), 3) == -1
    assert attributed_code(np.zeros(0, dtype=np.int64), np.zeros(0), 3) == -1


def test_records_before_the_shifted_slice_do_not_make_a_change_the_streams() -> None:
    """In county slices the onset reaches back over the previous slice's last records when
    they happened to lean the decision's way (the pooled statistic was lowest before them):
    those are not judged as the rest, only records from the shifted segment's first on."""
    codes = np.array([0] * 10 + [1] * 6)
    values = np.array([1.0] * 10 + [4.0] * 6)
    assert attributed_code(codes, values, 2) == 1
    # The same records interleaved after segment 1 began: segment 0 moved too.
    mixed = np.array([1, 0] * 8)
    assert attributed_code(mixed, np.where(mixed == 1, 4.0, 1.0), 2) == -1


# ------------------------------------------------------------------ composition

def windows(shares_by_day: list[dict[str, float]], per_day: int = 2000,
            seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    counties, times = [], []
    for day, shares in enumerate(shares_by_day):
        names = list(shares)
        counts = np.floor(np.array([shares[n] for n in names]) * per_day).astype(int)
        for name, count in zip(names, counts, strict=True):
            counties += [name] * int(count)
            times += list(day * DAY_MS + rng.integers(0, DAY_MS, int(count)))
    order = np.argsort(np.asarray(times), kind="stable")
    return {"county": np.asarray(counties, dtype=object)[order],
            "x": rng.normal(0, 1, len(counties))[order],
            "event_time": np.asarray(times, dtype=np.int64)[order]}


def composition_decisions(columns: dict[str, np.ndarray], settings=SMALL) -> list:
    bank = SegmentedBank(settings)
    decisions = feed(bank, columns, batch=500) + bank.finish()
    return [d for d in decisions if d.signal_names == ("county",)]


STEADY = {"A": 0.5, "B": 0.3, "C": 0.2}
MOVED = {"A": 0.3, "B": 0.3, "C": 0.4}


def test_a_sustained_change_of_mix_is_one_decision() -> None:
    decisions = composition_decisions(windows([STEADY, STEADY, MOVED, MOVED, MOVED, MOVED]))
    assert len(decisions) == 1
    finding = decisions[0].signals[0]
    assert finding.firings[0].detector == "composition_share_test"
    assert abs(finding.effect_size) >= 0.15
    assert decisions[0].onset_window_ms == 2 * DAY_MS  # the first window that moved


def test_one_odd_window_is_no_decision() -> None:
    assert composition_decisions(windows([STEADY, STEADY, MOVED, STEADY, STEADY])) == []


def test_a_new_segment_is_reported_once() -> None:
    with_new = {"A": 0.45, "B": 0.3, "C": 0.15, "N": 0.1}
    decisions = composition_decisions(windows([STEADY, STEADY, with_new, with_new, with_new]))
    assert len(decisions) == 1
    assert decisions[0].signals[0].firings[0].detector == "new_category"
    assert decisions[0].signals[0].current.new_categories == ("N",)


def test_a_small_county_the_reference_lacks_hides_no_other_move() -> None:
    """A county below ``new_category_share`` (never added to the reference) has a larger z
    than a 6-point move of county A, but moves its own share by less than
    ``composition_min_change``: the move of A is still one decision."""
    moved_with_small = {"A": 0.441, "B": 0.33, "C": 0.22, "T": 0.009}
    days = windows([STEADY] * 3 + [moved_with_small] * 4, per_day=20_000)
    decisions = composition_decisions(days)
    assert len(decisions) == 1
    firing = decisions[0].signals[0].firings[0]
    assert firing.detector == "composition_share_test"
    assert dict(firing.parameters)["category"] == "A"


ONLY_A = {"A": 1.0}  # a day the monitor joined late: only county A's slice still to come


def test_a_stream_joined_mid_day_is_no_change_of_mix() -> None:
    """A partition started mid-day (or a file cut there) sees that day's records partly, and
    in county slices which counties it missed is no accident. That first window is neither
    the reference nor judged: the whole days after it make none of its mix a decision."""
    assert composition_decisions(windows([ONLY_A] + [STEADY] * 5)) == []
    # Still found: a change of mix between whole days after it.
    decisions = composition_decisions(windows([ONLY_A, STEADY, STEADY, MOVED, MOVED, MOVED]))
    assert len(decisions) == 1
    assert decisions[0].onset_window_ms == 3 * DAY_MS


def test_the_first_window_still_reports_a_category_the_champion_never_saw() -> None:
    with_new = {"A": 0.45, "B": 0.3, "C": 0.15, "N": 0.1}
    bank = SegmentedBank(SMALL, champion_shares(STEADY))
    decisions = feed(bank, windows([with_new, with_new]), batch=500) + bank.finish()
    assert [d.signals[0].current.new_categories for d in decisions] == [("N",)]
    assert decisions[0].onset_window_ms == 0


def test_a_restored_monitor_knows_whether_its_first_whole_window_closed() -> None:
    """Restored after only a window too small to judge closed, the next whole window is still
    the first one; restored after it, the next is judged."""
    tiny = {"A": 0.01}  # 20 records: below min_instances
    days = windows([tiny, ONLY_A] + [STEADY] * 4)
    one_day = 2_000
    for cut in (20, 20 + one_day):  # after the tiny window; after the partial one
        head = {name: values[:cut] for name, values in days.items()}
        tail = {name: values[cut:] for name, values in days.items()}
        bank = SegmentedBank(SMALL)
        feed(bank, head, batch=500)
        bank.update({name: values[:1] for name, values in tail.items()},
                    np.array([cut], dtype=np.int64))  # its time closes the window before
        restored = SegmentedBank.restore(bank.snapshot(), SMALL)
        rest = {name: values[1:] for name, values in tail.items()}
        decisions = feed(restored, rest, batch=500, start=cut + 1) + restored.finish()
        assert [d for d in decisions if d.signal_names == ("county",)] == [], cut


def champion_shares(shares: dict[str, float], n: int = 4000) -> Reference:
    """A champion's reference whose county shares are ``shares`` (its holdout's mix)."""
    return Reference(categorical={"county": CategoricalReference(
        n=n, shares=shares, unseen_rate=0.001)})


def test_a_new_champion_leaves_the_mix_the_stream_is_judged_by() -> None:
    """A champion's holdout has its training window's mix, which a window read in arrival
    order skews; after a swap the stream's windows are still judged by the shares they were
    judged by before (else every swap could start a false share decision, and a retrain)."""
    days = windows([STEADY] * 8)
    head = {name: values[:6_000] for name, values in days.items()}  # days 0-2
    tail = {name: values[6_000:] for name, values in days.items()}
    skewed = champion_shares(MOVED)
    kept, replaced = SegmentedBank(SMALL), SegmentedBank(SMALL)
    for bank in (kept, replaced):
        assert feed(bank, head, batch=500) == []
    before = dict(kept.composition.reference["county"])
    kept.rebaseline(skewed)
    replaced.composition.set_reference(skewed.categorical)  # what a swap used to do
    assert kept.composition.reference["county"] == before
    assert [d for d in feed(kept, tail, batch=500, start=6_000) + kept.finish()
            if d.signal_names == ("county",)] == []
    assert [d for d in feed(replaced, tail, batch=500, start=6_000) + replaced.finish()
            if d.signal_names == ("county",)], "the skewed shares should make a decision"


def test_a_new_champion_gives_its_shares_where_the_stream_has_none_yet() -> None:
    bank = SegmentedBank(SMALL)
    bank.rebaseline(champion_shares(STEADY))
    assert bank.composition.reference["county"] == {
        county: share * 4000 for county, share in STEADY.items()}


def test_records_of_a_closed_window_are_late_not_judged() -> None:
    bank = SegmentedBank(SMALL)
    columns = windows([STEADY, STEADY, STEADY])
    feed(bank, columns)
    late = {"county": np.array(["C"] * 500, dtype=object),
            "x": np.random.default_rng(8).normal(0.0, 1.0, 500),
            "event_time": np.full(500, DAY_MS // 2, dtype=np.int64)}
    assert feed(bank, late, start=10_000) == []
    assert bank.composition.late_records == 500


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_any_order_within_windows_gives_the_same_composition_decisions(seed: int) -> None:
    days = [STEADY, STEADY, MOVED, MOVED, STEADY, {"A": 0.4, "B": 0.3, "C": 0.2, "N": 0.1}]
    columns = windows(days, per_day=1000)
    reordered = {name: values.copy() for name, values in columns.items()}
    day = columns["event_time"] // DAY_MS
    rng = np.random.default_rng(seed)
    for index in np.unique(day):
        rows = np.flatnonzero(day == index)
        shuffled = rng.permutation(rows)
        for name in reordered:
            reordered[name][rows] = columns[name][shuffled]
    expected = composition_decisions(columns)
    assert expected  # the scenario has decisions to compare
    assert composition_decisions(reordered) == expected


# ------------------------------------------------------------------ snapshots

def test_a_restored_bank_continues_exactly() -> None:
    columns = stream({"A": 0.0, "B": 2.0}, 20_000, np.random.default_rng(6),
                     shift=("B", 1.0, 14_000))
    straight = feed(SegmentedBank(SMALL), columns)
    first = {name: values[:10_000] for name, values in columns.items()}
    rest = {name: values[10_000:] for name, values in columns.items()}
    bank = SegmentedBank(SMALL)
    before = feed(bank, first)
    restored = SegmentedBank.restore(bank.snapshot(), SMALL)
    assert restored.snapshot() == bank.snapshot()
    assert before + feed(restored, rest, start=10_000) == straight


def test_truncated_or_corrupt_snapshots_raise_snapshot_error_only() -> None:
    bank = SegmentedBank(SMALL)
    feed(bank, stream({"A": 0.0, "B": 2.0}, 3000, np.random.default_rng(7)))
    data = bank.snapshot()
    for cut in (0, 3, 8, 12, 40, len(data) // 2, len(data) - 1):
        with pytest.raises(SnapshotError):
            SegmentedBank.restore(data[:cut], SMALL)
    with pytest.raises(SnapshotError, match="do not add up"):
        SegmentedBank.restore(data + b"\0", SMALL)
    header_length = struct.unpack_from("<I", data, 8)[0]
    with pytest.raises(SnapshotError, match="exceeds"):
        SegmentedBank.restore(data[:8] + struct.pack("<I", 1 << 30) + data[12:], SMALL)
    bad = zlib.compress(b'{"segments": [["county=A", -5]], "pool": 0, "settings": {}}')
    with pytest.raises(SnapshotError):
        SegmentedBank.restore(data[:8] + struct.pack("<I", len(bad)) + bad, SMALL)
    assert header_length > 0


REASONS = {"magic", "version", "corrupt", "too_large", "header", "shape"}


def reframed(data: bytes, header: bytes | None = None, **fields: object) -> bytes:
    """``data`` with its frame header replaced (``header`` as packed) or edited (``fields``)."""
    length = struct.unpack_from("<I", data, 8)[0]
    if header is None:
        header = zlib.compress(orjson.dumps({**orjson.loads(zlib.decompress(
            data[12:12 + length])), **fields}))
    return data[:8] + struct.pack("<I", len(header)) + header + data[12 + length:]


def bomb() -> bytes:
    packer = zlib.compressobj(9)
    return b"".join(packer.compress(bytes(1 << 20)) for _ in range(20)) + packer.flush()


def pool_magic(data: bytes) -> bytes:
    """The pooled bank (right after the ring) with bad magic bytes."""
    length = struct.unpack_from("<I", data, 8)[0]
    start = 12 + length + orjson.loads(zlib.decompress(data[12:12 + length]))["ring"]
    assert data[start:start + 6] == b"LDSNAP"
    return data[:start] + b"PKZIP!" + data[start + 6:]


REFUSALS = {
    "single-bank snapshot": (lambda d: encode(DetectorBank(SMALL)), "version"),
    "bad magic": (lambda d: b"PKZIP!" + d[6:], "magic"),
    "bad version": (lambda d: d[:6] + struct.pack("<H", 9) + d[8:], "version"),
    "header length beyond the limit": (lambda d: d[:8] + struct.pack("<I", 1 << 30) + d[12:],
                                       "too_large"),
    "header length beyond the data": (lambda d: d[:8] + struct.pack("<I", len(d)) + d[12:],
                                      "corrupt"),
    "header not zlib": (lambda d: reframed(d, b"not zlib at all"), "corrupt"),
    "header inflates beyond its limit": (lambda d: reframed(d, bomb()), "too_large"),
    "header not JSON": (lambda d: reframed(d, zlib.compress(b"{not json")), "header"),
    "header not an object": (lambda d: reframed(d, zlib.compress(b"[1, 2]")), "header"),
    "negative bank length": (lambda d: reframed(d, pool=-5), "header"),
    "mistyped segment list": (lambda d: reframed(d, segments={"a": 1}), "header"),
    "too many segments": (lambda d: reframed(d, segments=[[f"s{i}", 0] for i in range(99)]),
                          "too_large"),
    "mistyped counter": (lambda d: reframed(d, records_seen="many"), "header"),
    "missing field": (lambda d: reframed(d, settings=None), "header"),
    "truncated": (lambda d: d[:-1], "corrupt"),
    "padded": (lambda d: d + b"\0", "corrupt"),
    "inner bank refused": (pool_magic, "magic"),  # an inner bank keeps its own reason
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_every_refusal_names_its_reason(name: str) -> None:
    bank = SegmentedBank(SMALL)
    feed(bank, stream({"A": 0.0, "B": 2.0}, 1500, np.random.default_rng(11)))
    forge, reason = REFUSALS[name]
    with pytest.raises(SnapshotError) as refused:
        SegmentedBank.restore(forge(bank.snapshot()), SMALL)
    assert refused.value.reason == reason, str(refused.value)


def test_a_single_bank_snapshot_is_refused_by_name() -> None:
    old = encode(DetectorBank(SMALL))
    with pytest.raises(SnapshotError, match="single-bank"):
        SegmentedBank.restore(old, SMALL)


def test_the_consumer_starts_fresh_on_a_single_bank_snapshot(caplog) -> None:
    from consumer.processing import PartitionMonitor
    from consumer.state import PartitionState

    saved = PartitionState("g", "t", 0, 500, None, encode(DetectorBank(SMALL)))
    with caplog.at_level(logging.WARNING, logger="consumer.processing"):
        monitor = PartitionMonitor.resume("t", 0, 500, saved, SMALL, None)
    assert isinstance(monitor.bank, SegmentedBank) and monitor.bank.records_seen == 0
    assert "single-bank snapshot" in caplog.text


def test_bad_segment_settings_are_one_line_errors() -> None:
    with pytest.raises(DetectorConfigError, match="segment_by"):
        DetectorSettings(segment_by=("county", "county")).validate()
    with pytest.raises(DetectorConfigError, match="composition_window_s"):
        DetectorSettings(composition_window_s=1).validate()


def test_a_segment_signal_with_a_handful_of_values_has_no_spread_test() -> None:
    from detectors.channels import NumericChannel
    from detectors.reference import NumericReference

    rng = np.random.default_rng(9)
    settings = DetectorSettings(scoring="randomised")
    rates = NumericReference.from_values(rng.choice([0.008, 0.01, 0.012, 0.016, 0.017], 2000))
    values = NumericReference.from_values(rng.lognormal(12, 0.5, 2000))
    spread = [row for row, name in enumerate(NumericChannel("x", settings, None).ph_names)
              if name == "spread_page_hinkley"]
    assert spread
    discrete = NumericChannel("levy_rate", settings, rates).ph_par[spread, 1]
    continuous = NumericChannel("assessed_value", settings, values).ph_par[spread, 1]
    mid_rank = NumericChannel("levy_rate", DetectorSettings(), rates).ph_par[spread, 1]
    assert np.all(np.isinf(discrete)) and np.all(np.isfinite(continuous))
    assert np.all(np.isfinite(mid_rank))  # one stream-wide bank keeps its spread tests


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_flipped_bytes_anywhere_restore_or_raise_snapshot_error(data) -> None:
    bank = SegmentedBank(SMALL)
    feed(bank, stream({"A": 0.0, "B": 2.0}, 1500, np.random.default_rng(10)))
    snapshot = bytearray(bank.snapshot())
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(snapshot) - 1))
        snapshot[index] ^= data.draw(st.integers(1, 255))
    try:  # anything but SnapshotError fails the test
        SegmentedBank.restore(bytes(snapshot), SMALL)
    except SnapshotError as error:
        assert error.reason in REASONS


@pytest.mark.parametrize("seed", [1, 4, 5])
def test_one_change_in_one_segment_is_one_decision_across_layers(seed: int) -> None:
    """Segment and pooled detectors see the same values: when one fires on some signals and
    the other on others for the same change (Grant's unit bug, its roll arriving as one
    slice), that is still one episode of that kind."""
    from levydrift.simulator import LevySimulator, SimulatorConfig, ordered_blocks, string_columns

    config = SimulatorConfig(seed=seed, county="Grant", scenario="unit-bug", change_at=17_280,
                             duration=100_000, event_interval_ms=10_000)
    blocks = list(ordered_blocks(LevySimulator(config), 30_000, "roll-cycle"))
    merged = string_columns({k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]})
    columns = {k: v.astype(np.float64) if v.dtype.kind in "fiub" else v.astype(object)
               for k, v in merged.items()}  # as the consumer decodes them
    columns["x"] = columns["assessed_value"]  # ``feed`` counts records by x
    # Without district strata: Grant's districts get ~600 records before the change here,
    # short of a stratum's warm-up (test_strata.py has the stratified case).
    decisions = [d for d in feed(SegmentedBank(DetectorSettings(stratify_by=())), columns,
                                 batch=2000) if d.kind == "distribution"]
    first = decisions[0]
    episode = [d for d in decisions
               if d.detected_at <= first.detected_at + DetectorSettings().cooldown_records]
    assert episode == [first], [(d.segment, d.detected_at, d.signal_names) for d in episode]


def as_recorded(decisions: list) -> bytes:
    """The decisions' repr as the digest's build wrote it: without the findings' ``scale``
    (added since; what their window summaries are in)."""
    return re.sub(r", scale='[a-z_]+'", "", "".join(map(repr, decisions))).encode()


def test_many_segments_in_slices_decide_and_snapshot_as_before() -> None:
    """The segment layer's batch plumbing and the pooled layer's lean loop change no
    decision and no snapshot byte: many segments (and an "(other)" one) in county slices,
    a change in one segment and one of the whole stream. The digest was recorded by the
    build before them (commit 644fdf6); the general loop is run beside the lean one.
    Recorded again when composition stopped judging a stream's first window (it may be
    partial): that build's decisions less its composition decision at 25,553 (counties
    in 700-record slices across days make late records and odd windows here)."""
    levels = {f"C{i:02d}": (i % 7 - 3) * 0.4 for i in range(12)}
    columns = stream(levels, 60_000, np.random.default_rng(11), shift=("C03", 0.7, 25_000))
    columns["x"][45_000:] += 0.5  # the whole stream moves: a pooled decision
    arrived = sliced(columns, 700)
    settings = replace(SMALL, max_segments=10, stratify_by=())  # as that build had
    lean, plain = SegmentedBank(settings), SegmentedBank(settings)
    assert plain.pool is not None
    for channel in plain.pool.channels.values():
        channel.location_only = False  # type: ignore[union-attr]
    digest, found, n = hashlib.sha256(), [], len(arrived["x"])
    for first in range(0, n, 1_300):
        part = {name: values[first:first + 1_300] for name, values in arrived.items()}
        positions = np.arange(first, min(n, first + 1_300), dtype=np.int64)
        decisions = lean.update(part, positions)
        assert decisions == plain.update(part, positions)
        found += decisions
        digest.update(as_recorded(decisions) + lean.snapshot())
    decisions = lean.finish()
    assert decisions == plain.finish() and lean.snapshot() == plain.snapshot()
    digest.update(as_recorded(decisions) + lean.snapshot())
    assert any(d.segment == "county=C03" for d in found) and any(not d.segment for d in found)
    assert digest.hexdigest() == (
        "ada5a387793f489326f0c161044235ec4acefa308a45591e1ee18bc04f618fa1")


def test_canonical_event_times_are_read_as_pandas_reads_them() -> None:
    """The compiled reader of "YYYY-MM-DDTHH:MM:SS.sssZ" gives pandas' times; any other
    form (or an impossible date) leaves the batch to pandas."""
    import pandas as pd

    from detectors.composition import _canonical_rfc3339_ms, event_times_ms

    def by_pandas(values: np.ndarray) -> np.ndarray:
        parsed = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601",
                                errors="coerce").to_numpy(dtype="datetime64[ns]")
        return np.where(np.isnat(parsed), -1, parsed.astype("datetime64[ms]").astype(np.int64))

    millis = np.random.default_rng(5).integers(0, 7_000_000_000_000, 20_000)  # to 2191
    text = np.array([t[:23] + "Z" for t in pd.to_datetime(millis, unit="ms", utc=True)
                     .strftime("%Y-%m-%dT%H:%M:%S.%f")], dtype=object)
    np.testing.assert_array_equal(_canonical_rfc3339_ms(text), millis)
    np.testing.assert_array_equal(event_times_ms(text), by_pandas(text))
    odd = ["2024-02-29T23:59:59.999Z", "2023-02-29T00:00:00.000Z", "2100-02-29T00:00:00.000Z",
           "2026-13-01T00:00:00.000Z", "2026-04-31T00:00:00.000Z", "2026-01-01T24:00:00.000Z",
           "2026-01-01T23:59:60.000Z", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000+01:00",
           "2026-01-01 00:00:00.000Z", "2026-01-01T00:00:00.000z", "1969-12-31T23:59:59.999Z",
           "２026-01-01T00:00:00.000Z", "garbage", "", None, float("nan")]
    for value in odd:
        values = np.array(["2026-01-01T00:00:00.000Z", value], dtype=object)
        np.testing.assert_array_equal(event_times_ms(values), by_pandas(values))
    # Values joined into one text are split at every 25th byte: two values whose lengths
    # add up to two forms', or one holding the separator, must not pass for two times.
    form = "2026-01-01T00:00:00.000Z"
    for values in ([form + form, ""], ["", form + form], [form[:23], "|" + form],
                   [form[:23] + "|", form]):
        array = np.array(values, dtype=object)
        np.testing.assert_array_equal(event_times_ms(array), by_pandas(array))
    both = event_times_ms(np.array([form.encode(), form], dtype=object))  # bytes: as text
    np.testing.assert_array_equal(both, [1_767_225_600_000] * 2)


@pytest.mark.parametrize("fields", [(), ("county",), ("county", "district")])
def test_segment_groups_label_records_as_segment_keys_do(fields: tuple[str, ...]) -> None:
    rng = np.random.default_rng(9)
    columns = {"county": np.array(["A", "B", "", None, "C", 1, "1"], dtype=object)[
        rng.integers(7, size=500)], "district": rng.integers(3, size=500).astype(object)}
    bank = SegmentedBank(replace(SMALL, segment_by=fields))
    for n in (500, 1, 0):
        part = {name: values[:n] for name, values in columns.items()}
        groups, labels = bank.segment_groups(part, n)
        keys = bank.segment_keys(part, n)
        assert labels[groups].tolist() == keys.tolist()
        firsts = [keys.tolist().index(label) for label in dict.fromkeys(labels.tolist())]
        assert firsts == sorted(firsts)  # labels in order of first appearance


@pytest.mark.parametrize("stratify_by", [(), ("tax_district",)])
def test_a_new_champion_relearns_the_model_signals_not_the_record_fields(
        stratify_by: tuple[str, ...]) -> None:
    """A champion swap (after every retrain) moves predictions and errors only. The fields
    keep watching: a shift of x right after the swap is found as fast as without a swap
    (before, every segment re-learned x too and was blind for its warm-up). With strata,
    the strata re-learn the model signals and the segments judge their scores at once."""
    settings = replace(SMALL, prediction_signals=("prediction",), stratify_by=stratify_by,
                       stratum_warmup_records=200)
    columns = stream({"A": 0.0, "B": 2.0}, 12_000, np.random.default_rng(7),
                     shift=("A", 1.5, 6_000))
    columns["prediction"] = columns["x"] * 10.0
    swapped, plain = SegmentedBank(settings), SegmentedBank(settings)
    head = {name: values[:6_000] for name, values in columns.items()}
    tail = {name: values[6_000:] for name, values in columns.items()}
    assert feed(swapped, head) == feed(plain, head) == []
    swapped.rebaseline()
    strata = swapped.strata
    for code, bank in enumerate(swapped.segments.values()):
        assert bank.channels["x"].reference is not None, "the field keeps its reference"
        if strata is None:
            assert bank.channels["prediction"].reference is None, "the model signal re-learns"
        else:
            assert code in strata.judging("x"), "the field's strata keep theirs"
            assert code not in strata.judging("prediction"), "the model signal's re-learn"
    found = [d for d in feed(swapped, tail, start=6_000) if "x" in d.signal_names]
    expected = [d for d in feed(plain, tail, start=6_000) if "x" in d.signal_names]
    assert found and expected
    assert found[0].detected_at == expected[0].detected_at


category_values = st.lists(st.one_of(st.sampled_from(["Yakima", "King", "Grant", ""]),
                                     st.none()), max_size=40)


@settings(max_examples=300, deadline=None)
@given(category_values, st.permutations(["Yakima", "King", "Grant", "", "Adams"]))
def test_a_dictionary_column_is_coded_as_its_texts_are(values: list[str | None],
                                                       dictionary: list[str]) -> None:
    """``code_dictionary`` (a Parquet dictionary column: indices into distinct values) gives
    ``code_column``'s codes and names for the same texts: first appearance, missing -1, an
    empty text named as missing, a dictionary value no row uses left out."""
    values_array = np.array(dictionary, dtype=object)
    indices = np.array([-1 if value is None else dictionary.index(value) for value in values],
                       dtype=np.int64)
    texts = np.array(values, dtype=object)
    codes, names = code_dictionary(indices, values_array)
    want_codes, want_names = code_column(texts)
    np.testing.assert_array_equal(codes, want_codes)
    assert names == want_names


def test_categories_given_coded_feed_the_bank_as_their_texts_do() -> None:
    """``SegmentedBank.update`` with the category columns coded already (as ``check`` gives
    them from a Parquet dictionary) makes the decisions the texts make."""
    rng = np.random.default_rng(11)
    columns = sliced(stream({"Adams": 0.0, "Grant": 0.0, "King": 0.0}, 12_000, rng,
                            shift=("Grant", 1.0, 6_000)), 500)
    dictionary = np.array(["King", "Grant", "Adams"], dtype=object)
    indices = np.array([dictionary.tolist().index(name) for name in columns["county"]])
    by_text, by_code, by_upper = SegmentedBank(SMALL), SegmentedBank(SMALL), SegmentedBank(SMALL)
    found_text, found_code, found_upper = [], [], []
    for start in range(0, len(indices), 1_000):
        part = {name: values[start:start + 1_000] for name, values in columns.items()}
        positions = np.arange(start, start + len(part["x"]))
        codes, names = code_dictionary(indices[start:start + 1_000], dictionary)
        found_text += by_text.update(part, positions)
        found_code += by_code.update(part, positions, {"county": (codes, names)})
        found_upper += by_upper.update(part, positions,
                                       {"county": (codes, [name.upper() for name in names])})
    assert any("county=Grant" in repr(decision) for decision in found_text)
    assert repr(found_code) == repr(found_text)
    assert by_code.snapshot() == by_text.snapshot()
    # The codes given are the ones used, not the texts coded again.
    assert any("county=GRANT" in repr(decision) for decision in found_upper)
