"""Levy record v1: the codec accepts exactly what the JSON Schema (plus its one documented
cross-field rule) accepts, names the right reason for each bad input, and round-trips."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from schemas._contract import load_schema
from schemas.errors import Reason, RecordRejected
from schemas.levy_record import (
    _QUOTES_UNLABELLED,
    FIELDS,
    LEVY_RATE_MAX,
    MAX_RECORD_BYTES,
    MONEY_MAX,
    TAX_YEAR_MAX,
    TAX_YEAR_MIN,
    TEXT_MAX_CHARS,
    LevyRecord,
    _keys_are_unique,
    decode_levy_record,
    decode_levy_records,
    encode_levy_record,
    levy_record_from_dict,
    levy_records_to_columns,
)
from schemas.timestamps import RFC3339_PATTERN

SCHEMA = load_schema("levy-record.v1.json")
VALIDATOR = Draft202012Validator(SCHEMA)

GOOD: dict[str, Any] = {
    "schema_version": 1, "record_id": "rec-000001", "parcel_id": "P-12-345-678",
    "county": "Benton", "tax_district": "BENTON-SD-17", "property_class": "residential",
    "tax_year": 2024, "assessed_value": 312500.0, "market_value": 345000.0,
    "exemption_amount": 25000.0, "levy_rate": 0.01234, "prior_levy_amount": 3421.55,
    "new_construction_value": 0.0, "event_time": "2024-03-01T12:34:56.789Z",
    "actual_levy_amount": 3550.12,
}


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) < len(pairs):
        raise ValueError("duplicate key")
    return document


def oracle_accepts(value: bytes) -> bool:
    """The contract as other teams read it: I-JSON (RFC 7493: UTF-8, no NaN/Infinity, no
    unpaired surrogates, no duplicate keys), the JSON Schema file, and the one rule the file
    documents but cannot express (exemption <= assessed)."""
    try:
        document = json.loads(value.decode("utf-8"), parse_constant=_refuse_constant,
                              object_pairs_hook=_refuse_duplicates)
        json.dumps(document, ensure_ascii=False).encode("utf-8")  # refuses lone surrogates
    except ValueError:
        return False
    if not VALIDATOR.is_valid(document):
        return False
    return document["exemption_amount"] <= document["assessed_value"]


def outcome(value: bytes) -> LevyRecord | Reason:
    try:
        return decode_levy_record(value)
    except RecordRejected as error:
        return error.reason


def encode(document: Any) -> bytes:
    return json.dumps(document, allow_nan=True).encode("utf-8")


# --- generated documents: a valid record with zero to two fields mutated ---------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
near_bounds = st.sampled_from([0, -0.0, -1e-9, -1, 1e-300, 5e-324, 0.1, 0.1000000001, 0.05,
                               MONEY_MAX, MONEY_MAX * (1 + 1e-15), 1e13, 10**12, 10**12 + 1,
                               10**30, 2024.0, 2024.5])
not_numbers = st.sampled_from([None, True, False, "1", [], {}, "NaN"])
numbers = st.one_of(finite, near_bounds, st.integers(-10**13, 10**13), not_numbers)
texts = st.one_of(st.text(max_size=TEXT_MAX_CHARS + 3), not_numbers,
                  st.integers(0, 9), st.text(min_size=60, max_size=70))
timestamps = st.one_of(
    st.datetimes(min_value=datetime(1890, 1, 1))
    .map(lambda moment: moment.isoformat() + "Z"),
    st.sampled_from(["2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2024-04-31T00:00:00Z",
                     "2024-03-01T24:00:00Z", "2024-03-01T12:00:00+05:30",
                     "2024-03-01T12:00:00.1234567891Z", "2024-03-01 12:00:00Z",
                     "2024-03-01T12:00:00", "1900-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
                     "2024-03-01T12:00:00z", ""]),
    texts)
versions = st.sampled_from([1, 1.0, 2, 0, -1, True, "1", None, 1.5])
field_values = {name: numbers for name in FIELDS}
field_values.update(dict.fromkeys(
    ["record_id", "parcel_id", "county", "tax_district", "property_class"], texts))
field_values["event_time"] = timestamps
field_values["schema_version"] = versions
field_values["tax_year"] = st.one_of(
    st.integers(TAX_YEAR_MIN - 5, TAX_YEAR_MAX + 5), numbers,
    st.integers(TAX_YEAR_MIN, TAX_YEAR_MAX).map(float))


@st.composite
def levy_documents(draw: st.DrawFn) -> dict[str, Any]:
    document = dict(GOOD)
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        name = draw(st.sampled_from([*FIELDS, "extra"]))
        action = draw(st.sampled_from(["set", "set", "set", "drop"]))
        if action == "drop":
            document.pop(name, None)
        else:
            document[name] = draw(field_values.get(name, numbers))
    return document


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levy_documents())
def test_codec_accepts_exactly_what_the_json_schema_accepts(document: dict[str, Any]) -> None:
    value = encode(document)
    result = outcome(value)
    assert isinstance(result, LevyRecord) == oracle_accepts(value), (document, result)
    if isinstance(result, LevyRecord):
        for name in FIELDS:
            assert getattr(result, name) == document.get(name)


@settings(max_examples=300, deadline=None)
@given(levy_documents())
def test_fast_and_careful_paths_agree(document: dict[str, Any]) -> None:
    """The msgspec path and the hand-written checks give the same record or the same reason."""
    try:
        careful: LevyRecord | Reason = levy_record_from_dict(json.loads(encode(document)))
    except RecordRejected as error:
        careful = error.reason
    assert outcome(encode(document)) == careful


@settings(max_examples=300, deadline=None)
@given(levy_documents(), st.data())
def test_a_repeated_key_is_refused_whatever_its_values(document: dict[str, Any],
                                                       data: st.DataObject) -> None:
    """Parsers disagree on which of two equal keys wins; the codec accepts neither."""
    assume(isinstance(outcome(encode(document)), LevyRecord))
    name = data.draw(st.sampled_from(sorted(document)))
    repeat = data.draw(st.one_of(st.just(document[name]), field_values.get(name, numbers)))
    text = encode(document).decode()
    fragment = f"{json.dumps(name)}: {json.dumps(repeat, allow_nan=True)}"
    first = data.draw(st.booleans())  # the repeat before or after the original
    value = (f"{{{fragment}, {text[1:]}" if first else f"{text[:-1]}, {fragment}}}").encode()
    assert outcome(value) == Reason.DUPLICATE_KEY
    assert not oracle_accepts(value)
    with pytest.raises(RecordRejected) as caught:
        decode_levy_record(value)
    assert caught.value.field == name


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 levy_documents().map(lambda d: encode(d)[: len(encode(d)) // 2])))
def test_arbitrary_bytes_never_raise_anything_but_a_rejection(value: bytes) -> None:
    result = outcome(value)
    assert isinstance(result, Reason)


# --- hand-written cases ------------------------------------------------------------------

def with_(**changes: Any) -> bytes:
    return encode({**GOOD, **changes})


def without(name: str) -> bytes:
    return encode({key: item for key, item in GOOD.items() if key != name})


def repeated(fragment: str, document: dict[str, Any] = GOOD) -> bytes:
    """``document`` with ``fragment`` (``"key": value``, verbatim) as its first member."""
    return ("{" + fragment + ", " + encode(document).decode()[1:]).encode()


UNLABELLED = {key: item for key, item in GOOD.items() if key != "actual_levy_amount"}


def raw(fragment: str, field: str) -> bytes:
    """GOOD with one field's JSON text replaced verbatim (for what json.dumps will not write)."""
    text = encode(GOOD).decode()
    start = text.index(f'"{field}": ') + len(f'"{field}": ')
    end = text.index(",", start) if "," in text[start:] else text.index("}", start)
    return (text[:start] + fragment + text[end:]).encode()


