"""A champion in a fresh registry, trained on the simulated world's history (labelled records
far past any test file's rows), as the batch-path tests start from."""

from __future__ import annotations

from pathlib import Path

from levydrift.features import to_model_frame
from levydrift.simulator import LevySimulator, SimulatorConfig
from trainer.model import ModelParams
from trainer.registry import ModelRegistry
from trainer.training import TrainingRequest, train_and_register


def train_champion(root: str | Path, records: int = 2_000, max_iter: int = 20,
                   start: int = 500_000) -> None:
    history = LevySimulator(SimulatorConfig(labelled_share=1.0)).columns(start, start + records)
    train_and_register(ModelRegistry(root), "levy-impact", TrainingRequest(
        frame=to_model_frame(history, include_target=True), trigger_event_ids=[],
        training_offsets=[], code_version="test", params=ModelParams(max_iter=max_iter)))
