"""Every trained version carries its holdout sample, the consumer's detector reference while it
is champion; the sample is checked against the manifest before use."""

from __future__ import annotations

import json

import numpy as np
import pytest

from consumer.processing import PartitionMonitor
from detectors.composition import whole_window_counts
from detectors.config import DetectorSettings
from detectors.reference import Reference
from levydrift.artifacts import (
    load_composition,
    load_reference_sample,
    with_training_composition,
)
from levydrift.errors import ArtifactError
from levydrift.features import CATEGORICAL_FEATURES, to_model_frame
from levydrift.simulator import LevySimulator, SimulatorConfig
from trainer.model import ModelParams
from trainer.registry import ModelRegistry
from trainer.training import TrainingRequest, train_and_register

NAME = "levy-impact"


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory):
    frame = to_model_frame(LevySimulator(SimulatorConfig(seed=8, labelled_share=1.0)).columns(
        0, 3000), include_target=True)
    registry = ModelRegistry(tmp_path_factory.mktemp("registry"))
    return train_and_register(registry, NAME, TrainingRequest(
        frame=frame, trigger_event_ids=[], code_version="test", params=ModelParams(max_iter=10),
        training_offsets=[{"topic": "levy.records", "partition": 0, "first_offset": 0,
                           "last_offset": 2999}]))


def test_the_holdout_sample_is_stored_with_its_hash(version) -> None:
    sample = load_reference_sample(version.path)
    assert sample is not None
    assert len(sample) == version.metrics["holdout_records"]
    assert {"assessed_value", "county", "prediction", "abs_error", "relative_error"} <= set(
        sample.columns)
    assert np.allclose(sample["abs_error"].mean(), version.metrics["candidate"]["mae"])
    assert version.manifest["reference"] == "reference.parquet"


def test_a_tampered_sample_is_refused(version, tmp_path) -> None:
    copy = tmp_path / "v"
    copy.mkdir()
    for item in version.path.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    data = bytearray((copy / "reference.parquet").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "reference.parquet").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="fails its SHA-256 check"):
        load_reference_sample(copy)


def test_a_bank_baselined_on_the_sample_judges_the_mix_at_once(version) -> None:
    """The sample's category shares are the composition reference at once; numeric signals
    are judged per segment against each segment's own values (a stream-wide reference would
    make every county whose level differs from the mix alarm), so they warm up either way."""
    settings = DetectorSettings()
    sample = load_reference_sample(version.path)
    reference = Reference.from_columns({name: sample[name].to_numpy()
                                        for name in sample.columns
                                        if name in settings.all_signals()})
    with_reference = PartitionMonitor.resume("t", 0, 0, None, settings, 1, reference)
    without = PartitionMonitor.resume("t", 0, 0, None, settings, 1, None)
    assert {"county", "property_class"} <= set(with_reference.bank.composition.reference)
    assert not without.bank.composition.reference
    assert not any(not row.warming_up for row in with_reference.bank.status())


DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def dated_version(tmp_path_factory: pytest.TempPathFactory):
    """A version trained on 3,000 rows spread over five days, county A's rows all on the first
    and the last (the window's edges, held in part)."""
    frame = to_model_frame(LevySimulator(SimulatorConfig(seed=9, labelled_share=1.0)).columns(
        0, 3000), include_target=True)
    times = np.linspace(0, 5 * DAY_MS - 1, len(frame)).astype(np.int64)
    edge = (times < DAY_MS) | (times >= 4 * DAY_MS)
    frame.loc[edge, "county"] = "A"
    frame.loc[~edge & (frame["county"] == "A"), "county"] = "B"
    registry = ModelRegistry(tmp_path_factory.mktemp("dated"))
    mix = whole_window_counts({name: frame[name].to_numpy() for name in CATEGORICAL_FEATURES},
                              times, 86_400)
    info = train_and_register(registry, NAME, TrainingRequest(
        frame=frame, trigger_event_ids=[], code_version="test", params=ModelParams(max_iter=10),
        training_offsets=[], mix=mix, composition_window_s=86_400))
    return info, frame[~edge]


def test_a_version_keeps_its_windows_mix_without_their_edges(dated_version) -> None:
    info, inside = dated_version
    counts, windows = load_composition(info.path)
    assert windows == 3
    assert counts["county"] == inside["county"].value_counts().to_dict()
    assert "A" not in counts["county"]
    # The holdout (newest fifth of each county) has A, from the last day; the consumer's and
    # check's reference takes the whole days' mix instead.
    sample = load_reference_sample(info.path)
    holdout = Reference.from_columns({"county": sample["county"].to_numpy()})
    assert "A" in holdout.categorical["county"].shares
    mixed = with_training_composition(holdout, info.path)
    assert "A" not in mixed.categorical["county"].shares
    assert mixed.categorical["county"].n == len(inside)


def test_a_version_without_a_mix_keeps_the_holdout_shares(version) -> None:
    assert load_composition(version.path) is None
    holdout = Reference.from_columns({"county": ["x"] * 60})
    assert with_training_composition(holdout, version.path) == holdout


def test_a_malformed_mix_is_refused_and_the_holdout_shares_stay(dated_version, tmp_path,
                                                                caplog) -> None:
    info, _ = dated_version
    copy = tmp_path / "v"
    copy.mkdir()
    for item in info.path.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["composition"]["counts"] = {"county": {"A": "many"}}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="composition counts .* are malformed"):
        load_composition(copy)
    holdout = Reference.from_columns({"county": ["x"] * 60})
    assert with_training_composition(holdout, copy) == holdout
    assert "composition counts unusable" in caplog.text
