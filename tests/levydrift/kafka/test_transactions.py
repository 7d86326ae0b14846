"""``call_within``: a librdkafka call that overstays its timeout cannot hold the consumer."""

from __future__ import annotations

import threading
import time

import pytest

from levydrift.kafka.transactions import STUCK_GRACE_S, CallStuck, call_within


def test_a_call_that_returns_gives_its_value_or_its_error() -> None:
    assert call_within(lambda: 42, 5) == 42
    with pytest.raises(ZeroDivisionError):
        call_within(lambda: 1 / 0, 5)


def test_a_call_that_overstays_is_left_behind() -> None:
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(CallStuck):
        call_within(release.wait, 1.0)
    elapsed = time.monotonic() - started
    release.set()
    assert 1.0 + STUCK_GRACE_S - 0.1 <= elapsed < 1.0 + STUCK_GRACE_S + 1.0
