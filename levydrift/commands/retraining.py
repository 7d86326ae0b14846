"""Retraining on what a check found: once per drift episode, planned by the trainer worker's
own rules, either here (train and gate against the champion) or by publishing the drift events
for the trainer worker."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from confluent_kafka import Producer

from consumer.events import decision_to_event
from detectors.composition import event_times_ms, whole_window_counts
from levydrift.commands.check_result import CheckResult, CheckSettings, signal_table
from levydrift.errors import BrokerUnavailableError
from levydrift.kafka import admin_client, ensure_reachable, producer_config
from levydrift.settings import RegistrySettings
from schemas.drift_event import DriftEvent
from trainer.config import TrainerSettings
from trainer.registry import ModelRegistry
from trainer.window import event_time_order, newest_of_each

if TYPE_CHECKING:  # imported when retraining (scikit-learn)
    import pandas as pd

    from trainer.worker import TrainWorker

CHECK_GROUP = "levydrift-check"  # the "consumer group" named in drift events from a file


@dataclass(frozen=True)
class RetrainOutcome:
    """What ``--trigger-retraining`` did: trained a version, found every episode handled
    already, or handed the events to the trainer worker."""

    action: str  # "trained" | "handled" | "published"
    line: str
    version: Any = None  # trainer.registry.VersionInfo when trained
    # drift event id -> the version that handled it (from the lineage or the covering episode)
    handled_by: dict[str, int | None] = field(default_factory=dict)


def retrain_once(result: CheckResult, settings: CheckSettings,
                 registry_root: str) -> RetrainOutcome:
    """Retrain on the drift episodes no version has handled yet, planned by the trainer
    worker's own rules; train nothing when all are handled."""
    events = file_events(result)
    plan = _worker(settings, registry_root, result.model).plan(events)
    fresh = {event.event_id for event in plan.fresh}
    lineage = ModelRegistry(registry_root).handled_event_ids(result.model)
    handled = {event.event_id: lineage.get(event.event_id, plan.covered.get(event.event_id))
               for event in events if event.event_id not in fresh}
    if not plan.fresh:
        versions = sorted({v for v in handled.values() if v is not None})
        return RetrainOutcome("handled", "drift already handled by version(s) "
                              + ", ".join(map(str, versions)) + "; nothing retrained",
                              handled_by=handled)
    info = train_on_result(result, settings, registry_root, plan.fresh)
    return RetrainOutcome("trained", info.summary_line(), info, handled)


def trained_on_same_data(result: CheckResult, registry_root: str) -> int | None:
    """The newest version trained on exactly this data (same content hash), if any."""
    registry = ModelRegistry(registry_root)
    for version in reversed(registry.versions(result.model)):
        windows = registry.get(result.model, version).lineage.get("training_window", {})
        if any(w.get("topic") == result.window.get("topic") for w in windows.get("offsets", [])):
            return version
    return None


def train_on_result(result: CheckResult, settings: CheckSettings, registry_root: str,
                    events: list[Any]) -> Any:
    """Train a candidate on the data's most recent labelled rows and gate it against the
    registry's champion (the trainer's own run); returns the ``VersionInfo``."""
    # lazy: scikit-learn (seconds to import), only when a model is trained
    from levydrift.features import CATEGORICAL_FEATURES, to_model_frame
    from trainer.events import code_version
    from trainer.model import ModelParams
    from trainer.training import TrainingRequest, train_and_register
    from trainer.worker import event_summary

    section = settings.trainer
    model_frame = to_model_frame(result.columns, include_target=True)
    times = result.columns.get("event_time")
    rows = newest_labelled_rows(model_frame, times, section.window_records,
                                result.columns.get("record_id"))
    frame = model_frame.iloc[rows].reset_index(drop=True)
    window_s = settings.detectors.composition_window_s
    return train_and_register(ModelRegistry(registry_root), result.model, TrainingRequest(
        frame=frame, trigger_event_ids=[event.event_id for event in events],
        mix=None if times is None else file_mix(
            {name: model_frame[name].to_numpy() for name in CATEGORICAL_FEATURES},
            event_times_ms(times), rows, window_s),
        composition_window_s=window_s,
        training_offsets=[result.window],
        code_version=section.code_version or code_version(),
        holdout_fraction=section.holdout_fraction, gate_margin=section.gate_margin,
        slice_tolerance=section.slice_tolerance,
        min_training_records=section.min_training_records,
        params=ModelParams(max_iter=section.max_iter),
        extra_lineage={"source": result.source,
                       "drifted_signals": result.drifted_signals(),
                       "signals": signal_table(result),
                       "drift_events": [event_summary(event) for event in events]}))


