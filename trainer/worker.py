"""``levydrift train-worker``: drift events in, gated model versions out, exactly once.

Per batch of drift events (those arriving within ``episode_linger_s`` form one episode):

1. Events already in a version's lineage are not retrained. If that version's event is not yet
   on Kafka (the worker died between the registry write and the commit), it is published now.
2. Events the registry already covers (their window ends inside an existing version's training
   window, or they were detected within ``episode_gap_s`` of a retrain's trigger) are
   acknowledged without retraining: they belong to an episode that has been handled.
3. The rest trigger one retrain: window read-back, train, gate, register (version complete on
   disk before anything is published).
4. One Kafka transaction produces the model-version event(s) to ``levy.model-versions`` (keyed
   by model name) and commits the drift-event offsets (``send_offsets_to_transaction``).
   Only after the commit is the version marked published in the registry.

A crash before step 3 finishes leaves no version (a claimed number is skipped) and the event
is retrained after restart; a crash between 3 and 4 is repaired by step 1. A training error
produces no version, a history row, a ``failed`` metric, and the offsets are committed (the
same data would fail again); a broker error rewinds and retries.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from levydrift.errors import BrokerUnavailableError, LevyDriftError
from levydrift.kafka import admin_client, consumer_config, ensure_reachable, producer_config
from schemas.drift_event import DriftEvent
from schemas.errors import RecordRejected
from schemas.model_version import ModelVersionEvent
from trainer import metrics
from trainer.config import TrainerSettings
from trainer.events import code_version, event_key, registration_event
from trainer.model import ModelParams
from trainer.registry import ModelRegistry, VersionInfo
from trainer.training import TrainingRequest, train_and_register
from trainer.window import read_training_window

log = logging.getLogger(__name__)

_BATCH_MESSAGES = 100
_RETRY_BACKOFF_S = 5.0


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
        self.registry = ModelRegistry(self.section.registry_root)
        self.model_name = self.section.model_name
        self._stopping = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    # ------------------------------------------------------------------ lifecycle

    def stop(self, *_: Any) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> int:
        kafka = self.settings.kafka
        ensure_reachable(admin_client(kafka), kafka)
        removed = self.registry.clean_stale_staging(self.model_name)
        if removed:
            log.info("removed unfinished versions of dead writers", extra={"count": removed})
        self._refresh_champion_metrics()
        self._producer = Producer(producer_config(
            kafka, **{"transactional.id":
                      f"{self.section.transactional_id_prefix}-{self.model_name}"}))
        self._producer.init_transactions(kafka.request_timeout_s * 3)
        self._consumer = Consumer(consumer_config(
            kafka, self.section.group_id,
            **{"max.poll.interval.ms": int(self.section.max_poll_interval_s * 1000)}))
        self._consumer.subscribe([self.settings.topics.drift_events])
        log.info("train-worker started", extra={
            "model": self.model_name, "group": self.section.group_id,
            "topic": self.settings.topics.drift_events,
            "registry": str(self.registry.root)})
        try:
            while not self._stopping.is_set():
                messages = self._next_batch()
                if messages:
                    self._process(messages)
        finally:
            self._consumer.close()
            self._producer.flush(kafka.request_timeout_s)
            log.info("train-worker stopped", extra={"model": self.model_name})
        return 0

    def _next_batch(self) -> list[Message]:
        """Drift events that arrive together: the first poll, then whatever follows within
        the linger (one episode usually spans several partitions' events)."""
        assert self._consumer is not None
        messages = self._consumer.consume(_BATCH_MESSAGES, timeout=self.section.poll_timeout_s)
        if not messages:
            return []
        deadline = time.monotonic() + self.section.episode_linger_s
        while (remaining := deadline - time.monotonic()) > 0 and not self._stopping.is_set():
            more = self._consumer.consume(_BATCH_MESSAGES, timeout=min(remaining, 0.5))
            messages.extend(more)
        return [m for m in messages if m.error() is None or _raise_fatal(m)]

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
        to_publish = self._still_true(plan.republish.values())
        if plan.fresh:
            try:
                info = self._retrain(plan.fresh)
            except (BrokerUnavailableError, KafkaException) as error:
                log.error("training window could not be read; retrying", extra={
                    "error": str(error)})
                metrics.RETRAINS.labels(outcome="failed").inc()
                self._rewind()
                self._stopping.wait(_RETRY_BACKOFF_S)
                return
            if info is not None:
                to_publish.append(info)
        self._commit(messages, to_publish)

    def _still_true(self, unpublished: Iterable[VersionInfo]) -> list[VersionInfo]:
        """Versions whose event a crash kept from Kafka, less promotions an operator has
        rolled back since: announcing those now would swap consumers to a model the registry
        no longer serves."""
        current = self.registry.champion(self.model_name)
        still_true = []
        for info in unpublished:
            if info.manifest.get("status") == "promoted" and info.version != current:
                log.warning("not announcing a promotion the registry no longer holds", extra={
                    "model": self.model_name, "version": info.version, "champion": current})
                self.registry.mark_published(self.model_name, info.version,
                                             {"skipped": "no longer the champion",
                                              "champion": current})
                continue
            still_true.append(info)
        return still_true

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
            for offsets in lineage.get("training_window", {}).get("offsets", []):
                if (offsets["topic"] == window.topic and offsets["partition"] == window.partition
                        and window.last_offset <= offsets["last_offset"]):
                    return version
            for trigger in lineage.get("drift_events", []):
                if abs((detected - _parse_time(trigger["detected_at"])).total_seconds()) < gap:
                    return version
        return None

    def _retrain(self, events: list[DriftEvent]) -> VersionInfo | None:
        """One retrain for an episode; None (and a failure recorded) if training failed."""
        event_ids = [event.event_id for event in events]
        started = time.perf_counter()
        records_topic = self.settings.topics.records
        ends: dict[int, int] = {}
        starts: dict[int, int] = {}  # the estimated onset: train on the records after it
        for event in events:
            window = event.current_window
            if window.topic == records_topic:
                ends[window.partition] = max(ends.get(window.partition, -1), window.last_offset)
                if event.onset is not None:
                    starts[window.partition] = min(starts.get(window.partition,
                                                              event.onset.offset),
                                                   event.onset.offset)
        log.info("training started", extra={"model": self.model_name, "event_ids": event_ids,
                                            "window_ends": ends, "window_starts": starts})
        try:
            window = read_training_window(self.settings.kafka, records_topic, ends,
                                          self.section.window_records,
                                          self.section.max_scan_records, starts)
            metrics.TRAINING_RECORDS.set(len(window.frame))
            info = train_and_register(self.registry, self.model_name, TrainingRequest(
                frame=window.frame, trigger_event_ids=event_ids,
                training_offsets=window.offsets, code_version=self._code_version(),
                holdout_fraction=self.section.holdout_fraction,
                gate_margin=self.section.gate_margin,
                min_training_records=self.section.min_training_records,
                params=ModelParams(max_iter=self.section.max_iter),
                extra_lineage={"drift_events": [_event_summary(e) for e in events],
                               "scanned_records": window.scanned_records,
                               "refused_records": window.rejected_records}))
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
        """Publish the versions' events and commit the consumed offsets in one transaction."""
        assert self._consumer is not None and self._producer is not None
        events = [registration_event(info) for info in versions]
        try:
            self._producer.begin_transaction()
            for event in events:
                self._producer.produce(self.settings.topics.model_versions,
                                       key=event_key(event), value=event.to_bytes())
            self._producer.send_offsets_to_transaction(
                _next_offsets(messages), self._consumer.consumer_group_metadata(),
                self.settings.kafka.request_timeout_s * 3)
            self._producer.commit_transaction(self.settings.kafka.request_timeout_s * 3)
        except KafkaException as error:
            self._recover(error)
            return
        for info, event in zip(versions, events, strict=True):
            self.registry.mark_published(self.model_name, info.version,
                                         {"topic": self.settings.topics.model_versions,
                                          "decision": event.decision})
            log.info("model-version event published", extra={
                "model": self.model_name, "version": info.version, "decision": event.decision})
        self._refresh_champion_metrics()

    def _recover(self, error: KafkaException) -> None:
        kafka_error = error.args[0]
        if kafka_error.fatal() or not (kafka_error.txn_requires_abort()
                                       or kafka_error.retriable()):
            raise BrokerUnavailableError(
                f"Kafka transaction failed fatally: {kafka_error.str()}") from None
        log.warning("transaction aborted; rewinding to the committed offsets",
                    extra={"error": kafka_error.str()})
        assert self._producer is not None
        try:
            self._producer.abort_transaction(self.settings.kafka.request_timeout_s * 3)
        except KafkaException as abort_error:
            raise BrokerUnavailableError(
                f"Kafka transaction could not be aborted: {abort_error.args[0].str()}") from None
        self._rewind()

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
    producer = Producer(producer_config(
        settings.kafka, **{"transactional.id": f"{settings.trainer.transactional_id_prefix}-"
                                               f"{settings.trainer.model_name}-cli"}))
    timeout = settings.kafka.request_timeout_s * 3
    try:
        producer.init_transactions(timeout)
        producer.begin_transaction()
        producer.produce(settings.topics.model_versions, key=event_key(event),
                         value=event.to_bytes())
        producer.commit_transaction(timeout)
    except KafkaException as error:
        raise BrokerUnavailableError(
            f"publishing the model-version event failed: {error.args[0].str()}") from None


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    positions: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic(), message.partition())
        positions[key] = max(positions.get(key, 0), message.offset() + 1)
    return [TopicPartition(topic, partition, offset)
            for (topic, partition), offset in positions.items()]


def _raise_fatal(message: Message) -> bool:
    """Consumer errors: fatal ones stop the worker; others (partition EOF) are dropped."""
    error = message.error()
    if error.fatal():
        raise BrokerUnavailableError(f"drift-event consumer failed: {error.str()}")
    return False


def _event_summary(event: DriftEvent) -> dict[str, Any]:
    window = event.current_window
    return {"event_id": event.event_id, "kind": event.kind, "detected_at": event.detected_at,
            "signals": [signal.signal for signal in event.signals],
            "current_window": {"topic": window.topic, "partition": window.partition,
                               "first_offset": window.first_offset,
                               "last_offset": window.last_offset}}


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
