"""Model hot-swap: the consumer scores with a verified champion and refuses a tampered one."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from levydrift.artifacts import save_model
from levydrift.features import feature_signature, to_model_frame
from schemas.drift_event import SourceOffsets
from schemas.model_version import Metrics, ModelVersionEvent
from tests.integration.consumer_harness import (
    ConsumerRun,
    Topics,
    produce_scenario,
    wait_processed,
)
from tests.kafka_helpers import wait_until
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


def load_failures(port: int) -> float:
    return sum(value for (name, _), value in scrape(port).items()
               if name == "levydrift_consumer_model_load_failures_total")


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
                                 "LEVYDRIFT_CONSUMER_REGISTRY_ROOT": str(registry)}).start()
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
