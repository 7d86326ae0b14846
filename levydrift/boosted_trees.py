"""A fitted ``HistGradientBoostingRegressor`` evaluated in one compiled pass.

scikit-learn predicts tree by tree: per batch it validates the matrix and re-codes the
categorical columns a second time (its own ordinal encoder, ~1 us per record), then opens one
OpenMP region per tree (100 regions a batch, each waking a thread that, on two cores, competes
with the broker). ``BoostedTrees`` does the same walk as its ``_predict_one_from_raw_data``
over all trees in one numba call on one thread, with the second coding folded into the first
(``recode``), and adds the leaves in the same order (baseline, then tree by tree), so each
prediction is the same float. It reads fitted attributes scikit-learn keeps private; when they
are not what this module knows, ``from_estimator`` raises ``Unrecognised`` and the estimator
predicts for itself (``levydrift.scoring`` also checks the result against it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder


class Unrecognised(Exception):
    """The estimator (or, in ``levydrift.scoring``, the pipeline around it) is not what the
    reader knows; the model's own ``predict`` is used instead."""


class BoostedTrees:
    """The trees of a fitted regressor as flat arrays, and its category re-coding."""

    def __init__(self, estimator: Any) -> None:
        self.categorical, self.numerical, self.category_codes = _input_plan(estimator)
        self.width = len(self.categorical) + len(self.numerical)
        if self.width != estimator.n_features_in_:
            raise Unrecognised
        predictors = [trees[0] for trees in estimator._predictors]
        nodes = np.concatenate([predictor.nodes for predictor in predictors])
        sizes = [len(predictor.nodes) for predictor in predictors]
        bitsets = [predictor.raw_left_cat_bitsets for predictor in predictors]
        self.tree_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        node_offsets = np.repeat(self.tree_starts[:-1], sizes)
        bitset_offsets = np.repeat(np.cumsum([0] + [len(b) for b in bitsets[:-1]]), sizes)
        self.feature = nodes["feature_idx"].astype(np.int64)
        self.threshold = nodes["num_threshold"].astype(np.float64)
        self.missing_left = nodes["missing_go_to_left"].astype(np.bool_)
        self.left = nodes["left"].astype(np.int64) + node_offsets
        self.right = nodes["right"].astype(np.int64) + node_offsets
        self.is_leaf = nodes["is_leaf"].astype(np.bool_)
        self.value = nodes["value"].astype(np.float64)
        self.is_categorical = nodes["is_categorical"].astype(np.bool_)
        self.bitset = nodes["bitset_idx"].astype(np.int64) + bitset_offsets
        self.left_bitsets = np.ascontiguousarray(np.concatenate(bitsets), dtype=np.uint32)
        known, feature_map = estimator._bin_mapper.make_known_categories_bitsets()
        self.known_bitsets = np.ascontiguousarray(known, dtype=np.uint32)
        self.feature_map = np.asarray(feature_map, dtype=np.int64)
        self.baseline = float(estimator._baseline_prediction.ravel()[0])

    def recode(self, column: int, codes: np.ndarray) -> np.ndarray:
        """The estimator's own codes for its input ``column`` given the pipeline's ordinal
        codes (float, NaN where the pipeline knew no category)."""
        table = self.category_codes[column]
        with np.errstate(invalid="ignore"):  # NaN: missing, like a negative code
            known = (codes >= 0) & (codes < len(table))
        recoded = np.full(len(codes), np.nan)
        recoded[known] = table[codes[known].astype(np.int64)]
        return recoded

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """The estimator's ``predict`` of ``matrix`` (its input columns, categories as the
        pipeline coded them)."""
        if matrix.ndim != 2 or matrix.shape[1] != self.width:
            raise ValueError(f"the trees take {self.width} columns, not {matrix.shape[1:]}")
        trees_input = np.empty(matrix.shape)
        for position, column in enumerate(self.categorical):
            trees_input[:, position] = self.recode(column, matrix[:, column])
        trees_input[:, len(self.categorical):] = matrix[:, self.numerical]
        out = np.empty(len(matrix))
        _sum_trees(trees_input, self.tree_starts, self.feature, self.threshold,
                   self.missing_left, self.left, self.right, self.is_leaf, self.value,
                   self.is_categorical, self.bitset, self.left_bitsets, self.known_bitsets,
                   self.feature_map, self.baseline, out)
        return out


