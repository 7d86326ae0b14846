"""A small, deterministic levy record generator for trainer tests (independent of the simulator).

Levies follow the real formula: (assessed - exemption) x district rate x compression, plus a
special assessment by class, plus noise. ``rate_shift`` changes every district's rate, which
makes a model trained before it worse after it.
"""

from __future__ import annotations

import numpy as np

COUNTIES = ("benton", "franklin", "yakima", "walla-walla")
CLASSES = ("residential", "commercial", "agricultural", "industrial", "exempt")
_CLASS_SCALE = {"residential": 1.0, "commercial": 3.0, "agricultural": 0.8, "industrial": 5.0,
                "exempt": 1.0}
_SPECIAL = {"residential": 120.0, "commercial": 900.0, "agricultural": 40.0, "industrial": 1500.0,
            "exempt": 0.0}


def levy_columns(n: int, seed: int = 0, rate_shift: float = 1.0,
                 label_share: float = 1.0) -> dict[str, np.ndarray]:
    """``n`` levy records as columns with the levy record's field names."""
    rng = np.random.default_rng(seed)
    county_index = rng.integers(0, len(COUNTIES), n)
    district_number = rng.integers(0, 6, n)
    county = np.asarray(COUNTIES)[county_index]
    district = np.char.add(np.char.add(county.astype(str), "-d"), district_number.astype(str))
    property_class = np.asarray(CLASSES)[rng.choice(len(CLASSES), n, p=[.6, .15, .12, .08, .05])]
    scale = np.vectorize(_CLASS_SCALE.get)(property_class)
    assessed = np.round(np.exp(rng.normal(12.4, 0.7, n)) * scale, 0)
    market = np.round(assessed * rng.uniform(1.0, 1.25, n), 0)
    homestead = (property_class == "residential") & (rng.random(n) < 0.6)
    exemption = np.where(homestead, np.minimum(50_000.0, assessed), 0.0)
    exemption = np.where(property_class == "exempt", assessed, exemption)
    rate = (0.008 + 0.003 * county_index + 0.0015 * district_number) * rate_shift
    compression = np.where(district_number == 5, 0.9, 1.0)  # a district at its statutory limit
    taxable = np.clip(assessed - exemption, 0, None)
    special = np.vectorize(_SPECIAL.get)(property_class)
    levy = taxable * rate * compression + special
    levy = np.round(np.clip(levy * rng.normal(1.0, 0.01, n), 0, None), 2)
    labelled = rng.random(n) < label_share
    return {
        "schema_version": np.full(n, 1),
        "record_id": np.asarray([f"r{seed}-{i}" for i in range(n)]),
        "parcel_id": np.asarray([f"p{i % 50_000}" for i in range(n)]),
        "county": county,
        "tax_district": district,
        "property_class": property_class,
        "tax_year": np.full(n, 2025),
        "assessed_value": assessed,
        "market_value": market,
        "exemption_amount": exemption,
        "levy_rate": rate,
        "prior_levy_amount": np.round(levy * rng.uniform(0.93, 1.02, n), 2),
        "new_construction_value": np.where(rng.random(n) < 0.05, assessed * 0.1, 0.0),
        "event_time": np.full(n, "2025-06-01T00:00:00Z"),
        "actual_levy_amount": np.where(labelled, levy, np.nan),
    }
