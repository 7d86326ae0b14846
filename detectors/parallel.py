"""A batch's signals fed side by side, one thread per core.

Each numeric signal's detectors (its strata, its segments' stacked state, its pooled channel)
are its own: no state is shared between signals. The compiled loops release the GIL, so on a
big batch (a ``check`` slice, a consumer catching up) the signals run on every core at once.
Results come back in signal order, so the decisions are the same as one after the other.
Small batches stay on the calling thread: there, handing work to a thread costs more than it
saves.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

# Below this many values in a batch (records x signals) the signals run one after the other.
PARALLEL_MIN_VALUES = 60_000
MAX_THREADS = 8

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # a forked child gets a pool object without threads: it makes its own
_pool_threads = 0


def feed_threads() -> int:
    """Threads for the signals by default: the cores this process may run on (8 at most;
    ``detectors.threads`` sets it, e.g. under a container's CPU quota, which this cannot
    see)."""
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")  # not on macOS
             else os.cpu_count() or 1)
    return max(1, min(cores, MAX_THREADS))


def run_each(tasks: Sequence[Callable[[], T]], values: int, threads: int = 0) -> list[T]:
    """Each task's result, in order; side by side on ``threads`` threads (0: one per core)
    when ``values`` make it worth it."""
    if len(tasks) < 2 or values < PARALLEL_MIN_VALUES:  # the usual consumer batch: no syscall
        return [task() for task in tasks]
    threads = threads or feed_threads()
    if threads < 2:
        return [task() for task in tasks]
    return list(_shared_pool(threads).map(lambda task: task(), tasks))


def _shared_pool(threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_pid, _pool_threads
    with _lock:
        if _pool is None or _pool_pid != os.getpid() or _pool_threads != threads:
            if _pool is not None and _pool_pid == os.getpid():
                _pool.shutdown(wait=False)  # idle between batches: its threads just end
            _pool = ThreadPoolExecutor(threads, thread_name_prefix="levydrift-signals")
            _pool_pid, _pool_threads = os.getpid(), threads
        return _pool
