"""A crash anywhere between registering a version and announcing it: the registry's files are
enough to finish the registration and announce it exactly once, or not at all."""

from __future__ import annotations

from schemas.model_version import ModelVersionEvent
from tests.trainer.test_registry import NAME, _candidate, _register
from trainer.announcements import move_event, reconcile, registration_announcement
from trainer.registry import ALIASES_NAME, ModelRegistry


def crashed_after_rename(registry: ModelRegistry, event_id: str) -> int:
    """A version written complete, gated against the champion, the rest cut off by a crash."""
    candidate = _candidate(events=[event_id], champion_version=registry.champion(NAME))
    return registry.register(NAME, candidate, finish=False).version


def test_a_registration_cut_after_the_rename_is_finished_once(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    _register(registry, events=["e1"])
    version = crashed_after_rename(registry, "e2")
    assert registry.champion(NAME) == 1
    assert [row["version"] for row in registry.training_history(NAME)] == ["1"]

    assert registry.finish_registration(NAME, version)
    assert registry.finish_registration(NAME, version)  # a second restart: nothing more
    assert registry.champion(NAME) == version
    assert [entry["version"] for entry in registry.alias_history(NAME)] == [1, version]
    assert [row["version"] for row in registry.training_history(NAME)] == ["1", str(version)]
    event = registration_announcement(registry, registry.get(NAME, version))
    assert (event.decision, event.version, event.previous_version) == ("promoted", version, 1)
    assert event.trigger_event_ids == ("e2",)


def test_a_promotion_the_champion_moved_past_is_neither_finished_nor_announced(
        tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    _register(registry, events=["e1"])
    version = crashed_after_rename(registry, "e2")  # gated against version 1
    _register(registry, events=["e3"])  # meanwhile another version took over
    assert not registry.finish_registration(NAME, version)
    assert registry.champion(NAME) == 3
    assert registration_announcement(registry, registry.get(NAME, version)) is None


def test_a_rolled_back_promotion_is_not_announced(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    _register(registry, events=["e1"])
    unannounced = _register(registry, events=["e2"])
    registry.rollback(NAME)  # the operator, while the worker was down
    assert registration_announcement(registry, unannounced) is None


def test_a_rejection_is_announced_as_one(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    _register(registry, events=["e1"])
    rejected = _register(registry, "rejected", events=["e2"])
    event = registration_announcement(registry, rejected)
    assert (event.decision, event.version, event.previous_version) == ("rejected", 2, 1)


def _reconcile(registry: ModelRegistry, topic: list[ModelVersionEvent],
               published: list[ModelVersionEvent]) -> ModelVersionEvent | None:
    return reconcile(registry, NAME, lambda: list(topic), published.append)


def test_reconcile_announces_a_move_the_topic_lacks_exactly_once(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    for event_id in ("e1", "e2"):
        _register(registry, events=[event_id])
    topic = [move_event(registry, NAME, move) for move in registry.alias_history(NAME)]
    registry.rollback(NAME)  # and the announcement was cut off
    published: list[ModelVersionEvent] = []

    event = _reconcile(registry, topic, published)
    assert published == [event]
    assert (event.decision, event.version, event.previous_version) == ("rolled_back", 1, 2)
    topic.append(event)
    assert _reconcile(registry, topic, published) is None
    assert len(published) == 1


def test_reconcile_leaves_the_move_its_caller_announces_next_and_settles_an_older_one(
        tmp_path) -> None:
    """``levydrift train --publish``: the version it just made champion is its own to
    announce (once, as a registration), not a move "a crash kept from the fleet"."""
    registry = ModelRegistry(tmp_path)
    first = _register(registry, events=["e1"])
    published: list[ModelVersionEvent] = []
    assert reconcile(registry, NAME, list, published.append, announcing=first.version) is None
    assert published == [] and not registry.get(NAME, first.version).published
    # A move older than the caller's own is still a missing one: announced.
    second = _register(registry, events=["e2"])
    event = reconcile(registry, NAME, list, published.append, announcing=second.version + 1)
    assert published == [event] and event.version == second.version


def test_reconcile_marks_what_the_topic_holds_and_announces_nothing(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    info = _register(registry, events=["e1"])
    topic = [registration_announcement(registry, info)]  # committed; the mark was cut off
    published: list[ModelVersionEvent] = []
    assert _reconcile(registry, topic, published) is None
    assert published == []
    assert registry.get(NAME, info.version).published


def test_an_announcement_built_again_is_the_same_event(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    _register(registry, events=["e1"])
    move = registry.last_champion_move(NAME)
    assert move_event(registry, NAME, move) == move_event(ModelRegistry(tmp_path), NAME, move)


def test_the_alias_history_is_the_truth_when_a_crash_cuts_a_move(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    _register(registry, events=["e1"])
    snapshot = (tmp_path / NAME / ALIASES_NAME).read_text()
    _register(registry, events=["e2"])
    (tmp_path / NAME / ALIASES_NAME).write_text(snapshot)  # the snapshot write never happened
    assert registry.champion(NAME) == 2
    with (tmp_path / NAME / "aliases_history.jsonl").open("a") as history:
        history.write('{"time": "2026-')  # a move cut mid-line: no move
    assert registry.champion(NAME) == 2
    assert len(registry.alias_history(NAME)) == 2
