"""levy-drift: shared plumbing (CLI, settings, Kafka client config, logging) used by every service."""

__version__ = "0.1.0"
