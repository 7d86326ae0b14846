"""Model hot-swap: the consumer scores with a verified champion and refuses a tampered one."""

from __future__ import annotations

import copy
import json
import socket
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LinearRegression

from consumer import champion
from consumer.champion import ChampionTracker
from consumer.state import decode_state
from levydrift.artifacts import save_model
from levydrift.features import TARGET, BaseLevyResidualRegressor, feature_signature, to_model_frame
from levydrift.model_checks import probe_frame
from levydrift.model_probe import ProbedVersions
from levydrift.simulator import LevySimulator
from schemas.drift_event import SourceOffsets
from schemas.model_version import Metrics, ModelVersionEvent
from tests.consumer.harness import (
    ConsumerRun,
    Topics,
    produce_scenario,
    produce_values,
    wait_processed,
)
from tests.kafka_helpers import read_all, wait_until
from tests.levy_data import levy_columns
from trainer.model import ModelParams, fit_model

MODEL = "levy-impact"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of the consumer's metrics endpoint, keyed by name and labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def champion_version(port: int) -> float | None:
    return scrape(port).get(("levydrift_consumer_champion_version", (("model", MODEL),)))


def load_failures(port: int, reason: str | None = None) -> float:
    return sum(value for (name, labels), value in scrape(port).items()
               if name == "levydrift_consumer_model_load_failures_total"
               and (reason is None or ("reason", reason) in labels))


def prediction_failures(port: int) -> float:
    return scrape(port).get(("levydrift_consumer_prediction_failures_total", ()), 0.0)


def version_event(version: int, artifact: Path, sha256: str) -> ModelVersionEvent:
    metrics = Metrics(mae=40.0, rmse=60.0, mape=0.01, r2=0.99)
    return ModelVersionEvent(
        model_name=MODEL, version=version, previous_version=version - 1 or None,
        decision="promoted", artifact_uri=str(artifact), artifact_sha256=sha256,
        holdout_records=100, candidate_metrics=metrics, champion_metrics=None,
        training_offsets=(SourceOffsets("levy.records", 0, 0, 999),),
        training_record_count=1000, trigger_event_ids=(), feature_signature=feature_signature(),
        code_version="test", created_at="2026-01-01T00:00:00Z")


def publish(bootstrap: str, topic: str, event: ModelVersionEvent) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=MODEL.encode(), value=event.to_bytes())
    assert producer.flush(30) == 0


def publish_model(bootstrap: str, topic: str, registry: Path, version: int,
                  model: object, tmp_path: Path) -> None:
    """Register ``model`` as ``version`` with its true hash and announce it as promoted."""
    staging = tmp_path / f"v{version}.skops"
    sha = save_model(model, staging)
    artifact = write_version(registry, version, staging.read_bytes(), sha)
    publish(bootstrap, topic, version_event(version, artifact, sha))


def write_version(registry: Path, version: int, data: bytes, manifest_sha: str) -> Path:
    """A registry version directory as the trainer lays it out: artifact and manifest."""
    directory = registry / MODEL / "versions" / str(version)
    directory.mkdir(parents=True)
    (directory / "model.skops").write_bytes(data)
    (directory / "manifest.json").write_text(json.dumps(
        {"model": MODEL, "version": version, "sha256": manifest_sha, "artifact": "model.skops"}))
    return directory / "model.skops"


