"""Dead letters: a refused message, kept byte for byte, with headers that say why and whence.

The key, value and original headers are never altered, so once the cause is fixed the message
can be replayed to its source topic exactly as first sent (``source_of`` and
``original_headers`` give what replay needs).

Except when the message is too large to copy: a dead letter must always fit the dead-letter
topic, or producing it fails and the partition it came from can never move on. Above
``MAX_DEAD_LETTER_BYTES`` the dead letter is a bounded copy instead: the original headers are
dropped when they are large, the key and the value keep a prefix, and ``truncated`` names what
was cut while the ``original.*.bytes`` headers give the original sizes. The ``source.*``
headers point at the original, which stays in its topic for the retention period. When even
that cannot be produced, ``pointer_only`` keeps nothing but the headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from schemas.errors import Rejection
from schemas.timestamps import timestamp_from_ms

Headers = list[tuple[str, bytes | None]]  # Kafka header values may be null

HEADER_PREFIX: Final = "levydrift.dlq."
REASON: Final = HEADER_PREFIX + "reason"
FIELD: Final = HEADER_PREFIX + "field"
MESSAGE: Final = HEADER_PREFIX + "message"
SOURCE_TOPIC: Final = HEADER_PREFIX + "source.topic"
SOURCE_PARTITION: Final = HEADER_PREFIX + "source.partition"
SOURCE_OFFSET: Final = HEADER_PREFIX + "source.offset"
TIME: Final = HEADER_PREFIX + "time"
TRUNCATED: Final = HEADER_PREFIX + "truncated"  # parts cut or dropped: "key,value,headers"
ORIGINAL_KEY_BYTES: Final = HEADER_PREFIX + "original.key.bytes"
ORIGINAL_VALUE_BYTES: Final = HEADER_PREFIX + "original.value.bytes"
ORIGINAL_HEADERS_BYTES: Final = HEADER_PREFIX + "original.headers.bytes"
MAX_MESSAGE_CHARS: Final = 512  # headers ride along with every fetch: keep them small
# A quarter of the producer's (1,000,000) and the broker's (1 MiB) default message limits: a
# whole copy of any record of a valid size fits, and no dead letter is refused for its size.
MAX_DEAD_LETTER_BYTES: Final = 256 * 1024
MAX_COPIED_KEY_BYTES: Final = 1024  # in a bounded copy
MAX_COPIED_HEADERS_BYTES: Final = 16 * 1024  # in a bounded copy; larger headers are dropped
PARTS: Final = ("key", "value", "headers")


@dataclass(frozen=True, slots=True)
class DeadLetterSource:
    """Where a dead letter came from and why it was refused, read back from its headers."""

    topic: str
    partition: int
    offset: int
    reason: str
    field: str | None
    message: str
    time: str
    truncated: tuple[str, ...] = ()  # parts of the original that the dead letter lacks
    original_value_bytes: int | None = None  # size of the original value, when truncated


DeadLetter = tuple[bytes | None, bytes | None, Headers]


def dead_letter(key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes | None]] | None, rejection: Rejection,
                topic: str, partition: int, offset: int, now_ms: int,
                max_bytes: int = MAX_DEAD_LETTER_BYTES) -> DeadLetter:
    """The dead-letter form of a refused message: the same key and value bytes, the original
    headers (minus any earlier dead-letter headers, if it is a replay that failed again) and
    the ``levydrift.dlq.*`` headers. ``time`` is RFC 3339 UTC from ``now_ms``. Larger than
    ``max_bytes`` in all, it is a bounded copy (see the module docstring)."""
    added = [
        (REASON, str(rejection.reason)),
        (FIELD, rejection.field or ""),
        (MESSAGE, rejection.message[:MAX_MESSAGE_CHARS]),
        (SOURCE_TOPIC, topic),
        (SOURCE_PARTITION, str(partition)),
        (SOURCE_OFFSET, str(offset)),
        (TIME, timestamp_from_ms(now_ms)),
    ]
    encoded = _encode(added)
    kept = original_headers(headers)
    if _size(key) + _size(value) + _headers_size(kept + encoded) <= max_bytes:
        return key, value, kept + encoded
    return _bounded_copy(key, value, kept, encoded, max_bytes)


def _bounded_copy(key: bytes | None, value: bytes | None, kept: Headers, encoded: Headers,
                  max_bytes: int) -> DeadLetter:
    cut = []
    copied_headers = kept
    if _headers_size(kept) > MAX_COPIED_HEADERS_BYTES:
        copied_headers, cut = [], ["headers"]
    copied_key = key
    if key is not None and len(key) > MAX_COPIED_KEY_BYTES:
        copied_key = key[:MAX_COPIED_KEY_BYTES]
        cut.append("key")
    sizes = _original_sizes(key, value, kept)
    room = max_bytes - _size(copied_key) - _headers_size(copied_headers + encoded + sizes) - 64
    copied_value = value
    if value is not None and len(value) > room:
        copied_value = value[:max(room, 0)]
        cut.append("value")
    marker = _encode([(TRUNCATED, ",".join(part for part in PARTS if part in cut))])
    return copied_key, copied_value, copied_headers + encoded + marker + sizes


def pointer_only(dead: DeadLetter) -> DeadLetter:
    """A dead letter reduced to its ``levydrift.dlq.*`` headers: no key, no value, no original
    headers, for when even a bounded copy could not be produced. The sizes of the original are
    kept (or taken from ``dead`` when it is a whole copy)."""
    key, value, headers = dead
    own = [(name, data) for name, data in headers if name.startswith(HEADER_PREFIX)]
    if any(name == TRUNCATED for name, _ in own):
        own = [(name, data) for name, data in own if name != TRUNCATED]
    else:
        own += _original_sizes(key, value, original_headers(headers))
    return None, None, own + _encode([(TRUNCATED, ",".join(PARTS))])


def _original_sizes(key: bytes | None, value: bytes | None, headers: Headers) -> Headers:
    return _encode([(ORIGINAL_KEY_BYTES, str(_size(key))),
                    (ORIGINAL_VALUE_BYTES, str(_size(value))),
                    (ORIGINAL_HEADERS_BYTES, str(_headers_size(headers)))])


def _encode(pairs: list[tuple[str, str]]) -> Headers:
    return [(name, text.encode("utf-8", "backslashreplace")) for name, text in pairs]


def _size(data: bytes | None) -> int:
    return 0 if data is None else len(data)


def _headers_size(headers: Sequence[tuple[str, bytes | None]]) -> int:
    return sum(len(name.encode("utf-8", "backslashreplace")) + _size(data) + 8
               for name, data in headers)


def original_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> Headers:
    """The headers without the dead-letter ones: what to send when replaying."""
    return [(name, header_value) for name, header_value in headers or ()
            if not name.startswith(HEADER_PREFIX)]


def source_of(headers: Sequence[tuple[str, bytes | None]] | None) -> DeadLetterSource | None:
    """Read the dead-letter headers back; None if these are not a dead letter's headers."""
    found = {name: (header_value or b"").decode("utf-8", "replace")
             for name, header_value in headers or () if name.startswith(HEADER_PREFIX)}
    try:
        original_value = found.get(ORIGINAL_VALUE_BYTES)
        return DeadLetterSource(
            topic=found[SOURCE_TOPIC], partition=int(found[SOURCE_PARTITION]),
            offset=int(found[SOURCE_OFFSET]), reason=found[REASON],
            field=found.get(FIELD) or None, message=found.get(MESSAGE, ""),
            time=found.get(TIME, ""),
            truncated=tuple(part for part in found.get(TRUNCATED, "").split(",") if part),
            original_value_bytes=int(original_value) if original_value else None)
    except (KeyError, ValueError):
        return None
