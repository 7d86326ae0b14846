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

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import compress, repeat
from operator import attrgetter, is_not
from typing import Annotated, Any, Final, Literal, cast

import msgspec
import numpy as np

from schemas import _rules as rules
from schemas._json import FAST_PATH_REFUSALS, decode_each, parse_json_object
from schemas._rules import MONEY_BOUNDS, Money, TaxYear, Text
from schemas._rules import MONEY_MAX as MONEY_MAX
from schemas._rules import TAX_YEAR_MAX as TAX_YEAR_MAX
from schemas._rules import TAX_YEAR_MIN as TAX_YEAR_MIN
from schemas._rules import TEXT_MAX_CHARS as TEXT_MAX_CHARS
from schemas.errors import Reason, RecordRejected, Rejection, reject
from schemas.timestamps import RFC3339_PATTERN
from schemas.timestamps import TIMESTAMP as _TIMESTAMP

SCHEMA_VERSION: Final = 1
# A valid compact record is under 3 KiB; the shared limit (64 KiB) leaves room for whitespace.
MAX_RECORD_BYTES: Final = rules.MAX_PAYLOAD_BYTES
LEVY_RATE_MAX: Final = 0.1  # 100 mills; real combined rates are 0.5% to 4%


MONEY_FIELDS: Final = ("assessed_value", "market_value", "exemption_amount", "prior_levy_amount",
                        "new_construction_value", "actual_levy_amount")
# (low, high, low inclusive) per bounded number: the careful checks and the column screen read
# this table, and the struct below states the same bounds for msgspec (a test ties them).
NUMBER_BOUNDS: Final[dict[str, tuple[float, float, bool]]] = {
    **dict.fromkeys(MONEY_FIELDS, MONEY_BOUNDS),
    "levy_rate": (0.0, LEVY_RATE_MAX, False),
}


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
    tax_year: TaxYear
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


def decode_levy_record(value: bytes | None) -> LevyRecord:
    """Decode and validate one Kafka message value; raise ``RecordRejected`` if it breaks the
    contract. Never raises anything else for any input bytes."""
    if value is not None and len(value) <= MAX_RECORD_BYTES:
        try:
            record = _DECODER.decode(value)
        except FAST_PATH_REFUSALS:
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


def decode_levy_batch(
    values: Sequence[bytes | None],
) -> tuple[dict[str, np.ndarray], np.ndarray, list[tuple[int, Rejection]]]:
    """Decode a batch straight into columns: (``levy_records_to_columns`` of the accepted
    records, their indices in ``values`` as int64, (index, rejection) per refused one).

    The same rules and reasons as ``decode_levy_record``, per batch instead of per record: each
    value is still decoded on its own (joining values into one JSON array would let a value
    holding two objects, or a string running over a separator, move records between offsets),
    but the Python-side checks run on whole columns and the careful path only sees the values
    a check flagged."""
    if None in values:
        values = [b"" if value is None else value for value in values]  # both are EMPTY
    count = len(values)
    records, decoded = _decode_each(values)
    if decoded.all():
        # every value decoded, so none is a tombstone (None)
        passed = _pass_fast_checks(columns := levy_records_to_columns(records),
                                   cast(Sequence[bytes], values))
    else:
        records = list(compress(records, decoded))
        columns = levy_records_to_columns(records)
        passed = np.zeros(count, dtype=bool)
        passed[decoded] = _pass_fast_checks(
            columns, cast(list[bytes], list(compress(values, decoded))))
    careful_records: dict[int, LevyRecord] = {}
    rejected: list[tuple[int, Rejection]] = []
    for index in np.flatnonzero(~passed).tolist():
        try:
            careful_records[index] = levy_record_from_dict(
                parse_json_object(values[index], MAX_RECORD_BYTES))
        except RecordRejected as error:
            rejected.append((index, error.rejection))
    indices = np.flatnonzero(passed)
    if len(indices) < len(records):
        fast_kept = passed[decoded]
        columns = {name: column[fast_kept] for name, column in columns.items()}
    if careful_records:  # valid input msgspec is stricter about, e.g. "tax_year": 2024.0
        careful_columns = levy_records_to_columns(list(careful_records.values()))
        indices = np.concatenate([indices, np.fromiter(careful_records, dtype=np.int64)])
        order = np.argsort(indices, kind="stable")
        columns = {name: np.concatenate([column, careful_columns[name]])[order]
                   for name, column in columns.items()}
        indices = indices[order]
    return columns, indices.astype(np.int64), rejected


