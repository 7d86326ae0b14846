"""Pure online drift detection: no Kafka, no files, no implicit clocks.

Public API: ``DetectorSettings`` (config), ``Reference`` (reference), ``DetectorBank`` (bank),
``DriftDecision`` and its parts (decision), ``DetectorConfigError`` / ``SnapshotError``.

Names resolve on first use (PEP 562), so importing ``detectors.config`` (every service's
settings do) does not compile the numba kernels behind ``DetectorBank``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DetectorBank": "detectors.bank", "DetectorStatus": "detectors.bank",
    "DetectorSettings": "detectors.config",
    "DetectorFiring": "detectors.decision", "DriftDecision": "detectors.decision",
    "SignalFinding": "detectors.decision", "WindowSummary": "detectors.decision",
    "DetectorConfigError": "detectors.errors", "SnapshotError": "detectors.errors",
    "CategoricalReference": "detectors.reference", "NumericReference": "detectors.reference",
    "Reference": "detectors.reference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'detectors' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
