"""Levy label v1: the codec accepts exactly what the JSON Schema accepts, names the record
codec's reason for each bad input, round-trips, and shares its field rules with the record."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from schemas._contract import load_schema
from schemas.errors import Reason, RecordRejected
from schemas.levy_label import (
    _QUOTES_WITH_SOURCE,
    _QUOTES_WITHOUT_SOURCE,
    FIELDS,
    MAX_LABEL_BYTES,
    LevyLabel,
    decode_levy_label,
    decode_levy_labels,
    encode_levy_label,
    levy_label_from_dict,
    levy_labels_to_columns,
)
from schemas.levy_record import MONEY_MAX, TAX_YEAR_MAX, TAX_YEAR_MIN, TEXT_MAX_CHARS
from tests.schemas.test_levy_record import (
    _refuse_constant,
    _refuse_duplicates,
    numbers,
    texts,
    timestamps,
    versions,
)

SCHEMA = load_schema("levy-label.v1.json")
VALIDATOR = Draft202012Validator(SCHEMA)
RECORD_SCHEMA = load_schema("levy-record.v1.json")

GOOD: dict[str, Any] = {
    "schema_version": 1, "record_id": "rec-000001", "parcel_id": "P-12-345-678",
    "tax_year": 2024, "actual_levy_amount": 3550.12, "event_time": "2024-06-01T08:00:00.5Z",
    "source": "county-treasurer",
}
UNSOURCED = {key: item for key, item in GOOD.items() if key != "source"}


def oracle_accepts(value: bytes) -> bool:
    """The contract as other teams read it: I-JSON (UTF-8, no NaN/Infinity, no unpaired
    surrogates, no duplicate keys) and the JSON Schema file; nothing else."""
    try:
        document = json.loads(value.decode("utf-8"), parse_constant=_refuse_constant,
                              object_pairs_hook=_refuse_duplicates)
        json.dumps(document, ensure_ascii=False).encode("utf-8")  # refuses lone surrogates
    except ValueError:
        return False
    return VALIDATOR.is_valid(document)


def outcome(value: bytes | None) -> LevyLabel | Reason:
    try:
        return decode_levy_label(value)
    except RecordRejected as error:
        return error.reason


def encode(document: Any) -> bytes:
    return json.dumps(document, allow_nan=True).encode("utf-8")


# --- generated documents: a valid label with zero to two fields mutated ---------------------

field_values = {
    "schema_version": versions, "record_id": texts, "parcel_id": texts, "source": texts,
    "event_time": timestamps, "actual_levy_amount": numbers,
    "tax_year": st.one_of(st.integers(TAX_YEAR_MIN - 5, TAX_YEAR_MAX + 5), numbers,
                          st.integers(TAX_YEAR_MIN, TAX_YEAR_MAX).map(float)),
}


@st.composite
def label_documents(draw: st.DrawFn) -> dict[str, Any]:
    document = dict(draw(st.sampled_from([GOOD, UNSOURCED])))
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        name = draw(st.sampled_from([*FIELDS, "extra", "assessed_value"]))
        action = draw(st.sampled_from(["set", "set", "set", "drop"]))
        if action == "drop":
            document.pop(name, None)
        else:
            document[name] = draw(field_values.get(name, numbers))
    return document


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_documents())
def test_codec_accepts_exactly_what_the_json_schema_accepts(document: dict[str, Any]) -> None:
    value = encode(document)
    result = outcome(value)
    assert isinstance(result, LevyLabel) == oracle_accepts(value), (document, result)
    if isinstance(result, LevyLabel):
        for name in FIELDS:
            assert getattr(result, name) == document.get(name)


@settings(max_examples=300, deadline=None)
@given(label_documents())
def test_fast_and_careful_paths_agree(document: dict[str, Any]) -> None:
    """The msgspec path and the hand-written checks give the same label or the same reason."""
    try:
        careful: LevyLabel | Reason = levy_label_from_dict(json.loads(encode(document)))
    except RecordRejected as error:
        careful = error.reason
    assert outcome(encode(document)) == careful


@settings(max_examples=300, deadline=None)
@given(label_documents(), st.data())
def test_a_repeated_key_is_refused_whatever_its_values(document: dict[str, Any],
                                                       data: st.DataObject) -> None:
    """Parsers disagree on which of two equal keys wins; the codec accepts neither."""
    assume(isinstance(outcome(encode(document)), LevyLabel))
    name = data.draw(st.sampled_from(sorted(document)))
    repeat = data.draw(st.one_of(st.just(document[name]), field_values.get(name, numbers)))
    text = encode(document).decode()
    fragment = f"{json.dumps(name)}: {json.dumps(repeat, allow_nan=True)}"
    first = data.draw(st.booleans())  # the repeat before or after the original
    value = (f"{{{fragment}, {text[1:]}" if first else f"{text[:-1]}, {fragment}}}").encode()
    assert outcome(value) == Reason.DUPLICATE_KEY
    assert not oracle_accepts(value)
    with pytest.raises(RecordRejected) as caught:
        decode_levy_label(value)
    assert caught.value.field == name


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 label_documents().map(lambda d: encode(d)[: len(encode(d)) // 2])))
def test_arbitrary_bytes_never_raise_anything_but_a_rejection(value: bytes) -> None:
    assert isinstance(outcome(value), Reason)


# --- hand-written cases ------------------------------------------------------------------

def with_(**changes: Any) -> bytes:
    return encode({**GOOD, **changes})


def without(name: str) -> bytes:
    return encode({key: item for key, item in GOOD.items() if key != name})


def repeated(fragment: str, document: dict[str, Any] = GOOD) -> bytes:
    """``document`` with ``fragment`` (``"key": value``, verbatim) as its first member."""
    return ("{" + fragment + ", " + encode(document).decode()[1:]).encode()


def raw(fragment: str, field: str) -> bytes:
    """GOOD with one field's JSON text replaced verbatim (for what json.dumps will not write)."""
    text = encode(GOOD).decode()
    start = text.index(f'"{field}": ') + len(f'"{field}": ')
    end = text.index(",", start) if "," in text[start:] else text.index("}", start)
    return (text[:start] + fragment + text[end:]).encode()


