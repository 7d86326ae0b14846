"""The join store (consumer/join_store.py): the entry codec refuses every damaged byte with a
stable reason; the store's buffer, commits, expiry and changelog replay keep one consistent
state, also across a reopen and a ``kill -9`` in the middle of commits.

``python -m tests.consumer.test_join_store [ENTRIES] [--uuid-ids]`` prints put_batch + commit and
replay figures."""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.join_store import (
    MAX_SEGMENT_VALUE_BYTES,
    MAX_SEGMENT_VALUES,
    NO_VERSION,
    OUTCOMES,
    EntryRefused,
    JoinStore,
    PendingPrediction,
    decode_entry,
    decode_key,
    encode_entry,
)

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000


def entry(offset: int = 7, event_time: int = T0, version: int | None = 3,
          prediction: float = 1234.5, segment: tuple[str, ...] = ("Cook", "residential"),
          joined: bool = False) -> PendingPrediction:
    return PendingPrediction(offset, event_time, version, prediction, segment, joined)


def state(store: JoinStore) -> tuple[dict[str, bytes], int, int | None]:
    """What a store holds, comparable (entries encoded: NaN predictions compare unequal)."""
    assert store.verify() == []
    return dict(store.committed_items()), store.pending_count(), store.changelog_position()


@pytest.fixture(params=[0, 1], ids=["filters in memory", "filters in a 1 MiB cache"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[JoinStore]:
    with JoinStore(tmp_path / "p0", cache_mib=request.param) as opened:
        yield opened


# --- the codec ---------------------------------------------------------------------------------

ENTRIES = [
    entry(),
    entry(version=None, prediction=math.nan, segment=()),
    entry(offset=0, event_time=-2_208_988_800_000, version=0, joined=True),  # 1900
    entry(segment=("Île-de-France", "ü" * 512, "", "x")),
    entry(segment=tuple("v" * MAX_SEGMENT_VALUE_BYTES for _ in range(MAX_SEGMENT_VALUES))),
    entry(offset=2**63 - 1, event_time=-(2**63), version=2**63 - 1, prediction=-0.0),
]


@pytest.mark.parametrize("original", ENTRIES)
def test_entries_round_trip(original: PendingPrediction) -> None:
    data = encode_entry(original)
    decoded = decode_entry(data)
    assert encode_entry(decoded) == data
    assert (decoded.record_offset, decoded.event_time_ms, decoded.model_version,
            decoded.segment, decoded.joined) == (original.record_offset, original.event_time_ms,
                                                 original.model_version, original.segment,
                                                 original.joined)
    assert decoded.prediction == original.prediction or (
        math.isnan(decoded.prediction) and math.isnan(original.prediction))


def test_an_entry_is_compact() -> None:
    assert len(encode_entry(entry(segment=()))) == 43
    assert len(encode_entry(entry(segment=("Cook", "residential")))) == 43 + 2 + 4 + 2 + 11


FIXED = struct.Struct("<BBqqqqdB")
GOOD = encode_entry(entry(segment=("ab",)))


def fixed(version: int = 1, flags: int = 2, offset: int = 7, event_time: int = T0,
          model: int = 3, prediction: float = 1.0, count: int = 0,
          watermark: int = -1) -> bytes:
    return FIXED.pack(version, flags, offset, event_time, watermark, model, prediction, count)


HOSTILE = {
    "empty": (b"", "truncated"),
    "short fixed part": (GOOD[:34], "truncated"),
    "cut inside a length": (fixed(count=1) + b"\x02", "truncated"),
    "cut inside a value": (GOOD[:-1], "truncated"),
    "length past the end": (fixed(count=1) + struct.pack("<H", 100) + b"ab", "truncated"),
    "version 0": (b"\x00" + GOOD[1:], "version"),
    "version 2": (b"\x02" + GOOD[1:], "version"),
    "unknown flag": (fixed(flags=2 | 4), "flags"),
    "model version without its flag": (fixed(flags=0, model=3), "flags"),
    "negative offset": (fixed(offset=-1), "range"),
    "negative model version": (fixed(model=-5), "range"),
    "infinite prediction": (fixed(prediction=math.inf), "range"),
    "nine values": (fixed(count=9) + b"\x00\x00" * 9, "too_many_values"),
    "255 values": (fixed(count=255), "too_many_values"),
    "huge value": (fixed(count=1) + struct.pack("<H", 65535) + b"x" * 65535, "too_large"),
    "value of 1025 bytes": (fixed(count=1) + struct.pack("<H", 1025) + b"x" * 1025,
                            "too_large"),
    "bad UTF-8": (fixed(count=1) + struct.pack("<H", 2) + b"\xc3\x28", "utf8"),
    "surrogate in UTF-8": (fixed(count=1) + struct.pack("<H", 3) + b"\xed\xa0\x80", "utf8"),
    "trailing byte": (GOOD + b"\x00", "trailing"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_bytes_are_refused_with_their_reason(name: str) -> None:
    data, reason = HOSTILE[name]
    with pytest.raises(EntryRefused) as refused:
        decode_entry(data)
    assert refused.value.reason == reason


@pytest.mark.parametrize(("bad", "reason"), [
    (entry(offset=-1), "range"), (entry(prediction=math.inf), "range"),
    (entry(prediction=-math.inf), "range"), (entry(version=-1), "range"),
    (entry(event_time=2**63), "range"), (entry(offset=2**63), "range"),
    (entry(segment=("x",) * 9), "too_many_values"),
    (entry(segment=("é" * 513,)), "too_large"), (entry(segment=("\ud800",)), "utf8"),
])
def test_what_cannot_be_read_back_is_not_encoded(bad: PendingPrediction, reason: str) -> None:
    with pytest.raises(EntryRefused) as refused:
        encode_entry(bad)
    assert refused.value.reason == reason


@given(st.binary(max_size=200))
def test_random_bytes_decode_or_are_refused(data: bytes) -> None:
    try:
        decoded = decode_entry(data)
    except EntryRefused as refusal:
        assert refusal.reason in {"truncated", "version", "flags", "range", "too_many_values",
                                  "too_large", "utf8", "trailing"}
    else:
        assert encode_entry(decoded) == data


@given(st.integers(0, len(GOOD) - 1), st.integers(0, 255))
def test_any_damaged_byte_decodes_or_is_refused(at: int, byte: int) -> None:
    data = GOOD[:at] + bytes((byte,)) + GOOD[at + 1:]
    with contextlib.suppress(EntryRefused):
        assert encode_entry(decode_entry(data)) == data


@pytest.mark.parametrize("key", [None, b"", b"x" * 257, b"\xff\xfe", b"ab\xc3"])
def test_bad_changelog_keys_are_refused(key: bytes | None) -> None:
    with pytest.raises(EntryRefused) as refused:
        decode_key(key)
    assert refused.value.reason == "key"


def test_changelog_keys_are_record_ids() -> None:
    assert decode_key(b"sim-1-0000000042") == "sim-1-0000000042"
    assert decode_key(("é" * 64).encode()) == "é" * 64


# --- the buffer and commits ------------------------------------------------------------------


def test_reads_see_the_buffer_and_discard_drops_it(store: JoinStore) -> None:
    store.put("a", entry(offset=1))
    assert store.get("a") == entry(offset=1)
    assert store.pending_count() == 1
    assert list(store.committed_items()) == []
    store.discard()
    assert store.get("a") is None
    assert store.pending_count() == 0
    assert store.changes() == []


def test_commit_persists_across_close_and_reopen(tmp_path: Path) -> None:
    with JoinStore(tmp_path / "p") as store:
        store.put("a", entry(offset=1))
        store.put("b", entry(offset=2))
        assert store.mark_joined("b")
        store.commit(17)
        store.put("c", entry(offset=3))  # never committed
    with JoinStore(tmp_path / "p") as store:
        assert store.get("a") == entry(offset=1)
        assert store.get("b") == entry(offset=2, joined=True)
        assert store.get("c") is None
        assert store.changelog_position() == 17
        assert store.pending_count() == 1
        assert store.verify() == []


def test_commit_without_a_position_keeps_the_recorded_one(store: JoinStore) -> None:
    assert store.changelog_position() is None
    store.put("a", entry())
    store.commit(5)
    store.put("b", entry())
    store.commit(None)
    assert store.changelog_position() == 5
    assert store.get("b") == entry()


def test_mark_joined_once(store: JoinStore) -> None:
    assert not store.mark_joined("missing")
    store.put("a", entry())
    store.commit(1)
    assert store.mark_joined("a")
    assert not store.mark_joined("a")  # a second label is a duplicate
    assert store.get("a") == entry(joined=True)
    assert store.pending_count() == 0
    store.discard()
    assert store.get("a") == entry()
    assert store.pending_count() == 1


def test_has_sees_committed_and_buffered_entries_and_no_expired_one(store: JoinStore) -> None:
    store.put("committed", entry(event_time=T0))
    store.commit(1)
    store.put("buffered", entry(event_time=T0 + 10))
    assert store.has("committed") and store.has("buffered") and not store.has("nothing")
    assert store.expire(T0 + 1) == 1  # removes the committed one, in the buffer for now
    assert not store.has("committed") and store.has("buffered")


def test_what_has_read_serves_the_join_only_until_the_db_is_written(store: JoinStore) -> None:
    """``has`` keeps the committed values it read for the join right after; a commit (or a
    discard) drops them, so the join never sees a value older than the DB's."""
    store.put("waiting", entry(event_time=T0))
    store.commit(1)
    assert store.has("waiting") and not store.has("later")
    store.put("later", entry(event_time=T0 + 5))  # the absence ``has`` read is stale now
    store.commit(2)
    batch = store.join_batch(["waiting", "later"], np.array([T0 + 10, T0 + 10]))
    assert [OUTCOMES[code] for code in batch.outcomes] == ["joined", "joined"]
    assert store.has("waiting")  # read again, joined now: the buffer holds the mark
    store.discard()
    assert store.join("waiting")[0] == "joined"  # the discard dropped the mark and the read


def test_join_tells_joined_duplicate_and_unmatched_apart(store: JoinStore) -> None:
    store.put("committed", entry(offset=1))
    store.commit(1)
    store.put("buffered", entry(offset=2))
    assert store.join("committed") == ("joined", entry(offset=1))
    assert store.join("buffered") == ("joined", entry(offset=2))
    assert store.join("committed") == ("duplicate", entry(offset=1, joined=True))
    assert store.join("nothing") == ("unmatched", None)
    assert store.pending_count() == 0
    store.commit(2)
    assert store.join("buffered") == ("duplicate", entry(offset=2, joined=True))
    assert state(store)[1] == 0


BATCH_IDS = ("a", "b", "c", "d", "e", "f", "g")  # "g" never stored: unmatched


def batch_entry(number: int, joined: bool) -> PendingPrediction:
    """Entries that differ in every field a batch decodes: version or none (NaN), segment
    values or none, watermark (before or after the labels' times), event time (inside or past
    the horizon), an extreme event time."""
    times = (T0, T0 - 50, T0 + 5, -(2**63), 2**63 - 1, T0 - 10)
    return PendingPrediction(number, times[number % len(times)],
                             None if number % 4 == 3 else number % 3, math.nan
                             if number % 4 == 3 else 100.0 + number,
                             () if number % 2 else ("Cook", f"d{number % 3}"), joined,
                             watermark_ms=T0 + 20 if number % 5 == 4 else T0 - 100)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stored=st.lists(st.tuples(st.sampled_from(BATCH_IDS[:-1]), st.booleans(),
                                 st.booleans()), max_size=8),
       labels=st.lists(st.tuples(st.sampled_from(BATCH_IDS), st.integers(-30, 30)),
                       max_size=12),
       horizon=st.sampled_from([None, 40, 10**6]))
def test_join_batch_equals_joining_label_by_label(
        tmp_path_factory: pytest.TempPathFactory, stored: list[tuple[str, bool, bool]],
        labels: list[tuple[str, int]], horizon: int | None) -> None:
    """Duplicates in the batch and in the store, unmatched, expired, arrived-after-the-turn,
    committed and buffered entries, older versions: the same outcomes, entries and buffer.
    (A record labelled twice in a batch, the first joining: the second is a duplicate even
    where alone it would be unmatched or expired.)"""
    directory = tmp_path_factory.mktemp("batch")
    with JoinStore(directory / "one") as one, JoinStore(directory / "batch") as batch:
        for number, (record_id, joined, commit) in enumerate(stored):
            for store in (one, batch):
                store.put(record_id, batch_entry(number, joined))
                if commit:
                    store.commit(number)
        ids = [record_id for record_id, _ in labels]
        times = np.array([T0 + delta for _, delta in labels], dtype=np.int64)
        expected = [one.join(record_id, int(time), horizon) for record_id, time
                    in zip(ids, times, strict=True)]
        got = batch.join_batch(ids, times, horizon)
        assert [OUTCOMES[code] for code in got.outcomes] == [o for o, _ in expected]
        for index, (_, found) in enumerate(expected):
            if found is None:
                assert got.segments[index] is None and got.event_time_ms[index] == -1
                continue
            assert got.event_time_ms[index] == found.event_time_ms
            assert got.model_version[index] == (NO_VERSION if found.model_version is None
                                                else found.model_version)
            assert encode_entry(PendingPrediction(0, 0, None, float(got.prediction[index]),
                                                  ())) == encode_entry(
                PendingPrediction(0, 0, None, found.prediction, ()))
            assert got.segments[index] == found.segment
        assert batch.changes() == one.changes()
        assert batch.pending_count() == one.pending_count()
        one.commit(99)
        batch.commit(99)
        assert state(batch) == state(one)
        assert batch.expire(T0) == one.expire(T0)  # the buffer's floor kept as exactly


def test_a_second_label_after_a_join_in_the_batch_is_a_duplicate(store: JoinStore) -> None:
    """Alone, the second label would be unmatched (its turn came before the record) or
    expired; after the first joined, it finds the entry joined."""
    store.put("a", PendingPrediction(1, T0, 1, 5.0, (), watermark_ms=T0 + 20))
    got = store.join_batch(["a", "a", "a"], np.array([T0 + 21, T0, T0 + 10**6]), 1000)
    assert [OUTCOMES[code] for code in got.outcomes] == ["joined", "duplicate", "duplicate"]
    assert store.pending_count() == 0 and store.get("a").joined


def test_join_batch_refuses_a_damaged_entry_before_marking_any(store: JoinStore) -> None:
    store.put("good", entry())
    store.commit(1)
    store._db.put(b"ebad", encode_entry(entry())[:-1])  # a segment value cut short
    with pytest.raises(EntryRefused) as refused:
        store.join_batch(["good", "bad"], np.array([T0 + 1, T0 + 1]))
    assert refused.value.reason == "truncated"
    assert store.changes() == [] and store.pending_count() == 1
    store._db.put(b"ebad", b"\x02" + encode_entry(entry())[1:])
    with pytest.raises(EntryRefused, match="version"):
        store.join_batch(["good", "bad"], np.array([T0 + 1, T0 + 1]))
    assert store.join_batch([], np.zeros(0, dtype=np.int64)).outcomes.size == 0


def test_put_batch_takes_numpy_columns_and_counts_replacements(store: JoinStore) -> None:
    ids = np.array(["a", "b", "c"], dtype=object)
    offsets = np.arange(3, dtype=np.int64)
    times = T0 + offsets * 1000
    predictions = np.array([1.0, math.nan, 3.0])
    assert store.put_batch(ids, offsets, times, predictions, [("x",), ("y",), ("x",)], 4) == 0
    b = store.get("b")
    assert b is not None
    assert encode_entry(b) == encode_entry(PendingPrediction(1, T0 + 1000, 4, math.nan, ("y",)))
    store.mark_joined("a")
    store.commit(3)
    # "a" (joined) and "c" (pending) again, "c" twice in the batch, one new
    replaced = store.put_batch(["a", "c", "c", "d"], [10, 11, 12, 13],
                               [T0, T0, T0 + 5, T0], [1.0, 2.0, 3.0, 4.0], [()] * 4, None)
    assert replaced == 3
    assert store.get("c") == PendingPrediction(12, T0 + 5, None, 3.0, ())
    assert store.pending_count() == 4  # a (again pending), b, c, d
    store.commit(4)
    assert state(store)[1] == 4


def test_put_batch_refuses_a_bad_batch_whole(store: JoinStore) -> None:
    with pytest.raises(EntryRefused):
        store.put_batch(["a", "b"], [1, 2], [T0, T0], [1.0, math.inf], [(), ()], 1)
    with pytest.raises(ValueError, match="differ in length"):
        store.put_batch(["a", "b"], [1], [T0, T0], [1.0, 2.0], [(), ()], 1)
    assert store.get("a") is None
    assert store.pending_count() == 0


_INT64 = st.integers(-(2**63), 2**63 - 1)
_ROWS = st.lists(st.tuples(
    st.one_of(st.integers(0, 2**63 - 1), st.integers(-5, -1), st.integers(2**63, 2**64)),
    _INT64, _INT64,
    st.one_of(st.floats(allow_nan=True), st.just(math.inf)),
    st.lists(st.text(max_size=4), max_size=MAX_SEGMENT_VALUES + 1).map(tuple)),
    min_size=1, max_size=6)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_ROWS, version=st.one_of(st.none(), st.integers(-2, 2**63 + 2)))
def test_put_batch_stores_what_encode_entry_gives_row_by_row(
        tmp_path: Path, rows: list[tuple[int, int, int, float, tuple[str, ...]]],
        version: int | None) -> None:
    """The batch packs its rows with numpy; each stored value is the bytes ``encode_entry``
    gives that row, and a batch with any row ``encode_entry`` refuses is refused whole."""
    expected: list[bytes] = []
    refusal: str | None = None
    for offset, event_time, mark, prediction, segment in rows:
        try:
            expected.append(encode_entry(PendingPrediction(offset, event_time, version,
                                                           prediction, segment,
                                                           watermark_ms=mark)))
        except EntryRefused as refused:
            refusal = refusal or refused.reason
    ids = [f"r{index}" for index in range(len(rows))]
    with JoinStore(tmp_path / f"p{random.getrandbits(64)}") as store:
        columns = list(zip(*rows, strict=True))
        if refusal is not None:
            with pytest.raises(EntryRefused):
                store.put_batch(ids, columns[0], columns[1], columns[3], columns[4], version,
                                watermarks_ms=columns[2])
            assert store.changes() == []
            return
        store.put_batch(ids, columns[0], columns[1], columns[3], columns[4], version,
                        watermarks_ms=columns[2])
        assert dict(store.changes()) == {f"r{index}".encode(): value
                                         for index, value in enumerate(expected)}


def test_changes_are_the_buffer_with_tombstones_only_for_committed_keys(
        store: JoinStore) -> None:
    store.put("old", entry(event_time=T0))
    store.commit(1)
    store.put("new", entry(event_time=T0 + 10))
    store.put("gone", entry(event_time=T0 - 10))  # put and expired in the same buffer
    store.expire(T0 + 1)
    assert dict(store.changes()) == {b"old": None, b"new": encode_entry(entry(event_time=T0 + 10))}


# --- expiry -----------------------------------------------------------------------------------


def test_expire_removes_exactly_the_old_ones_buffered_and_committed(store: JoinStore) -> None:
    store.put_batch([f"c{i}" for i in range(10)], list(range(10)),
                    [T0 + i for i in range(10)], [1.0] * 10, [()] * 10, 1)
    store.mark_joined("c2")
    store.commit(1)
    store.put_batch([f"b{i}" for i in range(10)], list(range(10)),
                    [T0 + i for i in range(10)], [1.0] * 10, [()] * 10, 1)
    assert store.expire(T0) == 0
    assert store.expire(T0 + 5) == 10  # c0..c4 and b0..b4
    for i in range(10):
        assert (store.get(f"c{i}") is None) == (i < 5)
        assert (store.get(f"b{i}") is None) == (i < 5)
    assert store.pending_count() == 10
    assert store.expire(T0 + 5) == 0
    store.commit(2)
    assert state(store)[1] == 10
    assert sorted(dict(store.committed_items())) == sorted(
        [f"c{i}" for i in range(5, 10)] + [f"b{i}" for i in range(5, 10)])


@pytest.mark.parametrize("committed", [False, True])
def test_expire_is_exact_at_the_boundary(store: JoinStore, committed: bool) -> None:
    store.put("a", entry(event_time=T0))
    if committed:
        store.commit(1)
    assert store.expire(T0) == 0
    assert store.expire(T0 + 1) == 1
    assert store.get("a") is None


def test_expire_sees_a_committed_entry_joined_in_the_buffer(store: JoinStore) -> None:
    store.put_batch(["a", "b"], [1, 2], [T0, T0 + 1], [1.0, 2.0], [(), ()], 1)
    store.commit(1)
    assert store.mark_joined("a")
    assert store.mark_joined("b")
    assert store.expire(T0 + 1) == 1
    assert (store.get("a"), store.pending_count()) == (None, 0)
    store.commit(2)
    assert state(store) == ({"b": encode_entry(PendingPrediction(2, T0 + 1, 1, 2.0, (), True))},
                            0, 2)


def test_expire_then_discard_brings_them_back(store: JoinStore) -> None:
    store.put("a", entry(event_time=T0))
    store.commit(1)
    assert store.expire(T0 + 1) == 1
    store.discard()
    assert store.get("a") == entry(event_time=T0)
    assert store.expire(T0 + 1) == 1  # and they expire again
    store.commit(2)
    assert state(store) == ({}, 0, 2)


def test_expire_follows_a_replacement_to_its_new_time(store: JoinStore) -> None:
    store.put("a", entry(event_time=T0))
    store.put("b", entry(event_time=T0 + 100))
    store.commit(1)
    store.put("a", entry(event_time=T0 + 200))  # its committed index key says T0
    store.put("b", entry(event_time=T0 - 100))
    assert store.expire(T0 + 1) == 1
    assert store.get("a") == entry(event_time=T0 + 200)
    assert store.get("b") is None
    store.commit(2)
    assert set(state(store)[0]) == {"a"}
    assert store.expire(T0 + 201) == 1
    store.commit(3)
    assert state(store) == ({}, 0, 3)


def test_expire_after_reopen_and_after_new_old_entries(tmp_path: Path) -> None:
    with JoinStore(tmp_path / "p") as store:
        store.put_batch(["a", "b"], [1, 2], [T0, T0 + 10], [1.0, 2.0], [(), ()], 1)
        store.commit(1)
        assert store.expire(T0 + 5) == 1
        store.commit(2)
    with JoinStore(tmp_path / "p") as store:
        assert store.expire(T0 + 5) == 0
        store.put("late", entry(event_time=T0 - 1000))  # older than what already expired
        store.commit(3)
        assert store.expire(T0 + 5) == 1
        assert store.expire(T0 + 11) == 1
        store.commit(4)
        assert state(store) == ({}, 0, 4)


def test_reset_wipes_everything(store: JoinStore) -> None:
    store.put("a", entry())
    store.commit(9)
    store.reset()
    assert state(store) == ({}, 0, None)
    assert store.expire(T0 + 1) == 0


# --- a model: random operations against a dict ---------------------------------------------

IDS = st.sampled_from([f"r{i}" for i in range(12)])
TIMES = st.integers(T0, T0 + 20)
OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("put"), st.lists(st.tuples(IDS, TIMES), min_size=1, max_size=6)),
    st.tuples(st.just("join"), IDS),
    st.tuples(st.just("label"), IDS),
    st.tuples(st.just("expire"), TIMES),
    st.tuples(st.just("commit"), st.none()),
    st.tuples(st.just("discard"), st.none()),
    st.tuples(st.just("reopen"), st.none()),
), max_size=40)


