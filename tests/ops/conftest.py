"""Fixtures for the operations tests: the external tools they drive (promtool, amtool,
actionlint, docker compose) and the paths of the deploy files.

A missing tool skips the test on a developer machine (with the install command in the reason)
but fails it in CI (CI=true), where deploy/ci/install-tools.sh must have installed it: a check
that silently stops running is worse than a red build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
INSTALL_SCRIPT = "deploy/ci/install-tools.sh"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


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


def require_tool(name: str) -> str:
    """The path of ``name``; skip (outside CI) or fail (in CI) when it is not installed."""
    path = find_tool(name)
    if path is None:
        message = f"{name} is not installed (run {INSTALL_SCRIPT} as root)"
        if in_ci():
            pytest.fail(f"{message}; CI must have it", pytrace=False)
        pytest.skip(message)
    return path


def run(command: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_tool("amtool")


@pytest.fixture(scope="session")
def actionlint() -> str:
    return require_tool("actionlint")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return require_tool("prometheus")
