"""Drift-event and model-version v1: schema files, round trips, reasons, deterministic ids."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from schemas._contract import load_schema
from schemas.drift_event import (
    DetectorSpec,
    DriftEvent,
    DriftSignal,
    Episode,
    Onset,
    SourceOffsets,
    WindowSummary,
    drift_episode_id,
    drift_event_id,
    segment_fields,
)
from schemas.errors import Reason, RecordRejected
from schemas.model_version import Metrics, ModelVersionEvent

SCHEMA_FILES = ["levy-record.v1.json", "levy-label.v1.json", "drift-event.v1.json",
                "model-version.v1.json"]

ID_ARGS = ("levy-impact", "levy-drift-monitor", "levy.records", 3, 120_000,
           ["assessed_value", "market_value"])

SIGNAL = DriftSignal(
    signal="assessed_value",
    detector=DetectorSpec("page_hinkley", {"delta": 0.005, "threshold": 50.0,
                                           "standardised": True, "mode": "up"}),
    statistic=61.2, threshold=50.0, effect_size=0.84,
    reference=WindowSummary(5000, 0.0, 1.0, {"p5": -1.6, "p50": 0.0, "p95": 1.7}),
    current=WindowSummary(800, 0.84, 1.1, {"p5": -0.7, "p50": 0.8, "p95": 2.6}))
CATEGORICAL = DriftSignal(
    signal="property_class", detector=DetectorSpec("chi2", {"alpha": 0.001}),
    statistic=40.1, threshold=13.8, effect_size=None,
    reference=WindowSummary(5000, category_shares={"residential": 0.8, "commercial": 0.2}),
    current=WindowSummary(800, category_shares={"residential": 0.6, "data-center": 0.4}))
EVENT = DriftEvent(
    event_id=drift_event_id(*ID_ARGS), model_name="levy-impact", model_version=4,
    kind="distribution", signals=(SIGNAL, CATEGORICAL),
    reference_window=SourceOffsets("levy.records", 3, 110_000, 114_999),
    current_window=SourceOffsets("levy.records", 3, 119_201, 120_000),
    detected_at="2024-03-01T12:00:00.000Z", consumer_group="levy-drift-monitor")
MODEL_VERSION = ModelVersionEvent(
    model_name="levy-impact", version=5, previous_version=4, decision="promoted",
    artifact_uri="models/levy-impact/versions/5/model.skops", artifact_sha256="ab" * 32,
    holdout_records=2000, candidate_metrics=Metrics(112.5, 180.2, 0.031, 0.97),
    champion_metrics=Metrics(240.0, 390.5, 0.072, 0.88),
    training_offsets=(SourceOffsets("levy.records", 0, 0, 9999),
                      SourceOffsets("levy.records", 1, 0, 10_421)),
    training_record_count=20_398, trigger_event_ids=(EVENT.event_id,),
    feature_signature="f" * 64, code_version="3f2a9c1", created_at="2024-03-01T12:05:00Z")


@pytest.mark.parametrize("file_name", SCHEMA_FILES)
def test_schema_files_are_valid_documented_draft_2020_12(file_name: str) -> None:
    schema = load_schema(file_name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert schema["properties"]["schema_version"]["const"] == 1
    assert _undocumented(schema) == []


def _undocumented(schema: dict[str, Any], path: str = "") -> list[str]:
    """Every property in the schema, nested ones and $defs included, has a description."""
    missing = []
    for name, spec in schema.get("properties", {}).items():
        if "description" not in spec and "$ref" not in spec:
            missing.append(f"{path}{name}")
        missing += _undocumented(spec, f"{path}{name}.")
    for name, spec in schema.get("$defs", {}).items():
        missing += _undocumented(spec, f"$defs.{name}.")
    return missing


def test_drift_event_round_trips_and_is_valid_under_json_schema() -> None:
    data = EVENT.to_bytes()
    assert DriftEvent.from_bytes(data) == EVENT
    Draft202012Validator(load_schema("drift-event.v1.json")).validate(orjson.loads(data))


def test_model_version_round_trips_and_is_valid_under_json_schema() -> None:
    first_version = replace(MODEL_VERSION, version=1, previous_version=None,
                            champion_metrics=None, trigger_event_ids=())
    validator = Draft202012Validator(load_schema("model-version.v1.json"))
    for event in (MODEL_VERSION, first_version):
        data = event.to_bytes()
        assert ModelVersionEvent.from_bytes(data) == event
        validator.validate(orjson.loads(data))


def test_drift_event_id_is_deterministic_and_names_the_detection() -> None:
    assert drift_event_id(*ID_ARGS) == drift_event_id(*ID_ARGS)
    assert drift_event_id(*ID_ARGS[:5], list(reversed(ID_ARGS[5]))) == drift_event_id(*ID_ARGS)
    assert drift_event_id(*ID_ARGS[:4], 120_001, ID_ARGS[5]) != drift_event_id(*ID_ARGS)
    assert drift_event_id(*ID_ARGS[:5], ["assessed_value"]) != drift_event_id(*ID_ARGS)
    assert drift_event_id("other-model", *ID_ARGS[1:]) != drift_event_id(*ID_ARGS)
    # pinned: a change here would break de-duplication across a release
    assert drift_event_id(*ID_ARGS) == "eb55fff1-bd36-5e7c-9e2b-9d8f948cf494"


def _drift_document(**changes: Any) -> dict[str, Any]:
    return {**EVENT.to_dict(), **changes}


def _signal_document(**changes: Any) -> dict[str, Any]:
    return {**EVENT.to_dict()["signals"][0], **changes}


DRIFT_BAD_CASES = [
    ("unknown version", _drift_document(schema_version=2), Reason.UNKNOWN_SCHEMA_VERSION,
     "schema_version"),
    ("unknown kind", _drift_document(kind="seasonal"), Reason.INVALID_VALUE, "kind"),
    ("no signals", _drift_document(signals=[]), Reason.TOO_SHORT, "signals"),
    ("missing field", {k: v for k, v in EVENT.to_dict().items() if k != "consumer_group"},
     Reason.MISSING_FIELD, "consumer_group"),
    ("unknown field", _drift_document(severity="high"), Reason.UNKNOWN_FIELD, "severity"),
    ("statistic as text", _drift_document(signals=[_signal_document(statistic="61.2")]),
     Reason.WRONG_TYPE, "signals[0].statistic"),
    ("negative offset", _drift_document(current_window={**EVENT.to_dict()["current_window"],
                                                         "first_offset": -1}),
     Reason.OUT_OF_RANGE, "current_window.first_offset"),
    ("bad timestamp", _drift_document(detected_at="yesterday"), Reason.BAD_TIMESTAMP,
     "detected_at"),
    ("bad id", _drift_document(event_id="not-a-uuid"), Reason.INVALID_VALUE, "event_id"),
    ("model version 0", _drift_document(model_version=0), Reason.OUT_OF_RANGE,
     "model_version"),
    ("bad quantile key", _drift_document(signals=[_signal_document(
        current={"n": 1, "mean": 1.0, "std": 0.0, "quantiles": {"median": 1.0},
                 "category_shares": {}})]), Reason.INVALID_VALUE, "signals[0].current.quantiles"),
    ("first above last", _drift_document(reference_window={
        **EVENT.to_dict()["reference_window"], "first_offset": 200_000}),
     Reason.INCONSISTENT, "reference_window.first_offset"),
]


@pytest.mark.parametrize(("document", "reason", "field"), [c[1:] for c in DRIFT_BAD_CASES],
                         ids=[c[0] for c in DRIFT_BAD_CASES])
def test_bad_drift_events_are_refused_with_reason_and_field(
        document: dict[str, Any], reason: Reason, field: str) -> None:
    with pytest.raises(RecordRejected) as caught:
        DriftEvent.from_bytes(json.dumps(document).encode())
    assert (caught.value.reason, caught.value.field) == (reason, field)
    schema_valid = Draft202012Validator(load_schema("drift-event.v1.json")).is_valid(document)
    assert schema_valid == (reason == Reason.INCONSISTENT)  # the one rule beside the schema


def test_drift_event_refuses_nan_both_ways() -> None:
    with pytest.raises(RecordRejected) as caught:
        replace(EVENT, signals=(replace(SIGNAL, statistic=float("nan")),)).to_bytes()
    assert (caught.value.reason, caught.value.field) == (Reason.NOT_FINITE,
                                                          "signals[0].statistic")
    text = EVENT.to_bytes().replace(b'"statistic":61.2', b'"statistic":NaN')
    with pytest.raises(RecordRejected) as caught:
        DriftEvent.from_bytes(text)
    assert caught.value.reason == Reason.NOT_FINITE


MODEL_BAD_CASES = [
    ("unknown decision", {"decision": "archived"}, Reason.INVALID_VALUE, "decision"),
    ("bad sha", {"artifact": {"uri": "m.skops", "sha256": "XYZ"}}, Reason.INVALID_VALUE,
     "artifact.sha256"),
    ("r2 above one", {"metrics": {"holdout_records": 10, "champion": None,
                                  "candidate": {"mae": 1, "rmse": 1, "mape": 0.1, "r2": 1.5}}},
     Reason.OUT_OF_RANGE, "metrics.candidate.r2"),
    ("path in name", {"model_name": "../etc"}, Reason.INVALID_VALUE, "model_name"),
    ("no window", {"training_window": {"offsets": [], "record_count": 0}}, Reason.TOO_SHORT,
     "training_window.offsets"),
    ("duplicate triggers", {"trigger_event_ids": [EVENT.event_id] * 2}, Reason.INVALID_VALUE,
     "trigger_event_ids"),
    ("not an object", None, Reason.NOT_OBJECT, None),
]


@pytest.mark.parametrize(("changes", "reason", "field"), [c[1:] for c in MODEL_BAD_CASES],
                         ids=[c[0] for c in MODEL_BAD_CASES])
def test_bad_model_version_events_are_refused_with_reason_and_field(
        changes: dict[str, Any] | None, reason: Reason, field: str | None) -> None:
    document: Any = [1] if changes is None else {**MODEL_VERSION.to_dict(), **changes}
    with pytest.raises(RecordRejected) as caught:
        ModelVersionEvent.from_bytes(json.dumps(document).encode())
    assert (caught.value.reason, caught.value.field) == (reason, field)
    assert not Draft202012Validator(load_schema("model-version.v1.json")).is_valid(document)


EVENT_DECODERS = {"drift event": (DriftEvent.from_bytes, EVENT.to_bytes()),
                  "model version": (ModelVersionEvent.from_bytes, MODEL_VERSION.to_bytes())}


@pytest.mark.parametrize(("name", "key", "path"), [
    ("drift event", b'"kind":', "kind"),
    ("drift event", b'"statistic":', "signals[0].statistic"),
    ("model version", b'"version":', "version"),
    ("model version", b'"mae":', "metrics.candidate.mae"),
])
def test_events_refuse_a_repeated_key_naming_it(name: str, key: bytes, path: str) -> None:
    """The first of two equal keys would win in some reader and the last in ours."""
    decode, good = EVENT_DECODERS[name]
    start = good.index(key)
    end = good.index(b",", start)
    value = good[:end] + b"," + good[start:end] + good[end:]
    with pytest.raises(RecordRejected) as caught:
        decode(value)
    assert (caught.value.reason, caught.value.field) == (Reason.DUPLICATE_KEY, path)


@pytest.mark.parametrize("name", list(EVENT_DECODERS))
def test_events_nested_beyond_reason_are_a_rejection_not_a_crash(name: str) -> None:
    decode, good = EVENT_DECODERS[name]
    value = good[:-1] + b',"x":' + b"[" * 1000 + b"]" * 1000 + b"}"  # orjson parses it
    with pytest.raises(RecordRejected) as caught:
        decode(value)
    assert caught.value.reason == Reason.NOT_JSON
    assert decode(good) is not None


# ---------------------------------------------------------------------- where and since when

def _located(partition: int = 3, onset: int = 119_500) -> DriftEvent:
    episode_id = drift_episode_id("levy-impact", "county=Yakima", "assessed_value", "up",
                                  "2024-03-01T00:00:00.000Z")
    return replace(
        EVENT, current_window=SourceOffsets("levy.records", partition, 119_201, 120_000),
        signals=(replace(SIGNAL, effect_measure="mean_shift", effect_unit="sd",
                         window_scale="stratum_probability"),),
        segment="county=Yakima", onset=Onset(onset, "2024-03-01T11:40:00.000Z"),
        episode=Episode(episode_id, "county=Yakima", "assessed_value", "up",
                        "2024-03-01T00:00:00.000Z"))


def test_segment_onset_and_episode_round_trip_under_both_validators() -> None:
    event = _located()
    data = event.to_bytes()
    assert DriftEvent.from_bytes(data) == event
    document = orjson.loads(data)
    assert not list(Draft202012Validator(load_schema("drift-event.v1.json")).iter_errors(
        document))
    assert document["segment"] == "county=Yakima" and document["onset"]["offset"] == 119_500
    assert document["signals"][0]["effect_unit"] == "sd"
    assert document["signals"][0]["window_scale"] == "stratum_probability"


def test_an_event_without_the_optional_fields_is_the_same_document_as_before() -> None:
    document = orjson.loads(EVENT.to_bytes())
    assert not {"segment", "onset", "episode"} & set(document)
    assert not {"effect_measure", "effect_unit", "window_scale"} & set(document["signals"][0])
    assert DriftEvent.from_bytes(EVENT.to_bytes()) == EVENT


def test_the_episode_id_is_the_same_on_every_partition() -> None:
    one, other = _located(partition=0), _located(partition=5, onset=119_300)
    assert one.event_id != drift_event_id("levy-impact", "levy-drift-monitor", "levy.records",
                                          5, 120_000, ["assessed_value"])
    assert one.episode == other.episode
    assert one.episode.id != drift_episode_id("levy-impact", "county=Grant", "assessed_value",
                                              "up", "2024-03-01T00:00:00.000Z")


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d["onset"].update(offset=120_001), "onset.offset"),
    (lambda d: d["episode"].update(direction="sideways"), "episode.direction"),
    (lambda d: d["signals"][0].update(effect_unit="furlongs"), "signals[0].effect_unit"),
    (lambda d: d["signals"][0].update(window_scale="value"), "signals[0].window_scale"),
    (lambda d: d.update(segment=7), "segment"),
])
def test_bad_located_events_are_refused_by_codec_and_schema(change, field: str) -> None:
    document = _located().to_dict()
    change(document)
    with pytest.raises(RecordRejected) as caught:
        DriftEvent.from_dict(document)
    assert field.split("[")[0].split(".")[0] in caught.value.field
    if field != "onset.offset":  # the onset/detection order is the codec's rule alone
        assert list(Draft202012Validator(load_schema("drift-event.v1.json")).iter_errors(
            document))


@pytest.mark.parametrize(("segment", "fields"), [
    ("county=Yakima", {"county": "Yakima"}),
    ("county=Walla Walla,tax_district=WAL-TCA-01",
     {"county": "Walla Walla", "tax_district": "WAL-TCA-01"}),
    ("county=Grant,property_class=(missing)", {"county": "Grant", "property_class": ""}),
    ("tax_district=A=B", {"tax_district": "A=B"}),  # the first "=" ends the name
    ("", None), (None, None),  # the whole stream
    ("county=(other)", None),  # the bank segments beyond max_segments share
    ("county", None), ("=Grant", None), ("county=Grant,county=Yakima", None),
])
def test_segment_fields_read_back_what_the_consumer_names(segment: str | None,
                                                          fields: dict | None) -> None:
    assert segment_fields(segment) == fields
