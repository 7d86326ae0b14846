"""Drift event v1: what the consumer publishes when a detector bank sees drift.

Validated against ``drift-event.v1.json`` itself (see ``schemas._contract``), plus rules the
schema cannot state: each window's first_offset is not above its last_offset, and an onset
is not after the detection. The optional fields (segment, onset, episode, a signal's
effect_measure / effect_unit / window_scale) are written only when set, so an event without
them is the same document as before they existed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas._contract import decode_document, encode_document, validate_document
from schemas.errors import Reason, reject

SCHEMA_FILE = "drift-event.v1.json"
DriftKind = Literal["distribution", "prediction", "performance"]
ParamValue = str | int | float | bool | None
# Fixed namespace: ids must stay the same across processes, hosts and releases.
DRIFT_EVENT_NAMESPACE = uuid.UUID("5d0c3a4e-8f1b-4c52-9a57-2f6b3c1e7d90")


@dataclass(frozen=True, slots=True)
class SourceOffsets:
    """An inclusive offset range of one topic partition."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """One signal over one window: n, mean/std/quantiles (numeric) or category shares."""

    n: int
    mean: float | None = None
    std: float | None = None
    quantiles: Mapping[str, float] = field(default_factory=dict)  # 'p5', 'p50', ...
    category_shares: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    name: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DriftSignal:
    """One drifted signal: which detector fired, how hard, and the two windows compared."""

    signal: str
    detector: DetectorSpec
    statistic: float
    threshold: float
    effect_size: float | None
    reference: WindowSummary
    current: WindowSummary
    effect_measure: str | None = None  # mean_shift | std_ratio | share_change
    effect_unit: str | None = None  # sd | ratio | share
    # What the windows' mean/std/quantiles are in when not the signal's own units:
    # normal_score | stratum_probability (None: the signal's own units).
    window_scale: str | None = None


@dataclass(frozen=True, slots=True)
class Onset:
    """Where the change is estimated to begin: an offset of the current window's partition."""

    offset: int
    event_time: str | None


@dataclass(frozen=True, slots=True)
class Episode:
    """The identity of one change, shared by every event that reports it."""

    id: str
    segment: str
    signal: str
    direction: str  # up | down
    onset_window: str | None  # RFC 3339 start of the event-time window holding the onset


@dataclass(frozen=True, slots=True)
class DriftEvent:
    event_id: str
    model_name: str
    model_version: int | None
    kind: DriftKind
    signals: tuple[DriftSignal, ...]
    reference_window: SourceOffsets
    current_window: SourceOffsets
    detected_at: str
    consumer_group: str
    schema_version: int = 1
    segment: str | None = None  # "county=Yakima"; "" = the whole stream
    onset: Onset | None = None
    episode: Episode | None = None

    def to_dict(self) -> dict[str, Any]:
        document = {
            "schema_version": self.schema_version, "event_id": self.event_id,
            "model_name": self.model_name, "model_version": self.model_version,
            "kind": self.kind, "signals": [_signal_to_dict(s) for s in self.signals],
            "reference_window": offsets_to_dict(self.reference_window),
            "current_window": offsets_to_dict(self.current_window),
            "detected_at": self.detected_at, "consumer_group": self.consumer_group,
        }
        if self.segment is not None:
            document["segment"] = self.segment
        if self.onset is not None:
            document["onset"] = {"offset": self.onset.offset,
                                 "event_time": self.onset.event_time}
        if self.episode is not None:
            document["episode"] = {"id": self.episode.id, "segment": self.episode.segment,
                                   "signal": self.episode.signal,
                                   "direction": self.episode.direction,
                                   "onset_window": self.episode.onset_window}
        return document

    def to_bytes(self) -> bytes:
        """Validated compact JSON; raises ``RecordRejected`` if the event breaks the contract."""
        document = self.to_dict()
        data = encode_document(document, SCHEMA_FILE)  # validates first: types are known below
        _check_windows(document)
        return data

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> DriftEvent:
        """Validate a parsed document, then build the event; raises ``RecordRejected``."""
        checked = validate_document(dict(document), SCHEMA_FILE)
        _check_windows(checked)
        return cls(
            event_id=checked["event_id"], model_name=checked["model_name"],
            model_version=checked["model_version"], kind=checked["kind"],
            signals=tuple(_signal_from_dict(s) for s in checked["signals"]),
            reference_window=offsets_from_dict(checked["reference_window"]),
            current_window=offsets_from_dict(checked["current_window"]),
            detected_at=checked["detected_at"], consumer_group=checked["consumer_group"],
            segment=checked.get("segment"),
            onset=Onset(**checked["onset"]) if "onset" in checked else None,
            episode=Episode(**checked["episode"]) if "episode" in checked else None,
        )

    @classmethod
    def from_bytes(cls, value: bytes | None) -> DriftEvent:
        return cls.from_dict(decode_document(value, SCHEMA_FILE))


