"""``levydrift simulate`` end to end: to the real broker (keyed by parcel id) and to files, each
with its ground truth beside it; bad arguments and an unreachable broker fail in one line."""

from __future__ import annotations

import json
import time

import orjson
import pandas as pd
import pytest

from levydrift import progress as progress_module
from levydrift.cli import main
from levydrift.simulator import LevySimulator, SimulatorConfig
from tests.kafka_helpers import create_topic, read_all

SEED = 5
RECORDS = 400


def expected_records(scenario: str = "none", change_at: int = RECORDS // 2) -> list[dict]:
    config = SimulatorConfig(seed=SEED, scenario=scenario, change_at=change_at, parcels=1_000,
                             duration=RECORDS // 10)
    return list(LevySimulator(config).records(0, RECORDS))


def simulate(*arguments: str) -> int:
    return main(["simulate", "--seed", str(SEED), "--records", str(RECORDS),
                 "--parcels", "1000", *arguments])


def test_simulate_writes_every_record_to_the_topic_keyed_by_parcel_id(
        kafka_bootstrap, unique, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setattr(progress_module, "DEFAULT_EVERY_S", 0.0)  # show even 400 records
    topic = f"levy.records.sim-{unique}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    truth_path = tmp_path / "truth.json"

    assert simulate("--topic", topic, "--scenario", "unit-bug", "--truth", str(truth_path)) == 0

    messages = read_all(kafka_bootstrap, topic)
    values = [orjson.loads(message.value()) for message in messages]
    assert all(message.key() == value["parcel_id"].encode()
               for message, value in zip(messages, values, strict=True))
    by_id = {value["record_id"]: value for value in values}
    expected = expected_records("unit-bug")
    assert by_id == {record["record_id"]: record for record in expected}
    # One parcel's records share a key, hence a partition, in production order.
    per_parcel: dict[str, list[int]] = {}
    for message in messages:
        per_parcel.setdefault(message.key(), []).append(message.partition())
    assert all(len(set(partitions)) == 1 for partitions in per_parcel.values())
    truth = json.loads(truth_path.read_text())
    assert (truth["scenario"], truth["change_index"], truth["end_index"]) == \
        ("unit-bug", RECORDS // 2, RECORDS // 2 + RECORDS // 10)
    assert truth["change_record_id"] in by_id
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1  # stdout is the result alone: progress is on stderr
    assert f"{RECORDS} records" in captured.out and str(truth_path) in captured.out
    progress = [json.loads(line) for line in captured.err.splitlines()
                if '"levydrift.progress"' in line]
    assert [p["message"] for p in progress][:1] == [f"sending to {topic}"]
    assert (progress[-1]["message"], progress[-1]["done"]) == ("done", RECORDS)


def test_simulate_at_a_rate_paces_the_stream(kafka_bootstrap, unique, tmp_path, monkeypatch):
    monkeypatch.setenv("LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.chdir(tmp_path)  # the default truth file lands in the working directory
    topic = f"levy.records.rate-{unique}"
    create_topic(kafka_bootstrap, topic)
    started = time.monotonic()
    assert main(["simulate", "--records", "60", "--rate", "100", "--topic", topic]) == 0
    assert time.monotonic() - started >= 0.55
    assert len(read_all(kafka_bootstrap, topic)) == 60
    assert (tmp_path / f"{topic}.truth.json").exists()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_simulate_writes_a_file_and_its_ground_truth(tmp_path, suffix, capsys):
    path = tmp_path / f"levy{suffix}"
    assert simulate("--output", str(path), "--scenario", "reassessment",
                    "--change-at", "150") == 0

    if suffix == ".jsonl":
        records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    else:
        data = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        records = [{k: v for k, v in row.items() if not pd.isna(v)}
                   for row in data.to_dict("records")]
    assert records == expected_records("reassessment", change_at=150)
    truth = json.loads((tmp_path / f"levy{suffix}.truth.json").read_text())
    assert truth["scenario"] == "reassessment" and truth["change_index"] == 150
    assert truth["records"] == RECORDS and truth["affected_counties"]
    assert not list(tmp_path.glob("*.partial"))
    assert "truth:" in capsys.readouterr().out


def test_file_records_pass_the_record_codec(tmp_path):
    levy_record = pytest.importorskip("schemas.levy_record")
    path = tmp_path / "levy.jsonl"
    assert simulate("--output", str(path), "--scenario", "new-property-class") == 0
    for line in path.read_bytes().splitlines():
        levy_record.decode_levy_record(line)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--output", "levy.txt"], "unknown format .txt"),
    (["--output", "levy.csv", "--labelled-share", "2"], "labelled share"),
    (["--output", "levy.csv", "--start-time", "yesterday"], "not RFC 3339"),
    (["--topic", "t", "--rate", "0"], "--rate must be > 0"),
])
def test_bad_arguments_fail_in_one_line(tmp_path, monkeypatch, capsys, arguments, message):
    monkeypatch.chdir(tmp_path)
    assert simulate(*arguments) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_an_unreachable_broker_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("LEVYDRIFT_KAFKA_REQUEST_TIMEOUT_S", "1")
    monkeypatch.chdir(tmp_path)
    assert simulate("--topic", "levy.records") == 3
    error = capsys.readouterr().err
    assert "did not answer" in error and error.count("\n") == 1


def test_a_missing_topic_is_named(kafka_bootstrap, unique, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.chdir(tmp_path)
    assert simulate("--topic", f"absent-{unique}") == 2
    assert f"topic absent-{unique} does not exist" in capsys.readouterr().err
