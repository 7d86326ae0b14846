"""Models that must never serve: foreign or unfitted estimators, damaged tree arrays, models that
cannot predict, and a probe process that dies. Each is refused with a reason, in-process,
without native code ever walking the damaged arrays."""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression

from levydrift.artifacts import ALLOWED_TYPES, archive_types, load_verified_model, save_model
from levydrift.errors import ArtifactError
from levydrift.features import BaseLevyResidualRegressor, to_model_frame
from levydrift.model_checks import probe_frame
from levydrift.model_probe import IsolatedProbe, SpareProbe
from tests.levy_data import levy_columns
from trainer.model import ModelParams, build_pipeline, fit_model, predict


@pytest.fixture(scope="module")
def levy_model() -> BaseLevyResidualRegressor:
    return fit_model(to_model_frame(levy_columns(2000, seed=1), include_target=True),
                     ModelParams(max_iter=8))


def refusal(model: object, tmp_path: Path) -> ArtifactError:
    """The error loading ``model`` from an artifact with a matching hash raises."""
    path = tmp_path / "model.skops"
    sha = save_model(model, path)
    with pytest.raises(ArtifactError) as refused:
        load_verified_model(path, sha, label="levy-impact/9")
    assert "levy-impact/9" in str(refused.value)
    return refused.value


def test_the_allow_list_is_exactly_what_a_levy_model_is_made_of(levy_model) -> None:
    assert archive_types(sio.dumps(levy_model)) == set(ALLOWED_TYPES)


@pytest.mark.parametrize("estimator", [LinearRegression(),
                                       LinearRegression().fit(np.eye(3), np.arange(3.0))],
                         ids=["unfitted", "fitted"])
def test_an_estimator_skops_trusts_by_default_is_refused(estimator, tmp_path) -> None:
    """skops trusts every scikit-learn estimator by default; our list trusts none of them."""
    error = refusal(estimator, tmp_path)
    assert error.reason == "disallowed_type"
    assert "sklearn.linear_model._base.LinearRegression" in str(error)


def test_an_unfitted_levy_model_is_refused(tmp_path) -> None:
    error = refusal(build_pipeline(), tmp_path)
    assert error.reason == "invalid_model"
    assert "not fitted" in str(error)


def _first_tree_nodes(model: BaseLevyResidualRegressor) -> np.ndarray:
    return model.regressor_.steps[-1][1]._predictors[0][0].nodes


def _splits(nodes: np.ndarray) -> np.ndarray:
    return np.flatnonzero(nodes["is_leaf"] == 0)


def _categorical_split(nodes: np.ndarray) -> int:
    return int(_splits(nodes)[nodes["is_categorical"][_splits(nodes)] != 0][0])


