"""Snapshot and restore: stopping anywhere and resuming changes nothing."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import DetectorBank, DetectorSettings, Reference, SnapshotError
from detectors.synthetic import stationary_batch

SETTINGS = DetectorSettings(warmup_records=300, relearn_records=300, cooldown_records=150,
                            min_instances=30)
N = 4000


@functools.cache
def stream() -> tuple[dict, np.ndarray]:
    """Warm-up, then changes in several signals and kinds, with missing values."""
    rng = np.random.default_rng(42)
    columns = stationary_batch(SETTINGS, N, rng)
    columns["levy_rate"][1000:] *= 1.3
    columns["prediction"][1800:] *= 2.0
    columns["abs_error"][::4] = np.nan
    columns["abs_error"][2500:] *= 3.0
    columns["tax_district"][3000:3600:7] = "district-new"
    columns["county"][::11] = None
    return columns, np.arange(10, 10 + 3 * N, 3, dtype=np.int64)  # gapped positions


def run(bank: DetectorBank, start: int, stop: int, batch: int) -> list[dict]:
    columns, positions = stream()
    decisions = []
    for first in range(start, stop, batch):
        last = min(first + batch, stop)
        decisions += bank.update({k: v[first:last] for k, v in columns.items()},
                                 positions[first:last])
    return [d.to_dict() for d in decisions]


@functools.cache
def uninterrupted() -> tuple[list[dict], bytes]:
    bank = DetectorBank(SETTINGS)
    decisions = run(bank, 0, N, 500)
    return decisions, bank.snapshot()


def test_the_stream_produces_decisions_of_every_kind() -> None:
    decisions, _ = uninterrupted()
    assert {d["kind"] for d in decisions} == {"distribution", "prediction", "performance"}


@settings(max_examples=30, deadline=None)
@given(stop=st.integers(0, N), batch_before=st.sampled_from([13, 64, 500, 4000]),
       batch_after=st.sampled_from([3, 97, 1000, 4000]))
def test_restore_anywhere_gives_the_same_decisions(stop: int, batch_before: int,
                                                   batch_after: int) -> None:
    expected, final_snapshot = uninterrupted()
    first = DetectorBank(SETTINGS)
    before = run(first, 0, stop, batch_before)
    restored = DetectorBank.restore(first.snapshot(), SETTINGS)
    after = run(restored, stop, N, batch_after)
    assert before + after == expected
    assert restored.snapshot() == final_snapshot


def test_snapshot_of_a_twelve_signal_bank_is_small() -> None:
    _, snapshot = uninterrupted()
    assert snapshot.startswith(b"LDSNAP")
    assert len(snapshot) < 200_000


def test_garbage_is_refused() -> None:
    with pytest.raises(SnapshotError, match="magic"):
        DetectorBank.restore(b"nonsense", SETTINGS)
    _, snapshot = uninterrupted()
    with pytest.raises(SnapshotError, match="format 9"):
        DetectorBank.restore(snapshot[:6] + b"\x09\x00" + snapshot[8:], SETTINGS)
    with pytest.raises(SnapshotError, match="corrupt"):
        DetectorBank.restore(snapshot[:40], SETTINGS)


def test_new_settings_keep_the_references_and_restart_detection() -> None:
    bank = DetectorBank(SETTINGS)
    run(bank, 0, 1000, 500)
    changed = dataclasses.replace(SETTINGS, cooldown_records=999)
    restored = DetectorBank.restore(bank.snapshot(), changed)
    assert restored.settings == changed
    assert restored.reference() == bank.reference()
    assert isinstance(restored.reference(), Reference)
