"""When the consumer checkpoints: ``checkpoint_interval_s`` is the longest a partition goes
between two commits while the loop runs, not the time between two checkpoints' starts.

A commit lands when its checkpoint ends, and the loop looks at the clock only between batches.
Counting the interval from one checkpoint's start to the next, a partition went the interval
plus a batch plus the difference of two checkpoints' durations without a commit (2.46 s at a 2 s
interval under load, bench/RESULTS-consumer.md). So the next checkpoint starts early by the
longest of the recent checkpoints and batches. A fetch that finds no records still waits its
``batch_timeout_s`` (a quiet stream's gap may exceed the interval by that much): bounding the
wait by the due time made the loop spin in short empty fetches, and a label backlog drained in
hundreds of them under load. Pure logic: the caller passes the clock's readings.
"""

from __future__ import annotations

from collections import deque

RECENT = 8  # checkpoints and batches remembered for the margin


class CheckpointSchedule:
    """The next checkpoint is due ``interval_s`` after the last one ended, less the margin: the
    longest of the recent checkpoints plus the longest of the recent batches, at most half the
    interval (a slow checkpoint must not make the loop checkpoint without pause)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last_end = float("-inf")  # the first one is due at once
        self._checkpoints: deque[float] = deque(maxlen=RECENT)
        self._batches: deque[float] = deque(maxlen=RECENT)

    def margin_s(self) -> float:
        longest = max(self._checkpoints, default=0.0) + max(self._batches, default=0.0)
        return min(longest, self.interval_s / 2)

    def due_at(self) -> float:
        return self._last_end + self.interval_s - self.margin_s()

    def due(self, now: float) -> bool:
        return now >= self.due_at()

    def batch_took(self, seconds: float) -> None:
        """A batch's processing, fetch wait excluded."""
        self._batches.append(seconds)

    def checkpoint_took(self, started: float, ended: float) -> None:
        self._checkpoints.append(ended - started)
        self._last_end = ended
