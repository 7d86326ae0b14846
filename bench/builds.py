"""Benchmarks that run several checkouts side by side (``--build DIR``, repeatable): each with
its own ``.venv``, the order alternating per repetition so that they meet the same load."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--build`` (repeatable) and ``--bootstrap``."""
    parser.add_argument("--build", type=Path, action="append",
                        help="a checkout to run (repeatable; default: this one)")
    parser.add_argument("--bootstrap", default=os.environ.get(
        "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))


def chosen(arguments: argparse.Namespace, this_checkout: Path) -> list[Path]:
    return [build.resolve() for build in arguments.build or [this_checkout]]


def in_turn(builds: list[Path], repetition: int) -> list[Path]:
    """The builds in this repetition's order: forwards, then backwards."""
    return builds if repetition % 2 == 0 else builds[::-1]
