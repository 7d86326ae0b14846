"""Progress of long work goes to stderr (JSON log lines, or one line rewritten on a terminal);
stdout keeps only the command's result; quick work says nothing."""

from __future__ import annotations

import io
import itertools
import json
import logging
from pathlib import Path

import pytest

from levydrift import progress as progress_module
from levydrift.cli import main
from levydrift.progress import Progress
from tests.kafka_helpers import wait_until


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_line_is_rewritten_and_cleared_at_the_end() -> None:
    terminal = _Terminal()
    with Progress("check", total=1000, unit="rows", stream=terminal, every_s=0) as progress:
        progress.phase("running the detectors")
        progress.update(500)
        wait_until(lambda: "500 of 1,000 rows" in terminal.getvalue(), 30, "a progress line")
    text = terminal.getvalue()
    assert "\n" not in text
    assert text.startswith("\r\033[Kcheck: running the detectors - 0 of 1,000 rows - 0s")
    assert text.endswith("\r\033[K")


def test_elsewhere_it_logs_each_phase_and_beats_while_nothing_updates(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="levydrift.progress")
    with Progress("train", stream=io.StringIO(), every_s=0) as progress:
        progress.phase("fitting")
        # No update while a model is fitted: the heartbeat still says what is going on.
        wait_until(lambda: len(caplog.records) >= 3, 30, "heartbeat lines")
    messages = [record.getMessage() for record in caplog.records]
    assert set(messages[:-1]) == {"fitting"} and messages[-1] == "done"


def test_work_quicker_than_the_interval_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="levydrift.progress")
    terminal = _Terminal()
    with Progress("simulate", total=10, stream=terminal, every_s=3600) as progress:
        progress.phase("sending")
        progress.update(10)
    with Progress("simulate", total=10, stream=io.StringIO(), every_s=3600) as progress:
        progress.phase("sending")
    assert terminal.getvalue() == "" and caplog.records == []


def _phases(stderr: str) -> list[str]:
    """The progress lines' messages, repeats (heartbeats) folded."""
    entries = [json.loads(line) for line in stderr.splitlines() if '"levydrift.progress"' in line]
    return [message for message, _ in itertools.groupby(e["message"] for e in entries)]


def test_simulate_check_and_train_report_progress_on_stderr_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(progress_module, "DEFAULT_EVERY_S", 0.0)  # show even quick work
    monkeypatch.chdir(tmp_path)
    for variable in ("LEVYDRIFT_CONFIG", "LEVYDRIFT_LOGGING_LEVEL"):
        monkeypatch.delenv(variable, raising=False)

    assert main(["simulate", "--records", "12000", "--labelled-share", "1",
                 "--scenario", "reassessment", "--output", "levy.csv"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.startswith("simulate: 12000 records")
    assert _phases(err) == ["writing levy.csv", "done"]

    assert main(["check", "--data-path", "levy.csv", "--registry", "models"]) in (0, 1)
    out, err = capsys.readouterr()
    assert "levydrift.progress" not in out and "rows" in out
    assert _phases(err) == ["reading levy.csv", "preparing 12,000 rows",
                            "running the detectors", "done"]

    assert main(["train", "--data-path", "levy.csv", "--registry", "models"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.startswith("levy-impact version 1: promoted")
    assert _phases(err) == ["reading levy.csv", "training levy-impact on 12,000 records, then "
                            "gating it against the champion", "done"]
