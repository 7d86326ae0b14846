"""The checkpoint schedule: commits at most ``checkpoint_interval_s`` apart while the loop runs,
whatever batches and checkpoints take (a simulated clock, no Kafka)."""

from __future__ import annotations

import numpy as np
import pytest

from consumer.schedule import RECENT, CheckpointSchedule

INTERVAL_S = 2.0
BATCH_TIMEOUT_S = 0.5


def commit_times(batch_s: list[float], checkpoint_s: list[float], fill_s: float,
                 run_s: float = 120.0) -> list[float]:
    """When each checkpoint's commit lands, looping as the service does: fetch (a full batch
    after ``fill_s``, at most the batch timeout), process, checkpoint if due. Batch and
    checkpoint durations are taken in turn from the lists."""
    schedule, now, ends = CheckpointSchedule(INTERVAL_S), 0.0, []
    batches, checkpoints = iter(batch_s * 10_000), iter(checkpoint_s * 10_000)
    while now < run_s:
        now += min(fill_s, BATCH_TIMEOUT_S)
        took = next(batches)
        now += took
        schedule.batch_took(took)
        if schedule.due(now):
            started, now = now, now + next(checkpoints)
            schedule.checkpoint_took(started, now)
            ends.append(now)
    return ends


@pytest.mark.parametrize(("batch_s", "checkpoint_s"), [
    ([0.3], [0.4]),  # slow batches and checkpoints: counted from each start, gaps were 2.7 s
    ([0.05, 0.25, 0.1], [0.1, 0.45, 0.2, 0.3]),  # varying, within what was seen recently
    ([0.02], [0.05]),
])
def test_commits_land_at_most_the_interval_apart_under_load(batch_s: list[float],
                                                            checkpoint_s: list[float]) -> None:
    ends = commit_times(batch_s, checkpoint_s, fill_s=0.01)
    gaps = np.diff(ends[RECENT:])  # once the schedule has seen what checkpoints take
    assert gaps.max() <= INTERVAL_S + 1e-9
    # ...and not much more often than the interval asks for.
    assert gaps.min() >= INTERVAL_S / 2


def test_a_quiet_stream_checkpoints_about_once_an_interval_not_at_every_fetch() -> None:
    """Empty fetches wait out the batch timeout: the gap may pass the interval by that much,
    never more, and checkpoints do not come more often than the interval asks."""
    ends = commit_times([0.001], [0.0005], fill_s=BATCH_TIMEOUT_S, run_s=60.0)
    gaps = np.diff(ends)
    assert gaps.max() <= INTERVAL_S + BATCH_TIMEOUT_S + 1e-9
    assert gaps.min() >= INTERVAL_S - 0.01


def test_the_first_checkpoint_is_due_at_once() -> None:
    assert CheckpointSchedule(INTERVAL_S).due(0.0)


def test_the_next_checkpoint_is_due_early_by_the_longest_recent_checkpoint_and_batch() -> None:
    schedule = CheckpointSchedule(INTERVAL_S)
    schedule.checkpoint_took(10.0, 10.2)
    schedule.batch_took(0.1)
    schedule.batch_took(0.05)
    assert schedule.due_at() == pytest.approx(10.2 + INTERVAL_S - 0.3)
    due_at = schedule.due_at()
    assert not schedule.due(due_at - 0.01) and schedule.due(due_at)


def test_a_slow_checkpoint_is_remembered_for_a_while_and_never_takes_over_half_the_interval(
        ) -> None:
    schedule = CheckpointSchedule(INTERVAL_S)
    schedule.checkpoint_took(0.0, 30.0)  # a checkpoint stuck for 30 s (an outage)
    assert schedule.margin_s() == INTERVAL_S / 2
    assert not schedule.due(30.0 + INTERVAL_S / 2 - 0.01)
    for start in range(RECENT):
        schedule.checkpoint_took(100.0 + start, 100.0 + start + 0.1)
    assert schedule.margin_s() == pytest.approx(0.1)
