"""levydrift.features and levydrift.artifacts: the model's columns and verified skops loading."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from levydrift.artifacts import ALLOWED_TYPES, load_verified_model, save_model
from levydrift.errors import ArtifactError
from levydrift.features import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    TARGET,
    feature_signature,
    model_columns,
    to_model_frame,
)
from tests.levy_data import levy_columns
from trainer.model import ModelParams, fit_model, predict


def test_feature_signature_is_stable_and_names_the_columns() -> None:
    assert feature_signature() == feature_signature()
    assert feature_signature().startswith("sha256:")
    assert model_columns() == NUMERIC_FEATURES + CATEGORICAL_FEATURES
    assert TARGET == "actual_levy_amount"


def test_model_frame_is_the_same_from_columns_and_from_records() -> None:
    columns = levy_columns(20, seed=3)
    records = [{key: values[i] for key, values in columns.items()} for i in range(20)]
    from_columns = to_model_frame(columns, include_target=True)
    from_records = to_model_frame(records, include_target=True)
    assert list(from_columns.columns) == [*model_columns(), TARGET]
    assert from_columns.equals(from_records)
    assert from_columns["assessed_value"].dtype == np.float64


def test_model_frame_names_a_missing_column() -> None:
    columns = levy_columns(5)
    del columns["levy_rate"]
    with pytest.raises(KeyError, match="levy_rate"):
        to_model_frame(columns)


@pytest.fixture(scope="module")
def small_model():
    return fit_model(to_model_frame(levy_columns(600, seed=1), include_target=True),
                     ModelParams(max_iter=10))


def test_saved_model_loads_back_and_predicts_the_same(tmp_path, small_model) -> None:
    frame = to_model_frame(levy_columns(50, seed=2))
    sha = save_model(small_model, tmp_path / "model.skops")
    loaded = load_verified_model(tmp_path / "model.skops", sha)
    np.testing.assert_array_equal(predict(loaded, frame), predict(small_model, frame))


def test_a_flipped_byte_is_refused(tmp_path, small_model) -> None:
    path = tmp_path / "model.skops"
    sha = save_model(small_model, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"levy-impact/7.*SHA-256"):
        load_verified_model(path, sha, label="levy-impact/7")


def test_a_missing_artifact_is_refused(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="missing"):
        load_verified_model(tmp_path / "nope.skops", "0" * 64)


def test_a_type_outside_the_allow_list_is_refused(tmp_path) -> None:
    path = tmp_path / "model.skops"
    estimator = LinearRegression().fit(np.eye(3), np.arange(3.0))
    estimator.extra = np.random.default_rng(0).bit_generator  # a type the levy model never has
    sha = save_model(estimator, path)
    with pytest.raises(ArtifactError, match="allow-list"):
        load_verified_model(path, sha)


def test_every_type_in_the_levy_model_is_allow_listed(tmp_path, small_model) -> None:
    import skops.io as sio

    assert set(sio.get_untrusted_types(data=sio.dumps(small_model))) <= set(ALLOWED_TYPES)


def test_skops_is_imported_without_listing_every_estimator_or_ufunc() -> None:
    """``_skops`` keeps skops from importing every scikit-learn module, and from searching
    every loaded module for each scipy.special ufunc, for a default trust the loader never
    relies on (a second or more per model load), and leaves ``sklearn.utils.all_estimators``
    and ``dir(scipy.special)`` as it found them. In a fresh process: the test session may
    have imported those modules already."""
    import subprocess
    import sys

    probe = ("import sys, scipy.special, sklearn.utils\n"
             "listing, names = sklearn.utils.all_estimators, dir(scipy.special)\n"
             "from levydrift.artifacts import _skops\n"
             "_skops()\n"
             "assert sklearn.utils.all_estimators is listing\n"
             "assert dir(scipy.special) == names and len(names) > 100\n"
             "from skops.io._trusted_types import SCIPY_UFUNC_TYPE_NAMES\n"
             "print(len(SCIPY_UFUNC_TYPE_NAMES), sorted(m for m in (\n"
             "    'sklearn.gaussian_process', 'sklearn.mixture', 'sklearn.semi_supervised')\n"
             "    if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "0 []"