BAD_CASES: list[tuple[str, bytes | None, Reason, str | None]] = [
    ("tombstone", None, Reason.EMPTY, None),
    ("zero bytes", b"", Reason.EMPTY, None),
    ("not json", b"actual_levy_amount=1", Reason.NOT_JSON, None),
    ("truncated", encode(GOOD)[:-7], Reason.NOT_JSON, None),
    ("trailing garbage", encode(GOOD) + b"}", Reason.NOT_JSON, None),
    ("array", b"[1, 2]", Reason.NOT_OBJECT, None),
    ("null", b"null", Reason.NOT_OBJECT, None),
    ("over the limit", encode(GOOD) + b" " * MAX_LABEL_BYTES, Reason.TOO_LARGE, None),
    ("invalid UTF-8", encode(GOOD).replace(b"county", b"c\xff\xfeounty"), Reason.BAD_ENCODING,
     None),
    ("unpaired surrogate", raw('"\\ud800x"', "source"), Reason.BAD_ENCODING, "source"),
    ("unknown version", with_(schema_version=2), Reason.UNKNOWN_SCHEMA_VERSION,
     "schema_version"),
    ("version as text", with_(schema_version="1"), Reason.UNKNOWN_SCHEMA_VERSION,
     "schema_version"),
    ("no version", without("schema_version"), Reason.MISSING_FIELD, "schema_version"),
    ("missing record id", without("record_id"), Reason.MISSING_FIELD, "record_id"),
    ("missing actual", without("actual_levy_amount"), Reason.MISSING_FIELD,
     "actual_levy_amount"),
    ("missing event time", without("event_time"), Reason.MISSING_FIELD, "event_time"),
    ("unknown field", with_(assessed_value=1.0), Reason.UNKNOWN_FIELD, "assessed_value"),
    ("actual as text", with_(actual_levy_amount="3550.12"), Reason.WRONG_TYPE,
     "actual_levy_amount"),
    ("null actual", with_(actual_levy_amount=None), Reason.WRONG_TYPE, "actual_levy_amount"),
    ("bool actual", with_(actual_levy_amount=True), Reason.WRONG_TYPE, "actual_levy_amount"),
    ("null source", with_(source=None), Reason.WRONG_TYPE, "source"),
    ("number where text", with_(parcel_id=17), Reason.WRONG_TYPE, "parcel_id"),
    ("fractional year", with_(tax_year=2024.5), Reason.WRONG_TYPE, "tax_year"),
    ("NaN", raw("NaN", "actual_levy_amount"), Reason.NOT_FINITE, "actual_levy_amount"),
    ("Infinity", raw("Infinity", "actual_levy_amount"), Reason.NOT_FINITE,
     "actual_levy_amount"),
    ("overflowing literal", raw("1e400", "actual_levy_amount"), Reason.NOT_FINITE,
     "actual_levy_amount"),
    ("negative actual", with_(actual_levy_amount=-0.01), Reason.OUT_OF_RANGE,
     "actual_levy_amount"),
    ("huge actual", with_(actual_levy_amount=MONEY_MAX * 10), Reason.OUT_OF_RANGE,
     "actual_levy_amount"),
    ("huge integer", raw("1" + "0" * 400, "actual_levy_amount"), Reason.OUT_OF_RANGE,
     "actual_levy_amount"),
    ("year too early", with_(tax_year=1850), Reason.OUT_OF_RANGE, "tax_year"),
    ("year too late", with_(tax_year=2525), Reason.OUT_OF_RANGE, "tax_year"),
    ("empty record id", with_(record_id=""), Reason.TOO_SHORT, "record_id"),
    ("empty source", with_(source=""), Reason.TOO_SHORT, "source"),
    ("overlong parcel", with_(parcel_id="P" * (TEXT_MAX_CHARS + 1)), Reason.TOO_LONG,
     "parcel_id"),
    ("date only", with_(event_time="2024-06-01"), Reason.BAD_TIMESTAMP, "event_time"),
    ("not a day", with_(event_time="2023-02-29T12:00:00Z"), Reason.BAD_TIMESTAMP,
     "event_time"),
    ("epoch number", with_(event_time=1717228800), Reason.WRONG_TYPE, "event_time"),
    ("trailing newline", with_(event_time="2024-06-01T08:00:00Z\n"), Reason.BAD_TIMESTAMP,
     "event_time"),
    ("repeated actual", repeated('"actual_levy_amount": 1.0'), Reason.DUPLICATE_KEY,
     "actual_levy_amount"),
    ("repeated text", repeated('"parcel_id": "P-2"'), Reason.DUPLICATE_KEY, "parcel_id"),
    ("repeated key, escaped", repeated('"\\u0074ax_year": 2023'), Reason.DUPLICATE_KEY,
     "tax_year"),
    ("repeated key beside a missing source", repeated('"tax_year": 2023', UNSOURCED),
     Reason.DUPLICATE_KEY, "tax_year"),
    ("null source, its key's quotes alone", repeated('"source": null', UNSOURCED),
     Reason.WRONG_TYPE, "source"),
]


