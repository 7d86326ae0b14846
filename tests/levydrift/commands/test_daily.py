"""``levydrift daily`` and ``levydrift notify``: a rejected candidate is alerted but never
committed, a data URL is fetched (and its secret never printed), a rollback commits the alias
files, a job that died before its outcome is still notified."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from levydrift.cli import main
from tests.champions import train_champion
from tests.http_receiver import http_receiver
from trainer.registry import ModelRegistry

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "data" / "sample" / "levy_records.parquet"


@pytest.fixture
def champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry (under the working directory, as in the repository) with a champion."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEVYDRIFT_TRAINER_WINDOW_RECORDS", "4000")
    monkeypatch.setenv("LEVYDRIFT_TRAINER_MAX_ITER", "20")
    train_champion("models", records=4_000)
    return tmp_path / "models"


def daily(capsys: pytest.CaptureFixture[str], *arguments: str | Path) -> tuple[int, str]:
    code = main(["daily", *map(str, arguments)])
    return code, capsys.readouterr().out


def test_a_rejected_candidate_is_alerted_not_committed(
        champion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEVYDRIFT_TRAINER_GATE_MARGIN", "0.95")  # only a miracle passes
    code, out = daily(capsys, "--source", SAMPLE, "--out", tmp_path / "out")
    outcome = json.loads((tmp_path / "out" / "outcome.json").read_text())
    assert code == 0, out
    assert outcome["outcome"] == "rejected" and outcome["alert"] is True, outcome
    assert outcome["version"] == 2 and outcome["champion_after"] == 1
    assert outcome["gate"]["decision"] == "rejected"
    assert outcome["commit_paths"] == [] and outcome["commit_message"] == ""
    assert (tmp_path / "out" / "commit-paths.txt").read_text() == ""
    assert "levy-impact v2 rejected by the gate" in out

    with http_receiver() as (url, received):
        monkeypatch.setenv("LEVYDRIFT_NOTIFY_WEBHOOK_URLS", f"{url}/hook")
        assert main(["notify", "--outcome", str(tmp_path / "out" / "outcome.json"),
                     "--report-url", "https://ci/artifact/1"]) == 0
    assert [r.body["kind"] for r in received] == ["rejected"]
    assert "- gate: rejected: candidate MAE" in received[0].body["text"]
    assert "report: https://ci/artifact/1" in received[0].body["text"]


@contextmanager
def file_server(directory: Path) -> Iterator[str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *_: object) -> None:  # its log would print the URL's token
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_data_url_is_fetched_and_its_token_never_printed(
        champion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with file_server(SAMPLE.parent) as base:
        code, out = daily(capsys, "--source", f"{base}/{SAMPLE.name}?token=s3cr3t",
                          "--out", tmp_path / "url", "--check-only")
        missing = main(["daily", "--source", f"{base}/absent.csv?token=s3cr3t",
                        "--out", str(tmp_path / "missing")])
    outcome = json.loads((tmp_path / "url" / "outcome.json").read_text())
    assert code == 0 and outcome["rows"] == 16_000 and outcome["outcome"] == "drift"
    assert outcome["alert"] is True and not outcome["commit_paths"]
    assert ModelRegistry(champion).versions("levy-impact") == [1]  # --check-only
    err = capsys.readouterr().err
    assert missing == 2 and "data URL on 127.0.0.1 answered HTTP 404" in err
    assert main(["daily", "--source", "ftp://h/x.csv", "--out", str(tmp_path / "ftp")]) == 2
    assert "only http(s) URLs, file paths and topic:[NAME]" in capsys.readouterr().err
    assert "s3cr3t" not in out + err + json.dumps(outcome)


def test_a_rollback_commits_the_alias_files(
        champion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = ModelRegistry(champion)
    train_champion(champion, records=3_000, start=600_000)  # v2, whatever the gate said
    registry.set_alias("levy-impact", "champion", 2, "promoted", "test")
    code, out = daily(capsys, "--source", SAMPLE, "--out", tmp_path / "rb",
                      "--rollback", "v2 misprices farms")
    outcome = json.loads((tmp_path / "rb" / "outcome.json").read_text())
    assert code == 0 and outcome["outcome"] == "rolled_back"
    assert (outcome["champion_before"], outcome["champion_after"]) == (2, 1)
    assert outcome["commit_paths"] == ["models/levy-impact/aliases.json",
                                       "models/levy-impact/aliases_history.jsonl"]
    message = (tmp_path / "rb" / "commit-message.txt").read_text()
    assert message.startswith("models: levy-impact rolled back to v1 (was v2)\n")
    assert "reason: v2 misprices farms" in message


def test_a_job_that_died_before_its_outcome_is_notified(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    with http_receiver() as (url, received):
        monkeypatch.setenv("LEVYDRIFT_NOTIFY_WEBHOOK_URLS", f"{url}/hook")
        assert main(["notify", "--outcome", str(tmp_path / "never-written.json"),
                     "--run-url", "https://ci/runs/7"]) == 0
        (tmp_path / "quiet.json").write_text(json.dumps({"outcome": "no_drift",
                                                          "alert": False}))
        assert main(["notify", "--outcome", str(tmp_path / "quiet.json")]) == 0
    assert [(r.body["kind"], r.body["severity"]) for r in received] == [("failed", "critical")]
    assert received[0].body["run_url"] == "https://ci/runs/7"
    assert "nothing to notify (no_drift)" in capsys.readouterr().out


def test_an_out_dir_under_a_file_is_one_line(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """It was a traceback from removing the last outcome."""
    (tmp_path / "afile").write_text("x")
    assert main(["daily", "--source", str(SAMPLE), "--out", str(tmp_path / "afile" / "out"),
                 "--check-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "a file is in the way" not in err
    assert "cannot be used: Not a directory" in err
