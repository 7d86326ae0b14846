"""Composition decisions where the stream did not change: after a partition starts mid-day
(with or without a champion), and after a champion swap.

    .venv/bin/python bench/bench_composition_starts.py [--records 1000000]
        [--orders roll-cycle county-batches district-sorted time shuffled]
        [--points 250000 430000 610000] [--after 200000] [--cache DIR]

The simulator's stream under ``none`` (no change of any kind) arrives in each order and feeds
the segmented bank as the consumer runs it (county segments, district strata); days are
86,400 records, so every point is mid-day. Every decision in the ``--after`` records after a
point is false; the tables count the composition's (county, district and class shares).

* **start**: a fresh bank starts at the point, as a partition's consumer does without a
  snapshot (a new deployment, a refused state, a new partition): its first day is partial.
* **start with a champion**: the same, with a champion's reference (made as below for a swap
  at the point), as a consumer without a snapshot starts while a champion serves.
* **swap**: the bank has run from the stream's start; at the point a new champion is made as
  the trainer makes one (its training window the ``trainer.window_records`` records before
  the point in arrival order, its holdout the newest fifth of each county's,
  ``trainer.training.holdout_mask``, its reference from that holdout, the category shares
  from the window's whole days) and
  ``bank.rebaseline(reference)`` is called, as the consumer does.
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
from detectors.composition import whole_window_counts  # noqa: E402
from detectors.reference import Reference, reference_for_signals  # noqa: E402
from detectors.segments import SegmentedBank  # noqa: E402
from levydrift.features import CATEGORICAL_FEATURES  # noqa: E402
from trainer.config import TrainerSection  # noqa: E402
from trainer.training import holdout_mask  # noqa: E402

SETTINGS = DetectorSettings(segment_by=("county",), stratify_by=("tax_district",))


def champion_reference(columns: dict[str, np.ndarray], point: int) -> Reference:
    """The reference of a champion trained on the window the trainer reads at ``point``, as
    the consumer builds it: its holdout, with the window's mix over its whole event-time
    windows (``trainer.training.training_composition``) for the category shares."""
    first = max(0, point - TrainerSection().window_records)
    frame = pd.DataFrame({name: values[first:point] for name, values in columns.items()})
    holdout = frame[holdout_mask(frame, TrainerSection().holdout_fraction)]
    reference = reference_for_signals({name: holdout[name].to_numpy() for name in holdout},
                                      SETTINGS.all_signals())
    counts, windows = whole_window_counts(
        {name: frame[name].to_numpy() for name in CATEGORICAL_FEATURES},
        frame["event_time"].to_numpy(), SETTINGS.composition_window_s)
    return reference.with_composition(counts, windows)


MODES = ("start", "start with a champion", "swap")


def composition_after(columns: dict[str, np.ndarray], point: int, after: int,
                      mode: str) -> tuple[int, int]:
    """(composition decisions, other decisions) in the ``after`` records after ``point``."""
    if mode == "start with a champion":
        bank = SegmentedBank(SETTINGS, champion_reference(columns, point))
    else:
        bank = SegmentedBank(SETTINGS)
    if mode == "swap":
        feed_range(bank, columns, 0, point)
        bank.rebaseline(champion_reference(columns, point))
    decisions = feed_range(bank, columns, point, min(len(columns["index"]), point + after))
    composition = sum(1 for d in decisions
                      if set(d.signal_names) <= set(SETTINGS.categorical_signals))
    return composition, len(decisions) - composition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--orders", nargs="+", default=["roll-cycle", "county-batches",
                                                        "district-sorted", "time", "shuffled"])
    parser.add_argument("--points", type=int, nargs="+", default=[250_000, 430_000, 610_000])
    parser.add_argument("--after", type=int, default=200_000)
    parser.add_argument("--cache", type=Path)
    args = parser.parse_args()
    print(describe(), flush=True)
    points = " / ".join(f"{point // 1000}k" for point in args.points)
    print("| order | " + " | ".join(f"{mode} at {points}: composition (other)"
                                     for mode in MODES) + " |\n|---|---|---|---|", flush=True)
    for order in args.orders:
        columns = as_consumer_feeds(columns_for(order, args.records, args.cache))
        cells = []
        for mode in MODES:
            found = [composition_after(columns, point, args.after, mode)
                     for point in args.points]
            cells.append(" / ".join(f"{c} ({o})" for c, o in found))
        print(f"| {order} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
