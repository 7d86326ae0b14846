"""Dead-letter form: original bytes and headers untouched, reason and source readable back."""

from __future__ import annotations

from schemas.dead_letter import (
    MAX_COPIED_KEY_BYTES,
    MAX_DEAD_LETTER_BYTES,
    REASON,
    SOURCE_OFFSET,
    dead_letter,
    original_headers,
    pointer_only,
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


TOO_LARGE = Rejection(Reason.TOO_LARGE, None, "1000100 bytes, the limit is 65536")


def _size(dead: tuple) -> int:
    key, value, headers = dead
    return (len(key or b"") + len(value or b"")
            + sum(len(name) + len(data or b"") + 8 for name, data in headers))


def test_a_value_too_large_to_copy_becomes_a_prefix_with_its_size() -> None:
    value = b"{" + b"x" * 1_000_099
    dead = dead_letter(b"P-1", value, HEADERS, TOO_LARGE, "levy.records", 3, 77, now_ms=0)
    key, copied, headers = dead
    assert _size(dead) <= MAX_DEAD_LETTER_BYTES
    assert key == b"P-1"
    assert value.startswith(copied) and 0.9 * MAX_DEAD_LETTER_BYTES < len(copied) < len(value)
    assert original_headers(headers) == HEADERS  # small headers are kept
    source = source_of(headers)
    assert (source.topic, source.partition, source.offset) == ("levy.records", 3, 77)
    assert (source.reason, source.truncated) == ("too_large", ("value",))
    assert source.original_value_bytes == 1_000_100
    assert dict(headers)["levydrift.dlq.original.key.bytes"] == b"3"


def test_a_huge_key_and_huge_headers_are_cut_too() -> None:
    huge_headers = [("trace", b"t" * 300_000), ("source-system", b"assessor-7")]
    dead = dead_letter(b"k" * 500_000, b"{bad", huge_headers, REJECTION, "t", 0, 1, now_ms=0)
    key, value, headers = dead
    assert _size(dead) <= MAX_DEAD_LETTER_BYTES
    assert key == b"k" * MAX_COPIED_KEY_BYTES
    assert value == b"{bad"
    assert original_headers(headers) == []
    source = source_of(headers)
    assert source.truncated == ("key", "headers")
    assert source.original_value_bytes == 4
    assert int(dict(headers)["levydrift.dlq.original.headers.bytes"]) > 300_000


def test_a_message_that_fits_is_copied_whole_with_no_size_headers() -> None:
    value = b"x" * (MAX_DEAD_LETTER_BYTES - 2000)
    key, copied, headers = dead_letter(b"k", value, HEADERS, TOO_LARGE, "t", 0, 1, now_ms=0)
    assert copied == value
    assert source_of(headers).truncated == ()
    assert not any(name.startswith("levydrift.dlq.original") for name, _ in headers)


def test_pointer_only_keeps_the_reason_the_source_and_the_sizes() -> None:
    whole = dead_letter(b"P-1", b"\xff not json", HEADERS, REJECTION, "levy.records", 2, 4711,
                        now_ms=0)
    key, value, headers = pointer_only(whole)
    assert (key, value, original_headers(headers)) == (None, None, [])
    source = source_of(headers)
    assert (source.topic, source.partition, source.offset, source.reason) == (
        "levy.records", 2, 4711, "out_of_range")
    assert source.truncated == ("key", "value", "headers")
    assert source.original_value_bytes == len(b"\xff not json")

    bounded = dead_letter(b"P-1", b"x" * 1_000_000, HEADERS, TOO_LARGE, "t", 0, 5, now_ms=0)
    _, _, headers = pointer_only(bounded)
    assert [name for name, _ in headers].count("levydrift.dlq.truncated") == 1
    assert source_of(headers).original_value_bytes == 1_000_000
    assert source_of(headers).truncated == ("key", "value", "headers")
