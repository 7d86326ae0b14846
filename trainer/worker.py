"""``levydrift train-worker``: drift events in, gated model versions out, exactly once.

Per batch of drift events (those arriving within ``episode_linger_s`` form one episode):

1. Events already in a version's lineage are not retrained. If that version's event is not yet
   on Kafka (the worker died between the registry write and the commit), it is published now.
2. Events the registry already covers (their window ends inside an existing version's training
   window, or they were detected within ``episode_gap_s`` of a retrain's trigger) are
   acknowledged without retraining: they belong to an episode that has been handled.
3. The rest trigger one retrain: window read-back, train, gate, and the version written
   complete (staged, renamed into the registry).
4. Under the registry lock: the registration is finished (history row; for a promoted version
   the champion move, if the champion is still the one the gate compared against), and one
   Kafka transaction produces the model-version event(s) to ``levy.model-versions`` and commits
   the drift-event offsets (``send_offsets_to_transaction``). After the commit the versions
   are marked published.

Crash anywhere (``levydrift.faults`` names the points; the tests crash at each): before the
rename there is no version (a claimed number is skipped) and the event is retrained after
restart; after it, step 1 finishes the registration and announces it in the same transaction
as the offsets. On start the worker first reconciles the registry with the topic
(``trainer.announcements``): a champion move whose announcement a crash cut off (here or in
``levydrift registry``) is announced then. Either way the version ends champion and announced,
or neither, and the episode is trained once. A training error produces no version, a history
row, a ``failed`` metric, and the offsets are committed (the same data would fail again); a
broker error rewinds and retries.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from levydrift.errors import BrokerUnavailableError, LevyDriftError
from levydrift.faults import crash_point
from levydrift.kafka import admin_client, consumer_config, ensure_reachable, producer_config
from levydrift.kafka.messages import ends_consumer, offset_of, partition_of, topic_of
from levydrift.kafka.transactions import FatalKafkaError, TransactionAborted, TransactionalOutput
from schemas.drift_event import DriftEvent, segment_fields
from schemas.errors import RecordRejected
from schemas.levy_record import FIELDS
from schemas.model_version import ModelVersionEvent
from trainer import metrics
from trainer.announcements import read_model_events, reconcile, registration_announcement
from trainer.config import TrainerSettings
from trainer.events import code_version, event_key
from trainer.model import ModelParams
from trainer.registry import ModelRegistry, VersionInfo
from trainer.registry_lineage import trained_through
from trainer.training import TrainingRequest, train_and_register
from trainer.window import TrainingWindow, read_training_window, segment_scopes

log = logging.getLogger(__name__)

_BATCH_MESSAGES = 100
_RETRY_BACKOFF_S = 5.0
# The champion alias also moves outside this process (`levydrift registry rollback`): re-read it
# at least this often so the champion gauge follows.
_CHAMPION_REFRESH_S = 5.0
_HEALTH_CHECK_INTERVAL_S = 10.0


class _FatalKafkaError(BrokerUnavailableError):
    """A Kafka error no retry can fix (a fenced producer, a fatal client error)."""


@dataclass
class BatchPlan:
    """What one batch of drift events leads to."""

    fresh: list[DriftEvent] = field(default_factory=list)
    republish: dict[int, VersionInfo] = field(default_factory=dict)
    covered: dict[str, int] = field(default_factory=dict)  # event id -> covering version
    already_published: dict[str, int] = field(default_factory=dict)


class TrainWorker:
    """The retraining service for one model. ``run()`` until ``stop()`` (or a signal)."""

    def __init__(self, settings: TrainerSettings) -> None:
        self.settings = settings
        self.section = settings.trainer
        self.registry = ModelRegistry(settings.registry.root)
        self.model_name = self.section.model_name
        self._stopping = threading.Event()
        self._consumer: Consumer | None = None
        self._output: TransactionalOutput | None = None
        self._champion_read_at = float("-inf")
        self._clock = time.monotonic
        self._outage_since: float | None = None  # when Kafka stopped answering, if it has
        self._next_health_check = 0.0
        self._rewind_pending = False  # consumed but uncommitted events to read again

    # ------------------------------------------------------------------ lifecycle

    def stop(self, *_: Any) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> int:
        """Serve until ``stop()``. Kafka may go away for up to ``broker_outage_limit_s``: the
        worker waits, retries and carries on; past the limit (or on a fatal Kafka error) it
        raises ``BrokerUnavailableError``, whose one line the CLI prints (exit code 3)."""
        kafka = self.settings.kafka
        self.registry.ensure_writable()  # at start, not at the first drift event
        if not self._until_done(lambda: ensure_reachable(admin_client(kafka), kafka)):
            return 0
        removed = self.registry.clean_stale_staging(self.model_name)
        if removed:
            log.info("removed unfinished versions of dead writers", extra={"count": removed})
        self._refresh_champion_metrics()
        transactional: dict[str, Any] = {"transactional.id": self._transactional_id}
        self._output = TransactionalOutput(
            lambda: Producer(producer_config(kafka, **transactional)), kafka.request_timeout_s * 3)
        try:
            if not (self._until_done(self._start_transactions)
                    and self._until_done(lambda: reconcile(
                        self.registry, self.model_name, self._read_model_events,
                        self._publish_alone))):
                return 0
            self._consumer = Consumer(consumer_config(
                kafka, self.section.group_id,
                **{"max.poll.interval.ms": int(self.section.max_poll_interval_s * 1000)}))
            self._consumer.subscribe([self.settings.topics.drift_events])
            log.info("train-worker started", extra={
                "model": self.model_name, "group": self.section.group_id,
                "topic": self.settings.topics.drift_events,
                "registry": str(self.registry.root)})
            while not self._stopping.is_set():
                self._attempt(self._step)
        finally:
            self._close()
        return 0

    @property
    def _transactional_id(self) -> str:
        return f"{self.section.transactional_id_prefix}-{self.model_name}"

    def _step(self) -> None:
        """One batch of drift events, after finishing any recovery a broker error left."""
        self._replace_broken_producer()
        if self._rewind_pending:
            self._rewind()
            self._rewind_pending = False
        if self._clock() - self._champion_read_at >= _CHAMPION_REFRESH_S:
            self._refresh_champion_metrics()
        messages = self._next_batch()
        if messages:
            self._refresh_champion_metrics()  # a job starts from the registry's truth
            self._process(messages)
        elif self._outage_since is not None or self._clock() >= self._next_health_check:
            self._check_broker()

    def _start_transactions(self) -> None:
        """Register the transactional id (fencing a predecessor and settling what it left)."""
        assert self._output is not None
        if self._output.broken is None:
            self._output.init()  # a call that never returns breaks the output: replace it
        else:
            self._replace_broken_producer()

    def _replace_broken_producer(self) -> None:
        """A producer Kafka left mid-transaction is replaced first (which settles its
        transaction); until Kafka answers, that is an outage like any other."""
        assert self._output is not None
        if self._output.broken is not None and not self._output.reset(
                self.settings.kafka.request_timeout_s):
            raise BrokerUnavailableError("the transactional producer cannot be replaced yet: "
                                         f"{self._output.broken}")

    def _check_broker(self) -> None:
        """A metadata round trip: the idle worker's evidence that Kafka is still there."""
        assert self._consumer is not None
        self._consumer.list_topics(self.settings.topics.drift_events,
                                   timeout=self.settings.kafka.request_timeout_s)
        self._next_health_check = self._clock() + _HEALTH_CHECK_INTERVAL_S

    def _until_done(self, operation: Callable[[], object]) -> bool:
        """Retry ``operation`` through a broker outage; False if stopped meanwhile."""
        while not self._stopping.is_set():
            if self._attempt(operation):
                return True
        return False

    def _attempt(self, operation: Callable[[], object]) -> bool:
        """Run ``operation``; on a transient Kafka failure note the outage (raising once it
        outlasts the limit), wait a little and return False."""
        try:
            operation()
        except FatalKafkaError as error:
            raise _FatalKafkaError(f"Kafka failed fatally: {error}") from None
        except (KafkaException, BrokerUnavailableError, TransactionAborted) as error:
            if isinstance(error, KafkaException) and _is_fatal(error):
                raise BrokerUnavailableError(f"Kafka failed fatally: {error.args[0].str()}") \
                    from None
            if isinstance(error, _FatalKafkaError):
                raise
            self._broker_lost(error)
            self._stopping.wait(_RETRY_BACKOFF_S)
            return False
        if self._outage_since is not None:
            log.info("Kafka reachable again; carrying on", extra={
                "outage_seconds": round(self._clock() - self._outage_since, 1)})
            self._outage_since = None
        return True

    def _broker_lost(self, error: Exception) -> None:
        now = self._clock()
        message = error.args[0].str() if isinstance(error, KafkaException) else str(error)
        if self._outage_since is None:
            self._outage_since = now
            log.warning("Kafka unreachable; retrying", extra={
                "error": message, "limit_seconds": self.section.broker_outage_limit_s})
        elif now - self._outage_since > self.section.broker_outage_limit_s:
            raise BrokerUnavailableError(
                f"Kafka at {self.settings.kafka.bootstrap_servers} unreachable for "
                f"{now - self._outage_since:.0f}s, over trainer.broker_outage_limit_s "
                f"({self.section.broker_outage_limit_s:g}s); last error: {message}")

    def _close(self) -> None:
        """Close the clients without letting a failure here hide the error that got us here."""
        timeout = self.settings.kafka.request_timeout_s
        if self._consumer is not None:
            try:
                self._consumer.close()
            except KafkaException as error:
                log.warning("drift-event consumer close failed", extra={"error": str(error)})
        if self._output is not None:
            self._output.close(timeout)
        log.info("train-worker stopped", extra={"model": self.model_name})

    def _next_batch(self) -> list[Message]:
        """Drift events that arrive together: the first one and those queued with it, then
        whatever follows within the linger (one episode usually spans several partitions'
        events). consume() returns with as many messages as asked for or at its timeout: asked
        for a batch, a lone event waited out poll_timeout_s before its linger began."""
        assert self._consumer is not None
        messages = self._consumer.consume(1, timeout=self.section.poll_timeout_s)
        if not messages:
            return []
        messages += self._consumer.consume(_BATCH_MESSAGES, timeout=0)
        deadline = time.monotonic() + self.section.episode_linger_s
        while (remaining := deadline - time.monotonic()) > 0 and not self._stopping.is_set():
            more = self._consumer.consume(_BATCH_MESSAGES, timeout=min(remaining, 0.5))
            messages.extend(more)
        return [m for m in messages if (error := m.error()) is None or _raise_fatal(error)]

    # ------------------------------------------------------------------ one batch

    def _process(self, messages: Sequence[Message]) -> None:
        events = self._decode(messages)
        plan = self.plan(events)
        for event_id, version in plan.covered.items():
            log.info("drift event belongs to a handled episode", extra={
                "event_id": event_id, "version": version})
        for event_id, version in plan.already_published.items():
            log.info("drift event already led to a published version", extra={
                "event_id": event_id, "version": version})
        to_publish = list(plan.republish.values())
        if plan.fresh:
            try:
                info = self._retrain(plan.fresh)
            except (BrokerUnavailableError, KafkaException):
                log.error("training window could not be read; the events are read again")
                metrics.RETRAINS.labels(outcome="failed").inc()
                self._rewind_pending = True
                raise
            if info is not None:
                to_publish.append(info)
        self._commit(messages, to_publish)

    def _decode(self, messages: Sequence[Message]) -> list[DriftEvent]:
        events = []
        for message in messages:
            metrics.DRIFT_EVENTS_CONSUMED.inc()
            try:
                event = DriftEvent.from_bytes(message.value())
            except RecordRejected as error:
                log.warning("drift event refused; skipping it", extra={
                    "partition": message.partition(), "offset": message.offset(),
                    "reason": str(error)})
                continue
            if event.model_name == self.model_name:
                events.append(event)
        return events

    def plan(self, events: Sequence[DriftEvent]) -> BatchPlan:
        """Split events into fresh, already handled (to republish or not) and covered ones.
        The registry's lineage is the source of truth, so the plan survives restarts."""
        plan = BatchPlan()
        handled = self.registry.handled_event_ids(self.model_name)
        seen: set[str] = set()
        for event in events:
            if event.event_id in seen:
                continue
            seen.add(event.event_id)
            version = handled.get(event.event_id)
            if version is not None:
                info = self.registry.get(self.model_name, version)
                if info.published:
                    plan.already_published[event.event_id] = version
                else:
                    plan.republish[version] = info
                continue
            covering = self._covering_version(event)
            if covering is not None:
                plan.covered[event.event_id] = covering
            else:
                plan.fresh.append(event)
        return plan

    def _covering_version(self, event: DriftEvent) -> int | None:
        window = event.current_window
        detected = _parse_time(event.detected_at)
        gap = self.section.episode_gap_s
        for version in reversed(self.registry.versions(self.model_name)):
            lineage = self.registry.get(self.model_name, version).lineage
            if trained_through(lineage, window.topic, window.partition, window.last_offset):
                return version
            for trigger in lineage.get("drift_events", []):
                if abs((detected - _parse_time(trigger["detected_at"])).total_seconds()) < gap:
                    return version
        return None

    def _read_window(self, ends: dict[int, int], starts: dict[int, int],
                     segments: dict[int, tuple[dict[str, str], ...]],
                     label_ends: dict[int, int], label_starts: dict[int, int],
                     label_segments: dict[int, tuple[dict[str, str], ...]]) -> TrainingWindow:
        """The episode's training window. A labels event of one segment cuts its partition
        at its onset (the labels from there on, of every segment); the other segments'
        records labelled before it then fill the rest of the window, as for records events."""
        topics, section = self.settings.topics, self.section
        mix_window_s = self.settings.detectors.composition_window_s
        window = read_training_window(
            self.settings.kafka, topics.records, ends, section.window_records,
            section.max_scan_records, starts, labels_topic=topics.labels,
            label_ends=label_ends, label_starts=label_starts, changed_segments=segments,
            composition_window_s=mix_window_s)
        room = section.window_records - len(window.frame)
        if not label_segments or room <= 0:
            return window
        return window.merged(read_training_window(
            self.settings.kafka, topics.records, {}, room, section.max_scan_records,
            labels_topic=topics.labels, other_segments_of=label_segments,
            composition_window_s=mix_window_s))

    def _retrain(self, events: list[DriftEvent]) -> VersionInfo | None:
        """One retrain for an episode; None (and a failure recorded) if training failed."""
        event_ids = [event.event_id for event in events]
        started = time.perf_counter()
        topics = self.settings.topics
        ends, starts = window_bounds(events, topics.records)
        segments = changed_segments(events, topics.records)
        label_ends, label_starts = window_bounds(events, topics.labels)
        label_segments = changed_segments(events, topics.labels)
        log.info("training started", extra={
            "model": self.model_name, "event_ids": event_ids,
            "window_ends": _by_partition(ends), "window_starts": _by_partition(starts),
            "label_window_ends": _by_partition(label_ends),
            "label_window_starts": _by_partition(label_starts),
            "post_change_segments": segment_scopes(segments),
            "post_change_label_segments": segment_scopes(label_segments)})
        try:
            training_window = self._read_window(ends, starts, segments, label_ends,
                                                label_starts, label_segments)
            metrics.TRAINING_RECORDS.set(len(training_window.frame))
            info = train_and_register(self.registry, self.model_name, TrainingRequest(
                frame=training_window.frame, trigger_event_ids=event_ids,
                training_offsets=training_window.offsets, code_version=self._code_version(),
                holdout_fraction=self.section.holdout_fraction,
                gate_margin=self.section.gate_margin,
                slice_tolerance=self.section.slice_tolerance,
                min_training_records=self.section.min_training_records,
                params=ModelParams(max_iter=self.section.max_iter),
                extra_lineage={"drift_events": [event_summary(e) for e in events],
                               **training_window.lineage(),
                               "post_change_label_segments": segment_scopes(label_segments)},
                records_topic=topics.records, record_offsets=training_window.record_offsets,
                mix=training_window.mix,
                composition_window_s=self.settings.detectors.composition_window_s),
                finish=False)
        except (BrokerUnavailableError, KafkaException):
            raise
        except (LevyDriftError, ValueError, KeyError, MemoryError) as error:
            duration = time.perf_counter() - started
            log.error("training failed; no version", extra={
                "model": self.model_name, "event_ids": event_ids, "reason": str(error)})
            self.registry.record_failure(self.model_name, str(error), event_ids,
                                         duration_s=duration, code_version=self._code_version())
            metrics.RETRAINS.labels(outcome="failed").inc()
            metrics.RETRAIN_DURATION.observe(duration)
            return None
        duration = time.perf_counter() - started
        metrics.RETRAIN_DURATION.observe(duration)
        metrics.RETRAINS.labels(outcome=info.manifest["status"]).inc()
        return info

    def _commit(self, messages: Sequence[Message], versions: list[VersionInfo]) -> None:
        """Finish the versions' registration, publish their events and commit the consumed
        offsets in one transaction, all under the registry lock (so a reconcile elsewhere never
        announces a move this commit is about to)."""
        assert self._consumer is not None and self._output is not None
        with self.registry.locked(self.model_name):
            settled = [(info, self._settle(info)) for info in versions]
            events = [event for _, event in settled if event is not None]
            try:
                for event in events:
                    self._output.produce(self.settings.topics.model_versions,
                                         event.to_bytes(), key=event_key(event))
                self._output.commit(_next_offsets(messages), self._consumer)
            except TransactionAborted as error:
                # Aborted, or left to the producer's replacement: the batch is read again
                # (the registry's lineage keeps a finished retrain from running twice).
                log.warning("transaction failed; reading the batch again",
                            extra={"error": str(error)})
                self._rewind_pending = True
                raise
            crash_point("after_publish")
            for info, announcement in settled:
                self._mark_published(info, announcement)
        self._refresh_champion_metrics()

    def _settle(self, info: VersionInfo) -> ModelVersionEvent | None:
        """Finish a version's registration; the event it owes the fleet, if any."""
        self.registry.finish_registration(self.model_name, info.version)
        event = registration_announcement(self.registry, info)
        if event is None:
            log.warning("not announcing a promotion the registry does not hold", extra={
                "model": self.model_name, "version": info.version,
                "champion": self.registry.champion(self.model_name)})
        return event

    def _mark_published(self, info: VersionInfo, event: ModelVersionEvent | None) -> None:
        if event is None:
            self.registry.mark_published(self.model_name, info.version, {
                "skipped": "not the champion", "champion": self.registry.champion(self.model_name)})
            return
        self.registry.mark_published(self.model_name, info.version, {
            "topic": self.settings.topics.model_versions, "decision": event.decision})
        log.info("model-version event published", extra={
            "model": self.model_name, "version": info.version, "decision": event.decision})

    def _read_model_events(self) -> list[ModelVersionEvent]:
        return read_model_events(self.settings.kafka, self.settings.topics.model_versions,
                                 self.model_name)

    def _publish_alone(self, event: ModelVersionEvent) -> None:
        """One event in a transaction of its own (a reconciled announcement)."""
        assert self._output is not None
        self._replace_broken_producer()
        try:
            self._output.produce(self.settings.topics.model_versions, event.to_bytes(),
                                 key=event_key(event))
            self._output.commit([], None)
        except TransactionAborted as error:
            raise BrokerUnavailableError(
                f"announcing model version {event.version} failed: {error}") from None

    def _rewind(self) -> None:
        """Seek every assigned partition back to its committed offset (the batch is redone;
        the registry's lineage keeps a finished retrain from running twice)."""
        assert self._consumer is not None
        assignment = self._consumer.assignment()
        if not assignment:
            return
        for committed in self._consumer.committed(assignment,
                                                  timeout=self.settings.kafka.request_timeout_s):
            offset = committed.offset if committed.offset >= 0 else 0
            self._consumer.seek(TopicPartition(committed.topic, committed.partition, offset))

    def _refresh_champion_metrics(self) -> None:
        self._champion_read_at = self._clock()
        champion = self.registry.champion(self.model_name)
        if champion is None:
            return
        metrics.CHAMPION_VERSION.labels(model=self.model_name).set(champion)
        promotions = [entry for entry in self.registry.alias_history(self.model_name)
                      if entry["alias"] == "champion"]
        if promotions:
            when = _parse_time(promotions[-1]["time"]).timestamp()
            metrics.LAST_PROMOTION.labels(model=self.model_name).set(when)

    def _code_version(self) -> str:
        return self.section.code_version or code_version()


