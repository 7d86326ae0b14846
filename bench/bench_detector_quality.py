"""Detector quality: false decisions on stationary data, detection delay on synthetic changes,
and the same for river's ADWIN and Page-Hinkley at their defaults on raw values.

    .venv/bin/python bench/bench_detector_quality.py [--stationary 10000000] [--runs 100]

Streams come from detectors.synthetic (log-normal money values, zero-inflated exemptions,
Zipf-like categories). The baseline is computed with detectors.kernels.run_adwin /
run_page_hinkley, which reproduce river's detections exactly (tests/unit/
test_detectors_river_parity.py) and are fast enough for millions of values.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from detectors import DetectorBank, DetectorSettings, Reference  # noqa: E402
from detectors import kernels as k  # noqa: E402
from detectors.segments import SegmentedBank  # noqa: E402
from detectors.synthetic import stationary_batch  # noqa: E402

SETTINGS = DetectorSettings()
PRE_CHANGE = 5000  # stationary records before each change
HORIZON = 20000  # records after the change before a run counts as a miss
RATE_MEAN, RATE_STD = 0.012, 0.0027  # the Gaussian signal that carries the mean shifts


def stream(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Stationary levy stream; levy_rate is Gaussian so "k sigma" has its usual meaning."""
    columns = stationary_batch(SETTINGS, n, rng)
    columns["levy_rate"] = rng.normal(RATE_MEAN, RATE_STD, n)
    return columns


# ------------------------------------------------------------------------ scenarios

def mean_shift(sigmas: float) -> Callable[[dict, np.random.Generator], str]:
    def apply(columns: dict, rng: np.random.Generator) -> str:
        columns["levy_rate"][PRE_CHANGE:] += sigmas * RATE_STD
        return "levy_rate"
    return apply


def variance_increase(columns: dict, rng: np.random.Generator) -> str:
    tail = columns["levy_rate"][PRE_CHANGE:]
    columns["levy_rate"][PRE_CHANGE:] = RATE_MEAN + (tail - RATE_MEAN) * np.sqrt(1.5)
    return "levy_rate"


def share_shift(columns: dict, rng: np.random.Generator) -> str:
    """Five points of property_class share move from residential (55%) to commercial."""
    classes = columns["property_class"]
    move = (classes == "residential") & (rng.random(classes.size) < 0.05 / 0.55)
    move[:PRE_CHANGE] = False
    classes[move] = "commercial"
    return "property_class"


def new_category(columns: dict, rng: np.random.Generator) -> str:
    """A never-seen property class takes 2% of records."""
    classes = columns["property_class"]
    rows = rng.random(classes.size) < 0.02
    rows[:PRE_CHANGE] = False
    classes[rows] = "solar-farm"
    return "property_class"


SCENARIOS = {
    "mean +0.25 sigma": mean_shift(0.25),
    "mean +0.5 sigma": mean_shift(0.5),
    "mean +1 sigma": mean_shift(1.0),
    "variance x1.5": variance_increase,
    "category share 5 points": share_shift,
    "new category (2%)": new_category,
}
TARGETS = {"mean +0.25 sigma": 600, "mean +0.5 sigma": 150, "mean +1 sigma": 50}


# ------------------------------------------------------------------------ stationary

def stationary(n: int, seed: int) -> tuple[dict[str, int], dict[str, int], float]:
    """False decisions per signal over n stationary records, the bank and the baseline."""
    rng = np.random.default_rng(seed)
    bank = DetectorBank(SETTINGS, Reference.from_columns(stream(50000, rng)))
    baseline = RiverBaseline(SETTINGS.numeric_like())
    ours: dict[str, int] = collections.Counter()
    theirs: dict[str, int] = collections.Counter()
    chunk = 1_000_000
    started = time.process_time()
    for first in range(0, n, chunk):
        size = min(chunk, n - first)
        columns = stream(size, rng)
        positions = np.arange(first, first + size, dtype=np.int64)
        for decision in bank.update(columns, positions):
            for name in decision.signal_names:
                ours[name] += 1
        for name, hits in baseline.feed(columns).items():
            theirs[name] += len(hits)
    return ours, theirs, time.process_time() - started