BAD_CASES: list[tuple[str, bytes | None, Reason, str | None]] = [
    ("tombstone", None, Reason.EMPTY, None),
    ("zero bytes", b"", Reason.EMPTY, None),
    ("not json", b"assessed_value=1", Reason.NOT_JSON, None),
    ("truncated", encode(GOOD)[:-7], Reason.NOT_JSON, None),
    ("trailing garbage", encode(GOOD) + b"}", Reason.NOT_JSON, None),
    ("array", b"[1, 2]", Reason.NOT_OBJECT, None),
    ("string", b'"levy"', Reason.NOT_OBJECT, None),
    ("null", b"null", Reason.NOT_OBJECT, None),
    ("1 MiB payload", b" " * (1024 * 1024) + encode(GOOD), Reason.TOO_LARGE, None),
    ("just over the limit", encode(GOOD) + b" " * MAX_RECORD_BYTES, Reason.TOO_LARGE, None),
    ("invalid UTF-8", encode(GOOD).replace(b"Benton", b"Bent\xff\xfen"), Reason.BAD_ENCODING,
     None),
    ("latin-1 text", encode(GOOD).replace(b"Benton", "Benton\u00e9".encode("latin-1")),
     Reason.BAD_ENCODING, None),
    ("unpaired surrogate", raw('"\\ud800x"', "county"), Reason.BAD_ENCODING, "county"),
    ("unknown version", with_(schema_version=2), Reason.UNKNOWN_SCHEMA_VERSION,
     "schema_version"),
    ("version as text", with_(schema_version="1"), Reason.UNKNOWN_SCHEMA_VERSION,
     "schema_version"),
    ("version true", with_(schema_version=True), Reason.UNKNOWN_SCHEMA_VERSION,
     "schema_version"),
    ("no version", without("schema_version"), Reason.MISSING_FIELD, "schema_version"),
    ("missing parcel", without("parcel_id"), Reason.MISSING_FIELD, "parcel_id"),
    ("missing rate", without("levy_rate"), Reason.MISSING_FIELD, "levy_rate"),
    ("unknown field", with_(owner_name="A. Smith"), Reason.UNKNOWN_FIELD, "owner_name"),
    ("rate as text", with_(levy_rate="0.0125"), Reason.WRONG_TYPE, "levy_rate"),
    ("bool where number", with_(assessed_value=True), Reason.WRONG_TYPE, "assessed_value"),
    ("null where number", with_(market_value=None), Reason.WRONG_TYPE, "market_value"),
    ("number where text", with_(county=17), Reason.WRONG_TYPE, "county"),
    ("fractional year", with_(tax_year=2024.5), Reason.WRONG_TYPE, "tax_year"),
    ("object as actual", with_(actual_levy_amount={}), Reason.WRONG_TYPE,
     "actual_levy_amount"),
    ("NaN", raw("NaN", "assessed_value"), Reason.NOT_FINITE, "assessed_value"),
    ("Infinity", raw("Infinity", "market_value"), Reason.NOT_FINITE, "market_value"),
    ("-Infinity", raw("-Infinity", "levy_rate"), Reason.NOT_FINITE, "levy_rate"),
    ("overflowing literal", raw("1e400", "prior_levy_amount"), Reason.NOT_FINITE,
     "prior_levy_amount"),
    ("negative assessed", with_(assessed_value=-1.0), Reason.OUT_OF_RANGE, "assessed_value"),
    ("negative exemption", with_(exemption_amount=-0.01), Reason.OUT_OF_RANGE,
     "exemption_amount"),
    ("negative actual", with_(actual_levy_amount=-5), Reason.OUT_OF_RANGE,
     "actual_levy_amount"),
    ("zero rate", with_(levy_rate=0), Reason.OUT_OF_RANGE, "levy_rate"),
    ("rate in mills", with_(levy_rate=12.5), Reason.OUT_OF_RANGE, "levy_rate"),
    ("rate just over", with_(levy_rate=0.1000001), Reason.OUT_OF_RANGE, "levy_rate"),
    ("huge money", with_(market_value=MONEY_MAX * 10), Reason.OUT_OF_RANGE, "market_value"),
    ("huge integer", raw("1" + "0" * 400, "new_construction_value"), Reason.OUT_OF_RANGE,
     "new_construction_value"),
    ("year too early", with_(tax_year=1850), Reason.OUT_OF_RANGE, "tax_year"),
    ("year too late", with_(tax_year=2525), Reason.OUT_OF_RANGE, "tax_year"),
    ("empty id", with_(record_id=""), Reason.TOO_SHORT, "record_id"),
    ("overlong parcel", with_(parcel_id="P" * (TEXT_MAX_CHARS + 1)), Reason.TOO_LONG,
     "parcel_id"),
    ("overlong class", with_(property_class="x" * 500), Reason.TOO_LONG, "property_class"),
    ("date only", with_(event_time="2024-03-01"), Reason.BAD_TIMESTAMP, "event_time"),
    ("no zone", with_(event_time="2024-03-01T12:00:00"), Reason.BAD_TIMESTAMP, "event_time"),
    ("not a day", with_(event_time="2023-02-29T12:00:00Z"), Reason.BAD_TIMESTAMP,
     "event_time"),
    ("hour 24", with_(event_time="2024-03-01T24:00:00Z"), Reason.BAD_TIMESTAMP, "event_time"),
    ("epoch number", with_(event_time=1709294400), Reason.WRONG_TYPE, "event_time"),
    ("trailing newline", with_(event_time="2024-03-01T12:00:00Z\n"), Reason.BAD_TIMESTAMP,
     "event_time"),
    ("repeated key, first out of range", repeated('"assessed_value": -5'),
     Reason.DUPLICATE_KEY, "assessed_value"),
    ("repeated key, both valid", repeated('"assessed_value": 1.0'), Reason.DUPLICATE_KEY,
     "assessed_value"),
    ("repeated text", repeated('"county": "Lincoln"'), Reason.DUPLICATE_KEY, "county"),
    ("repeated key, escaped", repeated('"\\u0061ssessed_value": 1.0'), Reason.DUPLICATE_KEY,
     "assessed_value"),
    ("repeated key beside a missing actual", repeated('"levy_rate": 0.02', UNLABELLED),
     Reason.DUPLICATE_KEY, "levy_rate"),
    ("repeated key, a text value naming the actual", repeated(
        '"levy_rate": 0.02', {**UNLABELLED, "county": "actual_levy_amount"}),
     Reason.DUPLICATE_KEY, "levy_rate"),
    ("repeated null actual", repeated('"actual_levy_amount": null',
                                      {**GOOD, "actual_levy_amount": None}),
     Reason.DUPLICATE_KEY, "actual_levy_amount"),
    ("exemption above assessed", with_(exemption_amount=312500.01), Reason.INCONSISTENT,
     "exemption_amount"),
]


