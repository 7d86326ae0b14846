"""The batch codec (``decode_levy_batch``) against the per-record codec: the same records with
the same values at the same indices, the same reasons for the same refused values, whatever
the mix. A value holding two objects, half a record, or a string left open must never move a
record to another value's index (its offset in the stream)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.errors import RecordRejected
from schemas.levy_record import (
    FIELDS,
    MAX_RECORD_BYTES,
    decode_levy_batch,
    decode_levy_record,
    levy_records_to_columns,
)
from tests.schemas.test_levy_record import GOOD, encode, levy_documents


def _variant(document: dict[str, Any], serial: int) -> dict[str, Any]:
    return {**document, "record_id": f"rec-{serial}"} if isinstance(
        document.get("record_id"), str) else document


@st.composite
def hostile_values(draw: st.DrawFn, serial: int) -> bytes | None:
    """One message value: valid, broken by a field, malformed, two objects, a repeated key,
    half a record, a string left open for the next value to close, tombstones, giants."""
    document = _variant(draw(levy_documents()), serial)
    good = encode(_variant(dict(GOOD), serial))
    other = encode(_variant(dict(GOOD), serial + 10_000))
    kind = draw(st.sampled_from(["document", "document", "good", "good", "two objects",
                                 "two lines", "array of two", "repeated key", "half",
                                 "open string", "close string", "none", "empty",
                                 "whitespace", "float year", "huge", "bytes", "unlabelled"]))
    if kind == "document":
        return encode(document)
    if kind == "good":
        return good
    if kind == "two objects":
        return good + b"," + other
    if kind == "two lines":
        return good + b"\n" + other
    if kind == "array of two":
        return b"[" + good + b"," + other + b"]"
    if kind == "repeated key":  # each value valid on its own: only the quote count sees it
        return draw(st.sampled_from([b'{"assessed_value": 1.0, ', b'{"county": "Other", ',
                                     b'{"actual_levy_amount": null, '])) + good[1:]
    if kind == "half":
        return good[: len(good) // 2]
    if kind == "open string":  # a joined array would run this string over the separator
        return good[: good.index(b'"record_id":') + len(b'"record_id":"')]
    if kind == "close string":
        return b'"' + good[good.index(b'"record_id":') + len(b'"record_id":"'):]
    if kind == "none":
        return None
    if kind == "empty":
        return b""
    if kind == "whitespace":
        return b"  \n"
    if kind == "float year":  # valid, but only the careful path accepts it
        return good.replace(b'"tax_year": 2024', b'"tax_year": 2024.0')
    if kind == "unlabelled":
        return encode({key: item for key, item in GOOD.items() if key != "actual_levy_amount"})
    if kind == "huge":
        return good[:-1] + b"," + b" " * MAX_RECORD_BYTES + b"}"
    return draw(st.binary(max_size=64))


@st.composite
def batches(draw: st.DrawFn) -> list[bytes | None]:
    count = draw(st.integers(0, 12))
    return [draw(hostile_values(serial)) for serial in range(count)]


def per_record(values: list[bytes | None]) -> tuple[list[Any], list[int], list[Any]]:
    records, indices, rejected = [], [], []
    for index, value in enumerate(values):
        try:
            records.append(decode_levy_record(value))
            indices.append(index)
        except RecordRejected as error:
            rejected.append((index, error.rejection))
    return records, indices, rejected


def assert_columns_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(FIELDS)
    for name in FIELDS:
        assert got[name].dtype == want[name].dtype, name
        if got[name].dtype == object:
            assert got[name].tolist() == want[name].tolist(), name
        else:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_batch_agrees_with_the_per_record_codec_value_by_value(
        values: list[bytes | None]) -> None:
    records, indices, rejected = per_record(values)
    columns, accepted, refused = decode_levy_batch(values)
    assert accepted.dtype == np.int64
    assert accepted.tolist() == indices  # every record at its own index: its own offset
    assert refused == rejected  # same indices, same reason, field and message
    assert_columns_equal(columns, levy_records_to_columns(records))


def test_record_ids_stay_at_their_own_index_around_multi_object_values() -> None:
    """A hand-made batch a joined JSON array would realign: an open string closed by the next
    value, then a value of two objects, make the same count of records as values."""
    good = [encode({**GOOD, "record_id": f"rec-{index}"}) for index in range(5)]
    opened = good[0][: good[0].index(b'"record_id":') + len(b'"record_id":"')]
    closed = b'"' + good[0][good[0].index(b'"record_id":') + len(b'"record_id":"'):]
    values = [good[1], opened, closed, good[2] + b"," + good[3], good[4]]
    columns, accepted, refused = decode_levy_batch(values)
    assert accepted.tolist() == [0, 4]
    assert columns["record_id"].tolist() == ["rec-1", "rec-4"]
    assert [index for index, _ in refused] == [1, 2, 3]
    assert json.loads(good[4])["record_id"] == "rec-4"
