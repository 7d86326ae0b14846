"""Typed rejections: why a payload broke a contract, as a stable code, a field and a message.

The reason code is stable: metrics count by it, dead-letter headers carry it and operators grep
for it, so codes are only ever added, never renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Stable reason codes. Being a ``StrEnum``, each compares equal to its plain string."""

    EMPTY = "empty"  # no value at all (a Kafka tombstone) or zero bytes
    TOO_LARGE = "too_large"  # payload over the size limit; refused before parsing
    BAD_ENCODING = "bad_encoding"  # not UTF-8, or a string with an unpaired surrogate
    NOT_JSON = "not_json"  # not a JSON document (syntax error, truncated)
    NOT_OBJECT = "not_object"  # JSON, but not an object at the top level
    DUPLICATE_KEY = "duplicate_key"  # one object names a key twice (parsers disagree which wins)
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"  # schema_version present but not ours
    UNKNOWN_FIELD = "unknown_field"  # a field the schema does not define
    MISSING_FIELD = "missing_field"  # a required field is absent
    WRONG_TYPE = "wrong_type"  # e.g. a string or a bool where a number belongs
    NOT_FINITE = "not_finite"  # NaN, Infinity, or a number too big for a float64
    OUT_OF_RANGE = "out_of_range"  # a number outside its documented range
    TOO_SHORT = "too_short"  # an empty string, or a list with too few items
    TOO_LONG = "too_long"  # a string or list over its length limit
    BAD_TIMESTAMP = "bad_timestamp"  # not an RFC 3339 date-time (or not a real calendar date)
    INVALID_VALUE = "invalid_value"  # not one of the allowed values, or not the required shape
    INCONSISTENT = "inconsistent"  # fields fine alone but contradict each other


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a payload was refused. ``field`` is a JSON path like ``levy_rate`` or
    ``signals[0].statistic``; it is None when the payload as a whole is at fault."""

    reason: Reason
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f" at {self.field}" if self.field else ""
        return f"{self.reason}{where}: {self.message}"


class RecordRejected(ValueError):
    """Raised by the codecs when a payload breaks its contract; carries the ``Rejection``."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(str(rejection))
        self.rejection = rejection

    @property
    def reason(self) -> Reason:
        return self.rejection.reason

    @property
    def field(self) -> str | None:
        return self.rejection.field

    @property
    def message(self) -> str:
        return self.rejection.message


def reject(reason: Reason, field: str | None, message: str) -> RecordRejected:
    """Shorthand used by the codecs: ``raise reject(Reason.WRONG_TYPE, "tax_year", "...")``."""
    return RecordRejected(Rejection(reason, field, message))
