"""One training run, whatever the data source: split the most recent slice off as holdout, fit
a candidate, score candidate and champion on the same holdout, gate, and register the version.

Used by the worker (data from Kafka) and by ``levydrift train`` (data from a file).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from levydrift.errors import ArtifactError, LevyDriftError, TrainingError
from levydrift.faults import crash_point
from levydrift.features import TARGET, feature_signature, model_columns
from levydrift.signals import signal_columns
from trainer.evaluation import SLICE_TOLERANCE, gate, holdout_metrics, slice_comparisons
from trainer.model import ModelParams, fit_model, predict
from trainer.registry import ModelRegistry, NewVersion, VersionInfo, data_sha256

log = logging.getLogger(__name__)

HOLDOUT_SLICE = "county"  # held out per county, and no county may get much worse


@dataclass(frozen=True)
class TrainingRequest:
    """What to train on and why. ``frame`` is a labelled model frame ordered oldest to newest."""

    frame: pd.DataFrame
    trigger_event_ids: list[str]
    training_offsets: list[dict[str, Any]]
    code_version: str
    holdout_fraction: float = 0.2
    gate_margin: float = 0.01
    slice_tolerance: float = SLICE_TOLERANCE
    min_training_records: int = 200
    params: ModelParams = field(default_factory=ModelParams)
    extra_lineage: dict[str, Any] = field(default_factory=dict)
    # Per frame row, (partition, offset) of its record on ``records_topic`` (a window read
    # from Kafka): rows the champion trained on are then kept out of the holdout.
    records_topic: str | None = None
    record_offsets: np.ndarray | None = None


def train_and_register(registry: ModelRegistry, name: str, request: TrainingRequest,
                       finish: bool = True) -> VersionInfo:
    """Train, gate and register one version; raises ``TrainingError`` (nothing registered) when
    the data cannot produce a candidate. Without ``finish`` the version is left for the caller
    to finish (``ModelRegistry.finish_registration``: history row, champion move)."""
    started = time.perf_counter()
    registry.ensure_writable()  # before the fit: a bad registry root costs no training run
    labelled = np.isfinite(request.frame[TARGET].to_numpy(float))
    frame = request.frame[labelled]
    if len(frame) < request.min_training_records:
        raise TrainingError(f"only {len(frame)} labelled records in the training window; "
                            f"at least {request.min_training_records} are needed")
    champion_version = registry.champion(name)
    unseen = _unseen_by_champion(registry, name, champion_version, request, labelled)
    train, holdout = split_holdout(frame, request.holdout_fraction, unseen)
    log.info("fitting a candidate", extra={
        "model": name, "train_records": len(train), "holdout_records": len(holdout),
        "champion_trained_on": 0 if unseen is None else int((~unseen).sum())})
    candidate = fit_model(train, request.params)
    actual = holdout[TARGET].to_numpy(float)
    predicted = predict(candidate, holdout)
    candidate_metrics = holdout_metrics(actual, predicted)
    champion_predicted, champion_note = _champion_predictions(registry, name, champion_version,
                                                              holdout)
    champion_metrics = (None if champion_predicted is None
                        else holdout_metrics(actual, champion_predicted))
    slices = [] if champion_predicted is None else slice_comparisons(
        HOLDOUT_SLICE, holdout[HOLDOUT_SLICE].to_numpy(), actual, predicted, champion_predicted)
    decision = gate(candidate_metrics, champion_metrics, request.gate_margin, slices,
                    request.slice_tolerance)
    reason = decision.reason + (f"; {champion_note}" if champion_note else "")
    duration = time.perf_counter() - started
    crash_point("after_train")
    info = registry.register(name, NewVersion(
        estimator=candidate, decision=decision.decision, reason=reason,
        candidate_metrics=candidate_metrics.to_dict(),
        champion_metrics=champion_metrics.to_dict() if champion_metrics else None,
        champion_version=champion_version, holdout_records=len(holdout),
        training_offsets=request.training_offsets, training_records=len(frame),
        data_sha256=data_sha256(frame), trigger_event_ids=request.trigger_event_ids,
        feature_signature=feature_signature(), code_version=request.code_version,
        duration_s=duration, extra_lineage=request.extra_lineage,
        reference_sample=reference_sample(holdout, predicted),
        slices=[asdict(comparison) for comparison in slices]), finish=finish)
    log.info("registered a model version", extra={
        "model": name, "version": info.version, "decision": decision.decision,
        "reason": reason, "training_records": len(frame), "duration_s": round(duration, 3)})
    return info


def reference_sample(holdout: pd.DataFrame, predicted: np.ndarray) -> pd.DataFrame:
    """What the model saw and did on its holdout: the inputs, the prediction and its errors.

    The consumer standardises its detectors against this when the version becomes champion,
    instead of learning a reference from whatever streams in next (which, for the error
    signals fed only by labelled records, can take tens of thousands of records)."""
    sample = holdout[list(model_columns())].reset_index(drop=True).copy()
    columns = signal_columns({TARGET: holdout[TARGET].to_numpy(float)},
                             _Fixed(np.asarray(predicted, dtype=np.float64)))
    for name in ("prediction", "abs_error", "relative_error"):
        sample[name] = columns[name]
    return sample


class _Fixed:
    """Predictions already made, as a scorer."""

    def __init__(self, predicted: np.ndarray) -> None:
        self.predicted = predicted

    def predict(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return self.predicted


def split_holdout(frame: pd.DataFrame, fraction: float, eligible: np.ndarray | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout): the holdout is the most recent ``fraction`` of each county's rows (at
    least one row in all), taken among the ``eligible`` ones (default: all). Counties upload
    in slices, so the window's newest rows may all be one county's: held out per county,
    every county in the window is in the holdout, and the gate can see a candidate that
    fails the others."""
    county = frame[HOLDOUT_SLICE].to_numpy()
    sizes = pd.Series(county).groupby(county, sort=False).transform("size").to_numpy()
    allowed = np.ones(len(frame), dtype=bool) if eligible is None else eligible
    newest_first = np.full(len(frame), len(frame))
    newest_first[allowed] = pd.Series(county[allowed]).groupby(
        county[allowed], sort=False).cumcount(ascending=False).to_numpy()
    held = newest_first < np.round(sizes * fraction)
    if not held.any() and len(frame):
        held[-1] = True
    if held.all():
        raise TrainingError(f"{len(frame)} records leave nothing to train on after the holdout")
    return frame[~held], frame[held]


