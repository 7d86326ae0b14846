"""Validation of the low-volume event contracts straight from their JSON Schema files.

Drift events and model-version events are few, so instead of restating their rules in Python
the schema file itself is compiled (fastjsonschema) and its failures are mapped to reason codes:
the Python side cannot drift from the file other teams read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from schemas._json import first_non_finite, join_path, parse_json_object
from schemas.errors import Reason, reject

SCHEMA_DIR = Path(__file__).resolve().parent
MAX_EVENT_BYTES = 1024 * 1024  # a drift event with 256 signals stays far below this

_REASON_BY_RULE = {
    "type": Reason.WRONG_TYPE,
    "minimum": Reason.OUT_OF_RANGE,
    "maximum": Reason.OUT_OF_RANGE,
    "exclusiveMinimum": Reason.OUT_OF_RANGE,
    "exclusiveMaximum": Reason.OUT_OF_RANGE,
    "minLength": Reason.TOO_SHORT,
    "minItems": Reason.TOO_SHORT,
    "maxLength": Reason.TOO_LONG,
    "maxItems": Reason.TOO_LONG,
    "maxProperties": Reason.TOO_LONG,
}


def load_schema(file_name: str) -> dict[str, Any]:
    """The parsed JSON Schema file ``file_name`` from this package."""
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / file_name).read_text(encoding="utf-8"))
    return schema


@cache
def _validator(file_name: str) -> Callable[[Any], Any]:
    # "format" stays an annotation, as in standard 2020-12 validators; timestamps are checked
    # by their "pattern".
    return fastjsonschema.compile(load_schema(file_name), use_formats=False)


def validate_document(document: Any, file_name: str) -> dict[str, Any]:
    """Check a parsed document against schema ``file_name``; raise ``RecordRejected``."""
    if not isinstance(document, dict):
        raise reject(Reason.NOT_OBJECT, None, "expected a JSON object")
    version = document.get("schema_version", 1)
    if isinstance(version, bool) or version != 1:
        raise reject(Reason.UNKNOWN_SCHEMA_VERSION, "schema_version",
                     f"this reader knows version 1, got {version!r}")
    non_finite_at = first_non_finite(document)
    if non_finite_at is not None:
        raise reject(Reason.NOT_FINITE, non_finite_at, "NaN and Infinity are not allowed")
    try:
        _validator(file_name)(document)
    except fastjsonschema.JsonSchemaValueException as error:
        raise _rejection_from(error) from None
    return document


def decode_document(value: bytes | None, file_name: str) -> dict[str, Any]:
    """Parse and validate one message value against schema ``file_name``."""
    return validate_document(parse_json_object(value, MAX_EVENT_BYTES), file_name)


def encode_document(document: dict[str, Any], file_name: str) -> bytes:
    """Validate, then serialise compactly (orjson would quietly write NaN as null)."""
    return orjson.dumps(validate_document(document, file_name))


def _rejection_from(error: fastjsonschema.JsonSchemaValueException) -> Exception:
    path = _field_path(error.name or "data")
    rule, definition = error.rule, error.definition or {}
    if rule == "required":
        missing = [name for name in definition.get("required", []) if name not in error.value]
        return reject(Reason.MISSING_FIELD, join_path(path, missing[0]) if missing else path,
                      "required field is absent")
    if rule == "additionalProperties" and isinstance(error.value, dict):
        known = definition.get("properties", {})
        unknown = sorted(name for name in error.value if name not in known)
        field = join_path(path, unknown[0]) if unknown else path
        return reject(Reason.UNKNOWN_FIELD, field, "field not defined by the schema")
    if rule == "pattern" and definition.get("format") == "date-time":
        return reject(Reason.BAD_TIMESTAMP, path, "not an RFC 3339 date-time")
    reason = _REASON_BY_RULE.get(rule or "", Reason.INVALID_VALUE)
    message = error.message.replace("data.", "", 1).replace("data ", "", 1)
    return reject(reason, path or None, message)


def _field_path(name: str) -> str:
    """fastjsonschema names the spot 'data.signals[0].statistic'; we say 'signals[0].statistic'."""
    return name.removeprefix("data").removeprefix(".")
