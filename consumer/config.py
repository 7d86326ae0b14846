"""Settings of ``levydrift consume``: one object, loaded from the TOML file and LEVYDRIFT_*."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from detectors.config import DetectorSettings
from levydrift.errors import ConfigError
from levydrift.settings import (
    KafkaSettings,
    LoggingSettings,
    MetricsSettings,
    RegistrySettings,
    TopicSettings,
    load,
)


@dataclass(frozen=True)
class ConsumerSection:
    """The ``[consumer]`` table."""

    group_id: str = "levy-drift-monitor"
    # Stable per instance: after a crash, the restarted instance fences and aborts its
    # predecessor's open transaction at once instead of waiting for the transaction timeout.
    instance_id: str = field(default_factory=socket.gethostname)
    model_name: str = "levy-impact"
    # Champion artifacts are loaded only from below this directory (the trainer's registry).
    batch_size: int = 2000
    batch_timeout_s: float = 0.5  # the longest a fetch waits for a batch (20 ms after a full one)
    checkpoint_interval_s: float = 2.0
    revoke_checkpoint_budget_s: float = 10.0
    # Above the transaction timeout: a dead member's open transaction holds the state topic's
    # stable offset back until the broker aborts it.
    restore_timeout_s: float = 90.0
    transaction_timeout_s: float = 60.0
    shutdown_timeout_s: float = 10.0
    # How long the consumer waits for Kafka without committing a checkpoint (broker outage,
    # coordinator moves) before it exits with code 3; a restart resumes from the last one.
    outage_limit_s: float = 600.0
    # A crashed member is replaced after this long; with static membership (instance_id) a
    # restarted instance takes its place at once.
    session_timeout_s: float = 10.0
    # A record dated further ahead of this machine's clock goes to the dead-letter topic: one
    # mistyped year would move the partition's event-time watermark years ahead.
    max_event_time_ahead_s: float = 86_400.0
    # Late labels (levy.labels): join each actual levy with the prediction made for its record.
    join_labels: bool = True
    # A prediction waits this long (event time) for its label, then expires: a levy cycle and
    # a half, since bills go out up to a year after assessment.
    label_horizon_days: float = 548.0
    # Where each partition's pending predictions live on disk (RocksDB); the changelog topic
    # is the source of truth, so losing this directory costs only a longer restore.
    state_dir: str = ".levydrift-state"
    # A model artifact that passed its child-process probe and then served here is remembered
    # in state_dir (for this Python, these installed packages and this levydrift code); serving
    # it again (a restart, a rollback) skips the child, ~1-2 s. The checks in the consumer
    # itself still run. false: every version is probed in a child every time.
    remember_model_probes: bool = True
    # 0: RocksDB keeps each store's filter and index blocks in memory, ~1.5 MiB per million
    # pending predictions (a partition's backlog grows with the horizon). N: they are
    # partitioned and held in a block cache of N MiB per partition's store, so memory stays
    # bounded, for ~13 % of the steady rate. Worth it past ~20 M pending per partition.
    join_cache_mib: int = 0
    # Labels fetched ahead of their turn (see consumer/labels.py) are held in memory up to this
    # many per partition; the label fetch for that partition pauses beyond it.
    max_queued_labels: int = 50_000
    # A partition whose records have been quiet this long (and are caught up) lets its waiting
    # labels go ahead: they are not waiting for records that will come. A record its sender
    # holds back longer than this finds its label already counted unmatched.
    label_idle_release_s: float = 5.0
    # A partition's detector state above this many bytes is written as several records (see
    # consumer/state.py): at most Kafka's record limits (the producer's message.max.bytes,
    # 1,000,000; the topic's max.message.bytes, 1,048,588), less room for the batch.
    state_record_max_bytes: int = 900_000

    def validate(self) -> None:
        if not self.group_id or not self.instance_id or not self.model_name:
            raise ConfigError("consumer.group_id, instance_id and model_name must not be empty")
        if not 1 <= self.batch_size <= 100_000:
            raise ConfigError(f"consumer.batch_size must be 1..100000, got {self.batch_size}")
        for name in ("batch_timeout_s", "checkpoint_interval_s", "revoke_checkpoint_budget_s",
                     "restore_timeout_s", "transaction_timeout_s", "shutdown_timeout_s",
                     "session_timeout_s", "outage_limit_s", "label_idle_release_s",
                     "max_event_time_ahead_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"consumer.{name} must be > 0")
        if self.label_horizon_days <= 0:
            raise ConfigError("consumer.label_horizon_days must be > 0")
        if not self.state_dir:
            raise ConfigError("consumer.state_dir must not be empty")
        if self.join_cache_mib < 0:
            raise ConfigError("consumer.join_cache_mib must be >= 0 (0: no bound), got "
                              f"{self.join_cache_mib}")
        if self.max_queued_labels < 1:
            raise ConfigError("consumer.max_queued_labels must be >= 1")
        if not 16_384 <= self.state_record_max_bytes <= 1_000_000:
            raise ConfigError("consumer.state_record_max_bytes must be 16384..1000000 (below "
                              "Kafka's record limits), got "
                              f"{self.state_record_max_bytes}")
        if self.restore_timeout_s <= self.transaction_timeout_s:
            raise ConfigError("consumer.restore_timeout_s must exceed "
                              "consumer.transaction_timeout_s, or a restore can give up while a "
                              "dead member's transaction is still open")
        if self.checkpoint_interval_s >= self.transaction_timeout_s:
            raise ConfigError("consumer.checkpoint_interval_s must be below "
                              "consumer.transaction_timeout_s, or transactions time out")

    @property
    def transactional_id(self) -> str:
        return f"{self.group_id}.{self.instance_id}"


@dataclass(frozen=True)
class ConsumerSettings:
    """Everything ``levydrift consume`` reads."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    consumer: ConsumerSection = field(default_factory=ConsumerSection)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    def validate(self) -> None:
        # lazy: the record schema loads numpy, which building the CLI parser must not
        from levydrift.signals import check_detector_fields

        check_detector_fields(self.detectors)


def load_consumer_settings(path: str | None) -> ConsumerSettings:
    """Load and validate; any problem is a one-line ``ConfigError``."""
    return load(ConsumerSettings, path)
