"""The champion model: follow ``levy.model-versions`` and hot-swap between batches.

Only a version whose artifact hashes to the SHA-256 in its event and passes the skops allow-list
is ever loaded (``levydrift.artifacts``). A refused artifact is logged and counted; the previous
champion keeps serving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from consumer import metrics
from levydrift.artifacts import load_verified_model
from levydrift.errors import ArtifactError
from levydrift.signals import ModelScorer
from schemas.errors import RecordRejected
from schemas.model_version import ModelVersionEvent

log = logging.getLogger(__name__)

CHAMPION_DECISIONS = {"promoted", "rolled_back"}


# The champion is a model scorer that knows its version.
Champion = ModelScorer


class ChampionTracker:
    """Reads the model-version topic with its own unassigned-group consumer (read committed)."""

    def __init__(self, consumer_config: dict[str, Any], topic: str, model_name: str,
                 loader: Callable[[str, str, str], Any] = load_verified_model) -> None:
        self._consumer = Consumer({**consumer_config, "enable.partition.eof": False})
        self._topic = topic
        self._model_name = model_name
        self._loader = loader
        self.champion: Champion | None = None
        self._pending: ModelVersionEvent | None = None

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
        """Load the pending champion, if any; True when the champion changed."""
        event, self._pending = self._pending, None
        if event is None or (self.champion and self.champion.version == event.version):
            return False
        label = f"{event.model_name}/{event.version}"
        try:
            model = self._loader(event.artifact_uri, event.artifact_sha256, label)
        except ArtifactError as error:
            metrics.MODEL_LOAD_FAILURES.labels(reason=getattr(error, "reason", "refused")).inc()
            log.error("refused model version; the previous champion keeps serving",
                      extra={"model": event.model_name, "version": event.version,
                             "error": str(error)})
            return False
        self.champion = Champion(model, event.version)
        metrics.CHAMPION_VERSION.labels(model=event.model_name).set(event.version)
        log.info("champion swapped", extra={"model": event.model_name, "version": event.version,
                                            "decision": event.decision})
        return True

    def close(self) -> None:
        self._consumer.close()

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
