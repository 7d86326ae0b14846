"""``levydrift consume``: run the stream consumer until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import os
from collections.abc import MutableMapping

from consumer.config import load_consumer_settings
from consumer.metrics import start_metrics_server
from levydrift.logs import configure as configure_logging
from levydrift.model_probe import SpareProbe


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "consume", help="watch levy.records for drift and publish drift events (exactly once)",
        description="The stream consumer: validate levy records (bad ones to the dead-letter "
                    "topic), score them with the registry's champion, feed the drift detectors "
                    "and publish drift events, committing offsets, events and detector state in "
                    "one Kafka transaction. Prometheus metrics on metrics.port (9108); JSON "
                    "logs on stderr; SIGTERM or SIGINT finishes the batch and exits 0.")
    parser.set_defaults(handler=_run)


def openmp_threads_sleep(environ: MutableMapping[str, str] = os.environ) -> None:
    """Unless the environment says otherwise, the champion's OpenMP threads (scikit-learn's
    ``predict``) sleep when idle instead of spinning. Spinning threads take the cores that
    librdkafka, RocksDB and the broker need; on 2 busy cores the consumer fell to a tenth of
    its rate in some runs (``bench/RESULTS-consumer.md``). libgomp reads this once, when it
    loads with the first model, so it is set before anything loads a model."""
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _run(arguments: argparse.Namespace) -> int:
    openmp_threads_sleep()
    settings = load_consumer_settings(arguments.config)
    # Spawned before the service's own imports, so that the child's imports run beside them.
    spare_probe = SpareProbe.for_registry(settings.registry.root, settings.consumer.model_name)
    from consumer.service import run_consumer  # lazy: heavy imports only when consuming

    configure_logging(settings.logging.level)
    start_metrics_server(settings.metrics.port, settings.metrics.host)
    return run_consumer(settings, spare_probe=spare_probe)
