"""The recent-records ring: whatever the batch sizes, it holds the last records pushed, in
order, with their scores as float16 (it writes batches only when read)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.recent import Batch, RecentRecords

SIGNALS = ("a", "b", "c")


def _batch(rng: np.random.Generator, first: int, n: int, as_matrix: bool) -> Batch:
    scores = rng.standard_normal((len(SIGNALS), n))
    scores[rng.random(scores.shape) < 0.2] = np.nan
    return Batch(np.arange(first, first + n, dtype=np.int64) * 3,
                 rng.integers(0, 10**12, n), rng.integers(0, 50, n).astype(np.int32),
                 {name: scores[row] for row, name in enumerate(SIGNALS) if row != 1 or
                  as_matrix}, scores if as_matrix else None)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.sampled_from([0, 1, 7, 60, 99, 100, 101, 250]), min_size=1,
                      max_size=14),
       reads=st.lists(st.booleans(), min_size=14, max_size=14), seed=st.integers(0, 99))
def test_the_ring_holds_the_last_records_in_order_whatever_the_batches(
        sizes: list[int], reads: list[bool], seed: int) -> None:
    rng = np.random.default_rng(seed)
    ring, pushed = RecentRecords(SIGNALS, size=100), []
    first = 0
    for size, read in zip(sizes, reads, strict=False):
        batch = _batch(rng, first, size, bool(rng.integers(2)))
        first += len(batch.positions)
        ring.push(batch)
        pushed.append(batch)
        if read:  # a read between pushes writes what is pending; the end is the same
            assert ring.with_batch(_batch(rng, 0, 0, True)).positions.size == min(first, 100)
    known = ring.with_batch(_batch(rng, 0, 0, True))
    expected_positions = np.concatenate([b.positions for b in pushed])[-100:]
    np.testing.assert_array_equal(known.positions, expected_positions)
    np.testing.assert_array_equal(known.times, np.concatenate([b.times for b in pushed])[-100:])
    np.testing.assert_array_equal(known.codes, np.concatenate([b.codes for b in pushed])[-100:])
    for name in SIGNALS:
        column = np.concatenate([b.scores.get(name, np.full(len(b.positions), np.nan))
                                 for b in pushed])[-100:]
        np.testing.assert_array_equal(known.scores[name],
                                      column.astype(np.float16).astype(np.float64))
    restored = RecentRecords(SIGNALS, size=100)
    restored.load(ring.to_bytes(), ring.records_held())
    assert restored.to_bytes() == ring.to_bytes()


def test_a_batch_the_caller_reuses_after_pushing_does_not_change_the_ring() -> None:
    rng = np.random.default_rng(1)
    ring = RecentRecords(SIGNALS, size=100)
    batch = _batch(rng, 0, 50, True)
    ring.push(batch)
    batch.positions[:] = -7
    batch.times[:] = -7
    batch.codes[:] = -7
    known = ring.with_batch(_batch(rng, 0, 0, True))
    np.testing.assert_array_equal(known.positions, np.arange(50) * 3)
    assert (known.times >= 0).all() and (known.codes >= 0).all()
