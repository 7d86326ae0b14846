"""Model-version events (schemas/model_version.py) built from what the registry holds, so an
event always says exactly what the version's files say."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from schemas.drift_event import SourceOffsets
from schemas.model_version import Decision, Metrics, ModelVersionEvent
from trainer.registry import VersionInfo, utc_now


def version_event(info: VersionInfo, decision: Decision, previous_version: int | None,
                  created_at: str | None = None) -> ModelVersionEvent:
    """The event for ``info``. For a trained version ``created_at`` defaults to the manifest's
    time, so republishing after a crash sends the identical event."""
    window = info.lineage.get("training_window", {})
    return ModelVersionEvent(
        model_name=info.name, version=info.version, previous_version=previous_version,
        decision=decision, artifact_uri=str(info.artifact_path.resolve()),
        artifact_sha256=info.sha256,
        holdout_records=int(info.metrics.get("holdout_records", 0)),
        candidate_metrics=_metrics(info.metrics["candidate"]),
        champion_metrics=_optional_metrics(info.metrics.get("champion")),
        training_offsets=tuple(SourceOffsets(o["topic"], int(o["partition"]),
                                             int(o["first_offset"]), int(o["last_offset"]))
                               for o in window.get("offsets", [])),
        training_record_count=int(window.get("record_count", 0)),
        trigger_event_ids=tuple(info.lineage.get("drift_event_ids", [])),
        feature_signature=info.manifest["feature_signature"],
        code_version=info.lineage.get("code_version") or "unknown",
        created_at=created_at or info.manifest.get("created_at") or utc_now(),
    )


def event_key(event: ModelVersionEvent) -> bytes:
    """The Kafka key of a model-version event on the compacted topic.

    Champion changes (promoted, rolled back) are keyed by the model name, so compaction keeps the
    current champion of each model. A rejection is keyed per version: keyed by the model name it
    would, once compacted, hide the champion it did not replace."""
    if event.decision == "rejected":
        return f"{event.model_name}/rejected/{event.version}".encode()
    return event.model_name.encode()


def registration_event(info: VersionInfo) -> ModelVersionEvent:
    """The event of a freshly trained version: its gate decision, against the champion then."""
    decision = info.manifest["status"]
    return version_event(info, decision, info.metrics.get("champion_version"))


def _optional_metrics(document: dict[str, float] | None) -> Metrics | None:
    return None if document is None else _metrics(document)


def _metrics(document: dict[str, float]) -> Metrics:
    return Metrics(float(document["mae"]), float(document["rmse"]), float(document["mape"]),
                   float(document["r2"]))


@cache
def code_version() -> str:
    """``levy-drift <version>`` plus the git commit when running from a checkout."""
    try:
        package = version("levy-drift")
    except PackageNotFoundError:
        package = "0+unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"levy-drift {package}" + (f" ({commit})" if commit else "")
