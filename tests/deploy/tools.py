"""The external tools the operations tests drive, and how `make test` gets them.

    python -m tests.deploy.tools ensure   install the missing ones (deploy/ci/install-tools.sh)
                                       when this user may: root, or passwordless sudo
    python -m tests.deploy.tools report   one line naming the missing tools and the command that
                                       installs them; nothing when none is missing

`make test` runs ``ensure`` before the suite and ``report`` after it, so a run that had to skip
operations tests ends by saying which and how to fix it. tests/deploy/conftest.py finds the tools
with ``find_tool`` (and fails instead of skipping in CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = "deploy/ci/install-tools.sh"
# shellcheck is not driven directly: actionlint runs it on the workflow's `run:` scripts.
TOOLS = ("promtool", "amtool", "prometheus", "docker-compose", "shellcheck", "actionlint")


def _go_bin_dirs() -> list[Path]:
    """Where `go install` puts binaries: $GOBIN, $(go env GOPATH)/bin, else ~/go/bin."""
    dirs = []
    if os.environ.get("GOBIN"):
        dirs.append(Path(os.environ["GOBIN"]))
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists()
                                else None)
    if go:
        try:
            gopath = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True,
                                    timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            gopath = ""
        dirs.extend(Path(part) / "bin" for part in gopath.split(os.pathsep) if part)
    dirs.append(Path.home() / "go" / "bin")
    return dirs


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _go_bin_dirs():
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def missing_tools() -> list[str]:
    return [name for name in TOOLS if find_tool(name) is None]


def install_command(uid: int, passwordless_sudo: bool) -> list[str] | None:
    """How this user can run the install script, or None when it cannot (no root, no sudo)."""
    script = str(REPO / INSTALL_SCRIPT)
    if uid == 0:
        return [script]
    if passwordless_sudo:
        return ["sudo", "-n", script]
    return None


def _passwordless_sudo() -> bool:
    if shutil.which("sudo") is None:
        return False
    try:
        return subprocess.run(["sudo", "-n", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure() -> int:
    missing = missing_tools()
    if not missing:
        return 0
    command = install_command(os.geteuid(), _passwordless_sudo())
    if command is None:
        return 0  # `report` names what was skipped once the suite has run
    print(f"make test: installing the operations tests' tools ({', '.join(missing)}) with "
          f"{' '.join(command)}", flush=True)
    if subprocess.run(command, cwd=REPO).returncode != 0:
        print(f"make test: {INSTALL_SCRIPT} failed; the tests that need "
              f"{', '.join(missing_tools())} will be skipped", flush=True)
    return 0


def report_line(missing: list[str]) -> str | None:
    if not missing:
        return None
    return (f"make test: skipped the operations tests that need {', '.join(missing)} "
            f"(not installed); install them with: sudo {INSTALL_SCRIPT}")


def report() -> int:
    line = report_line(missing_tools())
    if line:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    actions = {"ensure": ensure, "report": report}
    if len(sys.argv) != 2 or sys.argv[1] not in actions:
        sys.exit("usage: python -m tests.deploy.tools ensure|report")
    sys.exit(actions[sys.argv[1]]())
