"""Dead letters: a refused message, kept byte for byte, with headers that say why and whence.

The key, value and original headers are never altered, so once the cause is fixed the message
can be replayed to its source topic exactly as first sent (``source_of`` and
``original_headers`` give what replay needs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from schemas.errors import Rejection
from schemas.timestamps import timestamp_from_ms

Headers = list[tuple[str, bytes]]

HEADER_PREFIX: Final = "levydrift.dlq."
REASON: Final = HEADER_PREFIX + "reason"
FIELD: Final = HEADER_PREFIX + "field"
MESSAGE: Final = HEADER_PREFIX + "message"
SOURCE_TOPIC: Final = HEADER_PREFIX + "source.topic"
SOURCE_PARTITION: Final = HEADER_PREFIX + "source.partition"
SOURCE_OFFSET: Final = HEADER_PREFIX + "source.offset"
TIME: Final = HEADER_PREFIX + "time"
MAX_MESSAGE_CHARS: Final = 512  # headers ride along with every fetch: keep them small


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


def dead_letter(key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes | None]] | None, rejection: Rejection,
                topic: str, partition: int, offset: int,
                now_ms: int) -> tuple[bytes | None, bytes | None, Headers]:
    """The dead-letter form of a refused message: the same key and value bytes, the original
    headers (minus any earlier dead-letter headers, if it is a replay that failed again) and
    the ``levydrift.dlq.*`` headers. ``time`` is RFC 3339 UTC from ``now_ms``."""
    added = [
        (REASON, str(rejection.reason)),
        (FIELD, rejection.field or ""),
        (MESSAGE, rejection.message[:MAX_MESSAGE_CHARS]),
        (SOURCE_TOPIC, topic),
        (SOURCE_PARTITION, str(partition)),
        (SOURCE_OFFSET, str(offset)),
        (TIME, timestamp_from_ms(now_ms)),
    ]
    encoded = [(name, text.encode("utf-8", "backslashreplace")) for name, text in added]
    return key, value, original_headers(headers) + encoded


def original_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> Headers:
    """The headers without the dead-letter ones: what to send when replaying."""
    return [(name, header_value) for name, header_value in headers or ()
            if not name.startswith(HEADER_PREFIX)]


def source_of(headers: Sequence[tuple[str, bytes | None]] | None) -> DeadLetterSource | None:
    """Read the dead-letter headers back; None if these are not a dead letter's headers."""
    found = {name: (header_value or b"").decode("utf-8", "replace")
             for name, header_value in headers or () if name.startswith(HEADER_PREFIX)}
    try:
        return DeadLetterSource(
            topic=found[SOURCE_TOPIC], partition=int(found[SOURCE_PARTITION]),
            offset=int(found[SOURCE_OFFSET]), reason=found[REASON],
            field=found.get(FIELD) or None, message=found.get(MESSAGE, ""),
            time=found.get(TIME, ""))
    except (KeyError, ValueError):
        return None
