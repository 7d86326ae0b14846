"""Start-up stays short: ``levydrift --help`` imports no heavy library, and the summary table the
top-level help is built from agrees with what each command module registers."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from levydrift.cli import COMMANDS, build_parser, chosen_command

# Libraries that take from tenths of a second (numpy) to seconds (skops scans every
# scikit-learn estimator) to import.
HEAVY = ("numpy", "pandas", "scipy", "sklearn", "skops", "numba", "pyarrow", "matplotlib",
         "confluent_kafka", "river")


def imported_after(code: str) -> set[str]:
    """Top-level modules loaded by ``code`` in a fresh interpreter."""
    probe = (f"import sys\n{code}\n"
             "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=True)
    return set(result.stdout.split())


def test_top_level_help_imports_no_heavy_library() -> None:
    loaded = imported_after("from levydrift.cli import build_parser; build_parser()")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_consume_parser_imports_no_heavy_library() -> None:
    loaded = imported_after("from levydrift.cli import build_parser; build_parser('consume')")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def registered_help(module_name: str) -> dict[str, str]:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    importlib.import_module(module_name).add_parser(subparsers)
    return {action.dest: action.help for action in subparsers._choices_actions}


def test_summary_table_matches_what_each_module_registers() -> None:
    modules = {module for module, _ in COMMANDS.values()}
    registered: dict[str, tuple[str, str]] = {}
    for module in modules:
        for name, summary in registered_help(module).items():
            registered[name] = (module, summary)
    assert registered == COMMANDS


def test_a_command_builds_its_full_parser_and_lists_the_others() -> None:
    parser = build_parser("train")
    arguments = parser.parse_args(["train", "--data-path", "x.csv"])
    assert arguments.handler is not None
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(choices) == set(COMMANDS)


def test_chosen_command_skips_options_and_the_config_value() -> None:
    assert chosen_command(["--config", "check", "consume"]) == "consume"
    assert chosen_command(["--config=x.toml", "check", "--data-path", "f"]) == "check"
    assert chosen_command(["--help"]) is None


def test_the_consumer_service_loads_scikit_learn_only_with_a_model() -> None:
    """``levydrift consume`` imports the service at start; skops (seconds: it scans every
    estimator) and scikit-learn wait until a champion is loaded."""
    loaded = imported_after("import consumer.service")
    assert not loaded & {"sklearn", "skops"}, sorted(loaded & {"sklearn", "skops"})


def test_check_starts_reading_before_the_detectors_load() -> None:
    """``levydrift check`` reads its file on a thread while numba and the detectors load
    (levydrift.commands.check_cli): building its parser must not load them first, nor
    pandas, which a Parquet read does not need (the detectors import it meanwhile)."""
    loaded = imported_after("from levydrift.cli import build_parser; build_parser('check')")
    later = {"numba", "sklearn", "skops", "river", "pandas"}
    assert not loaded & later, sorted(loaded & later)
