"""Levy label v1: the actual levy of a record, arriving weeks to months after it, and its codec.

The contract is ``levy-label.v1.json``. The codec mirrors ``schemas.levy_record``: a fast path
(msgspec decodes and checks types and ranges in C; the timestamp pattern and the proof that no
key came twice follow in Python) and, only when it refuses, the careful path that names the
reason and the field. The field rules a label shares with its record (record_id, parcel_id,
tax_year, money, event_time) come from ``schemas._rules``, the record's own, so the two
contracts cannot drift apart; the rejection type and reason codes are the record's too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from operator import attrgetter, is_not
from typing import Any, Final, Literal, cast

import msgspec
import numpy as np

from schemas import _rules as rules
from schemas._json import FAST_PATH_REFUSALS, decode_each, parse_json_object
from schemas._rules import Money, TaxYear, Text
from schemas.errors import RecordRejected, Rejection
from schemas.timestamps import TIMESTAMP

SCHEMA_VERSION: Final = 1
# A compact label is under 1 KiB; the limit is the record's, for the same reasons.
MAX_LABEL_BYTES: Final = rules.MAX_PAYLOAD_BYTES


class LevyLabel(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True,
                gc=False):
    """The billed levy of the record ``record_id`` (levy label v1), in dollars, final at
    ``event_time``. ``source`` (who reported it) is optional: None when absent."""

    schema_version: Literal[1]
    record_id: Text
    parcel_id: Text
    tax_year: TaxYear
    actual_levy_amount: Money
    event_time: str
    source: Text | None = None


FIELDS: Final[tuple[str, ...]] = LevyLabel.__struct_fields__
REQUIRED_FIELDS: Final = FIELDS[:-1]
TEXT_FIELDS: Final = ("record_id", "parcel_id", "event_time", "source")

_DECODER = msgspec.json.Decoder(LevyLabel)
_ENCODER = msgspec.json.Encoder()
# Quote bytes in a label msgspec accepted: two per key and per text value (msgspec checked every
# occurrence of a key, so text fields hold strings and the rest numbers), plus one per escaped
# quote. Exactly those of the keys and text values present means no key came twice. A
# ``"source": null`` (two quotes more, no text value) goes the careful way, which refuses it:
# the schema allows no null.
_QUOTES_WITHOUT_SOURCE: Final = 2 * (len(REQUIRED_FIELDS) + len(TEXT_FIELDS) - 1)
_QUOTES_WITH_SOURCE: Final = _QUOTES_WITHOUT_SOURCE + 4


def decode_levy_label(value: bytes | None) -> LevyLabel:
    """Decode and validate one Kafka message value; raise ``RecordRejected`` if it breaks the
    contract. Never raises anything else for any input bytes."""
    if value is not None and len(value) <= MAX_LABEL_BYTES:
        try:
            label = _DECODER.decode(value)
        except FAST_PATH_REFUSALS:
            pass
        else:
            quotes = _QUOTES_WITHOUT_SOURCE if label.source is None else _QUOTES_WITH_SOURCE
            if (TIMESTAMP.fullmatch(label.event_time) is not None
                    and value.count(b'"') == quotes):
                return label
    return levy_label_from_dict(parse_json_object(value, MAX_LABEL_BYTES))


def decode_levy_labels(
    values: Sequence[bytes | None],
) -> tuple[list[LevyLabel], list[tuple[int, Rejection]]]:
    """Decode a batch: the accepted labels in order, and (index in ``values``, rejection) for
    each refused one (a tombstone is refused as ``empty``).

    The same rules and reasons as ``decode_levy_label``, per batch: each value is decoded on its
    own (one JSON array of them all would let a value holding two objects move labels between
    offsets), the Python-side checks run over the batch, and only the values they flag take the
    careful path, which names the reason."""
    decoded = decode_each(_DECODER, values, MAX_LABEL_BYTES)
    passed = _pass_fast_checks(decoded, values)
    if passed.all():
        return cast(list[LevyLabel], decoded), []
    labels: list[LevyLabel] = []
    rejected: list[tuple[int, Rejection]] = []
    for index, fast in enumerate(passed.tolist()):
        if fast:
            labels.append(cast(LevyLabel, decoded[index]))
            continue
        try:
            labels.append(levy_label_from_dict(parse_json_object(values[index], MAX_LABEL_BYTES)))
        except RecordRejected as error:
            rejected.append((index, error.rejection))
    return labels, rejected


def _pass_fast_checks(decoded: list[LevyLabel | None],
                      values: Sequence[bytes | None]) -> np.ndarray:
    """Per value, whether msgspec decoded it and it passes what msgspec cannot check (the
    rules of ``decode_levy_label``): the timestamp pattern and the quote count proving no key
    came twice."""
    count = len(values)
    present = np.fromiter(map(is_not, decoded, repeat(None)), dtype=bool, count=count)
    if not present.all():
        passed = np.zeros(count, dtype=bool)
        kept = np.flatnonzero(present).tolist()
        passed[kept] = _pass_fast_checks([decoded[index] for index in kept],
                                         [values[index] for index in kept])
        return passed
    labels = cast(list[LevyLabel], decoded)
    quotes = np.fromiter(map(bytes.count, cast(Sequence[bytes], values), repeat(b'"')),
                         dtype=np.int64, count=count)
    sourced = np.fromiter(map(is_not, map(_SOURCE, labels), repeat(None)), dtype=bool,
                          count=count)
    timely = np.fromiter(map(bool, map(TIMESTAMP.fullmatch, map(_EVENT_TIME, labels))),
                         dtype=bool, count=count)
    unique_keys = quotes == np.where(sourced, _QUOTES_WITH_SOURCE, _QUOTES_WITHOUT_SOURCE)
    fast: np.ndarray = timely & unique_keys
    return fast


_SOURCE, _EVENT_TIME = attrgetter("source"), attrgetter("event_time")


def encode_levy_label(label: LevyLabel, *, validate: bool = True) -> bytes:
    """Compact UTF-8 JSON for ``label`` (``source`` omitted when None).

    With ``validate`` the bytes are decoded again, so nothing leaves that a consumer would
    refuse (a NaN, which JSON writes as null, or a malformed timestamp)."""
    data = _ENCODER.encode(label)
    if validate:
        decode_levy_label(data)
    return data


def levy_label_from_dict(document: Mapping[str, Any]) -> LevyLabel:
    """Validate an already-parsed object with the careful checks; raise ``RecordRejected``."""
    rules.check_version(document, SCHEMA_VERSION)
    rules.check_field_names(document, FIELDS, REQUIRED_FIELDS, "levy label v1")
    return LevyLabel(**{name: _FIELD_CHECKS[name](name, document[name])
                        for name in FIELDS if name in document})


def levy_labels_to_columns(labels: Iterable[LevyLabel]) -> dict[str, np.ndarray]:
    """One array per field but the version: record_id, parcel_id, event_time (the RFC 3339
    strings) and source (None where absent) as object arrays, tax_year int64,
    actual_levy_amount float64."""
    labels = labels if isinstance(labels, list) else list(labels)
    count = len(labels)
    columns: dict[str, np.ndarray] = {}
    for name in FIELDS[1:]:  # one pass per field: C-level attribute access, no per-row tuples
        values = map(attrgetter(name), labels)
        if name in _COLUMN_DTYPES:
            columns[name] = np.fromiter(values, dtype=_COLUMN_DTYPES[name], count=count)
        else:
            columns[name] = np.array(list(values), dtype=object)
    return columns


_COLUMN_DTYPES: Final = {"tax_year": np.int64, "actual_levy_amount": np.float64}


def _schema_version(name: str, value: Any) -> int:
    return SCHEMA_VERSION  # already checked by rules.check_version


_FIELD_CHECKS: Final[dict[str, Callable[[str, Any], Any]]] = {
    "schema_version": _schema_version,
    **dict.fromkeys(TEXT_FIELDS, rules.text),
    "event_time": rules.timestamp,
    "tax_year": rules.tax_year,
    "actual_levy_amount": rules.money,
}
