"""trainer.registry: complete versions, atomic claims, aliases, history, rollback, tampering."""

from __future__ import annotations

import json
import os
import threading

import pytest
from sklearn.dummy import DummyRegressor

from levydrift.artifacts import load_version_dir
from levydrift.errors import ArtifactError, RegistryError
from trainer.registry import (
    CHAMPION,
    ModelRegistry,
    NewVersion,
    VersionInfo,
    utc_now,
)

NAME = "levy-impact"


def _candidate(decision: str = "promoted", events: list[str] | None = None,
               mae: float = 10.0, champion_version: int | None = None) -> NewVersion:
    estimator = DummyRegressor(constant=1.0, strategy="constant").fit([[0.0]], [1.0])
    metrics = {"mae": mae, "rmse": mae, "mape": 0.01, "r2": 0.9}
    return NewVersion(
        estimator=estimator, decision=decision, reason="test", candidate_metrics=metrics,
        champion_metrics=None, champion_version=champion_version, holdout_records=20,
        training_offsets=[{"topic": "levy.records", "partition": 0, "first_offset": 0,
                           "last_offset": 99}],
        training_records=100, data_sha256="ab" * 32, trigger_event_ids=events or ["e1"],
        feature_signature="sha256:test", code_version="test")


def _register(registry: ModelRegistry, decision: str = "promoted",
              events: list[str] | None = None) -> VersionInfo:
    """Register a candidate gated against the current champion, as training does."""
    return registry.register(NAME, _candidate(decision, events,
                                              champion_version=registry.champion(NAME)))


def test_a_version_has_all_its_files_and_moves_the_champion(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    info = _register(registry)
    assert info.version == 1
    assert sorted(p.name for p in info.path.iterdir()) == [
        "lineage.json", "manifest.json", "metrics.json", "model.skops"]
    assert info.manifest["status"] == "promoted"
    assert set(info.manifest["library_versions"]) >= {"scikit-learn", "skops", "numpy"}
    assert info.lineage["drift_event_ids"] == ["e1"]
    assert registry.champion(NAME) == 1
    assert [row["outcome"] for row in registry.training_history(NAME)] == ["promoted"]
    assert registry.alias_history(NAME)[0]["version"] == 1
    assert registry.version_for_event(NAME, "e1").version == 1
    assert registry.version_for_event(NAME, "other") is None
    # No staging left behind, and nothing but complete versions listed.
    assert list((tmp_path / NAME / "staging").iterdir()) == []


def test_a_rejected_version_leaves_the_champion(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    _register(registry, events=["e1"])
    rejected = _register(registry, "rejected", events=["e2"])
    assert rejected.manifest["status"] == "rejected"
    assert registry.champion(NAME) == 1
    assert registry.handled_event_ids(NAME) == {"e1": 1, "e2": 2}


def test_concurrent_registrations_get_distinct_numbers(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        _register(registry, events=[f"e{i}"]).version)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert len(registry.training_history(NAME)) == 6


def test_a_claimed_but_unfinished_number_is_skipped_not_reused(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    _register(registry)
    os.mkdir(tmp_path / NAME / "claims" / "2")  # a writer that died mid-training
    assert registry.versions(NAME) == [1]
    assert _register(registry, events=["e2"]).version == 3


def test_rollback_goes_one_step_back_each_time(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    for event in ("e1", "e2", "e3"):
        _register(registry, events=[event])
    assert registry.rollback(NAME) == (2, 3)
    assert registry.rollback(NAME) == (1, 2)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback(NAME)
    actions = [entry["action"] for entry in registry.alias_history(NAME)]
    assert actions == ["promoted"] * 3 + ["rolled_back"] * 2


def test_champion_at_a_time_comes_from_the_history(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    before = utc_now()
    _register(registry, events=["e1"])
    between = utc_now()
    _register(registry, events=["e2"])
    assert registry.champion_at(NAME, "2000-01-01T00:00:00.000Z") is None
    assert registry.champion_at(NAME, between) == 1
    assert registry.champion_at(NAME, utc_now()) == 2
    assert before <= between


def test_resolve_references(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    _register(registry, events=["e1"])
    _register(registry, "rejected", events=["e2"])
    assert registry.resolve(NAME).version == 1
    assert registry.resolve(f"{NAME}@{CHAMPION}").version == 1
    assert registry.resolve(f"{NAME}/2").version == 2
    with pytest.raises(RegistryError, match="no alias"):
        registry.resolve(f"{NAME}@challenger")
    with pytest.raises(RegistryError, match="no version 9"):
        registry.resolve(f"{NAME}/9")


def test_aliases_file_is_replaced_not_rewritten(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    _register(registry, events=["e1"])
    inode = (tmp_path / NAME / "aliases.json").stat().st_ino
    _register(registry, events=["e2"])
    assert (tmp_path / NAME / "aliases.json").stat().st_ino != inode
    assert json.loads((tmp_path / NAME / "aliases.json").read_text())["aliases"] == {
        CHAMPION: 2}


def test_a_tampered_artifact_is_refused_naming_the_version(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    info = _register(registry)
    data = bytearray(info.artifact_path.read_bytes())
    data[100] ^= 0xFF
    info.artifact_path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{NAME}/1.*SHA-256"):
        registry.load_model(NAME, 1)
    with pytest.raises(ArtifactError, match=rf"{NAME}/1"):
        load_version_dir(info.path)


def test_a_missing_artifact_is_refused(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    info = _register(registry)
    info.artifact_path.unlink()
    with pytest.raises(ArtifactError, match=rf"{NAME}/1.*missing"):
        registry.load_model(NAME, 1)


def test_a_write_the_disk_refuses_is_a_registry_error_and_leaves_no_version(tmp_path) -> None:
    """The model's versions directory cannot be made (a file in its way, as a full or
    read-only disk would refuse it): one RegistryError naming the fix, no version."""
    registry = ModelRegistry(tmp_path)
    registry.ensure_writable()
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "versions").write_text("in the way")
    with pytest.raises(RegistryError, match="registry.root"):
        _register(registry)
    (tmp_path / NAME / "versions").unlink()
    assert registry.versions(NAME) == []


def test_a_registry_root_that_is_a_file_is_a_registry_error(tmp_path) -> None:
    """Promote, rollback and reconcile take the model's lock first: that was a traceback."""
    (tmp_path / "models").write_text("x")
    with pytest.raises(RegistryError, match="cannot write to the model registry"):
        ModelRegistry(tmp_path / "models").rollback(NAME)
