"""``levydrift``: one command line, a subcommand per job.

Each subcommand lives in the module that owns the job and exposes ``add_parser(subparsers)``,
which registers its arguments and sets ``handler`` (a function taking the parsed arguments and
returning an exit code). Errors a user can fix (``LevyDriftError``) print as one line; a reader
that goes away (``levydrift registry show ... | head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from levydrift.errors import LevyDriftError

# Modules that define subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "levydrift.topics",
    "levydrift.simulate_cli",
    "consumer.cli",
    "trainer.cli",
    "levydrift.check",
    "levydrift.demo",
    "levydrift.schedule",
)
EXIT_BROKEN_PIPE = 128 + 13  # as if killed by SIGPIPE, like any Unix filter


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, with no usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="levydrift",
        description="Watch the levy impact model on a live stream and retrain it when it drifts.",
    )
    parser.add_argument("--config", metavar="PATH",
                        help="TOML settings file (default: $LEVYDRIFT_CONFIG, else built-in "
                             "defaults; LEVYDRIFT_* variables override either)")
    parser.add_argument("--version", action="version", version=f"levydrift {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _version() -> str:
    try:
        return version("levy-drift")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # here, not at exit, so a reader gone by now is caught below
    except BrokenPipeError:
        # stdout's reader is gone: say nothing more, and keep the interpreter's final flush of
        # the buffered rest from printing a traceback of its own.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        return int(arguments.handler(arguments) or 0)
    except LevyDriftError as error:
        print(f"levydrift {arguments.command}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
