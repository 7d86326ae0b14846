"""The trainer worker on a broker of its own that goes away: it waits out an outage (here in the
middle of a retrain, so the commit meets it) and carries on when the broker is back, with the
episode announced once; past ``trainer.broker_outage_limit_s`` it exits with one line, code 3.
Never the shared broker: these tests start and stop their own (deploy/kafka/local-kafka)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.test_local_kafka import free_port_pair, script
from tests.kafka_helpers import wait_until
from tests.trainer.test_worker import NAME, Stack
from tests.trainer.test_worker_crashes import Run
from trainer.registry import ModelRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


class OwnBroker:
    """A broker on a free port with its own state directory, stopped and started at will."""

    def __init__(self, state: Path) -> None:
        self.port = free_port_pair()
        self.env = {**os.environ, "LOCAL_KAFKA_PORT": str(self.port),
                    "LOCAL_KAFKA_STATE": str(state)}
        self.bootstrap = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        started = script("start", self.env)
        assert started.returncode == 0, started.stderr + started.stdout

    def stop(self) -> None:
        stopped = script("stop", self.env)
        assert stopped.returncode == 0, stopped.stderr + stopped.stdout


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    broker = OwnBroker(tmp_path / "kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def config_with_limit(stack: Stack, tmp_path: Path, limit_s: float, max_iter: int) -> Path:
    path = stack.config_file(tmp_path, max_iter=max_iter)
    path.write_text(path.read_text().replace(
        "[trainer]\n", f"[trainer]\nbroker_outage_limit_s = {limit_s}\n", 1))
    return path


def test_the_worker_waits_out_an_outage_during_a_retrain_and_announces_once(
        own_broker: OwnBroker, unique: str, tmp_path: Path) -> None:
    stack = Stack(own_broker.bootstrap, unique, tmp_path)
    ends = stack.produce_records(3000)
    worker = Run(config_with_limit(stack, tmp_path, 300, max_iter=300), "train-worker")
    try:
        wait_until(lambda: "train-worker started" in worker.output(), 120, "the worker to start")
        event = stack.send_event(ends, "2026-03-01T00:00:00Z")
        wait_until(lambda: "fitting a candidate" in worker.output(), 120, "training to start")
        own_broker.stop()  # the commit after this fit meets a dead broker
        wait_until(lambda: "Kafka unreachable; retrying" in worker.output(), 180,
                   "the worker to notice the outage", interval_s=0.5)
        time.sleep(20)  # an outage, not a blip: the condition to wait for is its length
        assert worker.process.poll() is None, worker.output()[-3000:]
        own_broker.start()
        wait_until(lambda: stack.version_events() and stack.committed() == 1, 240,
                   "the episode to be announced after the outage", interval_s=1.0)
        assert "Kafka reachable again" in worker.output()
        worker.stop()
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
    registry = ModelRegistry(stack.root)
    (version,) = registry.versions(NAME)
    assert registry.champion(NAME) == version
    assert registry.get(NAME, version).lineage["drift_event_ids"] == [event.event_id]
    assert [(e.decision, e.version) for e in stack.version_events()] == [("promoted", version)]


def test_an_outage_past_the_limit_ends_the_worker_with_one_line_and_code_3(
        own_broker: OwnBroker, unique: str, tmp_path: Path) -> None:
    stack = Stack(own_broker.bootstrap, unique, tmp_path)
    limit_s = 15.0
    worker = Run(config_with_limit(stack, tmp_path, limit_s, max_iter=10), "train-worker")
    try:
        wait_until(lambda: "train-worker started" in worker.output(), 120, "the worker to start")
        # Timed from the stop's start: a broker shutting down refuses connections before the
        # script returns (seconds under load), and the worker's outage may start there.
        stopping_at = time.monotonic()
        own_broker.stop()
        code = worker.process.wait(timeout=limit_s + 120)
        took = time.monotonic() - stopping_at
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
        own_broker.start()  # the fixture stops it again
    output = worker.output()
    assert code == 3, output[-3000:]
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("levydrift train-worker: Kafka at 127.0.0.1:"), last
    assert "trainer.broker_outage_limit_s" in last
    assert limit_s <= took < limit_s + 90, took