def publish_decision(settings: TrainerSettings, event: ModelVersionEvent) -> None:
    """Produce one model-version event outside the worker (registry promote/rollback), in its
    own transaction with a separate transactional id so it never fences the worker."""
    transactional_id = (f"{settings.trainer.transactional_id_prefix}-"
                        f"{settings.trainer.model_name}-cli")
    timeout = settings.kafka.request_timeout_s * 3
    transactional: dict[str, Any] = {"transactional.id": transactional_id}
    output = TransactionalOutput(lambda: Producer(producer_config(settings.kafka,
                                                                  **transactional)), timeout)
    try:
        output.init()
        output.produce(settings.topics.model_versions, event.to_bytes(), key=event_key(event))
        output.commit([], None)
    except (TransactionAborted, FatalKafkaError) as error:
        raise BrokerUnavailableError(
            f"publishing the model-version event failed: {error}") from None
    finally:
        output.close(timeout)


def window_bounds(events: Sequence[DriftEvent], topic: str
                  ) -> tuple[dict[int, int], dict[int, int]]:
    """Where the events on ``topic`` put the window: ({partition: last offset}, {partition:
    onset offset}); an episode's events widen it (the latest end, the earliest onset)."""
    ends: dict[int, int] = {}
    starts: dict[int, int] = {}  # the estimated onset: train on what came after it
    for event in events:
        window = event.current_window
        if window.topic != topic:
            continue
        ends[window.partition] = max(ends.get(window.partition, -1), window.last_offset)
        if event.onset is not None:
            starts[window.partition] = min(starts.get(window.partition, event.onset.offset),
                                           event.onset.offset)
    return ends, starts


