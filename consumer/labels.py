"""Late labels: each actual levy joined with the prediction made for its record, exactly once.

One ``LabelJoin`` per records partition p. It keeps every scored record's prediction in p's
``JoinStore`` (RocksDB, changelogged) and takes p's labels (partition p of ``levy.labels``, which
is co-partitioned with the records) in label-offset order.

**When a label is joined.** A label takes its turn once the partition's *records watermark* (the
latest record event time seen) reaches the label's own event time: a levy is final after its
record was assessed, so by then its record has been scored. The label then joins the entry of
its record if that record arrived *before* the watermark reached the label's time (each entry
keeps the watermark at its arrival). That rule depends only on the two logs, not on how fast each
is fetched: a label fetched late, or replayed after ``kill -9``, joins exactly what it would have
joined in its turn, and the labels' errors reach the error detectors in label-offset order. When
the partition's records stop (a quiet county, the end of a roll), waiting labels are released
after ``IDLE_RELEASE_S`` without records, so labels never wait for records that are not coming;
only once the partition's records are caught up (none waits in Kafka), so a pause in fetching
never sends labels ahead of records that were already there.

**Outcomes** (``levydrift_consumer_labels_total{outcome}``):
- ``joined``: the entry was waiting. The error feeds the error detectors when the prediction was
  made by the current champion; an older version's error is recorded for that version only
  (``levydrift_consumer_label_abs_error{model_version}``) and never trips the new champion's
  detectors. The entry stays, marked joined, so a second label for it is recognised.
- ``duplicate``: the entry was already joined (the label was resent): ignored.
- ``unmatched``: no entry: a label for a record this partition never scored, one that
  arrived before its record (the record, when it comes, waits for a label of its own), or one
  for a record that carried its levy inline (judged when it came). Counted and ignored.
- ``expired``: the label came more than ``label_horizon_days`` (event time) after its record.
- ``dead_lettered``: the label is malformed; it goes to the dead-letter topic with a reason.

Entries are removed from the store once the watermark has passed their event time by the horizon
plus ``EXPIRY_GRACE_MS`` (the grace covers labels taken late in their turn).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from confluent_kafka import Message

from consumer import metrics
from consumer.join_store import JoinStore, JoinStoreError, PendingPrediction
from detectors.composition import event_times_ms
from detectors.segments import SegmentedBank
from levydrift.errors import ConfigError, TopicLayoutError
from levydrift.kafka.messages import offset_of
from schemas.levy_label import LevyLabel, decode_levy_labels

if TYPE_CHECKING:
    from consumer.state import PartitionState
    from detectors.config import DetectorSettings
    from detectors.decision import DriftDecision
    from detectors.reference import Reference
    from schemas.errors import Rejection

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
EXPIRY_GRACE_MS = 30 * DAY_MS
IDLE_RELEASE_S = 5.0  # no records for this long: labels waiting for the watermark go ahead
NO_WATERMARK = -1


def error_settings(settings: DetectorSettings) -> DetectorSettings:
    """The error detectors: the performance signals only, segmented like the record bank."""
    return replace(settings, numeric_signals=(), prediction_signals=(), categorical_signals=())


@dataclass(slots=True)
class QueuedLabel:
    """A fetched label waiting for its turn. Up to ``max_queued_labels`` wait per partition:
    one small object each (slots; an accepted label does not keep its fetched message, so that
    goes at once), less for every run of the cyclic garbage collector to walk."""

    offset: int
    time_ms: int  # event time; NO_WATERMARK for a malformed label (its turn is at once)
    label: LevyLabel | None
    rejection: Rejection | None


@dataclass(slots=True)
class RejectedLabel(QueuedLabel):
    """A malformed label (``label`` None), with the message the dead letter copies."""

    message: Message


@dataclass
class LabelOutcome:
    """What one turn of labels led to."""

    taken: int = 0  # labels whose turn it was
    decisions: list[DriftDecision] = field(default_factory=list)
    rejected: list[RejectedLabel] = field(default_factory=list)
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    times: list[str] = field(default_factory=list)  # event time of each label fed


@dataclass
class LabelJoin:
    """Partition p's side of the join: the store, the queue, the error detectors."""

    partition: int
    store: JoinStore
    errors: SegmentedBank
    next_offset: int  # the first label offset not yet taken
    horizon_ms: int
    watermark_ms: int = NO_WATERMARK
    queue: deque[QueuedLabel] = field(default_factory=deque)
    last_records_at: float = field(default_factory=time.monotonic)

    # -- records side ----------------------------------------------------------------------

    def add_records(self, record_ids: Sequence[str] | np.ndarray, offsets: np.ndarray,
                    columns: dict[str, np.ndarray], segment_by: Sequence[str],
                    model_version: int | None) -> None:
        """Keep each scored record's prediction until its label comes; advance the watermark.
        A record that carries its levy inline was judged at once and waits for no label."""
        times = event_times_ms(columns["event_time"])
        before = np.maximum.accumulate(np.concatenate(([self.watermark_ms], times)))
        self.watermark_ms = int(before[-1])
        waiting = np.flatnonzero(np.isnan(columns["actual_levy_amount"])) \
            if "actual_levy_amount" in columns else np.arange(len(times))
        if waiting.size:
            segments = list(zip(*(np.asarray(columns[name])[waiting].tolist()
                                  for name in segment_by), strict=True)) \
                if segment_by else [()] * waiting.size
            self.store.put_batch(np.asarray(record_ids)[waiting], offsets[waiting],
                                 times[waiting], columns["prediction"][waiting], segments,
                                 model_version, watermarks_ms=before[:-1][waiting],
                                 keep_existing=True)
        self.last_records_at = time.monotonic()
        expired = self.store.expire(self.watermark_ms - self.horizon_ms - EXPIRY_GRACE_MS)
        if expired:
            metrics.PENDING_EXPIRED.inc(expired)

    # -- labels side -----------------------------------------------------------------------

    def enqueue(self, messages: Sequence[Message]) -> None:
        """Fetched labels of this partition, in offset order, decoded once. Labels before
        where the queue ends (fetched before a rewind's seek) are skipped."""
        expected = self.queue[-1].offset + 1 if self.queue else self.next_offset
        fetched = [(offset, message) for message in messages
                   if (offset := offset_of(message)) >= expected]  # one accessor call each
        if not fetched:
            return
        labels, rejections = decode_levy_labels([message.value() for _, message in fetched])
        refused = dict(rejections)
        times = event_times_ms(np.array([label.event_time for label in labels], dtype=object)) \
            if labels else np.zeros(0, dtype=np.int64)
        decoded = iter(zip(labels, times.tolist(), strict=True))
        append = self.queue.append
        for index, (offset, message) in enumerate(fetched):
            rejection = refused.get(index)
            if rejection is not None:
                append(RejectedLabel(offset, NO_WATERMARK, None, rejection, message))
            else:
                label, time_ms = next(decoded)
                append(QueuedLabel(offset, time_ms, label, None))

    def take_turn(self, champion_version: int | None, segment_by: Sequence[str],
                  now: float | None = None, records_caught_up: bool = True) -> LabelOutcome:
        """Join every label whose turn has come (see the module docstring), feed the errors of
        the champion's predictions to the error detectors, return decisions and rejects.
        ``records_caught_up``: no record of the partition waits in Kafka (only then may quiet
        records release the labels waiting for them)."""
        idle = records_caught_up and (now if now is not None else time.monotonic()) \
            - self.last_records_at >= IDLE_RELEASE_S
        due = self._due(idle)
        outcome = LabelOutcome(taken=len(due))
        if not due:
            return outcome
        fed: list[tuple[int, int, float, float, PendingPrediction, str]] = []
        tally = _Tally()
        try:
            for queued in due:
                if isinstance(queued, RejectedLabel):  # the malformed ones: label is None
                    outcome.rejected.append(queued)
                    continue
                joined = self._join(queued, champion_version, tally)
                if joined is not None:
                    fed.append(joined)
        finally:
            tally.count()
        self.next_offset = due[-1].offset + 1
        if fed:
            outcome.positions = np.array([item[0] for item in fed], dtype=np.int64)
            outcome.decisions = self._feed(fed, outcome.positions, segment_by)
            outcome.times = [item[5] for item in fed]
        return outcome

    def _due(self, idle: bool) -> list[QueuedLabel]:
        due: list[QueuedLabel] = []
        while self.queue:
            head = self.queue[0]
            if head.label is not None and head.time_ms > self.watermark_ms and not idle:
                break
            due.append(self.queue.popleft())
        return due

    def _join(self, queued: QueuedLabel, champion_version: int | None, tally: _Tally
              ) -> tuple[int, int, float, float, PendingPrediction, str] | None:
        label = queued.label
        assert label is not None
        outcome, entry = self.store.join(label.record_id, queued.time_ms, self.horizon_ms)
        tally.outcomes[outcome] = tally.outcomes.get(outcome, 0) + 1
        if outcome != "joined":
            return None
        assert entry is not None
        if entry.event_time_ms >= 0:
            metrics.LABEL_LAG.observe((queued.time_ms - entry.event_time_ms) / 1000)
        actual = float(label.actual_levy_amount)
        error = abs(entry.prediction - actual)
        version = entry.model_version
        if math.isnan(error):  # no prediction (no champion scored the record)
            return None
        tally.abs_error(version).observe(error)
        if version != champion_version:
            return None  # recorded for its own version; not the champion's to judge
        return (queued.offset, queued.time_ms, error, error / max(actual, 1.0), entry,
                label.event_time)

    def _feed(self, fed: list[tuple[int, int, float, float, PendingPrediction, str]],
              positions: np.ndarray, segment_by: Sequence[str]) -> list[DriftDecision]:
        columns: dict[str, Any] = {
            "abs_error": np.array([item[2] for item in fed]),
            "relative_error": np.array([item[3] for item in fed]),
            "event_time": np.array([item[1] for item in fed], dtype=np.int64)}
        for number, name in enumerate(segment_by):
            columns[name] = np.array([_segment_value(item[4], number) for item in fed],
                                     dtype=object)
        return self.errors.update(columns, positions)

    # -- checkpoints -----------------------------------------------------------------------

    def rewind(self, committed: PartitionState, settings: DetectorSettings) -> None:
        """Back to the last checkpoint after an aborted transaction: the store drops what it
        has not committed, and labels are fetched again from the committed offset."""
        self.store.discard()
        self.queue.clear()
        self.errors = restore_errors(committed.error_bank, settings, None)
        self.next_offset = committed.labels_next_offset or 0
        self.watermark_ms = NO_WATERMARK if committed.watermark_ms is None \
            else committed.watermark_ms


