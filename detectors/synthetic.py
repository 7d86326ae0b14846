"""Synthetic levy-like streams for tests, calibration and benchmarks (seeded, no I/O).

Money values are log-normal (six orders of magnitude apart from the levy rate), exemptions
and new construction are zero-inflated, categories have skewed shares: the shapes that make
raw-value detectors cry wolf.
"""

from __future__ import annotations

import numpy as np

from detectors.config import DetectorSettings

COUNTIES = tuple(f"county-{i:02d}" for i in range(39))
DISTRICTS = tuple(f"district-{i:03d}" for i in range(120))
CLASSES = ("residential", "commercial", "agricultural", "industrial", "exempt", "timber")


def _zipf_shares(n: int, exponent: float = 1.0) -> np.ndarray:
    weights: np.ndarray = 1.0 / np.arange(1, n + 1) ** exponent
    shares: np.ndarray = weights / weights.sum()
    return shares


CATEGORY_SHARES = {
    "county": (COUNTIES, _zipf_shares(len(COUNTIES))),
    "tax_district": (DISTRICTS, _zipf_shares(len(DISTRICTS), 0.8)),
    "property_class": (CLASSES, np.array([0.55, 0.2, 0.12, 0.06, 0.04, 0.03])),
}


def numeric_column(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Stationary values of one numeric signal."""
    if name in ("assessed_value", "market_value", "prior_levy_amount"):
        return rng.lognormal(12.0, 0.8, n)
    if name in ("exemption_amount", "new_construction_value"):
        values = rng.lognormal(10.0, 1.2, n)
        values[rng.random(n) < 0.7] = 0.0  # most parcels have none
        return values
    if name == "levy_rate":
        return rng.gamma(20.0, 0.0006, n)
    if name in ("abs_error", "relative_error"):
        return np.abs(rng.standard_t(4, n)) * (250.0 if name == "abs_error" else 0.02)
    return rng.lognormal(8.0, 0.9, n)  # predictions: levy amounts


def categorical_column(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    labels, shares = CATEGORY_SHARES.get(name, (CLASSES, CATEGORY_SHARES["property_class"][1]))
    return np.asarray(labels, dtype=object)[rng.choice(len(labels), n, p=shares)]


def stationary_batch(settings: DetectorSettings, n: int,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    columns = {name: numeric_column(name, n, rng) for name in settings.numeric_like()}
    columns.update({name: categorical_column(name, n, rng)
                    for name in settings.categorical_signals})
    return columns