def changed_segments(events: Sequence[DriftEvent], topic: str
                     ) -> dict[int, tuple[dict[str, str], ...]]:
    """Per partition whose window starts at an onset, the segments that changed, when every
    event with an onset there names one (``county=Grant``): only their records must come
    from after the onset, the other segments' still describe the present. A partition with
    any event of the whole stream (or of no single segment, or of fields records lack) is
    left out: all its records must come from after the onset."""
    named: dict[int, list[dict[str, str]]] = {}
    whole: set[int] = set()
    for event in events:
        window = event.current_window
        if window.topic != topic or event.onset is None:
            continue
        fields = segment_fields(event.segment)
        if fields is None or not set(fields) <= set(FIELDS):
            whole.add(window.partition)
        elif fields not in named.setdefault(window.partition, []):
            named[window.partition].append(fields)
    return {partition: tuple(segments) for partition, segments in named.items()
            if partition not in whole}


def _by_partition(offsets: dict[int, int]) -> dict[str, int]:
    """Partition keys as text: a log line is one JSON object."""
    return {str(partition): offset for partition, offset in offsets.items()}


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    positions: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (topic_of(message), partition_of(message))
        positions[key] = max(positions.get(key, 0), offset_of(message) + 1)
    return [TopicPartition(topic, partition, offset)
            for (topic, partition), offset in positions.items()]


def _raise_fatal(error: KafkaError) -> bool:
    """Consumer errors: fatal ones stop the worker; others (partition EOF, a broker that went
    away: the health check and the next commit see to that) are dropped."""
    if ends_consumer(error):
        raise _FatalKafkaError(f"drift-event consumer failed: {error.str()}")
    return False


def _is_fatal(error: KafkaException) -> bool:
    kafka_error = error.args[0] if error.args else None
    return bool(getattr(kafka_error, "fatal", lambda: False)())


def event_summary(event: DriftEvent) -> dict[str, Any]:
    """A drift event as a version's lineage keeps it (the episode-gap rule reads it back)."""
    window = event.current_window
    return {"event_id": event.event_id, "kind": event.kind, "detected_at": event.detected_at,
            "signals": [signal.signal for signal in event.signals],
            "current_window": {"topic": window.topic, "partition": window.partition,
                               "first_offset": window.first_offset,
                               "last_offset": window.last_offset}}


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
