"""Typed access to a consumed message's position and headers, and whether its error ends
the consumer.

confluent-kafka's stubs make a ``Message``'s topic, partition and offset optional: they are
None on an error event (and on a ``Message`` built by hand), never on a message the consumer
delivered without an error. These accessors are for such messages only, and say so once
instead of at every use.
"""

from __future__ import annotations

from typing import cast

from confluent_kafka import KafkaError, Message

from schemas.dead_letter import Headers


def topic_of(message: Message) -> str:
    topic = message.topic()
    assert topic is not None, "a consumed message without an error has a topic"
    return topic


def partition_of(message: Message) -> int:
    partition = message.partition()
    assert partition is not None, "a consumed message without an error has a partition"
    return partition


def offset_of(message: Message) -> int:
    offset = message.offset()
    assert offset is not None, "a consumed message without an error has an offset"
    return offset


def headers_of(message: Message) -> Headers | None:
    """The stub types headers as what ``produce`` accepts (a dict, or str values); a consumed
    message's headers are always a list of (name, bytes or None) pairs."""
    return cast("Headers | None", message.headers())


def ends_consumer(error: KafkaError) -> bool:
    """A consumer error after which the consumer is dead. librdkafka hands a fatal consumer
    error (a static membership fenced by another instance with the same group.instance.id)
    to ``consume()`` as ``_FATAL``, whose ``fatal()`` is False."""
    return bool(error.fatal() or error.code() == KafkaError._FATAL)


def fenced_membership(error: KafkaError) -> bool:
    """The group fenced this consumer's static membership: a join with the same
    group.instance.id replaced it (``_FATAL`` carries the broker's reason only as text)."""
    return error.code() == KafkaError.FENCED_INSTANCE_ID or names_fenced_membership(error.str())


def names_fenced_membership(text: str) -> bool:
    """An error's text (a transaction's, which names the broker's error only so) says the
    group fenced the static membership whose offsets it carried."""
    return "fenced by other consumer with same group.instance.id" in text
