"""The machine a benchmark ran on, printed at the top of every detector benchmark."""

from __future__ import annotations

import os
import platform
import sys


def describe() -> str:
    import numba
    import numpy
    import river

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"CPU: {cpu}, {os.cpu_count()} cores (load average {load:.1f} at start); "
            f"Python {sys.version.split()[0]}, numpy {numpy.__version__}, "
            f"river {river.__version__}, numba {numba.__version__}")