@pytest.mark.parametrize(("value", "reason", "field"),
                         [case[1:] for case in BAD_CASES], ids=[case[0] for case in BAD_CASES])
def test_bad_input_is_refused_with_its_reason_and_field(
        value: bytes | None, reason: Reason, field: str | None) -> None:
    with pytest.raises(RecordRejected) as caught:
        decode_levy_record(value)
    assert (caught.value.reason, caught.value.field) == (reason, field)
    assert caught.value.message


@pytest.mark.parametrize("name", [case[0] for case in BAD_CASES
                                  if case[0] not in ("trailing newline", "exemption above assessed")
                                  and case[1] and len(case[1]) <= MAX_RECORD_BYTES])
def test_json_schema_also_refuses_each_bad_case(name: str) -> None:
    """Except the two rules stated beside the schema: exemption <= assessed (cross-field) and
    the trailing newline, which Python's re lets past '$' but ECMA-262 regexes do not."""
    value = next(case[1] for case in BAD_CASES if case[0] == name)
    assert not oracle_accepts(value)


def test_the_documented_extra_rules_are_the_only_gaps_to_json_schema() -> None:
    over_exempt = with_(exemption_amount=312500.01)
    assert VALIDATOR.is_valid(json.loads(over_exempt))
    assert outcome(over_exempt) == Reason.INCONSISTENT
    assert decode_levy_record(with_(exemption_amount=312500.0)).exemption_amount == 312500.0


