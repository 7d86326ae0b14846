"""Progress of long work (``simulate``, ``check``, ``train``), on stderr: stdout stays the
command's result, so ``levydrift check ... > result.txt`` or ``| jq`` is never polluted.

On a terminal it is one line rewritten in place every second and cleared at the end. Elsewhere
(CI, a log collector) it is a JSON log line (logger ``levydrift.progress``) at each phase, every
``every_s`` seconds and at the end, like every other log line. Work that ends within ``every_s``
says nothing, so a quick command (or a one-line error) stays exactly what it was.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType
from typing import TextIO

log = logging.getLogger("levydrift.progress")
DEFAULT_EVERY_S = 5.0
_TERMINAL_EVERY_S = 1.0
_MIN_EVERY_S = 0.05


class Progress:
    """``with Progress(...) as progress:``, then ``phase(text)`` when the work changes kind and
    ``update(done)`` as it advances. A heartbeat shows the state even while nothing updates
    (a model being fitted)."""

    def __init__(self, command: str, total: int | None = None, unit: str = "records",
                 stream: TextIO | None = None, every_s: float | None = None) -> None:
        self.command = command
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = DEFAULT_EVERY_S if every_s is None else every_s
        self.started = time.monotonic()
        self.done = 0
        self.what = ""
        self._shown = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="progress", daemon=True)

    def __enter__(self) -> Progress:
        self._heartbeat.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        self._heartbeat.join()
        with self._lock:
            if self.tty and self._shown:
                self.stream.write("\r\033[K")
                self.stream.flush()
            elif self._shown and kind is None:
                log.info("done", extra=self._fields())

    def phase(self, text: str, done: int = 0) -> None:
        """A new kind of work (reading a file, fitting a model), counted afresh from ``done``;
        shown at once once the work has lasted ``every_s``."""
        self.what = text
        self.done = done
        if time.monotonic() - self.started >= self.every_s:
            self._show()

    def update(self, done: int) -> None:
        self.done = done

    def text(self) -> str:
        elapsed = time.monotonic() - self.started
        parts = [f"{self.command}: {self.what}" if self.what else self.command]
        if self.done or self.total:
            count = f"{self.done:,}" + (f" of {self.total:,}" if self.total else "")
            parts.append(f"{count} {self.unit}")
        parts.append(f"{elapsed:.0f}s")
        return " - ".join(parts)

    def _beat(self) -> None:
        if self._stop.wait(self.every_s):
            return
        while True:
            if self.what:  # before the first phase there is nothing worth saying
                self._show()
            if self._stop.wait(_TERMINAL_EVERY_S if self.tty
                               else max(self.every_s, _MIN_EVERY_S)):
                return

    def _show(self) -> None:
        with self._lock:
            self._shown = True
            if self.tty:
                self.stream.write(f"\r\033[K{self.text()}")
                self.stream.flush()
            else:
                log.info(self.what, extra=self._fields())

    def _fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"command": self.command, "done": self.done,
                                     "unit": self.unit,
                                     "elapsed_s": round(time.monotonic() - self.started, 1)}
        if self.total is not None:
            fields["total"] = self.total
        return fields
