"""Load and probe a model version in a child process before a service loads it itself.

``levydrift.model_checks`` rules out the damage we know native code trips over; this catches
what nobody foresaw. The child verifies, loads, checks and predicts the probe batch exactly as
the service would; if that kills it (a segfault), hangs, or refuses, the version is refused
with a reason and the service never touches it. It costs a Python start-up and the imports
(about a second or two), once per model version, off the service's loop: ``IsolatedProbe``
does not block until asked to.

    python -m levydrift.model_probe VERSION_DIR [SHA256]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from levydrift.artifacts import load_version_dir
from levydrift.errors import ArtifactError

PROBE_TIMEOUT_S = 120.0
_STDERR_TAIL = 400


class IsolatedProbe:
    """One version's verify + load + check + probe, running in a child process."""

    def __init__(self, version_dir: str | Path, expected_sha256: str | None,
                 timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.label = str(version_dir)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        self._started = time.monotonic()
        self._deadline = self._started + timeout_s
        self._process = subprocess.Popen(
            [sys.executable, "-m", "levydrift.model_probe", str(version_dir),
             expected_sha256 or ""],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.seconds: float | None = None

    def finished(self) -> bool:
        """True once the child exited or ran out of time (never blocks)."""
        return self._process.poll() is not None or time.monotonic() >= self._deadline

    def result(self) -> None:
        """Block until the child is done; raise ``ArtifactError`` unless it accepted the
        version."""
        try:
            output, _ = self._process.communicate(
                timeout=max(self._deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            self.cancel()
            raise ArtifactError(f"model {self.label}: loading and probing it took over "
                                f"{self._deadline - self._started:.0f} s; refusing it",
                                "probe_timeout") from None
        self.seconds = time.monotonic() - self._started
        try:
            self._raise_unless_accepted(self._process.returncode, output)
        finally:
            self._stderr.close()

    def _raise_unless_accepted(self, code: int, output: bytes) -> None:
        if code == 0:
            return
        verdict = _last_json_line(output)
        if code == 1 and verdict is not None:
            raise ArtifactError(str(verdict.get("error")), str(verdict.get("reason")))
        raise ArtifactError(f"model {self.label}: loading and probing it killed the probe "
                            f"process ({_exit_description(code)}): {self._stderr_tail()}",
                            "probe_crashed")

    def cancel(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate()  # reaps the child and closes its pipe
        self._stderr.close()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return " ".join(text[-_STDERR_TAIL:].split()) or "no output"


def _last_json_line(output: bytes) -> dict[str, object] | None:
    for line in reversed(output.decode(errors="replace").splitlines()):
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict):
            return document
    return None


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def main(argv: list[str]) -> int:
    """The child: one JSON line on stdout; exit 0 accepted, 1 refused."""
    version_dir, expected = argv[0], (argv[1] if len(argv) > 1 else "")
    try:
        model = load_version_dir(version_dir, expected_sha256=expected or None)
    except ArtifactError as error:
        print(json.dumps({"reason": error.reason, "error": str(error)}), flush=True)
        return 1
    # The service scores from columns where it can (levydrift.scoring): that path, compiled
    # trees included, runs here first too, where a crash refuses the version and costs nothing.
    from levydrift.scoring import compile_scorer  # lazy: the child only (scikit-learn, numba)

    compiled = compile_scorer(model) is not None
    print(json.dumps({"accepted": True, "column_scoring": compiled}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
