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
after ``consumer.label_idle_release_s`` (default ``IDLE_RELEASE_S``) without records, so
labels never wait for records that are not coming; only once the partition's records are caught
up (none waits in Kafka), so a pause in fetching never sends labels ahead of records that were
already there.

A label waits for its turn only while its record is not in the store. Once the entry is there,
everything the turn would decide is fixed: the watermark at the record's arrival, its event time,
whether an earlier label (all taken before this one) joined it. So such a label is taken at once,
with the outcome its turn would give, and a label dated far ahead of the records (a mistyped
year) never holds up the labels behind it. (A label more than the horizon and its grace after
its record is ``expired`` when taken early; taken that late in its turn, its entry would be gone
and it ``unmatched``: neither joins.) A label whose record has not come waits, as it must.

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
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from confluent_kafka import Message

from consumer import metrics
from consumer.join_store import JOINED, NO_VERSION, OUTCOMES, JoinStore, JoinStoreError
from detectors.composition import event_times_ms
from detectors.segments import SegmentedBank
from levydrift.errors import ConfigError, TopicLayoutError
from levydrift.kafka.messages import offset_of
from levydrift.paths import ensure_writable_dir
from schemas.levy_label import decode_levy_labels

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
_RECORD_ID, _EVENT_TIME, _AMOUNT = (attrgetter(name) for name in
                                    ("record_id", "event_time", "actual_levy_amount"))


def error_settings(settings: DetectorSettings) -> DetectorSettings:
    """The error detectors: the performance signals only, segmented like the record bank.
    No strata: a pending prediction keeps its segment fields only, and labels arrive in
    their own order, not in the districts' turn."""
    return replace(settings, numeric_signals=(), prediction_signals=(), categorical_signals=(),
                   stratify_by=())


@dataclass(slots=True)
class RejectedLabel:
    """A malformed label, with the message the dead letter copies."""

    offset: int
    rejection: Rejection
    message: Message


_ALWAYS_DUE = np.iinfo(np.int64).min  # a malformed label's time: its turn is at once


class _Fetch:
    """One fetch's labels as columns, in offset order; ``start`` is the first not taken yet.
    A malformed label has its place in every column (time ``_ALWAYS_DUE``, record id "") and
    its ``RejectedLabel`` in ``rejected``. Columns rather than an object per label: less work
    per label, and nothing for the garbage collector to walk while 50,000 wait."""

    __slots__ = ("amounts", "event_times", "offsets", "record_ids", "rejected", "start",
                 "times")

    def __init__(self, offsets: np.ndarray, times: np.ndarray, record_ids: list[str],
                 amounts: np.ndarray, event_times: list[str],
                 rejected: dict[int, RejectedLabel]) -> None:
        self.offsets, self.times, self.record_ids = offsets, times, record_ids
        self.amounts, self.event_times, self.rejected = amounts, event_times, rejected
        self.start = 0


@dataclass
class _Due:
    """The labels whose turn has come, as columns in label-offset order (malformed ones
    only in ``rejected``)."""

    taken: int = 0
    offsets: list[np.ndarray] = field(default_factory=list)
    times: list[np.ndarray] = field(default_factory=list)
    record_ids: list[str] = field(default_factory=list)
    amounts: list[np.ndarray] = field(default_factory=list)
    event_times: list[str] = field(default_factory=list)
    rejected: list[RejectedLabel] = field(default_factory=list)
    last_offset: int = -1


