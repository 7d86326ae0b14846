"""Alertmanager configuration: valid for `amtool check-config`, and the severity routes send each
alert where the config says (amtool's route tester, with the labels the rules set)."""

from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import DEPLOY, run

CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


def test_config_passes_amtool(amtool: str) -> None:
    result = run([amtool, "check-config", str(CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=LevyDriftConsumerDown", "severity=critical"], "levydrift-oncall"),
    (["alertname=LevyDriftDetected", "severity=warning", "signal=assessed_value"],
     "levydrift-webhook"),
    (["alertname=LevyDriftModelStale", "severity=info"], "levydrift-webhook"),
])
def test_routes_by_severity(amtool: str, labels: list[str], receiver: str) -> None:
    result = run([amtool, "config", "routes", "test", f"--config.file={CONFIG}", *labels])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_rule_severities_all_have_a_route() -> None:
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    severities = set(re.findall(r"severity:\s*(\w+)", rules))
    routed = set(re.findall(r"severity\s*=\s*\"(\w+)\"", CONFIG.read_text()))
    assert severities and severities <= routed, f"unrouted severities: {severities - routed}"
