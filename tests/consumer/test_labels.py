"""The label join, fed from lists: when a label takes its turn, what it joins, where its error
goes, and that neither fetch timing nor a rewind changes any of it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer import metrics
from consumer.config import ConsumerSection
from consumer.join_store import JoinStore
from consumer.labels import DAY_MS, LabelJoin, error_settings, open_join_store, restore_errors
from detectors.config import DetectorSettings
from levydrift.errors import ConfigError
from tests.consumer.test_join_store import fill
from tests.consumer.test_processing import ListMessage

SEGMENT_BY = ("county",)
START = datetime(2026, 1, 1, tzinfo=UTC)
DETECTORS = DetectorSettings(segment_warmup_records=200, warmup_records=200)


def at(day: float) -> str:
    return (START + timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_columns(ids: list[str], days: list[float], predictions: list[float],
                   county: str = "Benton") -> dict[str, np.ndarray]:
    return {"record_id": np.array(ids, dtype=object),
            "event_time": np.array([at(day) for day in days], dtype=object),
            "prediction": np.array(predictions, dtype=np.float64),
            "county": np.array([county] * len(ids), dtype=object)}


def label_message(offset: int, record_id: str, day: float, amount: float) -> ListMessage:
    return ListMessage(offset, orjson.dumps({
        "schema_version": 1, "record_id": record_id, "parcel_id": f"P-{record_id}",
        "tax_year": 2026, "actual_levy_amount": amount, "event_time": at(day)}))


def new_join(path: Path, horizon_days: float = 548) -> LabelJoin:
    return LabelJoin(0, JoinStore(path), restore_errors(b"", DETECTORS, None), 0,
                     int(horizon_days * DAY_MS))


def add(join: LabelJoin, first_offset: int, ids: list[str], days: list[float],
        predictions: list[float], version: int | None = 1) -> None:
    offsets = np.arange(first_offset, first_offset + len(ids), dtype=np.int64)
    join.add_records(ids, offsets, record_columns(ids, days, predictions), SEGMENT_BY, version)


def outcome_counts() -> dict[str, float]:
    return {outcome: metrics.LABELS.labels(outcome=outcome)._value.get()
            for outcome in metrics.LABEL_OUTCOMES}


def counted(before: dict[str, float]) -> dict[str, int]:
    after = outcome_counts()
    return {k: int(after[k] - before[k]) for k in after if after[k] != before[k]}


@pytest.fixture
def join(tmp_path: Path) -> LabelJoin:
    joined = new_join(tmp_path / "store")
    yield joined
    joined.store.close()


def test_a_label_waits_until_the_records_reach_its_event_time(join: LabelJoin) -> None:
    add(join, 0, ["a", "b"], [0, 1], [100.0, 200.0])
    join.enqueue([label_message(0, "c", 30, 110.0)])  # c has not come (yet)
    before = outcome_counts()
    turn = join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    assert turn.taken == 0 and len(join.queue) == 1  # the records are at day 1, the label at 30
    add(join, 2, ["d"], [31], [300.0])
    turn = join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    assert turn.taken == 1 and counted(before) == {"unmatched": 1}
    assert join.next_offset == 1


def test_a_label_whose_record_is_here_does_not_wait_for_its_turn(join: LabelJoin) -> None:
    """The entry fixes what the turn would decide, so the label is taken at once, with that
    outcome; nor do the labels behind one dated decades ahead (a mistyped year) wait."""
    add(join, 0, ["a", "b", "c"], [0, 1, 1], [100.0, 200.0, 300.0])
    join.enqueue([label_message(0, "a", 30, 110.0), label_message(1, "b", 365 * 73, 210.0),
                  label_message(2, "c", 2, 290.0), label_message(3, "a", 40, 5.0),
                  label_message(4, "later", 40, 5.0)])
    before = outcome_counts()
    turn = join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    assert turn.taken == 4 and turn.positions.tolist() == [0, 2]
    assert counted(before) == {"joined": 2, "expired": 1, "duplicate": 1}
    assert join.store.get("a").joined and not join.store.get("b").joined
    assert join.queue.offsets() == [4] and join.next_offset == 4  # "later" has not come


def test_labels_behind_one_dated_ahead_are_not_held_up(join: LabelJoin) -> None:
    add(join, 0, ["a", "b"], [0, 1], [100.0, 200.0])
    join.enqueue([label_message(0, "a", 500, 110.0), label_message(1, "b", 2, 190.0)])
    add(join, 2, ["c"], [3], [300.0])
    before = outcome_counts()
    turn = join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    assert turn.taken == 2 and counted(before) == {"joined": 2}
    assert turn.positions.tolist() == [0, 1] and join.next_offset == 2


def test_a_label_far_ahead_whose_record_has_not_come_is_named_once(
        join: LabelJoin, caplog: pytest.LogCaptureFixture) -> None:
    add(join, 0, ["a"], [0], [100.0])
    join.enqueue([label_message(7, "nobody", 365 * 40, 1.0), label_message(8, "a", 1, 90.0)])
    with caplog.at_level("WARNING", logger="consumer.labels"):
        for _ in range(3):
            assert join.take_turn(1, SEGMENT_BY, now=join.last_records_at).taken == 0
    held = [r for r in caplog.records if "holds up" in r.getMessage()]
    assert len(held) == 1
    assert held[0].label_offset == 7 and held[0].record_id == "nobody"
    assert held[0].labels_waiting == 2 and held[0].days_ahead == 365 * 40


def test_a_label_for_a_record_that_came_after_its_time_still_waits(join: LabelJoin) -> None:
    add(join, 0, ["a"], [10], [100.0])
    add(join, 1, ["b"], [0], [100.0])  # b came when the records were at day 10
    join.enqueue([label_message(0, "b", 5, 110.0)])  # the watermark had passed day 5
    add(join, 2, ["c"], [4], [100.0])
    before = outcome_counts()
    assert join.take_turn(1, SEGMENT_BY, now=join.last_records_at).taken == 1
    assert counted(before) == {"unmatched": 1}


def test_duplicate_unknown_and_early_labels_are_counted_not_joined(join: LabelJoin) -> None:
    add(join, 0, ["a"], [0], [100.0])
    join.enqueue([label_message(0, "a", 1, 110.0), label_message(1, "a", 1, 110.0),
                  label_message(2, "nobody", 1, 5.0), label_message(3, "late", 1, 5.0)])
    add(join, 1, ["x"], [1.5], [50.0])
    add(join, 2, ["late"], [2], [50.0])  # the label's turn (day 1) had passed when it came
    before = outcome_counts()
    turn = join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    assert turn.taken == 4
    assert counted(before) == {"joined": 1, "duplicate": 1, "unmatched": 2}
    assert not join.store.get("late").joined  # it waits for a label of its own


def test_a_label_after_the_horizon_is_expired(tmp_path: Path) -> None:
    join = new_join(tmp_path / "store", horizon_days=10)
    add(join, 0, ["a"], [0], [100.0])
    add(join, 1, ["b"], [20], [100.0])
    join.enqueue([label_message(0, "a", 11, 100.0)])
    before = outcome_counts()
    join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    assert counted(before) == {"expired": 1}
    join.store.close()


def test_entries_are_removed_once_the_watermark_passes_horizon_and_grace(tmp_path: Path) -> None:
    join = new_join(tmp_path / "store", horizon_days=10)
    add(join, 0, ["a", "b"], [0, 5], [100.0, 100.0])
    add(join, 2, ["c"], [41], [100.0])  # 41 days: past day 0 + 10 + 30 of grace
    assert join.store.get("a") is None and join.store.get("b") is not None
    join.store.close()


def test_an_older_versions_prediction_is_recorded_not_fed(join: LabelJoin) -> None:
    add(join, 0, ["a", "b"], [0, 0], [100.0, 100.0], version=1)
    join.enqueue([label_message(0, "a", 1, 150.0), label_message(1, "b", 1, 150.0)])
    add(join, 2, ["c"], [2], [100.0], version=2)
    recorded = metrics.LABEL_ABS_ERROR.labels(model_version="1")._count.get()
    turn = join.take_turn(2, SEGMENT_BY, now=join.last_records_at)  # version 2 serves now
    assert turn.taken == 2 and turn.positions.size == 0  # nothing reached the detectors
    assert metrics.LABEL_ABS_ERROR.labels(model_version="1")._count.get() == recorded + 2
    assert join.errors.records_seen == 0


def test_the_champions_errors_reach_the_error_detectors_at_label_offsets(join: LabelJoin) -> None:
    add(join, 0, ["a", "b"], [0, 0], [100.0, 100.0])
    join.enqueue([label_message(7, "a", 1, 150.0), label_message(9, "b", 1, 90.0)])
    add(join, 2, ["c"], [2], [100.0])
    turn = join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    assert turn.positions.tolist() == [7, 9]
    assert join.errors.records_seen == 2 and join.errors.last_position == 9


def test_malformed_labels_are_handed_back_for_the_dead_letter_topic(join: LabelJoin) -> None:
    join.enqueue([ListMessage(0, b"{not json"), label_message(1, "absent", 99, 1.0)])
    turn = join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    assert [q.offset for q in turn.rejected] == [0] and turn.taken == 1
    assert join.next_offset == 1 and len(join.queue) == 1


def test_labels_go_ahead_once_the_records_have_been_quiet(join: LabelJoin) -> None:
    add(join, 0, ["a"], [0], [100.0])
    join.enqueue([label_message(0, "absent", 200, 120.0)])
    before = outcome_counts()
    assert join.take_turn(1, SEGMENT_BY, now=join.last_records_at + 1).taken == 0
    assert join.take_turn(1, SEGMENT_BY, now=join.last_records_at + 60).taken == 1
    assert counted(before) == {"unmatched": 1}


def test_the_idle_release_waits_as_long_as_configured(tmp_path: Path) -> None:
    join = new_join(tmp_path / "store")
    join.idle_release_s = 120.0  # consumer.label_idle_release_s
    add(join, 0, ["a"], [0], [100.0])
    join.enqueue([label_message(0, "absent", 200, 120.0)])
    assert join.take_turn(1, SEGMENT_BY, now=join.last_records_at + 60).taken == 0
    assert join.take_turn(1, SEGMENT_BY, now=join.last_records_at + 121).taken == 1
    join.store.close()


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_a_label_idle_release_that_is_not_positive_is_refused(value: float) -> None:
    with pytest.raises(ConfigError, match="consumer.label_idle_release_s must be > 0"):
        ConsumerSection(label_idle_release_s=value).validate()


def test_a_negative_join_cache_is_refused() -> None:
    with pytest.raises(ConfigError, match="consumer.join_cache_mib must be >= 0"):
        ConsumerSection(join_cache_mib=-1).validate()


def test_the_store_opens_with_the_configured_cache(tmp_path: Path) -> None:
    fill(tmp_path / "store", 0, 100_000)  # filters and indexes in memory while written
    held = {}
    for cache_mib in (0, 1):
        with open_join_store(tmp_path / "store", cache_mib=cache_mib) as store:
            held[cache_mib] = store.table_readers_bytes()
    assert held[1] < held[0] / 10


def test_labels_fetched_again_after_a_rewind_are_not_queued_twice(join: LabelJoin) -> None:
    first = [label_message(0, "a", 99, 1.0), label_message(1, "b", 99, 1.0)]
    join.enqueue(first)
    join.enqueue(first + [label_message(2, "c", 99, 1.0)])  # a fetch from before a seek
    assert join.queue.offsets() == [0, 1, 2]


def test_a_performance_change_seen_only_in_labels_is_detected(tmp_path: Path) -> None:
    join = new_join(tmp_path / "store")
    generator = np.random.default_rng(5)
    n = 3000
    ids = [f"r{i}" for i in range(n)]
    days = np.linspace(0, 300, n)
    predictions = generator.normal(1000, 50, n)
    counties = np.where(np.arange(n) % 2 == 0, "Benton", "Yakima").astype(object)
    columns = record_columns(ids, days.tolist(), predictions.tolist())
    columns["county"] = counties
    join.add_records(ids, np.arange(n, dtype=np.int64), columns, SEGMENT_BY, 1)
    add(join, n, ["tick"], [400], [1.0])  # the records move on: every label has its turn
    # Bills match the predictions to ~2 %, then Benton's exemption change raises them 25 %.
    actual = predictions * generator.normal(1.0, 0.02, n)
    actual[2000:][counties[2000:] == "Benton"] *= 1.25
    join.enqueue([label_message(i, ids[i], days[i] + 60, float(actual[i])) for i in range(n)])
    turn = join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    assert turn.taken == n
    assert turn.decisions, "the error detectors missed a 25 % rise in actual levies"
    first = turn.decisions[0]
    assert first.kind == "performance" and first.detected_at >= 2000
    assert first.segment == "county=Benton"
    join.store.close()


def interleaved_run(path: Path, fetch_points: list[int]) -> tuple[list, list, bytes]:
    """The same records and labels, labels fetched after the record batches in
    ``fetch_points`` (any timing); returns decisions, outcomes and the error bank."""
    generator = np.random.default_rng(11)
    n, batch = 1200, 100
    ids = [f"r{i}" for i in range(n)]
    days = np.linspace(0, 120, n)
    # Every 50th record is held back by its sender and arrives at the end, after its label's
    # turn: whether its label joins must not depend on when the label was fetched.
    arrival = np.concatenate([np.flatnonzero(np.arange(n) % 50 != 7),
                              np.flatnonzero(np.arange(n) % 50 == 7)])
    ids, days = [ids[i] for i in arrival], days[arrival]
    predictions = generator.normal(1000, 50, n)
    actual = predictions * generator.normal(1.0, 0.02, n)
    actual[700:] *= 1.3
    order = sorted(range(n), key=lambda i: days[i] + 10 + (i % 7))  # labels out of record order
    labels = [label_message(offset, ids[i], days[i] + 10 + (i % 7), float(actual[i]))
              for offset, i in enumerate(order)]
    labels.insert(300, ListMessage(300, b"[]"))  # one malformed label
    labels = [replace(m, _offset=offset) for offset, m in enumerate(labels)]
    join = new_join(path)
    decisions, outcomes, fetched = [], [], 0
    points = sorted(set(fetch_points))
    for number, start in enumerate(range(0, n, batch)):
        add(join, start, ids[start:start + batch], days[start:start + batch].tolist(),
            predictions[start:start + batch].tolist())
        upto = points[0] if points and points[0] <= number else None
        if upto is not None:
            points.pop(0)
            target = min(len(labels), (number + 1) * len(labels) // (n // batch))
            join.enqueue(labels[fetched:target])
            fetched = max(fetched, target)
        turn = join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
        decisions += [(d.kind, d.detected_at, d.segment) for d in turn.decisions]
        outcomes += turn.positions.tolist()
    add(join, n, ["tick"], [200], [1.0])  # past every label, within the horizon
    join.enqueue(labels[fetched:])
    turn = join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    decisions += [(d.kind, d.detected_at, d.segment) for d in turn.decisions]
    outcomes += turn.positions.tolist()
    snapshot = join.errors.snapshot()
    join.store.close()
    return decisions, outcomes, snapshot


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 11), max_size=12))
def test_fetch_timing_never_changes_what_is_joined_or_detected(
        tmp_path_factory: pytest.TempPathFactory, fetch_points: list[int]) -> None:
    reference = interleaved_run(tmp_path_factory.mktemp("all"), list(range(12)))
    assert reference[0], "no decision: the comparison would prove nothing"
    assert interleaved_run(tmp_path_factory.mktemp("any"), fetch_points) == reference


def test_error_settings_watch_only_the_performance_signals() -> None:
    errors = error_settings(DETECTORS)
    assert errors.numeric_like() == DETECTORS.performance_signals
    assert errors.categorical_signals == ()


def test_a_record_with_its_levy_inline_waits_for_no_label(join: LabelJoin) -> None:
    columns = record_columns(["inline", "waiting"], [0, 0], [100.0, 100.0])
    columns["actual_levy_amount"] = np.array([120.0, np.nan])
    join.add_records(["inline", "waiting"], np.array([0, 1]), columns, SEGMENT_BY, 1)
    assert join.store.get("inline") is None  # its error was judged with the record
    assert join.store.get("waiting") is not None


def test_a_resent_record_keeps_its_join(join: LabelJoin) -> None:
    add(join, 0, ["a"], [0], [100.0])
    join.enqueue([label_message(0, "a", 1, 110.0)])
    add(join, 1, ["b"], [2], [100.0])
    join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    add(join, 2, ["a"], [3], [90.0])  # the sender resent it
    join.enqueue([label_message(1, "a", 4, 110.0)])
    add(join, 3, ["c"], [5], [100.0])
    before = outcome_counts()
    join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    assert counted(before) == {"duplicate": 1}
    assert join.store.get("a").record_offset == 0


def test_a_damaged_store_directory_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with JoinStore(path) as store:
        store.put_batch(["a"], [1], [0], [1.0], [()], 1)
        store.commit(5)
    for name in path.iterdir():  # every file RocksDB keeps, overwritten
        if name.is_file():
            name.write_bytes(b"\x00garbage" * 8)
    refused = metrics.STATE_RESTORE_FAILURES.labels(reason="join_store")._value.get()
    store = open_join_store(path)
    assert store.get("a") is None and store.changelog_position() is None
    assert metrics.STATE_RESTORE_FAILURES.labels(reason="join_store")._value.get() == refused + 1
    assert [p.name for p in tmp_path.iterdir() if ".damaged-" in p.name]
    store.close()


def test_a_store_another_instance_holds_is_a_one_line_error(tmp_path: Path) -> None:
    with JoinStore(tmp_path / "store"), pytest.raises(ConfigError, match="state_dir"):
        open_join_store(tmp_path / "store", lock_wait_s=0.0)


def test_a_store_is_waited_for_while_the_instance_it_replaces_ends(tmp_path: Path) -> None:
    """A fenced instance with the same instance id still holds the store for a moment after
    the partition has moved to its replacement: the replacement waits rather than dies."""
    import threading

    held = JoinStore(tmp_path / "store")
    held.put_batch(["a"], [1], [0], [1.0], [()], 1)
    held.commit(5)
    release = threading.Timer(1.0, held.close)
    release.start()
    store = open_join_store(tmp_path / "store", lock_wait_s=30.0)
    release.join()
    assert store.get("a") is not None  # the same store, not a rebuilt one
    store.close()


def test_quiet_records_release_no_label_while_records_wait_in_kafka(join: LabelJoin) -> None:
    add(join, 0, ["a"], [0], [100.0])
    join.enqueue([label_message(0, "b", 200, 120.0)])  # b's record is still in Kafka
    quiet = join.last_records_at + 60
    assert join.take_turn(1, SEGMENT_BY, now=quiet, records_caught_up=False).taken == 0
    add(join, 1, ["b"], [1], [100.0])
    assert join.take_turn(1, SEGMENT_BY, now=join.last_records_at + 60).taken == 1
    assert join.store.get("b").joined


def test_malformed_labels_between_good_ones_keep_their_places(join: LabelJoin) -> None:
    """A fetch's columns with malformed labels in them: the good ones join in offset order
    and feed at their own offsets; the malformed ones come back, in order, however the queue
    is split into turns."""
    add(join, 0, ["a", "b", "c"], [0, 0, 0], [100.0, 100.0, 100.0])
    join.enqueue([ListMessage(3, b"{not json"), label_message(4, "a", 1, 150.0),
                  ListMessage(5, b"[]"), label_message(6, "b", 1, 90.0),
                  label_message(7, "e", 5, 90.0), ListMessage(8, None)])
    add(join, 3, ["d"], [2], [100.0])  # the watermark reaches day 2: e's label (day 5) waits
    turn = join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    assert turn.taken == 4 and [q.offset for q in turn.rejected] == [3, 5]
    assert turn.positions.tolist() == [4, 6] and turn.times == [at(1), at(1)]
    assert join.next_offset == 7 and join.queue.offsets() == [7, 8] and len(join.queue) == 2
    add(join, 4, ["e"], [6], [100.0])
    turn = join.take_turn(1, SEGMENT_BY, now=join.last_records_at)
    assert [q.offset for q in turn.rejected] == [8] and turn.positions.tolist() == [7]
    assert join.next_offset == 9 and not join.queue and join.queue.end_offset() is None


@pytest.mark.parametrize("values", [[], [0.5], [86_400.0, 86_400.0 * 7, 1e12, 0.0, 3 * 86_400.0,
                                                  86_400.0 * 600, float("inf")]])
def test_observe_many_counts_as_observe_does(values: list[float]) -> None:
    from prometheus_client import CollectorRegistry, Histogram, Summary
    registry = CollectorRegistry()
    buckets = metrics.LABEL_LAG._upper_bounds[:-1]
    one, many = (Histogram(f"h_{name}", "h", buckets=buckets, registry=registry)
                 for name in ("one", "many"))
    one_summary, many_summary = (Summary(f"s_{name}", "s", ["v"], registry=registry)
                                 for name in ("one", "many"))
    one_child = one_summary.labels(v="1")
    for value in values:
        one.observe(value)
        one_child.observe(value)
    metrics.observe_many(many, np.array(values))
    metrics.observe_many(many_summary.labels(v="1"), np.array(values))
    samples = {sample.name.replace("_one", "").replace("_many", "") + str(sample.labels):
               sample.value for family in registry.collect() for sample in family.samples
               if "_created" not in sample.name and "one" in sample.name}
    got = {sample.name.replace("_many", "") + str(sample.labels): sample.value
           for family in registry.collect() for sample in family.samples
           if "_created" not in sample.name and "many" in sample.name}
    assert got == samples
