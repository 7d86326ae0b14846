"""Standardisation and the lazy categorical CUSUM against plain references."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import ndtri

from detectors import NumericReference
from detectors import kernels as k


def test_normal_quantile_agrees_with_scipy() -> None:
    p = np.concatenate([np.linspace(1e-9, 1 - 1e-9, 2001), [1e-6, 0.02425, 0.5, 0.97575]])
    ours = np.array([k.normal_quantile(v) for v in p])
    np.testing.assert_allclose(ours, ndtri(p), rtol=1e-8, atol=1e-9)


def test_standardised_lognormal_values_are_standard_normal() -> None:
    rng = np.random.default_rng(1)
    reference = NumericReference.from_values(rng.lognormal(12, 1.0, 50000))
    z, w = k.standardise(rng.lognormal(12, 1.0, 200000), *reference.arrays(),
                         reference.u_min())
    for scores in (z, w):
        assert abs(scores.mean()) < 0.02
        assert abs(scores.std() - 1.0) < 0.02
    # A parcel a thousand times the usual value has a bounded score, not a huge one.
    huge, _ = k.standardise(np.array([1e12]), *reference.arrays(), reference.u_min())
    assert 3.0 < huge[0] < 5.0


def test_atoms_get_their_mid_rank() -> None:
    values = np.concatenate([np.zeros(700), np.arange(1, 301, dtype=float)])
    reference = NumericReference.from_values(values)
    z, _ = k.standardise(np.array([0.0, np.nan]), *reference.arrays(), reference.u_min())
    assert z[0] == pytest.approx(ndtri(0.35), abs=1e-6)
    assert math.isnan(z[1])


def eager_categorical(codes: np.ndarray, n_known: int, par: np.ndarray, shares: np.ndarray,
                      prior_weight: float, gate: int, relearn: int) -> list[int]:
    """Textbook CUSUMs updating every bucket on every value; returns alarm indices."""
    buckets = n_known + 2
    counts = np.zeros(buckets)
    cusum = np.zeros((2, buckets))
    llr = np.zeros((4, buckets))
    state = np.array([0.0, prior_weight, gate, relearn])
    hits = []
    for index, code in enumerate(codes):
        bucket = min(code, n_known + 1)
        counts[bucket] += 1
        state[k.CS_SINCE] += 1
        if state[k.CS_SINCE] < state[k.CS_GATE]:
            continue
        if (state[k.CS_SINCE] == state[k.CS_GATE]
                or int(state[k.CS_SINCE]) % int(par[k.CP_REFRESH]) == 0):
            k.category_refresh(par, state, counts, shares, llr)
        for j in range(buckets):
            hit = j == bucket
            cusum[0, j] = max(0.0, cusum[0, j] + (llr[0, j] if hit else llr[1, j]))
            cusum[1, j] = max(0.0, cusum[1, j] + (llr[2, j] if hit else llr[3, j]))
        if (cusum > par[k.CP_THRESHOLD]).any():
            hits.append(index)
            counts[:] = 0
            cusum[:] = 0
            state[:3] = (0.0, 0.0, relearn)
    return hits


def lazy_categorical(codes: np.ndarray, n_known: int, par: np.ndarray, shares: np.ndarray,
                     prior_weight: float, gate: int, relearn: int) -> list[int]:
    buckets = n_known + 2
    state = np.array([0.0, 0.0, 0.0, relearn])
    counts, cusum = np.zeros(buckets), np.zeros((2, buckets))
    llr = np.zeros((4, buckets))
    book = np.zeros((4, buckets), dtype=np.int64)
    counters = np.zeros(3, dtype=np.int64)
    k.category_restart(state, counts, cusum, book, counters, 0, prior_weight, gate)
    ring, ring_positions = np.zeros(64, dtype=np.int64), np.zeros(64, dtype=np.int64)
    alarm = np.zeros(6)
    hits, start = [], 0
    positions = np.arange(len(codes), dtype=np.int64)
    while start < len(codes):
        start = k.run_categorical(codes, positions, start, n_known, par, state, counts,
                                  shares, llr, cusum, book, ring, ring_positions, counters,
                                  alarm)
        if alarm[0]:
            hits.append(start - 1)
            alarm[:] = 0
    return hits


@pytest.mark.parametrize("seed", range(4))
def test_lazy_categorical_cusum_alarms_where_the_eager_one_does(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_known = 5
    shares = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.04, 0.01])
    pieces = []
    for _ in range(4):  # regimes with different shares, some with new categories
        regime = rng.dirichlet(shares * 40)
        pieces.append(rng.choice(n_known + 2, 3000, p=regime))
    codes = np.concatenate(pieces).astype(np.int64)
    par = np.array([12.0, 0.05, 0.01, 64.0])
    eager = eager_categorical(codes, n_known, par, shares, 2000.0, 50, 500)
    assert eager, "the regime changes should raise alarms"
    assert lazy_categorical(codes, n_known, par, shares, 2000.0, 50, 500) == eager


@pytest.mark.parametrize(("upward_only", "levels"), [(False, 3), (True, 3), (False, 1),
                                                     (False, 5), (True, 8)])
def test_the_pooled_loop_runs_exactly_as_the_general_one(upward_only: bool,
                                                         levels: int) -> None:
    """``run_location_page_hinkley`` is ``run_numeric`` for the pooled layer's channels
    (given scores, location Page-Hinkley only): same stops, alarms and state, bit for bit,
    whatever the number of rows (they run in groups of four)."""
    from detectors.channels import NO_SCORES, NumericChannel
    from detectors.config import DetectorSettings

    settings = DetectorSettings(
        numeric_signals=("x",), categorical_signals=(), prediction_signals=(),
        performance_signals=("x",) if upward_only else (), scoring="given", adwin=False,
        spread=False, min_instances=30, performance_upward_only=upward_only,
        mean_shift_levels=levels)
    rng = np.random.default_rng(7)
    values = rng.standard_normal(60_000)
    values[rng.random(values.size) < 0.3] = np.nan
    for start, size in ((5_000, 0.6), (20_000, -0.8), (40_000, 1.5)):
        values[start:start + 8_000] += size  # alarms in both directions
    positions = np.arange(values.size, dtype=np.int64) * 3
    fast, general = NumericChannel("x", settings, None), NumericChannel("x", settings, None)
    reference = NumericReference.from_values(rng.standard_normal(1000))
    fast.set_reference(reference)
    general.set_reference(reference)
    assert fast.location_only
    stops = []
    for first in range(0, values.size, 2_500):  # batches, as the bank feeds them
        batch, where = values[first:first + 2_500], positions[first:first + 2_500]
        start = 0
        while start < batch.size:
            stop = fast._run(batch, where, start, None)
            assert stop == k.run_numeric(
                batch, where, start, general.knots, general.below, general.at_or_below,
                general.u_min, general.ph_par, general.ph_f, general.ph_i, general.aw_par,
                general.aw_s, general.aw_totals, general.aw_variances, general.aw_counts,
                general.ring_values, general.ring_positions, general.counters, general.alarm,
                general.scoring, NO_SCORES)
            for name in ("ph_f", "ph_i", "aw_s", "aw_totals", "aw_counts", "ring_values",
                         "ring_positions", "counters", "alarm"):
                np.testing.assert_array_equal(getattr(fast, name), getattr(general, name))
            if fast.alarm[:, k.AL_FIRED].any():
                stops.append(first + stop)
                fast.alarm[:] = 0.0
                general.alarm[:] = 0.0
            start = stop
    assert len(stops) >= (2 if upward_only else 3)


def test_the_compiler_starts_without_scipy_linalg_which_imports_as_usual_after() -> None:
    """``start_compiler`` keeps numba from importing scipy.linalg (~0.2 s of a command's
    start); the kernels still run, and scikit-learn's later ``import scipy.linalg`` works."""
    probe = ("import sys\n"
             "from detectors import kernels\n"
             "kernels.start_compiler()\n"
             "from numba.np import arraymath\n"
             "print('scipy.linalg' in sys.modules, arraymath._HAVE_BLAS)\n"
             "print(round(kernels.normal_quantile(0.975), 6))\n"
             "import scipy.linalg\n"
             "print(scipy.linalg.cholesky([[4.0]])[0][0])\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=300, check=True)
    assert result.stdout.split() == ["False", "False", "1.959964", "2.0"], result.stdout


def test_reference_knots_are_numpys_inverted_cdf_quantiles() -> None:
    """``knot_indices`` repeats numpy's index arithmetic for ``method="inverted_cdf"`` (the
    reference takes its knots from sorted data without ``np.quantile``): the same values for
    every sample size a district or a window can have, ties included."""
    from detectors.reference import KNOT_PROBABILITIES, knot_indices  # lazy: this test only

    rng = np.random.default_rng(7)
    for n in [*range(50, 2_100), 4_999, 5_000, 65_537]:
        data = np.sort(np.round(rng.normal(size=n), int(rng.integers(0, 4))))
        expected = np.quantile(data, KNOT_PROBABILITIES, method="inverted_cdf")
        np.testing.assert_array_equal(data[knot_indices(n)], expected, err_msg=f"n={n}")


def _adwin_check_cut_by_cut(par: np.ndarray, s: np.ndarray, totals: np.ndarray,
                            counts: np.ndarray, out: np.ndarray, scan_only: bool) -> bool:
    """river's cut loop, one cut at a time (as ``adwin_check`` was written before its cuts
    were taken in passes)."""
    n0, n1, u0, u1 = 0.0, s[k.AW_WIDTH], 0.0, s[k.AW_TOTAL]
    min_window = par[k.AW_MIN_WINDOW]
    log_term = math.log(2.0 * math.log(s[k.AW_WIDTH]) / par[k.AW_DELTA])
    mean_variance = s[k.AW_VARIANCE] / s[k.AW_WIDTH]
    best = 0.0
    for level in range(int(s[k.AW_LEVELS]) - 1, -1, -1):
        size = float(1 << level)
        for j in range(counts[level]):
            n0, n1 = n0 + size, n1 - size
            u0, u1 = u0 + totals[level, j], u1 - totals[level, j]
            if level == 0 and j == counts[level] - 1:
                out[3] = best
                return False
            diff = (u0 / n0) - (u1 / n1)
            if n1 >= min_window and n0 >= min_window:
                m_recip = 1.0 / (n0 - min_window + 1.0) + 1.0 / (n1 - min_window + 1.0)
                epsilon = (math.sqrt(2.0 * m_recip * mean_variance * log_term)
                           + 2.0 / 3.0 * log_term * m_recip)
                if scan_only:
                    best = max(best, abs(diff) / epsilon)
                elif abs(diff) > epsilon:
                    out[:] = abs(diff), epsilon, -1.0 if diff > 0.0 else 1.0, n1
                    return True
    out[3] = best
    return False


@pytest.mark.parametrize("scan_only", [False, True])
def test_adwin_cuts_in_passes_are_the_cut_by_cut_test(scan_only: bool) -> None:
    """The same verdict and the same numbers, to the bit, on buckets of every shape: no
    drift, a small and a large drift, sub-windows under ``min_window``."""
    rng = np.random.default_rng(3)
    par = np.array([0.002, 32, 5, 5, 10, 1, 0], dtype=np.float64)
    verdicts = set()
    for _ in range(400):
        levels = int(rng.integers(1, 20))
        counts = np.zeros(k.AW_MAX_LEVELS, dtype=np.int64)
        counts[:levels] = rng.integers(1, 6, size=levels)
        totals = np.zeros((k.AW_MAX_LEVELS, 6))
        shift = rng.choice([0.0, 0.3, 3.0])
        for level in range(levels):
            size = float(1 << level)
            mean = shift if level < levels // 2 else 0.0  # newer buckets sit at low levels
            totals[level, :counts[level]] = rng.normal(mean * size, np.sqrt(size),
                                                       counts[level])
        width = float(sum(counts[level] << level for level in range(levels)))
        if width < 2:
            continue
        s = np.array([totals.sum(), width * rng.uniform(0.5, 2.0), width, 0.0, float(levels)])
        got, want = np.zeros(4), np.zeros(4)
        fired = k.adwin_check(par, s, totals, counts, got, scan_only, k.adwin_scratch(totals))
        assert fired == _adwin_check_cut_by_cut(par, s, totals, counts, want, scan_only)
        np.testing.assert_array_equal(got, want)
        verdicts.add(fired)
    assert verdicts == ({False} if scan_only else {False, True})
