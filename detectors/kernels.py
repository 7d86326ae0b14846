"""Compiled per-signal loops: standardisation, Page-Hinkley, ADWIN, categorical CUSUM.

Every loop walks the values of one signal in order and carries its whole state in plain numpy
arrays, so a batch and the same values fed one at a time run the very same floating-point
operations (batch invariance), and a snapshot is just those arrays.

Page-Hinkley and ADWIN reproduce ``river.drift.PageHinkley`` and ``river.drift.ADWIN`` (0.26)
operation for operation; ``tests/detectors/test_river_parity.py`` checks the detections
are identical on random streams. A river detector resets itself on the update after a
detection; here the reset happens right after the detection, which is the same thing.

A loop stops right after the first value at which one of the signal's detectors fires and
returns the index of the next value; the bank records the alarm and calls it again.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from numba import njit
from numba.core.registry import cpu_target

# Page-Hinkley float state columns.
PH_N, PH_MEAN, PH_SUM_INC, PH_SUM_DEC, PH_MIN_INC, PH_MAX_DEC = range(6)
PH_FLOAT_COLUMNS = 6
# Page-Hinkley int state columns: count at which the minimum / maximum was last set.
PH_CP_INC, PH_CP_DEC = range(2)
# Page-Hinkley parameter columns.
PH_DELTA, PH_THRESHOLD, PH_MIN_INSTANCES, PH_ALPHA, PH_MODE, PH_SOURCE = range(6)
MODE_BOTH, MODE_UP, MODE_DOWN = 0, 1, 2
SOURCE_LOCATION, SOURCE_SPREAD = 0, 1

# ADWIN scalar state.
AW_TOTAL, AW_VARIANCE, AW_WIDTH, AW_TICK, AW_LEVELS = range(5)
AW_SCALARS = 5
# ADWIN parameters.
AW_DELTA, AW_CLOCK, AW_MAX_BUCKETS, AW_MIN_WINDOW, AW_GRACE, AW_ENABLED, AW_UP_ONLY = range(7)
AW_MAX_LEVELS = 48

# Counters: values seen, ring head, and (categorical) the next count at which a fall-CUSUM
# crosses its threshold.
C_COUNT, C_RING_HEAD, C_NEXT_CROSS = range(3)

# Alarm record (float): per detector row -> fired, statistic, threshold, direction, change count.
AL_FIRED, AL_STAT, AL_THRESHOLD, AL_DIRECTION, AL_CHANGE = range(5)
AL_COLUMNS = 5

# How run_numeric scores a value (see there).
SCORE_MID_RANK, SCORE_RANDOMISED, SCORE_GIVEN, SCORE_UNIFORM = 0, 1, 2, 3
# Salt of the stratum layer's atom draws, so they are independent of the segment's own.
STRATUM_DRAW_SALT = 0x5DEECE66D


def start_compiler() -> None:
    """Set numba's CPU target up now (~0.25 s, once per process; a command does it while its
    input is read) and without importing scipy.linalg. numba imports it there only to choose
    how ``np.convolve`` and ``np.correlate`` multiply (BLAS or a plain loop), which no kernel
    here calls; the import costs ~0.2 s, 0.13 of it numpy.f2py, pulled in by scipy's array-API
    layer. A ``None`` in ``sys.modules`` makes that import fail, so numba takes the plain
    loop; the entry is removed at once, so a later ``import scipy.linalg`` (scikit-learn)
    works as usual. No other thread may import scipy.linalg meanwhile (``check``'s file
    reader does not)."""
    if "numba.np.arraymath" in sys.modules:  # set up already
        return
    blocked = "scipy.linalg" not in sys.modules
    if blocked:
        sys.modules["scipy.linalg"] = None  # type: ignore[assignment]
    try:
        cpu_target.typing_context.refresh()
        cpu_target.target_context.refresh()
    finally:
        if blocked and sys.modules.get("scipy.linalg", 0) is None:
            del sys.modules["scipy.linalg"]


# ----------------------------------------------------------------------------- standardisation

@njit(cache=True, inline="always")
def normal_quantile(p: float) -> float:
    """Inverse standard normal CDF by Acklam's rational approximation (relative error below
    1.2e-9, ample for standardisation) so the compiled loop needs no scipy call."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    p_low = 0.02425
    if p < p_low:
        q = math.sqrt(-2.0 * math.log(p))
        x = ((((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q
                 - 2.400758277161838e+00) * q - 2.549732539343734e+00) * q
               + 4.374664141464968e+00) * q + 2.938163982698783e+00)
             / ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q
                  + 2.445134137142996e+00) * q + 3.754408661907416e+00) * q + 1.0))
    elif p <= 1.0 - p_low:
        q = p - 0.5
        r = q * q
        x = ((((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r
                 - 2.759285104469687e+02) * r + 1.383577518672690e+02) * r
               - 3.066479806614716e+01) * r + 2.506628277459239e+00) * q
             / (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r
                   - 1.556989798598866e+02) * r + 6.680131188771972e+01) * r
                 - 1.328068155288572e+01) * r + 1.0))
    else:
        q = math.sqrt(-2.0 * math.log(1.0 - p))
        x = -((((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q
                  - 2.400758277161838e+00) * q - 2.549732539343734e+00) * q
                + 4.374664141464968e+00) * q + 2.938163982698783e+00)
              / ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q
                   + 2.445134137142996e+00) * q + 3.754408661907416e+00) * q + 1.0))
    return x


@njit(cache=True, inline="always")
def reference_cdf(x: float, knots: np.ndarray, below: np.ndarray, at_or_below: np.ndarray,
                  u_min: float) -> float:
    """Reference CDF at ``x``: mid-rank at a knot (atoms such as a zero exemption), linear
    between knots, clipped to [u_min, 1 - u_min] so one extreme parcel has bounded weight."""
    return _cdf(x, knots, below, at_or_below, u_min, False, 0)


@njit(cache=True, inline="always")
def _cdf(x: float, knots: np.ndarray, below: np.ndarray, at_or_below: np.ndarray,
         u_min: float, randomised: bool, seed: int) -> float:
    """The reference CDF with a value on an atom placed at the mid-rank of the atom's jump
    or, ``randomised``, at ``_atom_draw(seed)`` of the way up it (drawn only then: most
    values of a continuous signal sit on no atom)."""
    n = knots.shape[0]
    # Count the knots <= x rather than binary-search them: with ~110 knots the count
    # vectorises and beats a search's unpredictable jumps by 2-3x.
    below_or_at = 0
    for index in range(n):
        below_or_at += knots[index] <= x
    j = below_or_at - 1
    if j < 0:
        u = 0.0
    elif knots[j] == x:
        if not randomised:
            u = 0.5 * (below[j] + at_or_below[j])
        else:
            u = below[j] + _atom_draw(seed) * (at_or_below[j] - below[j])
    elif j == n - 1:
        u = 1.0
    else:
        frac = (x - knots[j]) / (knots[j + 1] - knots[j])
        u = at_or_below[j] + frac * (below[j + 1] - at_or_below[j])
    return min(max(u, u_min), 1.0 - u_min)


@njit(cache=True)
def standardise(values: np.ndarray, knots: np.ndarray, below: np.ndarray,
                at_or_below: np.ndarray, u_min: float) -> tuple[np.ndarray, np.ndarray]:
    """Normal scores of location (z) and of spread (w) for an array; NaN stays NaN."""
    z = np.empty(values.shape[0])
    w = np.empty(values.shape[0])
    for i in range(values.shape[0]):
        if math.isnan(values[i]):
            z[i] = math.nan
            w[i] = math.nan
            continue
        z[i], w[i] = _scores(values[i], knots, below, at_or_below, u_min)
    return z, w


