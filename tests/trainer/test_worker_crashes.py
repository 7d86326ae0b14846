"""Crash the trainer (``os._exit`` at a named step: no cleanup of any kind) at every step of
train -> stage -> rename -> alias move -> publish, and ``registry promote``/``rollback`` between
their move and its announcement; after a restart the version is champion *and* announced
exactly once (or neither), and the episode was trained once. Real processes, real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from levydrift.faults import CRASH_EXIT_CODE, CRASH_VARIABLE
from schemas.model_version import ModelVersionEvent
from tests.kafka_helpers import wait_until
from tests.trainer.test_worker import NAME, REPO, Stack, two_promoted_versions
from trainer.registry import ModelRegistry


class Run:
    """One ``levydrift`` command as a process, its output in a file."""

    def __init__(self, config: Path, *arguments: str, crash_at: str | None = None) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")}
        if crash_at:
            environment[CRASH_VARIABLE] = crash_at
        self.log = config.parent / f"run-{time.time_ns()}.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "levydrift.cli", "--config", str(config), *arguments],
                cwd=REPO, env=environment, stdout=sink, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def finished(self, timeout_s: float = 180) -> tuple[int, str]:
        try:
            return self.process.wait(timeout_s), self.output()
        except subprocess.TimeoutExpired:
            self.process.kill()  # never leave a process behind a failed test
            self.process.wait()
            raise

    def stop(self) -> None:
        """SIGTERM once the service runs; it must exit 0."""
        try:
            wait_until(lambda: "train-worker started" in self.output(), 120, "the worker to start")
            self.process.send_signal(signal.SIGTERM)
            code, output = self.finished(60)
            assert code == 0, output[-3000:]
        finally:
            if self.process.poll() is None:
                self.process.kill()


def champion_events(stack: Stack) -> list[tuple[str, int]]:
    return [(event.decision, event.version) for event in stack.version_events()
            if event.decision != "rejected"]


@pytest.fixture
def stack(kafka_bootstrap: str, unique: str, tmp_path: Path) -> Stack:
    return Stack(kafka_bootstrap, unique, tmp_path)


# What the registry and the topic hold right after the crash: proof it struck where named.
AFTER_CRASH = {
    "after_train": dict(versions=[], champion=None, events=[]),
    "after_stage": dict(versions=[], champion=None, events=[]),
    "after_rename": dict(versions=[1], champion=None, events=[]),
    "after_alias": dict(versions=[1], champion=1, events=[]),
    "after_publish": dict(versions=[1], champion=1, events=[("promoted", 1)]),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(AFTER_CRASH))
def test_a_worker_crash_at_any_step_ends_champion_and_announced_once(
        stack: Stack, tmp_path: Path, point: str) -> None:
    ends = stack.produce_records(3000)
    config = stack.config_file(tmp_path)
    event = stack.send_event(ends, "2026-03-01T00:00:00Z")
    code, output = Run(config, "train-worker", crash_at=point).finished()
    assert code == CRASH_EXIT_CODE, output[-3000:]
    registry = ModelRegistry(stack.root)
    expected = AFTER_CRASH[point]
    assert registry.versions(NAME) == expected["versions"]
    assert registry.champion(NAME) == expected["champion"]
    assert champion_events(stack) == expected["events"]

    worker = Run(config, "train-worker")

    def settled() -> bool:
        versions = registry.versions(NAME)
        return (stack.committed() == 1 and len(versions) == 1
                and registry.get(NAME, versions[0]).published)

    wait_until(settled, 180, "the restarted worker to settle the episode", interval_s=0.5)
    worker.stop()
    (version,) = registry.versions(NAME)
    assert registry.champion(NAME) == version
    assert registry.get(NAME, version).lineage["drift_event_ids"] == [event.event_id]
    assert champion_events(stack) == [("promoted", version)]
    trained = [row for row in registry.training_history(NAME) if row["outcome"] != "failed"]
    assert [row["version"] for row in trained] == [str(version)]
    assert list((stack.root / NAME / "staging").iterdir()) == []


def two_announced_champions(stack: Stack, tmp_path: Path) -> tuple[ModelRegistry, Path]:
    """Versions 1 and 2, both promoted, and the topic saying version 2 is champion."""
    registry = two_promoted_versions(stack)
    config = stack.config_file(tmp_path)
    code, output = Run(config, "registry", "reconcile", NAME).finished()
    assert code == 0, output
    assert champion_events(stack) == [("promoted", 2)]
    return registry, config


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_alias", "after_publish"])
def test_a_rollback_cut_short_is_announced_exactly_once_by_the_next_start(
        stack: Stack, tmp_path: Path, point: str) -> None:
    registry, config = two_announced_champions(stack, tmp_path)
    code, output = Run(config, "registry", "rollback", NAME, crash_at=point).finished()
    assert code == CRASH_EXIT_CODE, output
    assert registry.champion(NAME) == 1
    announced = [("promoted", 2)] + ([("rolled_back", 1)] if point == "after_publish" else [])
    assert champion_events(stack) == announced

    worker = Run(config, "train-worker")  # reconciles on start
    wait_until(lambda: champion_events(stack)[-1] == ("rolled_back", 1), 120,
               "the worker to announce the rollback")
    worker.stop()
    code, output = Run(config, "registry", "reconcile", NAME).finished()
    assert code == 0 and "agree" in output, output
    assert champion_events(stack) == [("promoted", 2), ("rolled_back", 1)]
    rollback: ModelVersionEvent = stack.version_events()[-1]
    assert (rollback.previous_version, rollback.artifact_sha256) == (
        2, registry.get(NAME, 1).sha256)


def test_a_promotion_cut_short_is_announced_by_the_next_registry_command(
        stack: Stack, tmp_path: Path) -> None:
    registry, config = two_announced_champions(stack, tmp_path)
    code, output = Run(config, "registry", "promote", f"{NAME}/1",
                       crash_at="after_alias").finished()
    assert code == CRASH_EXIT_CODE, output
    assert registry.champion(NAME) == 1
    assert champion_events(stack) == [("promoted", 2)]  # the fleet still serves 2

    code, output = Run(config, "registry", "reconcile").finished()
    assert code == 0 and f"{NAME}: announced promoted version 1" in output, output
    code, output = Run(config, "registry", "reconcile").finished()
    assert code == 0 and "agree" in output, output
    assert champion_events(stack) == [("promoted", 2), ("promoted", 1)]