def _decode_each(values: Sequence[bytes | None]) -> tuple[list[Any], np.ndarray]:
    """``decode_each``'s records and a mask of the decoded ones."""
    records = decode_each(_DECODER, values, MAX_RECORD_BYTES)
    return records, np.fromiter(map(is_not, records, repeat(None)), dtype=bool,
                                count=len(records))


def _pass_fast_checks(columns: dict[str, np.ndarray], values: Sequence[bytes]) -> np.ndarray:
    """Per decoded record, whether it passes what msgspec cannot check (the rules of
    ``decode_levy_record``, on columns): exemption <= assessed, the timestamp pattern, and
    the quote count proving no key came twice."""
    count = len(values)
    if not count:
        return np.zeros(0, dtype=bool)
    quotes = np.fromiter(map(bytes.count, values, repeat(b'"')), dtype=np.int64, count=count)
    timely = np.fromiter(map(bool, map(_TIMESTAMP.fullmatch, columns["event_time"])),
                         dtype=bool, count=count)
    passed = (columns["exemption_amount"] <= columns["assessed_value"]) & timely
    labelled = ~np.isnan(columns["actual_levy_amount"])
    unique_keys = (quotes == _QUOTES_UNLABELLED) | ((quotes == _QUOTES_UNLABELLED + 2) & labelled)
    # An unlabelled record with two more quotes: its null actual key, or a repeated key
    # (``_keys_are_unique``). Anything else goes the careful way, which names the key.
    doubtful = np.flatnonzero(passed & ~unique_keys & (quotes == _QUOTES_UNLABELLED + 2))
    unique_keys[doubtful] = np.fromiter(
        map(bool, map(_ACTUAL_KEY.search, map(values.__getitem__, doubtful.tolist()))),
        dtype=bool, count=len(doubtful))
    fast: np.ndarray = passed & unique_keys
    return fast


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
        if name == "actual_levy_amount":  # None becomes NaN
            columns[name] = np.array(list(values), dtype=np.float64)
        elif name in NUMERIC_FIELDS:
            columns[name] = np.fromiter(values, dtype=np.float64, count=count)
        else:
            columns[name] = np.array(list(values), dtype=object)
    return columns


# --- the careful checks (the field rules shared with the label are in schemas._rules) -----

def _check_version(document: Mapping[str, Any]) -> None:
    rules.check_version(document, SCHEMA_VERSION)


def _check_field_names(document: Mapping[str, Any]) -> None:
    rules.check_field_names(document, FIELDS, REQUIRED_FIELDS, "levy record v1")


def _schema_version(name: str, value: Any) -> int:
    return SCHEMA_VERSION  # already checked by _check_version


_FIELD_CHECKS: Final[dict[str, Callable[[str, Any], Any]]] = {
    "schema_version": _schema_version,
    **dict.fromkeys(TEXT_FIELDS, rules.text),
    "event_time": rules.timestamp,
    "tax_year": rules.tax_year,
    **{name: rules.bounded(*bounds) for name, bounds in NUMBER_BOUNDS.items()},
    "actual_levy_amount": rules.optional_money,
}


# --- the column screen ---------------------------------------------------------------------

