"""The model signals the detector bank watches besides the record fields: the champion's
prediction and its error. One implementation for the consumer (per Kafka batch) and for the
batch tools (``levydrift check``, per file), so both feed the bank exactly the same columns."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Scorer(Protocol):
    """Anything that predicts levies from record columns (the consumer's ``Champion``)."""

    def predict(self, columns: dict[str, np.ndarray]) -> np.ndarray: ...


class ModelScorer:
    """A loaded levy model as a ``Scorer``: record columns in, levy amounts out."""

    def __init__(self, model: Any, version: int | None = None) -> None:
        self.model = model
        self.version = version

    def predict(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        from levydrift.features import to_model_frame  # lazy: scikit-learn, only with a model

        return np.asarray(self.model.predict(to_model_frame(columns)), dtype=np.float64)


def signal_columns(columns: dict[str, np.ndarray],
                   scorer: Scorer | None) -> dict[str, np.ndarray]:
    """Record columns plus the model signals: prediction and error (NaN where unknown)."""
    count = len(next(iter(columns.values())))
    prediction = np.full(count, np.nan) if scorer is None else scorer.predict(columns)
    actual = columns["actual_levy_amount"]
    columns["prediction"] = prediction
    columns["abs_error"] = np.abs(prediction - actual)
    # Relative error keeps a county of mansions from dominating the performance signal.
    columns["relative_error"] = columns["abs_error"] / np.maximum(actual, 1.0)
    return columns
