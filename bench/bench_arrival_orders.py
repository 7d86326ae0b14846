"""Detection on realistic arrival orders: the segmented bank (detectors/segments.py) beside
today's single DetectorBank, fed the same records in each order the simulator knows.

    .venv/bin/python bench/bench_arrival_orders.py [--records 1000000] [--seeds 3]
        [--scenario-records 200000] [--write bench/RESULTS-detectors.md]

1. ``none`` in each order, ``--records`` records: decisions of each bank (all false).
2. Throughput: both banks on the same prebuilt columns, taking turns every 10 batches
   (``take_turns``), repeated (min/median/max records/s); memory per segment (tracemalloc);
   snapshot bytes per partition.
3. One-county scenarios (Grant, 20 % of records) in each order: detected after the onset
   and never before, the decision names county=Grant and a signal the scenario moved; delay
   in records *of that county* from the onset to the decision.

Records are fed as the consumer feeds them: batches of 2,000, the consumer's columns
(``event_time`` as RFC 3339 strings) plus ``signal_columns`` with a champion trained on the
labelled rows of the first 20,000 records of the same world.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_levy_scenarios import consumer_columns  # noqa: E402
from bench_levy_scenarios import write_results as write_section  # noqa: E402
from machine import describe  # noqa: E402

from consumer.champion import Champion  # noqa: E402
from consumer.processing import signal_columns  # noqa: E402
from detectors import DetectorBank, DetectorSettings  # noqa: E402
from detectors.segments import SegmentedBank  # noqa: E402
from detectors.snapshot import encode  # noqa: E402
from levydrift.features import to_model_frame  # noqa: E402
from levydrift.simulator import (  # noqa: E402
    ORDERS,
    LevySimulator,
    SimulatorConfig,
    arrival_order,
)
from trainer.model import ModelParams, fit_model  # noqa: E402

BATCH = 2000
Bank = TypeVar("Bank", DetectorBank, SegmentedBank)
COUNTY = "Grant"
HEADING = "## Arrival orders, segments and district strata"
MODEL_SIGNALS = frozenset({"prediction", "abs_error", "relative_error"})
# Districts certify in turn and a district's levy rate is its own: district strata score each
# value against its district; without them, district order needs the district as the segment.
BY_DISTRICT = ("county", "tax_district")
STRATA = DetectorSettings(stratify_by=("tax_district",))
DAY_RECORDS = 86_400  # records 1 s apart: re-ordering happens within each day


def champion_for(seed: int) -> Champion:
    simulator = LevySimulator(SimulatorConfig(seed=seed, labelled_share=0.3, county=COUNTY))
    frame = to_model_frame(simulator.columns(0, 20_000), include_target=True)
    return Champion(version=1, model=fit_model(frame, ModelParams(max_iter=50)))


def arrived(simulator: LevySimulator, records: int, order: str, champion: Champion,
            transform=None) -> dict[str, np.ndarray]:
    """All records in ``order`` (re-ordered within each day), as the consumer's columns with
    the model signals, plus ``index`` (the record's index in event-time order)."""
    interval = simulator.config.event_interval_ms
    block = max(1, 86_400_000 // interval) if interval else records
    parts = []
    for start in range(0, records, block):
        columns = simulator.columns(start, min(records, start + block))
        if transform is not None:
            columns = transform(columns, start)
        permutation = arrival_order(columns, order, simulator.config.seed + start)
        columns = {name: values[permutation] for name, values in columns.items()}
        scored = signal_columns(consumer_columns(columns), champion)
        scored["index"] = start + permutation
        parts.append(scored)
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def feed(bank, columns: dict[str, np.ndarray]) -> tuple[list, float]:
    started = time.perf_counter()
    decisions = feed_range(bank, columns, 0, len(columns["index"]))
    if isinstance(bank, SegmentedBank):
        decisions += bank.finish()
    return decisions, time.perf_counter() - started


def feed_range(bank: DetectorBank | SegmentedBank, columns: dict[str, np.ndarray], start: int,
               stop: int) -> list:
    """Records ``start``..``stop`` in batches, as the consumer feeds them; their decisions."""
    decisions = []
    for first in range(start, stop, BATCH):
        last = min(stop, first + BATCH)
        decisions += bank.update({name: values[first:last] for name, values in columns.items()},
                                 np.arange(first, last))
    return decisions


def take_turns(banks: dict[str, DetectorBank | SegmentedBank], columns: dict[str, np.ndarray],
               untimed: int = 0, chunk: int = 10) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds each bank takes for every record after the first ``untimed``
    (fed before the clocks start). The banks take turns every ``chunk`` batches, each timed
    on its own turns only, so a machine whose speed drifts over seconds slows each alike."""
    n = len(columns["index"])
    for bank in banks.values():
        feed_range(bank, columns, 0, untimed)
    spent = {name: [0.0, 0.0] for name in banks}
    for start in range(untimed, n, chunk * BATCH):
        stop = min(n, start + chunk * BATCH)
        for name, bank in banks.items():
            wall, cpu = time.perf_counter(), time.process_time()
            feed_range(bank, columns, start, stop)
            if stop == n and isinstance(bank, SegmentedBank):
                bank.finish()
            spent[name][0] += time.perf_counter() - wall
            spent[name][1] += time.process_time() - cpu
    return {name: (wall, cpu) for name, (wall, cpu) in spent.items()}


# ------------------------------------------------------------------ 1. none in each order

def none_table(records: int, seed: int) -> tuple[str, dict[str, dict[str, np.ndarray]]]:
    champion = champion_for(seed)
    simulator = LevySimulator(SimulatorConfig(seed=seed, labelled_share=0.3, county=COUNTY))
    lines = ["| order | today's DetectorBank | SegmentedBank (default: county) | "
             "SegmentedBank (county, district strata) | SegmentedBank (county, tax_district "
             "segments) | segments | s (today / segmented) |",
             "|---|---|---|---|---|---|---|"]
    kept = {}
    by_district = DetectorSettings(segment_by=BY_DISTRICT)
    for order in ORDERS:
        columns = arrived(simulator, records, order, champion)
        if order in ("time", "county-batches"):
            kept[order] = columns
        before, t_before = feed(DetectorBank(DetectorSettings()), columns)
        bank = SegmentedBank(DetectorSettings())
        after, t_after = feed(bank, columns)
        strata, _ = feed(SegmentedBank(STRATA), columns)
        district, _ = feed(SegmentedBank(by_district), columns)
        lines.append(f"| {order} | {_count(before)} | {_count(after)} | {_count(strata)} | "
                     f"{_count(district)} | {len(bank.segments)} | "
                     f"{t_before:.1f} / {t_after:.1f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines), kept


def _count(decisions: list) -> str:
    if not decisions:
        return "0"
    names: dict[str, int] = {}
    for decision in decisions:
        for name in decision.signal_names:
            names[name] = names.get(name, 0) + 1
    top = ", ".join(f"{k} {v}" for k, v in sorted(names.items(), key=lambda kv: -kv[1])[:4])
    return f"**{len(decisions)}** ({top})"


# ------------------------------------------------------------------ 2. throughput, memory

def throughput(kept: dict[str, dict[str, np.ndarray]], repeats: int) -> str:
    lines = ["| order | bank | records/s min / median / max | ratio (median) |",
             "|---|---|---|---|"]
    for order, columns in kept.items():
        n = len(columns["index"])
        rates: dict[str, list[float]] = {"today": [], "segmented": []}
        for _ in range(repeats):  # taking turns, so drift in machine load hits both
            banks = {"today": DetectorBank(DetectorSettings()),
                     "segmented": SegmentedBank(DetectorSettings())}
            for name, (seconds, _) in take_turns(banks, columns).items():
                rates[name].append(n / seconds)
        ratio = statistics.median(rates["segmented"]) / statistics.median(rates["today"])
        for name, values in rates.items():
            lines.append(f"| {order} | {name} | {min(values):,.0f} / "
                         f"{statistics.median(values):,.0f} / {max(values):,.0f} | "
                         + (f"{ratio:.2f}x |" if name == "segmented" else "1.00x |"))
        print("\n".join(lines[-2:]), flush=True)
    return "\n".join(lines)


def _traced(make: Callable[[], Bank], columns: dict[str, np.ndarray]) -> tuple[int, Bank]:
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    bank = make()
    feed(bank, columns)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    return used, bank


def footprint(columns: dict[str, np.ndarray]) -> str:
    """Memory (tracemalloc, after a warm-up run) of the layer with one segment and with all,
    the marginal cost of a segment, and snapshot sizes."""
    settings = DetectorSettings()
    one = {name: values[columns["county"] == COUNTY] for name, values in columns.items()}
    feed(SegmentedBank(settings), one)  # compiled and cached before measuring
    single, _ = _traced(lambda: SegmentedBank(settings), one)
    every, segmented = _traced(lambda: SegmentedBank(settings), columns)
    today_bytes, today = _traced(lambda: DetectorBank(settings), columns)
    count = len(segmented.segments)
    marginal = (every - single) / max(count - 1, 1)
    snapshot = segmented.snapshot()
    return (f"Memory (tracemalloc) after {len(columns['index']):,} records: the segment layer "
            f"with one segment {single / 1024:,.0f} KiB, with all {count} "
            f"{every / 1024:,.0f} KiB, so {marginal / 1024:,.0f} KiB per segment; today's "
            f"bank {today_bytes / 1024:,.0f} KiB. Snapshot per partition: "
            f"{len(snapshot) / 1024:,.0f} KiB ({count} segments; today's single bank: "
            f"{len(encode(today)) / 1024:,.0f} KiB); per segment bank "
            f"{len(encode(segmented.segments[f'county={COUNTY}'])) / 1024:,.0f} KiB.")


# ------------------------------------------------------------------ 3. one-county scenarios

@dataclass
class Outcome:
    detected: bool
    before: int
    named: bool
    right_signal: bool
    delay_county_records: int | None
    first: str


def value_shift(factor: float, change_at: int):
    """Bench-side scenario: assessed and market values of the county x factor from
    ``change_at`` on (a clean location shift of one county, nothing else moves)."""
    def apply(columns: dict[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
        index = start + np.arange(len(columns["county"]))
        hit = (columns["county"] == COUNTY) & (index >= change_at)
        for name in ("assessed_value", "market_value"):
            columns[name] = np.where(hit, np.round(columns[name] * factor), columns[name])
        return columns
    return apply


def one_county(scenario: str, order: str, seed: int, records: int, change_at: int,
               champion: Champion) -> Outcome:
    transform, affected, magnitude = None, None, None
    if scenario == "value-shift-0.5sd":
        transform = value_shift(1.45, change_at)
        config = SimulatorConfig(seed=seed, labelled_share=0.3, county=COUNTY)
        affected = {"assessed_value", "market_value"}
    else:
        magnitude = 0.45 if scenario == "reassessment" else None
        config = SimulatorConfig(seed=seed, labelled_share=0.3, county=COUNTY,
                                 scenario=scenario, change_at=change_at, magnitude=magnitude,
                                 duration=records if scenario == "unit-bug" else None)
    simulator = LevySimulator(config)
    truth = simulator.ground_truth(records)
    affected = affected or set(truth.affected_signals)
    columns = arrived(simulator, records, order, champion, transform)
    hit = (columns["county"] == COUNTY) & (columns["index"] >= change_at)
    if truth.affected_districts and scenario == "district-levy-change":
        hit &= np.isin(columns["tax_district"], truth.affected_districts)
    onset = int(np.flatnonzero(hit)[0])
    decisions, _ = feed(SegmentedBank(STRATA), columns)
    before = [d for d in decisions if d.detected_at < onset]
    after = [d for d in decisions if d.detected_at >= onset]
    if not after:
        return Outcome(False, len(before), False, False, None, "-")
    first = after[0]
    named = f"county={COUNTY}" in first.segment.split(",")
    right = bool(set(first.signal_names) & (affected | MODEL_SIGNALS))
    county_rows = columns["county"][onset:first.detected_at + 1] == COUNTY
    return Outcome(True, len(before), named, right, int(county_rows.sum()),
                   f"{first.segment or '(stream)'}: {'+'.join(first.signal_names)}")


def scenario_table(seeds: int, records: int) -> str:
    # On a day boundary: within a day the records are re-ordered, so a change in mid-day
    # would arrive mixed with the records before it (a spread change, not a shift).
    change_at = max(DAY_RECORDS, records // 2 // DAY_RECORDS * DAY_RECORDS)
    scenarios = ("value-shift-0.5sd", "reassessment", "district-levy-change", "unit-bug")
    lines = ["| scenario | order | detected | decisions before onset | names county=Grant | "
             "right signal | delay, records of Grant: median (min-max) | first decisions |",
             "|---|---|---|---|---|---|---|---|"]
    champions = {seed: champion_for(seed) for seed in range(seeds)}
    for scenario in scenarios:
        for order in ORDERS:
            outcomes = [one_county(scenario, order, seed, records, change_at, champions[seed])
                        for seed in range(seeds)]
            delays = sorted(o.delay_county_records for o in outcomes
                            if o.delay_county_records is not None)
            delay = (f"{statistics.median(delays):,.0f} ({delays[0]:,}-{delays[-1]:,})"
                     if delays else "-")
            firsts = "; ".join(sorted({o.first for o in outcomes}))
            lines.append(f"| {scenario} | {order} | {sum(o.detected for o in outcomes)}/{seeds}"
                         f" | {sum(o.before for o in outcomes)} | "
                         f"{sum(o.named for o in outcomes)}/{seeds} | "
                         f"{sum(o.right_signal for o in outcomes)}/{seeds} | {delay} | "
                         f"{firsts} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scenario-records", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["none", "scenarios"])
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    machine = describe()
    print(machine, flush=True)
    started = time.perf_counter()
    parts = [HEADING, "", "Produced by `bench/bench_arrival_orders.py` "
             f"(`--records {args.records} --seeds {args.seeds} --scenario-records "
             f"{args.scenario_records}`).", "", f"Machine: {machine}.", ""]
    if "none" not in args.skip:
        table, kept = none_table(args.records, 0)
        speed = throughput({k: {n: v[:500_000] for n, v in c.items()} for k, c in kept.items()},
                           args.repeats)
        memory = footprint({n: v[:100_000] for n, v in kept["time"].items()})
        print(memory, flush=True)
        parts += [f"`none`, {args.records:,} records per order, decisions (all false):", "",
                  table, "", "Throughput (the first 500,000 records of each order, batches "
                  f"of {BATCH:,}, {args.repeats} runs, the banks taking turns every 10 "
                  "batches, wall):", "", speed, "", memory, ""]
    if "scenarios" not in args.skip:
        table = scenario_table(args.seeds, args.scenario_records)
        parts += [f"One-county scenarios ({COUNTY}, ~20 % of records; {args.seeds} seeds, "
                  f"{args.scenario_records:,} records, change at record "
                  f"{max(DAY_RECORDS, args.scenario_records // 2 // DAY_RECORDS * DAY_RECORDS):,}"
                  " (a day boundary) in event-time order; the onset is the arrival position "
                  "of the first changed record; in every order county segments with district "
                  "strata, `stratify_by = [tax_district]`):", "", table, ""]
    print(f"\n{time.perf_counter() - started:.0f} s wall")
    if args.write:
        write_section(args.write, "\n".join(parts), HEADING)


if __name__ == "__main__":
    main()
