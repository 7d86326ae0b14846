"""Helpers for integration tests: create throwaway topics, read a topic to its end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap: str, name: str, partitions: int = 1,
                 config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})],
                                  operation_timeout=30)
    futures[name].result()
    wait_until(lambda: name in admin.list_topics(timeout=10).topics, timeout_s=30,
               what=f"topic {name} to appear")


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str,
               interval_s: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def read_all(bootstrap: str, topic: str, isolation: str = "read_committed",
             timeout_s: float = 30.0) -> list[Message]:
    """Every message of ``topic`` from the beginning to the current end (high watermark),
    as seen with ``isolation``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                         "enable.auto.commit": False, "isolation.level": isolation,
                         "auto.offset.reset": "earliest"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1]
                for tp in partitions}
        consumer.assign(partitions)
        messages: list[Message] = []
        positions = {p: 0 for p in ends}
        deadline = time.monotonic() + timeout_s
        while any(positions[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topic} to its end")
            message = consumer.poll(0.5)
            if message is None:
                positions = {tp.partition: tp.offset if tp.offset >= 0 else positions[tp.partition]
                             for tp in consumer.position(partitions)}
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"error reading {topic}: {message.error()}")
            messages.append(message)
            positions[message.partition()] = message.offset() + 1
        return messages
    finally:
        consumer.close()
