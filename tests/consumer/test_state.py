"""The detector-state envelope: round trip, every field checked, snapshots of others refused."""

from __future__ import annotations

import contextlib
import struct
from dataclasses import replace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer import metrics
from consumer.state import (
    PartitionState,
    StateRefused,
    StateRestoreError,
    StoredState,
    decode_state,
    encode_state,
    joined_value,
    part_key,
    restorable_state,
    resume_point,
    split_part_key,
    state_key,
    state_records,
)


def test_envelope_round_trip_keeps_bank_bytes_untouched() -> None:
    state = PartitionState("levy-drift-monitor", "levy.records", 3, 12_345, 7,
                           b"\x00\x01bank-bytes\xff")
    assert decode_state(encode_state(state)) == state


def test_state_without_champion_round_trips() -> None:
    state = PartitionState("g", "t", 0, 0, None, b"")
    assert decode_state(encode_state(state)).model_version is None


def test_key_names_group_topic_and_partition() -> None:
    assert state_key("g", "levy.records", 2) == b"g|levy.records|2"


@pytest.mark.parametrize("value", [b"", b"\x00\x00", b"\x00\x00\x00\x05{bad}", b"\xff" * 8])
def test_unreadable_envelope_is_a_typed_error(value: bytes) -> None:
    with pytest.raises(StateRestoreError):
        decode_state(value)


def test_future_envelope_version_is_refused() -> None:
    encoded = encode_state(PartitionState("g", "t", 0, 1, None, b"x"))
    future = encoded.replace(b'"v":1', b'"v":9')
    with pytest.raises(StateRestoreError, match="version 9"):
        decode_state(future)


SAVED = PartitionState("g", "t", 0, 500, None, b"bank")


@pytest.mark.parametrize(("committed", "low", "saved", "expected"), [
    (500, 0, SAVED, (500, SAVED)),      # the normal case: snapshot of the committed offset
    (500, 0, None, (500, None)),        # offsets but no snapshot yet
    (200, 0, SAVED, (200, None)),       # offsets reset behind the snapshot: fresh detectors
    (900, 0, SAVED, (900, None)),       # offsets moved past the snapshot: fresh detectors
    (-1001, 0, SAVED, (500, SAVED)),    # offsets expired, the log still holds the snapshot's
    (-1001, 700, SAVED, (700, None)),   # ... and when it no longer does
    (-1001, 40, None, (40, None)),      # a brand-new group
])
def test_resume_point(committed: int, low: int, saved: PartitionState | None,
                      expected: tuple) -> None:
    assert resume_point(committed, low, saved) == expected


def envelope(header: dict, bank: bytes = b"bank") -> bytes:
    raw = orjson.dumps(header)
    return struct.pack(">I", len(raw)) + raw + bank


GOOD_HEADER = {"v": 1, "group": "g", "topic": "t", "partition": 0, "next_offset": 5,
               "model_version": None}


@pytest.mark.parametrize(("value", "reason"), [
    (b"\x00\x00\x00", "envelope"),
    (struct.pack(">I", 0xFFFFFFF0) + b"{}", "envelope"),       # header longer than the record
    (struct.pack(">I", 5000) + b" " * 6000, "envelope"),       # header beyond any real one
    (envelope(GOOD_HEADER)[:4] + b"{not json" + b" " * 200, "envelope"),
    (envelope({**GOOD_HEADER, "v": 2}), "version"),
    (envelope({**GOOD_HEADER, "v": "1"}), "version"),
    (envelope({**GOOD_HEADER, "partition": "0"}), "envelope"),
    (envelope({**GOOD_HEADER, "partition": True}), "envelope"),
    (envelope({**GOOD_HEADER, "next_offset": -3}), "envelope"),
    (envelope({**GOOD_HEADER, "model_version": 1.5}), "envelope"),
    (envelope({k: v for k, v in GOOD_HEADER.items() if k != "group"}), "envelope"),
    (envelope([1, 2]), "envelope"),
])
def test_every_envelope_field_is_checked(value: bytes, reason: str) -> None:
    with pytest.raises(StateRefused) as refused:
        decode_state(value)
    assert refused.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(value=st.binary(max_size=64))
def test_random_envelopes_raise_only_state_refused(value: bytes) -> None:
    with contextlib.suppress(StateRefused):
        decode_state(value)


def stored(value: bytes | None) -> StoredState:
    return StoredState(b"g|t|0", 0, 41, value)


