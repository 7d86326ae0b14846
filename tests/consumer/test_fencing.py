"""What a fenced static membership does: fenced by its own second join while rejoining after
a loss, the service is built afresh (within a budget); fenced otherwise, it exits. The
broker-side behaviour is in test_reliability.py; here the budget and the error texts."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

import consumer.service as service_module
from consumer import metrics
from consumer.config import ConsumerSettings
from consumer.service import FencedByOwnJoin, run_consumer
from levydrift.kafka.messages import ends_consumer, fenced_membership, names_fenced_membership
from levydrift.kafka.transactions import FatalKafkaError

# What librdkafka hands consume() when the group fences a static member.
FATAL_FENCE = KafkaError(KafkaError._FATAL, "Fatal consumer error: Broker: Static consumer "
                                            "fenced by other consumer with same group.instance.id")


class ScriptedService:
    """Stands in for a ConsumerService whose run() ends as scripted (fenced, or stopped)."""

    def __init__(self, outcomes: list[BaseException | int], stop_requested: bool = False) -> None:
        self.outcomes = outcomes
        self.built = 0
        self.stop_requested = stop_requested

    def __call__(self, _settings: ConsumerSettings) -> ScriptedService:
        self.built += 1
        return self

    def run(self) -> int:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def test_the_fatal_fence_is_recognised_from_its_code_or_its_text() -> None:
    assert ends_consumer(FATAL_FENCE) and fenced_membership(FATAL_FENCE)
    assert fenced_membership(KafkaError(KafkaError.FENCED_INSTANCE_ID))
    assert not fenced_membership(KafkaError(KafkaError._FATAL, "Fatal error: something else"))
    assert names_fenced_membership("send offsets in failed: rec[0](Broker: Static consumer "
                                   "fenced by other consumer with same group.instance.id)")
    assert not names_fenced_membership("send offsets in failed: rec[0](Broker: Unknown member)")


def test_fenced_by_its_own_join_the_service_is_built_afresh() -> None:
    restarts = metrics.OWN_FENCE_RESTARTS._value.get()
    script = ScriptedService([FencedByOwnJoin("fenced"), FencedByOwnJoin("fenced"), 0])
    assert run_consumer(ConsumerSettings(), build=script) == 0  # type: ignore[arg-type]
    assert script.built == 3
    assert metrics.OWN_FENCE_RESTARTS._value.get() == restarts + 2


def test_fenced_by_its_own_join_too_often_it_exits_saying_so() -> None:
    limit = service_module.OWN_FENCE_LIMIT
    script = ScriptedService([FencedByOwnJoin("fenced")] * (limit + 1) + [0])
    with pytest.raises(FatalKafkaError, match=f"{limit + 1} times within") as raised:
        run_consumer(ConsumerSettings(), build=script)  # type: ignore[arg-type]
    assert not isinstance(raised.value, FencedByOwnJoin)
    assert script.built == limit + 1


def test_fences_older_than_the_window_do_not_count() -> None:
    times = iter(range(0, 100_000, 1_000))  # each fence 1,000 s after the last
    script = ScriptedService([FencedByOwnJoin("fenced")] * 10 + [0])
    assert run_consumer(ConsumerSettings(), build=script,  # type: ignore[arg-type]
                        clock=lambda: float(next(times))) == 0
    assert script.built == 11


def test_another_instance_fencing_it_ends_the_run() -> None:
    script = ScriptedService([FatalKafkaError("fenced by another instance"), 0])
    with pytest.raises(FatalKafkaError):
        run_consumer(ConsumerSettings(), build=script)  # type: ignore[arg-type]
    assert script.built == 1


def test_a_stop_requested_before_the_fence_is_kept() -> None:
    script = ScriptedService([FencedByOwnJoin("fenced"), 0], stop_requested=True)
    assert run_consumer(ConsumerSettings(), build=script) == 0  # type: ignore[arg-type]
    assert script.built == 1
