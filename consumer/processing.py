"""Per-partition processing: decode, dead-letter, score, detect, turn decisions into events.

Pure apart from the ``produce`` callable it is given, so it runs the same inside the Kafka loop
and in a unit test fed with a list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from confluent_kafka import Message

from consumer import metrics
from consumer.clock import dated_ahead
from consumer.events import decision_to_event
from consumer.state import PartitionState
from detectors.composition import event_times_ms
from detectors.segments import SegmentedBank, is_single_bank_snapshot
from levydrift.kafka.messages import headers_of, offset_of, partition_of, topic_of
from levydrift.signals import signal_columns as model_signal_columns
from schemas.dead_letter import dead_letter
from schemas.errors import Reason, Rejection
from schemas.levy_record import decode_levy_batch

if TYPE_CHECKING:
    from consumer.champion import Champion
    from consumer.config import ConsumerSettings
    from consumer.labels import LabelJoin
    from detectors.config import DetectorSettings
    from detectors.decision import DriftDecision
    from detectors.reference import Reference

log = logging.getLogger(__name__)

Produce = Callable[..., None]


@dataclass
class BatchResult:
    valid: int = 0
    dead_lettered: int = 0
    drift_events: list[Any] = field(default_factory=list)

    def merge(self, other: BatchResult) -> None:
        self.valid += other.valid
        self.dead_lettered += other.dead_lettered
        self.drift_events.extend(other.drift_events)


@dataclass
class PartitionMonitor:
    """The segmented detector bank of one partition and where it stands in the stream."""

    topic: str
    partition: int
    bank: SegmentedBank
    next_offset: int
    model_version: int | None
    committed: PartitionState | None = None
    dirty: bool = False
    labels: LabelJoin | None = None  # the label join, when labels are joined

    @classmethod
    def resume(cls, topic: str, partition: int, start_offset: int,
               saved: PartitionState | None, detector_settings: DetectorSettings,
               champion_version: int | None,
               reference: Reference | None = None) -> PartitionMonitor:
        """Rebuild from ``saved`` (the snapshot of exactly ``start_offset``, see
        ``consumer.state.resume_point``), or start fresh at ``start_offset``."""
        if saved is not None and is_single_bank_snapshot(saved.bank):
            log.warning("detector state of %s[%d] is a single-bank snapshot from before "
                        "segment-aware detection; starting fresh segmented detectors at "
                        "offset %d", topic, partition, start_offset,
                        extra={"topic": topic, "partition": partition,
                               "offset": start_offset})
            saved = None
        if saved is None:
            bank = SegmentedBank(detector_settings, reference)
            monitor = cls(topic, partition, bank, start_offset, champion_version)
        else:
            bank = SegmentedBank.restore(saved.bank, detector_settings)
            monitor = cls(topic, partition, bank, start_offset, saved.model_version)
            if saved.model_version != champion_version:
                monitor.rebaseline(champion_version, reference)
            else:  # the bank is what ``saved`` restores to: a rewind needs no new snapshot
                monitor.committed = saved
                return monitor
        monitor.committed = monitor.state(None)
        return monitor

    def state(self, group: str | None, bank: bytes | None = None) -> PartitionState:
        """The partition's state to checkpoint; ``bank``: the bank's snapshot, when the caller
        has one of the bank as it is (a snapshot costs ~20 ms for a 5-segment bank)."""
        labels = self.labels
        bank = self.bank.snapshot() if bank is None else bank
        if labels is None:
            return PartitionState(group or "", self.topic, self.partition, self.next_offset,
                                  self.model_version, bank)
        return PartitionState(group or "", self.topic, self.partition, self.next_offset,
                              self.model_version, bank, labels.next_offset,
                              labels.watermark_ms, labels.errors.snapshot())

    def mark_committed(self, state: PartitionState) -> None:
        self.committed = state
        self.dirty = False

    def rewind(self, detector_settings: DetectorSettings) -> None:
        """Back to the last committed snapshot after an aborted transaction."""
        assert self.committed is not None
        self.bank = SegmentedBank.restore(self.committed.bank, detector_settings)
        self.next_offset = self.committed.next_offset
        self.model_version = self.committed.model_version
        if self.labels is not None:
            self.labels.rewind(self.committed, detector_settings)
        self.dirty = False

    def rebaseline(self, champion_version: int | None,
                   reference: Reference | None = None) -> None:
        """A new champion changes predictions and errors: take its holdout statistics as the
        reference, or learn a new one from the records that follow."""
        self.bank.rebaseline(reference)
        if self.labels is not None:
            self.labels.errors.rebaseline(reference)
        self.model_version = champion_version
        self.dirty = True

    def statistics(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(signal, detector) -> (statistic, threshold), for the Prometheus gauges."""
        return {(row.signal, row.detector): (row.statistic, row.threshold)
                for row in self.bank.status()}