class Model:
    """The store's meaning: a committed dict and a buffered one."""

    def __init__(self) -> None:
        self.committed: dict[str, PendingPrediction] = {}
        self.visible: dict[str, PendingPrediction] = {}

    def apply(self, operation: str, argument: Any, offset: int) -> object:
        if operation == "put":
            replaced = 0
            for record_id, event_time in argument:
                replaced += record_id in self.visible
                self.visible[record_id] = PendingPrediction(offset, event_time, 3, 1.0, ("s",))
            return replaced
        if operation == "join":
            found = self.visible.get(argument)
            if found is None or found.joined:
                return False
            self.visible[argument] = msgspec.structs.replace(found, joined=True)
            return True
        if operation == "label":
            found = self.visible.get(argument)
            if found is None:
                return "unmatched", None
            if found.joined:
                return "duplicate", found
            self.visible[argument] = msgspec.structs.replace(found, joined=True)
            return "joined", found
        if operation == "expire":
            old = [key for key, value in self.visible.items() if value.event_time_ms < argument]
            for key in old:
                del self.visible[key]
            return len(old)
        if operation == "commit":
            self.committed = dict(self.visible)
        elif operation in ("discard", "reopen"):
            self.visible = dict(self.committed)
        return None


def run(store: JoinStore, path: Path, operation: str, argument: Any,
        offset: int) -> tuple[JoinStore, object]:
    if operation == "put":
        pairs = argument
        return store, store.put_batch([i for i, _ in pairs], [offset] * len(pairs),
                                      [t for _, t in pairs], [1.0] * len(pairs),
                                      [("s",)] * len(pairs), 3)
    if operation == "join":
        return store, store.mark_joined(argument)
    if operation == "label":
        return store, store.join(argument)
    if operation == "expire":
        return store, store.expire(argument)
    if operation == "commit":
        store.commit(offset)
    elif operation == "discard":
        store.discard()
    else:
        store.close()
        store = JoinStore(path)
    return store, None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPERATIONS, st.sampled_from([0, 1]))
