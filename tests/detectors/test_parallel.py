"""Signals fed side by side (``detectors.parallel``) decide and end exactly as one after the
other: the same decisions, in the same order, and the same snapshot bytes, with segments,
strata, warm-ups, alarms and re-learning under way in the same batches."""

from __future__ import annotations

import threading
from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from detectors import parallel
from detectors.segments import SegmentedBank
from tests.detectors.test_strata import SETTINGS, district_stream

SIGNALS = ("x", "y", "z", "w")


def stream(records: int) -> dict[str, np.ndarray]:
    """District-sorted records with four numeric signals: x shifts in one district, y in
    every record of county B, z and w stay put."""
    columns = district_stream(records, seed=21, shift=("A2", 1.0, records // 3))
    rng = np.random.default_rng(22)
    late = columns["index"] >= records // 2
    columns["y"] = rng.normal(size=records) + np.where(late & (columns["county"] == "B"),
                                                      0.8, 0.0)
    columns["z"] = rng.exponential(size=records)
    columns["w"] = rng.integers(0, 3, size=records).astype(np.float64)  # a few atoms
    return columns


def feed(bank: SegmentedBank, columns: dict[str, np.ndarray], batch: int) -> list:
    decisions, n = [], len(columns["x"])
    for first in range(0, n, batch):
        part = {name: values[first:first + batch] for name, values in columns.items()}
        decisions += bank.update(part, np.arange(first, min(n, first + batch),
                                                 dtype=np.int64))
    return decisions


@pytest.mark.parametrize("stratify_by", [("tax_district",), ()])
def test_signals_side_by_side_decide_and_end_as_one_after_the_other(
        monkeypatch: pytest.MonkeyPatch, stratify_by: tuple[str, ...]) -> None:
    settings = replace(SETTINGS, numeric_signals=SIGNALS, stratify_by=stratify_by)
    columns = stream(60_000)
    monkeypatch.setattr(parallel, "PARALLEL_MIN_VALUES", 10**12)
    one_by_one = SegmentedBank(settings)
    expected = feed(one_by_one, columns, batch=5_000)
    assert len(expected) >= 2, "alarms (and, with strata, re-learning) must be under way"

    monkeypatch.setattr(parallel, "PARALLEL_MIN_VALUES", 0)
    monkeypatch.setattr(parallel, "feed_threads", lambda: 2)
    side_by_side = SegmentedBank(settings)
    threads: set[str] = set()
    feed_signal = side_by_side._feed_signal

    def spy(*args: object) -> object:
        threads.add(threading.current_thread().name)
        return feed_signal(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(side_by_side, "_feed_signal", spy)
    assert feed(side_by_side, columns, batch=5_000) == expected
    assert side_by_side.snapshot() == one_by_one.snapshot()
    assert threads and all(name.startswith("levydrift-signals") for name in threads), threads


def test_small_batches_stay_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def task(number: int) -> tuple[int, str]:
        return number, threading.current_thread().name

    tasks = [partial(task, number) for number in range(5)]
    monkeypatch.setattr(parallel, "feed_threads", lambda: 2)
    here = threading.current_thread().name
    assert parallel.run_each(tasks, parallel.PARALLEL_MIN_VALUES - 1) == [
        (number, here) for number in range(5)]
    side_by_side = parallel.run_each(tasks, parallel.PARALLEL_MIN_VALUES)
    assert [number for number, _ in side_by_side] == list(range(5))  # in order
    assert all(name.startswith("levydrift-signals") for _, name in side_by_side)


def test_a_failing_signal_raises_in_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "feed_threads", lambda: 2)

    def broken() -> int:
        raise ValueError("bad column")

    with pytest.raises(ValueError, match="bad column"):
        parallel.run_each([lambda: 1, broken], parallel.PARALLEL_MIN_VALUES)


def test_detectors_threads_sets_the_threads_and_is_no_part_of_a_snapshot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "feed_threads", lambda: 4)

    def task() -> str:
        return threading.current_thread().name

    here = threading.current_thread().name
    assert parallel.run_each([task] * 3, parallel.PARALLEL_MIN_VALUES, threads=1) == [here] * 3
    assert here not in parallel.run_each([task] * 3, parallel.PARALLEL_MIN_VALUES, threads=2)

    settings = replace(SETTINGS, threads=3)
    assert "threads" not in settings.to_dict()
    bank = SegmentedBank(settings)
    feed(bank, stream(3_000), batch=1_000)
    assert SegmentedBank.restore(bank.snapshot(), replace(SETTINGS, threads=1)).snapshot() == (
        bank.snapshot())