@pytest.mark.parametrize(("value", "reason", "field"),
                         [case[1:] for case in BAD_CASES], ids=[case[0] for case in BAD_CASES])
def test_bad_input_is_refused_with_its_reason_and_field(
        value: bytes | None, reason: Reason, field: str | None) -> None:
    with pytest.raises(RecordRejected) as caught:
        decode_levy_label(value)
    assert (caught.value.reason, caught.value.field) == (reason, field)
    assert caught.value.message


@pytest.mark.parametrize("name", [case[0] for case in BAD_CASES
                                  if case[0] != "trailing newline"
                                  and case[1] and len(case[1]) <= MAX_LABEL_BYTES])
def test_json_schema_also_refuses_each_bad_case(name: str) -> None:
    """Except the trailing newline, which Python's re lets past '$' (ECMA-262 does not)."""
    value = next(case[1] for case in BAD_CASES if case[0] == name)
    assert value is not None and not oracle_accepts(value)


GOOD_CASES = {
    "as given": GOOD,
    "no source": UNSOURCED,
    "integers for money": {**GOOD, "actual_levy_amount": 3550},
    "integral float year and version": {**GOOD, "tax_year": 2024.0, "schema_version": 1.0},
    "bounds": {**GOOD, "actual_levy_amount": MONEY_MAX, "tax_year": TAX_YEAR_MIN},
    "zero levy, last year": {**GOOD, "actual_levy_amount": 0, "tax_year": TAX_YEAR_MAX},
    "leap day and offset": {**GOOD, "event_time": "2024-02-29T23:59:59.123456789-07:00"},
    "64 non-ASCII chars": {**GOOD, "source": "\u00e9" * 64},
    "whitespace": GOOD,
    "escaped text": {**GOOD, "source": "O\u2019Brien \"North\" treasurer"},
}


@pytest.mark.parametrize("name", list(GOOD_CASES))
def test_good_input_is_accepted_by_codec_and_json_schema(name: str) -> None:
    document = GOOD_CASES[name]
    value = json.dumps(document, indent=4).encode() if name == "whitespace" else encode(document)
    assert oracle_accepts(value)
    label = decode_levy_label(value)
    assert type(label.tax_year) is int and label.tax_year == document["tax_year"]
    assert label.actual_levy_amount == document["actual_levy_amount"]
    assert label.source == document.get("source")


@pytest.mark.parametrize("name", [name for name in GOOD_CASES if name != "escaped text"])
@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "utf-8"])
def test_valid_labels_stay_on_the_fast_path(name: str, ascii_only: bool) -> None:
    """The duplicate-key proof is a quote count, not the careful parse (only an escaped quote
    in a text value, or a value msgspec is stricter about, takes the careful way)."""
    value = json.dumps(GOOD_CASES[name], ensure_ascii=ascii_only).encode()
    quotes = _QUOTES_WITH_SOURCE if "source" in GOOD_CASES[name] else _QUOTES_WITHOUT_SOURCE
    assert value.count(b'"') == quotes
    assert decode_levy_label(value).record_id == GOOD["record_id"]


