"""The levy impact model's input columns, shared by the trainer and the consumer.

The consumer must build exactly the frame the trainer trained on, so the column names, their
order and the engineered levy terms live here, not in ``trainer/``. ``feature_signature()`` is
recorded in every model manifest; a model whose signature differs from this code's is not
compatible with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone

NUMERIC_FEATURES: tuple[str, ...] = (
    "assessed_value",
    "market_value",
    "exemption_amount",
    "levy_rate",
    "prior_levy_amount",
    "new_construction_value",
    "tax_year",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("county", "tax_district", "property_class")
TARGET = "actual_levy_amount"

# Added inside the model pipeline by ``add_levy_terms``: a levy is roughly
# (assessed - exemption) x rate + special assessments, which a tree cannot multiply by itself.
ENGINEERED_FEATURES: tuple[str, ...] = ("taxable_value", "base_levy", "log_base_levy")

# Bump when the meaning of a column changes without its name changing.
FEATURE_SPEC_VERSION = 1


def model_columns() -> tuple[str, ...]:
    """The input columns of the model, in order."""
    return NUMERIC_FEATURES + CATEGORICAL_FEATURES


def feature_signature() -> str:
    """A stable hash of the feature names, their order and kinds, and the engineered terms."""
    spec = "|".join([
        f"v{FEATURE_SPEC_VERSION}",
        "numeric:" + ",".join(NUMERIC_FEATURES),
        "categorical:" + ",".join(CATEGORICAL_FEATURES),
        "engineered:" + ",".join(ENGINEERED_FEATURES),
        "target:" + TARGET,
    ])
    return "sha256:" + hashlib.sha256(spec.encode()).hexdigest()[:16]


def to_model_frame(data: pd.DataFrame | Mapping[str, Sequence[Any]] | Iterable[Mapping[str, Any]],
                   include_target: bool = False) -> pd.DataFrame:
    """The model's input frame from a DataFrame, a mapping of columns, or an iterable of records.

    Numeric columns become float64, categorical ones str. With ``include_target`` the target
    column is appended (NaN where a record carries no actual levy). A missing input column
    raises ``KeyError`` naming it.
    """
    frame = data if isinstance(data, pd.DataFrame) else _as_frame(data)
    wanted = list(model_columns()) + ([TARGET] if include_target else [])
    missing = [name for name in model_columns() if name not in frame.columns]
    if missing:
        raise KeyError(f"levy records lack the model input column(s) {', '.join(missing)}")
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for name in NUMERIC_FEATURES:
        out[name] = pd.to_numeric(np.asarray(frame[name]), errors="coerce").astype("float64")
    for name in CATEGORICAL_FEATURES:
        out[name] = np.asarray(frame[name]).astype(str)
    if include_target:
        target = frame[TARGET] if TARGET in frame.columns else np.full(len(frame), np.nan)
        out[TARGET] = pd.to_numeric(np.asarray(target), errors="coerce").astype("float64")
    return out[wanted]


def _as_frame(data: Mapping[str, Sequence[Any]] | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    if isinstance(data, Mapping):
        return pd.DataFrame({key: np.asarray(value) for key, value in data.items()})
    return pd.DataFrame.from_records(list(data))


def add_levy_terms(frame: pd.DataFrame) -> pd.DataFrame:
    """The model frame plus the engineered levy terms (used inside the model pipeline)."""
    out = frame.copy()
    out["taxable_value"], out["base_levy"], out["log_base_levy"] = levy_terms(
        out["assessed_value"].to_numpy(float), out["exemption_amount"].to_numpy(float),
        out["levy_rate"].to_numpy(float))
    return out


def levy_terms(assessed: np.ndarray, exemption: np.ndarray,
               rate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ENGINEERED_FEATURES`` from float columns: taxable value (assessed - exemption,
    floored at 0), base levy (taxable x rate) and log1p of the base levy. The one definition
    the pipeline and the column scorer (``levydrift.scoring``) both compute."""
    taxable, base = _taxable_and_base(assessed, exemption, rate)
    return taxable, base, np.log1p(base)


def base_levy(frame: pd.DataFrame) -> np.ndarray:
    """(assessed - exemption, floored at 0) x levy rate: the levy before corrections."""
    return _taxable_and_base(frame["assessed_value"].to_numpy(float),
                             frame["exemption_amount"].to_numpy(float),
                             frame["levy_rate"].to_numpy(float))[1]


def _taxable_and_base(assessed: np.ndarray, exemption: np.ndarray,
                      rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    taxable = np.clip(assessed - exemption, 0.0, None)
    return taxable, taxable * rate


class BaseLevyResidualRegressor(RegressorMixin, BaseEstimator):
    """Predicts base levy plus a learned correction: ``regressor`` fits ``y - base_levy(X)``.

    Trees are piecewise constant, so asked for the levy itself they lose a few percent to the
    multiplication; asked only for district compression and special assessments they are
    nearly exact. Predictions are floored at 0 (no levy is negative).
    """

    def __init__(self, regressor: Any = None) -> None:
        self.regressor = regressor

    def fit(self, X: pd.DataFrame, y: Any) -> BaseLevyResidualRegressor:
        self.regressor_ = clone(self.regressor)
        self.regressor_.fit(X, np.asarray(y, dtype=float) - base_levy(X))
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        correction = np.asarray(self.regressor_.predict(X), dtype=float)
        return np.clip(base_levy(X) + correction, 0.0, None)
