"""The one timestamp shape every contract uses: RFC 3339 date-time, as a string."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

# RFC 3339 date-time with 'T', seconds, optional fraction (<= 9 digits) and a zone, years
# 1900-2199; the date part admits only real calendar days (leap years included), so a plain
# JSON Schema validator, which treats "format" as an annotation, still refuses 2023-02-29.
# The JSON Schema files carry this exact text as "pattern".
RFC3339_PATTERN: Final = (
    r"^(?:(?:19|20|21)[0-9]{2}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|(?:(?:19|20|21)(?:0[48]|[2468][048]|[13579][26])|2000)-02-29)"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
# Use with fullmatch, so a trailing newline never slips past '$' as it would with re.search.
TIMESTAMP: Final = re.compile(RFC3339_PATTERN)
# The one form producers write (``timestamp_from_ms``), "2026-01-01T18:17:48.000Z": digits
# where this has "0". Of the RFC 3339 times, the only ones of its length.
CANONICAL_FORM: Final = "0000-00-00T00:00:00.000Z"


def is_rfc3339(text: str) -> bool:
    return TIMESTAMP.fullmatch(text) is not None


def timestamp_from_ms(epoch_ms: int) -> str:
    """UTC RFC 3339 text with millisecond precision, e.g. '2024-03-01T12:00:00.000Z'."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"
