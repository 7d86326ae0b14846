"""What a loaded levy model must show before it scores a single record.

The skops allow-list (``levydrift.artifacts``) keeps foreign types out, but an allow-listed type
can still carry arrays no training run would write, and scikit-learn's tree walk is native code
that trusts them: a child index past the node array or a feature index past the input reads
outside memory (the process dies with SIGSEGV), and a child pointing back up the tree loops
forever. So a model is accepted only when

* it is a fitted ``BaseLevyResidualRegressor`` ending in a histogram gradient-boosted tree;
* every tree's arrays are in bounds for the input the trees actually receive: children come
  after their parent and inside the array (so the walk always ends), split features and
  categorical bitsets exist, leaves are finite;
* it predicts one finite levy per record of a probe batch.

The trees receive what the pipeline makes of the probe batch; that width does not depend on
the data (one column per input column), so bounds proven here hold for every record.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.pipeline import Pipeline

from levydrift.errors import ArtifactError
from levydrift.features import BaseLevyResidualRegressor, model_columns, to_model_frame

_BITSET_WORDS = 8  # 256 categories as 8 uint32 words, scikit-learn's layout

# Plausible records and the edges of the contract: every class, a county and a class the
# model has never seen, zero and maximal values, a fully exempt parcel.
_PROBE_RECORDS: tuple[dict[str, Any], ...] = tuple(
    {"assessed_value": assessed, "market_value": assessed * 1.1, "exemption_amount": exemption,
     "levy_rate": rate, "prior_levy_amount": (assessed - exemption) * rate,
     "new_construction_value": construction, "tax_year": year, "county": county,
     "tax_district": f"{county}-sd-{district}", "property_class": property_class}
    for assessed, exemption, rate, construction, year, county, district, property_class in (
        (250_000.0, 25_000.0, 0.0125, 0.0, 2024, "benton", 1, "residential"),
        (1_800_000.0, 0.0, 0.021, 150_000.0, 2025, "franklin", 3, "commercial"),
        (90_000.0, 0.0, 0.008, 0.0, 2023, "yakima", 2, "agricultural"),
        (12_000_000.0, 0.0, 0.03, 2_000_000.0, 2024, "walla-walla", 5, "industrial"),
        (400_000.0, 400_000.0, 0.015, 0.0, 2024, "benton", 4, "exempt"),
        (0.0, 0.0, 1e-6, 0.0, 1900, "nowhere", 0, "data-center"),
        (1e12, 0.0, 0.1, 1e12, 2100, "king", 9, "residential"),
    ))


def probe_frame() -> pd.DataFrame:
    """The probe batch as a model frame."""
    return to_model_frame(list(_PROBE_RECORDS))


def check_model(model: Any, label: str) -> None:
    """Raise ``ArtifactError`` (reason ``invalid_model`` or ``probe_failed``) unless ``model``
    is a levy model whose trees are safe to walk and which predicts the probe batch."""
    frame = probe_frame()
    try:
        pipeline, trees = _levy_pipeline(model, label)
        width, categorical = _tree_input(pipeline, trees, frame, label)
        _check_trees(trees, width, categorical, label)
    except ArtifactError:
        raise
    except Exception as error:  # noqa: BLE001 - a damaged object graph raises many kinds
        raise _invalid(label, f"{type(error).__name__}: {error}") from None
    _check_predictions(model, frame, label)


def tree_problem(tree: Any, width: int, categorical: np.ndarray) -> str | None:
    """Why walking ``tree`` over ``width`` input columns could leave its arrays (or never
    end); None when it cannot. ``categorical`` flags the categorical input columns."""
    if not isinstance(tree, TreePredictor):
        return f"a tree is a {type(tree).__name__}"
    nodes = getattr(tree, "nodes", None)
    if (not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE
            or nodes.ndim != 1 or nodes.size == 0):
        return "its node array has the wrong type or shape"
    split = np.flatnonzero(nodes["is_leaf"] == 0)
    left = nodes["left"][split].astype(np.int64)
    right = nodes["right"][split].astype(np.int64)
    if ((left <= split) | (right <= split) | (left >= nodes.size) | (right >= nodes.size)).any():
        return "a child index points outside the node array or back up the tree"
    features = nodes["feature_idx"][split]
    if ((features < 0) | (features >= width)).any():
        return f"a split reads a feature outside the {width} the trees receive"
    if not np.isfinite(nodes["value"][nodes["is_leaf"] != 0]).all():
        return "a leaf value is not finite"
    bitsets = getattr(tree, "raw_left_cat_bitsets", None)
    if (not isinstance(bitsets, np.ndarray) or bitsets.dtype != np.uint32 or bitsets.ndim != 2
            or bitsets.shape[1] != _BITSET_WORDS or not bitsets.flags.c_contiguous):
        return "its category bitsets have the wrong type or shape"
    categorical_split = split[nodes["is_categorical"][split] != 0]
    if (nodes["bitset_idx"][categorical_split] >= len(bitsets)).any():
        return "a categorical split names a bitset that does not exist"
    if not categorical[nodes["feature_idx"][categorical_split]].all():
        return "a categorical split reads a feature that is not categorical"
    return None


def _levy_pipeline(model: Any, label: str) -> tuple[Pipeline, HistGradientBoostingRegressor]:
    """The fitted pipeline inside a levy model and its boosted trees, or ``invalid_model``."""
    if not isinstance(model, BaseLevyResidualRegressor):
        raise _invalid(label, f"it is a {type(model).__name__}, not a levy model")
    pipeline = getattr(model, "regressor_", None)
    if not isinstance(pipeline, Pipeline) or not pipeline.steps:
        raise _invalid(label, "it is not fitted (no fitted pipeline inside)")
    trees = pipeline.steps[-1][1]
    if not isinstance(trees, HistGradientBoostingRegressor):
        raise _invalid(label, f"its pipeline ends in a {type(trees).__name__}")
    if not isinstance(getattr(trees, "_predictors", None), list) or not trees._predictors:
        raise _invalid(label, "its boosted trees are not fitted")
    return pipeline, trees


def _tree_input(pipeline: Pipeline, trees: HistGradientBoostingRegressor, frame: pd.DataFrame,
                label: str) -> tuple[int, np.ndarray]:
    """(columns the trees receive, their categorical flags), from the probe batch."""
    try:
        features = pipeline[:-1].transform(frame[list(model_columns())])
        width = int(np.shape(trees._preprocess_X(features, reset=False))[1])
    except Exception as error:  # noqa: BLE001 - a damaged model raises many kinds
        raise ArtifactError(f"model {label}: cannot prepare the probe batch: "
                            f"{type(error).__name__}: {error}", "probe_failed") from None
    categorical = np.asarray(trees._bin_mapper.is_categorical_).astype(bool)
    if categorical.shape != (width,):
        raise _invalid(label, f"it flags {categorical.size} categorical columns for {width}")
    return width, categorical


def _check_trees(trees: HistGradientBoostingRegressor, width: int, categorical: np.ndarray,
                 label: str) -> None:
    for iteration, predictors in enumerate(trees._predictors):
        if not isinstance(predictors, list) or not predictors:
            raise _invalid(label, f"boosting iteration {iteration} holds no tree list")
        for tree in predictors:
            problem = tree_problem(tree, width, categorical)
            if problem is not None:
                raise _invalid(label, f"tree {iteration}: {problem}")


def _check_predictions(model: Any, frame: pd.DataFrame, label: str) -> None:
    try:
        predicted = np.asarray(model.predict(frame[list(model_columns())]), dtype=np.float64)
    except Exception as error:  # noqa: BLE001 - whatever predict raises refuses the model
        raise ArtifactError(f"model {label}: cannot predict the probe batch: "
                            f"{type(error).__name__}: {error}", "probe_failed") from None
    if predicted.shape != (len(frame),) or not np.isfinite(predicted).all():
        raise ArtifactError(f"model {label}: predicts {predicted.shape} values, not one finite "
                            f"levy for each of the {len(frame)} probe records", "probe_failed")


def _invalid(label: str, why: str) -> ArtifactError:
    return ArtifactError(f"model {label} is not a usable levy model: {why}", "invalid_model")
