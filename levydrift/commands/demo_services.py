"""The demo's services: ``levydrift consume`` and ``levydrift train-worker`` as child
processes on the demo's topics and registry, what they last logged, and their metrics."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from levydrift.commands.demo_narrator import DemoFailed
from levydrift.settings import KafkaSettings, TopicSettings

CONSUMER_PORT, TRAINER_PORT = 9108, 9109


class Services:
    """The two services, each logging to ``<output>/<name>.log``."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, run_id: str, kafka: KafkaSettings, topics: TopicSettings,
              registry_root: Path) -> None:
        self.ports = {"consumer": free_port(CONSUMER_PORT), "trainer": free_port(TRAINER_PORT)}
        common = {**service_environment(kafka, topics),
                  "LEVYDRIFT_REGISTRY_ROOT": str(registry_root)}
        self.spawn("consumer", ["consume"], {
            **common, "LEVYDRIFT_METRICS_PORT": str(self.ports["consumer"]),
            "LEVYDRIFT_CONSUMER_GROUP_ID": f"levy-demo-{run_id}-monitor",
            "LEVYDRIFT_CONSUMER_INSTANCE_ID": f"demo-{run_id}",
            "LEVYDRIFT_CONSUMER_BATCH_SIZE": "1000",
            "LEVYDRIFT_CONSUMER_CHECKPOINT_INTERVAL_S": "0.5",
            "LEVYDRIFT_CONSUMER_STATE_DIR": str(registry_root.parent / "consumer-state")})
        self.spawn("trainer", ["train-worker"], {
            **common, "LEVYDRIFT_METRICS_PORT": str(self.ports["trainer"]),
            "LEVYDRIFT_TRAINER_GROUP_ID": f"levy-demo-{run_id}-trainer",
            "LEVYDRIFT_TRAINER_TRANSACTIONAL_ID_PREFIX": f"levy-demo-{run_id}",
            "LEVYDRIFT_TRAINER_WINDOW_RECORDS": "10000",
            # Both partitions' events of one change arrive within a few seconds: one retrain.
            "LEVYDRIFT_TRAINER_EPISODE_LINGER_S": "3"})

    def spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = self.log_path(name).open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "levydrift.cli", *command], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()

    def log_path(self, name: str) -> Path:
        return self.output / f"{name}.log"

    def check_alive(self) -> None:
        """``DemoFailed`` when a service has exited: nothing it was awaited for will happen."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise DemoFailed(f"{name} exited with code {process.returncode}; see "
                                 f"{self.log_path(name)}")

    def status(self, name: str) -> str:
        """What a service last logged (its log is JSON lines), to show while waiting on it."""
        self.check_alive()
        last = ""
        with contextlib.suppress(OSError), self.log_path(name).open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 4096))
            for line in log.read().decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    last = json.loads(line).get("message") or last
        return f"{name}: {last}" if last else f"{name}: starting"

    def stop(self) -> None:
        """SIGTERM to all, then up to 20 s each to finish before a kill."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def metric(self, service: str, name: str, labels: str = "") -> float | None:
        """One sample from a service's /metrics page; None if absent or not answering."""
        url = f"http://127.0.0.1:{self.ports[service]}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name) and labels in line and not line.startswith("#"):
                head, _, value = line.rpartition(" ")
                if head.split("{")[0] == name:
                    return float(value)
        return None


def service_environment(kafka: KafkaSettings, topics: TopicSettings) -> dict[str, str]:
    """The services' environment: Kafka connection settings pass through; everything else
    is the demo's own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LEVYDRIFT_") or k.startswith("LEVYDRIFT_KAFKA_")}
    env.pop("LEVYDRIFT_CONFIG", None)
    env.update({"LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "LEVYDRIFT_TOPICS_RECORDS": topics.records,
                "LEVYDRIFT_TOPICS_DEAD_LETTERS": topics.dead_letters,
                "LEVYDRIFT_TOPICS_DRIFT_EVENTS": topics.drift_events,
                "LEVYDRIFT_TOPICS_MODEL_VERSIONS": topics.model_versions,
                "LEVYDRIFT_TOPICS_DETECTOR_STATE": topics.detector_state,
                "LEVYDRIFT_TOPICS_LABELS": topics.labels,
                "LEVYDRIFT_TOPICS_JOIN_CHANGELOG": topics.join_changelog,
                "LEVYDRIFT_METRICS_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1"})
    return env


def free_port(preferred: int) -> int:
    """``preferred`` when it is free (the documented ports), else any free port."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise DemoFailed("no free TCP port for a metrics endpoint")