def process_partition(monitor: PartitionMonitor, messages: Sequence[Message],
                      champion: Champion | None, settings: ConsumerSettings,
                      produce: Produce) -> BatchResult:
    """Process one partition's messages (in offset order) and produce what they lead to."""
    result = BatchResult()
    columns, kept, rejections = decode_levy_batch([message.value() for message in messages])
    for index, rejection in rejections:
        _dead_letter(messages[index], rejection, settings.topics.dead_letters, produce)
    result.dead_lettered = len(rejections)
    if len(kept):
        offsets = np.array([message.offset() for message in messages], dtype=np.int64)
        if rejections:
            offsets = offsets[kept]
        times = event_times_ms(columns["event_time"])  # once: the guard, the bank, the join
        ahead = dated_ahead(times, settings.consumer.max_event_time_ahead_s)
        if ahead.size:
            keep = _refuse_dated_ahead(messages, kept, ahead, columns["event_time"], settings,
                                       produce)
            columns = {name: values[keep] for name, values in columns.items()}
            offsets, times = offsets[keep], times[keep]
            result.dead_lettered += int(ahead.size)
    result.valid = len(messages) - result.dead_lettered
    if result.valid:
        columns = signal_columns(columns, champion)
        timed = {**columns, "event_time": times}  # the bank and the join read ms, not text
        for decision in monitor.bank.update(timed, offsets):
            detected_index = int(np.searchsorted(offsets, decision.detected_at))
            result.drift_events.append(_emit(decision, monitor.topic, monitor, settings, produce,
                                             str(columns["event_time"][detected_index])))
        if monitor.labels is not None:
            monitor.labels.add_records(columns["record_id"], offsets, timed,
                                       settings.detectors.segment_by,
                                       None if champion is None else champion.version)
    monitor.next_offset = offset_of(messages[-1]) + 1
    monitor.dirty = True
    metrics.RECORDS.labels(outcome="valid").inc(result.valid)
    metrics.RECORDS.labels(outcome="dead_lettered").inc(result.dead_lettered)
    return result


def process_labels(monitor: PartitionMonitor, champion_version: int | None,
                   settings: ConsumerSettings, produce: Produce,
                   records_caught_up: bool = True) -> BatchResult:
    """Take the turn of every label of ``monitor``'s partition whose turn has come (see
    consumer/labels.py): malformed ones to the dead-letter topic, errors to the error
    detectors, their decisions to the drift-events topic (windows in the labels topic)."""
    result = BatchResult()
    labels = monitor.labels
    if labels is None or not labels.queue:
        return result
    turn = labels.take_turn(champion_version, settings.detectors.segment_by,
                            records_caught_up=records_caught_up)
    if turn.taken == 0:
        return result
    for queued in turn.rejected:
        assert queued.rejection is not None
        _dead_letter(queued.message, queued.rejection, settings.topics.dead_letters, produce)
        metrics.LABELS.labels(outcome="dead_lettered").inc()
    result.dead_lettered = len(turn.rejected)
    for decision in turn.decisions:
        detected_index = int(np.searchsorted(turn.positions, decision.detected_at))
        result.drift_events.append(_emit(decision, settings.topics.labels, monitor, settings,
                                         produce, turn.times[detected_index]))
    monitor.dirty = True
    return result


