"""The alert rules: promtool's syntax check and its unit tests (deploy/prometheus/alerts_test.yml,
firing and not-firing cases for every rule). Also checks the scrape config and that every rule
has a unit test, so a new rule cannot land untested."""

from __future__ import annotations

import re

from tests.deploy.conftest import DEPLOY, run

PROMETHEUS = DEPLOY / "prometheus"

# The alerts the operations contract promises (issue 7); more may be added, none removed.
REQUIRED_ALERTS = {
    "LevyDriftConsumerDown", "LevyDriftTrainerDown", "LevyDriftConsumerStalled",
    "LevyDriftConsumerLagHigh", "LevyDriftDeadLetterRateHigh", "LevyDriftDetected",
    "LevyDriftRetrainFailed", "LevyDriftModelStale",
    "LevyDriftModelPromoted", "LevyDriftCandidateRejected",  # issue 17
}


def _alert_names() -> set[str]:
    return set(re.findall(r"^\s*- alert:\s*(\S+)", (PROMETHEUS / "alerts.yml").read_text(), re.M))


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = run([promtool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alert_names())} rules found" in result.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_scrape_config_passes_promtool_check(promtool: str) -> None:
    result = run([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_firing_and_silent_cases() -> None:
    names = _alert_names()
    assert names >= REQUIRED_ALERTS, f"missing alerts: {sorted(REQUIRED_ALERTS - names)}"
    tests = (PROMETHEUS / "alerts_test.yml").read_text()
    # Split into `- eval_time:` blocks and classify each by whether it expects alerts.
    blocks = re.split(r"\n\s*- eval_time:", tests)[1:]
    firing, silent = set(), set()
    for block in blocks:
        name = re.search(r"alertname:\s*(\S+)", block).group(1)
        (silent if re.search(r"exp_alerts:\s*\[\]", block) else firing).add(name)
    assert names - firing == set(), f"rules without a firing case: {sorted(names - firing)}"
    assert names - silent == set(), f"rules without a not-firing case: {sorted(names - silent)}"


def test_drift_alert_names_the_signal() -> None:
    text = (PROMETHEUS / "alerts.yml").read_text()
    block = text.split("- alert: LevyDriftDetected", 1)[1].split("- alert:", 1)[0]
    assert "{{ $labels.signal }}" in block.split("annotations:", 1)[1]
