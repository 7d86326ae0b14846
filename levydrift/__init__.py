"""levy-drift: shared plumbing used by every service: CLI, settings, Kafka config, logs."""

__version__ = "0.1.0"
