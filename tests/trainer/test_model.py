"""trainer.model and ``levydrift train``: the pipeline learns levies; the CLI trains from files."""

from __future__ import annotations

import numpy as np

from levydrift.artifacts import file_sha256
from levydrift.cli import main
from levydrift.features import TARGET, base_levy, to_model_frame
from levydrift.simulator import LevySimulator, SimulatorConfig
from trainer.evaluation import holdout_metrics
from trainer.model import ModelParams, fit_model, predict
from trainer.registry import ModelRegistry

SIMULATOR = LevySimulator(SimulatorConfig(seed=3, labelled_share=1.0, parcels=2_000))


def test_the_model_beats_the_bare_levy_formula() -> None:
    train = to_model_frame(SIMULATOR.columns(0, 4000), include_target=True)
    test = to_model_frame(SIMULATOR.columns(4000, 5000), include_target=True)
    model = fit_model(train, ModelParams(max_iter=50))
    actual = test[TARGET].to_numpy()
    learned = holdout_metrics(actual, predict(model, test))
    formula = holdout_metrics(actual, base_levy(test))
    assert learned.r2 > 0.99
    assert learned.mae < formula.mae


def test_train_command_registers_from_csv_and_parquet(tmp_path, capsys) -> None:
    frame = SIMULATOR.frame(0, 1500)
    frame.to_csv(tmp_path / "levy.csv", index=False)
    frame.to_parquet(tmp_path / "levy.parquet")
    for name in ("levy.csv", "levy.parquet"):
        assert main(["train", "--data-path", str(tmp_path / name),
                     "--registry", str(tmp_path / "models")]) == 0
    registry = ModelRegistry(tmp_path / "models")
    assert registry.versions("levy-impact") == [1, 2]
    content = file_sha256(tmp_path / "levy.csv")[:12]
    assert registry.get("levy-impact", 1).lineage["training_window"]["offsets"][0][
        "topic"] == f"file.levy.csv.{content}"
    assert "version 1: promoted" in capsys.readouterr().out
    assert np.isfinite(registry.get("levy-impact", 2).metrics["candidate"]["mae"])


def test_train_command_reports_a_bad_file_in_one_line(tmp_path, capsys) -> None:
    (tmp_path / "levy.txt").write_text("x")
    assert main(["train", "--data-path", str(tmp_path / "levy.txt")]) == 2
    assert main(["train", "--data-path", str(tmp_path / "missing.csv")]) == 2
    (tmp_path / "nolabels.csv").write_text("county\nBenton\n")
    assert main(["train", "--data-path", str(tmp_path / "nolabels.csv")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3
    assert "unknown file type" in errors[0] and "no such file" in errors[1]
    assert "actual_levy_amount" in errors[2]


def test_train_command_reports_an_unwritable_registry_in_one_line_before_training(
        tmp_path, capsys, monkeypatch) -> None:
    """A regular file where the registry root should be (as root, no permission bit stops
    a write; a path that cannot be a directory does). It ended in a traceback after the
    whole training run."""
    SIMULATOR.frame(0, 1500).to_csv(tmp_path / "levy.csv", index=False)
    (tmp_path / "models").write_text("not a directory")
    fitted = []
    monkeypatch.setattr("trainer.training.fit_model",
                        lambda *args, **kwargs: fitted.append(1) or fit_model(*args, **kwargs))
    assert main(["train", "--data-path", str(tmp_path / "levy.csv"),
                 "--registry", str(tmp_path / "models")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert "cannot write to the model registry" in error and "registry.root" in error
    assert not fitted, "the model was trained before the registry was found unwritable"


def test_train_command_trains_on_each_record_once(tmp_path) -> None:
    frame = SIMULATOR.frame(0, 1500)
    frame = frame.iloc[list(range(1500)) + list(range(300))]  # a slice exported twice
    frame.to_csv(tmp_path / "levy.csv", index=False)
    assert main(["train", "--data-path", str(tmp_path / "levy.csv"),
                 "--registry", str(tmp_path / "models")]) == 0
    version = ModelRegistry(tmp_path / "models").get("levy-impact", 1)
    assert version.lineage["training_window"]["record_count"] == 1500