class RiverBaseline:
    """river.drift.ADWIN() and PageHinkley() at defaults on each raw numeric signal."""

    def __init__(self, signals: tuple[str, ...]) -> None:
        self.state = {}
        for name in signals:
            ph_f, ph_i = np.zeros((1, k.PH_FLOAT_COLUMNS)), np.zeros((1, 2), dtype=np.int64)
            k.ph_reset(ph_f, ph_i, 0)
            aw = (np.zeros(k.AW_SCALARS), np.zeros((k.AW_MAX_LEVELS, 6)),
                  np.zeros((k.AW_MAX_LEVELS, 6)), np.zeros(k.AW_MAX_LEVELS, dtype=np.int64))
            k.adwin_reset(*aw)
            self.state[name] = (ph_f, ph_i, aw)
        self.ph_par = np.array([[0.005, 50.0, 30, 1 - 0.0001, k.MODE_BOTH, 0.0]])
        self.aw_par = np.array([0.002, 32, 5, 5, 10, 1.0, 0.0])
        self.seen = 0

    def feed(self, columns: dict) -> dict[str, np.ndarray]:
        """Alarm indices (relative to everything fed so far) per signal."""
        hits = {}
        for name, (ph_f, ph_i, aw) in self.state.items():
            values = np.ascontiguousarray(columns[name], dtype=np.float64)
            ph = k.run_page_hinkley(values, self.ph_par, ph_f, ph_i)
            adwin = k.run_adwin(values, self.aw_par, *aw)
            hits[name] = np.union1d(ph, adwin) + self.seen
        self.seen += len(next(iter(columns.values())))
        return hits


# ------------------------------------------------------------------------ delays

@dataclass
class Outcome:
    delays: list[int]
    runs: int
    attributed: int
    false_before: int


def delays(scenario: Callable, runs: int, seed: int, reference: Reference,
           baseline: dict | None = None) -> tuple[Outcome, Outcome | None]:
    """Bank outcome, and the baseline's (None for a categorical change: no detector)."""
    ours = Outcome([], runs, 0, 0)
    theirs = Outcome([], runs, 0, 0)
    numeric = True
    for run in range(runs):
        rng = np.random.default_rng(seed + run)
        columns = stream(PRE_CHANGE + HORIZON, rng)
        target = scenario(columns, rng)
        _score_bank(columns, target, reference, ours, baseline)
        numeric = target in SETTINGS.numeric_like()
        if numeric:
            _score_baseline(columns, target, theirs)
    return ours, theirs if numeric else None


def _score_bank(columns: dict, target: str, reference: Reference, out: Outcome,
                baseline: dict | None = None) -> None:
    """The bank, or with ``baseline`` (the reference rows) the segmented bank (segments =
    the synthetic stream's 39 counties), each segment warmed up on its baseline rows."""
    if baseline is None:
        bank = DetectorBank(SETTINGS, reference)
    else:
        bank = SegmentedBank(SETTINGS, reference)
        bank.learn(baseline)
    positions = np.arange(len(columns[target]), dtype=np.int64)
    decisions = []
    for first in range(0, positions.size, 4096):
        decisions += bank.update({n: v[first:first + 4096] for n, v in columns.items()},
                                 positions[first:first + 4096])
    before = [d for d in decisions if d.detected_at < PRE_CHANGE]
    after = [d for d in decisions if d.detected_at >= PRE_CHANGE]
    out.false_before += len(before)
    if after:
        if target in after[0].signal_names:
            out.attributed += 1
        hit = next((d for d in after if target in d.signal_names), None)
        if hit is not None:
            out.delays.append(hit.detected_at - PRE_CHANGE + 1)


def _score_baseline(columns: dict, target: str, out: Outcome) -> None:
    hits = RiverBaseline(SETTINGS.numeric_like()).feed(columns)
    out.false_before += sum(int((h < PRE_CHANGE).sum()) for h in hits.values())
    first_after = {name: h[h >= PRE_CHANGE][0] for name, h in hits.items()
                   if (h >= PRE_CHANGE).any()}
    if first_after:
        if min(first_after, key=lambda name: first_after[name]) == target:
            out.attributed += 1
        if target in first_after:
            out.delays.append(int(first_after[target]) - PRE_CHANGE + 1)


