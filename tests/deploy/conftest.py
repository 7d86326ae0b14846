"""Fixtures for the operations tests: the external tools they drive (promtool, amtool,
actionlint, docker compose) and the paths of the deploy files.

A missing tool skips the test on a developer machine (with the install command in the reason)
but fails it in CI (CI=true), where deploy/ci/install-tools.sh must have installed it: a check
that silently stops running is worse than a red build.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy.tools import INSTALL_SCRIPT, find_tool

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


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