DAMAGE: dict[str, Callable[[np.ndarray], None]] = {
    "child past the array": lambda n: n["left"].__setitem__(_splits(n)[0], 50_000_000),
    "child back to the root": lambda n: n["right"].__setitem__(_splits(n)[-1], 0),
    "feature past the input": lambda n: n["feature_idx"].__setitem__(_splits(n)[0], 10**9),
    "negative feature": lambda n: n["feature_idx"].__setitem__(_splits(n)[0], -3),
    "bitset past the array": lambda n: n["bitset_idx"].__setitem__(_categorical_split(n), 10**6),
    # The trees see the 3 categorical columns first, then 10 numeric ones.
    "categorical split on a number": lambda n: n["feature_idx"].__setitem__(
        _categorical_split(n), 12),
    "infinite leaf": lambda n: n["value"].__setitem__(np.flatnonzero(n["is_leaf"])[0], np.inf),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_tree_arrays_are_refused_before_any_tree_walk(damage, levy_model,
                                                              tmp_path) -> None:
    """Each of these makes scikit-learn's native tree walk read out of bounds (SIGSEGV), loop
    forever, or predict garbage; loading must refuse it without ever predicting."""
    damaged = copy.deepcopy(levy_model)
    DAMAGE[damage](_first_tree_nodes(damaged))
    error = refusal(damaged, tmp_path)
    assert error.reason == "invalid_model"
    assert "tree 0" in str(error)


def test_a_model_that_cannot_predict_the_probe_batch_is_refused(levy_model, tmp_path) -> None:
    strict = copy.deepcopy(levy_model)
    encoder = strict.regressor_.named_steps["columns"].named_transformers_["categorical"]
    encoder.handle_unknown = "error"  # the probe batch holds a county never seen in training
    error = refusal(strict, tmp_path)
    assert error.reason == "probe_failed"
    assert "nowhere" in str(error)


def test_a_sound_model_loads_and_predicts_the_probe_batch(levy_model, tmp_path) -> None:
    path = tmp_path / "model.skops"
    loaded = load_verified_model(path, save_model(levy_model, path))
    predicted = predict(loaded, probe_frame())
    assert predicted.shape == (len(probe_frame()),) and np.isfinite(predicted).all()


def _version_dir(tmp_path: Path, model: object) -> tuple[Path, str]:
    import json

    directory = tmp_path / "levy-impact" / "versions" / "1"
    directory.mkdir(parents=True)
    sha = save_model(model, directory / "model.skops")
    (directory / "manifest.json").write_text(json.dumps(
        {"model": "levy-impact", "version": 1, "sha256": sha, "artifact": "model.skops"}))
    return directory, sha


def test_the_probe_process_accepts_a_sound_version(levy_model, tmp_path) -> None:
    directory, sha = _version_dir(tmp_path, levy_model)
    probe = IsolatedProbe(directory, sha)
    probe.result()
    assert probe.seconds is not None and probe.seconds > 0


def test_the_probe_process_runs_the_column_scoring_the_service_will_use(levy_model,
                                                                        tmp_path) -> None:
    """The child scores the probe rows through the compiled path too, so a crash there
    refuses the version before the service runs it."""
    import json
    import subprocess
    import sys

    directory, sha = _version_dir(tmp_path, levy_model)
    child = subprocess.run([sys.executable, "-m", "levydrift.model_probe", str(directory), sha],
                           capture_output=True, text=True, timeout=120, check=True)
    verdict = json.loads(child.stdout.strip().splitlines()[-1])
    assert verdict == {"accepted": True, "column_scoring": True}


def test_the_probe_process_passes_on_the_reason_of_a_refusal(levy_model, tmp_path) -> None:
    directory, sha = _version_dir(tmp_path, build_pipeline())
    with pytest.raises(ArtifactError) as refused:
        IsolatedProbe(directory, sha).result()
    assert refused.value.reason == "invalid_model"


def test_a_probe_process_that_dies_is_a_refusal_naming_the_signal(levy_model,
                                                                   tmp_path) -> None:
    directory, sha = _version_dir(tmp_path, levy_model)
    probe = IsolatedProbe(directory, sha)
    os.kill(probe._process.pid, signal.SIGSEGV)  # what native code does on a bad read
    with pytest.raises(ArtifactError) as refused:
        probe.result()
    assert refused.value.reason == "probe_crashed"
    assert "SIGSEGV" in str(refused.value)


def test_a_probe_process_that_hangs_is_killed_and_refused(levy_model, tmp_path) -> None:
    directory, sha = _version_dir(tmp_path, levy_model)
    probe = IsolatedProbe(directory, sha, timeout_s=0.05)
    with pytest.raises(ArtifactError) as refused:
        probe.result()
    assert refused.value.reason == "probe_timeout"
    assert probe._process.poll() is not None


def test_a_spare_probe_process_probes_the_version_it_is_handed(levy_model, tmp_path) -> None:
    """The child started ahead of need is the one that probes: accepted when sound, refused
    with the same reason as a fresh child's when not."""
    directory, sha = _version_dir(tmp_path, levy_model)
    spare = SpareProbe()
    assert spare.process is not None
    child = spare.process.pid
    probe = IsolatedProbe(directory, sha, spare=spare)
    assert probe._process.pid == child
    probe.result()
    assert spare.process is None  # handed over once: a later probe spawns its own

    unfitted, unfitted_sha = _version_dir(tmp_path / "unfitted", build_pipeline())
    with pytest.raises(ArtifactError) as refused:
        IsolatedProbe(unfitted, unfitted_sha, spare=SpareProbe()).result()
    assert refused.value.reason == "invalid_model"


def test_a_spare_probe_that_died_is_replaced_by_a_fresh_child(levy_model, tmp_path) -> None:
    directory, sha = _version_dir(tmp_path, levy_model)
    spare = SpareProbe()
    assert spare.process is not None
    dead = spare.process.pid
    spare.process.kill()
    spare.process.wait()
    probe = IsolatedProbe(directory, sha, spare=spare)
    assert probe._process.pid != dead
    probe.result()


def test_a_spare_probe_whose_parent_is_gone_exits_without_probing() -> None:
    """Its stdin ends when the service dies (or closes it): the child exits cleanly, so no
    spare outlives the service."""
    spare = SpareProbe()
    process = spare.process
    assert process is not None and process.stdin is not None
    process.stdin.close()
    assert process.wait(timeout=120) == 0
    spare.close()
    assert spare.process is None
    spare.close()  # twice is harmless


def test_a_spare_probe_starts_only_where_the_registry_holds_a_version(levy_model,
                                                                    tmp_path) -> None:
    assert SpareProbe.for_registry(tmp_path / "nowhere", "levy-impact") is None
    (tmp_path / "levy-impact" / "versions").mkdir(parents=True)
    assert SpareProbe.for_registry(tmp_path, "levy-impact") is None
    _version_dir(tmp_path, levy_model)
    spare = SpareProbe.for_registry(tmp_path, "levy-impact")
    assert spare is not None
    spare.close()