def file_mix(categories: dict[str, np.ndarray], times_ms: np.ndarray, rows: np.ndarray,
             window_s: int) -> tuple[dict[str, dict[str, int]], int]:
    """The file's mix while the training ``rows`` came: every row's ``categories`` (labelled
    or not) from the oldest of them on, counted over whole event-time windows."""
    trained = times_ms[rows]
    trained = trained[trained >= 0]  # rows without an event time mark no span
    since = times_ms >= (trained.min() if trained.size else 0)
    return whole_window_counts({name: values[since] for name, values in categories.items()},
                               times_ms[since], window_s)


def newest_labelled(frame: pd.DataFrame, event_times: Any, window_records: int,
                    record_ids: Any = None) -> pd.DataFrame:
    """The newest ``window_records`` labelled rows of a file's model ``frame``, oldest to
    newest by event time (file order where times are equal or missing), each record once
    (its last row). Files hold county rolls one after another: by file position, the newest
    rows would be the last counties' alone, and the candidate would never see the others."""
    rows = newest_labelled_rows(frame, event_times, window_records, record_ids)
    return frame.iloc[rows].reset_index(drop=True)


def newest_labelled_rows(frame: pd.DataFrame, event_times: Any, window_records: int,
                         record_ids: Any = None) -> np.ndarray:
    """The row indices ``newest_labelled`` takes, in its order."""
    labelled = np.isfinite(frame["actual_levy_amount"].to_numpy(float))
    order = event_time_order(event_times, len(frame))
    order = newest_of_each(record_ids, order[labelled[order]])
    return order[-window_records:]


def _worker(settings: CheckSettings, registry_root: str, model: str) -> TrainWorker:
    """A trainer worker (not started: no Kafka) for its ``plan`` of drift events."""
    from trainer.worker import TrainWorker  # lazy: scikit-learn, only when retraining

    return TrainWorker(TrainerSettings(kafka=settings.kafka, topics=settings.topics,
                                       trainer=replace(settings.trainer, model_name=model),
                                       registry=RegistrySettings(registry_root)))


def file_events(result: CheckResult) -> list[DriftEvent]:
    """Drift events (schema v1) for the decisions, with the rows as offsets of the data's
    window topic (``file.<name>.<hash>``: the trainer's convention for file windows)."""
    times = result.columns["event_time"]
    return [decision_to_event(decision, result.window["topic"], 0, group=CHECK_GROUP,
                              model_name=result.model, model_version=result.model_version,
                              detected_at=str(times[decision.detected_at]))
            for decision in result.decisions]


def publish_events(result: CheckResult, settings: CheckSettings) -> int:
    """Send the drift events to the drift-events topic for the trainer worker."""
    ensure_reachable(admin_client(settings.kafka), settings.kafka)
    producer = Producer(producer_config(settings.kafka))
    failures: list[str] = []
    events = file_events(result)
    for event in events:
        producer.produce(settings.topics.drift_events, value=event.to_bytes(),
                         key=result.model.encode(),
                         on_delivery=lambda error, _m: failures.append(error.str()) if error
                         else None)
    if producer.flush(settings.kafka.request_timeout_s) or failures:
        raise BrokerUnavailableError(
            f"publishing drift events to {settings.topics.drift_events} failed: "
            f"{failures[0] if failures else 'not acknowledged in time'}")
    return len(events)


def trigger_retraining(result: CheckResult, settings: CheckSettings, registry: str | None,
                       publish: bool) -> RetrainOutcome:
    if publish:
        count = publish_events(result, settings)
        return RetrainOutcome("published", f"retraining: published {count} drift event(s) "
                              f"to {settings.topics.drift_events} for the trainer worker")
    outcome = retrain_once(result, settings, registry or settings.registry.root)
    return replace(outcome, line=f"retraining: {outcome.line}")