def test_the_store_behaves_like_its_model(operations: list[tuple[str, Any]],
                                          cache_mib: int) -> None:
    model = Model()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "p"
        store = JoinStore(path, cache_mib=cache_mib)
        try:
            for offset, (operation, argument) in enumerate(operations):
                store, result = run(store, path, operation, argument, offset)
                assert result == model.apply(operation, argument, offset), operation
                for record_id in (f"r{i}" for i in range(12)):
                    assert store.get(record_id) == model.visible.get(record_id)
                assert store.pending_count() == sum(not e.joined for e in model.visible.values())
            assert store.verify() == []
            committed = {key: decode_entry(value) for key, value in store.committed_items()}
            assert committed == model.committed
        finally:
            store.close()


# --- changelog replay -------------------------------------------------------------------------


def changelog_of(operations: list[tuple[str, object]], path: Path,
                 ) -> tuple[list[tuple[bytes, bytes | None, int]], JoinStore]:
    """Run ``operations`` on a store; every commit publishes its ``changes()`` first, as the
    checkpoint does. Returns the changelog and the (open) store."""
    log: list[tuple[bytes, bytes | None, int]] = []
    store = JoinStore(path)
    for offset, (operation, argument) in enumerate(operations):
        if operation == "commit":
            log += [(key, value, len(log) + i) for i, (key, value) in enumerate(store.changes())]
            store.commit(len(log))
        elif operation != "reopen":
            store, _ = run(store, path, operation, argument, offset)
    store.discard()
    return log, store


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPERATIONS)
def test_the_changelog_of_a_store_replays_to_an_equal_store(
        operations: list[tuple[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        log, original = changelog_of(operations, Path(directory) / "a")
        with JoinStore(Path(directory) / "b") as replayed:
            counts = replayed.apply_changelog(log)
            assert counts.replayed == len(log)
            assert counts.skipped == {}
            expected = state(original)
            original.close()
            assert state(replayed)[:2] == expected[:2]
            if log:
                assert replayed.changelog_position() == expected[2] == len(log)


VALUES = st.one_of(st.none(), st.builds(
    lambda offset, time, joined: encode_entry(entry(offset, time, joined=joined)),
    st.integers(0, 100), TIMES, st.booleans()), st.binary(max_size=40))
MESSAGES = st.lists(st.tuples(st.sampled_from([b"k1", b"k2", b"k3", b"k4", b"\xff"]), VALUES),
                    max_size=30)


def applied(messages: list[tuple[bytes, bytes | None]], cut: int | None = None) -> tuple:
    """The state after applying ``messages`` (with offsets), or its prefix up to ``cut`` twice
    and then the rest."""
    numbered = [(key, value, offset) for offset, (key, value) in enumerate(messages)]
    with tempfile.TemporaryDirectory() as directory, JoinStore(Path(directory) / "p") as store:
        if cut is None:
            store.apply_changelog(numbered)
        else:
            store.apply_changelog(numbered[:cut])
            store.apply_changelog(numbered[:cut])
            store.apply_changelog(numbered[cut:])
        return state(store)


@settings(max_examples=80, deadline=None)
@given(MESSAGES, st.data())
def test_replaying_a_prefix_twice_then_the_rest_is_replaying_once(
        messages: list[tuple[bytes, bytes | None]], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(messages)))
    assert applied(messages, cut) == applied(messages)


def test_replay_counts_and_drops_damaged_values(store: JoinStore) -> None:
    good = encode_entry(entry())
    counts = store.apply_changelog([
        (b"a", good, 10), (b"b", good, 11), (b"b", good[:-1], 12),  # b's latest is damaged
        (None, good, 13), (b"\xff", good, 14), (b"c", b"\x09" + good[1:], 15),
        (b"a", None, 16), (b"d", good, 17)])
    assert counts.replayed == 4
    assert counts.skipped == {"truncated": 1, "key": 2, "version": 1}
    assert state(store) == ({"d": good}, 1, 18)


def test_replay_needs_an_empty_buffer(store: JoinStore) -> None:
    store.put("a", entry())
    with pytest.raises(Exception, match="uncommitted"):
        store.apply_changelog([])


def test_replay_from_an_older_position_is_safe(store: JoinStore) -> None:
    log = [(f"k{i % 7}".encode(), encode_entry(entry(i, T0 + i)) if i % 5 else None, i)
           for i in range(60)]
    store.apply_changelog(log)
    expected = state(store)
    store.apply_changelog(log[20:])
    assert state(store) == expected
    store.apply_changelog(log[:30])  # an interrupted replay: position and state go back
    assert store.changelog_position() == 30
    store.apply_changelog(log[30:])
    assert state(store) == expected


# --- kill -9 in the middle of commits ------------------------------------------------------

CHILD = """
import sys
from pathlib import Path
from tests.consumer.test_join_store import commit_step
from consumer.join_store import JoinStore
store = JoinStore(Path(sys.argv[1]))
step = 0
while True:
    step += 1
    commit_step(store, step)
    print(step, flush=True)
"""


def commit_step(store: JoinStore, step: int) -> None:
    history_step(store, step)
    store.commit(step)


def history_step(store: JoinStore, step: int) -> None:
    """Step ``step`` of a deterministic history, buffered: 2000 new entries, a third of the
    step before's joined, the entries of five steps before expired."""
    ids = [f"s{step}-{i}" for i in range(2000)]
    store.put_batch(ids, list(range(2000)), [step * 10_000 + i for i in range(2000)],
                    [float(i) for i in range(2000)], [("seg", str(i % 5)) for i in range(2000)],
                    step)
    for i in range(0, 2000, 3):
        store.mark_joined(f"s{step - 1}-{i}")
    store.expire((step - 5) * 10_000)


def test_a_kill_9_during_commits_leaves_a_committed_state(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(15)
    for attempt, kill_after in enumerate((3, 7, 11, 18, 25, 40)):
        path = tmp_path / f"crash{attempt}"
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        for _ in range(kill_after):  # wait for this many commits; it is committing more
            assert child.stdout.readline()
        time.sleep(rng.uniform(0, 0.03))  # not a sync: spreads the kill over a step (~20 ms)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        with JoinStore(path) as crashed:
            position = crashed.changelog_position()
            assert position is not None and position >= kill_after
            got = state(crashed)
        with JoinStore(tmp_path / f"expected{attempt}") as expected:
            for step in range(1, position + 1):
                commit_step(expected, step)
            assert got == state(expected)


class CountingWrites:
    """The store's DB, counting ``write`` calls (a kill cannot be aimed inside one)."""

    def __init__(self, db: object) -> None:
        self.db, self.writes = db, 0

    def write(self, *args: object) -> None:
        self.writes += 1
        self.db.write(*args)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


def test_a_commit_is_one_write_batch(store: JoinStore) -> None:
    """What makes a commit atomic under kill -9: RocksDB applies one WriteBatch whole or not at
    all after WAL recovery, so everything a commit changes goes in one."""
    for step in range(1, 8):
        counting = store._db = CountingWrites(store._db)  # type: ignore[assignment]
        commit_step(store, step)
        assert counting.writes == 1
        store._db = counting.db  # type: ignore[assignment]
    assert store.verify() == []


# --- figures ----------------------------------------------------------------------------------


def bench(total: int = 1_000_000, batch: int = 10_000, uuid_ids: bool = False) -> None:
    """put_batch + commit per ``batch`` entries, up to ``total`` in the store; then a replay of
    100k changelog messages into an empty store. Record ids in arrival order, as the
    simulator makes them, or (``uuid_ids``) random UUIDs, as many producers do."""
    rng = np.random.default_rng(1)
    random_ids = random.Random(1)
    with tempfile.TemporaryDirectory() as directory:
        store = JoinStore(Path(directory) / "p")
        puts: list[float] = []
        commits: list[float] = []
        log: list[tuple[bytes, bytes | None]] = []
        for start in range(0, total, batch):
            ids = [str(uuid.UUID(int=random_ids.getrandbits(128), version=4))
                   for _ in range(batch)] if uuid_ids \
                else [f"sim-1-{i:010d}" for i in range(start, start + batch)]
            offsets = np.arange(start, start + batch, dtype=np.int64)
            started = time.perf_counter()
            store.put_batch(ids, offsets, T0 + offsets * 1000, rng.random(batch) * 1e4,
                            [("Cook", "residential")] * batch, 3)
            put = time.perf_counter()
            if len(log) < 100_000:
                log += store.changes()
            store.commit(start)
            puts.append(put - started)
            commits.append(time.perf_counter() - put)
        store.close()
        print(f"{'UUID' if uuid_ids else 'ordered'} record ids, put_batch per {batch}: median "
              f"{np.median(puts) * 1e3:.1f} ms; commit: median {np.median(commits) * 1e3:.1f} ms "
              f"({total} entries in the end)")
        with JoinStore(Path(directory) / "replay") as replayed:
            started = time.perf_counter()
            replayed.apply_changelog((k, v, i) for i, (k, v) in enumerate(log[:100_000]))
            print(f"apply_changelog of 100k messages: {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    counts = [int(argument) for argument in sys.argv[1:] if not argument.startswith("--")]
    bench(counts[0] if counts else 1_000_000, uuid_ids="--uuid-ids" in sys.argv)


def test_the_watermark_at_arrival_survives_encoding() -> None:
    arrived = PendingPrediction(7, T0, 3, 1.0, ("Cook",), watermark_ms=T0 - 5)
    assert decode_entry(encode_entry(arrived)).watermark_ms == T0 - 5


def test_keep_existing_leaves_a_stored_entry_alone(store: JoinStore) -> None:
    store.put_batch(["a"], [1], [T0], [1.0], [()], 1)
    store.commit(None)
    assert store.join("a")[0] == "joined"
    kept = store.put_batch(["a", "b"], [9, 10], [T0, T0], [2.0, 2.0], [(), ()], 2,
                           keep_existing=True)
    assert kept == 1
    assert store.get("a").joined and store.get("a").record_offset == 1
    assert store.get("b").record_offset == 10


def test_join_judges_the_labels_turn_and_the_horizon(store: JoinStore) -> None:
    store.put_batch(["early", "late", "old"], [1, 2, 3], [T0, T0, T0 - 100], [1.0] * 3,
                    [()] * 3, 1, watermarks_ms=[T0 - 10, T0 + 50, T0 - 10])
    assert store.join("late", T0 + 20, 1000)[0] == "unmatched"  # came after the label's turn
    assert store.join("old", T0 + 950, 1000)[0] == "expired"
    assert store.join("early", T0 + 20, 1000)[0] == "joined"
    assert not store.get("late").joined and not store.get("old").joined


def fill(path: Path, cache_mib: int, entries: int, batch: int = 20_000) -> None:
    with JoinStore(path, cache_mib=cache_mib) as store:
        for start in range(0, entries, batch):
            ids = [f"record-{index:07d}" for index in range(start, start + batch)]
            store.put_batch(ids, range(start, start + batch),
                            [T0 + index for index in range(start, start + batch)],
                            [1.0] * batch, [("King",)] * batch, 1)
            store.commit(start + batch)


def test_a_cache_bounds_what_filters_and_indexes_hold_in_memory(tmp_path: Path) -> None:
    # Reopening writes what the log holds to SST files, whose filters and indexes RocksDB
    # keeps: in memory, growing with the backlog, unless they go to the cache.
    held = {}
    for cache_mib in (0, 1):
        path = tmp_path / f"cache-{cache_mib}"
        fill(path, cache_mib, 200_000)
        with JoinStore(path, cache_mib=cache_mib) as store:
            held[cache_mib] = store.table_readers_bytes()
            assert store.pending_count() == 200_000
            assert store.get("record-0123456") is not None and not store.has("record-0200000")
    assert held[0] > 200_000  # ~1.8 bytes per pending prediction
    assert held[1] < held[0] / 10
