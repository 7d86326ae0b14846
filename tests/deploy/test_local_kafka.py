"""deploy/kafka/local-kafka: start, status, idempotent start, stop leaving no process behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.kafka_helpers import free_port_pair

LOCAL_KAFKA = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "local-kafka"


def process_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def script(action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LOCAL_KAFKA), action], capture_output=True, text=True, env=env,
                          timeout=180)


@pytest.mark.kafka
@pytest.mark.slow
def test_start_status_stop(tmp_path: Path) -> None:
    port = free_port_pair()
    env = {**os.environ, "LOCAL_KAFKA_PORT": str(port),
           "LOCAL_KAFKA_STATE": str(tmp_path / "state")}
    assert script("status", env).returncode != 0
    assert script("ping", env).returncode != 0

    started = script("start", env)
    try:
        assert started.returncode == 0, started.stderr + started.stdout
        pid = int((tmp_path / "state" / "kafka.pid").read_text())
        metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert [broker.port for broker in metadata.brokers.values()] == [port]
        assert script("status", env).returncode == 0
        assert script("ping", env).returncode == 0
        again = script("start", env)
        assert again.returncode == 0
        assert "already running" in again.stdout
    finally:
        stopped = script("stop", env)
    assert stopped.returncode == 0
    assert not process_alive(pid), "the broker process is still alive after stop"
    assert script("status", env).returncode != 0
    assert script("ping", env).returncode != 0


def test_usage_error_is_one_line() -> None:
    result = subprocess.run([str(LOCAL_KAFKA), "explode"], capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "usage: local-kafka start|stop|status" in result.stderr
