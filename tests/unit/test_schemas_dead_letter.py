"""Dead-letter form: original bytes and headers untouched, reason and source readable back."""

from __future__ import annotations

from schemas.dead_letter import (
    REASON,
    SOURCE_OFFSET,
    dead_letter,
    original_headers,
    source_of,
)
from schemas.errors import Reason, Rejection

REJECTION = Rejection(Reason.OUT_OF_RANGE, "levy_rate", "12.5 is outside (0, 0.1]")
HEADERS = [("traceparent", b"00-abc-01"), ("source-system", b"assessor-7"), ("empty", None)]


def test_dead_letter_keeps_key_value_and_headers_and_adds_the_reason() -> None:
    key, value, headers = dead_letter(b"P-1", b"\xff not json", HEADERS, REJECTION,
                                      "levy.records", 2, 4711, now_ms=1_709_294_400_123)
    assert (key, value) == (b"P-1", b"\xff not json")
    assert headers[:3] == HEADERS
    added = dict(headers[3:])
    assert added == {
        "levydrift.dlq.reason": b"out_of_range", "levydrift.dlq.field": b"levy_rate",
        "levydrift.dlq.message": b"12.5 is outside (0, 0.1]",
        "levydrift.dlq.source.topic": b"levy.records", "levydrift.dlq.source.partition": b"2",
        "levydrift.dlq.source.offset": b"4711",
        "levydrift.dlq.time": b"2024-03-01T12:00:00.123Z"}


def test_source_of_reads_back_what_dead_letter_wrote() -> None:
    _, _, headers = dead_letter(None, None, None, Rejection(Reason.EMPTY, None, "tombstone"),
                                "levy.records", 0, 9, now_ms=0)
    source = source_of(headers)
    assert source is not None
    assert (source.topic, source.partition, source.offset) == ("levy.records", 0, 9)
    assert (source.reason, source.field, source.message) == ("empty", None, "tombstone")
    assert source.time == "1970-01-01T00:00:00.000Z"


def test_source_of_is_none_for_ordinary_or_damaged_headers() -> None:
    assert source_of(HEADERS) is None
    assert source_of(None) is None
    _, _, headers = dead_letter(b"k", b"v", HEADERS, REJECTION, "t", 0, 1, now_ms=0)
    damaged = [(name, b"x" if name == SOURCE_OFFSET else data) for name, data in headers]
    assert source_of(damaged) is None


def test_a_replay_that_fails_again_carries_only_its_latest_reason() -> None:
    _, _, first = dead_letter(b"k", b"v", HEADERS, REJECTION, "levy.records", 0, 1, now_ms=0)
    again = Rejection(Reason.NOT_JSON, None, "still broken")
    _, _, second = dead_letter(b"k", b"v", first, again, "levy.records", 0, 99, now_ms=5)
    assert [data for name, data in second if name == REASON] == [b"not_json"]
    assert original_headers(second) == HEADERS
    assert source_of(second).offset == 99


def test_long_messages_are_cut_and_odd_text_survives() -> None:
    rejection = Rejection(Reason.TOO_LONG, "county", "\udc80" + "x" * 5000)
    _, _, headers = dead_letter(b"k", b"v", [], rejection, "t", 0, 1, now_ms=0)
    message = dict(headers)["levydrift.dlq.message"]
    assert message.startswith(b"\\udc80") and len(message) <= 512 + 5