class LabelQueue:
    """Fetched labels waiting for their turn, in offset order (see ``LabelJoin``)."""

    def __init__(self) -> None:
        self._fetches: deque[_Fetch] = deque()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def end_offset(self) -> int | None:
        """The offset after the last queued label (None when empty)."""
        return int(self._fetches[-1].offsets[-1]) + 1 if self._count else None

    def offsets(self) -> list[int]:
        return [offset for fetch in self._fetches
                for offset in fetch.offsets[fetch.start:].tolist()]

    def head(self) -> tuple[int, int, str] | None:
        """The first label still waiting: (offset, event time ms, record id)."""
        if not self._count:
            return None
        fetch = self._fetches[0]
        return (int(fetch.offsets[fetch.start]), int(fetch.times[fetch.start]),
                fetch.record_ids[fetch.start])

    def append(self, fetch: _Fetch) -> None:
        if len(fetch.offsets):
            self._fetches.append(fetch)
            self._count += len(fetch.offsets)

    def clear(self) -> None:
        self._fetches.clear()
        self._count = 0

    def take_due(self, watermark_ms: int, idle: bool,
                 decided: Callable[[str], bool] | None = None) -> _Due:
        """From the head: malformed labels, labels whose event time the watermark has
        reached, labels ahead of it whose outcome is ``decided(record_id)`` already, and,
        when ``idle``, every label; up to the first that must wait."""
        due = _Due()
        while self._fetches:
            fetch = self._fetches[0]
            start, size = fetch.start, len(fetch.offsets)
            stop = size
            if not idle:
                for ahead in (np.flatnonzero(fetch.times[start:] > watermark_ms)
                              + start).tolist():
                    if decided is None or not decided(fetch.record_ids[ahead]):
                        stop = ahead
                        break
            if stop > start:
                due.offsets.append(fetch.offsets[start:stop])
                due.times.append(fetch.times[start:stop])
                due.amounts.append(fetch.amounts[start:stop])
                due.record_ids += fetch.record_ids[start:stop]
                due.event_times += fetch.event_times[start:stop]
                due.rejected += [fetch.rejected[index] for index in sorted(fetch.rejected)
                                 if start <= index < stop]
                due.taken += stop - start
                due.last_offset = int(fetch.offsets[stop - 1])
                self._count -= stop - start
            if stop < size:
                fetch.start = stop
                break
            self._fetches.popleft()
        return due


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
    queue: LabelQueue = field(default_factory=LabelQueue)
    last_records_at: float = field(default_factory=time.monotonic)
    warned_offset: int = -1  # the last waiting label said to hold up the others
    idle_release_s: float = IDLE_RELEASE_S  # consumer.label_idle_release_s

    # -- records side ----------------------------------------------------------------------

    def add_records(self, record_ids: Sequence[str] | np.ndarray, offsets: np.ndarray,
                    columns: dict[str, np.ndarray], segment_by: Sequence[str],
                    model_version: int | None) -> None:
        """Keep each scored record's prediction until its label comes; advance the watermark.
        A record that carries its levy inline was judged at once and waits for no label.
        ``columns["event_time"]``: as ``event_times_ms`` reads it (the consumer passes ms)."""
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
        """Fetched labels of this partition, in offset order, decoded once, kept as columns.
        Labels before where the queue ends (fetched before a rewind's seek) are skipped."""
        end = self.queue.end_offset()
        expected = self.next_offset if end is None else end
        fetched = [(offset, message) for message in messages
                   if (offset := offset_of(message)) >= expected]  # one accessor call each
        if not fetched:
            return
        labels, rejections = decode_levy_labels([message.value() for _, message in fetched])
        record_ids = list(map(_RECORD_ID, labels))
        event_times = list(map(_EVENT_TIME, labels))
        amounts = np.fromiter(map(_AMOUNT, labels), dtype=np.float64, count=len(labels))
        times = event_times_ms(np.array(event_times, dtype=object)) if labels \
            else np.zeros(0, dtype=np.int64)
        offsets = np.array([offset for offset, _ in fetched], dtype=np.int64)
        rejected: dict[int, RejectedLabel] = {}
        if rejections:  # give each malformed label its place in the columns
            for index, rejection in rejections:
                rejected[index] = RejectedLabel(fetched[index][0], rejection, fetched[index][1])
                record_ids.insert(index, "")
                event_times.insert(index, "")
            places = np.array(sorted(rejected), dtype=np.int64)
            kept = np.delete(np.arange(len(fetched)), places)
            times, amounts = _spread(times, kept, len(fetched), _ALWAYS_DUE), \
                _spread(amounts, kept, len(fetched), np.nan)
        self.queue.append(_Fetch(offsets, times, record_ids, amounts, event_times, rejected))

    def take_turn(self, champion_version: int | None, segment_by: Sequence[str],
                  now: float | None = None, records_caught_up: bool = True) -> LabelOutcome:
        """Join every label whose turn has come (see the module docstring), feed the errors of
        the champion's predictions to the error detectors, return decisions and rejects.
        ``records_caught_up``: no record of the partition waits in Kafka (only then may quiet
        records release the labels waiting for them). The turn's labels are joined as one
        batch (``JoinStore.join_batch``): the same outcomes as one by one, in offset order."""
        idle = records_caught_up and (now if now is not None else time.monotonic()) \
            - self.last_records_at >= self.idle_release_s
        due = self.queue.take_due(self.watermark_ms, idle, self._record_here)
        self._warn_if_held_up()
        outcome = LabelOutcome(taken=due.taken, rejected=due.rejected)
        if not due.taken:
            return outcome
        offsets, times = np.concatenate(due.offsets), np.concatenate(due.times)
        amounts, record_ids, event_times = np.concatenate(due.amounts), due.record_ids, \
            due.event_times
        if due.rejected:  # the malformed ones are only handed back
            valid = np.flatnonzero(times != _ALWAYS_DUE)
            valid_list = valid.tolist()
            offsets, times, amounts = offsets[valid], times[valid], amounts[valid]
            record_ids = [record_ids[index] for index in valid_list]
            event_times = [event_times[index] for index in valid_list]
        joined = self._join(record_ids, times, amounts, champion_version)
        self.next_offset = due.last_offset + 1
        if joined is not None:
            fed, errors, relative, segments = joined
            outcome.positions = offsets[fed]
            fed_list = fed.tolist()
            outcome.decisions = self._feed(errors, relative, times[fed],
                                           [segments[index] for index in fed_list],
                                           outcome.positions, segment_by)
            outcome.times = [event_times[index] for index in fed_list]
        return outcome

    def _warn_if_held_up(self) -> None:
        """Once per label: a waiting label dated more than the horizon ahead of the records
        (its own record not here either) holds up every label behind it until the records
        reach its date; say which, so a mistyped date can be found."""
        head = self.queue.head()
        if head is None or head[0] == self.warned_offset or self.watermark_ms < 0 \
                or head[1] - self.watermark_ms <= self.horizon_ms:
            return
        self.warned_offset = head[0]
        log.warning("a label dated far ahead of the records holds up the labels behind it",
                    extra={"partition": self.partition, "label_offset": head[0],
                           "record_id": head[2][:128],
                           "days_ahead": round((head[1] - self.watermark_ms) / DAY_MS),
                           "labels_waiting": len(self.queue)})

    def _record_here(self, record_id: str) -> bool:
        """Whether the record's entry is in the store, which decides its label's outcome now
        (see the module docstring); a damaged one is reported by the join, as in its turn."""
        return self.store.has(record_id)

    def _join(self, record_ids: list[str], times: np.ndarray, amounts: np.ndarray,
              champion_version: int | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[str, ...] | None]] | None:
        """The labels joined, their metrics counted once per turn; returns the positions of
        the champion's joined predictions (to feed), with their absolute and relative errors,
        and every label's segment, or None when none is the champion's."""
        if not record_ids:
            return None
        batch = self.store.join_batch(record_ids, times, self.horizon_ms)
        for code, count in enumerate(np.bincount(batch.outcomes, minlength=len(OUTCOMES))
                                     .tolist()):
            if count:
                metrics.LABELS.labels(outcome=OUTCOMES[code]).inc(count)
        joined = np.flatnonzero(batch.outcomes == JOINED)
        if not joined.size:
            return None
        event_times = batch.event_time_ms[joined]
        known = event_times >= 0
        metrics.observe_many(metrics.LABEL_LAG, (times[joined][known] - event_times[known]) / 1000)
        actual = amounts[joined]
        errors = np.abs(batch.prediction[joined] - actual)
        scored = ~np.isnan(errors)  # no prediction: no champion scored the record
        joined, errors, actual = joined[scored], errors[scored], actual[scored]
        versions = batch.model_version[joined]
        for version in np.unique(versions).tolist():  # recorded for the version that predicted
            metrics.observe_many(metrics.LABEL_ABS_ERROR.labels(
                model_version="none" if version == NO_VERSION else str(version)),
                errors[versions == version])
        champion = (versions == (NO_VERSION if champion_version is None else champion_version))
        if not champion.any():
            return None  # recorded for their own versions; not the champion's to judge
        errors, actual = errors[champion], actual[champion]
        return joined[champion], errors, errors / np.maximum(actual, 1.0), batch.segments

    def _feed(self, errors: np.ndarray, relative: np.ndarray, times: np.ndarray,
              segments: list[tuple[str, ...] | None], positions: np.ndarray,
              segment_by: Sequence[str]) -> list[DriftDecision]:
        columns: dict[str, Any] = {"abs_error": errors, "relative_error": relative,
                                   "event_time": times}
        for number, name in enumerate(segment_by):
            columns[name] = np.array([_segment_value(segment, number) for segment in segments],
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
        count = partition_counts[topic]
        if count != wanted:
            raise TopicLayoutError(
                f"{topic} has {count} partitions and {records} has {wanted}: they must be "
                f"co-partitioned (the same count). Set topics.records_partitions = "
                f"{max(count, wanted)} and run `levydrift topics create` (it adds partitions "
                f"to {records}, {labels} and {changelog}; Kafka removes none), or set "
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


STORE_LOCK_WAIT_S = 30.0  # a fenced instance ends at its next poll: seconds, not minutes
STORE_LOCK_POLL_S = 0.5


def check_state_dir(state_dir: str) -> None:
    """Raise ``ConfigError`` unless ``consumer.state_dir`` can be written: at start, not at
    the first partition assignment (where it was a traceback)."""
    try:
        ensure_writable_dir(Path(state_dir))
    except OSError as error:
        raise ConfigError(f"consumer.state_dir {state_dir} cannot be used: "
                          f"{error.strerror or error}; set it (LEVYDRIFT_CONSUMER_STATE_DIR) "
                          "to a writable directory") from None


def store_path(state_dir: str, group: str, topic: str, partition: int) -> Path:
    """Where partition ``partition``'s pending predictions live on this machine."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{group}.{topic}")
    return Path(state_dir) / f"{safe}-{partition}"


def open_join_store(path: Path, lock_wait_s: float = STORE_LOCK_WAIT_S,
                    cache_mib: int = 0) -> JoinStore:
    """The partition's store; a directory RocksDB cannot open (damaged files) is set aside
    and rebuilt from the changelog, logged and counted. One another process holds is waited
    for up to ``lock_wait_s`` (an instance replacing a fenced one with the same instance id
    is given the partition before the old one has ended), then a one-line error: two
    instances share ``consumer.state_dir``. ``cache_mib``: ``JoinStore``'s."""
    deadline = time.monotonic() + lock_wait_s
    waiting = False
    while True:
        try:
            return JoinStore(path, cache_mib=cache_mib)
        except JoinStoreError as error:
            if "lock" not in str(error).lower():
                return _rebuilt_store(path, error, cache_mib)
            if time.monotonic() >= deadline:
                raise ConfigError(f"{error}: another process uses this consumer.state_dir; "
                                  "give each instance its own") from None
            if not waiting:
                log.info("join store locked by another process; waiting for it to end",
                         extra={"path": str(path), "wait_s": lock_wait_s})
                waiting = True
            time.sleep(STORE_LOCK_POLL_S)


def _rebuilt_store(path: Path, error: JoinStoreError, cache_mib: int) -> JoinStore:
    """A store RocksDB cannot open, set aside; a new one is rebuilt from the changelog."""
    aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
    path.rename(aside)
    metrics.STATE_RESTORE_FAILURES.labels(reason="join_store").inc()
    log.warning("join store unreadable; set aside and rebuilt from the changelog",
                extra={"path": str(path), "moved_to": str(aside), "error": str(error)[:300]})
    return JoinStore(path, cache_mib=cache_mib)


def restore_errors(snapshot: bytes, settings: DetectorSettings,
                   reference: Reference | None) -> SegmentedBank:
    """The error detectors from their snapshot, or fresh ones (against ``reference``)."""
    if snapshot:
        return SegmentedBank.restore(snapshot, error_settings(settings))
    return SegmentedBank(error_settings(settings), reference)


def _spread(values: np.ndarray, places: np.ndarray, size: int, fill: Any) -> np.ndarray:
    """``values`` at ``places`` of a new array of ``size``, ``fill`` elsewhere."""
    out = np.full(size, fill, dtype=values.dtype)
    out[places] = values
    return out


def _segment_value(segment: tuple[str, ...] | None, number: int) -> str:
    return segment[number] if segment is not None and number < len(segment) else ""
