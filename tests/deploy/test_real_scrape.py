"""A real scrape: Prometheus (Debian's binary) scrapes a running `levydrift consume` and
`levydrift train-worker` on the real broker, using deploy/prometheus/prometheus.yml with only its
target addresses and intervals rewritten, and loads deploy/prometheus/alerts.yml. Checked through
Prometheus' HTTP API: both targets up, the contract metrics stored under the right jobs, every
rule loaded and healthy, and the "down" alerts quiet while the services run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import DEPLOY

pytestmark = pytest.mark.slow

SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

# Series each service exports from the start (unlabelled or pre-created label sets), so they
# must reach Prometheus without any traffic.
CONSUMER_SERIES = [
    "levydrift_consumer_records_total", "levydrift_consumer_batch_duration_seconds_count",
    "levydrift_consumer_last_batch_timestamp_seconds", "levydrift_consumer_transactions_total",
    "levydrift_consumer_rebalances_total",
    "levydrift_consumer_state_restore_duration_seconds_bucket",
    "levydrift_consumer_prediction_abs_error",
]
TRAINER_SERIES = [
    "levydrift_trainer_retrains_total", "levydrift_trainer_retrain_duration_seconds_sum",
    "levydrift_trainer_training_records", "levydrift_trainer_drift_events_consumed_total",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def levydrift_command() -> list[str]:
    script = Path(sys.executable).with_name("levydrift")
    return [str(script)] if script.exists() else [sys.executable, "-m", "levydrift.cli"]


def derive_scrape_config(text: str, consumer: int, trainer: int, prometheus: int,
                         alertmanager: int) -> str:
    """The project's scrape config with localhost targets and 1 s intervals."""
    replacements = {
        '"consumer:9108"': f'"127.0.0.1:{consumer}"',
        '"trainer:9109"': f'"127.0.0.1:{trainer}"',
        '"localhost:9090"': f'"127.0.0.1:{prometheus}"',
        '"alertmanager:9093"': f'"127.0.0.1:{alertmanager}"',  # nothing listens: only logged
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{SCRAPE_CONFIG} no longer has exactly one {old}"
        text = text.replace(old, new)
    text, count = re.subn(r"^(\s+(?:scrape|evaluation)_interval:) \S+", r"\1 1s", text,
                          flags=re.M)
    assert count == 2, "expected global scrape_interval and evaluation_interval"
    return text


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str,
             diagnostics: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (OSError, ValueError, KeyError) as error:
            last_error = error
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}"
                f" (last error: {last_error})\n{diagnostics()}", pytrace=False)


class Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.get("/api/v1/query", query=expr)["result"]