def test_round_trip_keeps_every_field_and_omits_a_missing_source() -> None:
    label = decode_levy_label(encode(GOOD))
    assert decode_levy_label(encode_levy_label(label)) == label
    assert orjson.loads(encode_levy_label(label)) == GOOD
    unsourced = LevyLabel(**UNSOURCED)
    assert b"source" not in encode_levy_label(unsourced)
    assert orjson.loads(encode_levy_label(unsourced)) == UNSOURCED


def test_encoding_refuses_a_label_no_consumer_would_accept() -> None:
    with pytest.raises(RecordRejected) as caught:
        encode_levy_label(LevyLabel(**{**GOOD, "actual_levy_amount": math.nan}))
    assert caught.value.reason == Reason.WRONG_TYPE  # JSON writes NaN as null
    with pytest.raises(RecordRejected) as caught:
        encode_levy_label(LevyLabel(**{**GOOD, "event_time": "2024-06-01"}))
    assert caught.value.reason == Reason.BAD_TIMESTAMP
    assert encode_levy_label(LevyLabel(**{**GOOD, "event_time": "x"}), validate=False)


def test_batch_decode_keeps_order_and_indexes_rejections() -> None:
    second = encode({**GOOD, "record_id": "rec-2"})
    labels, rejected = decode_levy_labels([encode(GOOD), b"{", None, second,
                                           with_(tax_year=1), with_(extra=1)])
    assert [label.record_id for label in labels] == ["rec-000001", "rec-2"]
    assert [(index, rejection.reason) for index, rejection in rejected] == [
        (1, Reason.NOT_JSON), (2, Reason.EMPTY), (4, Reason.OUT_OF_RANGE),
        (5, Reason.UNKNOWN_FIELD)]


def with_repeated_key(document: dict[str, Any], name: str, value: Any) -> bytes:
    text = encode(document).decode()
    return f"{text[:-1]}, {json.dumps(name)}: {json.dumps(value)}}}".encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(label_documents().map(encode), st.binary(max_size=60), st.none(),
                          st.builds(with_repeated_key, label_documents(),
                                    st.sampled_from(FIELDS), texts)), max_size=12))
def test_batch_decode_gives_what_each_value_alone_gives(values: list[bytes | None]) -> None:
    """The batch path's column checks decide as the one-label path: the same labels in the
    same order, the same reasons at the same indices (a tombstone, bytes or a bad document
    anywhere in the batch)."""
    alone = [outcome(value) for value in values]
    labels, rejected = decode_levy_labels(values)
    assert labels == [result for result in alone if isinstance(result, LevyLabel)]
    assert [(index, rejection.reason) for index, rejection in rejected] == [
        (index, result) for index, result in enumerate(alone) if isinstance(result, Reason)]


def test_columns_are_one_typed_array_per_field() -> None:
    labels = [decode_levy_label(encode(GOOD)), decode_levy_label(encode(UNSOURCED))]
    columns = levy_labels_to_columns(labels)
    assert list(columns) == ["record_id", "parcel_id", "tax_year", "actual_levy_amount",
                             "event_time", "source"]
    assert columns["tax_year"].dtype == np.int64 and columns["tax_year"].tolist() == [2024] * 2
    assert columns["actual_levy_amount"].dtype == np.float64
    assert columns["actual_levy_amount"].tolist() == [3550.12] * 2
    assert columns["record_id"].dtype == object and columns["event_time"].dtype == object
    assert columns["event_time"].tolist() == [GOOD["event_time"]] * 2
    assert columns["source"].tolist() == ["county-treasurer", None]
    empty = levy_labels_to_columns(iter([]))
    assert all(len(column) == 0 for column in empty.values()) and len(empty) == 6


def test_python_constants_match_the_schema_file() -> None:
    properties = SCHEMA["properties"]
    assert tuple(properties) == FIELDS
    assert set(SCHEMA["required"]) == set(FIELDS) - {"source"}
    assert SCHEMA["additionalProperties"] is False
    assert properties["source"]["maxLength"] == TEXT_MAX_CHARS


@pytest.mark.parametrize("name", ["schema_version", "record_id", "parcel_id", "tax_year",
                                  "actual_levy_amount", "event_time"])
def test_fields_shared_with_the_record_have_the_records_rules(name: str) -> None:
    """Only the description may differ, and a label's actual levy is never null."""
    rules = {key: spec for key, spec in SCHEMA["properties"][name].items()
             if key != "description"}
    record_rules = {key: spec for key, spec in RECORD_SCHEMA["properties"][name].items()
                    if key != "description"}
    if name == "actual_levy_amount":
        record_rules["type"] = "number"
    assert rules == record_rules
