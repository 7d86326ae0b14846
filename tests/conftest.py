"""Shared fixtures: a real Kafka broker for integration tests, unique names per test.

The broker is, in order: the configured bootstrap address (LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS or
KAFKA_BOOTSTRAP_SERVERS); testcontainers' Kafka when a Docker engine answers; the local broker of
deploy/kafka/local-kafka (started here, and stopped here if this session started it). With
CI=true a missing broker fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parent.parent
LOCAL_KAFKA = REPO / "deploy" / "kafka" / "local-kafka"


def _broker_answers(bootstrap: str, timeout_s: float = 10.0) -> bool:
    try:
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout_s)
    except Exception:
        return False
    return bool(metadata.brokers)


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _no_broker(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"no Kafka broker in CI: {reason}", pytrace=False)
    pytest.skip(f"no Kafka broker: {reason}")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a real, answering Apache Kafka broker."""
    configured = (os.environ.get("LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS")
                  or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    if configured:
        if not _broker_answers(configured):
            _no_broker(f"the configured broker {configured} does not answer")
        yield configured
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    yield from _local_broker()


def _local_broker() -> Iterator[str]:
    port = os.environ.get("LOCAL_KAFKA_PORT", "9092")
    bootstrap = f"127.0.0.1:{port}"
    already_running = _broker_answers(bootstrap, timeout_s=3)
    if not already_running:
        started = subprocess.run([str(LOCAL_KAFKA), "start"], capture_output=True, text=True)
        if started.returncode != 0:
            _no_broker(f"deploy/kafka/local-kafka start failed: {started.stderr.strip()[-500:]}")
    try:
        yield bootstrap
    finally:
        if not already_running:
            subprocess.run([str(LOCAL_KAFKA), "stop"], capture_output=True)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic and group names, so tests never share state."""
    return uuid.uuid4().hex[:10]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that use the broker are marked ``kafka`` so ``-m 'not kafka'`` runs the pure ones."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