@njit(cache=True, inline="always")
def _atom_draw(position: int) -> float:
    """A uniform number in [0, 1) from a record's position (splitmix64): deterministic,
    whatever the batching."""
    h = np.uint64(position) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return float(h >> np.uint64(11)) / 9007199254740992.0


@njit(cache=True, inline="always")
def randomised_cdf(x: float, position: int, knots: np.ndarray, below: np.ndarray,
                   at_or_below: np.ndarray, u_min: float) -> float:
    """``reference_cdf``, but a value on an atom (a district's levy rate, a zero exemption)
    gets a uniform draw within the atom's CDF jump instead of its mid-rank (a randomised
    probability integral transform): the scores are then N(0, 1) even for a signal with a
    handful of distinct values, as the detectors' calibration assumes."""
    return _cdf(x, knots, below, at_or_below, u_min, True, position)


@njit(cache=True, nogil=True)
def stratum_scores(values: np.ndarray, grouping: np.ndarray, n_strata: int,
                   positions: np.ndarray, ready_from: np.ndarray, knots: np.ndarray,
                   below: np.ndarray, at_or_below: np.ndarray, n_knots: np.ndarray,
                   u_min: np.ndarray, out: np.ndarray) -> None:
    """Each of the rows ``grouping`` holds (``group_rows``', over ``n_strata``
    strata) as its value's probability under its stratum's reference (row ``s`` of the
    tables, ``n_knots`` long): a randomised probability integral transform, so the
    probabilities are U(0, 1) under no change even when a stratum's values are one atom (a
    district's levy rate). A row before its stratum's ``ready_from`` (batch index; the
    stratum warms up) or with a NaN value stays NaN.

    Each value's probability depends on its own stratum's table only, so the rows are taken
    stratum by stratum: one table at a time, with a knot count the loop predicts, costs
    ~30 ns per value against ~43 in record order."""
    starts = grouping[:n_strata + 1]
    grouped = grouping[n_strata + 1:]
    for s in range(n_strata):
        m = n_knots[s]
        table_knots, table_below, table_at = knots[s, :m], below[s, :m], at_or_below[s, :m]
        for g in range(starts[s], starts[s + 1]):
            i = grouped[g]
            x = values[i]
            if i < ready_from[s] or math.isnan(x):
                out[i] = math.nan
                continue
            out[i] = _cdf(x, table_knots, table_below, table_at, u_min[s], True,
                          positions[i] ^ STRATUM_DRAW_SALT)


@njit(cache=True, nogil=True)
def strictly_increasing(values: np.ndarray) -> bool:
    """Whether each value is above the one before (one pass, no temporary arrays)."""
    for index in range(1, values.shape[0]):  # noqa: SIM110 (numba: no generators)
        if values[index] <= values[index - 1]:
            return False
    return True


@njit(cache=True, nogil=True)
def group_rows(rows: np.ndarray, strata: np.ndarray, n_strata: int) -> np.ndarray:
    """``rows`` grouped by their group (``strata[row]`` < ``n_strata``: a record's stratum,
    or its segment) by a counting sort, each group in row order, after the ``n_strata + 1``
    group starts (one array: ``[starts..., rows...]``). The strata's grouping is the same
    for every signal of a batch, so it is made once."""
    grouped = np.zeros(n_strata + 1 + rows.shape[0], dtype=np.int64)
    starts = grouped[:n_strata + 1]
    for index in range(rows.shape[0]):
        starts[strata[rows[index]] + 1] += 1
    for s in range(n_strata):
        starts[s + 1] += starts[s]
    fill = starts[:n_strata].copy()
    into = grouped[n_strata + 1:]
    for index in range(rows.shape[0]):
        i = rows[index]
        into[fill[strata[i]]] = i
        fill[strata[i]] += 1
    return grouped


@njit(cache=True, nogil=True)
def collect_stratum_warmups(values: np.ndarray, rows: np.ndarray, strata: np.ndarray,
                            ready: np.ndarray, counts: np.ndarray, target: int,
                            into_values: np.ndarray, into_strata: np.ndarray, size: int,
                            ready_from: np.ndarray) -> int:
    """The values of ``rows`` (ascending; NaN skipped) whose stratum is not ``ready`` into
    the warm-up buffer (``into_values``/``into_strata`` from ``size``, room for every row),
    each stratum's up to its ``target``-th (``counts`` per stratum). A stratum reaching it
    gets ``ready_from`` = the batch index after that value. Returns the new size."""
    for index in range(rows.shape[0]):
        i = rows[index]
        s = strata[i]
        x = values[i]
        if ready[s] or counts[s] >= target or math.isnan(x):
            continue
        into_values[size], into_strata[size] = x, s
        size += 1
        counts[s] += 1
        if counts[s] == target:
            ready_from[s] = i + 1
    return size


