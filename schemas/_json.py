"""JSON parsing shared by the codecs: the careful path that names what is wrong with a payload.

orjson is strict and fast but says little about *why* it refused; this module re-reads a refused
payload with the standard library (which also accepts NaN, Infinity and integers beyond 64 bits)
to tell a bad encoding from a syntax error from a non-finite number.

Duplicate keys are refused everywhere (I-JSON, RFC 7493): RFC 8259 leaves their meaning open
and parsers disagree on which value wins (orjson, msgspec and Python keep the last, others the
first), so a record could mean one thing to us and another to a downstream team.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import msgspec
import orjson

from schemas.errors import Reason, reject

# What msgspec's typed decode raises for a value its fast path refuses (the careful path then
# names the reason).
FAST_PATH_REFUSALS: Final = (msgspec.DecodeError, msgspec.ValidationError, ValueError)

# Our deepest contract (a drift event) nests 5 levels; a deeper payload is refused before any
# recursive walk could exhaust the stack.
MAX_DEPTH = 16


def decode_each(decoder: msgspec.json.Decoder[Any], values: Sequence[bytes | None],
                max_bytes: int) -> list[Any]:
    """msgspec's typed decode of each value on its own: None where it refused, where the value
    is larger than ``max_bytes``, or a tombstone. Each on its own: one JSON array of them all
    would let a value holding two objects, or a string running over a separator, move items
    between offsets."""
    present = cast(Sequence[bytes], values)  # when None is not in it
    if None not in values and max(map(len, present), default=0) <= max_bytes:
        try:
            return list(map(decoder.decode, present))
        except FAST_PATH_REFUSALS:
            pass  # the usual batch has no refusal and no Python loop; this one takes it
    return [_decode_one(decoder, value, max_bytes) for value in values]


def _decode_one(decoder: msgspec.json.Decoder[Any], value: bytes | None,
                max_bytes: int) -> Any:
    if value is None or len(value) > max_bytes:
        return None
    try:
        return decoder.decode(value)
    except FAST_PATH_REFUSALS:
        return None


def parse_json_object(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Parse ``value`` as one UTF-8 JSON object, or raise ``RecordRejected`` naming why not.

    Non-finite numbers, duplicate keys and nesting deeper than ``MAX_DEPTH`` are refused here;
    integers too big for orjson are kept as Python ints so the range checks can name the
    field."""
    if not value:
        raise reject(Reason.EMPTY, None, "no value (tombstone or zero bytes)")
    if len(value) > max_bytes:
        raise reject(Reason.TOO_LARGE, None,
                     f"payload is {len(value)} bytes, the limit is {max_bytes}")
    try:
        document = orjson.loads(value)
        lenient = False
    except orjson.JSONDecodeError:
        document = _parse_leniently(value)
        lenient = True
    strings, depth = _measure(document)
    if depth > MAX_DEPTH:  # before any recursive walk below (or in a schema validator)
        raise reject(Reason.NOT_JSON, None, f"nested {depth} levels deep; the limit is "
                                            f"{MAX_DEPTH}")
    if lenient:
        _refuse_what_orjson_would(document)
    if not isinstance(document, dict):
        raise reject(Reason.NOT_OBJECT, None,
                     f"expected a JSON object, got {json_type_name(document)}")
    duplicate = first_duplicate_key(value, strings)
    if duplicate is not None:
        raise reject(Reason.DUPLICATE_KEY, duplicate,
                     "key appears more than once in one object; keys must be unique")
    return document


def _parse_leniently(value: bytes) -> Any:
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError as error:
        raise reject(Reason.BAD_ENCODING, None,
                     f"not UTF-8: byte {error.start} ({error.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise reject(Reason.NOT_JSON, None,
                     f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise reject(Reason.NOT_JSON, None, "nested too deeply") from None


def _refuse_what_orjson_would(document: Any) -> None:
    """What the standard library parses but orjson (and I-JSON) refuse."""
    where = first_non_finite(document)
    if where is not None:
        raise reject(Reason.NOT_FINITE, where or None,
                     "NaN, Infinity or a number beyond float64 range is not allowed")
    surrogate_at = first_unpaired_surrogate(document)
    if surrogate_at is not None:
        raise reject(Reason.BAD_ENCODING, surrogate_at or None,
                     "string holds an unpaired UTF-16 surrogate escape")


def _measure(document: Any) -> tuple[int, int]:
    """(keys plus string values, nesting depth) of a parsed document, walked iteratively:
    the depth is the sender's choice."""
    strings, deepest = 0, 0
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            strings += len(node)
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            strings += isinstance(node, str)
            continue
        deepest = max(deepest, depth)
        for child in children:
            if isinstance(child, str):
                strings += 1
            elif isinstance(child, dict | list):
                pending.append((child, depth + 1))
    return strings, deepest


def first_duplicate_key(value: bytes, strings: int) -> str | None:
    """The JSON path of a key that ``value`` names twice in one object, or None. ``strings``
    counts the keys and string values of ``value`` as parsed (duplicates collapsed).

    Cheap in the usual case: each string in the bytes has two quotes (plus one per escaped
    quote), so ``value`` holds exactly ``2 * strings`` quotes when no key (with its value) was
    dropped as a duplicate. Otherwise the bytes are parsed again keeping every pair."""
    if value.count(b'"') == 2 * strings:
        return None
    return _duplicate_key_path(value)


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


class _Object(dict[str, Any]):
    """A parsed JSON object that remembers the first key it was given twice."""

    duplicate: str | None = None


def _object_noting_duplicates(pairs: list[tuple[str, Any]]) -> _Object:
    document = _Object()
    for key, child in pairs:
        if key in document and document.duplicate is None:
            document.duplicate = key
        document[key] = child
    return document


def _duplicate_key_path(value: bytes) -> str | None:
    """Parse again with every key/value pair seen; the path of the first duplicated key."""
    try:
        document = json.loads(bytes(value).decode("utf-8"),
                              object_pairs_hook=_object_noting_duplicates)
    except (ValueError, RecursionError):  # parsed once already; nothing more to learn here
        return None
    return _first_duplicate(document)


def _first_duplicate(node: Any, path: str = "") -> str | None:
    if isinstance(node, _Object) and node.duplicate is not None:
        return join_path(path, node.duplicate)
    return _first_in_children(node, path, _first_duplicate)


def _first_in_children(node: Any, path: str,
                       finder: Callable[[Any, str], str | None]) -> str | None:
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
