"""The levy model scored straight from record columns, without the pandas frame.

The model (trainer/model.py) is a pipeline: the levy terms added to a pandas frame, a
``ColumnTransformer`` passing the numbers through and ordinal-coding the three categories,
then boosted trees, inside ``BaseLevyResidualRegressor``. Through pandas, a batch pays more
before the trees than in them: building a frame of Arrow strings, then scikit-learn's
per-value category lookup (~10 us per record against ~9 in the trees, 2,000-record batches).

``ColumnScorer`` reads what the fitted pipeline learned (which columns in which order, each
category's code) and fills the trees' input matrix from the columns directly, with the same
arithmetic, so the trees see the same numbers and predict the same levies to the bit (the
trees themselves summed in one compiled pass, ``levydrift.boosted_trees``). It is
built only for a model of exactly that shape, and only once it agreed with the model's own
``predict`` on probe rows (every known category, an unknown one); any other model, and any
columns it does not expect (not float numbers, not str categories), go through the
model's own ``predict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

from levydrift import boosted_trees
from levydrift.boosted_trees import Unrecognised
from levydrift.features import (
    CATEGORICAL_FEATURES,
    ENGINEERED_FEATURES,
    NUMERIC_FEATURES,
    BaseLevyResidualRegressor,
    add_levy_terms,
    levy_terms,
    to_model_frame,
)

_KNOWN_COLUMNS = frozenset(NUMERIC_FEATURES + ENGINEERED_FEATURES + CATEGORICAL_FEATURES)


class ColumnScorer:
    """A fitted levy pipeline's ``predict`` on record columns (``compile_scorer`` builds it)."""

    def __init__(self, numeric: Sequence[str], categorical: Sequence[str],
                 categories: Sequence[pd.Index], unknown_code: float, trees: Any) -> None:
        self.numeric = tuple(numeric)  # the matrix's leading columns, in order
        self.categorical = tuple(categorical)  # then these, ordinal-coded
        self.categories = tuple(categories)  # per categorical column: value -> its position
        self.unknown_code = unknown_code
        self.trees = trees

    def accepts(self, columns: Mapping[str, Any]) -> bool:
        """Whether the columns are what the matrix is built from: float or integer arrays
        for numbers, object arrays of str for categories (anything else, such as a file's
        mixed column, goes through the pipeline, which converts it its own way)."""
        for name in NUMERIC_FEATURES:
            column = columns.get(name)
            if not isinstance(column, np.ndarray) or column.dtype.kind not in "fiu":
                return False
        for name in CATEGORICAL_FEATURES:
            column = columns.get(name)
            if not isinstance(column, np.ndarray) or column.dtype != object \
                    or pd.api.types.infer_dtype(column, skipna=False) != "string":
                return False
        return True

    def predict(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Levies for columns ``accepts``: the trees' correction plus the base levy, floored
        at 0, as ``BaseLevyResidualRegressor.predict`` computes them."""
        values = {name: np.asarray(columns[name], dtype=np.float64) for name in NUMERIC_FEATURES}
        taxable, base, log_base = levy_terms(values["assessed_value"],
                                             values["exemption_amount"], values["levy_rate"])
        values.update(taxable_value=taxable, base_levy=base, log_base_levy=log_base)
        matrix = np.empty((len(base), len(self.numeric) + len(self.categorical)))
        for position, name in enumerate(self.numeric):
            matrix[:, position] = values[name]
        for offset, (name, known) in enumerate(zip(self.categorical, self.categories,
                                                   strict=True)):
            codes = known.get_indexer(columns[name]).astype(np.float64)
            codes[codes < 0] = self.unknown_code
            matrix[:, len(self.numeric) + offset] = codes
        correction = np.asarray(self.trees.predict(matrix), dtype=float)
        predicted: np.ndarray = np.clip(base + correction, 0.0, None)
        return predicted


def compile_scorer(model: Any) -> ColumnScorer | None:
    """A ``ColumnScorer`` for ``model``, or None when it is not the levy pipeline of
    trainer/model.py or does not predict the same levies through it."""
    try:
        scorer = _read_pipeline(model)
        probe = probe_columns(scorer)
        expected = np.asarray(model.predict(to_model_frame(probe)), dtype=float)
        agrees = np.array_equal(scorer.predict(probe), expected, equal_nan=True)
    except Exception:  # noqa: BLE001 - whatever goes wrong, the model's own predict decides
        return None
    return scorer if agrees else None


def _read_pipeline(model: Any) -> ColumnScorer:
    """What the fitted pipeline learned, or ``Unrecognised``."""
    pipeline: Any = getattr(model, "regressor_", None)
    if type(model) is not BaseLevyResidualRegressor or type(pipeline) is not Pipeline \
            or len(pipeline.steps) != 3:
        raise Unrecognised
    (_, terms), (_, columns), (_, trees) = pipeline.steps
    if type(terms) is not FunctionTransformer or terms.func is not add_levy_terms \
            or terms.kw_args or type(columns) is not ColumnTransformer:
        raise Unrecognised
    if getattr(columns, "_sklearn_output_config", {}).get("transform", "default") != "default" \
            or getattr(columns, "sparse_output_", False):
        raise Unrecognised
    numeric, categorical, encoder = _column_plan(columns)
    # object indexes: looking str values up in pandas' Arrow-backed "str" index costs more
    categories = [pd.Index(values, dtype=object) for values in encoder.categories_]
    return ColumnScorer(numeric, categorical, categories, _unknown_code(encoder),
                        _compiled_trees(trees))


def _compiled_trees(estimator: Any) -> Any:
    """The estimator's trees compiled (``levydrift.boosted_trees``), or the estimator itself
    when they are not trees that module knows."""
    try:
        return boosted_trees.from_estimator(estimator)
    except Unrecognised:
        return estimator


def _column_plan(columns: ColumnTransformer) -> tuple[list[str], list[str], OrdinalEncoder]:
    """(passed-through numeric columns, ordinal-coded ones, their encoder), in output order:
    exactly one passthrough then one ordinal encoder, the rest dropped."""
    kept = [(transformer, list(names)) for _, transformer, names in columns.transformers_
            if not (isinstance(transformer, str) and transformer == "drop")]
    if len(kept) != 2 or not _passes_through(kept[0][0]):
        raise Unrecognised
    (_, numeric), (encoder, categorical) = kept
    if type(encoder) is not OrdinalEncoder or encoder.dtype not in (float, np.float64) \
            or getattr(encoder, "_infrequent_enabled", False) \
            or not set(numeric) <= _KNOWN_COLUMNS - set(CATEGORICAL_FEATURES) \
            or tuple(categorical) != CATEGORICAL_FEATURES \
            or not all(isinstance(name, str) for name in numeric):
        raise Unrecognised
    return numeric, categorical, encoder


def _passes_through(transformer: Any) -> bool:
    """"passthrough", or the identity ``FunctionTransformer`` a fitted transformer holds in
    its place."""
    if isinstance(transformer, str):
        return transformer == "passthrough"
    return type(transformer) is FunctionTransformer and transformer.func is None \
        and not transformer.validate


def _unknown_code(encoder: OrdinalEncoder) -> float:
    """The code an unseen category gets (the encoder raises instead unless told not to)."""
    if encoder.handle_unknown != "use_encoded_value":
        raise Unrecognised  # the pipeline would raise on an unseen category: let it
    return float(encoder.unknown_value)


def probe_columns(scorer: ColumnScorer, rows: int = 64) -> dict[str, np.ndarray]:
    """Rows that visit every known category, an unseen one, and numbers across the ranges a
    levy record takes (zero exemption, exemption above assessed, tiny and large values)."""
    generator = np.random.default_rng(0)
    count = max(rows, *(len(known) + 1 for known in scorer.categories))
    columns: dict[str, np.ndarray] = {
        name: np.round(10 ** generator.uniform(0, 7, count), 2) for name in NUMERIC_FEATURES}
    columns["levy_rate"] = generator.uniform(0.0001, 0.1, count)
    columns["tax_year"] = generator.integers(2000, 2030, count).astype(np.float64)
    columns["exemption_amount"][::5] = 0.0
    for name, known in zip(scorer.categorical, scorer.categories, strict=True):
        values = [str(value) for value in known] + ["\x00unseen"]
        columns[name] = np.array([values[row % len(values)] for row in range(count)],
                                 dtype=object)
    return columns
