"""What the fleet hears of the registry: one model-version event per champion move, exactly once.

A champion move (a trained version the gate promoted, ``registry promote``, ``registry
rollback``) is one line in the registry's alias history; a rejected version is announced too.
Whoever moves the champion announces the move, holding the registry lock from the move to the
Kafka commit, so nobody else can announce it in between. A crash in between leaves a move the
fleet never heard of; ``reconcile`` repairs that on the next start of the trainer worker and
before every registry command that moves the champion: it compares the registry's last champion
move with the newest champion event on ``levy.model-versions`` (the topic is the truth about
what was announced) and announces the move when they differ. It also marks versions whose
event is on the topic as published (a crash after the commit, before the mark).

The events are built from the registry's files alone (``move_event``), so an announcement made
late is the same event the crashed process would have sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, Message

from levydrift.kafka import consumer_config, read_to_end
from levydrift.settings import KafkaSettings
from schemas.errors import RecordRejected
from schemas.model_version import ModelVersionEvent
from trainer.events import registration_event, version_event
from trainer.registry import ModelRegistry, VersionInfo

log = logging.getLogger(__name__)

CHAMPION_DECISIONS = ("promoted", "rolled_back")
Publish = Callable[[ModelVersionEvent], None]


def move_event(registry: ModelRegistry, name: str, move: dict) -> ModelVersionEvent:
    """The announcement of one champion move (an alias-history entry)."""
    return version_event(registry.get(name, int(move["version"])), move["action"],
                         move["previous_version"], created_at=move["time"])


def registration_announcement(registry: ModelRegistry, info: VersionInfo
                              ) -> ModelVersionEvent | None:
    """What a registered version owes the fleet: its rejection, or the move that made it
    champion; None for a promoted version that is not the champion (its promotion was rolled
    back, or never happened because the champion changed after the gate)."""
    if info.manifest.get("status") != "promoted":
        return registration_event(info)
    move = registry.last_champion_move(info.name)
    if move is None or int(move["version"]) != info.version:
        return None
    return move_event(registry, info.name, move)


def reconcile(registry: ModelRegistry, name: str,
              read_topic: Callable[[], Sequence[ModelVersionEvent]],
              publish: Publish, announcing: int | None = None) -> ModelVersionEvent | None:
    """Make what the fleet was told agree with the registry; returns the event it announced,
    if one was missing. ``read_topic`` gives the model's events on the topic, oldest first; it
    is read under the registry lock, so no other announcer is half-way through. Re-entrant:
    call it inside a move's lock to settle what came before. ``announcing``: the version the
    caller has just made champion and announces next, not a move a crash kept back."""
    with registry.locked(name):
        on_topic = read_topic()
        announced = {(event.version, event.decision) for event in on_topic}
        for version in registry.versions(name):
            info = registry.get(name, version)
            if not info.published and (version, info.manifest.get("status")) in announced:
                registry.mark_published(name, version, {"reconciled": True})
        move = registry.last_champion_move(name)
        if move is None:
            return None
        champions = [event for event in on_topic if event.decision in CHAMPION_DECISIONS]
        newest = champions[-1] if champions else None
        if newest is not None and (newest.version, newest.decision) == (move["version"],
                                                                         move["action"]):
            return None
        if announcing is not None and int(move["version"]) == announcing:
            return None
        event = move_event(registry, name, move)
        publish(event)
        if move["action"] == "promoted":
            registry.mark_published(name, event.version, {"reconciled": True,
                                                          "decision": event.decision})
        log.warning("announced a champion move a crash had kept from the fleet", extra={
            "model": name, "version": event.version, "decision": event.decision,
            "moved_at": move["time"]})
        return event


def read_model_events(kafka: KafkaSettings, topic: str, name: str) -> list[ModelVersionEvent]:
    """Every committed model-version event of model ``name`` on ``topic``, oldest first (per
    partition; a model's champion events share one partition, its key). Unreadable events are
    skipped with a warning."""
    reader = Consumer(consumer_config(kafka, f"levy-trainer-reconcile-{time.time_ns()}",
                                      **{"enable.partition.eof": False}))
    events = []
    try:
        for message in read_to_end(reader, topic, kafka.request_timeout_s * 3):
            event = _decode(message)
            if event is not None and event.model_name == name:
                events.append(event)
    finally:
        reader.close()
    return events


def _decode(message: Message) -> ModelVersionEvent | None:
    if message.value() is None:
        return None
    try:
        return ModelVersionEvent.from_bytes(message.value())
    except RecordRejected as rejected:
        log.warning("unreadable model-version event skipped", extra={
            "partition": message.partition(), "offset": message.offset(),
            "reason": str(rejected)})
        return None
