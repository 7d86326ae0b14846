"""deploy/docker-compose.yml, validated by Compose itself.

Validators: `docker compose config` (the v2 plugin) when it is installed, and the standalone
`docker-compose config` (Debian's docker-compose package, installed by deploy/ci/install-tools.sh),
which validates against the compose-spec JSON schema it ships. Neither needs a Docker engine. With
neither present the tests skip, or fail in CI. The structural checks read the *normalised* config
that `docker-compose config` prints (anchors and merge keys resolved); its YAML layout is fixed,
which v2's (long volume syntax, other indentation) is not, so they use that tool only.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.deploy.conftest import DEPLOY, REPO, in_ci, run

COMPOSE_FILE = DEPLOY / "docker-compose.yml"


def _compose_commands() -> list[list[str]]:
    commands = []
    if shutil.which("docker"):
        try:
            probe = subprocess.run(["docker", "compose", "version"], capture_output=True,
                                   timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            probe = None
        if probe is not None and probe.returncode == 0:
            commands.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        commands.append(["docker-compose"])
    return commands


def _missing(message: str) -> None:
    message += " (run deploy/ci/install-tools.sh as root)"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def validators() -> list[list[str]]:
    commands = _compose_commands()
    if not commands:
        _missing("neither `docker compose` nor `docker-compose` is installed")
    return commands


@pytest.fixture(scope="module")
def normalised() -> str:
    if not shutil.which("docker-compose"):
        _missing("docker-compose is not installed")
    result = run(["docker-compose", "-f", str(COMPOSE_FILE), "--profile", "simulator", "config"],
                 cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _services(config: str) -> dict[str, str]:
    """Service name -> its block of the normalised YAML (two-space indented keys)."""
    body = ("\n" + config).split("\nservices:\n", 1)[1]
    body = re.split(r"\n(?=\S)", body, maxsplit=1)[0]  # up to the next top-level key
    parts = re.split(r"^  ([\w.-]+):\n", body, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_compose_file_is_valid(validators: list[list[str]]) -> None:
    for compose in validators:
        for profile in ([], ["--profile", "simulator"]):
            result = run([*compose, "-f", str(COMPOSE_FILE), *profile, "config", "-q"],
                         cwd=REPO)
            assert result.returncode == 0, f"{compose} config {profile}: {result.stderr}"


def test_stack_services_and_commands(normalised: str) -> None:
    services = _services(normalised)
    assert set(services) >= {"kafka", "topics", "consumer", "trainer", "simulator",
                              "prometheus", "alertmanager", "grafana"}
    assert re.search(r"image: apache/kafka:\S+", services["kafka"])
    assert "KAFKA_PROCESS_ROLES: broker,controller" in services["kafka"]  # KRaft, no ZooKeeper
    expected = {"topics": ["topics", "create"], "consumer": ["consume"],
                "trainer": ["train-worker"],
                "simulator": ["simulate", "--scenario", "reassessment", "--rate", "500"]}
    for name, words in expected.items():
        command = re.search(r"^    command:\n((?: +- .*\n)+)", services[name], re.M)
        assert command, f"{name} has no command"
        found = [line.strip()[2:].strip("'\"") for line in command.group(1).splitlines()]
        assert found == words, name


def test_levydrift_services_share_image_config_and_registry(normalised: str) -> None:
    services = _services(normalised)
    for name in ("topics", "consumer", "trainer", "simulator"):
        block = services[name]
        assert "dockerfile: deploy/Dockerfile" in block, name
        assert "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS: kafka:9092" in block, name
        assert "levydrift.example.toml:/etc/levydrift/levydrift.toml:ro" in block, name
        assert "LEVYDRIFT_CONFIG: /etc/levydrift/levydrift.toml" in block, name
    for name in ("consumer", "trainer"):
        assert "model-registry:/app/models" in services[name], name
        assert "condition: service_completed_successfully" in services[name], name
    assert re.search(r"^  model-registry:", normalised.rsplit("\nvolumes:\n", 1)[1], re.M)
    # Metrics ports must match the scrape targets in prometheus.yml.
    scrape = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    for name, job in (("consumer", "levydrift-consumer"), ("trainer", "levydrift-trainer")):
        port = re.search(r"LEVYDRIFT_METRICS_PORT: '?(\d+)", services[name]).group(1)
        assert f'"{name}:{port}"' in scrape, f"{job} does not scrape {name}:{port}"


def test_health_checks_and_simulator_profile(normalised: str) -> None:
    services = _services(normalised)
    for name in ("kafka", "consumer", "trainer", "prometheus", "alertmanager", "grafana"):
        assert "    healthcheck:\n" in services[name], f"{name} has no health check"
    assert re.search(r"profiles:\n    - simulator", services["simulator"])
    for name in ("kafka", "consumer", "trainer", "topics"):
        assert "profiles:" not in services[name], f"{name} must run without a profile"
