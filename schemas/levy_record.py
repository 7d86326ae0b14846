"""Levy record v1: the typed record, its codec and the column view the detectors consume.

The contract is ``levy-record.v1.json``; this module enforces the same rules. Decoding has two
paths that must agree (tests check they do):

* the fast path: msgspec decodes and checks types and ranges in C, straight into the frozen
  ``LevyRecord`` struct; two rules it cannot express (the timestamp's calendar pattern and
  exemption <= assessed) follow in Python, and so does the proof that no key came twice
  (msgspec, like most parsers, keeps the last of duplicated keys);
* the careful path, taken only when the fast path refuses: hand-written checks on the parsed
  object, in a fixed order, that name the reason code and the field. It is the authority on
  *why*; it also accepts the few valid inputs msgspec is stricter about (``"tax_year": 2024.0``
  is an integer to JSON Schema).

bench/bench_codec.py measured this against orjson + hand-written checks, orjson + fastjsonschema
and pydantic v2; see bench/RESULTS-codec.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np

from schemas._json import json_type_name, parse_json_object
from schemas.errors import Reason, RecordRejected, Rejection, reject
from schemas.timestamps import TIMESTAMP as _TIMESTAMP

SCHEMA_VERSION: Final = 1
# A valid compact record is under 3 KiB; 64 KiB leaves room for whitespace and escapes while
# refusing garbage (a 1 MiB blob) before any parsing work is spent on it.
MAX_RECORD_BYTES: Final = 64 * 1024
MONEY_MAX: Final = 1e12  # a trillion dollars: no single parcel comes near it
LEVY_RATE_MAX: Final = 0.1  # 100 mills; real combined rates are 0.5% to 4%
TAX_YEAR_MIN: Final = 1900
TAX_YEAR_MAX: Final = 2100
TEXT_MAX_CHARS: Final = 64


Money = Annotated[float, msgspec.Meta(ge=0, le=MONEY_MAX)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=TEXT_MAX_CHARS)]


class LevyRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True,
                 gc=False):
    """One parcel's levy facts (levy record v1). Money in dollars; ``levy_rate`` is a fraction
    of taxable value. ``actual_levy_amount`` is None until the bill is final."""

    schema_version: Literal[1]
    record_id: Text
    parcel_id: Text
    county: Text
    tax_district: Text
    property_class: Text
    tax_year: Annotated[int, msgspec.Meta(ge=TAX_YEAR_MIN, le=TAX_YEAR_MAX)]
    assessed_value: Money
    market_value: Money
    exemption_amount: Money
    levy_rate: Annotated[float, msgspec.Meta(gt=0, le=LEVY_RATE_MAX)]
    prior_levy_amount: Money
    new_construction_value: Money
    event_time: str
    actual_levy_amount: Money | None = None


FIELDS: Final[tuple[str, ...]] = LevyRecord.__struct_fields__
REQUIRED_FIELDS: Final = FIELDS[:-1]
TEXT_FIELDS: Final = ("record_id", "parcel_id", "county", "tax_district", "property_class",
                      "event_time")
NUMERIC_FIELDS: Final = tuple(name for name in FIELDS if name not in TEXT_FIELDS)

_DECODER = msgspec.json.Decoder(LevyRecord)
_ENCODER = msgspec.json.Encoder()
_FAST_PATH_REFUSALS = (msgspec.DecodeError, msgspec.ValidationError, ValueError)


def decode_levy_record(value: bytes | None) -> LevyRecord:
    """Decode and validate one Kafka message value; raise ``RecordRejected`` if it breaks the
    contract. Never raises anything else for any input bytes."""
    if value is not None and len(value) <= MAX_RECORD_BYTES:
        try:
            record = _DECODER.decode(value)
        except _FAST_PATH_REFUSALS:
            pass
        else:
            if (record.exemption_amount <= record.assessed_value
                    and _TIMESTAMP.fullmatch(record.event_time) is not None
                    and ((quotes := value.count(b'"')) == _QUOTES_UNLABELLED
                         or _keys_are_unique(value, record, quotes))):
                return record
    return levy_record_from_dict(parse_json_object(value, MAX_RECORD_BYTES))


# Quote bytes in a record: two per key and per text value (msgspec checked every occurrence of a
# key, so text fields hold strings and the rest numbers or null), plus one per escaped quote.
# Exactly the 13 required keys and the 6 text values means no key came twice: msgspec, like
# most parsers, would have kept the last of two quietly.
_QUOTES_UNLABELLED: Final = 2 * (len(REQUIRED_FIELDS) + len(TEXT_FIELDS))
_ACTUAL_KEY: Final = re.compile(rb'"actual_levy_amount"[ \t\n\r]*:')


def _keys_are_unique(value: bytes, record: LevyRecord, quotes: int) -> bool:
    """Whether ``value`` (decoded into ``record``, holding ``quotes`` quote bytes, not exactly
    those of the 13 required keys and 6 text values) names each key once. Two more quotes are
    the actual levy's key, or, when its value is null, possibly a repeated key. False (an
    escaped quote, or a repeat) sends the payload the careful way, which names the key."""
    return quotes == _QUOTES_UNLABELLED + 2 and (record.actual_levy_amount is not None
                                                 or _ACTUAL_KEY.search(value) is not None)


def decode_levy_records(
    values: Sequence[bytes | None],
) -> tuple[list[LevyRecord], list[tuple[int, Rejection]]]:
    """Decode a batch: the accepted records in order, and (index in ``values``, rejection)
    for each refused one."""
    records: list[LevyRecord] = []
    rejected: list[tuple[int, Rejection]] = []
    for index, value in enumerate(values):
        try:
            records.append(decode_levy_record(value))
        except RecordRejected as error:
            rejected.append((index, error.rejection))
    return records, rejected


def encode_levy_record(record: LevyRecord, *, validate: bool = True) -> bytes:
    """Compact UTF-8 JSON for ``record`` (``actual_levy_amount`` omitted when None).

    With ``validate`` the bytes are decoded again, so nothing leaves that a consumer would
    refuse (a NaN, which JSON writes as null, or an exemption above the assessed value)."""
    data = _ENCODER.encode(record)
    if validate:
        decode_levy_record(data)
    return data


def levy_record_from_dict(document: Mapping[str, Any]) -> LevyRecord:
    """Validate an already-parsed object with the careful checks; raise ``RecordRejected``."""
    _check_version(document)
    _check_field_names(document)
    values = {name: _FIELD_CHECKS[name](name, document[name])
              for name in FIELDS if name in document}
    if values["exemption_amount"] > values["assessed_value"]:
        raise reject(Reason.INCONSISTENT, "exemption_amount",
                     f"exemption_amount {values['exemption_amount']!r} exceeds "
                     f"assessed_value {values['assessed_value']!r}")
    return LevyRecord(**values)


def levy_records_to_columns(records: Iterable[LevyRecord]) -> dict[str, np.ndarray]:
    """One array per field, in field order: float64 for numbers (NaN where
    ``actual_levy_amount`` is None), object arrays of str for strings."""
    records = records if isinstance(records, list) else list(records)
    count = len(records)
    columns: dict[str, np.ndarray] = {}
    for name in FIELDS:  # one pass per field: C-level attribute access, no per-row tuples
        values = map(attrgetter(name), records)
        if name == "actual_levy_amount":
            columns[name] = np.array([np.nan if v is None else v for v in values],
                                     dtype=np.float64)
        elif name in NUMERIC_FIELDS:
            columns[name] = np.fromiter(values, dtype=np.float64, count=count)
        else:
            column = np.empty(count, dtype=object)
            column[:] = list(values)
            columns[name] = column
    return columns


# --- the careful checks --------------------------------------------------------------------

def _check_version(document: Mapping[str, Any]) -> None:
    if "schema_version" not in document:
        raise reject(Reason.MISSING_FIELD, "schema_version", "required field is absent")
    version = document["schema_version"]
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise reject(Reason.UNKNOWN_SCHEMA_VERSION, "schema_version",
                     f"this consumer reads version {SCHEMA_VERSION}, got {version!r}")


def _check_field_names(document: Mapping[str, Any]) -> None:
    unknown = sorted(set(document) - set(FIELDS))
    if unknown:
        raise reject(Reason.UNKNOWN_FIELD, unknown[0],
                     f"field not in levy record v1 (unknown: {', '.join(unknown[:5])})")
    for name in REQUIRED_FIELDS:
        if name not in document:
            raise reject(Reason.MISSING_FIELD, name, "required field is absent")


def _number(name: str, value: Any) -> float | int:
    # bool is an int subclass in Python but not a number in JSON
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise reject(Reason.WRONG_TYPE, name, f"expected a number, got {json_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise reject(Reason.NOT_FINITE, name, f"{value!r} is not a finite number")
    return value


def _bounded(low: float, high: float, low_inclusive: bool = True) -> Callable[[str, Any], float]:
    shown = f"{'[' if low_inclusive else '('}{low:g}, {high:g}]"

    def check(name: str, value: Any) -> float:
        number = _number(name, value)
        above_low = number >= low if low_inclusive else number > low
        if not (above_low and number <= high):  # compared before float(): 10**400 is an int
            raise reject(Reason.OUT_OF_RANGE, name, f"{number!r} is outside {shown}")
        return float(number)

    return check


def _optional_money(name: str, value: Any) -> float | None:
    return None if value is None else _money(name, value)


def _tax_year(name: str, value: Any) -> int:
    number = _number(name, value)
    if isinstance(number, float) and not number.is_integer():
        raise reject(Reason.WRONG_TYPE, name, f"expected an integer, got {number!r}")
    if not TAX_YEAR_MIN <= number <= TAX_YEAR_MAX:
        raise reject(Reason.OUT_OF_RANGE, name,
                     f"{number!r} is outside [{TAX_YEAR_MIN}, {TAX_YEAR_MAX}]")
    return int(number)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise reject(Reason.WRONG_TYPE, name, f"expected a string, got {json_type_name(value)}")
    if not value:
        raise reject(Reason.TOO_SHORT, name, "must not be empty")
    if len(value) > TEXT_MAX_CHARS:
        raise reject(Reason.TOO_LONG, name,
                     f"{len(value)} characters, the limit is {TEXT_MAX_CHARS}")
    return value


def _timestamp(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise reject(Reason.WRONG_TYPE, name, f"expected a string, got {json_type_name(value)}")
    if _TIMESTAMP.fullmatch(value) is None:
        raise reject(Reason.BAD_TIMESTAMP, name,
                     f"{value[:40]!r} is not an RFC 3339 date-time like 2024-03-01T12:00:00Z")
    return value


def _schema_version(name: str, value: Any) -> int:
    return SCHEMA_VERSION  # already checked by _check_version


_money = _bounded(0, MONEY_MAX)
_FIELD_CHECKS: Final[dict[str, Callable[[str, Any], Any]]] = {
    "schema_version": _schema_version,
    **dict.fromkeys(TEXT_FIELDS, _text),
    "event_time": _timestamp,
    "tax_year": _tax_year,
    **dict.fromkeys(("assessed_value", "market_value", "exemption_amount", "prior_levy_amount",
                     "new_construction_value"), _money),
    "levy_rate": _bounded(0, LEVY_RATE_MAX, low_inclusive=False),
    "actual_levy_amount": _optional_money,
}