def from_estimator(estimator: Any) -> BoostedTrees:
    """``BoostedTrees`` for a fitted single-output squared-error regressor with categorical
    features; raises ``Unrecognised`` for anything else."""
    try:
        if type(estimator) is not HistGradientBoostingRegressor \
                or estimator.n_trees_per_iteration_ != 1 \
                or type(estimator._loss.link).__name__ != "IdentityLink":
            raise Unrecognised
        return BoostedTrees(estimator)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as error:
        raise Unrecognised from error


def _input_plan(estimator: Any) -> tuple[list[int], list[int], dict[int, np.ndarray]]:
    """(categorical input columns, numerical ones, per categorical column a table from the
    pipeline's code to the estimator's): its preprocessor puts the categorical columns first,
    each coded by the position of its value among those seen in fit, unseen ones missing."""
    preprocessor = estimator._preprocessor
    if type(preprocessor) is not ColumnTransformer:
        raise Unrecognised
    transformers = [(name, transformer) for name, transformer, _ in preprocessor.transformers_
                    if not (isinstance(transformer, str) and transformer == "drop")]
    if [name for name, _ in transformers] != ["encoder", "numerical"] \
            or type(transformers[0][1]) is not OrdinalEncoder \
            or type(transformers[1][1]) is not FunctionTransformer:
        raise Unrecognised
    encoder = transformers[0][1]
    mask = np.asarray(estimator.is_categorical_, dtype=bool)
    categorical = np.flatnonzero(mask).tolist()
    tables = {column: _code_table(seen) for column, seen in zip(categorical, encoder.categories_,
                                                                strict=True)}
    return categorical, np.flatnonzero(~mask).tolist(), tables


def _code_table(seen: np.ndarray) -> np.ndarray:
    """For pipeline codes 0..n: the estimator's code (the position among the values seen in
    fit), NaN for a value it never saw. Covers every code below 256 (the trees' limit)."""
    table = np.full(256, np.nan)
    for position, value in enumerate(np.asarray(seen, dtype=np.float64)):
        if not np.isnan(value) and value == int(value) and 0 <= value < 256:
            table[int(value)] = position
    return table


def load_kernel() -> None:
    """Sum one one-leaf tree. numba loads ``_sum_trees`` (and its target's registries) on its
    first call in a process, ~0.2 s; a caller with time to wait calls this first, as the
    consumer does while a model version is probed in a child. No model is touched."""
    index = np.zeros(1, dtype=np.int64)
    flag = np.zeros(1, dtype=np.bool_)
    bits = np.zeros((1, 8), dtype=np.uint32)
    _sum_trees(np.zeros((1, 1)), np.array([0, 1], dtype=np.int64), index, np.zeros(1), flag,
               index, index, np.ones(1, dtype=np.bool_), np.zeros(1), flag, index, bits, bits,
               index, 0.0, np.zeros(1))


@njit(cache=True, nogil=True)
def _sum_trees(rows: np.ndarray, tree_starts: np.ndarray, feature: np.ndarray,
               threshold: np.ndarray, missing_left: np.ndarray, left: np.ndarray,
               right: np.ndarray, is_leaf: np.ndarray, value: np.ndarray,
               is_categorical: np.ndarray, bitset: np.ndarray, left_bitsets: np.ndarray,
               known_bitsets: np.ndarray, feature_map: np.ndarray, baseline: float,
               out: np.ndarray) -> None:  # pragma: no cover - compiled
    """out[row] = baseline + each tree's leaf for the row, added tree by tree (the order
    scikit-learn adds them in); a tree's rows one after another, so its nodes stay in cache."""
    for row in range(rows.shape[0]):
        out[row] = baseline
    for tree in range(len(tree_starts) - 1):
        for row in range(rows.shape[0]):
            node = tree_starts[tree]
            while not is_leaf[node]:
                x = rows[row, feature[node]]
                if np.isnan(x) or (is_categorical[node] and x < 0):
                    go_left = missing_left[node]
                elif is_categorical[node]:
                    category = np.int64(x) & 255
                    word, bit = category >> 5, category & 31
                    if (left_bitsets[bitset[node], word] >> bit) & 1:
                        go_left = True
                    elif (known_bitsets[feature_map[feature[node]], word] >> bit) & 1:
                        go_left = False
                    else:  # a category the trees never saw: missing
                        go_left = missing_left[node]
                else:
                    go_left = x <= threshold[node]
                node = left[node] if go_left else right[node]
            out[row] += value[node]