def _unseen_by_champion(registry: ModelRegistry, name: str, version: int | None,
                        request: TrainingRequest, labelled: np.ndarray) -> np.ndarray | None:
    """Per labelled row, whether the champion did not train on it (its record is outside the
    champion's training window): scoring the champion on rows it learnt would favour it, by
    a county's whole holdout where that county's newest rows are old. None when unknown
    (no champion, no record offsets) or when the champion trained on every row."""
    if version is None or request.record_offsets is None or request.records_topic is None:
        return None
    try:
        ranges = registry.get(name, version).lineage["training_window"]["offsets"]
    except (LevyDriftError, KeyError, TypeError):  # no usable lineage: nothing to exclude
        return None
    partitions, offsets = request.record_offsets[labelled].T
    seen = np.zeros(len(offsets), dtype=bool)
    for window in ranges:
        if window.get("topic") == request.records_topic:
            seen |= ((partitions == window["partition"]) & (offsets >= window["first_offset"])
                     & (offsets <= window["last_offset"]))
    return None if seen.all() else ~seen


def _champion_predictions(registry: ModelRegistry, name: str, version: int | None,
                          holdout: pd.DataFrame) -> tuple[np.ndarray | None, str]:
    """The champion's predictions on the holdout. A champion that cannot be loaded or scored
    cannot block a retrain: it is reported and the candidate is gated as if none existed."""
    if version is None:
        return None, ""
    try:
        champion = registry.load_model(name, version)
        return predict(champion, holdout), ""
    except (ArtifactError, ValueError, KeyError) as error:
        log.error("champion could not be scored", extra={"model": name, "version": version,
                                                          "error": str(error)})
        return None, f"champion {version} could not be scored: {error}"
