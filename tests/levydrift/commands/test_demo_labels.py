"""The demo's last act streams what a real stream would carry: from its first record on, records
without levies and each levy as a label after the records that reach its event time, split where
the relief begins (the stream itself, without Kafka; test_demo.py runs the act)."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from levydrift.commands.demo_labels import (
    LABEL_DELAY,
    RELIEF_RECORDS,
    WARMUP_RECORDS,
    LateLabelsAct,
    record_index_of,
)
from levydrift.simulator import SimulatorConfig

START = 30_000
RECORDS, LABELS = "demo.records", "demo.labels"


@pytest.fixture(scope="module")
def act() -> LateLabelsAct:
    topics = SimpleNamespace(names=SimpleNamespace(records=RECORDS, labels=LABELS))
    base = SimulatorConfig(scenario="reassessment", change_at=16_000, magnitude=0.5,
                           county="Benton", labelled_share=0.5)
    return LateLabelsAct(cast(Any, None), cast(Any, topics), cast(Any, None), cast(Any, None),
                         60.0, base, 2, START)


@pytest.fixture(scope="module")
def messages(act: LateLabelsAct) -> list[tuple[str, dict[str, Any]]]:
    return list(act.arrivals())


def moment(message: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(message["event_time"].replace("Z", "+00:00"))


def test_the_act_streams_its_records_without_levies_and_every_one_labelled_once(
        messages: list[tuple[str, dict[str, Any]]]) -> None:
    records = [m for topic, m in messages if topic == RECORDS]
    labels = [m for topic, m in messages if topic == LABELS]
    indexes = [record_index_of(r) for r in records]
    assert indexes == list(range(START, START + WARMUP_RECORDS + RELIEF_RECORDS))
    assert not any("actual_levy_amount" in r for r in records)
    assert sorted(record_index_of(label) for label in labels) == indexes


def test_each_label_comes_after_the_records_that_reach_its_event_time(
        messages: list[tuple[str, dict[str, Any]]]) -> None:
    """As ``arrivals`` places it: after its own record and every record dated at or before it,
    before the first record dated after it (those still waiting when the records end, after
    the last record)."""
    seen: dict[str, datetime] = {}
    waiting: list[datetime] = []  # labels since the last record
    delays = []
    for topic, message in messages:
        if topic == RECORDS:
            assert all(label < moment(message) for label in waiting)
            waiting = []
            seen[message["record_id"]] = moment(message)
            continue
        assert message["record_id"] in seen
        waiting.append(moment(message))
        delays.append((moment(message) - seen[message["record_id"]]).total_seconds())
    assert len(waiting) > 100  # the labels of the last records come after them
    median_minutes = float(np.median(delays)) / 60
    assert median_minutes == pytest.approx(LABEL_DELAY.median_days * 1440, rel=0.05)


def test_the_stream_splits_where_the_relief_begins(
        act: LateLabelsAct, messages: list[tuple[str, dict[str, Any]]]) -> None:
    before, after = act.split_at(messages, act.relief_at)
    assert before + after == messages
    assert after[0][0] == RECORDS and record_index_of(after[0][1]) == act.relief_at
    assert max(record_index_of(m) for topic, m in before if topic == RECORDS) == act.relief_at - 1
