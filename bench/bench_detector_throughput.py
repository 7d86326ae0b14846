"""Detector throughput: a 12-signal DetectorBank fed column batches, beside the loop a user
would write with river (ADWIN + PageHinkley per signal, one value at a time), same run.

    .venv/bin/python bench/bench_detector_throughput.py [--records 1000000] [--loop 20000]

The bank is single-threaded (numba, no parallel loops), so its figure is one core's. Both
wall-clock and process CPU time are reported: on a shared machine CPU time is the fairer
measure of the code, wall time of what a user would see then.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from river import drift

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from detectors import DetectorBank, DetectorSettings, Reference  # noqa: E402
from detectors.snapshot import decode, encode  # noqa: E402
from detectors.synthetic import stationary_batch  # noqa: E402

SETTINGS = DetectorSettings()


def timed(function) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def bank_run(columns: dict, batch: int, reference: Reference) -> tuple[DetectorBank, int]:
    bank = DetectorBank(SETTINGS, reference)
    n = len(next(iter(columns.values())))
    positions = np.arange(n, dtype=np.int64)
    decisions = 0
    for first in range(0, n, batch):
        decisions += len(bank.update({k: v[first:first + batch] for k, v in columns.items()},
                                     positions[first:first + batch]))
    return bank, decisions


def river_loop(columns: dict, n: int) -> int:
    """What a user would write: per record, per signal, update river's detectors. Categories
    are fed as integer codes (river has no categorical detector; the cost is the same)."""
    values = {}
    for name, column in columns.items():
        if column.dtype == object:
            _, codes = np.unique(column[:n], return_inverse=True)
            values[name] = codes.astype(float).tolist()
        else:
            values[name] = column[:n].tolist()
    detectors = {name: (drift.ADWIN(), drift.PageHinkley()) for name in columns}
    alarms = 0
    for index in range(n):
        for name, (adwin, page_hinkley) in detectors.items():
            x = values[name][index]
            adwin.update(x)
            page_hinkley.update(x)
            alarms += adwin.drift_detected + page_hinkley.drift_detected
    return alarms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--loop", type=int, default=20_000)
    args = parser.parse_args()
    print(describe())
    rng = np.random.default_rng(7)
    reference = Reference.from_columns(stationary_batch(SETTINGS, 50000, rng))
    columns = stationary_batch(SETTINGS, args.records, rng)
    bank_run({k: v[:2000] for k, v in columns.items()}, 1000, reference)  # compile/warm up
    print(f"\n{len(SETTINGS.all_signals())} signals "
          f"({len(SETTINGS.numeric_like())} numeric, {len(SETTINGS.categorical_signals)} "
          f"categorical); bank on {args.records:,} records, river loop on {args.loop:,}.\n")
    print("| pipeline | batch | records/s (wall) | records/s (CPU) |")
    print("|---|---|---|---|")
    result = {}
    for batch in (1_000, 10_000, 100_000):
        wall, cpu = timed(lambda b=batch: result.update(run=bank_run(columns, b, reference)))
        print(f"| DetectorBank.update | {batch:,} | {args.records / wall:,.0f} | "
              f"{args.records / cpu:,.0f} |", flush=True)
        result[batch] = (args.records / wall, args.records / cpu)
    loop_wall, loop_cpu = timed(lambda: river_loop(columns, args.loop))
    print(f"| river ADWIN + PageHinkley per value | 1 | {args.loop / loop_wall:,.0f} | "
          f"{args.loop / loop_cpu:,.0f} |")
    bank_wall, bank_cpu = result[10_000]
    print(f"\nSpeed-up at batch 10,000: {bank_wall / (args.loop / loop_wall):.1f}x wall, "
          f"{bank_cpu / (args.loop / loop_cpu):.1f}x CPU")
    bank, _ = result["run"]
    snapshot = encode(bank)
    print(f"Snapshot of the 12-signal bank after {args.records:,} records: "
          f"{len(snapshot):,} bytes (zlib; summary_window={SETTINGS.summary_window})")
    started = time.perf_counter()
    for _ in range(20):
        decode(snapshot, SETTINGS)
    print(f"snapshot() {_per_call(lambda: encode(bank)):.1f} ms, restore() "
          f"{(time.perf_counter() - started) / 20 * 1000:.1f} ms")


def _per_call(function, repeat: int = 20) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat * 1000


if __name__ == "__main__":
    main()