def drift_event_id(model_name: str, consumer_group: str, topic: str, partition: int,
                   detection_offset: int, signals: Iterable[str]) -> str:
    """Deterministic event id (UUIDv5): the same detection on the same records, replayed,
    gets the same id, so downstream can de-duplicate. Signal order does not matter."""
    parts = [model_name, consumer_group, topic, str(partition), str(detection_offset),
             ",".join(sorted(set(signals)))]
    return str(uuid.uuid5(DRIFT_EVENT_NAMESPACE, "\x1f".join(parts)))


def offsets_to_dict(offsets: SourceOffsets) -> dict[str, Any]:
    return {"topic": offsets.topic, "partition": offsets.partition,
            "first_offset": offsets.first_offset, "last_offset": offsets.last_offset}


def offsets_from_dict(document: Mapping[str, Any]) -> SourceOffsets:
    return SourceOffsets(document["topic"], document["partition"],
                         document["first_offset"], document["last_offset"])


def check_offset_range(document: Mapping[str, Any], field_path: str) -> None:
    if document["first_offset"] > document["last_offset"]:
        raise reject(Reason.INCONSISTENT, f"{field_path}.first_offset",
                     f"first_offset {document['first_offset']} is above "
                     f"last_offset {document['last_offset']}")


def _check_windows(document: Mapping[str, Any]) -> None:
    for name in ("reference_window", "current_window"):
        check_offset_range(document[name], name)
    onset = document.get("onset")
    if onset is not None and onset["offset"] > document["current_window"]["last_offset"]:
        raise reject(Reason.INCONSISTENT, "onset.offset",
                     f"onset offset {onset['offset']} is after the detection offset "
                     f"{document['current_window']['last_offset']}")


# Segment labels the consumer writes for what is not one segment's own value.
OTHER_SEGMENT_LABEL = "(other)"  # segments beyond detectors.max_segments, sharing one bank
MISSING_SEGMENT_LABEL = "(missing)"  # an empty or absent field value


def segment_fields(segment: str | None) -> dict[str, str] | None:
    """The record fields and values an event's ``segment`` names (``"county=Walla Walla,
    tax_district=WAL-TCA-01"`` -> {"county": "Walla Walla", "tax_district": "WAL-TCA-01"};
    a missing value is ""). None when it names no one segment: the whole stream (empty or
    absent), the shared "(other)" bank, or text that does not read as field=value pairs."""
    if not segment:
        return None
    fields: dict[str, str] = {}
    for pair in segment.split(","):
        name, equals, value = pair.partition("=")
        if not equals or not name or name in fields or value == OTHER_SEGMENT_LABEL:
            return None
        fields[name] = "" if value == MISSING_SEGMENT_LABEL else value
    return fields


def drift_episode_id(model_name: str, segment: str, signal: str, direction: str,
                     onset_window: str | None) -> str:
    """Deterministic episode id (UUIDv5): no partition or offset in it, so every partition
    and consumer reporting the same change names the same episode."""
    parts = ["episode", model_name, segment, signal, direction, onset_window or ""]
    return str(uuid.uuid5(DRIFT_EVENT_NAMESPACE, "\x1f".join(parts)))


def _window_to_dict(window: WindowSummary) -> dict[str, Any]:
    return {"n": window.n, "mean": window.mean, "std": window.std,
            "quantiles": dict(window.quantiles), "category_shares": dict(window.category_shares)}


def _window_from_dict(document: Mapping[str, Any]) -> WindowSummary:
    return WindowSummary(document["n"], document["mean"], document["std"],
                         dict(document["quantiles"]), dict(document["category_shares"]))


def _signal_to_dict(signal: DriftSignal) -> dict[str, Any]:
    document = {"signal": signal.signal,
                "detector": {"name": signal.detector.name,
                             "params": dict(signal.detector.params)},
                "statistic": signal.statistic, "threshold": signal.threshold,
                "effect_size": signal.effect_size,
                "reference": _window_to_dict(signal.reference),
                "current": _window_to_dict(signal.current)}
    if signal.effect_measure is not None:
        document["effect_measure"] = signal.effect_measure
    if signal.effect_unit is not None:
        document["effect_unit"] = signal.effect_unit
    if signal.window_scale is not None:
        document["window_scale"] = signal.window_scale
    return document


def _signal_from_dict(document: Mapping[str, Any]) -> DriftSignal:
    detector = document["detector"]
    return DriftSignal(document["signal"], DetectorSpec(detector["name"], dict(detector["params"])),
                       document["statistic"], document["threshold"], document["effect_size"],
                       _window_from_dict(document["reference"]),
                       _window_from_dict(document["current"]),
                       document.get("effect_measure"), document.get("effect_unit"),
                       document.get("window_scale"))
