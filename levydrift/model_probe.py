"""Load and probe a model version in a child process before a service loads it itself.

``levydrift.model_checks`` rules out the damage we know native code trips over; this catches
what nobody foresaw. The child verifies, loads, checks and predicts the probe batch exactly as
the service would; if that kills it (a segfault), hangs, or refuses, the version is refused
with a reason and the service never touches it. It costs a Python start-up and the imports
(about a second or two), once per model version, off the service's loop: ``IsolatedProbe``
does not block until asked to. At start, where the service will wait for a probe, a
``SpareProbe`` started early does those imports while the service does its own start-up, and
``ProbedVersions`` remembers the artifacts that passed and then served in this environment, so
that a restart serving one of them again needs no child at all.

    python -m levydrift.model_probe VERSION_DIR [SHA256]
    python -m levydrift.model_probe --wait    (imports, then reads [VERSION_DIR, SHA256] as a
                                               JSON line on stdin; exits 0 at end of input)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from levydrift.errors import ArtifactError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120.0
_STDERR_TAIL = 400
_WAIT = "--wait"
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The packages whose code loads, checks and scores a model (their sources are fingerprinted).
_PROBED_SOURCES = ("levydrift", "schemas")


def _spawn(arguments: list[str], stdin: int, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "levydrift.model_probe", *arguments],
                            stdout=subprocess.PIPE, stderr=stderr, stdin=stdin,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


class SpareProbe:
    """A probe child started before there is a version to probe: it imports the model
    libraries (most of a probe's time) meanwhile, then probes the one version an
    ``IsolatedProbe`` hands it. Closed unused, it is killed; if its parent dies, its stdin
    ends and it exits without probing."""

    @classmethod
    def for_registry(cls, registry_root: str | Path, model_name: str) -> SpareProbe | None:
        """A spare when the registry holds a version of the model (``<root>/<name>/versions/
        <n>``, trainer.registry_layout's layout, which this layer may not import), so that a
        start will likely probe one; else None."""
        try:
            if any((Path(registry_root) / model_name / "versions").iterdir()):
                return cls()
        except OSError:  # no such directory yet, or unreadable: the start says so if needed
            pass
        return None

    def __init__(self) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        self.process: subprocess.Popen[bytes] | None = _spawn([_WAIT], subprocess.PIPE,
                                                              self.stderr)

    def hand_over(self, version_dir: str | Path,
                  expected_sha256: str | None) -> subprocess.Popen[bytes] | None:
        """The child, now probing ``version_dir`` (its stderr is ``self.stderr``); None if it
        is gone, and the caller spawns afresh. Once only."""
        process, self.process = self.process, None
        if process is None or process.stdin is None:
            return None
        try:  # communicate() closes stdin once the caller waits
            process.stdin.write(json.dumps([str(version_dir), expected_sha256 or ""]).encode()
                                + b"\n")
            process.stdin.flush()
        except (BrokenPipeError, ValueError):  # it died: a probe of its own would say why
            _reap(process)
            self.stderr.close()
            return None
        return process

    def close(self) -> None:
        """Kill an unused child (one whose parent died exits by itself: its stdin ends)."""
        if self.process is not None:
            _reap(self.process)
            self.process = None
            self.stderr.close()


def _reap(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            # Unsent bytes for a dead child raise on close; the pipe is closed all the same.
            with contextlib.suppress(BrokenPipeError):
                pipe.close()


class IsolatedProbe:
    """One version's verify + load + check + probe, running in a child process: ``spare``'s,
    if it is given one that is still alive, else a new one."""

    def __init__(self, version_dir: str | Path, expected_sha256: str | None,
                 timeout_s: float = PROBE_TIMEOUT_S, spare: SpareProbe | None = None) -> None:
        self.label = str(version_dir)
        self._started = time.monotonic()
        self._deadline = self._started + timeout_s
        process = spare.hand_over(version_dir, expected_sha256) if spare else None
        if process is not None:
            assert spare is not None
            self._stderr = spare.stderr
        else:
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
            process = _spawn([str(version_dir), expected_sha256 or ""], subprocess.DEVNULL,
                             self._stderr)
        self._process = process
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
        _reap(self._process)
        self._stderr.close()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return " ".join(text[-_STDERR_TAIL:].split()) or "no output"


def environment_fingerprint() -> str:
    """What a probe's verdict depends on besides the artifact's bytes: the Python build, the
    machine, every installed distribution (the dist-info names carry the versions) and the
    sources of the code that loads, checks and scores a model. Where they are installed does
    not count (``python -m`` and the console script see different paths). ~5 ms, imports
    nothing."""
    digest = hashlib.sha256(f"{sys.version}|{sys.platform}|{platform.machine()}".encode())
    installed: set[str] = set()
    for entry in sys.path:
        with contextlib.suppress(OSError):  # a zip, a missing directory: nothing installed there
            installed.update(name for name in os.listdir(entry or ".")
                             if name.endswith((".dist-info", ".egg-info")))
    digest.update("\n".join(sorted(installed)).encode())
    for package in _PROBED_SOURCES:
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            for path in sorted(Path(location).rglob("*.py")):
                digest.update(str(path.relative_to(location)).encode() + path.read_bytes())
    return digest.hexdigest()[:32]


class ProbedVersions:
    """Model artifacts that passed their child-process probe and then loaded and compiled in
    the service, in this environment (``environment_fingerprint``): serving one of them again
    needs no child (~1-2 s of a restart); the service still verifies the bytes and runs the
    model checks itself. One marker file per artifact, ``<directory>/<environment>/<sha256>``:
    files, not one shared document, because instances may share the directory.

    The service withdraws a version's marker before it loads the version without a child and
    grants it again once the version is loaded and compiled: a process that dies in between
    leaves the version to be probed in a child the next time, so a model can never put the
    consumer into a crash loop. A marker that cannot be read or names another artifact or
    environment is not trusted; a directory that cannot be written only costs the child."""

    def __init__(self, directory: str | Path, environment: str | None = None) -> None:
        self.environment = environment or environment_fingerprint()
        self._directory = Path(directory) / self.environment

    def trusts(self, sha256: str) -> bool:
        """Whether the artifact with this SHA-256 passed and served here before."""
        path = self._marker(sha256)
        if path is None:
            return False
        try:
            record = json.loads(path.read_bytes())
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as error:
            log.warning("model probe record unreadable; probing the version again",
                        extra={"path": str(path), "error": str(error)})
            return False
        return isinstance(record, dict) and record.get("sha256") == sha256.lower() \
            and record.get("environment") == self.environment

    def withdraw(self, sha256: str) -> bool:
        """Forget the artifact; False when that could not be recorded (then it must be probed
        in a child after all, or a crash could repeat at every start)."""
        path = self._marker(sha256)
        if path is None:
            return False
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            log.warning("model probe record cannot be removed; probing in a child",
                        extra={"path": str(path), "error": str(error)})
            return False
        return True

    def grant(self, sha256: str, label: str) -> None:
        """Remember that the artifact passed and served here (``label``: for operators)."""
        path = self._marker(sha256)
        if path is None:
            return
        record = {"sha256": sha256.lower(), "environment": self.environment, "model": label,
                  "at": datetime.now(UTC).isoformat(timespec="seconds")}
        temporary: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".", delete=False) as file:
                temporary = file.name
                file.write(json.dumps(record).encode())
            os.replace(temporary, path)  # whole or absent, whoever reads it
        except OSError as error:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            log.warning("model probe record cannot be written; the next start probes again",
                        extra={"path": str(path), "error": str(error)})

    def _marker(self, sha256: str) -> Path | None:
        """The marker's path; None for anything but a SHA-256 in hex (no path from an event
        may name another file)."""
        sha256 = sha256.lower()
        return self._directory / sha256 if _SHA256.fullmatch(sha256) else None


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
    if argv == [_WAIT]:
        return _wait_and_probe()
    # lazy: the child only; the parent's side (SpareProbe) is spawned before heavy imports
    from levydrift.artifacts import load_version_dir

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


def _wait_and_probe() -> int:
    """The spare child: the imports first, then the version its parent names, if any."""
    from levydrift.artifacts import import_model_loading  # lazy: the child only

    import_model_loading()
    import levydrift.scoring  # noqa: F401  # lazy: the child only (scikit-learn, numba)

    line = sys.stdin.readline()
    if not line:  # closed unused
        return 0
    version_dir, expected = json.loads(line)
    return main([version_dir, expected])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
