"""The consumer's per-partition processing, fed from a list: dead letters, drift events with
offsets, and rewinding to the last committed snapshot after an aborted transaction."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

import consumer.processing as processing_module
from consumer.config import ConsumerSettings
from consumer.join_store import JoinStore
from consumer.labels import DAY_MS, LabelJoin, restore_errors
from consumer.processing import PartitionMonitor, process_partition
from levydrift.simulator import LevySimulator, SimulatorConfig
from schemas.dead_letter import source_of
from schemas.drift_event import DriftEvent

TOPIC = "levy.records"
SETTINGS = ConsumerSettings()


@dataclass
class ListMessage:
    """The part of confluent_kafka.Message the processing reads."""

    _offset: int
    _value: bytes | None
    _key: bytes | None = b"parcel"
    _headers: list = field(default_factory=list)

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def offset(self) -> int:
        return self._offset

    def headers(self) -> list:
        return self._headers

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return 0


@dataclass
class Produced:
    messages: list[tuple[str, bytes | None, dict]] = field(default_factory=list)

    def __call__(self, topic: str, value: bytes | None, **kwargs: object) -> None:
        self.messages.append((topic, value, kwargs))

    def on(self, topic: str) -> list[tuple[bytes | None, dict]]:
        return [(value, kwargs) for name, value, kwargs in self.messages if name == topic]


def stream(scenario: str, records: int, change_at: int) -> list[ListMessage]:
    simulator = LevySimulator(SimulatorConfig(seed=3, scenario=scenario, change_at=change_at))
    return [ListMessage(offset, orjson.dumps(record))
            for offset, record in enumerate(simulator.records(0, records))]


def fresh_monitor() -> PartitionMonitor:
    return PartitionMonitor.resume(TOPIC, 0, 0, None, SETTINGS.detectors, None)


def feed(monitor: PartitionMonitor, messages: list[ListMessage], produce: Produced,
         batch: int = 1000) -> None:
    for start in range(0, len(messages), batch):
        process_partition(monitor, messages[start:start + batch], None, SETTINGS, produce)


def test_rejected_records_become_dead_letters_and_the_rest_is_counted() -> None:
    messages = stream("none", 300, 0)
    messages[10] = ListMessage(10, b"{not json")
    messages[20] = ListMessage(20, None)
    produce = Produced()
    monitor = fresh_monitor()
    result = process_partition(monitor, messages, None, SETTINGS, produce)
    assert (result.valid, result.dead_lettered) == (298, 2)
    letters = produce.on(SETTINGS.topics.dead_letters)
    assert [value for value, _ in letters] == [b"{not json", None]
    sources = [source_of(kwargs["headers"]) for _, kwargs in letters]
    assert [(s.offset, s.reason) for s in sources] == [(10, "not_json"), (20, "empty")]
    assert monitor.next_offset == 300 and monitor.dirty


def test_a_change_becomes_one_drift_event_with_offsets_around_it() -> None:
    produce = Produced()
    monitor = fresh_monitor()
    feed(monitor, stream("levy-rate-change", 24_000, 14_000), produce)
    events = [DriftEvent.from_bytes(value)
              for value, _ in produce.on(SETTINGS.topics.drift_events)]
    assert len(events) == 1
    event = events[0]
    assert "levy_rate" in {signal.signal for signal in event.signals}
    assert event.current_window.last_offset >= 14_000
    assert event.reference_window.last_offset < 14_000
    assert event.current_window.topic == TOPIC


def test_rewind_restores_the_committed_state_exactly() -> None:
    messages = stream("levy-rate-change", 24_000, 14_000)
    committed_run, produce = fresh_monitor(), Produced()
    feed(committed_run, messages[:10_000], produce)
    committed_run.mark_committed(committed_run.state("g"))
    feed(committed_run, messages[10_000:17_000], produce)  # then the transaction aborts
    committed_run.rewind(SETTINGS.detectors)
    assert committed_run.next_offset == 10_000
    replayed = Produced()
    feed(committed_run, messages[10_000:], replayed)

    straight, straight_output = fresh_monitor(), Produced()
    feed(straight, messages, straight_output)
    assert committed_run.bank.snapshot() == straight.bank.snapshot()
    assert replayed.on(SETTINGS.topics.drift_events) == \
        straight_output.on(SETTINGS.topics.drift_events)


def county_batched(messages: list[ListMessage], block: int = 4_000) -> list[ListMessage]:
    """The same records as a county-by-county producer sends them: each block of ``block``
    records ordered by county, the offsets following the new order."""
    records = [orjson.loads(message.value()) for message in messages]
    ordered = [record for start in range(0, len(records), block)
               for record in sorted(records[start:start + block], key=lambda r: r["county"])]
    return [ListMessage(offset, orjson.dumps(record)) for offset, record in enumerate(ordered)]


@pytest.mark.parametrize("arrival", ["simulated", "county_batched"])
def test_a_monitor_resumed_from_a_snapshot_rewinds_to_it_before_its_first_checkpoint(
        arrival: str) -> None:
    """A restart's first transaction aborts: the partition goes back to the snapshot it was
    resumed from (kept as its committed state, not snapshotted again)."""
    messages = stream("levy-rate-change", 24_000, 14_000)
    if arrival == "county_batched":
        messages = county_batched(messages)
    before_restart, produce = fresh_monitor(), Produced()
    feed(before_restart, messages[:10_000], produce)
    saved = before_restart.state("g")
    resumed = PartitionMonitor.resume(TOPIC, 0, 10_000, saved, SETTINGS.detectors, None)
    feed(resumed, messages[10_000:17_000], produce)  # then the transaction aborts
    resumed.rewind(SETTINGS.detectors)
    assert resumed.next_offset == 10_000 and not resumed.dirty
    replayed = Produced()
    feed(resumed, messages[10_000:], replayed)

    straight, straight_output = fresh_monitor(), Produced()
    feed(straight, messages, straight_output)
    assert resumed.bank.snapshot() == straight.bank.snapshot()
    events = replayed.on(SETTINGS.topics.drift_events)
    assert events and events == straight_output.on(SETTINGS.topics.drift_events)


def test_a_record_dated_far_ahead_is_refused_and_moves_no_watermark(tmp_path: Path) -> None:
    """One mistyped year would move the partition's event time decades ahead: every window
    closed, every pending prediction expired. It goes to the dead-letter topic instead, and
    the records around it keep their own offsets."""
    messages = stream("none", 300, 0)
    typo = orjson.loads(messages[100].value())
    typo["event_time"] = "2062" + typo["event_time"][4:]
    messages[100] = ListMessage(100, orjson.dumps(typo))
    produce = Produced()
    monitor = fresh_monitor()
    monitor.labels = LabelJoin(0, JoinStore(tmp_path / "store"),
                               restore_errors(b"", SETTINGS.detectors, None), 0, 548 * DAY_MS)
    result = process_partition(monitor, messages, None, SETTINGS, produce)
    assert (result.valid, result.dead_lettered) == (299, 1)
    [(value, kwargs)] = produce.on(SETTINGS.topics.dead_letters)
    source = source_of(kwargs["headers"])
    assert value == messages[100].value()
    assert (source.offset, source.reason, source.field) == (100, "invalid_value", "event_time")
    assert monitor.labels.watermark_ms < 1_800_000_000_000  # still in 2026, not 2062
    assert monitor.labels.store.get(typo["record_id"]) is None
    assert monitor.labels.store.get(orjson.loads(messages[101].value())["record_id"]) \
        .record_offset == 101
    monitor.labels.store.close()


def test_a_record_dated_within_the_allowance_is_kept() -> None:
    ahead = time.time() + 3600  # an hour ahead of this clock: within the default day
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ahead))
    messages = stream("none", 10, 0)
    soon = orjson.loads(messages[5].value())
    soon["event_time"] = stamp
    messages[5] = ListMessage(5, orjson.dumps(soon))
    result = process_partition(fresh_monitor(), messages, None, SETTINGS, Produced())
    assert (result.valid, result.dead_lettered) == (10, 0)


def test_a_whole_batch_dated_ahead_says_the_clock_may_be_behind(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every record two days ahead: more likely this machine's clock than 200 typos. They
    are dead-lettered all the same (nothing is lost), and the log says what to check."""
    monkeypatch.setattr(processing_module, "_clock_warned_at", [0.0])
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 2 * 86_400))
    messages = []
    for offset, message in enumerate(stream("none", 200, 0)):
        record = orjson.loads(message.value())
        record["event_time"] = stamp
        messages.append(ListMessage(offset, orjson.dumps(record)))
    with caplog.at_level(logging.ERROR, logger="consumer.processing"):
        result = process_partition(fresh_monitor(), messages, None, SETTINGS, Produced())
    assert (result.valid, result.dead_lettered) == (0, 200)
    lines = [r for r in caplog.records if "clock is behind" in r.getMessage()]
    assert len(lines) == 1 and lines[0].example_event_time == stamp
    caplog.clear()
    one = process_partition(fresh_monitor(), stream("none", 200, 0)[:1] + messages[1:2], None,
                            SETTINGS, Produced())
    assert one.dead_lettered == 1
    assert not [r for r in caplog.records if "clock is behind" in r.getMessage()]
