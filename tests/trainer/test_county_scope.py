"""A county's drift retrains on that county's records since the change and every other
county's recent records, and the gate holds out and checks every county (pure parts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from levydrift.artifacts import load_reference_sample
from levydrift.features import to_model_frame
from levydrift.simulator import LevySimulator, SimulatorConfig
from schemas.drift_event import (
    DetectorSpec,
    DriftEvent,
    DriftSignal,
    Onset,
    SourceOffsets,
    WindowSummary,
)
from trainer.model import ModelParams
from trainer.registry import ModelRegistry, VersionInfo
from trainer.training import TrainingRequest, holdout_mask, train_and_register
from trainer.window import segment_scopes
from trainer.worker import changed_segments

RECORDS = "levy.records"


def event(partition: int, segment: str | None, onset: int | None = 50,
          topic: str = RECORDS) -> DriftEvent:
    summary = WindowSummary(n=100, mean=0.0, std=1.0)
    return DriftEvent(
        event_id=f"{partition}-{segment}-{onset}-{topic}", model_name="levy-impact",
        model_version=1, kind="distribution",
        signals=(DriftSignal("assessed_value", DetectorSpec("page_hinkley", {"delta": 0.1}),
                             9.0, 5.0, 1.2, summary, summary),),
        reference_window=SourceOffsets(topic, partition, 0, 9),
        current_window=SourceOffsets(topic, partition, 10, 99),
        detected_at="2026-03-01T00:00:00Z", consumer_group="levy-drift-monitor",
        segment=segment, onset=None if onset is None else Onset(onset, None))


def test_changed_segments_are_those_every_onset_event_of_a_partition_names() -> None:
    events = [event(0, "county=Grant"), event(0, "county=Grant,tax_district=GRA-TCA-01"),
              event(0, "county=Grant"),  # the same segment on another signal: once
              event(1, "county=Yakima"), event(1, ""),  # and the whole stream: all of it
              event(2, "county=(other)"), event(3, "assesed=Grant"),  # no one segment
              event(4, "county=Benton", onset=None),  # no onset: no window start either
              event(5, "county=Benton", topic="levy.labels")]
    changed = changed_segments(events, RECORDS)
    assert changed == {0: ({"county": "Grant"},
                           {"county": "Grant", "tax_district": "GRA-TCA-01"})}
    assert segment_scopes(changed) == {"0": ["county=Grant",
                                             "county=Grant,tax_district=GRA-TCA-01"]}


def test_the_holdout_is_the_newest_share_of_each_county_even_when_one_arrived_last() -> None:
    # Benton's roll first, then Grant's: the newest fifth of the window is all Grant.
    frame = pd.DataFrame({"county": ["Benton"] * 500 + ["Grant"] * 500,
                          "order": np.arange(1000)})
    held = holdout_mask(frame, 0.2)
    train, holdout = frame[~held], frame[held]
    assert holdout["county"].value_counts().to_dict() == {"Benton": 100, "Grant": 100}
    for county in ("Benton", "Grant"):  # each county's newest rows, in the window's order
        rows = frame[frame["county"] == county]["order"]
        assert holdout[holdout["county"] == county]["order"].tolist() == rows.tolist()[-100:]
    assert holdout["order"].is_monotonic_increasing
    assert len(train) == 800 and set(train["order"]).isdisjoint(holdout["order"])


def test_a_county_too_small_to_hold_out_stays_in_training() -> None:
    frame = pd.DataFrame({"county": ["Benton"] * 100 + ["Grant"] * 2})
    held = holdout_mask(frame, 0.2)
    train, holdout = frame[~held], frame[held]
    assert holdout["county"].tolist() == ["Benton"] * 20
    assert train["county"].tolist().count("Grant") == 2


def test_a_version_records_both_models_on_each_county_of_its_holdout(tmp_path) -> None:
    simulator = LevySimulator(SimulatorConfig(seed=8, labelled_share=1.0))
    registry = ModelRegistry(tmp_path / "models")

    def train(start: int, stop: int) -> VersionInfo:
        frame = to_model_frame(simulator.columns(start, stop), include_target=True)
        return train_and_register(registry, "levy-impact", TrainingRequest(
            frame=frame, trigger_event_ids=[], code_version="test",
            params=ModelParams(max_iter=10), training_offsets=[
                {"topic": RECORDS, "partition": 0, "first_offset": start,
                 "last_offset": stop - 1}]))

    assert train(0, 3000).metrics["gate"]["slices"] == []  # no champion: nothing to compare
    second = train(3000, 12_000)
    slices = second.metrics["gate"]["slices"]
    sample = load_reference_sample(second.path)
    counties = sample["county"].value_counts()
    assert {s["name"] for s in slices} == {f"county={c}" for c in counties[counties >= 200].index}
    for found in slices:  # the candidate's MAE per county is its holdout errors' there
        rows = sample[sample["county"] == found["name"].removeprefix("county=")]
        assert found["rows"] == len(rows)
        assert found["candidate_mae"] == pytest.approx(rows["abs_error"].mean())
        assert found["champion_mae"] > 0


def test_the_champion_is_not_judged_on_records_it_trained_on(tmp_path) -> None:
    simulator = LevySimulator(SimulatorConfig(seed=9, labelled_share=1.0))
    columns = simulator.columns(0, 12_000)
    # Benton's records came first (offsets 0..), the others after: the champion, trained on
    # offsets 0..5999, learnt every Benton record the new window holds.
    order = np.argsort(columns["county"] != "Benton", kind="stable")
    frame = to_model_frame({k: v[order] for k, v in columns.items()}, include_target=True)
    offsets = np.column_stack([np.zeros(len(frame), np.int64), np.arange(len(frame))])

    def retrain(registry_dir: str, with_offsets: bool) -> VersionInfo:
        """A retrain on offsets 0..11999 after a champion on 0..5999."""
        registry = ModelRegistry(tmp_path / registry_dir)
        for rows in (slice(0, 6000), slice(0, 12_000)):
            version = train_and_register(registry, "levy-impact", TrainingRequest(
                frame=frame.iloc[rows].reset_index(drop=True), trigger_event_ids=[],
                code_version="test", params=ModelParams(max_iter=10), training_offsets=[
                    {"topic": RECORDS, "partition": 0, "first_offset": rows.start,
                     "last_offset": rows.stop - 1}],
                records_topic=RECORDS if with_offsets else None,
                record_offsets=offsets[rows] if with_offsets else None))
        return version

    def compared_counties(version: VersionInfo) -> set[str]:
        return {s["name"] for s in version.metrics["gate"]["slices"]}

    assert int((frame["county"] == "Benton").sum()) < 6000, "Benton must fit in v1's window"
    unknown = retrain("without", with_offsets=False)
    assert "county=Benton" in compared_counties(unknown)  # nothing known: nothing left out
    known = retrain("with", with_offsets=True)
    # Benton is held out (the holdout keeps the window's mix: the consumer's reference) but
    # not compared: the champion learnt those very records.
    assert "Benton" in set(load_reference_sample(known.path)["county"])
    assert "county=Benton" not in compared_counties(known)
    assert compared_counties(known) == {f"county={c}" for c in set(frame["county"].iloc[6000:])}
    assert "holdout records the champion did not train on" in known.metrics["gate"]["reason"]
