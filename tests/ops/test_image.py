"""The container image recipe and the example configuration.

No Docker engine is assumed, so the image is not built here; instead the pinned lock is checked
against pyproject.toml and the venv the tests run in (a stale lock means the image runs other
versions than the ones tested), and the Dockerfile's promises are checked in its text.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from importlib.metadata import distribution

import pytest
from packaging.requirements import Requirement

from levydrift import settings
from tests.ops.conftest import DEPLOY, REPO

LOCK = DEPLOY / "requirements.lock"
EXAMPLE = DEPLOY / "levydrift.example.toml"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned line in requirements.lock: {line!r}"
            pins[_canonical(name)] = version
    return pins


def test_lock_pins_every_runtime_dependency_at_the_tested_version() -> None:
    pins = _lock()
    # pyproject.toml, not the installed metadata, which is stale until the next pip install.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = [Requirement(text) for text in project["dependencies"]]
    assert runtime
    for requirement in runtime:
        name = _canonical(requirement.name)
        assert name in pins, f"{name} is a dependency but not in requirements.lock"
        assert requirement.specifier.contains(pins[name]), (
            f"{name}=={pins[name]} violates pyproject's {requirement}")
    for name, version in pins.items():
        assert distribution(name).version == version, (
            f"requirements.lock pins {name}=={version} but the tests run "
            f"{distribution(name).version}: run deploy/ci/lock-requirements.sh")


def test_dockerfile_is_slim_non_root_and_runs_levydrift() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert bases and all(base.startswith("python:3.11-slim") for base in bases), bases
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r'^ENTRYPOINT \["levydrift"\]$', text, re.M)
    assert "-r /tmp/requirements.lock" in text
    assert "--no-deps" in text  # the project wheel must not pull unpinned versions
    for path in re.findall(r"^COPY\s+(?!--)(\S+)", text, re.M):
        assert (REPO / path).exists(), f"Dockerfile copies {path}, which does not exist"


def _service_settings() -> list[type]:
    """The service settings classes in levydrift.settings (those with a kafka section)."""
    found = []
    for value in vars(settings).values():
        if dataclasses.is_dataclass(value) and isinstance(value, type):
            names = {field.name for field in dataclasses.fields(value)}
            if "kafka" in names:
                found.append(value)
    return found


@pytest.mark.parametrize("settings_type", _service_settings(), ids=lambda t: t.__name__)
def test_example_config_loads(settings_type: type) -> None:
    loaded = settings.load(settings_type, EXAMPLE, environ={})
    assert loaded.kafka.bootstrap_servers


def test_example_config_sections() -> None:
    text = EXAMPLE.read_text()
    for section in ("kafka", "topics", "metrics", "logging", "consumer", "trainer", "detectors"):
        assert re.search(rf"^\[{section}\]$", text, re.M), section
    assert '"security.protocol"' in text  # the commented SASL example
