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

from detectors.config import DetectorSettings
from levydrift.errors import ArtifactError, LevyDriftError, TrainingError
from levydrift.faults import crash_point
from levydrift.features import CATEGORICAL_FEATURES, TARGET, feature_signature, model_columns
from levydrift.signals import signal_columns
from trainer.evaluation import (
    SLICE_TOLERANCE,
    HoldoutMetrics,
    SliceComparison,
    gate,
    holdout_metrics,
    slice_comparisons,
)
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
    # from Kafka): the gate then leaves out the holdout rows the champion trained on.
    records_topic: str | None = None
    record_offsets: np.ndarray | None = None
    # The stream's mix while the window's records came: every record of its span, labelled
    # or not (labels that come county by county skew the labelled rows' mix), counted by
    # category over the whole event-time windows of ``composition_window_s`` (as [detectors]
    # sets it), ``composition.WindowTally``: (column -> category -> count, whole windows).
    # The version keeps it; a consumer judges the stream's windows by it. None: the
    # holdout's shares serve (they have the window's partial first and last days).
    mix: tuple[dict[str, dict[str, int]], int] | None = None
    composition_window_s: int = DetectorSettings().composition_window_s


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
    held = holdout_mask(frame, request.holdout_fraction)
    train, holdout = frame[~held], frame[held]
    unseen = _unseen_by_champion(registry, name, champion_version, request, labelled)
    compared, compared_note = _comparable(unseen, held)
    log.info("fitting a candidate", extra={
        "model": name, "train_records": len(train), "holdout_records": len(holdout),
        "compared_records": int(compared.sum())})
    candidate = fit_model(train, request.params)
    predicted = predict(candidate, holdout)
    champion_predicted, champion_note = _champion_predictions(registry, name, champion_version,
                                                              holdout)
    champion_note = "; ".join(filter(None, [champion_note, compared_note]))
    candidate_metrics, champion_metrics, slices = _compare(
        holdout[compared], predicted[compared],
        None if champion_predicted is None else champion_predicted[compared])
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
        composition=training_composition(request),
        slices=[asdict(comparison) for comparison in slices]), finish=finish)
    log.info("registered a model version", extra={
        "model": name, "version": info.version, "decision": decision.decision,
        "reason": reason, "training_records": len(frame), "duration_s": round(duration, 3)})
    return info


def training_composition(request: TrainingRequest) -> dict[str, Any] | None:
    """The request's mix for the manifest, ``{"window_s", "windows", "counts"}``, or None."""
    if request.mix is None:
        return None
    counts, windows = request.mix
    return {"window_s": request.composition_window_s, "windows": windows,
            "counts": {name: counts.get(name, {}) for name in CATEGORICAL_FEATURES}}


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


def holdout_mask(frame: pd.DataFrame, fraction: float) -> np.ndarray:
    """Which rows are held out: the most recent ``fraction`` of each county's rows (at least
    one row in all). Counties upload in slices, so the window's newest rows may all be one
    county's: held out per county, every county in the window is in the holdout, the gate
    sees a candidate that fails the others, and the holdout (the consumer's reference for
    the version) has the window's mix of counties."""
    county = frame[HOLDOUT_SLICE].to_numpy()
    groups = pd.Series(county).groupby(county, sort=False)
    newest_first = groups.cumcount(ascending=False).to_numpy()
    held: np.ndarray = newest_first < np.round(groups.transform("size").to_numpy() * fraction)
    if not held.any() and len(frame):
        held[-1] = True
    if held.all():
        raise TrainingError(f"{len(frame)} records leave nothing to train on after the holdout")
    return held


def _compare(rows: pd.DataFrame, ours: np.ndarray, theirs: np.ndarray | None
             ) -> tuple[HoldoutMetrics, HoldoutMetrics | None, list[SliceComparison]]:
    """Candidate (``ours``) and champion (``theirs``) metrics on ``rows``, overall and per
    county."""
    actual = rows[TARGET].to_numpy(float)
    if theirs is None:
        return holdout_metrics(actual, ours), None, []
    return (holdout_metrics(actual, ours), holdout_metrics(actual, theirs),
            slice_comparisons(HOLDOUT_SLICE, rows[HOLDOUT_SLICE].to_numpy(), actual, ours,
                              theirs))


def _comparable(unseen: np.ndarray | None, held: np.ndarray) -> tuple[np.ndarray, str]:
    """Which holdout rows the gate compares the models on: those the champion did not train
    on (all when that is unknown, or when it trained on every one), and a note saying so."""
    if unseen is None:
        return np.ones(int(held.sum()), dtype=bool), ""
    compared = unseen[held]
    if not compared.any():
        return np.ones(len(compared), dtype=bool), "the champion trained on every holdout record"
    if compared.all():
        return compared, ""
    return compared, (f"compared on the {int(compared.sum())} of {len(compared)} holdout "
                      "records the champion did not train on")


def _unseen_by_champion(registry: ModelRegistry, name: str, version: int | None,
                        request: TrainingRequest, labelled: np.ndarray) -> np.ndarray | None:
    """Per labelled row, whether the champion did not train on it (its record is outside the
    champion's training window): scoring the champion on rows it learnt would favour it, by
    a county's whole holdout where that county's newest rows are old. None when unknown
    (no champion, no record offsets, no lineage)."""
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
    return ~seen


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
