"""The demo's voice: timestamped lines, and waits that say what they wait for and how it goes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from levydrift.errors import LevyDriftError

PROGRESS_EVERY_S = 5.0  # a progress line this often while waiting (when not on a terminal)


class DemoFailed(LevyDriftError):
    """A step did not happen within the step timeout, or a service died."""

    exit_code = 1


class Narrator:
    """Timestamped lines, and a progress line while waiting (rewritten in place on a tty)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tty = sys.stdout.isatty()
        self._last_progress = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        if self.tty:
            sys.stdout.write("\r\033[K")
        print(f"[{self.elapsed():5.1f}s] {text}", flush=True)

    def progress(self, text: str) -> None:
        now = time.monotonic()
        if self.tty:
            sys.stdout.write(f"\r\033[K          ... {text}")
            sys.stdout.flush()
        elif now - self._last_progress >= PROGRESS_EVERY_S:  # logs and CI: a line now and then
            print(f"[{self.elapsed():5.1f}s] ... {text}", flush=True)
            self._last_progress = now

    def wait(self, what: str, condition: Callable[[], Any], limit_s: float,
             status: Callable[[], str] = lambda: "") -> Any:
        """Poll ``condition`` until truthy, showing what is awaited, for how long so far and
        ``status()``; raise ``DemoFailed`` after ``limit_s``."""
        started = time.monotonic()
        self._last_progress = started  # the first progress line after PROGRESS_EVERY_S
        while True:
            result = condition()
            if result:
                return result
            waited = time.monotonic() - started
            if waited >= limit_s:
                raise DemoFailed(f"{what} did not happen within {limit_s:g}s (the step "
                                 "timeout; raise it with --step-timeout)")
            detail = status()
            self.progress(f"waiting for {what}: {waited:.0f}s so far (up to {limit_s:g}s)"
                          + (f"; {detail}" if detail else ""))
            time.sleep(0.25)