def start(command: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    handle = log.open("wb")
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def stack(kafka_bootstrap: str, unique: str, tmp_path: Path,
          prometheus_binary: str) -> Iterator[tuple[Api, dict[str, subprocess.Popen], Path]]:
    consumer_port, trainer_port, prometheus_port, alertmanager_port = (
        free_port(), free_port(), free_port(), free_port())
    # Own topic names per run, so this test never reads another test's records.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("LEVYDRIFT_") and key != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update({
        "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LEVYDRIFT_TOPICS_RECORDS": f"scrape.{unique}.records",
        "LEVYDRIFT_TOPICS_DEAD_LETTERS": f"scrape.{unique}.dlq",
        "LEVYDRIFT_TOPICS_DRIFT_EVENTS": f"scrape.{unique}.drift-events",
        "LEVYDRIFT_TOPICS_MODEL_VERSIONS": f"scrape.{unique}.model-versions",
        "LEVYDRIFT_TOPICS_DETECTOR_STATE": f"scrape.{unique}.detector-state",
        "LEVYDRIFT_TOPICS_LABELS": f"scrape.{unique}.labels",
        "LEVYDRIFT_TOPICS_JOIN_CHANGELOG": f"scrape.{unique}.join-changelog",
        "LEVYDRIFT_CONSUMER_STATE_DIR": str(tmp_path / "consumer-state"),
        "LEVYDRIFT_METRICS_HOST": "127.0.0.1",
    })
    work = tmp_path / "work"  # cwd of the services: the model registry (models/) lands here
    work.mkdir()
    created = subprocess.run([*levydrift_command(), "topics", "create"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr

    processes: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    try:
        for name, subcommand, port in (("consumer", "consume", consumer_port),
                                       ("trainer", "train-worker", trainer_port)):
            logs[name] = tmp_path / f"{name}.log"
            processes[name] = start([*levydrift_command(), subcommand], logs[name], work,
                                    {**env, "LEVYDRIFT_METRICS_PORT": str(port)})
        config_dir = tmp_path / "prometheus"
        config_dir.mkdir()
        shutil.copy(ALERTS, config_dir / "alerts.yml")
        (config_dir / "prometheus.yml").write_text(derive_scrape_config(
            SCRAPE_CONFIG.read_text(), consumer_port, trainer_port, prometheus_port,
            alertmanager_port))
        logs["prometheus"] = tmp_path / "prometheus.log"
        processes["prometheus"] = start([
            prometheus_binary, f"--config.file={config_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ], logs["prometheus"], tmp_path, env)
        api = Api(prometheus_port)
        wait_for(lambda: urllib.request.urlopen(f"{api.base}/-/ready", timeout=2).status == 200,
                 60, "Prometheus to be ready", lambda: _tails(logs, processes))
        yield api, processes, tmp_path
    finally:
        for process in processes.values():
            stop(process)


def _tails(logs: dict[str, Path], processes: dict[str, subprocess.Popen]) -> str:
    lines = []
    for name, log in logs.items():
        process = processes.get(name)
        state = "not started" if process is None else (
            "running" if process.poll() is None else f"exited {process.returncode}")
        text = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        lines.append(f"--- {name} ({state}) ---\n{text}")
    return "\n".join(lines)


def test_prometheus_scrapes_consumer_and_trainer_and_loads_rules(stack) -> None:
    api, processes, tmp_path = stack
    logs = {name: tmp_path / f"{name}.log" for name in processes}

    def both_targets_up() -> bool:
        for name in ("consumer", "trainer"):  # a crashed service will never come up
            if processes[name].poll() is not None:
                pytest.fail(f"levydrift {name} exited with {processes[name].returncode}\n"
                            + _tails(logs, processes), pytrace=False)
        targets = api.get("/api/v1/targets")["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        return (health.get("levydrift-consumer") == "up"
                and health.get("levydrift-trainer") == "up")

    wait_for(both_targets_up, 120, "both levydrift targets to be up",
             lambda: json.dumps(api.get("/api/v1/targets")["activeTargets"], indent=1)
             + "\n" + _tails(logs, processes))

    for job, names in (("levydrift-consumer", CONSUMER_SERIES),
                       ("levydrift-trainer", TRAINER_SERIES)):
        for name in names:
            result = wait_for(lambda n=name, j=job: api.query(f'{n}{{job="{j}"}}'), 30,
                              f"{name} from {job}")
            assert all(series["metric"]["job"] == job for series in result)
    outcomes = {s["metric"]["outcome"]
                for s in api.query('levydrift_consumer_records_total{job="levydrift-consumer"}')}
    assert outcomes >= {"valid", "dead_lettered"}
    retrains = {s["metric"]["outcome"]
                for s in api.query('levydrift_trainer_retrains_total{job="levydrift-trainer"}')}
    assert retrains >= {"promoted", "rejected", "failed"}

    # Every rule of alerts.yml is loaded and evaluates without error.
    expected = set(re.findall(r"^\s*- alert:\s*(\S+)", ALERTS.read_text(), re.M))

    def rules_evaluated() -> dict[str, dict]:
        groups = api.get("/api/v1/rules")["groups"]
        rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
        return rules if set(rules) == expected and all(
            rule.get("lastEvaluation", "").startswith("20") for rule in rules.values()) else {}

    rules = wait_for(rules_evaluated, 30, "all rules to be loaded and evaluated",
                     lambda: json.dumps(api.get("/api/v1/rules"), indent=1)[:3000])
    unhealthy = {name: rule.get("lastError") for name, rule in rules.items()
                 if rule["health"] != "ok"}
    assert not unhealthy, unhealthy
    # The services are up, so their "down" alerts must be quiet (absent() saw the series).
    wait_for(lambda: all(_state(api, name) == "inactive"
                         for name in ("LevyDriftConsumerDown", "LevyDriftTrainerDown")),
             15, "the down alerts to be inactive")


def _state(api: Api, alert: str) -> str:
    for group in api.get("/api/v1/rules")["groups"]:
        for rule in group["rules"]:
            if rule["name"] == alert:
                return rule["state"]
    return "missing"