def test_a_snapshot_of_another_group_topic_or_partition_is_refused_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    before = metrics.REGISTRY.get_sample_value(
        "levydrift_consumer_state_restore_failures_total", {"reason": "foreign"})
    for other in ({"group": "x"}, {"topic": "x"}, {"partition": 1}):
        assert restorable_state(stored(envelope({**GOOD_HEADER, **other})), "g", "t", 0) is None
    after = metrics.REGISTRY.get_sample_value(
        "levydrift_consumer_state_restore_failures_total", {"reason": "foreign"})
    assert after - before == 3
    lines = [r for r in caplog.records if r.getMessage().startswith("detector state refused")]
    assert [(r.key, r.offset, r.reason) for r in lines] == [("g|t|0", 41, "foreign")] * 3


def test_the_own_snapshot_is_restorable() -> None:
    state = restorable_state(stored(envelope(GOOD_HEADER)), "g", "t", 0)
    assert state == PartitionState("g", "t", 0, 5, None, b"bank")
    assert restorable_state(None, "g", "t", 0) is None  # nothing, or a tombstone came last


# ---------------------------------------------------------------- snapshots written in parts

BIG = PartitionState("g", "t", 0, 9_000, 3, bytes(range(256)) * 400)  # ~100 KB of bank


def as_stored(records: list[tuple[bytes, bytes]]) -> StoredState:
    """What a restore reads: the first record under the key, the others by part number."""
    (key, head), rest = records[0], records[1:]
    parts = {part[1]: value for k, value in rest if (part := split_part_key(k))}
    return StoredState(key, 0, 41, head, parts)


def test_a_snapshot_that_fits_is_one_record_as_before() -> None:
    value = encode_state(SAVED)
    assert state_records(b"g|t|0", value, 16_384) == [(b"g|t|0", value)]


def test_a_large_snapshot_goes_in_parts_that_each_fit_and_restore_whole() -> None:
    records = state_records(b"g|t|0", encode_state(BIG), 16_384)
    assert len(records) == 7
    assert [key for key, _ in records] == [b"g|t|0"] + [part_key(b"g|t|0", i)
                                                        for i in range(1, 7)]
    assert all(len(value) <= 16_384 for _, value in records)
    assert restorable_state(as_stored(records), "g", "t", 0) == BIG


@settings(max_examples=100, deadline=None)
@given(value=st.binary(max_size=5_000).map(lambda tail: b"\x00" + tail),
       limit=st.integers(64, 2_000))
def test_parts_join_to_exactly_the_value_they_were_cut_from(value: bytes, limit: int) -> None:
    # Values are envelopes, which start with their header length (<= 4096): a zero byte.
    records = state_records(b"k", value, limit)
    assert all(len(part) <= limit for _, part in records)
    assert joined_value(as_stored(records)) == value


def test_a_missing_part_is_refused_and_counted() -> None:
    before = metrics.REGISTRY.get_sample_value(
        "levydrift_consumer_state_restore_failures_total", {"reason": "incomplete"}) or 0.0
    stored_parts = as_stored(state_records(b"g|t|0", encode_state(BIG), 16_384))
    missing = StoredState(stored_parts.key, 0, 41, stored_parts.value,
                          {i: v for i, v in stored_parts.parts.items() if i != 3})
    assert restorable_state(missing, "g", "t", 0) is None
    after = metrics.REGISTRY.get_sample_value(
        "levydrift_consumer_state_restore_failures_total", {"reason": "incomplete"})
    assert after == before + 1


def test_a_part_left_by_another_snapshot_is_refused() -> None:
    """Part 2 from an older snapshot (a checkpoint whose transaction never committed it
    cannot leave one, but compaction bugs and hand edits can)."""
    new = as_stored(state_records(b"g|t|0", encode_state(BIG), 16_384))
    older = replace(BIG, next_offset=8_000, bank=BIG.bank[::-1])
    old = as_stored(state_records(b"g|t|0", encode_state(older), 16_384))
    mixed = StoredState(new.key, 0, 41, new.value, {**new.parts, 2: old.parts[2]})
    with pytest.raises(StateRefused, match="another snapshot"):
        joined_value(mixed)


def test_parts_beyond_the_count_are_ignored() -> None:
    """A smaller snapshot after a larger one: the larger one's last parts stay on the
    topic until their tombstones are compacted; the first part's count rules."""
    small = replace(BIG, bank=BIG.bank[:40_000])
    records = state_records(b"g|t|0", encode_state(small), 16_384)
    stale = as_stored(state_records(b"g|t|0", encode_state(BIG), 16_384)).parts
    latest = as_stored(records)
    with_stale = StoredState(latest.key, 0, 41, latest.value, {**stale, **latest.parts})
    assert decode_state(joined_value(with_stale)) == small


def test_a_corrupted_part_is_refused() -> None:
    records = state_records(b"g|t|0", encode_state(BIG), 16_384)
    key, value = records[4]
    records[4] = (key, value[:-1] + bytes([value[-1] ^ 1]))
    with pytest.raises(StateRefused, match="CRC-32"):
        joined_value(as_stored(records))