def check_co_partitioned(partition_counts: dict[str, int], records: str, labels: str,
                         changelog: str) -> None:
    """Labels and the changelog must have exactly the records' partition count: partition p of
    each belongs to whoever owns records partition p. One line naming the counts otherwise."""
    wanted = partition_counts[records]
    for topic in (labels, changelog):
        if partition_counts[topic] != wanted:
            raise TopicLayoutError(
                f"{topic} has {partition_counts[topic]} partitions and {records} has {wanted}: "
                f"they must be co-partitioned (the same count). Recreate {topic} with {wanted} "
                "partitions (`levydrift topics create` makes new topics so), or set "
                "consumer.join_labels = false")


def retention_shortfall(retention_ms: int | None, horizon_days: float, records: str) -> str | None:
    """What to fix when ``records`` keeps its records for less than the label horizon (None
    when it keeps them long enough; ``retention_ms`` None or negative = forever). The join
    itself needs no old records, but the trainer reads the records of the labels it trains on:
    a label that comes after its record left the topic is no training row."""
    horizon_ms = horizon_days * DAY_MS
    if retention_ms is None or retention_ms < 0 or retention_ms >= horizon_ms:
        return None
    return (f"{records} keeps records for {retention_ms / DAY_MS:.0f} days, less than "
            f"consumer.label_horizon_days ({horizon_days:g}): the trainer will not find the "
            "records of labels that come later than that. Raise topics.records_retention_hours "
            "(`levydrift topics create` applies it) or lower consumer.label_horizon_days")


