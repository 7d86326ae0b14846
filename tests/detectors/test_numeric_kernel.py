"""``run_numeric`` pinned, bit for bit, to the loop it replaced.

The kernel holds a signal's detector state in local variables during its loop and writes it
back once. ``reference_run_numeric`` below is the loop as it was before (state read and
written in the shared arrays on every value, verbatim); the tests run both on the same
streams and require the same stops, alarms, scores and state arrays after every call. The
recorded digest pins the outputs on fixed streams as the old code produced them, so it also
fails if a helper both loops share changes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from numba import njit

from detectors import NumericReference
from detectors import kernels as k
from detectors.channels import NO_SCORES, NumericChannel
from detectors.config import DetectorSettings


@njit(cache=True)
def reference_run_numeric(values: np.ndarray, positions: np.ndarray, start: int,
                          knots: np.ndarray, below: np.ndarray, at_or_below: np.ndarray,
                          u_min: float, ph_par: np.ndarray, ph_f: np.ndarray, ph_i: np.ndarray,
                          aw_par: np.ndarray, aw_s: np.ndarray, aw_totals: np.ndarray,
                          aw_variances: np.ndarray, aw_counts: np.ndarray,
                          ring_values: np.ndarray, ring_positions: np.ndarray,
                          counters: np.ndarray, alarm: np.ndarray, scoring: int,
                          scores_out: np.ndarray) -> int:
    """``run_numeric`` before its state moved into locals (commit 395d833), verbatim."""
    n_ph = ph_par.shape[0]
    ring_size = ring_values.shape[0]
    cut = np.zeros(4)
    aw_row = n_ph
    for idx in range(start, values.shape[0]):
        x = values[idx]
        if math.isnan(x):
            continue
        counters[k.C_COUNT] += 1
        count = counters[k.C_COUNT]
        head = counters[k.C_RING_HEAD]
        ring_values[head] = x
        ring_positions[head] = positions[idx]
        counters[k.C_RING_HEAD] = head + 1 if head + 1 < ring_size else 0
        if scoring == k.SCORE_GIVEN:
            z, w = x, 0.0
        elif scoring == k.SCORE_RANDOMISED:
            z, w = k._scores_of(k.randomised_cdf(x, positions[idx], knots, below,
                                                 at_or_below, u_min), u_min)
        else:
            z, w = k._scores(x, knots, below, at_or_below, u_min)
        if scores_out.shape[0]:
            scores_out[idx] = z
        fired = False
        previous_source = -1.0
        n, mean = 0.0, 0.0
        for d in range(n_ph):
            source = z if ph_par[d, k.PH_SOURCE] == k.SOURCE_LOCATION else w
            if ph_par[d, k.PH_SOURCE] != previous_source:
                n, mean = k.ph_mean_step(source, ph_f, d)
                previous_source = ph_par[d, k.PH_SOURCE]
            direction = k.ph_update(source, n, mean, ph_par, ph_f, ph_i, d, count)
            if direction != 0:
                fired = True
                k._record_ph_alarm(alarm[d], direction, ph_par[d], ph_f[d], ph_i[d])
        if aw_par[k.AW_ENABLED] != 0.0:
            k.adwin_insert(z, aw_par, aw_s, aw_totals, aw_variances, aw_counts)
            if (k.adwin_due(aw_par, aw_s)
                    and k.adwin_check(aw_par, aw_s, aw_totals, aw_counts, cut, False,
                                      k.adwin_scratch(aw_totals))):
                if aw_par[k.AW_UP_ONLY] == 0.0 or cut[2] > 0.0:
                    fired = True
                    alarm[aw_row, k.AL_FIRED] = 1.0
                    alarm[aw_row, k.AL_STAT] = cut[0]
                    alarm[aw_row, k.AL_THRESHOLD] = cut[1]
                    alarm[aw_row, k.AL_DIRECTION] = cut[2]
                    alarm[aw_row, k.AL_CHANGE] = count - cut[3]
                else:
                    k.adwin_reset(aw_s, aw_totals, aw_variances, aw_counts)
        if fired:
            for d in range(n_ph):
                k.ph_reset(ph_f, ph_i, d)
            k.adwin_reset(aw_s, aw_totals, aw_variances, aw_counts)
            return idx + 1
    return int(values.shape[0])


STATE = ("ph_f", "ph_i", "aw_s", "aw_totals", "aw_variances", "aw_counts", "ring_values",
         "ring_positions", "counters", "alarm")

# Settings that reach every branch: both directions and upward-only, spread rows on and
# off, ADWIN alone, on (testing its cuts every 1 to 32 values) and off, the three scorings. A high
# false-alarm rate makes alarms (and the restarts after them) frequent.
SCENARIOS: dict[str, dict[str, Any]] = {
    "mid_rank": {},
    "randomised_every_value": {"scoring": "randomised", "adwin_clock": 1},
    "given_scores": {"scoring": "given", "spread": False},
    "upward_only": {"performance_signals": ("x",), "adwin_clock": 4},
    "no_adwin": {"adwin": False, "mean_shift_levels": 2, "spread_shift_levels": 3},
    "adwin_only": {"page_hinkley": False, "spread": False, "adwin_clock": 8},
}

# Recorded from the loop above (= run_numeric at commit 395d833) by ``digest``; recorded again
# when the stream was rounded (the same kernel: the test above holds it equal to the loop).
RECORDED_DIGESTS = {
    "mid_rank":
        "dcbdf1a63008fede807b02d469305b13122e3046690c8ac92f393cb4f6904463",
    "randomised_every_value":
        "c6a9bae81ccb11f22cd3fd11889ae1d91e145d3e7c86806b5e8457c592d1422e",
    "given_scores":
        "409721a6751a65cbb3e98b8fe7c4b39b66b67a85d0260cdc133b0a2effd502a7",
    "upward_only":
        "df75c23022c50018166cd8d70c6739656d1da6842fdad2766ae7ed45cea0d0c2",
    "no_adwin":
        "9f2858c583c5f5bfb6ab7d9de3bdd868ee2fa0a98e6519ff401b6a55c10f7258",
    "adwin_only":
        "e7e1d2706920dd63c46ed9ff174f82e2f68ed22c50ff659caeaf8d064be40980",
}


def channel(name: str, seed: int) -> NumericChannel:
    overrides = SCENARIOS[name]
    settings = DetectorSettings(
        numeric_signals=("x",), categorical_signals=(), prediction_signals=(),
        performance_signals=overrides.get("performance_signals", ()),
        false_alarm_rate=1e-3, min_instances=30,
        **{key: value for key, value in overrides.items() if key != "performance_signals"})
    reference = NumericReference.from_values(stream(name, 5_000, np.random.default_rng(seed)))
    return NumericChannel("x", settings, reference)


def stream(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Regimes shifted in location and in spread, with missing values; atoms for the
    randomised scoring (a levy rate has a handful of values)."""
    scale = np.repeat(rng.choice([0.6, 1.0, 1.0, 1.8], size // 2_000 + 1), 2_000)[:size]
    shift = np.repeat(rng.choice([-0.8, 0.0, 0.0, 0.5, 1.2], size // 3_000 + 1), 3_000)[:size]
    values = shift + scale * rng.standard_normal(size)
    if name != "given_scores":
        # numpy's exp can differ in the last bit from one CPU to another (its AVX2 and
        # AVX-512 code paths); rounded, the stream and so the recorded digests do not.
        values = np.round(np.exp(1.0 + 0.5 * values), 6)
    if name == "randomised_every_value":
        values = np.round(values, 0)
    values[rng.random(size) < 0.2] = np.nan
    return values


def batches(size: int, rng: np.random.Generator) -> Iterator[tuple[int, int]]:
    first = 0
    while first < size:
        length = int(rng.choice([1, 2, 17, 500, 2_500, 9_000]))
        yield first, min(size, first + length)
        first += length


def feed(run: Any, name: str, seed: int) -> Iterator[tuple[int, np.ndarray, NumericChannel]]:
    """Feed a stream with ``run`` (a kernel with run_numeric's signature); after every call
    yield the stop, the scores written and the channel (whose arrays hold the state)."""
    rng = np.random.default_rng(seed)
    target = channel(name, seed)
    values = stream(name, 40_000, rng)
    positions = np.arange(values.size, dtype=np.int64) * 5 + 11
    for first, last in batches(values.size, rng):
        batch, where = values[first:last], positions[first:last]
        wants_scores = rng.random() < 0.5
        start = 0
        while start < batch.size:
            scores = np.full(batch.size, np.nan) if wants_scores else NO_SCORES
            start = run(batch, where, start, target.knots, target.below, target.at_or_below,
                        target.u_min, target.ph_par, target.ph_f, target.ph_i, target.aw_par,
                        target.aw_s, target.aw_totals, target.aw_variances, target.aw_counts,
                        target.ring_values, target.ring_positions, target.counters,
                        target.alarm, target.scoring, scores)
            yield first + start, scores, target
            target.alarm[:] = 0.0


def digest(run: Any, name: str, seed: int = 0) -> tuple[str, int]:
    """SHA-256 over every stop, score and state array the stream produces; alarm count."""
    sha = hashlib.sha256()
    alarms = 0
    for stop, scores, target in feed(run, name, seed):
        alarms += int(target.alarm[:, k.AL_FIRED].any())
        sha.update(np.int64(stop).tobytes())
        sha.update(scores.tobytes())
        for key in STATE:
            sha.update(np.ascontiguousarray(getattr(target, key)).tobytes())
    return sha.hexdigest(), alarms


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("seed", range(3))
def test_run_numeric_matches_the_loop_it_replaced(name: str, seed: int) -> None:
    new, old = feed(k.run_numeric, name, seed), feed(reference_run_numeric, name, seed)
    alarms = 0
    for (new_stop, new_scores, new_target), (old_stop, old_scores, old_target) in zip(
            new, old, strict=True):
        assert new_stop == old_stop
        np.testing.assert_array_equal(new_scores, old_scores)
        for key in STATE:
            np.testing.assert_array_equal(getattr(new_target, key), getattr(old_target, key),
                                          err_msg=key)
        alarms += int(old_target.alarm[:, k.AL_FIRED].any())
    assert alarms >= 5, "the streams should raise alarms to compare"


@pytest.mark.parametrize("name", SCENARIOS)
def test_run_numeric_reproduces_the_recorded_digest(name: str) -> None:
    assert digest(k.run_numeric, name)[0] == RECORDED_DIGESTS[name]