GOOD_CASES = {
    "as given": GOOD,
    "no actual levy": {k: v for k, v in GOOD.items() if k != "actual_levy_amount"},
    "null actual levy": {**GOOD, "actual_levy_amount": None},
    "integers for money": {**GOOD, "assessed_value": 300000, "exemption_amount": 0},
    "integral float year and version": {**GOOD, "tax_year": 2024.0, "schema_version": 1.0},
    "bounds": {**GOOD, "levy_rate": LEVY_RATE_MAX, "assessed_value": MONEY_MAX,
               "exemption_amount": MONEY_MAX, "new_construction_value": 0, "tax_year": 1900},
    "leap day and offset": {**GOOD, "event_time": "2024-02-29T23:59:59.123456789-07:00"},
    "year 2000 leap day": {**GOOD, "event_time": "2000-02-29T00:00:00Z"},
    "new property class": {**GOOD, "property_class": "data-center"},
    "64 non-ASCII chars": {**GOOD, "county": "\u00e9" * 64},
    "whitespace": GOOD,
    "null actual, spaced": {**GOOD, "actual_levy_amount": None},
    "escaped text": {**GOOD, "county": "O\u2019Brien \"North\""},
}


@pytest.mark.parametrize("name", list(GOOD_CASES))
def test_good_input_is_accepted_by_codec_and_json_schema(name: str) -> None:
    document = GOOD_CASES[name]
    value = json.dumps(document, indent=4).encode() if name == "whitespace" else encode(document)
    if name == "null actual, spaced":
        value = value.replace(b'"actual_levy_amount": null', b'"actual_levy_amount" :\tnull')
    assert oracle_accepts(value)
    record = decode_levy_record(value)
    assert record.tax_year == 2024 or record.tax_year == document["tax_year"]
    assert type(record.tax_year) is int
    assert record.actual_levy_amount == document.get("actual_levy_amount")


