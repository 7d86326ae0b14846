"""The model signals the detector bank watches besides the record fields: the champion's
prediction and its error. One implementation for the consumer (per Kafka batch) and for the
batch tools (``levydrift check``, per file), so both feed the bank exactly the same columns."""

from __future__ import annotations

import difflib
import logging
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from levydrift.errors import ConfigError
from schemas.levy_record import FIELDS, NUMERIC_FIELDS, TEXT_FIELDS

if TYPE_CHECKING:
    from detectors.config import DetectorSettings

log = logging.getLogger(__name__)

PREDICTION_SIGNALS = ("prediction",)
PERFORMANCE_SIGNALS = ("abs_error", "relative_error")


class Scorer(Protocol):
    """Anything that predicts levies from record columns (the consumer's ``Champion``)."""

    def predict(self, columns: dict[str, np.ndarray]) -> np.ndarray: ...


class ModelScorer:
    """A loaded levy model as a ``Scorer``: record columns in, levy amounts out. The levy
    pipeline is scored from the columns directly (``levydrift.scoring``), the same levies
    to the bit without its pandas frame; any other model through its own ``predict``."""

    def __init__(self, model: Any, version: int | None = None) -> None:
        self.model = model
        self.version = version
        self._column_scorer: Any = None  # built by ``prepare``: needs scikit-learn
        self._compiled = False

    def prepare(self) -> None:
        """Build the column scorer now rather than on the first batch."""
        if not self._compiled:
            from levydrift.scoring import compile_scorer  # lazy: scikit-learn, with a model

            self._column_scorer, self._compiled = compile_scorer(self.model), True

    def predict(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        if not self._compiled:
            self.prepare()
        if self._column_scorer is not None and self._column_scorer.accepts(columns):
            try:
                return np.asarray(self._column_scorer.predict(columns), dtype=np.float64)
            except Exception as error:  # noqa: BLE001 - the model itself may still predict
                log.warning("column scoring failed; the model predicts through its pipeline "
                            "from now on", extra={"version": self.version,
                                                   "error": f"{type(error).__name__}: {error}"})
                self._column_scorer = None
        from levydrift.features import to_model_frame  # lazy: scikit-learn, with a model

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


def check_detector_fields(detectors: DetectorSettings) -> None:
    """Raise ``ConfigError`` for a signal, segment or stratum field no levy record or model
    signal has: a misspelt name was never watched (or made one segment of everything),
    silently."""
    keys = tuple(name for name in FIELDS if name not in ("event_time", "record_id", "parcel_id"))
    allowed = {
        "numeric_signals": NUMERIC_FIELDS, "categorical_signals": TEXT_FIELDS,
        "prediction_signals": PREDICTION_SIGNALS, "performance_signals": PERFORMANCE_SIGNALS,
        # Ids name one record or parcel each: a segment per record never warms up.
        "segment_by": keys, "stratify_by": keys}
    for setting, names in allowed.items():
        for name in getattr(detectors, setting):
            if name in names:
                continue
            if name in FIELDS:  # a record field, but not one this setting can take
                keyed = setting in ("segment_by", "stratify_by")
                why = ("one segment per record never warms up" if keyed
                       else f"not a field {setting} can watch")
                raise ConfigError(f"detectors.{setting} names {name!r}: {why}; choose from "
                                  + ", ".join(names))
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"detectors.{setting} names {name!r}, which no levy record "
                              f"has{hint}; choose from " + ", ".join(names))
