"""Typed errors that carry what a user needs to fix them.

The CLI prints ``str(error)`` as one line and exits non-zero; anything else is a bug.
"""


class LevyDriftError(Exception):
    """Base class: an error a user can act on. Its message is one line."""

    exit_code = 2


class ConfigError(LevyDriftError):
    """Bad configuration: unknown key, wrong type, value out of range."""


class BrokerUnavailableError(LevyDriftError):
    """The Kafka cluster could not be reached or answered with an error."""

    exit_code = 3


class MissingTopicError(LevyDriftError):
    """A topic the service needs does not exist."""


class UsageError(LevyDriftError):
    """Bad command-line arguments or inputs (a file that cannot be read, say)."""


class ArtifactError(LevyDriftError):
    """A model artifact that must not be loaded: missing, tampered with (SHA-256 mismatch),
    holding a type outside the allow-list, damaged, or unable to predict. The message names the
    version or path and why; ``reason`` is a stable code for metrics (missing, unreadable,
    sha256_mismatch, not_skops, disallowed_type, outside_registry, invalid_model,
    probe_failed, probe_crashed, probe_timeout, composition)."""

    def __init__(self, message: str, reason: str = "refused") -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def transient(self) -> bool:
        """A file that may yet appear (a registry volume still mounting), worth retrying."""
        return self.reason in {"missing", "unreadable"}


class RegistryError(LevyDriftError):
    """The model registry cannot do what was asked: unknown model, version or alias, or no
    earlier champion to roll back to."""


class TrainingError(LevyDriftError):
    """Training could not produce a candidate: too few labelled records, bad input data."""


class TopicLayoutError(LevyDriftError):
    """Topics exist but are laid out wrongly, e.g. labels not co-partitioned with records."""
