"""The locks, the container image recipe and the example configuration.

No Docker engine is assumed, so the image is not built here. The locks are checked against
pyproject.toml (a dependency added or raised without `make lock` fails here) and against the
venv the tests run in (`make install` installs exactly the locked versions, so a mismatch means
the tests ran something other than what ships); the Dockerfile's promises are checked in its text.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from packaging.requirements import Requirement

from levydrift import settings
from tests.deploy.conftest import DEPLOY, REPO

LOCK = DEPLOY / "requirements.lock"  # runtime: the image
BUILD_LOCK = DEPLOY / "requirements-build.lock"  # the build backend
DEV_LOCK = DEPLOY / "requirements-dev.lock"  # runtime + test + bench: make install
EXAMPLE = DEPLOY / "levydrift.example.toml"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclasses.dataclass(frozen=True)
class Pin:
    requirement: Requirement  # name==version ; marker
    hashes: tuple[str, ...]

    @property
    def version(self) -> str:
        (specifier,) = self.requirement.specifier
        return specifier.version

    def applies_here(self) -> bool:
        marker = self.requirement.marker
        return marker is None or marker.evaluate()


def _pins(path) -> list[Pin]:
    """A hashed lock file: ``name==version [; marker] --hash=... \\`` entries. A universal
    lock may pin one name twice, for different Pythons (markers)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pins = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        hashes = tuple(re.findall(r"--hash=(\S+)", line))
        requirement = Requirement(re.sub(r"\s*--hash=\S+", "", line))
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", (
            f"{path.name}: {line[:60]!r} is not pinned with ==")
        pins.append(Pin(requirement, hashes))
    return pins


def _here(pins: list[Pin]) -> dict[str, Pin]:
    """The pins that apply to this Python and platform, by canonical name."""
    return {_canonical(pin.requirement.name): pin for pin in pins if pin.applies_here()}


def _locked_requirements() -> list[tuple[str, list[Requirement]]]:
    """(lock file, the requirements of pyproject.toml it must satisfy)."""
    runtime = [Requirement(text) for text in PROJECT["project"]["dependencies"]]
    extras = [Requirement(text) for group in PROJECT["project"]["optional-dependencies"].values()
              for text in group]
    build = [Requirement(text) for text in PROJECT["build-system"]["requires"]]
    return [(LOCK, runtime), (DEV_LOCK, runtime + extras), (BUILD_LOCK, build)]


@pytest.mark.parametrize(("lock", "requirements"), _locked_requirements(),
                         ids=lambda value: getattr(value, "name", ""))
def test_every_dependency_is_locked_within_pyproject_specifier(lock, requirements) -> None:
    pins = _pins(lock)
    assert requirements
    for requirement in requirements:
        name = _canonical(requirement.name)
        versions = [pin.version for pin in pins if _canonical(pin.requirement.name) == name]
        assert versions, f"{name} is a dependency but not in {lock.name}: run make lock"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock.name} pins {name}=={version}, outside pyproject's {requirement}: "
                "run make lock")


def test_every_pin_carries_hashes_and_the_locks_agree() -> None:
    runtime, build, dev = _pins(LOCK), _pins(BUILD_LOCK), _pins(DEV_LOCK)
    for pin in runtime + build + dev:
        assert pin.hashes and all(h.startswith("sha256:") for h in pin.hashes), pin
    dev_pins = {str(pin.requirement) for pin in dev}
    for pin in runtime:  # the dev lock is resolved within the runtime one: the same versions
        assert str(pin.requirement) in dev_pins, f"{pin.requirement} is not in {DEV_LOCK.name}"
    dev_here = _here(dev)
    for name, pin in _here(build).items():  # make install installs dev + build together
        if name in dev_here:
            assert dev_here[name].version == pin.version, (name, pin.version)


def test_the_tests_run_the_locked_versions() -> None:
    """`make install` installs the locks exactly; anything else here means the suite is testing
    versions that are not the ones the image and CI install."""
    for lock in (DEV_LOCK, BUILD_LOCK):
        for name, pin in _here(_pins(lock)).items():
            try:
                installed = distribution(name).version
            except PackageNotFoundError:
                pytest.fail(f"{name}=={pin.version} is locked but not installed: run make "
                            "install", pytrace=False)
            assert installed == pin.version, (
                f"{lock.name} pins {name}=={pin.version} but the tests run {installed}: "
                "run make install")


def test_every_install_path_installs_from_the_locks() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"install -q --require-hashes --no-deps \$\(addprefix -r ,\$\(LOCKS\)\)",
                     makefile)
    assert "LOCKS := deploy/requirements-dev.lock deploy/requirements-build.lock" in makefile
    assert "install -q --no-deps --no-build-isolation -e ." in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text()  # which runs make install


def test_dockerfile_is_slim_non_root_and_runs_levydrift() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert bases and all(base.startswith("python:3.11-slim") for base in bases), bases
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r'^ENTRYPOINT \["levydrift"\]$', text, re.M)
    assert "--require-hashes --no-deps -r /tmp/requirements.lock" in text
    assert "--require-hashes --no-deps -r /tmp/requirements-build.lock" in text
    assert "--no-deps /tmp/wheels/" in text  # the project wheel must not pull unpinned versions
    # The build context is the repository less deploy/Dockerfile.dockerignore ("*", then
    # exceptions): whatever the Dockerfile copies must exist and be let through.
    allowed = re.findall(r"^!(\S+?)/?$", (DEPLOY / "Dockerfile.dockerignore").read_text(), re.M)
    for path in re.findall(r"^COPY\s+(?!--)(\S+)", text, re.M):
        assert (REPO / path).exists(), f"Dockerfile copies {path}, which does not exist"
        assert path in allowed, f"Dockerfile copies {path}, which the .dockerignore leaves out"


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
