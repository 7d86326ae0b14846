"""The detector-state envelope: round trip, version check, unreadable bytes."""

from __future__ import annotations

import pytest

from consumer.state import (
    PartitionState,
    StateRestoreError,
    decode_state,
    encode_state,
    resume_point,
    state_key,
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
