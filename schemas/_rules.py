"""Field rules the levy contracts share, stated once: a record and the label that later brings
its actual levy name the same record, parcel, tax year, money and timestamp, so they must refuse
the same values for the same reasons.

Each rule appears twice, by necessity: as a msgspec annotation (the fast path, checked in C) and
as a careful check that names the reason and the field. Both read the bounds below; the codec
tests tie both to the JSON Schema files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any, Final

import msgspec

from schemas._json import json_type_name
from schemas.errors import Reason, reject
from schemas.timestamps import TIMESTAMP

# A valid compact payload is a few KiB at most; 64 KiB leaves room for whitespace and escapes
# while refusing garbage (a 1 MiB blob) before any parsing work is spent on it.
MAX_PAYLOAD_BYTES: Final = 64 * 1024
MONEY_MAX: Final = 1e12  # a trillion dollars: no single parcel comes near it
TAX_YEAR_MIN: Final = 1900
TAX_YEAR_MAX: Final = 2100
TEXT_MAX_CHARS: Final = 64
# (low, high, low inclusive) of a money amount: the careful check and the column screen read it.
MONEY_BOUNDS: Final[tuple[float, float, bool]] = (0.0, MONEY_MAX, True)

Money = Annotated[float, msgspec.Meta(ge=0, le=MONEY_MAX)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=TEXT_MAX_CHARS)]
TaxYear = Annotated[int, msgspec.Meta(ge=TAX_YEAR_MIN, le=TAX_YEAR_MAX)]

FieldCheck = Callable[[str, Any], Any]


def check_version(document: Mapping[str, Any], version: int) -> None:
    """Refuse a document without ``schema_version`` or with another version than ``version``."""
    if "schema_version" not in document:
        raise reject(Reason.MISSING_FIELD, "schema_version", "required field is absent")
    found = document["schema_version"]
    if isinstance(found, bool) or found != version:
        raise reject(Reason.UNKNOWN_SCHEMA_VERSION, "schema_version",
                     f"this consumer reads version {version}, got {found!r}")


def check_field_names(document: Mapping[str, Any], fields: Collection[str],
                      required: Collection[str], contract: str) -> None:
    """Refuse a field ``contract`` (e.g. 'levy record v1') does not define, then a missing one;
    the first in name order, so the reason does not depend on the sender's key order."""
    unknown = sorted(set(document) - set(fields))
    if unknown:
        raise reject(Reason.UNKNOWN_FIELD, unknown[0],
                     f"field not in {contract} (unknown: {', '.join(unknown[:5])})")
    for name in required:
        if name not in document:
            raise reject(Reason.MISSING_FIELD, name, "required field is absent")


def number(name: str, value: Any) -> float | int:
    """A finite JSON number (an int may be beyond float64 range: the bounds refuse it)."""
    # bool is an int subclass in Python but not a number in JSON
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise reject(Reason.WRONG_TYPE, name, f"expected a number, got {json_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise reject(Reason.NOT_FINITE, name, f"{value!r} is not a finite number")
    return value


def bounded(low: float, high: float, low_inclusive: bool = True) -> Callable[[str, Any], float]:
    """A check for a number in [low, high] (or (low, high]), returned as a float."""
    shown = f"{'[' if low_inclusive else '('}{low:g}, {high:g}]"

    def check(name: str, value: Any) -> float:
        found = number(name, value)
        above_low = found >= low if low_inclusive else found > low
        if not (above_low and found <= high):  # compared before float(): 10**400 is an int
            raise reject(Reason.OUT_OF_RANGE, name, f"{found!r} is outside {shown}")
        return float(found)

    return check


money: Final = bounded(*MONEY_BOUNDS)


def optional_money(name: str, value: Any) -> float | None:
    return None if value is None else money(name, value)


def tax_year(name: str, value: Any) -> int:
    """An integral number in the tax-year range (2024.0 is an integer to JSON Schema)."""
    found = number(name, value)
    if isinstance(found, float) and not found.is_integer():
        raise reject(Reason.WRONG_TYPE, name, f"expected an integer, got {found!r}")
    if not TAX_YEAR_MIN <= found <= TAX_YEAR_MAX:
        raise reject(Reason.OUT_OF_RANGE, name,
                     f"{found!r} is outside [{TAX_YEAR_MIN}, {TAX_YEAR_MAX}]")
    return int(found)


def text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise reject(Reason.WRONG_TYPE, name, f"expected a string, got {json_type_name(value)}")
    if not value:
        raise reject(Reason.TOO_SHORT, name, "must not be empty")
    if len(value) > TEXT_MAX_CHARS:
        raise reject(Reason.TOO_LONG, name,
                     f"{len(value)} characters, the limit is {TEXT_MAX_CHARS}")
    return value


def timestamp(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise reject(Reason.WRONG_TYPE, name, f"expected a string, got {json_type_name(value)}")
    if TIMESTAMP.fullmatch(value) is None:
        raise reject(Reason.BAD_TIMESTAMP, name,
                     f"{value[:40]!r} is not an RFC 3339 date-time like 2024-03-01T12:00:00Z")
    return value
