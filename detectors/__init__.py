"""Pure online drift detection: no Kafka, no files, no implicit clocks.

Public API: ``DetectorSettings`` (config), ``Reference`` (reference), ``DetectorBank`` (bank),
``DriftDecision`` and its parts (decision), ``DetectorConfigError`` / ``SnapshotError``.
"""

from detectors.bank import DetectorBank, DetectorStatus
from detectors.config import DetectorSettings
from detectors.decision import DetectorFiring, DriftDecision, SignalFinding, WindowSummary
from detectors.errors import DetectorConfigError, SnapshotError
from detectors.reference import CategoricalReference, NumericReference, Reference

__all__ = [
    "CategoricalReference", "DetectorBank", "DetectorConfigError", "DetectorFiring",
    "DetectorSettings", "DetectorStatus", "DriftDecision", "NumericReference", "Reference",
    "SignalFinding", "SnapshotError", "WindowSummary",
]
