"""``levydrift``: one command line, a subcommand per job.

Each subcommand lives in the module that owns the job and exposes ``add_parser(subparsers)``,
which registers its arguments and sets ``handler`` (a function taking the parsed arguments and
returning an exit code). Errors a user can fix (``LevyDriftError``) print as one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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
    "levydrift.daily",
)


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
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
