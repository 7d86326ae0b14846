"""Check the calibration theory of detectors/CALIBRATION.md by simulation.

    .venv/bin/python bench/calibrate_detectors.py [--values 20000000]

1. Page-Hinkley (alpha = 1) on N(0,1): observed mean run length to a false alarm at
   thresholds set for measurable targets (1e4..1e6), against Siegmund's approximation.
2. The bank's production parameters at the default rate: thresholds and expected delays.
3. ADWIN at the bank's delta and at river's default: false alarms on N(0,1) (theory: at most
   delta per check, i.e. delta / clock per value; the bound is loose).
4. Categorical CUSUM: observed run length against Lorden's bound exp(h).
5. One whole numeric channel (standardisation + all detectors) on stationary log-normal data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from detectors import DetectorBank, DetectorSettings, Reference  # noqa: E402
from detectors import kernels as k  # noqa: E402
from detectors.calibration import (  # noqa: E402
    expected_delay,
    page_hinkley_threshold,
    siegmund_arl,
)

ONE_SIGNAL = dict(numeric_signals=("x",), categorical_signals=(), prediction_signals=(),
                  performance_signals=())


def page_hinkley_alarms(values: np.ndarray, delta: float, threshold: float) -> int:
    par = np.array([[delta, threshold, 100, 1.0, k.MODE_UP, 0.0]])
    f, i = np.zeros((1, k.PH_FLOAT_COLUMNS)), np.zeros((1, 2), dtype=np.int64)
    k.ph_reset(f, i, 0)
    return len(k.run_page_hinkley(values, par, f, i))


def adwin_alarms(values: np.ndarray, delta: float, clock: int = 32) -> int:
    par = np.array([delta, clock, 5, 5, 10, 1.0, 0.0])
    state = (np.zeros(k.AW_SCALARS), np.zeros((k.AW_MAX_LEVELS, 6)),
             np.zeros((k.AW_MAX_LEVELS, 6)), np.zeros(k.AW_MAX_LEVELS, dtype=np.int64))
    k.adwin_reset(*state)
    return len(k.run_adwin(values, par, *state))


def section_page_hinkley(values: np.ndarray) -> None:
    print("\n1. Page-Hinkley, one-sided, N(0,1): observed vs Siegmund mean run length\n")
    print("| delta | target ARL0 | threshold | alarms | observed ARL0 |")
    print("|---|---|---|---|---|")
    for delta in (0.125, 0.25, 0.5):
        for target in (1e4, 1e5, 1e6):
            h = page_hinkley_threshold(delta, target)
            alarms = page_hinkley_alarms(values, delta, h)
            observed = f"{values.size / alarms:,.0f}" if alarms else f"> {values.size:,}"
            print(f"| {delta} | {target:,.0f} | {h:.2f} | {alarms} | {observed} |")


def section_production() -> None:
    settings = DetectorSettings()
    bank = DetectorBank(settings)
    channel = bank.channels["levy_rate"]
    print(f"\n2. Production parameters (false_alarm_rate={settings.false_alarm_rate:g} per "
          f"value per signal, {round(settings.false_alarm_rate / channel.rate_per_test)} "
          f"one-sided tests -> {channel.rate_per_test:.2e} each)\n")
    print("| detector | delta | threshold h | ARL0 (Siegmund) | E[delay] 0.25s | 0.5s | 1s |")
    print("|---|---|---|---|---|---|---|")
    for name, par in zip(channel.ph_names, channel.ph_par, strict=True):
        delta, h = par[k.PH_DELTA], par[k.PH_THRESHOLD]
        delays = " | ".join(f"{expected_delay(delta, h, s):,.0f}" for s in (0.25, 0.5, 1.0))
        print(f"| {name} | {delta:.4g} | {h:.2f} | {siegmund_arl(delta, h):.2e} | {delays} |")
    print(f"| adwin | {channel.aw_par[k.AW_DELTA]:.2e} | (clock "
          f"{int(channel.aw_par[k.AW_CLOCK])}) | >= {1 / channel.rate_per_test:.2e} | | | |")
    print("\nCategorical: h = log(1 / rate per test), 2 tests per bucket (categories + "
          "other + new); see section 4.")


def section_adwin(values: np.ndarray) -> None:
    rate_per_test = DetectorBank(DetectorSettings()).channels["levy_rate"].rate_per_test
    print("\n3. ADWIN on N(0,1)\n")
    print("| delta | bound on false alarms per value | alarms | observed per value |")
    print("|---|---|---|---|")
    for delta in (rate_per_test * 32, 1e-4, 0.002):
        alarms = adwin_alarms(values, delta)
        print(f"| {delta:.2e} | {delta / 32:.2e} | {alarms} | {alarms / values.size:.2e} |")


def section_categorical(n: int, rng: np.random.Generator) -> None:
    print("\n4. Categorical CUSUM (6 categories + other + new, shares of property_class)\n")
    print("| h | Lorden bound exp(h) per test | tests | alarms | observed ARL0 |")
    print("|---|---|---|---|---|")
    shares = np.array([0.55, 0.2, 0.12, 0.06, 0.04, 0.03, 0.0, 1e-4])
    shares = shares / shares.sum()
    codes = rng.choice(shares.size, n, p=shares).astype(np.int64)
    for h in (6.0, 8.0, 10.0):
        alarms = _categorical_alarms(codes, shares, h)
        observed = f"{n / alarms:,.0f}" if alarms else f"> {n:,}"
        print(f"| {h} | {np.exp(h):,.0f} | {2 * shares.size} | {alarms} | {observed} |")


def _categorical_alarms(codes: np.ndarray, shares: np.ndarray, h: float) -> int:
    buckets = shares.size
    par = np.array([h, 0.05, 0.01, 512.0])
    state, counts = np.array([0.0, 0.0, 0.0, 2000.0]), np.zeros(buckets)
    llr, cusum = np.zeros((4, buckets)), np.zeros((2, buckets))
    book, counters = np.zeros((4, buckets), dtype=np.int64), np.zeros(3, dtype=np.int64)
    k.category_restart(state, counts, cusum, book, counters, 0, 50000.0, 100.0)
    ring, ring_positions, alarm = np.zeros(64, np.int64), np.zeros(64, np.int64), np.zeros(6)
    positions = np.arange(codes.size, dtype=np.int64)
    alarms, start = 0, 0
    while start < codes.size:
        start = k.run_categorical(codes, positions, start, buckets - 2, par, state, counts,
                                  shares, llr, cusum, book, ring, ring_positions, counters,
                                  alarm)
        if alarm[0]:
            alarms += 1
            alarm[:] = 0.0
    return alarms


def section_channel(n: int, rng: np.random.Generator) -> None:
    settings = DetectorSettings(**ONE_SIGNAL)
    bank = DetectorBank(settings, Reference.from_columns({"x": rng.lognormal(12, 0.8, 50000)}))
    alarms = 0
    for first in range(0, n, 1_000_000):
        size = min(1_000_000, n - first)
        alarms += len(bank.channels["x"].feed(rng.lognormal(12, 0.8, size),
                                              np.arange(first, first + size)))
    print(f"\n5. One numeric channel, all detectors, log-normal values: {alarms} alarms in "
          f"{n:,} values (budget {settings.false_alarm_rate * n:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--values", type=int, default=20_000_000)
    args = parser.parse_args()
    print(describe())
    rng = np.random.default_rng(11)
    started = time.process_time()
    values = rng.standard_normal(args.values)
    section_page_hinkley(values)
    section_production()
    section_adwin(values)
    section_categorical(args.values // 2, rng)
    section_channel(args.values, rng)
    print(f"\n({time.process_time() - started:.0f} s CPU)")


if __name__ == "__main__":
    main()
