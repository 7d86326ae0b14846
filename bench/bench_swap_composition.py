"""Composition decisions after a champion swap: does a new champion's holdout, taken as the
stream's category mix, make the composition monitor decide where the stream did not change?

    .venv/bin/python bench/bench_swap_composition.py [--records 1000000]
        [--orders roll-cycle county-batches district-sorted time shuffled]
        [--swaps 250000 430000 610000] [--after 200000] [--cache DIR]

The simulator's stream under ``none`` (no change of any kind) arrives in each order and feeds
the segmented bank as the consumer runs it (county segments, district strata). At each
``--swaps`` point a new champion is made as the trainer makes one: its training window the
``trainer.window_records`` records before the swap in arrival order, its holdout the newest
fifth of each county's (``trainer.training.holdout_mask``), its reference from that holdout
(``reference_for_signals``), and ``bank.rebaseline(reference)``, as the consumer does. Every
decision in the ``--after`` records that follow is false; the table counts the composition's
(county, district and class shares) and the others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_arrival_orders import feed_range  # noqa: E402
from bench_segmented_throughput import as_consumer_feeds, columns_for  # noqa: E402
from machine import describe  # noqa: E402

from detectors import DetectorSettings  # noqa: E402
from detectors.reference import reference_for_signals  # noqa: E402
from detectors.segments import SegmentedBank  # noqa: E402
from trainer.config import TrainerSection  # noqa: E402
from trainer.training import holdout_mask  # noqa: E402

SETTINGS = DetectorSettings(segment_by=("county",), stratify_by=("tax_district",))


def champion_reference(columns: dict[str, np.ndarray], swap: int, window: int):
    """The reference a champion trained on the ``window`` records before ``swap`` carries."""
    first = max(0, swap - window)
    frame = pd.DataFrame({name: values[first:swap] for name, values in columns.items()})
    held = holdout_mask(frame, TrainerSection().holdout_fraction)
    holdout = frame[held]
    return reference_for_signals({name: holdout[name].to_numpy() for name in holdout},
                                 SETTINGS.all_signals())


def after_swap(columns: dict[str, np.ndarray], swap: int, after: int) -> tuple[int, int]:
    """(composition decisions, other decisions) in the ``after`` records after ``swap``."""
    bank = SegmentedBank(SETTINGS)
    feed_range(bank, columns, 0, swap)
    bank.rebaseline(champion_reference(columns, swap, TrainerSection().window_records))
    stop = min(len(columns["index"]), swap + after)
    decisions = feed_range(bank, columns, swap, stop)
    composition = sum(1 for d in decisions
                      if set(d.signal_names) <= set(SETTINGS.categorical_signals))
    return composition, len(decisions) - composition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--orders", nargs="+", default=["roll-cycle", "county-batches",
                                                        "district-sorted", "time", "shuffled"])
    parser.add_argument("--swaps", type=int, nargs="+", default=[250_000, 430_000, 610_000])
    parser.add_argument("--after", type=int, default=200_000)
    parser.add_argument("--cache", type=Path)
    args = parser.parse_args()
    print(describe(), flush=True)
    print("| order | swap at | composition decisions after | other decisions after |\n"
          "|---|---:|---:|---:|", flush=True)
    for order in args.orders:
        columns = as_consumer_feeds(columns_for(order, args.records, args.cache))
        for swap in args.swaps:
            composition, other = after_swap(columns, swap, args.after)
            print(f"| {order} | {swap:,} | {composition} | {other} |", flush=True)


if __name__ == "__main__":
    main()
