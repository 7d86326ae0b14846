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


class UsageError(LevyDriftError):
    """Bad command-line arguments or inputs (a file that cannot be read, say)."""
