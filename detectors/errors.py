"""Errors of the detector bank. The service wraps them into its own configuration error."""


class DetectorConfigError(ValueError):
    """Invalid detector settings or a reference/snapshot that does not fit them (one line)."""


class SnapshotError(ValueError):
    """Snapshot bytes that cannot be restored. ``reason`` is a stable code for metrics: magic,
    version, corrupt (truncated, not zlib, trailing bytes), too_large (beyond what the settings
    allow), header (not JSON, missing fields, wrong types or values), shape (arrays that do not
    fit the detectors)."""

    def __init__(self, message: str, reason: str = "corrupt") -> None:
        super().__init__(message)
        self.reason = reason
