"""Detector parameters derived from a target false-alarm rate (see CALIBRATION.md).

Page-Hinkley with forgetting factor 1 is a CUSUM of ``x - running mean - delta``. For unit
variance Gaussian input, Siegmund's approximation gives the mean run length to a false alarm
of a one-sided CUSUM with drift allowance k and threshold h:

    ARL0(k, h) = (exp(2 k b) - 2 k b - 1) / (2 k^2),   b = h + 1.166

and the mean delay for a shift of d (> k) is the same formula with k replaced by k - d.
ADWIN tests all cuts every ``clock`` values with a bound that holds with probability
1 - delta per test, so delta = clock x (its share of the rate) bounds its false-alarm rate.
A categorical CUSUM of Bernoulli log-likelihood ratios has ARL0 >= exp(h) (Lorden), so
h = log(1 / its share of the rate).
"""

from __future__ import annotations

import functools
import math

SIEGMUND_CORRECTION = 1.166


def siegmund_arl(k: float, h: float) -> float:
    """Mean run length of a one-sided Gaussian CUSUM with drift k (negative: delay)."""
    b = h + SIEGMUND_CORRECTION
    if abs(k) < 1e-12:
        return b * b
    return (math.exp(2.0 * k * b) - 2.0 * k * b - 1.0) / (2.0 * k * k)


@functools.lru_cache(maxsize=1024)
def page_hinkley_threshold(delta: float, arl0: float) -> float:
    """Threshold h at which a one-sided test with allowance ``delta`` has mean run length
    ``arl0`` to a false alarm (bisection on Siegmund's formula, which increases with h).
    Cached: every new segment's bank asks again for the same few thresholds (~200
    evaluations of the formula each)."""
    low, high = 0.0, 1.0
    while siegmund_arl(delta, high) < arl0:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if siegmund_arl(delta, middle) < arl0:
            low = middle
        else:
            high = middle
    return high


def expected_delay(delta: float, threshold: float, shift: float) -> float:
    """Siegmund's mean detection delay for a mean shift of ``shift`` (in sigma)."""
    return siegmund_arl(delta - shift, threshold)


def design_shifts(smallest: float, largest: float, levels: int) -> list[float]:
    """Geometrically spaced design shifts; each Page-Hinkley uses delta = shift / 2."""
    if levels == 1:
        return [smallest]
    ratio = (largest / smallest) ** (1.0 / (levels - 1))
    return [smallest * ratio ** i for i in range(levels)]


def adwin_delta(rate_per_test: float, clock: int) -> float:
    return min(rate_per_test * clock, 0.5)


def categorical_threshold(rate_per_test: float) -> float:
    return math.log(1.0 / rate_per_test)
