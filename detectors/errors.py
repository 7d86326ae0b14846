"""Errors of the detector bank. The service wraps them into its own configuration error."""


class DetectorConfigError(ValueError):
    """Invalid detector settings or a reference/snapshot that does not fit them (one line)."""


class SnapshotError(ValueError):
    """Snapshot bytes that cannot be restored: wrong magic, version or settings."""
