"""Throughput of the segmented bank beside today's single bank, alone (section 2 of
``bench_arrival_orders.py`` without its decision tables), for comparing builds.

    .venv/bin/python bench/bench_segmented_throughput.py [--records 500000] [--repeats 5]
        [--orders county-batches shuffled] [--segment-by county tax_district]
        [--stratify-by tax_district] [--steady] [--chunk 10] [--cache DIR] [--json]

Both banks are fed the same prebuilt columns, as the consumer feeds them (``arrived``: the
consumer's columns and model signals, batches of 2,000; ``event_time`` as int64 epoch
milliseconds, which ``consumer/processing.py`` parses once per batch before ``bank.update``,
not the RFC 3339 text of the records), and timed in wall and CPU (process) time. The banks
take turns every ``--chunk`` batches (default 10: 20,000 records), each timed on its own
turns only, so the load of a shared machine, which drifts over seconds, weighs on every bank
alike. ``--cache DIR`` keeps the columns between runs, so two builds can be run one after
the other on the same records (each build's own checkout of this script:
``bench_arrival_orders`` puts the repository it sits in first on ``sys.path``, whatever
``PYTHONPATH`` says); ``--json`` prints one line of rates per order. ``--segment-by`` sets
the segmented bank's segment fields, ``--stratify-by`` its strata (default tax_district, as
the consumer runs); with strata the same bank without them runs beside it ("segmented, no
strata"). ``--steady`` times the second half of the records only, each bank having been fed
the first half (warm-ups over: the rate a long-running consumer sees).
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_arrival_orders import (  # noqa: E402
    BATCH,
    COUNTY,
    arrived,
    champion_for,
    feed_range,
    take_turns,
)
from machine import describe  # noqa: E402

from detectors import DetectorBank, DetectorSettings  # noqa: E402
from detectors.composition import event_times_ms  # noqa: E402
from detectors.segments import SegmentedBank  # noqa: E402
from levydrift.simulator import LevySimulator, SimulatorConfig  # noqa: E402


def columns_for(order: str, records: int, cache: Path | None) -> dict[str, np.ndarray]:
    path = cache / f"{order}-{records}.pkl" if cache else None
    if path is not None and path.exists():
        with path.open("rb") as handle:
            loaded: dict[str, np.ndarray] = pickle.load(handle)
            return loaded
    simulator = LevySimulator(SimulatorConfig(seed=0, labelled_share=0.3, county=COUNTY))
    columns = arrived(simulator, records, order, champion_for(0))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            pickle.dump(columns, handle, protocol=5)
    return columns


def as_consumer_feeds(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The columns with ``event_time`` as the int64 ms the consumer hands the bank (it parses
    the text once per batch, outside the bank; the parse is the same for any batch split)."""
    return {**columns, "event_time": event_times_ms(columns["event_time"])}


def rates(columns: dict[str, np.ndarray], repeats: int, segment_by: tuple[str, ...],
          stratify_by: tuple[str, ...] = (), steady: bool = False, chunk: int = 10
          ) -> dict[str, dict[str, list[float]]]:
    """records/s per bank and clock, the banks taking turns every ``chunk`` batches."""
    n = len(columns["index"])
    segmented = DetectorSettings(segment_by=segment_by, stratify_by=stratify_by)
    makers = {"single": lambda: DetectorBank(DetectorSettings()),
              "segmented": lambda: SegmentedBank(segmented)}
    if segmented.strata_fields():
        plain = DetectorSettings(segment_by=segment_by, stratify_by=())
        makers["segmented, no strata"] = lambda: SegmentedBank(plain)
    for make in makers.values():
        feed_range(make(), columns, 0, BATCH * 5)  # compile
    out: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": []} for name in makers}
    untimed = n // 2 if steady else 0
    for _ in range(repeats):
        banks = {name: make() for name, make in makers.items()}
        for name, (wall, cpu) in take_turns(banks, columns, untimed, chunk).items():
            out[name]["wall"].append((n - untimed) / wall)
            out[name]["cpu"].append((n - untimed) / cpu)
    return out


def summary(values: list[float]) -> str:
    return (f"{min(values):,.0f} / {statistics.median(values):,.0f} / "
            f"{max(values):,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--orders", nargs="+", default=["county-batches", "shuffled"])
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--segment-by", nargs="+", default=["county"])
    parser.add_argument("--stratify-by", nargs="*", default=["tax_district"])  # as advised
    parser.add_argument("--steady", action="store_true")
    parser.add_argument("--chunk", type=int, default=10, help="batches per turn")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.json:
        print(describe(), flush=True)
        print("| order | bank | clock | records/s min / median / max | ratio (median) |\n"
              "|---|---|---|---|---|")
    for order in args.orders:
        columns = as_consumer_feeds(columns_for(order, args.records, args.cache))
        measured = rates(columns, args.repeats, tuple(args.segment_by),
                         tuple(args.stratify_by), args.steady, args.chunk)
        if args.json:
            print(json.dumps({"order": order, **measured}), flush=True)
            continue
        for clock in ("wall", "cpu"):
            single = statistics.median(measured["single"][clock])
            for name in measured:
                ratio = statistics.median(measured[name][clock]) / single
                print(f"| {order} | {name} | {clock} | {summary(measured[name][clock])} | "
                      f"{ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
