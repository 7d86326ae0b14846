"""``levydrift consume``'s process set-up: the champion's OpenMP threads sleep when idle."""

from __future__ import annotations

import subprocess
import sys

from consumer.cli import openmp_threads_sleep


def test_openmp_threads_sleep_unless_the_environment_says_otherwise() -> None:
    environ: dict[str, str] = {}
    openmp_threads_sleep(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    chosen = {"OMP_WAIT_POLICY": "ACTIVE"}
    openmp_threads_sleep(chosen)
    assert chosen == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_the_consumer_loads_no_openmp_runtime_before_a_model() -> None:
    """libgomp reads OMP_WAIT_POLICY once, when it loads: the setting works only if building
    the service loads no OpenMP runtime (scikit-learn brings it with the first model)."""
    probe = ("import consumer.service, consumer.cli; "
             "print(any('gomp' in line or 'libomp' in line for line in open('/proc/self/maps')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "False"
