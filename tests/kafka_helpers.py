"""Helpers for integration tests: create throwaway topics, read a topic to its end, run a
private broker that a test may stop and start."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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


LOCAL_KAFKA = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "local-kafka"


def free_port_pair() -> int:
    """A free port whose successor (the controller port) is free too, both below the kernel's
    ephemeral range. A test that stops its broker needs the pair free again when it restarts
    it, and meanwhile any connection on the machine may be given a port of that range as its
    source port: seen, the restart failing with "Address already in use" on the controller's."""
    low = ephemeral_ports_start()
    candidates = random.Random().sample(range(PRIVATE_PORTS_FROM, low - 1),
                                        min(200, low - 1 - PRIVATE_PORTS_FROM))
    for port in candidates:
        if _bindable(port) and _bindable(port + 1):
            return port
    raise AssertionError(f"no free port pair between {PRIVATE_PORTS_FROM} and {low}")


PRIVATE_PORTS_FROM = 10_000


def ephemeral_ports_start() -> int:
    """The first port the kernel hands out as a source port (Linux's default when unknown);
    never below ``PRIVATE_PORTS_FROM`` + 1000, to leave room for the pairs."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    return max(low, PRIVATE_PORTS_FROM + 1000)


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class PrivateBroker:
    """A broker of this test's own (deploy/kafka/local-kafka on a free port, its own state
    directory), so the test can stop and start it. Never the shared one."""

    state: Path
    port: int = 0

    def __post_init__(self) -> None:
        self.port = self.port or free_port_pair()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> PrivateBroker:
        self._script("start")
        return self

    def stop(self) -> None:
        self._script("stop")

    def _script(self, action: str) -> None:
        env = {**os.environ, "LOCAL_KAFKA_PORT": str(self.port),
               "LOCAL_KAFKA_STATE": str(self.state)}
        result = subprocess.run([str(LOCAL_KAFKA), action], capture_output=True, text=True,
                                env=env, timeout=180)
        assert result.returncode == 0, f"local-kafka {action}: {result.stderr}{result.stdout}"


def scratch_dir(name: str) -> str:
    """A private directory for a service's local state (e.g. ``consumer.state_dir``)."""
    return tempfile.mkdtemp(prefix=f"levydrift-{name[:40]}-")
