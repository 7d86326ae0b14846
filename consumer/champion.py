"""The champion model: follow ``levy.model-versions`` and hot-swap between batches.

The event says which version to serve; the registry says what its bytes must be. A version is
served only from a directory under the configured registry root, only when its manifest's
SHA-256 matches both the artifact and the event, only with the skops allow-list, and only
after it passed ``levydrift.model_checks`` in a child process (``levydrift.model_probe``) and
then here: a model that would crash, hang or fail to predict is refused, logged and counted
(``levydrift_consumer_model_load_failures_total{reason}``) and never served. An artifact that
passed and served in this environment before (``ProbedVersions``) skips the child; the checks
here still run.

What serves is the newest champion event (promoted or rolled back) whose model passes. On start
the events are tried newest first, skipping refused ones and versions a later rollback moved
away from; at run time a newer event is probed off the loop and swapped in once it passes,
while the current champion keeps serving. A champion whose ``predict`` fails at run time
scores that batch without a model, is dropped, and the newest other version that passes takes
over. A file that is merely missing or unreadable (a volume still mounting) is retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, Message

from consumer import metrics
from detectors.reference import Reference
from levydrift.artifacts import (
    import_model_loading,
    load_reference_sample,
    load_version_dir,
    verify_version_dir,
    with_training_composition,
)
from levydrift.errors import ArtifactError, BrokerUnavailableError
from levydrift.kafka import read_to_end
from levydrift.model_probe import IsolatedProbe, ProbedVersions, SpareProbe
from levydrift.signals import ModelScorer
from schemas.errors import RecordRejected
from schemas.model_version import ModelVersionEvent

log = logging.getLogger(__name__)

CHAMPION_DECISIONS = {"promoted", "rolled_back"}
RETRY_INTERVAL_S = 10.0
MAX_HISTORY = 64  # champion events remembered to fall back on


class Champion(ModelScorer):
    """The served model. A ``predict`` that raises, or returns anything but one finite levy
    per record, scores the batch as no model (NaN) and marks the champion failed, for the
    tracker to replace it: one bad model never stops the consumer."""

    version: int  # always a registry version, unlike a ModelScorer's

    def __init__(self, model: Any, version: int) -> None:
        super().__init__(model, version)
        self.failure: str | None = None

    def prepare(self) -> None:
        """Build the column scorer before serving; raises ``ArtifactError`` if that fails."""
        try:
            super().prepare()
        except Exception as error:  # noqa: BLE001 - whatever a model raises, it is refused
            raise ArtifactError(f"model version {self.version}: building its scorer failed: "
                                f"{type(error).__name__}: {error}", "probe_failed") from None

    def predict(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        count = len(next(iter(columns.values())))
        if self.failure is None:
            try:
                predicted = super().predict(columns)
            except Exception as error:  # noqa: BLE001 - whatever a model raises, it fails
                self.failure = f"{type(error).__name__}: {error}"
            else:
                if predicted.shape == (count,) and np.isfinite(predicted).all():
                    return predicted
                self.failure = f"predicted {predicted.shape} values for {count} records, " \
                               "not one finite levy each"
            metrics.PREDICTION_FAILURES.inc()
            log.error("champion failed to predict; this batch is scored without a model",
                      extra={"version": self.version, "error": self.failure})
        return np.full(count, np.nan)


class ChampionTracker:
    """Reads the model-version topic with its own unassigned-group consumer (read committed)."""

    def __init__(self, consumer_config: dict[str, Any], topic: str, model_name: str,
                 registry_root: str | Path, signals: Collection[str] = (),
                 clock: Callable[[], float] = time.monotonic,
                 spare_probe: SpareProbe | None = None,
                 probed: ProbedVersions | None = None) -> None:
        """``probed``: the artifacts that may skip the child-process probe (None: none)."""
        self._consumer = Consumer({**consumer_config, "enable.partition.eof": False})
        self._topic = topic
        self._model_name = model_name
        self._registry_root = Path(registry_root).resolve()
        self._clock = clock
        self._signals = set(signals)
        self.champion: Champion | None = None
        # The champion's holdout statistics for the watched signals, when its version has them.
        self.reference: Reference | None = None
        self._history: list[ModelVersionEvent] = []  # champion events, oldest first
        self._refused: set[int] = set()  # versions refused for good, until announced again
        self._pending: ModelVersionEvent | None = None  # newer than the champion, not yet in
        self._probe: IsolatedProbe | None = None  # the pending version's child-process probe
        self._retry_at = 0.0
        # The start's first probe runs in it: a child already importing the model libraries.
        self._spare = spare_probe
        self._probed = probed

    @property
    def version(self) -> int | None:
        """The version being served: the one snapshots and drift events name."""
        return self.champion.version if self.champion else None

    def start(self, timeout_s: float) -> None:
        """Assign every partition from the start, read to the end, and serve the newest
        version that passes, so the first batch is scored with it."""
        try:
            for message in read_to_end(self._consumer, self._topic, timeout_s):
                self._take(message)
        except BrokerUnavailableError as error:  # serve what was read; polls read the rest
            log.warning("model-version topic not read to its end at start",
                        extra={"error": str(error)})
        self._pending = None
        try:
            self._serve_newest()
        finally:
            self._close_spare()

    def poll(self) -> None:
        """Non-blocking: note the newest champion event, if any arrived."""
        self._read(0)

    def swap_if_pending(self) -> bool:
        """Between batches: replace a champion that failed to predict, or swap in a newer
        version once its probe passed (never waiting for the probe). True when the champion
        changed."""
        if self.champion is not None and self.champion.failure is not None:
            self._replace_failed_champion()
            return True
        event = self._pending
        if event is None or self._clock() < self._retry_at:
            return False
        if self.champion and self.champion.version == event.version:
            self._pending = None
            return False
        if self._probe is None:
            try:
                self._probe = self._start_probe(event)
            except ArtifactError as error:
                self._refuse(event, error)
                return False
            if self._probe is not None:
                return False  # else it served here before: loaded at once
        elif not self._probe.finished():
            return False
        probe, self._probe = self._probe, None
        try:
            if probe is not None:
                probe.result()
            champion, reference = self._load(event)
        except ArtifactError as error:
            self._refuse(event, error)
            return False
        self._serve(event, champion, reference, probe)
        return True

    def close(self) -> None:
        self._cancel_probe()
        self._close_spare()
        self._consumer.close()

    def _close_spare(self) -> None:
        if self._spare is not None:
            self._spare.close()
            self._spare = None

    # -- choosing and loading ---------------------------------------------------------------

    def _serve_newest(self) -> None:
        """Serve the newest champion event whose model passes (blocking on each probe), or
        no model. A newer version that is only missing for now stays pending, for a retry."""
        for event in self._candidates():
            try:
                probe = self._start_probe(event, self._spare)
                if probe is None:  # served here before: no child to wait for
                    self._close_spare()
                import_model_loading()  # while the child probes: ~1 s off the start
                if probe is not None:
                    probe.result()
                champion, reference = self._load(event)
            except ArtifactError as error:
                if error.transient and self._pending is None:
                    self._pending = event
                self._refuse(event, error)
                continue
            self._serve(event, champion, reference, probe)
            return
        self.champion, self.reference = None, None
        metrics.CHAMPION_VERSION.labels(model=self._model_name).set(0)
        log.warning("no model version passes; scoring without a model",
                    extra={"model": self._model_name, "announced": len(self._history)})

    def _candidates(self) -> Iterator[ModelVersionEvent]:
        """Champion events newest first, once per version, less refused versions and those a
        later rollback moved away from."""
        seen: set[int] = set()
        rolled_back_from: set[int] = set()
        for event in reversed(self._history):
            usable = not ({event.version} & (seen | self._refused | rolled_back_from))
            seen.add(event.version)
            if event.decision == "rolled_back" and event.previous_version is not None:
                rolled_back_from.add(event.previous_version)
            if usable:
                yield event

    def _replace_failed_champion(self) -> None:
        failed = self.champion
        assert failed is not None
        self._refused.add(failed.version)
        log.error("champion dropped after failing to predict", extra={
            "model": self._model_name, "version": failed.version, "error": failed.failure})
        metrics.MODEL_LOAD_FAILURES.labels(reason="predict_failed").inc()
        self._cancel_probe()
        self._pending = None
        self._serve_newest()

    def _serve(self, event: ModelVersionEvent, champion: Champion, reference: Reference | None,
               probe: IsolatedProbe | None) -> None:
        """Serve a loaded and prepared ``champion``; ``probe``: its child's, None when it
        skipped the child (see ``_start_probe``)."""
        if self._pending is event:
            self._pending = None
        self.champion = champion
        self.reference = reference
        if self._probed is not None:
            self._probed.grant(event.artifact_sha256, f"{event.model_name}/{event.version}")
        metrics.CHAMPION_VERSION.labels(model=event.model_name).set(event.version)
        log.info("champion swapped", extra={
            "model": event.model_name, "version": event.version, "decision": event.decision,
            "probe": "child" if probe else "served here before",
            "probe_seconds": round(probe.seconds or 0.0, 3) if probe else 0.0})

    def _refuse(self, event: ModelVersionEvent, error: ArtifactError) -> None:
        metrics.MODEL_LOAD_FAILURES.labels(reason=error.reason).inc()
        if error.transient:
            self._retry_at = self._clock() + RETRY_INTERVAL_S
        else:
            self._refused.add(event.version)
            if self._pending is event:
                self._pending = None
        log.error("model version refused; it does not serve", extra={
            "model": event.model_name, "version": event.version, "reason": error.reason,
            "error": str(error), "retrying": error.transient, "serving": self.version})

    def _start_probe(self, event: ModelVersionEvent,
                     spare: SpareProbe | None = None) -> IsolatedProbe | None:
        """The child-process probe of the event's version (in ``spare``'s child while it has
        not probed another), once the checks that need no unpacking (registry root, hashes,
        types) passed here; None when the artifact passed and served in this environment
        before. Its record is then withdrawn until it serves again (``_serve``), so a crash
        while loading it here is followed by a probe in a child."""
        version_dir = self._version_dir(event)
        verify_version_dir(version_dir, event.artifact_sha256)
        probed, sha256 = self._probed, event.artifact_sha256
        if probed is not None and probed.trusts(sha256) and probed.withdraw(sha256):
            return None
        return IsolatedProbe(version_dir, event.artifact_sha256, spare=spare)

    def _version_dir(self, event: ModelVersionEvent) -> Path:
        artifact = Path(event.artifact_uri).resolve()
        if self._registry_root not in artifact.parents:
            raise ArtifactError(
                f"model {event.model_name}/{event.version}: artifact {artifact} is outside the "
                f"registry root {self._registry_root} (registry.root)",
                "outside_registry")
        return artifact.parent

    def _load(self, event: ModelVersionEvent) -> tuple[Champion, Reference | None]:
        """The event's model, checked against its version directory's manifest, with its
        scorer built, and the detector reference from the version's holdout sample (None when
        it has none)."""
        version_dir = self._version_dir(event)
        champion = Champion(load_version_dir(version_dir, expected_sha256=event.artifact_sha256),
                            event.version)
        champion.prepare()
        return champion, self._reference(version_dir, event)

    def _reference(self, version_dir: Path, event: ModelVersionEvent) -> Reference | None:
        sample = load_reference_sample(version_dir)
        if sample is None:
            return None
        columns = {name: sample[name].to_numpy() for name in sample.columns
                   if name in self._signals}
        try:  # the rows stay with it: the districts' references are learned from them too
            reference = replace(Reference.from_columns(columns), rows=columns)
        except ValueError as error:  # too few holdout records to describe a signal
            log.warning("holdout sample too small for a reference; detectors will warm up",
                        extra={"model": event.model_name, "version": event.version,
                               "error": str(error)})
            return None
        return with_training_composition(reference, version_dir)

    def _cancel_probe(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    # -- reading the topic ------------------------------------------------------------------

    def _read(self, timeout_s: float) -> None:
        for message in self._consumer.consume(100, timeout_s):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("model-version read error", extra={"error": error.str()})
                continue
            self._take(message)

    def _take(self, message: Message) -> None:
        """Note a champion announcement for this model; skip anything else."""
        if message.value() is None:
            return
        try:
            event = ModelVersionEvent.from_bytes(message.value())
        except RecordRejected as rejected:
            metrics.MODEL_LOAD_FAILURES.labels(reason="malformed_event").inc()
            log.error("unreadable model-version event; skipped", extra={
                "partition": message.partition(), "offset": message.offset(),
                "reason": str(rejected)})
            return
        if event.model_name == self._model_name and event.decision in CHAMPION_DECISIONS:
            self._announce(event)

    def _announce(self, event: ModelVersionEvent) -> None:
        self._history = [*self._history, event][-MAX_HISTORY:]
        self._refused.discard(event.version)  # announced again: worth another try
        self._cancel_probe()
        self._pending = event
        self._retry_at = 0.0