def row(name: str, outcome: Outcome, target: int | None) -> str:
    detected = len(outcome.delays)
    if detected:
        median = int(np.median(outcome.delays))
        p90 = int(np.percentile(outcome.delays, 90))
        delay = f"{median} / {p90}"
    else:
        median, delay = None, "-"
    verdict = "" if target is None or median is None else (
        " (met)" if median <= target else f" (missed by {median - target})")
    pre_change = outcome.false_before / (outcome.runs * PRE_CHANGE) * 1e6
    return (f"| {name} | {detected}/{outcome.runs} | {delay}{verdict} | "
            f"{outcome.attributed}/{outcome.runs} | {pre_change:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stationary", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--segmented", action="store_true",
                        help="delays only, of the SegmentedBank (segments: county), each "
                             "segment warmed up on the 50,000 reference rows")
    args = parser.parse_args()
    if args.segmented:
        segmented_delays(args)
        return
    print(describe())
    print(f"\nStationary: {args.stationary:,} records x {len(SETTINGS.all_signals())} signals")
    ours, theirs, seconds = stationary(args.stationary, args.seed)
    print(f"({seconds:.0f} s CPU)\n")
    print("| signal | bank false decisions | per million | river ADWIN+PH alarms | per million |")
    print("|---|---|---|---|---|")
    million = args.stationary / 1e6
    for name in SETTINGS.all_signals():
        theirs_text = (f"{theirs[name]} | {theirs[name] / million:.1f}"
                       if name in SETTINGS.numeric_like() else "n/a | n/a")
        print(f"| {name} | {ours[name]} | {ours[name] / million:.2f} | {theirs_text} |")
    reference = Reference.from_columns(stream(50000, np.random.default_rng(args.seed - 1)))
    print(f"\nChanges after {PRE_CHANGE} stationary records, {args.runs} runs each, horizon "
          f"{HORIZON}; delay = records from the change to the decision (median | p90);\n"
          "attributed = the first decision after the change names the changed signal; "
          "pre-change = false decisions/alarms per million records before the change.\n")
    header = ("| scenario | detected | delay median / p90 | attributed | "
              "pre-change false per M |\n|---|---|---|---|---|")
    baseline_rows = []
    all_delays: dict[str, list[int]] = {}
    print("Bank (defaults):\n" + header)
    for offset, (name, scenario) in enumerate(SCENARIOS.items()):
        ours_outcome, theirs_outcome = delays(scenario, args.runs, args.seed + 1000 * offset,
                                              reference)
        print(row(name, ours_outcome, TARGETS.get(name)), flush=True)
        all_delays[name] = ours_outcome.delays
        if theirs_outcome is not None:
            baseline_rows.append(row(name, theirs_outcome, None))
        else:
            baseline_rows.append(f"| {name} | n/a (no categorical detector) | | | |")
    print("\nriver ADWIN + PageHinkley at defaults on raw values (all numeric signals):\n"
          + header)
    print("\n".join(baseline_rows))
    print("\nBank delay quartiles (25/50/75%): " + "; ".join(
        f"{name}: " + "/".join(str(int(q)) for q in np.percentile(values, [25, 50, 75]))
        for name, values in all_delays.items() if values))


def segmented_delays(args: argparse.Namespace) -> None:
    print(describe())
    baseline = stream(50000, np.random.default_rng(args.seed - 1))
    reference = Reference.from_columns(baseline)
    print(f"\nSegmentedBank (county), changes after {PRE_CHANGE} records, {args.runs} runs:\n"
          "| scenario | detected | delay median / p90 | attributed | "
          "pre-change false per M |\n|---|---|---|---|---|")
    for offset, (name, scenario) in enumerate(SCENARIOS.items()):
        ours, _ = delays(scenario, args.runs, args.seed + 1000 * offset, reference, baseline)
        print(row(name, ours, TARGETS.get(name)), flush=True)


if __name__ == "__main__":
    main()
