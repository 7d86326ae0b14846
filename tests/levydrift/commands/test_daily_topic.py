"""``levydrift daily --source topic:NAME`` on the real broker: the last window of the records
topic is checked, drift retrained once, and the same window read again is handled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from levydrift.cli import main
from tests.kafka_helpers import create_topic
from trainer.registry import ModelRegistry


def test_the_last_window_of_the_topic_is_checked_and_retrained_once(
        kafka_bootstrap: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("LEVYDRIFT_TRAINER_MAX_ITER", "20")
    monkeypatch.chdir(tmp_path)
    topic = f"levy.records.daily-{unique}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    # As the shipped sample: long enough for every county's own warm-up before the change.
    assert main(["simulate", "--topic", topic, "--records", "16000", "--change-at", "11000",
                 "--scenario", "levy-rate-change", "--magnitude", "0.008", "--county", "Benton",
                 "--labelled-share", "0.5", "--seed", "2026",
                 "--truth", str(tmp_path / "truth.json")]) == 0
    outcomes = []
    for run in ("first", "second"):
        assert main(["daily", "--source", f"topic:{topic}", "--out", str(tmp_path / run),
                     "--window-records", "20000"]) == 0  # all of it
        outcomes.append(json.loads((tmp_path / run / "outcome.json").read_text()))
    capsys.readouterr()
    assert outcomes[0]["rows"] == 16000 and outcomes[0]["source"].startswith(topic)
    assert outcomes[0]["outcome"] == "promoted" and "levy_rate" in outcomes[0]["signals"]
    assert outcomes[1]["outcome"] == "drift_handled", outcomes[1]
    lineage = ModelRegistry("models").get("levy-impact", 1).lineage
    assert lineage["training_window"]["offsets"][0]["topic"].startswith(f"window.{topic}.")