def test_tampered_or_foreign_artifacts_are_refused_and_the_champion_keeps_serving(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    topics = Topics(unique).create(kafka_bootstrap)
    simulator = produce_scenario(kafka_bootstrap, topics.names["records"], "none", 4000, 0,
                                 labelled_share=1.0)
    model = fit_model(to_model_frame(simulator.columns(0, 4000), include_target=True),
                      ModelParams(max_iter=10))
    registry = tmp_path / "models"
    staging = tmp_path / "v1.skops"
    sha = save_model(model, staging)
    good = write_version(registry, 1, staging.read_bytes(), sha)
    publish(kafka_bootstrap, topics.names["model_versions"], version_event(1, good, sha))

    port = free_port()
    group = f"g-{unique}"
    run = ConsumerRun(kafka_bootstrap, topics, group, "solo", tmp_path / "consumer.log",
                      extra_env={"LEVYDRIFT_METRICS_PORT": str(port),
                                 "LEVYDRIFT_REGISTRY_ROOT": str(registry)}).start()
    wait_processed(kafka_bootstrap, group, topics, 4000, runs=[run])
    assert champion_version(port) == 1.0
    assert "champion swapped" in run.log()

    # A flipped byte: the manifest and the event still carry the original SHA-256.
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = write_version(registry, 2, bytes(data), sha)
    publish(kafka_bootstrap, topics.names["model_versions"], version_event(2, tampered, sha))
    wait_until(lambda: load_failures(port) >= 1, 30, "the tampered version to be refused")
    assert champion_version(port) == 1.0
    assert "fails its SHA-256 check" in run.log()

    # A valid model outside the registry root, announced with its true hash.
    publish(kafka_bootstrap, topics.names["model_versions"], version_event(3, staging, sha))
    wait_until(lambda: load_failures(port) >= 2, 30, "the foreign artifact to be refused")
    assert champion_version(port) == 1.0
    assert "outside the registry root" in run.log()
    assert run.stop() == 0


def start_consumer(bootstrap: str, topics: Topics, group: str, registry: Path,
                   log: Path) -> tuple[ConsumerRun, int]:
    """A consumer with its metrics on a free port, loading models from ``registry``."""
    port = free_port()
    run = ConsumerRun(bootstrap, topics, group, "solo", log,
                      extra_env={"LEVYDRIFT_METRICS_PORT": str(port),
                                 "LEVYDRIFT_REGISTRY_ROOT": str(registry)}).start()
    return run, port


def labelled_stream(bootstrap: str, unique: str, records: int) -> tuple[Topics, LevySimulator]:
    """Fresh topics and ``records`` stationary, labelled records on them."""
    topics = Topics(unique).create(bootstrap)
    return topics, produce_scenario(bootstrap, topics.names["records"], "none", records, 0,
                                    labelled_share=1.0)


def good_model(simulator: LevySimulator, records: int) -> BaseLevyResidualRegressor:
    return fit_model(to_model_frame(simulator.columns(0, records), include_target=True),
                     ModelParams(max_iter=10))


def damaged_model(model: BaseLevyResidualRegressor) -> BaseLevyResidualRegressor:
    """A sound model whose first tree sends the walk past its node array (SIGSEGV)."""
    damaged = copy.deepcopy(model)
    nodes = damaged.regressor_.steps[-1][1]._predictors[0][0].nodes
    nodes["left"][np.flatnonzero(nodes["is_leaf"] == 0)[0]] = 50_000_000
    return damaged


def fragile_model() -> BaseLevyResidualRegressor:
    """Sound and passing the probe batch, but trained on other counties and refusing unknown
    categories: it raises on the first batch of the simulator's stream."""
    probe = probe_frame().assign(**{TARGET: 100.0})
    frame = pd.concat([to_model_frame(levy_columns(2000, seed=4), include_target=True), probe],
                      ignore_index=True)
    model = fit_model(frame, ModelParams(max_iter=5))
    encoder = model.regressor_.named_steps["columns"].named_transformers_["categorical"]
    encoder.handle_unknown = "error"
    return model


def test_models_that_would_stop_the_consumer_are_refused_and_a_failing_one_replaced(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    topics, simulator = labelled_stream(kafka_bootstrap, unique, 3000)
    versions, registry = topics.names["model_versions"], tmp_path / "models"
    publish_model(kafka_bootstrap, versions, registry, 1, good_model(simulator, 3000), tmp_path)
    group = f"g-{unique}"
    run, port = start_consumer(kafka_bootstrap, topics, group, registry,
                               tmp_path / "consumer.log")
    wait_processed(kafka_bootstrap, group, topics, 3000, runs=[run])
    assert champion_version(port) == 1.0

    # An unfitted estimator skops trusts by default, with a true hash and manifest.
    publish_model(kafka_bootstrap, versions, registry, 2, LinearRegression(), tmp_path)
    wait_until(lambda: load_failures(port, "disallowed_type") >= 1, 60, "v2 to be refused")
    # Allow-listed types with tree arrays that crash native code.
    publish_model(kafka_bootstrap, versions, registry, 3,
                  damaged_model(good_model(simulator, 3000)), tmp_path)
    wait_until(lambda: load_failures(port, "invalid_model") >= 1, 60, "v3 to be refused")
    # An event that is not a model-version event at all.
    produce_values(kafka_bootstrap, versions, [(MODEL.encode(), b'{"schema_version": 1}')])
    wait_until(lambda: load_failures(port, "malformed_event") >= 1, 60, "the bad event counted")
    assert run.alive(), run.log()[-3000:]
    assert champion_version(port) == 1.0

    # A model that passes its probe but raises on the stream: replaced, never a crash.
    publish_model(kafka_bootstrap, versions, registry, 4, fragile_model(), tmp_path)
    wait_until(lambda: champion_version(port) == 4.0, 60, "v4 to pass its probe and serve")
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", 2000, 0, seed=8)
    wait_until(lambda: prediction_failures(port) >= 1, 60, "v4 to fail on the stream")
    wait_until(lambda: champion_version(port) == 1.0, 60, "v1 to take over from v4")
    wait_processed(kafka_bootstrap, group, topics, 5000, runs=[run])
    assert load_failures(port, "predict_failed") == 1
    log = run.log()
    assert "champion dropped after failing to predict" in log
    assert "Traceback" not in log
    assert run.stop() == 0


def test_a_restart_serves_the_newest_version_that_loads_and_snapshots_name_it(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    topics, simulator = labelled_stream(kafka_bootstrap, unique, 2000)
    versions, registry = topics.names["model_versions"], tmp_path / "models"
    model = good_model(simulator, 2000)
    publish_model(kafka_bootstrap, versions, registry, 1, model, tmp_path)
    # The newest event names a version whose bytes no longer match their hash.
    staging = tmp_path / "v2.skops"
    sha = save_model(model, staging)
    data = bytearray(staging.read_bytes())
    data[len(data) // 2] ^= 0x01
    publish(kafka_bootstrap, versions, version_event(2, write_version(registry, 2, bytes(data),
                                                                      sha), sha))
    group = f"g-{unique}"
    for restart, records in enumerate((2000, 3000)):
        if restart:
            produce_scenario(kafka_bootstrap, topics.names["records"], "none", 1000, 0, seed=9)
        run, port = start_consumer(kafka_bootstrap, topics, group, registry,
                                   tmp_path / "consumer.log")
        wait_processed(kafka_bootstrap, group, topics, records, runs=[run])
        assert champion_version(port) == 1.0
        assert load_failures(port, "sha256_mismatch") == 1
        assert run.stop() == 0
    snapshots = [decode_state(message.value())
                 for message in read_all(kafka_bootstrap, topics.names["detector_state"])]
    assert snapshots
    assert {snapshot.model_version for snapshot in snapshots} == {1}
    # v1 served after its child's probe; the restart served it again without one.
    swaps = [orjson.loads(line) for line in (tmp_path / "consumer.log").read_text().splitlines()
             if "champion swapped" in line]
    assert [swap["probe"] for swap in swaps] == ["child", "served here before"]


class SimulatedCrash(BaseException):
    """What a process that dies in native code does to the rest of its start: nothing runs."""


def test_a_version_that_served_here_skips_the_child_and_a_crash_while_loading_undoes_that(
        kafka_bootstrap: str, unique: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    topics, simulator = labelled_stream(kafka_bootstrap, unique, 10)
    registry = tmp_path / "models"
    publish_model(kafka_bootstrap, topics.names["model_versions"], registry, 1,
                  good_model(simulator, 2000), tmp_path)
    sha = json.loads((registry / MODEL / "versions" / "1" / "manifest.json").read_text())["sha256"]
    probed = ProbedVersions(tmp_path / "probes")
    children: list[Path] = []
    trusted_while_loading: list[bool] = []
    real_load = champion.load_version_dir

    class CountedProbe(champion.IsolatedProbe):
        def __init__(self, version_dir: Path, *args: object, **kwargs: object) -> None:
            children.append(Path(version_dir))
            super().__init__(version_dir, *args, **kwargs)  # type: ignore[arg-type]

    def load_noting_trust(version_dir: Path, expected_sha256: str | None = None) -> object:
        trusted_while_loading.append(probed.trusts(sha))
        return real_load(version_dir, expected_sha256=expected_sha256)

    def start(group: str) -> int | None:
        tracker = ChampionTracker({"bootstrap.servers": kafka_bootstrap, "group.id": group},
                                  topics.names["model_versions"], MODEL, registry,
                                  probed=probed)
        try:
            tracker.start(60)
            return tracker.version
        finally:
            tracker.close()

    monkeypatch.setattr(champion, "IsolatedProbe", CountedProbe)
    monkeypatch.setattr(champion, "load_version_dir", load_noting_trust)
    assert start(f"first-{unique}") == 1
    assert len(children) == 1 and probed.trusts(sha)  # probed in a child, then remembered

    assert start(f"second-{unique}") == 1
    assert len(children) == 1  # no child this time
    assert trusted_while_loading == [False, False]  # withdrawn while it loaded here
    assert probed.trusts(sha)  # and granted again once it served

    def crash(version_dir: Path, expected_sha256: str | None = None) -> object:
        raise SimulatedCrash
    monkeypatch.setattr(champion, "load_version_dir", crash)
    with pytest.raises(SimulatedCrash):
        start(f"third-{unique}")
    assert len(children) == 1 and not probed.trusts(sha)

    monkeypatch.setattr(champion, "load_version_dir", real_load)
    assert start(f"fourth-{unique}") == 1
    assert len(children) == 2  # the start after the crash probed it in a child again