def _emit(decision: DriftDecision, topic: str, monitor: PartitionMonitor,
          settings: ConsumerSettings, produce: Produce, detected_at: str) -> Any:
    """One decision as a drift event on the drift-events topic; returns the event."""
    event = decision_to_event(
        decision, topic, monitor.partition, group=settings.consumer.group_id,
        model_name=settings.consumer.model_name, model_version=monitor.model_version,
        detected_at=detected_at)
    produce(settings.topics.drift_events, event.to_bytes(),
            key=settings.consumer.model_name.encode())
    for finding in event.signals:
        metrics.DRIFT_EVENTS.labels(kind=event.kind, signal=finding.signal).inc()
    log.info("drift detected", extra={"event_id": event.event_id, "kind": event.kind,
                                      "signals": [s.signal for s in event.signals],
                                      "partition": monitor.partition, "topic": topic})
    return event


def signal_columns(columns: dict[str, np.ndarray], champion: Champion | None) -> dict[str,
                                                                                      np.ndarray]:
    """Record columns plus the model signals (``levydrift.signals``), and the error gauge."""
    columns = model_signal_columns(columns, champion)
    labelled = ~np.isnan(columns["abs_error"])
    if labelled.any():
        metrics.PREDICTION_ABS_ERROR.set(float(columns["abs_error"][labelled].mean()))
    return columns


def _refuse_dated_ahead(messages: Sequence[Message], kept: np.ndarray, ahead: np.ndarray,
                        event_times: np.ndarray, settings: ConsumerSettings,
                        produce: Produce) -> np.ndarray:
    """Dead-letter the records at rows ``ahead`` (``kept``: each row's message); returns the
    mask of the rows that stay."""
    limit = settings.consumer.max_event_time_ahead_s
    if ahead.size == len(event_times) >= CLOCK_SUSPECT_RECORDS:
        _warn_clock_behind(str(event_times[int(ahead[0])])[:40], limit)
    for row in ahead.tolist():
        rejection = Rejection(Reason.INVALID_VALUE, "event_time",
                              f"{str(event_times[row])[:40]!r} is more than "
                              f"{limit:g} s ahead of this consumer's clock "
                              "(consumer.max_event_time_ahead_s)")
        _dead_letter(messages[int(kept[row])], rejection, settings.topics.dead_letters, produce)
    keep = np.ones(len(event_times), dtype=bool)
    keep[ahead] = False
    return keep


# A whole batch of this many records dated ahead is more likely this machine's clock
# behind than that many typos: said in the log, at most once a minute.
CLOCK_SUSPECT_RECORDS = 100
_clock_warned_at = [0.0]


def _warn_clock_behind(example: str, limit_s: float) -> None:
    now = time.monotonic()
    if now - _clock_warned_at[0] < 60.0:
        return
    _clock_warned_at[0] = now
    log.error("every record of a batch is dated more than consumer.max_event_time_ahead_s "
              "ahead of this machine's clock, and dead-lettered: if the records are right, "
              "this machine's clock is behind (check its time synchronisation)",
              extra={"example_event_time": example, "max_event_time_ahead_s": limit_s,
                     "clock_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def _dead_letter(message: Message, rejection: Any, topic: str, produce: Produce) -> None:
    key, value, headers = dead_letter(message.key(), message.value(), headers_of(message),
                                      rejection, topic_of(message), partition_of(message),
                                      offset_of(message), int(time.time() * 1000))
    produce(topic, value, key=key, headers=headers)
    metrics.DEAD_LETTERS.labels(reason=str(rejection.reason)).inc()
