"""Settings of the trainer worker, ``levydrift train`` and ``levydrift registry``."""

from __future__ import annotations

from dataclasses import dataclass, field

from detectors.config import DetectorSettings
from levydrift.errors import ConfigError
from levydrift.settings import (
    KafkaSettings,
    LoggingSettings,
    MetricsSettings,
    RegistrySettings,
    TopicSettings,
)
from trainer.evaluation import SLICE_TOLERANCE


@dataclass(frozen=True)
class TrainerSection:
    """The ``[trainer]`` table."""

    group_id: str = "levy-trainer"
    # One transactional id per model: a restarted worker fences its predecessor (zombie).
    transactional_id_prefix: str = "levy-trainer"
    model_name: str = "levy-impact"
    # Labelled records to train on (most recent first), and how far back to look for them.
    window_records: int = 200_000
    max_scan_records: int = 5_000_000
    min_training_records: int = 200
    holdout_fraction: float = 0.2
    # Promote only when the candidate's MAE is this fraction better than the champion's.
    gate_margin: float = 0.01
    # ... and not worse than the champion by more than this fraction on any county with 200
    # holdout rows (a county's change must not be fixed at the other counties' expense).
    slice_tolerance: float = SLICE_TOLERANCE
    max_iter: int = 100
    # Drift events that arrive together (within this linger) form one retrain (one episode).
    episode_linger_s: float = 2.0
    # A drift event detected within this many seconds of a retrain's trigger is the same episode.
    episode_gap_s: float = 300.0
    poll_timeout_s: float = 1.0
    # Training blocks polling; the group must not evict the worker meanwhile.
    max_poll_interval_s: float = 1800.0
    # How long the worker waits out a Kafka outage (retrying) before it exits with an error.
    broker_outage_limit_s: float = 300.0
    code_version: str = ""  # default: the package version and git commit, when known

    def validate(self) -> None:
        if not self.model_name or len(self.model_name) > 128 or "/" in self.model_name:
            raise ConfigError(f"trainer.model_name {self.model_name!r} is not a valid name")
        if not self.group_id:
            raise ConfigError("trainer.group_id is empty")
        if self.window_records < 1 or self.max_scan_records < self.window_records:
            raise ConfigError("trainer.window_records must be >= 1 and <= "
                              "trainer.max_scan_records")
        if not 0.0 < self.holdout_fraction < 0.9:
            raise ConfigError(f"trainer.holdout_fraction must be within (0, 0.9), "
                              f"got {self.holdout_fraction}")
        if not 0.0 <= self.gate_margin < 1.0:
            raise ConfigError(f"trainer.gate_margin must be within [0, 1), got {self.gate_margin}")
        if not 0.0 <= self.slice_tolerance <= 10.0:
            raise ConfigError(f"trainer.slice_tolerance must be within [0, 10], got "
                              f"{self.slice_tolerance}")
        if self.min_training_records < 10:
            raise ConfigError("trainer.min_training_records must be >= 10")
        if self.max_iter < 1:
            raise ConfigError("trainer.max_iter must be >= 1")
        if self.episode_linger_s < 0 or self.episode_gap_s < 0 or self.poll_timeout_s <= 0:
            raise ConfigError("trainer.episode_linger_s and episode_gap_s must be >= 0, "
                              "poll_timeout_s > 0")
        if self.max_poll_interval_s < 10:
            raise ConfigError("trainer.max_poll_interval_s must be >= 10")
        if self.broker_outage_limit_s <= 0:
            raise ConfigError(f"trainer.broker_outage_limit_s must be > 0, got "
                              f"{self.broker_outage_limit_s}")


@dataclass(frozen=True)
class TrainerSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    # Shares [metrics] with the consumer: on one host give the trainer LEVYDRIFT_METRICS_PORT=9109.
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    # The consumer's [detectors]: a version keeps its window's mix over whole windows of
    # detectors.composition_window_s (trainer/training.py, ``training_composition``).
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