@njit(cache=True, nogil=True)
def extract_warmups(values: np.ndarray, owners: np.ndarray, size: int,
                    among: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The entries of the warm-up buffer (``values``/``owners`` up to ``size``) whose
    stratum is ``among``, taken out in one pass: (their values, their strata, the new size),
    the rest moved up in place in their order."""
    taken_values = np.empty(size)
    taken_owners = np.empty(size, dtype=owners.dtype)
    taken = kept = 0
    for index in range(size):
        owner = owners[index]
        if among[owner]:
            taken_values[taken], taken_owners[taken] = values[index], owner
            taken += 1
        else:
            values[kept], owners[kept] = values[index], owner
            kept += 1
    return taken_values[:taken], taken_owners[:taken], kept


@njit(cache=True, inline="always")
def _scores_of(u: float, u_min: float) -> tuple[float, float]:
    folded = min(max(abs(2.0 * u - 1.0), 2.0 * u_min), 1.0 - 2.0 * u_min)
    return normal_quantile(u), normal_quantile(folded)


@njit(cache=True, inline="always")
def _scores(x: float, knots: np.ndarray, below: np.ndarray, at_or_below: np.ndarray,
            u_min: float) -> tuple[float, float]:
    return _scores_of(reference_cdf(x, knots, below, at_or_below, u_min), u_min)


# ----------------------------------------------------------------------------- Page-Hinkley

@njit(cache=True, inline="always")
def ph_reset(f: np.ndarray, i: np.ndarray, d: int) -> None:
    f[d, PH_N] = 0.0
    f[d, PH_MEAN] = 0.0
    f[d, PH_SUM_INC] = 0.0
    f[d, PH_SUM_DEC] = 0.0
    f[d, PH_MIN_INC] = math.inf
    f[d, PH_MAX_DEC] = -1.0  # river starts the maximum at -1, not -inf
    i[d, PH_CP_INC] = 0
    i[d, PH_CP_DEC] = 0


@njit(cache=True, inline="always")
def ph_mean_step(x: float, f: np.ndarray, d: int) -> tuple[float, float]:
    """river's running mean (stats.Mean) of detector row ``d`` after ``x``: (n, mean)."""
    return mean_step(f[d, PH_N], f[d, PH_MEAN], x)


@njit(cache=True, inline="always")
def mean_step(n: float, mean: float, x: float) -> tuple[float, float]:
    """river's running mean (stats.Mean) of ``n`` values after one more, ``x``: (n, mean)."""
    n = n + 1.0
    return n, mean + (1.0 / n) * (x - mean)


@njit(cache=True, inline="always")
def ph_update(x: float, n: float, mean: float, par: np.ndarray, f: np.ndarray, i: np.ndarray,
              d: int, count: int) -> int:
    """One river Page-Hinkley update of detector row ``d`` given its new running mean;
    returns +1 (increase), -1 (decrease) or 0. Rows are indexed, not sliced: a view per
    value costs more than the arithmetic."""
    dev = x - mean
    sum_inc = par[d, PH_ALPHA] * f[d, PH_SUM_INC] + dev - par[d, PH_DELTA]
    sum_dec = par[d, PH_ALPHA] * f[d, PH_SUM_DEC] + dev + par[d, PH_DELTA]
    f[d, PH_N] = n
    f[d, PH_MEAN] = mean
    f[d, PH_SUM_INC] = sum_inc
    f[d, PH_SUM_DEC] = sum_dec
    if sum_inc < f[d, PH_MIN_INC]:
        f[d, PH_MIN_INC] = sum_inc
        i[d, PH_CP_INC] = count
    if sum_dec > f[d, PH_MAX_DEC]:
        f[d, PH_MAX_DEC] = sum_dec
        i[d, PH_CP_DEC] = count
    if n < par[d, PH_MIN_INSTANCES]:
        return 0
    threshold = par[d, PH_THRESHOLD]
    mode = par[d, PH_MODE]
    if mode != MODE_DOWN and sum_inc - f[d, PH_MIN_INC] > threshold:
        return 1
    if mode != MODE_UP and f[d, PH_MAX_DEC] - sum_dec > threshold:
        return -1
    return 0


@njit(cache=True)
def run_page_hinkley(values: np.ndarray, par: np.ndarray, f: np.ndarray,
                     i: np.ndarray) -> np.ndarray:
    """A lone Page-Hinkley (row 0) over raw values, restarting after each detection like
    river's; returns the indices of detections. For parity tests and baselines."""
    hits = [np.int64(0) for _ in range(0)]
    for idx in range(values.shape[0]):
        n, mean = ph_mean_step(values[idx], f, 0)
        if ph_update(values[idx], n, mean, par, f, i, 0, idx + 1) != 0:
            hits.append(np.int64(idx))
            ph_reset(f, i, 0)
    return np.array(hits, dtype=np.int64)


@njit(cache=True)
def run_adwin(values: np.ndarray, par: np.ndarray, s: np.ndarray, totals: np.ndarray,
              variances: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """A lone ADWIN over raw values, restarting after each detection like river's; returns
    the indices of detections. For parity tests and baselines."""
    hits = [np.int64(0) for _ in range(0)]
    out = np.zeros(4)
    scratch = adwin_scratch(totals)
    for idx in range(values.shape[0]):
        adwin_insert(values[idx], par, s, totals, variances, counts)
        if adwin_due(par, s) and adwin_check(par, s, totals, counts, out, False, scratch):
            hits.append(np.int64(idx))
            adwin_reset(s, totals, variances, counts)
    return np.array(hits, dtype=np.int64)


@njit(cache=True)
def ph_statistic(par: np.ndarray, f: np.ndarray) -> float:
    """The larger of the two one-sided statistics the detector is testing."""
    up = f[PH_SUM_INC] - f[PH_MIN_INC] if par[PH_MODE] != MODE_DOWN else -math.inf
    down = f[PH_MAX_DEC] - f[PH_SUM_DEC] if par[PH_MODE] != MODE_UP else -math.inf
    value = max(up, down)
    return 0.0 if math.isinf(value) or math.isnan(value) else value


# ----------------------------------------------------------------------------- ADWIN

@njit(cache=True, inline="always")
def adwin_reset(s: np.ndarray, totals: np.ndarray, variances: np.ndarray,
                counts: np.ndarray) -> None:
    s[:] = 0.0
    s[AW_LEVELS] = 1.0
    totals[:, :] = 0.0
    variances[:, :] = 0.0
    counts[:] = 0


@njit(cache=True, inline="always")
def _adwin_push(level: int, total: float, variance: float, totals: np.ndarray,
                variances: np.ndarray, counts: np.ndarray) -> None:
    k = counts[level]
    totals[level, k] = total
    variances[level, k] = variance
    counts[level] = k + 1


@njit(cache=True, inline="always")
def _adwin_drop_front(level: int, n_drop: int, totals: np.ndarray, variances: np.ndarray,
                      counts: np.ndarray) -> None:
    k = counts[level]
    for j in range(k - n_drop):
        totals[level, j] = totals[level, j + n_drop]
        variances[level, j] = variances[level, j + n_drop]
    for j in range(k - n_drop, k):
        totals[level, j] = 0.0
        variances[level, j] = 0.0
    counts[level] = k - n_drop


@njit(cache=True, inline="always")
def adwin_insert(x: float, par: np.ndarray, s: np.ndarray, totals: np.ndarray,
                 variances: np.ndarray, counts: np.ndarray) -> None:
    """Add one value to the exponential histogram, merging full levels (ADWIN2)."""
    s[AW_TOTAL], s[AW_VARIANCE], s[AW_WIDTH], s[AW_LEVELS] = adwin_add(
        x, int(par[AW_MAX_BUCKETS]), s[AW_TOTAL], s[AW_VARIANCE], s[AW_WIDTH],
        s[AW_LEVELS], totals, variances, counts)


@njit(cache=True, inline="always")
def adwin_add(x: float, max_buckets: int, total: float, variance: float, width: float,
              levels: float, totals: np.ndarray, variances: np.ndarray,
              counts: np.ndarray) -> tuple[float, float, float, float]:
    """``adwin_insert`` on scalar state passed in and returned (total, variance, width,
    levels), so a loop can keep it in registers."""
    _adwin_push(0, x, 0.0, totals, variances, counts)
    width += 1.0
    increment = 0.0
    if width > 1.0:
        deviation = x - total / (width - 1.0)
        increment = (width - 1.0) * deviation * deviation / width
    variance += increment
    total += x
    level = 0
    while counts[level] == max_buckets + 1:
        size = float(1 << level)
        t0, t1 = totals[level, 0], totals[level, 1]
        mean0, mean1 = t0 / size, t1 / size
        merged_variance = (variances[level, 0] + variances[level, 1]
                           + size * 0.5 * (mean0 - mean1) * (mean0 - mean1))
        if level + 1 >= int(levels):
            levels += 1.0
        _adwin_push(level + 1, t0 + t1, merged_variance, totals, variances, counts)
        _adwin_drop_front(level, 2, totals, variances, counts)
        if counts[level + 1] <= max_buckets:
            break
        level += 1
    return total, variance, width, levels


@njit(cache=True, inline="always")
def _adwin_epsilon(n0: float, n1: float, min_window: float, mean_variance: float,
                   log_term: float) -> float:
    m_recip = 1.0 / (n0 - min_window + 1.0) + 1.0 / (n1 - min_window + 1.0)
    return (math.sqrt(2.0 * m_recip * mean_variance * log_term)
            + 2.0 / 3.0 * log_term * m_recip)


@njit(cache=True, inline="always")
def adwin_due(par: np.ndarray, s: np.ndarray) -> bool:
    """Count an update; True when ADWIN tests its cuts on it (every ``clock`` updates)."""
    s[AW_TICK] += 1.0
    # Integer modulo: a float % is a libm fmod call, the dearest thing in the hot loop.
    return int(s[AW_TICK]) % int(par[AW_CLOCK]) == 0 and s[AW_WIDTH] > par[AW_GRACE]


@njit(cache=True, inline="always")
def adwin_scratch(totals: np.ndarray) -> np.ndarray:
    """Room for ``adwin_check``'s cuts (one per bucket): made once per compiled call."""
    return np.empty((4, totals.size))


@njit(cache=True, error_model="numpy")
def adwin_check(par: np.ndarray, s: np.ndarray, totals: np.ndarray, counts: np.ndarray,
                out: np.ndarray, scan_only: bool, scratch: np.ndarray) -> bool:
    """ADWIN's cut test (kept out of line: it runs once per ``clock`` updates). On the first cut
    whose means differ by more than epsilon, writes (|diff|, epsilon, sign of the newer minus
    older mean, length of the newer sub-window) into ``out`` and returns True. With
    ``scan_only`` it writes the largest |diff| / epsilon ratio instead (for status gauges).

    Each cut's operations are river's, in its order; they are taken in three passes: the
    running sums of the sub-windows, cut by cut; then every cut's difference of means and its
    bound, a loop without branches whose divisions and square roots the compiler puts on
    vector lanes (the test's share of ``run_numeric``: ~19 -> ~13.5 ns per value); then the
    first cut over its bound. ``scratch``: ``adwin_scratch``'s, a column per bucket. A cut with a
    sub-window under ``min_window`` is not judged (its bound may be infinite: no division
    raises here)."""
    n0, n1 = 0.0, s[AW_WIDTH]
    u0, u1 = 0.0, s[AW_TOTAL]
    min_window = par[AW_MIN_WINDOW]
    # Loop invariants of river's per-cut bound, computed once (same values, same rounding).
    log_term = math.log(2.0 * math.log(s[AW_WIDTH]) / par[AW_DELTA])
    mean_variance = s[AW_VARIANCE] / s[AW_WIDTH]
    n0s, n1s, diffs, bounds = scratch[0], scratch[1], scratch[2], scratch[3]
    cuts = 0
    for level in range(int(s[AW_LEVELS]) - 1, -1, -1):
        size = float(1 << level)
        k_count = counts[level]
        for k in range(k_count):
            n0 += size
            n1 -= size
            u0 += totals[level, k]
            u1 -= totals[level, k]
            if level == 0 and k == k_count - 1:
                break  # the newest bucket: no cut after it
            n0s[cuts], n1s[cuts], diffs[cuts], bounds[cuts] = n0, n1, u0, u1
            cuts += 1
    for c in range(cuts):  # sums in, difference of means and bound out
        diffs[c] = (diffs[c] / n0s[c]) - (bounds[c] / n1s[c])
        bounds[c] = _adwin_epsilon(n0s[c], n1s[c], min_window, mean_variance, log_term)
    best = 0.0
    for c in range(cuts):
        if n1s[c] >= min_window and n0s[c] >= min_window:
            diff, epsilon = diffs[c], bounds[c]
            if scan_only:
                best = max(best, abs(diff) / epsilon)
            elif abs(diff) > epsilon:
                out[0] = abs(diff)
                out[1] = epsilon
                out[2] = -1.0 if diff > 0.0 else 1.0
                out[3] = n1s[c]
                return True
    out[3] = best
    return False


# ----------------------------------------------------------------------------- numeric signal

@njit(cache=True, inline="always")
def _adwin_scalars(s: np.ndarray) -> tuple[float, float, float, float, float]:
    """ADWIN's scalar state as locals: total, variance, width, tick, levels."""
    return s[AW_TOTAL], s[AW_VARIANCE], s[AW_WIDTH], s[AW_TICK], s[AW_LEVELS]


@njit(cache=True, inline="always")
def _store_adwin_scalars(s: np.ndarray, total: float, variance: float, width: float,
                         tick: float, levels: float) -> None:
    s[AW_TOTAL], s[AW_VARIANCE], s[AW_WIDTH], s[AW_TICK], s[AW_LEVELS] = (
        total, variance, width, tick, levels)


@njit(cache=True, nogil=True)
def run_numeric(values: np.ndarray, positions: np.ndarray, start: int,
                knots: np.ndarray, below: np.ndarray, at_or_below: np.ndarray, u_min: float,
                ph_par: np.ndarray, ph_f: np.ndarray, ph_i: np.ndarray,
                aw_par: np.ndarray, aw_s: np.ndarray, aw_totals: np.ndarray,
                aw_variances: np.ndarray, aw_counts: np.ndarray,
                ring_values: np.ndarray, ring_positions: np.ndarray, counters: np.ndarray,
                alarm: np.ndarray, scoring: int, scores_out: np.ndarray) -> int:
    """Feed values[start:] to one numeric signal's detectors; stop after the first alarm.
    ``scoring``: SCORE_MID_RANK (values on an atom of the reference get its mid-rank),
    SCORE_RANDOMISED (``randomised_cdf``), SCORE_GIVEN (the values are location scores
    already; no spread score, so spread detectors must be off) or SCORE_UNIFORM (the values
    are probabilities already, the stratum layer's: scored as ``randomised_cdf``'s are).
    A non-empty ``scores_out`` (same length as ``values``; empty = none wanted) receives
    each judged value's location score.

    Rows of ``alarm``: one per Page-Hinkley detector, then ADWIN. After an alarm every
    detector of the signal restarts, so the next alarm needs fresh evidence.

    The operations are ``ph_update``'s and ``adwin_insert``'s, detector by detector rather
    than value by value: the values are scored first; the Page-Hinkley rows run over them
    ``GROUP`` at a time with their state in scalars (``_location_group``: ~20 ns per value
    for five rows, against ~90 walking every row's state in arrays on every value), then
    ADWIN. Each detector is independent of the others until one fires, so the first alarm
    is where any of them fires first; a detector that ran past it runs again up to it.
    """
    size = values.shape[0] - start
    # One allocation for the per-value arrays (a call per segment holds few values): location
    # scores, then per source the deviations, value counts and running means.
    work = np.empty((7, size))
    zs, devs, ns, means = work[0], work[1:3], work[3:5], work[5:7]
    taken = np.empty((2, size), dtype=np.int64)  # batch index, value count
    count = counters[C_COUNT]
    # Each source's running mean (``ph_mean_step``), taken here rather than in a loop of its
    # own: its chain of dependent operations then overlaps the scoring of the next values.
    n_z, mean_z, has_z = _mean_start(ph_par, ph_f, SOURCE_LOCATION)
    n_w, mean_w, has_w = _mean_start(ph_par, ph_f, SOURCE_SPREAD)
    m = 0
    for idx in range(start, values.shape[0]):
        x = values[idx]
        if math.isnan(x):
            continue
        count += 1
        if scoring == SCORE_GIVEN:
            z, w = x, 0.0
        elif scoring == SCORE_UNIFORM:
            z, w = _scores_of(min(max(x, u_min), 1.0 - u_min), u_min)
        elif scoring == SCORE_RANDOMISED:
            z, w = _scores_of(randomised_cdf(x, positions[idx], knots, below, at_or_below,
                                             u_min), u_min)
        else:
            z, w = _scores(x, knots, below, at_or_below, u_min)
        zs[m], taken[0, m], taken[1, m] = z, idx, count
        if has_z:
            n_z, mean_z = mean_step(n_z, mean_z, z)
            devs[0, m], ns[0, m], means[0, m] = z - mean_z, n_z, mean_z
        if has_w:
            n_w, mean_w = mean_step(n_w, mean_w, w)
            devs[1, m], ns[1, m], means[1, m] = w - mean_w, n_w, mean_w
        m += 1
    if m == 0:
        return int(values.shape[0])
    rows, counts = taken[0, :m], taken[1, :m]
    return _detect(values, positions, zs[:m], rows, counts, devs, ns, means, ph_par,
                   ph_f, ph_i, aw_par, aw_s, aw_totals, aw_variances, aw_counts, ring_values,
                   ring_positions, counters, alarm, scores_out)


@njit(cache=True)
def _detect(values: np.ndarray, positions: np.ndarray, zs: np.ndarray, rows: np.ndarray,
            counts: np.ndarray, devs: np.ndarray, ns: np.ndarray, means: np.ndarray,
            ph_par: np.ndarray, ph_f: np.ndarray, ph_i: np.ndarray, aw_par: np.ndarray,
            aw_s: np.ndarray, aw_totals: np.ndarray, aw_variances: np.ndarray,
            aw_counts: np.ndarray, ring_values: np.ndarray, ring_positions: np.ndarray,
            counters: np.ndarray, alarm: np.ndarray, scores_out: np.ndarray) -> int:
    """The detectors of ``run_numeric`` (and of the pooled layer's location rows) over the
    ``len(rows)`` values of a call that are not NaN: their batch indices ``rows``, value
    counts, location scores ``zs`` (read for ADWIN and ``scores_out`` only) and, per source,
    deviations from the running mean, value counts and means. An empty ``aw_par`` means no
    ADWIN. Returns where the caller goes on, as ``run_numeric`` does."""
    n_ph = ph_par.shape[0]
    # Per group: first row, last row, value reached; then each row's direction if it fired.
    groups = np.zeros((4, n_ph), dtype=np.int64)
    directions = groups[3]
    state_f, state_i = ph_f.copy(), ph_i.copy()
    last, n_groups = rows.shape[0] - 1, 0
    first = 0
    while first < n_ph:  # rows watching one source, GROUP at a time
        source = int(ph_par[first, PH_SOURCE])
        top = min(first + GROUP - 1, n_ph - 1)
        while ph_par[top, PH_SOURCE] != source:
            top -= 1
        groups[0, n_groups], groups[1, n_groups] = first, top
        groups[2, n_groups] = _location_group(devs[source], ns[source], counts, last, ph_par,
                                              state_f, state_i, first, top, directions)
        last = min(last, groups[2, n_groups])
        n_groups += 1
        first = top + 1
    adwin_fired = False
    if aw_par.shape[0] and aw_par[AW_ENABLED] != 0.0:
        reached = _adwin_run(zs, counts, last, aw_par, aw_s, aw_totals, aw_variances,
                             aw_counts, alarm[n_ph])
        adwin_fired = reached >= 0
        if adwin_fired:
            last = reached
    for g in range(n_groups):  # ran past the first alarm: again from the start, up to it
        if groups[2, g] > last:
            first, top = groups[0, g], groups[1, g]
            state_f[first:top + 1], state_i[first:top + 1] = (ph_f[first:top + 1],
                                                              ph_i[first:top + 1])
            source = int(ph_par[first, PH_SOURCE])
            _location_group(devs[source], ns[source], counts, last, ph_par, state_f, state_i,
                            first, top, directions)
    for d in range(n_ph):
        source = int(ph_par[d, PH_SOURCE])
        state_f[d, PH_N], state_f[d, PH_MEAN] = ns[source, last], means[source, last]
    ph_f[:, :], ph_i[:, :] = state_f, state_i
    ring_size = ring_values.shape[0]
    head = counters[C_RING_HEAD]
    if scores_out.shape[0] > 0:
        for j in range(last + 1):
            scores_out[rows[j]] = zs[j]
    # Only the last ``ring_size`` values stay in the ring: the earlier ones are skipped,
    # the head moved past them.
    skipped = max(0, last + 1 - ring_size)
    head = (head + skipped) % ring_size
    for j in range(skipped, last + 1):
        ring_values[head] = values[rows[j]]
        ring_positions[head] = positions[rows[j]]
        head = head + 1 if head + 1 < ring_size else 0
    counters[C_COUNT], counters[C_RING_HEAD] = counts[last], head
    if not adwin_fired and not directions.any():
        return int(values.shape[0])
    _restart_after_alarm(directions, ph_par, ph_f, ph_i, aw_s, aw_totals, aw_variances,
                         aw_counts, alarm)
    return int(rows[last]) + 1


@njit(cache=True, inline="always")
def _restart_after_alarm(directions: np.ndarray, ph_par: np.ndarray, ph_f: np.ndarray,
                         ph_i: np.ndarray, aw_s: np.ndarray, aw_totals: np.ndarray,
                         aw_variances: np.ndarray, aw_counts: np.ndarray,
                         alarm: np.ndarray) -> None:
    """Record the alarm of each Page-Hinkley row that fired (``directions``; ADWIN records
    its own), then restart every detector of the signal."""
    for d in range(ph_par.shape[0]):
        if directions[d] != 0:
            _record_ph_alarm(alarm[d], directions[d], ph_par[d], ph_f[d], ph_i[d])
    for d in range(ph_par.shape[0]):
        ph_reset(ph_f, ph_i, d)
    adwin_reset(aw_s, aw_totals, aw_variances, aw_counts)


@njit(cache=True, inline="always")
def _mean_start(par: np.ndarray, f: np.ndarray, source: int) -> tuple[float, float, bool]:
    """The running mean's count and value before a call, for the rows watching ``source``:
    they restart together, so they share it bit for bit (the first such row's); False when
    no row watches it."""
    for d in range(par.shape[0]):
        if par[d, PH_SOURCE] == source:
            return f[d, PH_N], f[d, PH_MEAN], True
    return 0.0, 0.0, False


@njit(cache=True)
def _adwin_run(zs: np.ndarray, counts: np.ndarray, last: int, par: np.ndarray,
               s: np.ndarray, totals: np.ndarray, variances: np.ndarray, bucket_counts: np.ndarray,
               alarm_row: np.ndarray) -> int:
    """ADWIN over ``zs[:last + 1]`` (``adwin_insert``'s operations, its scalars in locals),
    up to the first value at which it fires: records the alarm in ``alarm_row`` and returns
    that value's index; -1 when it does not fire."""
    up_only = par[AW_UP_ONLY] != 0.0
    clock, grace = int(par[AW_CLOCK]), par[AW_GRACE]
    max_buckets = int(par[AW_MAX_BUCKETS])
    total, variance, width, tick, levels = _adwin_scalars(s)
    cut = np.zeros(4)
    scratch = adwin_scratch(totals)
    for j in range(last + 1):
        total, variance, width, levels = adwin_add(zs[j], max_buckets, total, variance, width,
                                                   levels, totals, variances, bucket_counts)
        tick += 1.0
        # Integer modulo: a float % is a libm fmod call, the dearest thing in the loop.
        if int(tick) % clock == 0 and width > grace:
            _store_adwin_scalars(s, total, variance, width, tick, levels)
            if adwin_check(par, s, totals, bucket_counts, cut, False, scratch):
                if not up_only or cut[2] > 0.0:
                    _record_alarm(alarm_row, cut[2], cut[0], cut[1], counts[j] - cut[3])
                    return j
                # A fall in error is no alarm, but river's ADWIN restarts anyway.
                adwin_reset(s, totals, variances, bucket_counts)
                total, variance, width, tick, levels = _adwin_scalars(s)
    _store_adwin_scalars(s, total, variance, width, tick, levels)
    return -1


# What stopped ``run_numeric_segments``.
SEGMENTS_DONE, SEGMENT_ALARM, SEGMENT_WARMED, POOL_ALARM = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def run_numeric_segments(values: np.ndarray, positions: np.ndarray, order: np.ndarray,
                         bounds: np.ndarray, first: int, active: np.ndarray,
                         knots: np.ndarray, below: np.ndarray, at_or_below: np.ndarray,
                         n_knots: np.ndarray, u_min: np.ndarray, ph_par: np.ndarray,
                         ph_f: np.ndarray, ph_i: np.ndarray, aw_par: np.ndarray,
                         aw_s: np.ndarray, aw_totals: np.ndarray, aw_variances: np.ndarray,
                         aw_counts: np.ndarray, ring_values: np.ndarray,
                         ring_positions: np.ndarray, counters: np.ndarray, alarm: np.ndarray,
                         scoring: int, scores_out: np.ndarray, warm_values: np.ndarray,
                         warm_row: np.ndarray, warm_count: np.ndarray, warm_span: np.ndarray,
                         warm_target: np.ndarray, pooled: bool, pool_ph_par: np.ndarray,
                         pool_ph_f: np.ndarray, pool_ph_i: np.ndarray, pool_aw_s: np.ndarray,
                         pool_aw_totals: np.ndarray, pool_aw_variances: np.ndarray,
                         pool_aw_counts: np.ndarray, pool_ring_values: np.ndarray,
                         pool_ring_positions: np.ndarray, pool_counters: np.ndarray,
                         pool_alarm: np.ndarray) -> tuple[int, int, int]:
    """``run_numeric`` for one signal of every segment from ``first`` on, in one call: segment
    ``s`` holds the records ``order[bounds[s]:bounds[s + 1]]`` (ascending) and its state in
    row ``s`` of every stacked array (reference tables padded, ``n_knots`` long). Each
    segment's records run through ``run_numeric`` itself, so every operation is the one a
    call per segment made. A segment not ``active`` is warming up: its values are collected
    in row ``warm_row[s]`` of ``warm_values`` (``warm_count`` of them, first and last
    position in ``warm_span``) up to its ``warm_target``. Returns (segment, index after
    the stopping value within its records, what stopped: ``SEGMENT_ALARM`` or
    ``SEGMENT_WARMED``), or (-1, index, ``SEGMENTS_DONE`` or, when the pooled layer
    stopped at an alarm, ``POOL_ALARM``); ``scores_out`` receives the
    location scores by record. ``pooled``: once every segment is done, the scores go through
    the pooled layer's channel (its ``pool_`` arrays) by ``run_location_page_hinkley``, in
    the same call (a call of its own per signal cost ~10 us); ``index`` is where that
    stopped, as ``run_location_page_hinkley`` returns it (0 when not ``pooled``)."""
    # Every record in segment order, gathered once (a gather per segment allocates).
    ordered_values = np.empty(order.shape[0])
    ordered_positions = np.empty(order.shape[0], dtype=np.int64)
    for index in range(bounds[first], order.shape[0]):
        ordered_values[index] = values[order[index]]
        ordered_positions[index] = positions[order[index]]
    ordered_scores = np.full(order.shape[0], np.nan)
    for s in range(first, bounds.shape[0] - 1):
        lo, hi = bounds[s], bounds[s + 1]
        if hi == lo:
            continue
        rows = order[lo:hi]
        if not active[s]:
            stop = _collect_warmup(values, positions, rows, s, warm_values[warm_row[s]],
                                   warm_count, warm_span, warm_target)
            if stop >= 0:
                return s, stop, SEGMENT_WARMED
            continue
        m = n_knots[s]
        stop = run_numeric(ordered_values[lo:hi], ordered_positions[lo:hi], 0, knots[s, :m],
                           below[s, :m], at_or_below[s, :m], u_min[s], ph_par[s], ph_f[s],
                           ph_i[s], aw_par, aw_s[s], aw_totals[s], aw_variances[s],
                           aw_counts[s], ring_values[s], ring_positions[s], counters[s],
                           alarm[s], scoring, ordered_scores[lo:hi])
        for index in range(stop):
            scores_out[rows[index]] = ordered_scores[lo + index]
        for row in range(alarm.shape[1]):
            if alarm[s, row, AL_FIRED] != 0.0:
                return s, stop, SEGMENT_ALARM
    if not pooled:
        return -1, 0, SEGMENTS_DONE
    stop = run_location_page_hinkley(scores_out, positions, 0, pool_ph_par, pool_ph_f,
                                     pool_ph_i, pool_aw_s, pool_aw_totals, pool_aw_variances,
                                     pool_aw_counts, pool_ring_values, pool_ring_positions,
                                     pool_counters, pool_alarm)
    for row in range(pool_alarm.shape[0]):
        if pool_alarm[row, AL_FIRED] != 0.0:
            return -1, stop, POOL_ALARM
    return -1, stop, SEGMENTS_DONE


@njit(cache=True, inline="always")
def _collect_warmup(values: np.ndarray, positions: np.ndarray, rows: np.ndarray, s: int,
                    into: np.ndarray, warm_count: np.ndarray, warm_span: np.ndarray,
                    warm_target: np.ndarray) -> int:
    """Segment ``s``'s values (NaN skipped) into its warm-up (``into``); the index after the
    value that completes it, or -1."""
    for index in range(rows.shape[0]):
        x = values[rows[index]]
        if math.isnan(x):
            continue
        count = warm_count[s]
        into[count] = x
        if count == 0:
            warm_span[s, 0] = positions[rows[index]]
        warm_span[s, 1] = positions[rows[index]]
        warm_count[s] = count + 1
        if count + 1 >= warm_target[s]:
            return index + 1
    return -1


@njit(cache=True, inline="always")
def _record_alarm(row: np.ndarray, direction: float, statistic: float, threshold: float,
                  change: float) -> None:
    row[AL_FIRED] = 1.0
    row[AL_STAT] = statistic
    row[AL_THRESHOLD] = threshold
    row[AL_DIRECTION] = direction
    row[AL_CHANGE] = change


@njit(cache=True)
def run_location_page_hinkley(values: np.ndarray, positions: np.ndarray, start: int,
                              ph_par: np.ndarray, ph_f: np.ndarray, ph_i: np.ndarray,
                              aw_s: np.ndarray, aw_totals: np.ndarray,
                              aw_variances: np.ndarray, aw_counts: np.ndarray,
                              ring_values: np.ndarray, ring_positions: np.ndarray,
                              counters: np.ndarray, alarm: np.ndarray) -> int:
    """``run_numeric`` for a signal of given scores watched by location Page-Hinkley rows
    only (no spread rows, ADWIN off: the pooled layer), operation for operation: the values
    are the scores, so it takes them and their running mean in one pass, then ``_detect``."""
    size = values.shape[0] - start
    # Per source, as ``_detect`` takes them: the location source only (every row's).
    devs, ns, means = np.empty((1, size)), np.empty((1, size)), np.empty((1, size))
    taken = np.empty((2, size), dtype=np.int64)  # batch index, value count
    n, mean = ph_f[0, PH_N], ph_f[0, PH_MEAN]
    count = counters[C_COUNT]
    m = 0
    for idx in range(start, values.shape[0]):
        x = values[idx]
        if math.isnan(x):
            continue
        count += 1
        n, mean = mean_step(n, mean, x)
        devs[0, m], ns[0, m], means[0, m] = x - mean, n, mean
        taken[0, m], taken[1, m] = idx, count
        m += 1
    if m == 0:
        return int(values.shape[0])
    no_values = np.empty(0)
    return _detect(values, positions, no_values, taken[0, :m], taken[1, :m], devs, ns, means,
                   ph_par, ph_f, ph_i, no_values, aw_s, aw_totals, aw_variances, aw_counts,
                   ring_values, ring_positions, counters, alarm, no_values)


GROUP = 3  # rows run together (their chains overlap): the default three location rows are one


@njit(cache=True)
def _location_group(devs: np.ndarray, ns: np.ndarray, counts: np.ndarray, last: int,
                    par: np.ndarray, f: np.ndarray, i: np.ndarray, first: int, top: int,
                    directions: np.ndarray) -> int:
    """Rows ``first``.. ``top`` (at most ``GROUP``; a missing one repeats ``top`` and is
    dropped) over ``devs[:last + 1]``, with ``ph_update``'s operations, up to the first value
    at which one fires. Updates their state in ``f`` and ``i`` and their ``directions``;
    returns the index of the last value taken."""
    r0, r1, r2 = first, min(first + 1, top), min(first + 2, top)
    s0, s1, s2 = _row_state(f, i, r0), _row_state(f, i, r1), _row_state(f, i, r2)
    q0, q1, q2 = _row_par(par, r0), _row_par(par, r1), _row_par(par, r2)
    reached, d0, d1, d2 = last, 0, 0, 0
    for j in range(last + 1):
        s0 = _location_step(devs[j], counts[j], q0, s0)
        s1 = _location_step(devs[j], counts[j], q1, s1)
        s2 = _location_step(devs[j], counts[j], q2, s2)
        if (_location_trips(ns[j], q0, s0) or _location_trips(ns[j], q1, s1)
                or _location_trips(ns[j], q2, s2)):
            d0, d1 = _location_fires(ns[j], q0, s0), _location_fires(ns[j], q1, s1)
            d2 = _location_fires(ns[j], q2, s2)
            reached = j
            break
    for k, (row, state, direction) in enumerate(((r0, s0, d0), (r1, s1, d1), (r2, s2, d2))):
        if first + k <= top:  # not a repeat of the last row
            f[row, PH_SUM_INC], f[row, PH_SUM_DEC] = state[0], state[1]
            f[row, PH_MIN_INC], f[row, PH_MAX_DEC] = state[2], state[3]
            i[row, PH_CP_INC], i[row, PH_CP_DEC] = state[4], state[5]
            directions[row] = direction
    return reached


@njit(cache=True, inline="always")
def _row_state(f: np.ndarray, i: np.ndarray,
               row: int) -> tuple[float, float, float, float, int, int]:
    return (f[row, PH_SUM_INC], f[row, PH_SUM_DEC], f[row, PH_MIN_INC], f[row, PH_MAX_DEC],
            i[row, PH_CP_INC], i[row, PH_CP_DEC])


@njit(cache=True, inline="always")
def _row_par(par: np.ndarray, row: int
             ) -> tuple[float, float, float, float, float, float, float]:
    """alpha, delta, threshold, mode, min instances, then the thresholds of an increase and
    of a decrease (infinite where the mode does not test that way: ``_location_trips``)."""
    mode = par[row, PH_MODE]
    threshold = par[row, PH_THRESHOLD]
    return (par[row, PH_ALPHA], par[row, PH_DELTA], threshold, mode,
            par[row, PH_MIN_INSTANCES], math.inf if mode == MODE_DOWN else threshold,
            math.inf if mode == MODE_UP else threshold)


@njit(cache=True, inline="always")
def _location_step(dev: float, count: int,
                   q: tuple[float, float, float, float, float, float, float],
                   s: tuple[float, float, float, float, int, int]
                   ) -> tuple[float, float, float, float, int, int]:
    """``ph_update``'s state step for one row given the deviation from the running mean."""
    sum_inc = q[0] * s[0] + dev - q[1]
    sum_dec = q[0] * s[1] + dev + q[1]
    lower, higher = sum_inc < s[2], sum_dec > s[3]
    return (sum_inc, sum_dec, sum_inc if lower else s[2], sum_dec if higher else s[3],
            count if lower else s[4], count if higher else s[5])


@njit(cache=True, inline="always")
def _location_trips(n: float, q: tuple[float, float, float, float, float, float, float],
                    s: tuple[float, float, float, float, int, int]) -> bool:
    """Whether ``_location_fires`` is not 0, in fewer operations (the mode folded into the
    thresholds): the test of every value, so ``_location_fires`` runs only on an alarm."""
    return n >= q[4] and (s[0] - s[2] > q[5] or s[3] - s[1] > q[6])


@njit(cache=True, inline="always")
def _location_fires(n: float, q: tuple[float, float, float, float, float, float, float],
                    s: tuple[float, float, float, float, int, int]) -> int:
    """``ph_update``'s test: +1 (increase), -1 (decrease) or 0."""
    if n < q[4]:
        return 0
    if q[3] != MODE_DOWN and s[0] - s[2] > q[2]:
        return 1
    if q[3] != MODE_UP and s[3] - s[1] > q[2]:
        return -1
    return 0


@njit(cache=True, inline="always")
def _record_ph_alarm(row: np.ndarray, direction: int, par: np.ndarray, f: np.ndarray,
                     i: np.ndarray) -> None:
    row[AL_FIRED] = 1.0
    row[AL_THRESHOLD] = par[PH_THRESHOLD]
    row[AL_DIRECTION] = float(direction)
    if direction > 0:
        row[AL_STAT] = f[PH_SUM_INC] - f[PH_MIN_INC]
        row[AL_CHANGE] = i[PH_CP_INC]
    else:
        row[AL_STAT] = f[PH_MAX_DEC] - f[PH_SUM_DEC]
        row[AL_CHANGE] = i[PH_CP_DEC]


# ----------------------------------------------------------------------------- categorical
#
# Each bucket has two Bernoulli log-likelihood-ratio CUSUMs: row 0 for a rise of its share,
# row 1 for a fall. A value moves every bucket's CUSUMs, but all buckets except the one that
# occurred move by a constant, so they are updated lazily: a bucket is brought up to date when
# it occurs, when the ratios are refreshed, or when its fall-CUSUM is due to cross the
# threshold (a rise-CUSUM only ever grows when its bucket occurs). That makes a value O(1)
# instead of O(buckets); the lazy updates happen at data-determined counts, so batching still
# cannot change a result.

# Categorical parameters.
CP_THRESHOLD, CP_SHIFT, CP_NEW_SHIFT, CP_REFRESH = range(4)
# Categorical scalar state: values since restart, weight of the reference shares, values to
# count before testing, and that count after an alarm.
CS_SINCE, CS_PRIOR_WEIGHT, CS_GATE, CS_GATE_AFTER_ALARM = range(4)
# Per-bucket integer state rows: count up to which the CUSUMs are current, last count at which
# each CUSUM was zero (rise, fall), and the count at which the fall-CUSUM will cross.
CB_CURRENT, CB_ZERO_RISE, CB_ZERO_FALL, CB_CROSS = range(4)
NEVER = np.iinfo(np.int64).max


@njit(cache=True, inline="always")
def _catch_up(j: int, upto: int, llr: np.ndarray, cusum: np.ndarray, book: np.ndarray) -> None:
    """Apply the non-occurrences of bucket ``j`` after its current count up to ``upto``."""
    m = upto - book[CB_CURRENT, j]
    if m <= 0:
        return
    rise = cusum[0, j] + m * llr[1, j]
    if rise <= 0.0:
        rise = 0.0
        book[CB_ZERO_RISE, j] = upto
    cusum[0, j] = rise
    cusum[1, j] = cusum[1, j] + m * llr[3, j]
    book[CB_CURRENT, j] = upto


@njit(cache=True, inline="always")
def _crossing(j: int, threshold: float, llr: np.ndarray, cusum: np.ndarray,
              book: np.ndarray) -> int:
    """First count at which bucket ``j``'s fall-CUSUM exceeds the threshold if it does not
    occur; the same expression as ``_catch_up`` decides it, so the two always agree."""
    step = llr[3, j]
    level = cusum[1, j]
    if step <= 0.0:
        return NEVER
    m = max(int((threshold - level) / step), 1)
    while m > 1 and level + (m - 1) * step > threshold:
        m -= 1
    while not level + m * step > threshold:
        m += 1
    return int(book[CB_CURRENT, j] + m)


@njit(cache=True)
def _next_cross(book: np.ndarray) -> int:
    best = NEVER
    for j in range(book.shape[1]):
        best = min(best, book[CB_CROSS, j])
    return best


@njit(cache=True)
def category_refresh(par: np.ndarray, s: np.ndarray, counts: np.ndarray, shares: np.ndarray,
                     llr: np.ndarray) -> None:
    """Bernoulli log-likelihood ratios per bucket for a share rise and a share fall, around
    the running share (counts since restart plus the reference shares as a prior). Rows:
    rise if it occurs, rise if not, fall if it occurs, fall if not."""
    buckets = counts.shape[0]
    weight = s[CS_PRIOR_WEIGHT]
    denominator = s[CS_SINCE] + weight
    floor = 0.5 / (denominator + 1.0)
    for j in range(buckets):
        p0 = (counts[j] + shares[j] * weight) / denominator
        p0 = min(max(p0, floor), 1.0 - floor)
        shift = par[CP_NEW_SHIFT] if j == buckets - 1 else par[CP_SHIFT]
        rise = min(p0 + shift, 1.0 - floor / 2.0)
        fall = max(p0 - shift, p0 * 0.25)
        llr[0, j] = math.log(rise / p0)
        llr[1, j] = math.log((1.0 - rise) / (1.0 - p0))
        llr[2, j] = math.log(fall / p0)
        llr[3, j] = math.log((1.0 - fall) / (1.0 - p0))


@njit(cache=True)
def _refresh_all(count: int, par: np.ndarray, s: np.ndarray, counts: np.ndarray,
                 shares: np.ndarray, llr: np.ndarray, cusum: np.ndarray, book: np.ndarray,
                 counters: np.ndarray) -> None:
    """Bring every bucket up to ``count`` under the old ratios, then switch ratios."""
    for j in range(counts.shape[0]):
        _catch_up(j, count, llr, cusum, book)
    category_refresh(par, s, counts, shares, llr)
    for j in range(counts.shape[0]):
        book[CB_CROSS, j] = _crossing(j, par[CP_THRESHOLD], llr, cusum, book)
    counters[C_NEXT_CROSS] = _next_cross(book)


@njit(cache=True)
def run_categorical(codes: np.ndarray, positions: np.ndarray, start: int, n_known: int,
                    par: np.ndarray, s: np.ndarray, counts: np.ndarray, shares: np.ndarray,
                    llr: np.ndarray, cusum: np.ndarray, book: np.ndarray,
                    ring_codes: np.ndarray, ring_positions: np.ndarray, counters: np.ndarray,
                    alarm: np.ndarray) -> int:
    """Feed codes[start:] to one categorical signal's CUSUMs; stop after the first alarm.

    Buckets: 0..n_known-1 the reference's top categories, n_known every other reference
    category, n_known+1 any category never seen in the reference. ``alarm`` = [fired,
    statistic, threshold, direction, change count, bucket].
    """
    ring_size = ring_codes.shape[0]
    threshold = par[CP_THRESHOLD]
    refresh = int(par[CP_REFRESH])
    for idx in range(start, codes.shape[0]):
        code = codes[idx]
        if code < 0:
            continue
        bucket = min(code, n_known + 1)
        counters[C_COUNT] += 1
        count = counters[C_COUNT]
        head = counters[C_RING_HEAD]
        ring_codes[head] = code
        ring_positions[head] = positions[idx]
        counters[C_RING_HEAD] = head + 1 if head + 1 < ring_size else 0
        counts[bucket] += 1.0
        s[CS_SINCE] += 1.0
        if s[CS_SINCE] < s[CS_GATE]:
            continue  # relearning the shares: no testing, no evidence
        if s[CS_SINCE] == s[CS_GATE]:
            book[CB_CURRENT, :] = count - 1
            book[CB_ZERO_RISE, :] = count - 1
            book[CB_ZERO_FALL, :] = count - 1
            _refresh_all(count - 1, par, s, counts, shares, llr, cusum, book, counters)
        elif int(s[CS_SINCE]) & (refresh - 1) == 0:  # refresh is a power of two
            _refresh_all(count - 1, par, s, counts, shares, llr, cusum, book, counters)
        best, best_bucket, best_side = _occur(bucket, count, threshold, llr, cusum, book)
        old_cross = book[CB_CROSS, bucket]
        new_cross = _crossing(bucket, threshold, llr, cusum, book)
        book[CB_CROSS, bucket] = new_cross
        if old_cross == counters[C_NEXT_CROSS]:
            counters[C_NEXT_CROSS] = _next_cross(book)
        elif new_cross < counters[C_NEXT_CROSS]:
            counters[C_NEXT_CROSS] = new_cross
        if count >= counters[C_NEXT_CROSS]:
            for j in range(book.shape[1]):
                if book[CB_CROSS, j] <= count:
                    _catch_up(j, count, llr, cusum, book)
                    if cusum[1, j] > threshold and cusum[1, j] > best:
                        best, best_bucket, best_side = cusum[1, j], j, 1
        if best_bucket >= 0:
            alarm[0] = 1.0
            alarm[1] = best
            alarm[2] = threshold
            alarm[3] = 1.0 if best_side == 0 else -1.0
            alarm[4] = book[CB_ZERO_RISE + best_side, best_bucket]
            alarm[5] = best_bucket
            category_restart(s, counts, cusum, book, counters, count, 0.0,
                             s[CS_GATE_AFTER_ALARM])
            return idx + 1
    return int(codes.shape[0])


@njit(cache=True, inline="always")
def _occur(j: int, count: int, threshold: float, llr: np.ndarray, cusum: np.ndarray,
           book: np.ndarray) -> tuple[float, int, int]:
    """Bucket ``j`` occurred at ``count``: catch up, then apply the occurrence ratios."""
    _catch_up(j, count - 1, llr, cusum, book)
    cusum[0, j] = cusum[0, j] + llr[0, j]
    fall = cusum[1, j] + llr[2, j]
    if fall <= 0.0:
        fall = 0.0
        book[CB_ZERO_FALL, j] = count
    cusum[1, j] = fall
    book[CB_CURRENT, j] = count
    if cusum[0, j] > threshold:
        return cusum[0, j], j, 0
    return 0.0, -1, 0


@njit(cache=True)
def category_restart(s: np.ndarray, counts: np.ndarray, cusum: np.ndarray, book: np.ndarray,
                     counters: np.ndarray, count: int, prior_weight: float,
                     gate: float) -> None:
    """Forget the shares counted so far; relearn them over ``gate`` values before testing."""
    counts[:] = 0.0
    cusum[:, :] = 0.0
    book[:, :] = count
    book[CB_CROSS, :] = NEVER
    s[CS_SINCE] = 0.0
    s[CS_PRIOR_WEIGHT] = prior_weight
    s[CS_GATE] = gate
    counters[C_NEXT_CROSS] = NEVER
