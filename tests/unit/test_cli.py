"""The levydrift command line: subcommands listed, bad input is one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from levydrift.cli import COMMANDS, build_parser


def run_cli(*arguments: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")}
    environment.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "levydrift.cli", *arguments],
                          capture_output=True, text=True, env=environment, timeout=timeout)


def test_help_lists_every_subcommand() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert len(subcommands) >= len(COMMANDS)
    for name in subcommands:
        assert name in result.stdout


def test_unknown_subcommand_is_one_line() -> None:
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "invalid choice" in result.stderr


def test_bad_config_is_one_line_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[topics]\nrecords_partitions = 'six'\n")
    result = run_cli("--config", str(config), "topics", "create")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "levydrift topics: topics.records_partitions must be an integer, got str 'six'")


def test_unreachable_broker_is_one_line_without_traceback() -> None:
    result = run_cli("topics", "create", env={
        "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "LEVYDRIFT_KAFKA_REQUEST_TIMEOUT_S": "2"})
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("levydrift")]
    assert len(lines) == 1
    assert "did not answer" in lines[0]


@pytest.mark.parametrize("variable", ["LEVYDRIFT_KAFKA_REQUEST_TIMEOUT_S"])
def test_bad_environment_value_is_one_line(variable: str) -> None:
    result = run_cli("topics", "create", env={variable: "soon"})
    assert result.returncode == 2
    assert result.stderr.strip() == f"levydrift topics: {variable}='soon' is not a number"


def test_consume_names_a_missing_topic_in_one_line(kafka_bootstrap: str, unique: str) -> None:
    result = run_cli("consume", env={"LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                                     "LEVYDRIFT_TOPICS_RECORDS": f"absent-{unique}",
                                     "LEVYDRIFT_METRICS_PORT": "0"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"levydrift consume: topic absent-{unique} does not exist on {kafka_bootstrap}; "
        "create the project's topics with `levydrift topics create`")
