"""``levydrift schedule``: runs on an interval until stopped, one JSON line per run, retrains
on a cadence, and a SIGTERM stops the real process cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from levydrift.commands.check_result import CheckSettings
from levydrift.commands.schedule import Job, schedule_loop
from levydrift.commands.simulate import write_file
from levydrift.features import to_model_frame
from levydrift.simulator import LevySimulator, SimulatorConfig
from trainer.config import TrainerSection
from trainer.model import ModelParams
from trainer.registry import ModelRegistry
from trainer.training import TrainingRequest, train_and_register

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def drifting_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schedule") / "records.parquet"
    # Benton (28 % of rows) has its own 2,000-value reference before the change at 10,000.
    config = SimulatorConfig(scenario="levy-rate-change", change_at=10_000, labelled_share=0.5,
                             county="Benton")
    write_file(LevySimulator(config), 20_000, path)
    return path


def test_two_runs_on_a_short_interval_then_stop(drifting_file: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    history = LevySimulator(SimulatorConfig(labelled_share=1.0)).columns(500_000, 502_000)
    train_and_register(ModelRegistry(root), "levy-impact", TrainingRequest(
        frame=to_model_frame(history, include_target=True), trigger_event_ids=[],
        training_offsets=[], code_version="test", params=ModelParams(max_iter=10)))
    settings = CheckSettings(trainer=TrainerSection(max_iter=10, window_records=3_000))
    job = Job(settings, drifting_file, 0, None, trigger_retraining=False,
              publish_events=False, retrain_every=2, model="levy-impact", registry=str(root))
    stop = threading.Event()
    entries: list[dict[str, Any]] = []

    def emit(entry: dict[str, Any]) -> None:
        entries.append(entry)
        if entry.get("run") == 4:
            stop.set()  # as SIGTERM would, while the loop waits out its interval

    assert schedule_loop(job.run, 0.2, stop, emit) == 0
    runs = [entry for entry in entries if "run" in entry]
    assert [entry["run"] for entry in runs] == [1, 2, 3, 4]
    assert all(entry["drift"] and "levy_rate" in entry["signals"] for entry in runs)
    assert runs[0]["retraining"] is None  # the cadence is every 2nd run
    assert runs[1]["retraining"].startswith("scheduled levy-impact version 2:")
    # The same file again: version 2 already learnt it; no second version of the same data.
    assert runs[3]["retraining"] == ("scheduled: version 2 was trained on the same data; "
                                     "skipped"), runs[3]
    assert ModelRegistry(root).versions("levy-impact") == [1, 2]
    assert entries[-1]["runs"] == 4 and "stopped_at" in entries[-1]
    json.dumps(entries)  # each entry is one JSON line


def test_a_failing_run_is_logged_and_the_schedule_goes_on(tmp_path: Path) -> None:
    job = Job(CheckSettings(), tmp_path / "absent.csv", 0, None, False, False, 0,
              "levy-impact", str(tmp_path / "models"))
    entries: list[dict[str, Any]] = []
    stop = threading.Event()
    schedule_loop(job.run, 0.05, stop,
                  lambda entry: (entries.append(entry), len(entries) >= 2 and stop.set()))
    assert entries[0]["exit_code"] == 2 and "no such file" in entries[0]["error"]
    assert entries[1]["run"] == 2


def test_sigterm_stops_the_process_cleanly(drifting_file: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "levydrift.cli", "schedule", "--interval", "24",
         "--data-path", str(drifting_file), "--registry", str(tmp_path / "models")],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, env=env, cwd=REPO)
    try:
        first = json.loads(process.stdout.readline())  # blocks until the first run is done
        assert first["run"] == 1 and first["exit_code"] == 1
        process.send_signal(signal.SIGTERM)  # now waiting out a 24-hour interval
        assert process.wait(timeout=20) == 0
        last = json.loads(process.stdout.readline())
        assert last["runs"] == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
