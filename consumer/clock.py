"""Records dated ahead of the consumer's clock: a rule of the stream that ``levydrift check``
applies to a file as well. Its own module, light to import (no Kafka, no metrics), so the
check does not load the consumer's processing to use it."""

from __future__ import annotations

import time

import numpy as np

from detectors.composition import event_times_ms


def dated_ahead(event_times: np.ndarray, limit_s: float, now_ms: int | None = None
                ) -> np.ndarray:
    """Rows whose event time (anything ``event_times_ms`` reads) is more than ``limit_s``
    ahead of this machine's clock. Such a record (a mistyped year) would move the partition's
    event-time watermark years ahead: every composition window closed, every later record
    late, every pending prediction expired, every later label unmatched. A replay judges the
    uncommitted records again by the clock then."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return np.flatnonzero(event_times_ms(event_times) > now_ms + limit_s * 1000)
