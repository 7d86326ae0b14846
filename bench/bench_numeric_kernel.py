"""CPU nanoseconds per value of one numeric signal's kernel (``run_numeric``: standardisation,
five Page-Hinkley rows, ADWIN), fed through ``NumericChannel.feed`` in batches of 10,000
stationary values with the default settings, so no alarm interrupts the loop.

    .venv/bin/python bench/bench_numeric_kernel.py [--values 1000000] [--repeats 5] [--json]

``PYTHONPATH`` chooses the build, so two builds can be run one after the other.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from detectors import DetectorSettings, NumericReference  # noqa: E402
from detectors.channels import NumericChannel  # noqa: E402

BATCH = 10_000


def ns_per_value(reference: NumericReference, values: np.ndarray) -> float:
    channel = NumericChannel("assessed_value", DetectorSettings(), reference)
    positions = np.arange(values.size, dtype=np.int64)
    started = time.process_time()
    for first in range(0, values.size, BATCH):
        channel.feed(values[first:first + BATCH], positions[first:first + BATCH])
    return (time.process_time() - started) / values.size * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(3)
    reference = NumericReference.from_values(rng.lognormal(12.0, 0.8, 50_000))
    values = rng.lognormal(12.0, 0.8, args.values)
    ns_per_value(reference, values[:BATCH])  # compile / load the cache
    measured = [ns_per_value(reference, values) for _ in range(args.repeats)]
    if args.json:
        print(json.dumps({"ns_per_value": measured}))
        return
    print(describe())
    print(f"run_numeric, CPU ns per value (min / median / max of {args.repeats}): "
          f"{min(measured):.0f} / {statistics.median(measured):.0f} / {max(measured):.0f}")


if __name__ == "__main__":
    main()
