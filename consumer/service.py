"""``levydrift consume``: the run loop, rebalance handling and shutdown.

Per checkpoint (every ``checkpoint_interval_s``, on revoke and on shutdown) one Kafka transaction
carries the dead letters and drift events produced since the last one, a detector-state snapshot
of every partition that moved, and the consumed offsets. An aborted transaction rewinds each
partition to its last committed snapshot and offset, so nothing is counted twice.

When Kafka goes away the service waits for it: a transaction whose outcome is unknown leaves the
producer broken, nothing is consumed while it is, and once Kafka answers a new producer settles
that transaction and every partition is restored from what Kafka holds, exactly as after a
restart. Past ``consumer.outage_limit_s`` without a commit it exits with code 3.
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from consumer import metrics
from consumer.champion import ChampionTracker
from consumer.config import ConsumerSection, ConsumerSettings
from consumer.dead_letters import DeadLetterWriter
from consumer.join_store import (
    JoinStoreError,
    changelog_prefix,
    changelog_reader,
    restore_from_changelog,
)
from consumer.labels import (
    DAY_MS,
    NO_WATERMARK,
    LabelJoin,
    check_co_partitioned,
    check_state_dir,
    open_join_store,
    restore_errors,
    retention_shortfall,
    store_path,
)
from consumer.lag import LagProbe, LayoutWatch
from consumer.processing import BatchResult, PartitionMonitor, process_labels, process_partition
from consumer.schedule import CheckpointSchedule
from consumer.state import (
    PartitionState,
    StateRestoreError,
    StoredState,
    encode_state,
    part_key,
    read_latest_states,
    refuse_state,
    restorable_state,
    resume_point,
    state_key,
    state_records,
)
from detectors.errors import SnapshotError
from detectors.kernels import start_compiler
from levydrift.errors import BrokerUnavailableError
from levydrift.kafka import (
    admin_client,
    consumer_config,
    ensure_reachable,
    partition_count,
    producer_config,
)
from levydrift.kafka.messages import ends_consumer, fenced_membership, names_fenced_membership
from levydrift.kafka.transactions import (
    TRANSACTIONAL_TUNING,
    FatalKafkaError,
    MessageRefused,
    TransactionAborted,
    TransactionalOutput,
    is_refusal,
    producer_overrides,
)
from levydrift.model_probe import ProbedVersions, SpareProbe
from schemas.dead_letter import Headers

log = logging.getLogger(__name__)

RESET_TIMEOUT_S = 5.0  # one attempt to restart transactions while Kafka is away
BACKLOG_WAIT_S = 0.02  # the longest a fetch after a full one waits (see ``_backlog``)
# The group's rebalance timeout: a JoinGroup may wait this long on the broker before it is
# answered, so a join this consumer sent after losing its assignment can land this late.
MAX_POLL_INTERVAL_S = 300.0
# Fenced by its own join this often within the window, the service gives up: something keeps
# rejoining under this instance's name.
OWN_FENCE_LIMIT = 3
OWN_FENCE_WINDOW_S = 600.0


class FencedByOwnJoin(FatalKafkaError):
    """The group fenced this instance's static membership while it was rejoining after losing
    its assignment (a broker restart, a session timeout): librdkafka can send that rejoin
    twice (a retried JoinGroup the broker had already taken, KAFKA-20985's race), and
    whichever join the broker handles last fences the other. The service starts afresh from
    its last checkpoint. A fence with no loss before it is another instance: exit 4."""


def run_consumer(settings: ConsumerSettings,
                 build: Callable[[ConsumerSettings], ConsumerService] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 spare_probe: SpareProbe | None = None) -> int:
    """Run the service until stopped. Fenced by its own join, it is built afresh and resumes
    from the last checkpoint, exactly as a restarted process would (the crash tests' path);
    fenced so more than ``OWN_FENCE_LIMIT`` times within ``OWN_FENCE_WINDOW_S`` it gives up.
    ``spare_probe`` (see ``ChampionTracker``) serves the first build's start."""
    fences: deque[float] = deque()
    while True:
        if build is not None:
            service = build(settings)
        else:
            service = ConsumerService(settings, spare_probe)
            spare_probe = None
        try:
            return service.run()
        except FencedByOwnJoin as error:
            now = clock()
            fences.append(now)
            while now - fences[0] > OWN_FENCE_WINDOW_S:
                fences.popleft()
            if len(fences) > OWN_FENCE_LIMIT:
                raise FatalKafkaError(f"{error}; fenced by its own join {len(fences)} times "
                                      f"within {OWN_FENCE_WINDOW_S:g}s") from None
            if service.stop_requested:
                return 0
            log.warning("fenced by its own earlier join; starting afresh from the last "
                        "checkpoint", extra={"error": str(error)})
            metrics.OWN_FENCE_RESTARTS.inc()


def output_producer_config(settings: ConsumerSettings) -> dict[str, Any]:
    """The transactional producer's configuration (tuning under kafka.client wins)."""
    section = settings.consumer
    config = producer_config(settings.kafka, TRANSACTIONAL_TUNING,
                             **producer_overrides(section.transactional_id,
                                                  section.transaction_timeout_s))
    # A topic's max.message.bytes bounds a whole batch: state parts batched together must
    # stay below it as each part does, whatever batch.size was asked for.
    config["batch.size"] = min(int(config["batch.size"]), section.state_record_max_bytes)
    return config


def probed_versions(section: ConsumerSection) -> ProbedVersions | None:
    """The record of artifacts that passed and served here (``consumer.remember_model_probes``),
    under ``consumer.state_dir``."""
    if not section.remember_model_probes:
        return None
    return ProbedVersions(Path(section.state_dir) / "model-probes")


class ConsumerService:
    """Kafka in, detector banks per partition, drift events and checkpoints out."""

    def __init__(self, settings: ConsumerSettings,
                 spare_probe: SpareProbe | None = None) -> None:
        self.settings = settings
        self.section = settings.consumer
        self.monitors: dict[int, PartitionMonitor] = {}
        self._stopping = False
        self._failed = False
        self._schedule = CheckpointSchedule(self.section.checkpoint_interval_s)
        self._fetched_since_checkpoint = 0  # records fetched since the last checkpoint began
        self._stalled_since: float | None = None  # start of the first checkpoint that failed
        self._restore_pending = False  # Kafka came back; the partitions are not restored yet
        self._stall_reason = ""
        kafka = settings.kafka
        self._consumer_config = consumer_config(kafka, self.section.group_id, **{
            "group.instance.id": self.section.instance_id,  # static membership
            "session.timeout.ms": int(self.section.session_timeout_s * 1000),
            "max.poll.interval.ms": int(MAX_POLL_INTERVAL_S * 1000), "fetch.max.bytes": 52_428_800,
            # Incremental rebalancing: a member joining or leaving moves only the partitions
            # that change owner; the others keep processing and committing.
            "partition.assignment.strategy": "cooperative-sticky"})
        self._reader_config = consumer_config(kafka, f"{self.section.group_id}.readers")
        # Labels partition p is read by whoever owns records partition p, assigned by hand
        # beside it; where it stands is part of p's checkpoint, not the group's offsets.
        self.label_reader: Consumer | None = None
        # Where a partition starts, asked of a client that fetches nothing: the broker answers
        # a client's requests in order, so behind a fetch in flight (the label reader's or the
        # records consumer's, once either has a partition) each answer waited for that fetch,
        # up to fetch.wait.max.ms: 0.5 s for each partition restored after the first.
        self._offsets_reader: Consumer | None = None
        # Every partition's join store restores through one reader: a new client per
        # partition spent 30-80 ms connecting and asking its metadata afresh.
        self._changelog_reader: Consumer | None = None
        self._paused_labels: set[int] = set()
        # The last label fetch was full (more labels wait in Kafka) and the last records fetch
        # empty: the next records fetch does not wait, or quiet records would let a label
        # backlog drain one batch per wait. While records flow, it waits as ever: without
        # waiting it would take the few records at hand, and small batches cost dearly.
        self._labels_behind = False
        self._records_quiet = False
        # The last records fetch was full: a backlog is being read. librdkafka's consume waits
        # for a whole batch or the timeout, so the backlog's last, partial batch would wait
        # out batch_timeout_s with its records already here; after a full fetch the next one
        # waits at most BACKLOG_WAIT_S (a batch in a backlog is queued already).
        self._backlog = False
        self._changelog_ends: dict[int, int] = {}  # partition -> next changelog offset
        self._state_parts: dict[int, int] = {}  # partition -> records of its last snapshot
        self._rejoin_due = False  # partitions of another topic were assigned (_on_assign)
        self._state_refusal: str | None = None  # why the broker refused a state record
        self._changelog_prefix = changelog_prefix(self.section.group_id)  # groups share it
        self._lost_at: float | None = None  # when Kafka last took the assignment away
        self._co_partitions = 0  # records partitions whose labels and changelog were checked
        self.output = TransactionalOutput(self._new_producer, self.section.transaction_timeout_s,
                                          metrics.observe_transaction)
        self.lag = LagProbe(self._reader_config)
        self.dead_letters = DeadLetterWriter(self.output, settings.topics.dead_letters)
        self.consumer: Consumer | None = None
        self.champion = ChampionTracker(self._reader_config, settings.topics.model_versions,
                                        self.section.model_name, settings.registry.root,
                                        settings.detectors.all_signals()
                                        + settings.detectors.segment_by
                                        + settings.detectors.stratify_by,
                                        spare_probe=spare_probe,
                                        probed=probed_versions(self.section))

    # -- lifecycle -------------------------------------------------------------------------

    def run(self, stop_when: Callable[[ConsumerService], bool] | None = None) -> int:
        """Consume until SIGTERM/SIGINT (or until ``stop_when(self)``, for benchmarks)."""
        self._install_signal_handlers()
        topics = self.settings.topics
        admin = admin_client(self.settings.kafka)
        needed = [topics.records, topics.dead_letters, topics.drift_events,
                  topics.model_versions, topics.detector_state]
        if self.section.join_labels:
            needed += [topics.labels, topics.join_changelog]
        ensure_reachable(admin, self.settings.kafka, needed)
        if self.section.join_labels:
            metadata = admin.list_topics(timeout=self.settings.kafka.request_timeout_s)
            counts = {name: len(metadata.topics[name].partitions) for name in needed}
            self._check_co_partitioned(counts)
            self._co_partitions = counts[topics.records]
            self.lag.layout = LayoutWatch(
                [topics.records, topics.labels, topics.join_changelog],
                self._check_co_partitioned)
            self._check_records_retention(admin)
            check_state_dir(self.section.state_dir)
            self.label_reader = Consumer({**self._reader_config,
                                         "group.id": f"{self.section.group_id}.labels"})
        try:
            self.output.init()
        except TransactionAborted as error:
            raise FatalKafkaError(f"cannot start transactions: {error}") from None
        # The group join runs in librdkafka's threads while the champion is probed; the
        # partitions it brings are restored in the first poll, against the champion chosen.
        self._subscribe()
        self.champion.start(self.section.restore_timeout_s)
        # numba's CPU target, which the first restore or batch needs, set up without the
        # scipy.linalg import (~0.2 s) numba would add where no champion imported it already.
        start_compiler()
        # What start-up built (modules, the model) lives as long as the service: keep it out
        # of every garbage collection (a full one walked it every ~20k records with labels).
        gc.freeze()
        self.lag.start()
        log.info("consuming", extra={"topic": self.settings.topics.records,
                                     "group": self.section.group_id,
                                     "transactional_id": self.section.transactional_id})
        try:
            while not self._stopping and not (stop_when and stop_when(self)):
                self.step()
            if self.checkpoint():
                log.info("final checkpoint committed")
            else:
                log.warning("final checkpoint not committed; a restart resumes from the last one")
        except BaseException:
            self._fail()
            raise
        finally:
            self._close()
        log.info("stopped cleanly")
        return 0

    def _subscribe(self) -> None:
        self.consumer = Consumer(self._consumer_config)
        self.consumer.subscribe([self.settings.topics.records], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _rejoin(self) -> None:
        """Leave the group and join it afresh once this instance's static membership has
        expired (see ``_on_assign``): a member that rejoins in time gets the old assignment
        back whatever it subscribes to."""
        self._rejoin_due = False
        assert self.consumer is not None
        self.consumer.close()  # revokes this consumer's own partitions, checkpointing them
        self.consumer = None
        expired = time.monotonic() + self.section.session_timeout_s + 1.0
        while not self._stopping and time.monotonic() < expired:
            time.sleep(0.2)
        if not self._stopping:
            self._subscribe()
            log.info("rejoined the group", extra={"topic": self.settings.topics.records})

    def _new_producer(self) -> Producer:
        return Producer(output_producer_config(self.settings))

    def _fail(self) -> None:
        """After an error mid-batch the open transaction holds part of a batch: abort it and
        drop the banks, so closing (which revokes) commits nothing. A restart resumes from the
        last committed checkpoint."""
        self._failed = True
        self._drop_monitors()
        try:  # if Kafka cannot confirm it, the restart's init_transactions will
            self.output.abort()
        except FatalKafkaError as error:  # fenced: the error that ended the run stays first
            log.warning("abort after a failure failed", extra={"error": str(error)})

    @property
    def stop_requested(self) -> bool:
        return self._stopping

    def request_stop(self, signal_number: int | None = None, *_: Any) -> None:
        """Finish the current batch, checkpoint, close (a signal handler, or call directly)."""
        if not self._stopping:
            log.info("stop requested", extra={"signal": signal_number})
        self._stopping = True

    def step(self) -> BatchResult | None:
        """One iteration: follow the champion, consume a batch, process it, maybe checkpoint."""
        if self._rejoin_due:
            self._rejoin()
            return None
        assert self.consumer is not None
        if self.lag.layout_problem is not None:
            raise self.lag.layout_problem
        if not self._transactions_ready():
            return None
        self._follow_champion()
        wait = 0 if self._labels_behind and self._records_quiet \
            else self.section.batch_timeout_s
        waited_briefly = self._backlog
        if waited_briefly:
            wait = min(wait, BACKLOG_WAIT_S)
        messages = self.consumer.consume(self.section.batch_size, wait)
        fetched_at = time.monotonic()
        self._records_quiet = not messages
        self._backlog = len(messages) == self.section.batch_size
        self._fetched_since_checkpoint += len(messages)
        try:
            result = self._process(messages) if messages else None
            if self.label_reader is not None:
                labelled = self._process_labels()
                if labelled is not None:
                    result = result or BatchResult()
                    result.merge(labelled)
        except TransactionAborted as error:  # a produce found the transaction failed
            self._after_abort(error, time.monotonic())
            return None
        self._schedule.batch_took(time.monotonic() - fetched_at)
        if self._checkpoint_due(len(messages), waited_briefly):
            self.checkpoint()
        self.output.poll()
        self._check_outage_limit()
        return result

    def _checkpoint_due(self, fetched: int, waited_briefly: bool = False) -> bool:
        """In time for a commit within ``checkpoint_interval_s`` of the last (see
        ``CheckpointSchedule``), and at once when a burst has been read to its end: a fetch
        that waited ``batch_timeout_s`` and got nothing, after at least a batch's worth
        of records since the last checkpoint. What the burst produced, its drift events
        included, is then visible to read_committed readers without waiting out the interval.
        A steady stream, however slow, keeps to the interval: each checkpoint rewrites the
        detector state. So a fetch that waited only ``BACKLOG_WAIT_S`` (after a full one) ends
        no burst: a stream of full batches with short gaps would checkpoint at each gap."""
        if self._schedule.due(time.monotonic()):
            return True
        return fetched == 0 and not waited_briefly \
            and self._fetched_since_checkpoint >= self.section.batch_size

    def _close(self) -> None:
        """Never raises: an error on the way out must not hide the one that ended the run."""
        if self.consumer is not None:
            try:
                self.consumer.close()  # runs on_revoke, which checkpoints what is left
            except Exception as error:
                log.warning("consumer close failed", extra={"error": str(error)})
        self.output.close(self.section.shutdown_timeout_s)
        self.lag.close()
        self._drop_monitors()
        for name, reader in (("label reader", self.label_reader),
                             ("offsets reader", self._offsets_reader),
                             ("changelog reader", self._changelog_reader)):
            if reader is not None:
                try:
                    reader.close()
                except Exception as error:
                    log.warning(f"{name} close failed", extra={"error": str(error)})
        try:
            self.champion.close()
        except Exception as error:
            log.warning("champion reader close failed", extra={"error": str(error)})

    def _check_co_partitioned(self, counts: dict[str, int]) -> None:
        """At start, and while running (partitions added to one of them later): partition p
        of the labels and the changelog belongs to whoever owns records partition p."""
        topics = self.settings.topics
        check_co_partitioned(counts, topics.records, topics.labels, topics.join_changelog)

    def _check_grown_layout(self) -> None:
        """The records topic gained partitions while running: the labels and the changelog
        must have them too (else one line, exit 2). Each is counted through the client that
        uses its new partitions (the producer writes the changelog, the label reader reads
        the labels): asking refreshes that client's view, which may lag the topic's."""
        topics, timeout_s = self.settings.topics, self.settings.kafka.request_timeout_s
        assert self.label_reader is not None
        try:
            counts = {name: self.output.partitions_of(name, timeout_s)
                      for name in (topics.records, topics.join_changelog)}
            counts[topics.labels] = partition_count(self.label_reader, topics.labels, timeout_s)
        except KafkaException as error:
            raise BrokerUnavailableError(
                f"cannot count the partitions of the grown {topics.records}: "
                f"{error.args[0].str() if error.args else error}") from None
        self._check_co_partitioned(counts)
        self._co_partitions = counts[topics.records]
        log.info("the records topic has grown; its labels and changelog with it",
                 extra={"partitions": self._co_partitions})

    def _check_records_retention(self, admin: AdminClient) -> None:
        """Warn (once, at start) when the records topic forgets records before their labels
        can come: the trainer needs them. Not knowing the retention is no reason to stop."""
        topic = self.settings.topics.records
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        try:
            configs = admin.describe_configs([resource])[resource].result(
                timeout=self.settings.kafka.request_timeout_s)
            retention_ms = int(configs["retention.ms"].value)
        except (KafkaException, KeyError, ValueError, TypeError) as error:
            log.info("records retention unknown", extra={"topic": topic, "error": str(error)})
            return
        problem = retention_shortfall(retention_ms, self.section.label_horizon_days, topic)
        if problem is not None:
            log.warning(problem, extra={"topic": topic, "retention_ms": retention_ms,
                                        "event": "records_retention_short"})

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # -- processing ------------------------------------------------------------------------

    def _process(self, messages: list[Message]) -> BatchResult:
        started = time.perf_counter()
        by_partition = self._by_partition(messages)
        total = BatchResult()
        champion = self.champion.champion
        for partition, partition_messages in by_partition.items():
            monitor = self.monitors.get(partition) if partition is not None else None
            if monitor is None:
                continue  # revoked while the batch was in flight
            result = process_partition(monitor, partition_messages, champion, self.settings,
                                       self._produce)
            total.merge(result)
        metrics.BATCH_DURATION.observe(time.perf_counter() - started)
        metrics.LAST_BATCH.set(time.time())
        return total

    def _by_partition(self, messages: list[Message]) -> dict[int | None, list[Message]]:
        """Messages by partition, in order; consumer errors raised (fatal) or logged.
        Keyed by the raw partition (never None once error() is None): this loop runs per
        record, so no accessor call in it."""
        by_partition: dict[int | None, list[Message]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                self._raise_if_fatal(error)
                continue
            by_partition.setdefault(message.partition(), []).append(message)
        return by_partition

    def _process_labels(self) -> BatchResult | None:
        """Fetch what labels have arrived (without waiting) and take every due label's turn."""
        assert self.label_reader is not None
        fetched = self.label_reader.consume(self.section.batch_size, 0)
        self._labels_behind = len(fetched) == self.section.batch_size
        by_partition = self._by_partition(fetched)
        if fetched:
            metrics.LAST_LABEL.set(time.time())
        total: BatchResult | None = None
        version = self.champion.version
        for monitor in self.monitors.values():
            labels = monitor.labels
            if labels is None:
                continue
            arrived = by_partition.get(monitor.partition)
            if arrived:
                labels.enqueue(arrived)
            result = process_labels(monitor, version, self.settings, self._produce,
                                    self._records_caught_up(monitor))
            if result.dead_lettered or result.drift_events or monitor.dirty:
                total = total or BatchResult()
                total.merge(result)
            self._pace_labels(monitor.partition, len(labels.queue))
        metrics.QUEUED_LABELS.set(sum(len(m.labels.queue) for m in self.monitors.values()
                                      if m.labels is not None))
        return total

    def _records_caught_up(self, monitor: PartitionMonitor) -> bool:
        """Whether the monitor has processed every record of its partition that Kafka has
        told this consumer about (the high watermark of the last fetch, no broker call)."""
        assert self.consumer is not None
        partition = TopicPartition(monitor.topic, monitor.partition)
        try:
            _, high = self.consumer.get_watermark_offsets(partition, cached=True)
            # The position also steps over transaction markers, which no record reaches.
            position = self.consumer.position([partition])[0].offset
        except KafkaException:
            return False
        return high >= 0 and max(monitor.next_offset, position) >= high

    def _pace_labels(self, partition: int, queued: int) -> None:
        """Labels far ahead of the records wait in Kafka, not in memory."""
        assert self.label_reader is not None
        position = [TopicPartition(self.settings.topics.labels, partition)]
        if queued >= self.section.max_queued_labels and partition not in self._paused_labels:
            self.label_reader.pause(position)
            self._paused_labels.add(partition)
        elif queued < self.section.max_queued_labels // 2 and partition in self._paused_labels:
            self.label_reader.resume(position)
            self._paused_labels.discard(partition)

    def _produce(self, topic: str, value: bytes | None, key: bytes | None = None,
                 headers: Headers | None = None) -> None:
        """What processing produces; dead letters go through the writer that steps down when
        Kafka refuses one, so a dead letter can never hold its partition back."""
        if topic == self.settings.topics.dead_letters:
            self.dead_letters.produce((key, value, headers or []))
        else:
            self.output.produce(topic, value, key=key, headers=headers)

    def _raise_if_fatal(self, error: KafkaError) -> None:
        # Counted as a warning, a fenced static membership left the instance running, idle,
        # with the state directory's lock the instance replacing it needs.
        if not ends_consumer(error):
            log.warning("consume error", extra={"error": error.str()})
            return
        if not fenced_membership(error):
            raise FatalKafkaError(f"consumer error: {error.str()}")
        self._raise_fenced(f"consumer error: {error.str()}")

    def _raise_fenced(self, reason: str) -> None:
        """The group fenced this instance: by its own second join if it was rejoining after a
        loss (start afresh), else by another instance with its instance id (exit)."""
        if self._lost_at is not None and time.monotonic() - self._lost_at <= MAX_POLL_INTERVAL_S:
            raise FencedByOwnJoin(f"{reason} (while rejoining after the assignment was lost)")
        raise FatalKafkaError(f"{reason} (another instance with the same consumer.instance_id "
                              "joined the group: each levydrift consume needs its own)")

    def _follow_champion(self) -> None:
        self.champion.poll()
        if self.champion.swap_if_pending():
            for monitor in self.monitors.values():
                if monitor.model_version != self.champion.version:
                    monitor.rebaseline(self.champion.version, self.champion.reference)

    # -- Kafka outages ---------------------------------------------------------------------

    def _transactions_ready(self) -> bool:
        """False while the transactional producer is broken and Kafka does not answer; then
        nothing is consumed, since nothing could be committed. Then every partition is
        restored from what Kafka holds; a restore that fails (a coordinator still loading
        after a broker restart) is retried, within ``consumer.outage_limit_s``."""
        if self.output.broken is None and not self._restore_pending:
            return True
        if self.output.broken is not None:
            if not self.output.reset(min(RESET_TIMEOUT_S, self.section.transaction_timeout_s)):
                self._check_outage_limit()
                return False
            log.info("Kafka transactions restarted; restoring partitions from Kafka")
            self._restore_pending = True
        try:
            self._restore_assignment()
        except (KafkaException, StateRestoreError, JoinStoreError) as error:
            log.warning("restoring partitions after the outage failed; retrying",
                        extra={"error": str(error)[:300]})
            self._drop_monitors()
            self._check_outage_limit()
            return False
        self._restore_pending = False
        return True

    def _check_outage_limit(self) -> None:
        if self._stalled_since is None:
            return
        stalled = time.monotonic() - self._stalled_since
        if stalled > self.section.outage_limit_s:
            raise BrokerUnavailableError(
                f"no checkpoint committed for {stalled:.0f}s (consumer.outage_limit_s = "
                f"{self.section.outage_limit_s:g}); Kafka at "
                f"{self.settings.kafka.bootstrap_servers}: {self._stall_reason}. The last "
                "committed checkpoint stands; a restart resumes from it")

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint(self, timeout_s: float | None = None) -> bool:
        """Commit everything since the last checkpoint in one transaction (within ``timeout_s``).
        False when the transaction was aborted and the partitions were rewound."""
        started = time.monotonic()
        try:
            return self._checkpoint(started, timeout_s)
        finally:
            self._schedule.checkpoint_took(started, time.monotonic())

    def _checkpoint(self, started: float, timeout_s: float | None) -> bool:
        self._fetched_since_checkpoint = 0
        if self.output.broken is not None:
            return False  # nothing to commit until Kafka answers (see _transactions_ready)
        moved = [monitor for monitor in self.monitors.values() if monitor.dirty]
        if not moved and not self.output.open:
            self._stalled_since = None
            return True
        assert self.consumer is not None
        states = {monitor.partition: monitor.state(self.section.group_id) for monitor in moved}
        offsets = [TopicPartition(self.settings.topics.records, p, s.next_offset)
                   for p, s in states.items()]
        try:
            for monitor in moved:
                self._produce_changelog(monitor)
            parts = {partition: self._produce_state(state)
                     for partition, state in states.items()}
            self.output.commit(offsets, self.consumer, timeout_s)
        except TransactionAborted as error:
            if self._state_refusal is not None:
                raise self._state_refused(self._state_refusal) from None
            self._after_abort(error, started)
            return False
        self._stalled_since = None
        self._state_parts.update(parts)
        self.dead_letters.committed()
        self.output.poll()  # delivery reports: where each changelog partition now ends
        for monitor in moved:
            monitor.mark_committed(states[monitor.partition])
            if monitor.labels is not None:
                monitor.labels.store.commit(self._changelog_ends.get(monitor.partition))
            self.lag.committed(monitor.topic, monitor.partition,
                               states[monitor.partition].next_offset)
        self._export_gauges()
        return True

    def _produce_state(self, state: PartitionState) -> int:
        """The partition's snapshot into this transaction, in parts when it is large (many
        segments); tombstones for parts a larger snapshot before it left. Returns how many
        records it took."""
        topic = self.settings.topics.detector_state
        key = state_key(state.group, state.topic, state.partition)
        records = state_records(key, encode_state(state), self.section.state_record_max_bytes)
        try:
            for record_key, value in records:
                self.output.produce(topic, value, key=record_key,
                                    on_delivery=self._state_delivered)
        except MessageRefused as refusal:
            raise self._state_refused(refusal.error.str()) from None
        for index in range(len(records), self._state_parts.get(state.partition, 1)):
            self.output.produce(topic, None, key=part_key(key, index))
        return len(records)

    def _state_delivered(self, error: KafkaError | None, _message: Message) -> None:
        """A broker that refuses a state record (a topic ``max.message.bytes`` below
        ``consumer.state_record_max_bytes``) fails the transaction, and its replay would
        fail alike until ``outage_limit_s``: remembered, so the abort ends the run at once."""
        if error is not None and is_refusal(error):
            self._state_refusal = error.str()

    def _state_refused(self, reason: str) -> FatalKafkaError:
        return FatalKafkaError(
            f"{self.settings.topics.detector_state} refused a detector-state record "
            f"({reason}); lower consumer.state_record_max_bytes (now "
            f"{self.section.state_record_max_bytes}) below the producer's message.max.bytes "
            "and the topic's max.message.bytes")

    def _produce_changelog(self, monitor: PartitionMonitor) -> None:
        """The partition's uncommitted store changes, into this transaction."""
        if monitor.labels is None:
            return
        # The last message's delivery report says where the partition ends.
        self.output.produce_many(self.settings.topics.join_changelog, monitor.partition,
                                 monitor.labels.store.changes(self._changelog_prefix),
                                 on_last_delivery=self._changelog_delivered)

    def _changelog_delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            partition, offset = message.partition(), message.offset()
            if partition is not None and offset is not None:
                self._changelog_ends[partition] = max(self._changelog_ends.get(partition, 0),
                                                      offset + 1)

    def _after_abort(self, error: TransactionAborted, started: float) -> None:
        """The open transaction was aborted: rewind every partition to its last checkpoint,
        or, when its outcome is unknown, wait for Kafka and restore from what it holds."""
        if names_fenced_membership(str(error)):  # the offsets' group fenced this instance
            self._raise_fenced(f"transaction aborted: {error}")
        self._stalled_since = self._stalled_since or started
        self._stall_reason = str(error)
        if self.output.broken is None:
            log.warning("transaction aborted; rewinding to the last checkpoint",
                        extra={"error": str(error)})
            self._rewind()
        else:  # committed or not, only Kafka knows: restore from it once it answers
            log.warning("transaction outcome unknown until Kafka answers; waiting for it",
                        extra={"error": str(error)})
            self._drop_monitors()

    def _rewind(self) -> None:
        assert self.consumer is not None
        version = self.champion.version
        for monitor in self.monitors.values():
            monitor.rewind(self.settings.detectors)
            if monitor.model_version != version:  # a swap happened since the checkpoint
                monitor.rebaseline(version, self.champion.reference)
            try:
                self.consumer.seek(TopicPartition(monitor.topic, monitor.partition,
                                                  monitor.next_offset))
                if monitor.labels is not None and self.label_reader is not None:
                    # Re-assigning (rather than seeking) also drops labels already fetched.
                    labels = [TopicPartition(self.settings.topics.labels, monitor.partition,
                                             monitor.labels.next_offset)]
                    self.label_reader.incremental_unassign(labels)
                    self.label_reader.incremental_assign(labels)
                    self._paused_labels.discard(monitor.partition)
            except KafkaException as error:
                # Carrying on from the fetch position would skip records: start over instead.
                raise FatalKafkaError(f"cannot rewind partition {monitor.partition} after an "
                                      f"aborted transaction: {error}") from None

    def _export_gauges(self) -> None:
        metrics.PENDING_PREDICTIONS.set(sum(m.labels.store.pending_count()
                                            for m in self.monitors.values() if m.labels))
        statistics: dict[tuple[str, str], tuple[float, float]] = {}
        for monitor in self.monitors.values():
            for (signal_name, detector), (value, threshold) in monitor.statistics().items():
                current = statistics.get((signal_name, detector))
                if current is None or value > current[0]:
                    statistics[(signal_name, detector)] = (value, threshold)
        for (signal_name, detector), (value, threshold) in statistics.items():
            metrics.DETECTOR_STATISTIC.labels(signal=signal_name, detector=detector).set(value)
            metrics.DETECTOR_THRESHOLD.labels(signal=signal_name, detector=detector).set(threshold)

    # -- rebalances ------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels(kind="assigned").inc()
        started = time.perf_counter()
        ours = self._ours(partitions)
        if len(ours) < len(partitions):
            self._foreign_assignment(partitions)
        consumer.incremental_assign(self._restore(consumer, ours))
        metrics.STATE_RESTORE_DURATION.observe(time.perf_counter() - started)
        log.info("partitions assigned", extra={
            "partitions": sorted(p.partition for p in partitions),
            "topics": sorted({p.topic for p in partitions}),
            "restore_seconds": round(time.perf_counter() - started, 3)})

    def _ours(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [p for p in partitions if p.topic == self.settings.topics.records]

    def _foreign_assignment(self, partitions: list[TopicPartition]) -> None:
        """Kafka assigned partitions of a topic this consumer does not read. Seen when an
        instance restarts within the session timeout with another ``topics.records``: static
        membership hands the old assignment back and no rebalance follows, so the consumer
        would sit idle without a word. Those partitions are left alone, and the consumer
        rejoins once the old membership has expired."""
        metrics.REBALANCES.labels(kind="foreign").inc()
        log.error("Kafka assigned partitions of a topic this consumer does not read: the "
                  "group still holds the assignment of an earlier run of this instance_id "
                  "(static membership); rejoining after consumer.session_timeout_s",
                  extra={"topics": sorted({p.topic for p in partitions}
                                          - {self.settings.topics.records}),
                         "records_topic": self.settings.topics.records})
        self._rejoin_due = True

    def _restore_assignment(self) -> None:
        """After transactions restarted: every assigned partition from what Kafka holds."""
        assert self.consumer is not None
        self._drop_monitors()
        for position in self._restore(self.consumer, self.consumer.assignment()):
            try:
                self.consumer.seek(position)
            except KafkaException as error:
                raise FatalKafkaError(f"cannot resume partition {position.partition} after "
                                      f"Kafka came back: {error}") from None

    def _restore(self, consumer: Consumer,
                 partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Monitors for ``partitions`` from their committed offsets and latest snapshots;
        returns the positions to consume from."""
        timeout = self.section.restore_timeout_s
        keys = {p.partition: state_key(self.section.group_id, p.topic, p.partition)
                for p in partitions}
        latest = read_latest_states(self._reader_config, self.settings.topics.detector_state,
                                    set(keys.values()), timeout)
        committed = consumer.committed(partitions, timeout=timeout)
        for position in committed:
            low = self._first_offset(position.topic, position.partition)
            position.offset, monitor = self._resume(position, low,
                                                    latest[keys[position.partition]])
            self.monitors[position.partition] = monitor
            self.lag.committed(position.topic, position.partition, position.offset)
        return committed

    def _first_offset(self, topic: str, partition: int) -> int:
        """The partition's low watermark, from the offsets reader (see ``__init__``)."""
        if self._offsets_reader is None:
            self._offsets_reader = Consumer(self._reader_config)
        reader, timeout = self._offsets_reader, self.section.restore_timeout_s
        try:
            low, _ = reader.get_watermark_offsets(TopicPartition(topic, partition),
                                                  timeout=timeout)
        except KafkaException as error:
            if error.args[0].code() != KafkaError._UNKNOWN_PARTITION:
                raise
            # A partition added since this client last looked: refresh its view, ask again.
            reader.list_topics(topic, timeout=timeout)
            low, _ = reader.get_watermark_offsets(TopicPartition(topic, partition),
                                                  timeout=timeout)
        return int(low)

    def _resume(self, position: TopicPartition, low_watermark: int,
                stored: StoredState | None) -> tuple[int, PartitionMonitor]:
        """Where the partition resumes, and its monitor: from its snapshot when that is the
        snapshot of exactly the committed offset and passes every check, else fresh."""
        saved = restorable_state(stored, self.section.group_id, position.topic,
                                 position.partition)
        if stored is not None and stored.parts:  # so the next snapshot clears what it leaves
            self._state_parts[position.partition] = max(stored.parts) + 1
        start, usable = resume_point(position.offset, low_watermark, saved)
        if saved is not None and usable is None:
            log.warning("detector snapshot does not belong to the committed offset; "
                        "starting fresh detectors", extra={
                            "partition": position.partition,
                            "snapshot_offset": saved.next_offset,
                            "committed_offset": position.offset})
        # The version serving, never one still being probed: a snapshot of another version is
        # re-baselined against it.
        resume = partial(PartitionMonitor.resume, position.topic, position.partition, start,
                         detector_settings=self.settings.detectors,
                         champion_version=self.champion.version,
                         reference=self.champion.reference)
        try:
            monitor = resume(usable)
        except SnapshotError as error:
            assert stored is not None
            refuse_state(stored, error.reason, str(error))
            return start, self._attach_labels(resume(None), None)
        last = monitor.bank.last_position
        if usable is not None and last is not None and last >= start:
            assert stored is not None  # a bank that saw offsets it claims not to have reached
            refuse_state(stored, "inconsistent", f"the bank has seen offset {last}, the "
                                                 f"snapshot belongs to offset {start}")
            return start, self._attach_labels(resume(None), None)
        return start, self._attach_labels(monitor, usable, stored)

    def _attach_labels(self, monitor: PartitionMonitor, saved: PartitionState | None,
                       stored: StoredState | None = None) -> PartitionMonitor:
        """The partition's label join: its store brought up to date from the changelog, its
        error detectors and labels position from the snapshot (or fresh), its labels
        partition assigned from there."""
        if self.label_reader is None:
            return monitor
        partition, topics = monitor.partition, self.settings.topics
        if partition >= self._co_partitions:  # the records topic has grown since the start
            self._check_grown_layout()
        started = time.perf_counter()
        store = open_join_store(store_path(self.section.state_dir, self.section.group_id,
                                           monitor.topic, partition),
                                cache_mib=self.section.join_cache_mib)
        if self._changelog_reader is None:
            self._changelog_reader = changelog_reader(self._reader_config)
        restored = restore_from_changelog(store, self._changelog_reader, topics.join_changelog,
                                          partition, self.section.restore_timeout_s,
                                          self._changelog_prefix)
        for reason, count in restored.skipped.items():
            metrics.STATE_RESTORE_FAILURES.labels(reason=f"changelog_{reason}").inc(count)
        metrics.JOIN_RESTORE_DURATION.observe(time.perf_counter() - started)
        log.info("pending predictions restored", extra={
            "partition": partition, "replayed": restored.replayed, "wiped": restored.wiped,
            "refused": sum(restored.skipped.values()), "seconds": round(restored.seconds, 3)})
        low = self._first_offset(topics.labels, partition)
        reference = self.champion.reference
        errors, next_offset, watermark = None, low, NO_WATERMARK
        if saved is not None and saved.labels_next_offset is not None:
            try:
                errors = restore_errors(saved.error_bank, self.settings.detectors, reference)
                next_offset = max(saved.labels_next_offset, low)
                watermark = NO_WATERMARK if saved.watermark_ms is None else saved.watermark_ms
            except SnapshotError as error:
                assert stored is not None
                refuse_state(stored, error.reason, f"error detectors: {error}")
        if errors is None:
            errors = restore_errors(b"", self.settings.detectors, reference)
        elif saved is not None and saved.model_version != self.champion.version:
            errors.rebaseline(reference)
        monitor.labels = LabelJoin(partition, store, errors, next_offset,
                                   int(self.section.label_horizon_days * DAY_MS),
                                   watermark_ms=watermark,
                                   idle_release_s=self.section.label_idle_release_s)
        # The bank is as ``resume`` left it: its committed snapshot stands.
        assert monitor.committed is not None
        monitor.committed = monitor.state(None, bank=monitor.committed.bank)
        self.label_reader.incremental_assign(
            [TopicPartition(topics.labels, partition, next_offset)])
        return monitor

    def _drop_monitor(self, partition: int) -> None:
        """Let go of a partition's monitor: its store closes (uncommitted changes dropped) and
        its labels partition is unassigned."""
        monitor = self.monitors.pop(partition, None)
        if monitor is None or monitor.labels is None:
            return
        monitor.labels.store.discard()
        monitor.labels.store.close()
        self._paused_labels.discard(partition)
        if self.label_reader is not None:
            try:
                self.label_reader.incremental_unassign(
                    [TopicPartition(self.settings.topics.labels, partition)])
            except KafkaException as error:
                log.warning("label partition unassign failed", extra={
                    "partition": partition, "error": str(error)})

    def _drop_monitors(self) -> None:
        for partition in list(self.monitors):
            self._drop_monitor(partition)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Only the partitions that move are revoked (cooperative rebalancing): checkpoint
        everything, then let go of those; the others carry on."""
        metrics.REBALANCES.labels(kind="revoked").inc()
        partitions = self._ours(partitions)  # others were never taken (_foreign_assignment)
        try:
            if not self._failed:
                self.checkpoint(self.section.revoke_checkpoint_budget_s)
        finally:
            for position in partitions:
                self._drop_monitor(position.partition)
                self.lag.forget(position.topic, position.partition)
            consumer.incremental_unassign(partitions)
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Lost partitions are dropped without committing. The open transaction is aborted,
        so partitions still held (if any) rewind to their last checkpoint."""
        metrics.REBALANCES.labels(kind="lost").inc()
        self._lost_at = time.monotonic()
        partitions = self._ours(partitions)
        for position in partitions:
            self._drop_monitor(position.partition)
            self.lag.forget(position.topic, position.partition)
        consumer.incremental_unassign(partitions)
        if self.output.broken is not None:  # the others' uncommitted work is in doubt too
            self._drop_monitors()
        elif self.output.open:
            self.output.abort()
            if self.monitors:
                self._rewind()
        log.warning("partitions lost; dropped without committing",
                    extra={"partitions": [p.partition for p in partitions]})

