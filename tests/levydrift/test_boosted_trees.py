"""levydrift.boosted_trees: the trees of a fitted regressor summed in one compiled pass give
the regressor's own predictions to the bit, whatever the inputs (missing values, categories
coded negative, seen and never seen); anything else is refused, not guessed."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor

from levydrift.boosted_trees import Unrecognised, from_estimator

ROWS = 2_000


@cache
def fitted() -> HistGradientBoostingRegressor:
    """Two numeric columns and two categorical ones (coded 0..6 and 0..39, some codes never
    seen in fit), categorical in the middle as well as last."""
    generator = np.random.default_rng(4)
    numbers = generator.normal(size=(ROWS, 2))
    small = generator.integers(0, 5, ROWS).astype(float)  # 5 and 6 never seen
    large = generator.choice(np.arange(0, 40, 2), ROWS).astype(float)  # odd codes never seen
    numbers[::50, 0] = np.nan  # missing values seen in fit
    matrix = np.column_stack([numbers[:, 0], small, numbers[:, 1], large])
    target = numbers[:, 1] * 3 + np.where(small == 2, 5.0, 0.0) + np.sin(large) \
        + np.nan_to_num(numbers[:, 0])
    return HistGradientBoostingRegressor(
        max_iter=30, categorical_features=[False, True, False, True], random_state=0,
    ).fit(matrix, target)


def matrices() -> st.SearchStrategy[np.ndarray]:
    numbers = st.one_of(st.floats(-5, 5), st.just(np.nan), st.just(-np.inf), st.just(np.inf))
    codes = st.one_of(st.integers(-3, 45).map(float), st.just(np.nan))
    return st.integers(1, 60).flatmap(lambda rows: st.tuples(
        *(arrays(np.float64, rows, elements=kind) for kind in (numbers, codes, numbers, codes))
    ).map(lambda columns: np.column_stack(columns)))


@settings(max_examples=200, deadline=None)
@given(matrices())
def test_the_compiled_trees_predict_what_the_regressor_predicts(matrix: np.ndarray) -> None:
    estimator = fitted()
    assert np.array_equal(from_estimator(estimator).predict(matrix), estimator.predict(matrix))


def test_a_batch_of_stream_size_to_the_bit() -> None:
    estimator = fitted()
    generator = np.random.default_rng(9)
    matrix = np.column_stack([generator.normal(size=ROWS), generator.integers(0, 7, ROWS),
                              generator.normal(size=ROWS), generator.integers(0, 40, ROWS)])
    trees = from_estimator(estimator)
    assert len(trees.tree_starts) - 1 == estimator.n_iter_
    assert np.array_equal(trees.predict(matrix.astype(float)), estimator.predict(matrix))


def test_unseen_codes_recode_as_missing() -> None:
    trees = from_estimator(fitted())
    recoded = trees.recode(1, np.array([0.0, 4.0, 5.0, 6.0, -1.0, np.nan, 300.0]))
    assert recoded[:2].tolist() == [0.0, 4.0]
    assert np.isnan(recoded[2:]).all()


@pytest.mark.parametrize("estimator", [
    HistGradientBoostingRegressor(max_iter=5),  # no categorical features: no preprocessor
    HistGradientBoostingRegressor(max_iter=5, loss="poisson",
                                  categorical_features=[False, True]),  # a log link
    GradientBoostingRegressor(n_estimators=5),
])
def test_other_estimators_are_refused(estimator) -> None:
    generator = np.random.default_rng(1)
    matrix = np.column_stack([generator.normal(size=200), generator.integers(0, 3, 200)])
    estimator.fit(matrix, generator.uniform(1, 2, 200))
    with pytest.raises(Unrecognised):
        from_estimator(estimator)


def test_a_matrix_of_the_wrong_width_is_refused_not_read_past() -> None:
    """The compiled walk does not check bounds: a matrix narrower than the trees' input
    would be read past its end, so it is refused before the walk."""
    trees = from_estimator(fitted())
    with pytest.raises(ValueError, match="4 columns"):
        trees.predict(np.zeros((3, 3)))


def test_the_kernel_loaded_ahead_is_the_one_a_model_calls() -> None:
    """``load_kernel`` (run while a model is probed) calls the compiled sum with the types a
    fitted model's ``predict`` does: in a fresh process, predicting afterwards adds no
    signature (no compile, no second cache load at the first batch)."""
    import subprocess
    import sys

    script = (
        "from levydrift.boosted_trees import _sum_trees, from_estimator, load_kernel\n"
        "from tests.levydrift.test_boosted_trees import fitted\n"
        "import numpy as np\n"
        "load_kernel()\n"
        "loaded = list(_sum_trees.signatures)\n"
        "from_estimator(fitted()).predict(np.zeros((3, 4)))\n"
        "print(len(loaded), loaded == list(_sum_trees.signatures))\n")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=300, check=True)
    assert child.stdout.split() == ["1", "True"], child.stdout + child.stderr
