"""Model-version event v1: the trainer's decision about a version (promoted, rejected, rolled
back), with the evidence and lineage. Validated against ``model-version.v1.json`` itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from schemas._contract import decode_document, encode_document, validate_document
from schemas.drift_event import (
    SourceOffsets,
    check_offset_range,
    offsets_from_dict,
    offsets_to_dict,
)

SCHEMA_FILE = "model-version.v1.json"
Decision = Literal["promoted", "rejected", "rolled_back"]


@dataclass(frozen=True, slots=True)
class Metrics:
    """Holdout metrics: dollars for mae/rmse, a fraction for mape."""

    mae: float
    rmse: float
    mape: float
    r2: float


@dataclass(frozen=True, slots=True)
class ModelVersionEvent:
    model_name: str
    version: int
    previous_version: int | None
    decision: Decision
    artifact_uri: str
    artifact_sha256: str
    holdout_records: int
    candidate_metrics: Metrics
    champion_metrics: Metrics | None  # None when there was no champion to compare with
    training_offsets: tuple[SourceOffsets, ...]
    training_record_count: int
    trigger_event_ids: tuple[str, ...]
    feature_signature: str
    code_version: str
    created_at: str
    schema_version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "model_name": self.model_name,
            "version": self.version, "previous_version": self.previous_version,
            "decision": self.decision,
            "artifact": {"uri": self.artifact_uri, "sha256": self.artifact_sha256},
            "metrics": {"holdout_records": self.holdout_records,
                        "candidate": _metrics_to_dict(self.candidate_metrics),
                        "champion": _metrics_to_dict(self.champion_metrics)},
            "training_window": {"offsets": [offsets_to_dict(o) for o in self.training_offsets],
                                "record_count": self.training_record_count},
            "trigger_event_ids": list(self.trigger_event_ids),
            "feature_signature": self.feature_signature, "code_version": self.code_version,
            "created_at": self.created_at,
        }

    def to_bytes(self) -> bytes:
        """Validated compact JSON; raises ``RecordRejected`` if the event breaks the contract."""
        document = self.to_dict()
        data = encode_document(document, SCHEMA_FILE)  # validates first: types are known below
        _check_offsets(document)
        return data

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> ModelVersionEvent:
        """Validate a parsed document, then build the event; raises ``RecordRejected``."""
        checked = validate_document(dict(document), SCHEMA_FILE)
        _check_offsets(checked)
        metrics, window = checked["metrics"], checked["training_window"]
        return cls(
            model_name=checked["model_name"], version=checked["version"],
            previous_version=checked["previous_version"], decision=checked["decision"],
            artifact_uri=checked["artifact"]["uri"],
            artifact_sha256=checked["artifact"]["sha256"],
            holdout_records=metrics["holdout_records"],
            candidate_metrics=_metrics(metrics["candidate"]),
            champion_metrics=_metrics_from_dict(metrics["champion"]),
            training_offsets=tuple(offsets_from_dict(o) for o in window["offsets"]),
            training_record_count=window["record_count"],
            trigger_event_ids=tuple(checked["trigger_event_ids"]),
            feature_signature=checked["feature_signature"],
            code_version=checked["code_version"], created_at=checked["created_at"],
        )

    @classmethod
    def from_bytes(cls, value: bytes | None) -> ModelVersionEvent:
        return cls.from_dict(decode_document(value, SCHEMA_FILE))


def _check_offsets(document: Mapping[str, Any]) -> None:
    for index, offsets in enumerate(document["training_window"]["offsets"]):
        check_offset_range(offsets, f"training_window.offsets[{index}]")


def _metrics_to_dict(metrics: Metrics | None) -> dict[str, float] | None:
    if metrics is None:
        return None
    return {"mae": metrics.mae, "rmse": metrics.rmse, "mape": metrics.mape, "r2": metrics.r2}


def _metrics_from_dict(document: Mapping[str, Any] | None) -> Metrics | None:
    return None if document is None else _metrics(document)


def _metrics(document: Mapping[str, Any]) -> Metrics:
    """Metrics the schema requires (the candidate's: an object, never null)."""
    return Metrics(document["mae"], document["rmse"], document["mape"], document["r2"])
