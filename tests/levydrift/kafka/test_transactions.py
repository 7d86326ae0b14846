"""``call_within``: a librdkafka call that overstays its timeout cannot hold the consumer.
``TransactionalOutput.produce_many``: each message queued once, in order, whatever the local
queue does."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from levydrift.kafka.transactions import (
    STUCK_GRACE_S,
    CallStuck,
    TransactionalOutput,
    call_within,
)


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


class QueueFullProducer:
    """A producer whose local queue is full at the given produce calls (counting each)."""

    def __init__(self, full_at: set[int]) -> None:
        self.full_at, self.calls = full_at, 0
        self.queued: list[tuple[Any, ...]] = []
        self.polls = 0

    def begin_transaction(self) -> None:
        pass

    def produce(self, topic: str, value: bytes | None, key: bytes, partition: int,
                on_delivery: Any = None) -> None:
        self.calls += 1
        if self.calls in self.full_at:
            raise BufferError("Local: Queue full")
        self.queued.append((topic, key, value, partition, on_delivery))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0


@pytest.mark.parametrize("full_at", [set(), {1}, {3}, {4}, {2, 3, 6}])
def test_produce_many_queues_each_message_once_in_order(full_at: set[int]) -> None:
    producer = QueueFullProducer(full_at)
    output = TransactionalOutput(lambda: producer, 5.0)  # type: ignore[arg-type, return-value]
    messages = [(f"k{i}".encode(), None if i == 2 else f"v{i}".encode()) for i in range(4)]
    reported = print
    output.produce_many("changelog", 3, messages, on_last_delivery=reported)
    assert [(key, value) for _, key, value, _, _ in producer.queued] == messages
    assert {(topic, partition) for topic, _, _, partition, _ in producer.queued} \
        == {("changelog", 3)}
    assert [report for *_, report in producer.queued] == [None, None, None, reported]
    assert producer.polls == len(full_at) and output.open
    output.produce_many("changelog", 3, [])
    assert len(producer.queued) == 4
