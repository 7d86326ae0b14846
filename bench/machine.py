"""The machine a benchmark ran on, printed at the top of every benchmark."""

from __future__ import annotations

import os
import platform
import sys


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def describe() -> str:
    """CPU, cores, load and the versions the detector and consumer benchmarks depend on."""
    import numba
    import numpy
    import river

    return (f"CPU: {cpu_model()}, {os.cpu_count()} cores (load average {load_average():.1f} "
            f"at start); Python {sys.version.split()[0]}, numpy {numpy.__version__}, "
            f"river {river.__version__}, numba {numba.__version__}")
