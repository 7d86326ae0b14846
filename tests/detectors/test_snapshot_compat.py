"""Snapshots written by an earlier build restore to the same detectors: re-encoded they are the
same bytes, and fed on they decide exactly as a bank that was never snapshotted.

The fixtures in tests/detectors/data/ were written by the build before channels had a common
state protocol (commit 0fc6627, after ed97854); the bank's again by that build when its stream
stopped using np.exp (CPU-dependent in the last bit), the segmented one reproduced by it byte
for byte. ``write_fixtures()`` re-creates them (run it only when the snapshot format changes on
purpose, and keep the old files as a separate case).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from detectors.bank import DetectorBank
from detectors.config import DetectorSettings
from detectors.segments import SegmentedBank, _parse_header
from detectors.snapshot import decode, encode

DATA = Path(__file__).parent / "data"
BANK_FIXTURE = DATA / "detector-bank-v1.snapshot"
SEGMENTED_FIXTURE = DATA / "segmented-bank-v1.snapshot"

BANK_SETTINGS = DetectorSettings(
    numeric_signals=("x",), categorical_signals=("county",), prediction_signals=("y",),
    performance_signals=(), warmup_records=200, relearn_records=200, cooldown_records=50,
    min_instances=30, summary_window=64, stratify_by=())  # written before strata existed
SEGMENTED_SETTINGS = DetectorSettings(
    numeric_signals=("x",), categorical_signals=("county",), prediction_signals=(),
    performance_signals=(), warmup_records=200, segment_warmup_records=200,
    relearn_records=200, cooldown_records=50, min_instances=30, summary_window=64,
    composition_window_s=3600, composition_lateness_s=0, stratify_by=())
RECORDS, SNAPSHOT_AT, BATCH = 2400, 1450, 97


def uniform(n: int, seed: int) -> np.ndarray:
    """Pseudo-random uniforms from integer hashing: the same on every numpy version."""
    index = np.arange(n, dtype=np.uint64) + np.uint64(seed * 1_000_003)
    mixed = (index * np.uint64(2654435761) + np.uint64(40503)) % np.uint64(2 ** 32)
    mixed = (mixed * np.uint64(2246822519) + np.uint64(seed)) % np.uint64(2 ** 32)
    return (mixed.astype(np.float64) + 0.5) / 2 ** 32


def columns() -> dict[str, np.ndarray]:
    """Stationary, then shifted signals (so detectors fire and relearn before the snapshot
    point), a never-seen county, missing values and event times."""
    normal = sum(uniform(RECORDS, seed) for seed in range(1, 7)) - 3.0  # approx. N(0, 0.5)
    x = normal * 2.0 + np.where(np.arange(RECORDS) >= 1300, 3.0, 0.0)
    # exp's first terms, not np.exp: its last bit differs between CPUs (AVX2, AVX-512 paths)
    u = uniform(RECORDS, 11)
    y = 1.0 + u + u * u / 2 + u * u * u / 6 + np.where(np.arange(RECORDS) >= 1900, 2.0, 0.0)
    y[::13] = np.nan
    names = np.array(["A", "B", "C"], dtype=object)
    county = names[(uniform(RECORDS, 21) * (1.5 + 1.5 * (np.arange(RECORDS) >= 1000))
                    ).astype(np.int64) % 3]
    county[1350::9] = "D"
    county[::17] = None
    times = np.arange(RECORDS, dtype=np.int64) * 60_000
    return {"x": x, "y": y, "county": county, "event_time": times}


def feed(bank: Any, start: int, stop: int) -> list[dict[str, Any]]:
    data = columns()
    decisions = []
    for first in range(start, stop, BATCH):
        last = min(first + BATCH, stop)
        decisions += bank.update({name: values[first:last] for name, values in data.items()},
                                 np.arange(first, last, dtype=np.int64) * 2 + 5)
    return [decision.to_dict() for decision in decisions]


def write_fixtures() -> None:
    DATA.mkdir(exist_ok=True)
    bank = DetectorBank(BANK_SETTINGS)
    feed(bank, 0, SNAPSHOT_AT)
    BANK_FIXTURE.write_bytes(encode(bank))
    segmented = SegmentedBank(SEGMENTED_SETTINGS)
    feed(segmented, 0, SNAPSHOT_AT)
    SEGMENTED_FIXTURE.write_bytes(segmented.snapshot())


def test_an_old_bank_snapshot_restores_to_the_same_bytes_and_decisions() -> None:
    old = BANK_FIXTURE.read_bytes()
    restored = decode(old, BANK_SETTINGS)
    assert encode(restored) == old
    straight = DetectorBank(BANK_SETTINGS)
    before = feed(straight, 0, SNAPSHOT_AT)
    assert encode(straight) == old  # the fixture is this stream's state
    after = feed(straight, SNAPSHOT_AT, RECORDS)
    assert before and after, "the stream must exercise alarms and relearning"
    assert feed(restored, SNAPSHOT_AT, RECORDS) == after
    assert encode(restored) == encode(straight)


def test_an_old_segmented_snapshot_restores_to_the_same_bytes_and_decisions() -> None:
    old = SEGMENTED_FIXTURE.read_bytes()
    restored = SegmentedBank.restore(old, SEGMENTED_SETTINGS)
    assert restored.snapshot() == old
    straight = SegmentedBank(SEGMENTED_SETTINGS)
    feed(straight, 0, SNAPSHOT_AT)
    # The one difference the fixture's build made: composition learnt its reference from
    # the first window; this build, from the first whole one (the first may be partial).
    assert but_the_composition_reference(straight.snapshot()) == but_the_composition_reference(
        old)
    assert straight.composition.reference != restored.composition.reference
    after = feed(straight, SNAPSHOT_AT, RECORDS)
    assert feed(restored, SNAPSHOT_AT, RECORDS) == after
    assert but_the_composition_reference(restored.snapshot()) == (
        but_the_composition_reference(straight.snapshot()))


def but_the_composition_reference(snapshot: bytes) -> tuple[dict[str, Any], bytes]:
    """A segmented snapshot's header without composition's reference, and its other parts."""
    header, offset = _parse_header(snapshot)
    del header["composition"]["reference"]
    return header, snapshot[offset:]
