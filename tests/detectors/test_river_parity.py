"""Our compiled Page-Hinkley and ADWIN must detect exactly where river's do."""

from __future__ import annotations

import numpy as np
import pytest
from river import drift

from detectors import kernels as k


def river_hits(detector, values: np.ndarray) -> list[int]:
    hits = []
    for index, value in enumerate(values):
        detector.update(float(value))
        if detector.drift_detected:
            hits.append(index)
    return hits


def ph_hits(values: np.ndarray, delta: float, threshold: float, alpha: float,
            min_instances: int, mode: int) -> list[int]:
    par = np.array([[delta, threshold, min_instances, alpha, mode, 0.0]])
    f = np.zeros((1, k.PH_FLOAT_COLUMNS))
    i = np.zeros((1, 2), dtype=np.int64)
    k.ph_reset(f, i, 0)
    return k.run_page_hinkley(values, par, f, i).tolist()


def adwin_hits(values: np.ndarray, delta: float, clock: int, grace: int = 10,
               min_window: int = 5, max_buckets: int = 5) -> list[int]:
    par = np.array([delta, clock, max_buckets, min_window, grace, 1.0, 0.0])
    s = np.zeros(k.AW_SCALARS)
    totals = np.zeros((k.AW_MAX_LEVELS, max_buckets + 1))
    variances = np.zeros_like(totals)
    counts = np.zeros(k.AW_MAX_LEVELS, dtype=np.int64)
    k.adwin_reset(s, totals, variances, counts)
    return k.run_adwin(values, par, s, totals, variances, counts).tolist()


def drifting_stream(seed: int, n: int = 6000) -> np.ndarray:
    """Noise whose mean and scale jump a few times, so both detectors fire repeatedly."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(n) * rng.choice([0.5, 1.0, 3.0])
    for cut in sorted(rng.integers(0, n, 4)):
        values[cut:] += rng.normal(0, 1.5)
    return values


@pytest.mark.parametrize("seed", range(6))
def test_page_hinkley_matches_river_at_its_defaults(seed: int) -> None:
    values = drifting_stream(seed)
    expected = river_hits(drift.PageHinkley(), values)
    assert ph_hits(values, 0.005, 50.0, 1 - 0.0001, 30, k.MODE_BOTH) == expected


@pytest.mark.parametrize(("seed", "mode", "river_mode"),
                         [(10, k.MODE_BOTH, "both"), (11, k.MODE_UP, "up"),
                          (12, k.MODE_DOWN, "down"), (13, k.MODE_BOTH, "both")])
def test_page_hinkley_matches_river_at_bank_settings(seed: int, mode: int,
                                                     river_mode: str) -> None:
    values = drifting_stream(seed, 20000)
    detector = drift.PageHinkley(min_instances=100, delta=0.125, threshold=20.0, alpha=1.0,
                                 mode=river_mode)
    expected = river_hits(detector, values)
    assert expected, "the stream should make river fire at least once"
    assert ph_hits(values, 0.125, 20.0, 1.0, 100, mode) == expected


@pytest.mark.parametrize(("seed", "delta", "clock"),
                         [(20, 0.002, 32), (21, 0.002, 1), (22, 1e-5, 32), (23, 0.1, 4),
                          (24, 0.002, 32)])
def test_adwin_matches_river(seed: int, delta: float, clock: int) -> None:
    values = drifting_stream(seed, 8000)
    expected = river_hits(drift.ADWIN(delta=delta, clock=clock), values)
    assert expected, "the stream should make river fire at least once"
    assert adwin_hits(values, delta, clock) == expected


def test_adwin_matches_river_on_integers_and_long_streams() -> None:
    rng = np.random.default_rng(30)
    values = np.concatenate([rng.integers(0, 2, 40000), rng.integers(0, 3, 40000)]).astype(
        float)
    assert adwin_hits(values, 0.002, 32) == river_hits(drift.ADWIN(), values)