def rows_breaking_rules(columns: Mapping[str, Any]) -> np.ndarray:
    """Which rows of typed columns the codec would refuse, as a boolean mask: the rules above,
    vectorised, for data that arrives as columns (a file) rather than JSON.

    ``columns`` holds every field: float64 arrays for numbers (NaN where the value is null,
    which ``actual_levy_amount`` alone may be); for text, object arrays of str or None, or
    Arrow string arrays or dictionaries of them (checked by Arrow's kernels, the same pattern
    in RE2; a dictionary's values once each). It only says *which* rows; the codec, the
    authority on *why*, names the reason for a flagged row."""
    count = len(columns["schema_version"])
    bad = np.zeros(count, dtype=bool)
    for name in TEXT_FIELDS:
        bad |= _text_breaks(columns[name], count, name == "event_time")
    with np.errstate(invalid="ignore"):  # NaN compares False: a null breaks every bound
        for name, (low, high, low_inclusive) in NUMBER_BOUNDS.items():
            numbers = columns[name]
            inside = ((numbers >= low) if low_inclusive else (numbers > low)) & (numbers <= high)
            bad |= ~(inside | np.isnan(numbers)) if name == "actual_levy_amount" else ~inside
        year = columns["tax_year"]
        bad |= ~((year >= TAX_YEAR_MIN) & (year <= TAX_YEAR_MAX) & (year % 1 == 0))
        bad |= columns["schema_version"] != SCHEMA_VERSION
        bad |= columns["exemption_amount"] > columns["assessed_value"]
    return bad


def _text_breaks(column: Any, count: int, timestamp: bool) -> np.ndarray:
    """Rows whose value is no string, is empty or too long, or (``timestamp``) does not match
    the timestamp pattern."""
    if not isinstance(column, np.ndarray):  # Arrow: its compute kernels, no Python objects
        # lazy: pyarrow (0.2 s), only for Arrow columns of a file
        import pyarrow as pa

        if pa.types.is_dictionary(column.type):
            return _dictionary_breaks(column, timestamp)
        is_text, lengths, timely = _arrow_text_facts(column, count, timestamp)
    else:
        texts, is_text = _texts_or_empty(column, count)
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=count)
        timely = (np.fromiter(map(bool, map(_TIMESTAMP.fullmatch, texts)), dtype=bool,
                              count=count) if timestamp else np.ones(count, dtype=bool))
    breaks: np.ndarray = ~is_text | (lengths < 1) | (lengths > TEXT_MAX_CHARS) | ~timely
    return breaks


def _arrow_text_facts(column: Any, count: int,
                      timestamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(is a string, length in characters, matches the timestamp pattern or need not)."""
    import pyarrow.compute as pc  # lazy: pyarrow (0.2 s), only for Arrow columns of a file

    is_text = pc.is_valid(column).to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.utf8_length(column), 0).to_numpy(zero_copy_only=False)
    timely = (pc.fill_null(pc.match_substring_regex(column, RFC3339_PATTERN), False)
              .to_numpy(zero_copy_only=False) if timestamp else np.ones(count, dtype=bool))
    return is_text, lengths, timely


def _dictionary_breaks(column: Any, timestamp: bool) -> np.ndarray:
    """``_text_breaks`` of an Arrow dictionary of text: each distinct value judged once (a
    county column is a few dozen strings, not a million), then taken by the rows' indices;
    a null row (null index) is no string."""
    # lazy: pyarrow (0.2 s), only for Arrow columns of a file
    import pyarrow as pa
    import pyarrow.compute as pc

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [np.zeros(0, dtype=bool)]
    for chunk in chunks:  # each chunk may have a dictionary of its own
        size = len(chunk.dictionary)
        breaks = np.append(_text_breaks(chunk.dictionary, size, timestamp), True)
        parts.append(breaks[pc.fill_null(chunk.indices, size).to_numpy(zero_copy_only=False)])
    return np.concatenate(parts)


def _texts_or_empty(column: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``column`` with "" in place of anything not a str, and a mask of the str values."""
    is_text = np.fromiter(map(isinstance, column, repeat(str)), dtype=bool, count=count)
    if is_text.all():
        return column, is_text
    return np.where(is_text, column, ""), is_text