def test_round_trip_keeps_every_field_and_omits_a_missing_actual() -> None:
    record = decode_levy_record(encode(GOOD))
    assert decode_levy_record(encode_levy_record(record)) == record
    assert orjson.loads(encode_levy_record(record)) == GOOD
    unlabelled = LevyRecord(**{**GOOD, "actual_levy_amount": None})
    assert b"actual_levy_amount" not in encode_levy_record(unlabelled)
    assert decode_levy_record(encode_levy_record(unlabelled)) == unlabelled


def test_encoding_refuses_a_record_no_consumer_would_accept() -> None:
    with pytest.raises(RecordRejected) as caught:
        encode_levy_record(LevyRecord(**{**GOOD, "assessed_value": math.nan}))
    assert caught.value.reason == Reason.WRONG_TYPE  # JSON writes NaN as null
    with pytest.raises(RecordRejected) as caught:
        encode_levy_record(LevyRecord(**{**GOOD, "exemption_amount": 1e9}))
    assert caught.value.reason == Reason.INCONSISTENT
    assert encode_levy_record(LevyRecord(**{**GOOD, "exemption_amount": 1e9}), validate=False)


def test_batch_decode_keeps_order_and_indexes_rejections() -> None:
    second = encode({**GOOD, "record_id": "rec-2"})
    records, rejected = decode_levy_records([encode(GOOD), b"{", None, second, with_(tax_year=1)])
    assert [record.record_id for record in records] == ["rec-000001", "rec-2"]
    assert [(index, rejection.reason) for index, rejection in rejected] == [
        (1, Reason.NOT_JSON), (2, Reason.EMPTY), (4, Reason.OUT_OF_RANGE)]


def test_columns_are_one_typed_array_per_field() -> None:
    labelled = decode_levy_record(encode(GOOD))
    unlabelled = decode_levy_record(without("actual_levy_amount"))
    columns = levy_records_to_columns([labelled, unlabelled])
    assert list(columns) == list(FIELDS)
    assert columns["assessed_value"].dtype == np.float64
    assert columns["tax_year"].tolist() == [2024.0, 2024.0]
    assert columns["county"].dtype == object
    assert columns["county"].tolist() == ["Benton", "Benton"]
    assert columns["actual_levy_amount"][0] == 3550.12
    assert math.isnan(columns["actual_levy_amount"][1])
    empty = levy_records_to_columns([])
    assert all(len(column) == 0 for column in empty.values()) and len(empty) == len(FIELDS)


def test_python_constants_match_the_schema_file() -> None:
    properties = SCHEMA["properties"]
    assert tuple(properties) == FIELDS
    assert set(SCHEMA["required"]) == set(FIELDS) - {"actual_levy_amount"}
    assert properties["event_time"]["pattern"] == RFC3339_PATTERN
    assert properties["levy_rate"]["maximum"] == LEVY_RATE_MAX
    assert properties["assessed_value"]["maximum"] == MONEY_MAX
    assert properties["record_id"]["maxLength"] == TEXT_MAX_CHARS
    assert (properties["tax_year"]["minimum"], properties["tax_year"]["maximum"]) == (
        TAX_YEAR_MIN, TAX_YEAR_MAX)
    assert all(spec.get("description") for spec in properties.values())
    assert SCHEMA["additionalProperties"] is False


@pytest.mark.parametrize("name", [name for name in GOOD_CASES if name != "escaped text"])
@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "utf-8"])
def test_valid_records_stay_on_the_fast_path(name: str, ascii_only: bool) -> None:
    """The duplicate-key proof costs a quote count, not the careful parse (only an escaped
    quote in a text value takes the careful way)."""
    value = json.dumps(GOOD_CASES[name], ensure_ascii=ascii_only).encode()
    if name == "null actual, spaced":
        value = value.replace(b'"actual_levy_amount": null', b'"actual_levy_amount" :\tnull')
    record = decode_levy_record(value)
    quotes = value.count(b'"')
    assert quotes == _QUOTES_UNLABELLED or _keys_are_unique(value, record, quotes)
