"""JSON parsing shared by the codecs: the careful path that names what is wrong with a payload.

orjson is strict and fast but says little about *why* it refused; this module re-reads a refused
payload with the standard library (which also accepts NaN, Infinity and integers beyond 64 bits)
to tell a bad encoding from a syntax error from a non-finite number.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from schemas.errors import Reason, reject


def parse_json_object(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Parse ``value`` as one UTF-8 JSON object, or raise ``RecordRejected`` naming why not.

    Non-finite numbers are refused here; integers too big for orjson are kept as Python ints so
    the range checks can name the field."""
    if not value:
        raise reject(Reason.EMPTY, None, "no value (tombstone or zero bytes)")
    if len(value) > max_bytes:
        raise reject(Reason.TOO_LARGE, None,
                     f"payload is {len(value)} bytes, the limit is {max_bytes}")
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        document = _parse_leniently(value)
    if not isinstance(document, dict):
        raise reject(Reason.NOT_OBJECT, None,
                     f"expected a JSON object, got {json_type_name(document)}")
    return document


def _parse_leniently(value: bytes) -> Any:
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError as error:
        raise reject(Reason.BAD_ENCODING, None,
                     f"not UTF-8: byte {error.start} ({error.reason})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise reject(Reason.NOT_JSON, None,
                     f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise reject(Reason.NOT_JSON, None, "nested too deeply") from None
    where = first_non_finite(document)
    if where is not None:
        raise reject(Reason.NOT_FINITE, where or None,
                     "NaN, Infinity or a number beyond float64 range is not allowed")
    surrogate_at = first_unpaired_surrogate(document)
    if surrogate_at is not None:
        raise reject(Reason.BAD_ENCODING, surrogate_at or None,
                     "string holds an unpaired UTF-16 surrogate escape")
    return document


def first_non_finite(node: Any, path: str = "") -> str | None:
    """JSON path of the first NaN/Infinity float in ``node`` ('' for the root), or None."""
    if isinstance(node, float):
        return None if math.isfinite(node) else path
    return _first_in_children(node, path, first_non_finite)


def first_unpaired_surrogate(node: Any, path: str = "") -> str | None:
    """JSON path of the first string (or key) that cannot be encoded as UTF-8, or None."""
    if isinstance(node, str):
        return None if _is_utf8_encodable(node) else path
    if isinstance(node, dict):
        for key in node:
            if not _is_utf8_encodable(key):
                return join_path(path, "<key>")
    return _first_in_children(node, path, first_unpaired_surrogate)


def _first_in_children(node: Any, path: str, finder: Any) -> str | None:
    if isinstance(node, dict):
        children = ((join_path(path, str(key)), child) for key, child in node.items())
    elif isinstance(node, list):
        children = ((f"{path}[{index}]", child) for index, child in enumerate(node))
    else:
        return None
    for child_path, child in children:
        found = finder(child, child_path)
        if found is not None:
            return found
    return None


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def join_path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def json_type_name(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
