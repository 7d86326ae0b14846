"""``levydrift simulate`` end to end: to the real broker (keyed by parcel id) and to files, each
with its ground truth beside it, with or without late labels (co-partitioned with their
records); bad arguments and an unreachable broker fail in one line."""

from __future__ import annotations

import json
import time

import orjson
import pandas as pd
import pytest

from levydrift import progress as progress_module
from levydrift.cli import main
from levydrift.commands import simulate as simulate_module
from levydrift.simulator import LabelDelay, LevySimulator, SimulatorConfig, to_labels
from schemas.levy_label import decode_levy_label
from schemas.levy_record import decode_levy_record
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
    (["--topic", "t", "--labels", "l.jsonl"], "--labels FILE goes with --output"),
    (["--output", "levy.csv", "--labels-topic", "t"], "--labels-topic goes with Kafka"),
    (["--output", "levy.csv", "--labels", "labels.csv"], "labels are written as JSONL"),
    (["--output", "levy.jsonl", "--labels", "levy.jsonl"], "is the --output file"),
    (["--topic", "t", "--labels-topic", "t"], "is the records topic"),
    (["--output", "levy.csv", "--inline-actuals"], "--inline-actuals needs labels"),
    (["--output", "levy.csv", "--label-delay-days", "30"], "--label-delay-days needs labels"),
    (["--output", "levy.csv", "--with-labels", "--label-delay-days", "0"],
     "label delay median must be > 0"),
    (["--output", "levy.csv", "--with-labels", "--label-delay-sigma", "-1"],
     "label delay sigma"),
    (["--output", "levy.csv", "--with-labels", "--label-max-delay-days", "1e9"],
     "label delay maximum"),
    (["--output", "levy.csv", "--labels", "absent/late.jsonl"], "cannot write absent/late.jsonl"),
    (["--output", "absent/levy.csv"], "cannot write absent/levy.csv"),
])
def test_bad_arguments_fail_in_one_line(tmp_path, monkeypatch, capsys, arguments, message):
    monkeypatch.chdir(tmp_path)
    assert simulate(*arguments) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_an_output_under_a_file_fails_in_one_line(tmp_path, monkeypatch, capsys, suffix):
    """A path whose directory is a file: removing the partial file failed too, and that
    second error came out as a traceback."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert simulate("--output", f"afile/levy.{suffix}") == 2
    error = capsys.readouterr().err
    assert f"cannot write afile/levy.{suffix}" in error and error.count("\n") == 1


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


# ---------------------------------------------------------------------- late labels

def expected_labels(**config: object) -> dict[str, dict]:
    settings: dict[str, object] = {"seed": SEED, "parcels": 1_000, "change_at": RECORDS // 2,
                                   "duration": RECORDS // 10, **config}
    simulator = LevySimulator(SimulatorConfig(**settings))  # type: ignore[arg-type]
    return {label["record_id"]: label for label in to_labels(simulator.labels(0, RECORDS))}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_labels_go_to_their_own_file_and_the_records_lose_the_actual_levy(tmp_path, suffix,
                                                                          capsys):
    path = tmp_path / f"levy{suffix}"
    assert simulate("--output", str(path), "--with-labels", "--labelled-share", "0.5",
                    "--interval-ms", "600000", "--label-delay-days", "1") == 0
    labels = [orjson.loads(line) for line in
              (tmp_path / f"levy{suffix}.labels.jsonl").read_bytes().splitlines()]
    for label in labels:
        decode_levy_label(orjson.dumps(label))
    expected = expected_labels(labelled_share=0.5, event_interval_ms=600_000,
                               label_delay=LabelDelay(median_days=1.0))
    assert {label["record_id"]: label for label in labels} == expected
    assert len(labels) == pytest.approx(RECORDS / 2, rel=0.15)
    data = (pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
            if suffix == ".parquet" else pd.read_json(path, lines=True))
    assert len(data) == RECORDS
    assert "actual_levy_amount" not in data or data["actual_levy_amount"].isna().all()
    truth = json.loads((tmp_path / f"levy{suffix}.truth.json").read_text())
    assert truth["parameters"]["labels"]["labels"] == len(labels)
    assert truth["parameters"]["labels"]["delay"]["median_days"] == 1.0
    assert f"{len(labels)} labels to" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.partial"))


def test_inline_actuals_keep_the_levy_in_the_records_as_well(tmp_path):
    path, labels_path = tmp_path / "levy.jsonl", tmp_path / "late.jsonl"
    assert simulate("--output", str(path), "--labels", str(labels_path),
                    "--inline-actuals") == 0
    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    labels = [orjson.loads(line) for line in labels_path.read_bytes().splitlines()]
    assert records == expected_records()
    inline = {r["record_id"]: r["actual_levy_amount"] for r in records
              if "actual_levy_amount" in r}
    assert inline == {label["record_id"]: label["actual_levy_amount"] for label in labels}


class FakeProducer:
    """Records what would be produced: topic, key, value, and any explicit partition."""

    sent: list[tuple[str, bytes, bytes, object]] = []

    def __init__(self, _config: dict) -> None:
        FakeProducer.sent = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: object,
                **extra: object) -> None:
        FakeProducer.sent.append((topic, key, value, extra.get("partition")))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class FakeAdmin:
    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    def list_topics(self, timeout: float) -> object:
        class Topic:
            def __init__(self, count: int) -> None:
                self.partitions = dict.fromkeys(range(count))

        class Metadata:
            topics = {name: Topic(count) for name, count in self.partitions.items()}

        return Metadata()


def fake_broker(monkeypatch, partitions: dict[str, int]) -> None:
    monkeypatch.setattr(simulate_module, "admin_client", lambda _kafka: FakeAdmin(partitions))
    monkeypatch.setattr(simulate_module, "ensure_reachable", lambda *_args: None)
    monkeypatch.setattr(simulate_module, "Producer", FakeProducer)


def test_a_label_is_produced_after_its_record_with_the_same_key_and_partitioner(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_broker(monkeypatch, {"levy.records": 3, "levy.labels": 3})
    assert simulate("--with-labels", "--interval-ms", "600000", "--label-delay-days", "1",
                    "--order", "shuffled") == 0
    sent = FakeProducer.sent
    record_at = {orjson.loads(value)["record_id"]: (position, key)
                 for position, (topic, key, value, _) in enumerate(sent)
                 if topic == "levy.records"}
    labels = [(position, key, orjson.loads(value)) for position, (topic, key, value, _)
              in enumerate(sent) if topic == "levy.labels"]
    assert len(record_at) == RECORDS and labels
    assert {partition for *_, partition in sent} == {None}  # the configured partitioner
    for position, key, label in labels:
        record_position, record_key = record_at[label["record_id"]]
        assert key == record_key == label["parcel_id"].encode()
        assert record_position < position
    interleaved = [topic for topic, *_ in sent]
    assert interleaved.index("levy.labels") < len(interleaved) - len(labels)  # not all at the end


def test_topics_with_different_partition_counts_are_refused_in_one_line(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fake_broker(monkeypatch, {"levy.records": 6, "levy.labels": 3})
    assert simulate("--with-labels") == 2
    error = capsys.readouterr().err
    assert "levy.labels has 3 partitions but levy.records has 6" in error
    assert error.count("\n") == 1
    fake_broker(monkeypatch, {"levy.records": 6})
    assert simulate("--labels-topic", "late") == 2
    assert "topic late does not exist" in capsys.readouterr().err


def test_labels_land_in_their_records_partition_on_the_broker(
        kafka_bootstrap, unique, tmp_path, monkeypatch):
    monkeypatch.setenv("LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.chdir(tmp_path)
    records_topic, labels_topic = f"levy.records.l-{unique}", f"levy.labels.l-{unique}"
    create_topic(kafka_bootstrap, records_topic, partitions=4)
    create_topic(kafka_bootstrap, labels_topic, partitions=4)
    assert simulate("--topic", records_topic, "--labels-topic", labels_topic,
                    "--labelled-share", "0.5", "--scenario", "homestead-relief") == 0
    records = read_all(kafka_bootstrap, records_topic)
    labels = read_all(kafka_bootstrap, labels_topic)
    partition_of = {decode_levy_record(m.value()).record_id: m.partition() for m in records}
    assert len(partition_of) == RECORDS
    assert all(decode_levy_record(m.value()).actual_levy_amount is None for m in records)
    decoded = [decode_levy_label(m.value()) for m in labels]
    assert {label.record_id for label in decoded} == set(
        expected_labels(labelled_share=0.5, scenario="homestead-relief"))
    assert len({m.partition() for m in labels}) > 1
    for message, label in zip(labels, decoded, strict=True):
        assert message.key() == label.parcel_id.encode()
        assert message.partition() == partition_of[label.record_id]
