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


def test_version() -> None:
    from importlib.metadata import version

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"levydrift {version('levy-drift')}"


def _subcommand_parsers(parser=None, prefix: str = "levydrift"):
    """Every (command path, parser) below ``levydrift``, nested ones (registry list) too."""
    parser = parser or build_parser()
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for name, child in action.choices.items():
            yield f"{prefix} {name}", child
            yield from _subcommand_parsers(child, f"{prefix} {name}")


def test_every_subcommand_has_a_description_for_its_help() -> None:
    # A command's full parser is built only when it is the one named (start-up time).
    missing = [path for command in COMMANDS
               for path, parser in _subcommand_parsers(build_parser(command))
               if path.split()[1] == command and not parser.description]
    assert not missing, f"no description for --help: {missing}"


def _closed_pipe() -> int:
    """A pipe whose reader is already gone, like `| head` after its first lines."""
    reader, writer = os.pipe()
    os.close(reader)
    return writer


@pytest.mark.parametrize("arguments", [("--help",), ("registry", "list"),
                                       ("registry", "show", "levy-impact/1")])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path,
                                                          arguments: tuple[str, ...]) -> None:
    from tests.trainer.test_registry import NAME, _candidate
    from trainer.registry import ModelRegistry

    ModelRegistry(tmp_path).register(NAME, _candidate())
    writer = _closed_pipe()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "levydrift.cli", *arguments],
            stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")},
                 "LEVYDRIFT_REGISTRY_ROOT": str(tmp_path)})
    finally:
        os.close(writer)
    assert result.stderr == ""
    assert result.returncode in (0, 141)  # 141: ended as by SIGPIPE, as Unix filters do


@pytest.mark.parametrize("arguments", [("show", "nosuchmodel"), ("list", "nosuchmodel"),
                                       ("rollback", "--no-publish", "nosuchmodel"),
                                       ("show", "nosuchmodel/1")])
def test_an_unknown_model_is_named_with_the_models_there_are(
        tmp_path: Path, arguments: tuple[str, ...]) -> None:
    from tests.trainer.test_registry import NAME, _candidate
    from trainer.registry import ModelRegistry

    ModelRegistry(tmp_path).register(NAME, _candidate())
    result = run_cli("registry", "--registry", str(tmp_path), *arguments)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"levydrift registry: no model 'nosuchmodel' in the registry {tmp_path} "
        f"(models: {NAME})")


@pytest.mark.parametrize("command", ["consume", "train-worker"])
def test_a_metrics_port_in_use_is_one_line(command: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(command, env={"LEVYDRIFT_METRICS_PORT": str(port),
                                       "LEVYDRIFT_METRICS_HOST": "127.0.0.1",
                                       "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("levydrift")]
    assert lines == [f"levydrift {command}: metrics port 127.0.0.1:{port} cannot be used "
                     "(Address already in use); set metrics.port (LEVYDRIFT_METRICS_PORT) to "
                     "a free port, or 0 to disable metrics"]


def test_registry_list_shows_rollbacks_and_which_holdout_each_mae_is_on(tmp_path: Path) -> None:
    import dataclasses

    from tests.trainer.test_registry import NAME, _candidate
    from trainer.registry import ModelRegistry

    registry = ModelRegistry(tmp_path)
    registry.register(NAME, dataclasses.replace(_candidate(mae=47.05), holdout_records=600))
    champion_then = {"mae": 61.2, "rmse": 70.0, "mape": 0.1, "r2": 0.5}
    registry.register(NAME, dataclasses.replace(
        _candidate(events=["e2"], mae=55.01), holdout_records=2000, champion_version=1,
        champion_metrics=champion_then))
    registry.rollback(NAME)
    result = run_cli("registry", "--registry", str(tmp_path), "list")
    assert result.returncode == 0, result.stderr
    header, first, second, note = result.stdout.splitlines()
    assert header.split() == ["model", "version", "status", "aliases", "holdout", "mae",
                              "champion,", "same", "holdout", "created"]
    assert first.split()[:7] == [NAME, "1", "promoted", "champion", "600", "rec", "47.05"]
    assert first.split()[7] == "-"  # no champion before version 1
    assert second.split()[:10] == [NAME, "2", "rolled", "back", "-", "2,000", "rec", "55.01",
                                   "v1", "61.20"]
    assert note.startswith("mae: each version on its own holdout")
