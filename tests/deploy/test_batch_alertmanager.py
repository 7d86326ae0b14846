"""The batch path's Alertmanager channel against a real Alertmanager (Debian's binary) running
deploy/alertmanager/alertmanager.yml: the pushed alert is accepted, routed by its severity and
carries the summary and the report's URL."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from levydrift.commands.notify import AlertmanagerChannel, Notification
from tests.deploy.conftest import DEPLOY, require_tool
from tests.kafka_helpers import wait_until

CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


@pytest.fixture
def alertmanager(tmp_path: Path) -> str:
    binary = require_tool("prometheus-alertmanager")
    port = _free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={CONFIG}", f"--storage.path={tmp_path / 'am'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "alertmanager.log").open("w"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(f"{url}/api/v2/status"), 30, "Alertmanager to answer")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_rejection_reaches_alertmanager_as_a_warning(alertmanager: str) -> None:
    notification = Notification("rejected", "levy-impact", "levy-impact v3 rejected by the gate",
                                "- gate: rejected: candidate MAE 80 is not 1% better",
                                "https://ci/artifacts/9", "https://ci/runs/9")
    where = AlertmanagerChannel(alertmanager).send(notification)
    assert where.endswith("/…")
    alerts = wait_until(lambda: _get(f"{alertmanager}/api/v2/alerts?filter=model%3D"
                                     "%22levy-impact%22"), 30, "the pushed alert")
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["labels"] == {"alertname": "LevyBatchRejected", "model": "levy-impact",
                               "kind": "rejected", "severity": "warning",
                               "service": "levydrift-batch"}
    assert alert["annotations"]["summary"] == "levy-impact v3 rejected by the gate"
    assert alert["annotations"]["report_url"] == "https://ci/artifacts/9"
    assert alert["generatorURL"] == "https://ci/runs/9"
    assert alert["status"]["state"] == "active"
    assert [r["name"] for r in alert["receivers"]] == ["levydrift-webhook"]  # warning route
