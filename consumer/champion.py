"""The champion model: follow ``levy.model-versions`` and hot-swap between batches.

The event says which version to serve; the registry says what its bytes must be. A version is
loaded only from a directory under the configured registry root, only when its manifest's
SHA-256 matches both the artifact and the event, and only with the skops allow-list
(``levydrift.artifacts``). A refused artifact is logged and counted and the previous champion
keeps serving; a file that is merely missing or unreadable (a volume still mounting) is retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from consumer import metrics
from detectors.reference import Reference
from levydrift.artifacts import load_reference_sample, load_version_dir
from levydrift.errors import ArtifactError
from levydrift.signals import ModelScorer
from schemas.errors import RecordRejected
from schemas.model_version import ModelVersionEvent

log = logging.getLogger(__name__)

CHAMPION_DECISIONS = {"promoted", "rolled_back"}
RETRY_INTERVAL_S = 10.0

# The champion is a model scorer that knows its version.
Champion = ModelScorer


class ChampionTracker:
    """Reads the model-version topic with its own unassigned-group consumer (read committed)."""

    def __init__(self, consumer_config: dict[str, Any], topic: str, model_name: str,
                 registry_root: str | Path, signals: Collection[str] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._consumer = Consumer({**consumer_config, "enable.partition.eof": False})
        self._topic = topic
        self._model_name = model_name
        self._registry_root = Path(registry_root).resolve()
        self._clock = clock
        self._signals = set(signals)
        self.champion: Champion | None = None
        # The champion's holdout statistics for the watched signals, when its version has them.
        self.reference: Reference | None = None
        self._pending: ModelVersionEvent | None = None
        self._retry_at = 0.0

    @property
    def version(self) -> int | None:
        """The version being served."""
        return self.champion.version if self.champion else None

    @property
    def expected_version(self) -> int | None:
        """The newest champion the topic names, served or still waiting to load."""
        return self._pending.version if self._pending else self.version

    @property
    def expected_reference(self) -> Reference | None:
        """The reference that goes with ``expected_version`` (None while it waits to load)."""
        return None if self._pending else self.reference

    def start(self, timeout_s: float) -> None:
        """Assign every partition from the start and read to the end, so the first batch is
        scored with the current champion."""
        metadata = self._consumer.list_topics(self._topic, timeout=timeout_s).topics[self._topic]
        partitions = [TopicPartition(self._topic, p, -2) for p in metadata.partitions]
        ends = {p.partition: self._consumer.get_watermark_offsets(p, timeout=timeout_s)[1]
                for p in partitions}
        self._consumer.assign(partitions)
        deadline = time.monotonic() + timeout_s
        while any(end > 0 for end in ends.values()) and time.monotonic() < deadline:
            self._read(0.2)
            for position in self._consumer.position(partitions):
                if position.offset >= ends[position.partition]:
                    ends[position.partition] = 0
        self.swap_if_pending()

    def poll(self) -> None:
        """Non-blocking: note the newest champion event, if any arrived."""
        self._read(0)

    def swap_if_pending(self) -> bool:
        """Load the pending champion, if any (and not waiting to retry); True when the champion
        changed."""
        event = self._pending
        if event is None or self._clock() < self._retry_at:
            return False
        if self.champion and self.champion.version == event.version:
            self._pending = None
            return False
        try:
            model, reference = self._load(event)
        except ArtifactError as error:
            metrics.MODEL_LOAD_FAILURES.labels(reason=error.reason).inc()
            if error.transient:
                self._retry_at = self._clock() + RETRY_INTERVAL_S
            else:
                self._pending = None
            log.error("cannot load model version; the previous champion keeps serving",
                      extra={"model": event.model_name, "version": event.version,
                             "error": str(error), "retrying": error.transient})
            return False
        self._pending = None
        self.champion = Champion(model, event.version)
        self.reference = reference
        metrics.CHAMPION_VERSION.labels(model=event.model_name).set(event.version)
        log.info("champion swapped", extra={"model": event.model_name, "version": event.version,
                                            "decision": event.decision})
        return True

    def close(self) -> None:
        self._consumer.close()

    def _load(self, event: ModelVersionEvent) -> tuple[Any, Reference | None]:
        """The event's artifact, checked against its version directory's manifest, and the
        detector reference from the version's holdout sample (None when it has none)."""
        artifact = Path(event.artifact_uri).resolve()
        if self._registry_root not in artifact.parents:
            raise ArtifactError(
                f"model {event.model_name}/{event.version}: artifact {artifact} is outside the "
                f"registry root {self._registry_root} (consumer.registry_root)",
                "outside_registry")
        model = load_version_dir(artifact.parent, expected_sha256=event.artifact_sha256)
        return model, self._reference(artifact.parent, event)

    def _reference(self, version_dir: Path, event: ModelVersionEvent) -> Reference | None:
        sample = load_reference_sample(version_dir)
        if sample is None:
            return None
        columns = {name: sample[name].to_numpy() for name in sample.columns
                   if name in self._signals}
        try:
            return Reference.from_columns(columns)
        except ValueError as error:  # too few holdout records to describe a signal
            log.warning("holdout sample too small for a reference; detectors will warm up",
                        extra={"model": event.model_name, "version": event.version,
                               "error": str(error)})
            return None

    def _read(self, timeout_s: float) -> None:
        for message in self._consumer.consume(100, timeout_s):
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("model-version read error", extra={"error": message.error().str()})
                continue
            if message.value() is None:
                continue
            try:
                event = ModelVersionEvent.from_bytes(message.value())
            except RecordRejected as rejected:
                log.error("unreadable model-version event", extra={
                    "offset": message.offset(), "reason": str(rejected)})
                continue
            if event.model_name == self._model_name and event.decision in CHAMPION_DECISIONS:
                self._pending = event
                self._retry_at = 0.0