def store_path(state_dir: str, group: str, topic: str, partition: int) -> Path:
    """Where partition ``partition``'s pending predictions live on this machine."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{group}.{topic}")
    return Path(state_dir) / f"{safe}-{partition}"


def open_join_store(path: Path) -> JoinStore:
    """The partition's store; a directory RocksDB cannot open (damaged files) is set aside
    and rebuilt from the changelog, logged and counted. One another process holds is a
    one-line error: two instances share ``consumer.state_dir``."""
    try:
        return JoinStore(path)
    except JoinStoreError as error:
        if "lock" in str(error).lower():
            raise ConfigError(f"{error}: another process uses this consumer.state_dir; give "
                              "each instance its own") from None
        aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        path.rename(aside)
        metrics.STATE_RESTORE_FAILURES.labels(reason="join_store").inc()
        log.warning("join store unreadable; set aside and rebuilt from the changelog",
                    extra={"path": str(path), "moved_to": str(aside), "error": str(error)[:300]})
        return JoinStore(path)


def restore_errors(snapshot: bytes, settings: DetectorSettings,
                   reference: Reference | None) -> SegmentedBank:
    """The error detectors from their snapshot, or fresh ones (against ``reference``)."""
    if snapshot:
        return SegmentedBank.restore(snapshot, error_settings(settings))
    return SegmentedBank(error_settings(settings), reference)


class _Tally:
    """One turn's label metrics: outcomes added to ``LABELS`` once per outcome when the turn
    ends, each version's ``LABEL_ABS_ERROR`` looked up once. A prometheus_client ``labels()``
    lookup per label cost more than the join itself."""

    __slots__ = ("errors", "outcomes")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.errors: dict[int | None, Any] = {}

    def abs_error(self, version: int | None) -> Any:
        child = self.errors.get(version)
        if child is None:
            child = self.errors[version] = metrics.LABEL_ABS_ERROR.labels(
                model_version="none" if version is None else str(version))
        return child

    def count(self) -> None:
        for outcome, count in self.outcomes.items():
            metrics.LABELS.labels(outcome=outcome).inc(count)


def _segment_value(entry: PendingPrediction, number: int) -> str:
    return entry.segment[number] if number < len(entry.segment) else ""
