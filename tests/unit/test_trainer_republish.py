"""After a crash between registering a version and publishing its event, the worker publishes
it on restart, unless an operator rolled that promotion back in the meantime."""

from __future__ import annotations

from dataclasses import replace

from tests.unit.test_registry_files import NAME, _candidate
from trainer.config import TrainerSection, TrainerSettings
from trainer.worker import TrainWorker


def worker_on(root) -> TrainWorker:
    return TrainWorker(replace(TrainerSettings(), trainer=replace(
        TrainerSection(), registry_root=str(root), model_name=NAME)))


def test_a_rolled_back_promotion_is_not_announced(tmp_path) -> None:
    worker = worker_on(tmp_path)
    worker.registry.register(NAME, _candidate(events=["e1"]))
    unpublished = worker.registry.register(NAME, _candidate(events=["e2"]))
    worker.registry.rollback(NAME)  # the operator, while the worker was down

    assert worker._still_true([unpublished]) == []
    assert worker.registry.get(NAME, unpublished.version).published


def test_a_promotion_still_in_force_and_a_rejection_are_announced(tmp_path) -> None:
    worker = worker_on(tmp_path)
    champion = worker.registry.register(NAME, _candidate(events=["e1"]))
    rejected = worker.registry.register(NAME, _candidate("rejected", events=["e2"]))
    assert worker._still_true([champion, rejected]) == [champion, rejected]
    assert not worker.registry.get(NAME, champion.version).published
