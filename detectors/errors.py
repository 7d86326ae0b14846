"""Errors of the detector bank. The service wraps them into its own configuration error."""


class DetectorConfigError(ValueError):
    """Invalid detector settings or a reference/snapshot that does not fit them (one line)."""


class SnapshotError(ValueError):
    """Snapshot bytes that cannot be restored. ``reason`` is a stable code for metrics: magic,
    version (also a single-bank snapshot where a segmented one belongs), corrupt (truncated,
    not zlib, trailing bytes, part lengths that do not add up), too_large (beyond what the
    settings allow), header (not JSON, missing fields, wrong types or values), shape (arrays
    that do not fit the detectors). A segmented snapshot refused for one of its inner banks
    carries that bank's reason."""

    def __init__(self, message: str, reason: str = "corrupt") -> None:
        super().__init__(message)
        self.reason = reason
