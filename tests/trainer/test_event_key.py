"""Keys on the compacted model-version topic: a rejection never hides the champion."""

from __future__ import annotations

from dataclasses import replace

from levydrift.features import feature_signature
from schemas.drift_event import SourceOffsets
from schemas.model_version import Metrics, ModelVersionEvent
from trainer.events import event_key

EVENT = ModelVersionEvent(
    model_name="levy-impact", version=3, previous_version=2, decision="promoted",
    artifact_uri="/models/levy-impact/versions/3/model.skops", artifact_sha256="0" * 64,
    holdout_records=10, candidate_metrics=Metrics(1.0, 1.0, 0.1, 0.9), champion_metrics=None,
    training_offsets=(SourceOffsets("levy.records", 0, 0, 9),), training_record_count=10,
    trigger_event_ids=(), feature_signature=feature_signature(), code_version="test",
    created_at="2026-01-01T00:00:00Z")


def test_champion_changes_are_keyed_by_model_name() -> None:
    assert event_key(EVENT) == b"levy-impact"
    assert event_key(replace(EVENT, decision="rolled_back")) == b"levy-impact"


def test_rejections_are_keyed_per_version() -> None:
    rejected = replace(EVENT, decision="rejected")
    assert event_key(rejected) == b"levy-impact/rejected/3"
    assert event_key(rejected) != event_key(EVENT)
