"""``levydrift``: one command line, a subcommand per job.

Each subcommand lives in the module that owns the job and exposes ``add_parser(subparsers)``,
which registers its arguments and sets ``handler`` (a function taking the parsed arguments and
returning an exit code). Errors a user can fix (``LevyDriftError``) print as one line; a reader
that goes away (``levydrift registry show ... | head``) ends the command quietly.

Start-up is kept short: ``COMMANDS`` names each subcommand's module and one-line summary, so
``levydrift --help`` imports none of them, and a command imports only its own module (which in
turn imports scikit-learn, skops or numba only where a model or detector is really used).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from levydrift.errors import LevyDriftError

# subcommand -> (module that registers it, summary for ``levydrift --help``), in listing order.
# A module registering several subcommands (trainer.cli) appears once per subcommand.
COMMANDS: dict[str, tuple[str, str]] = {
    "topics": ("levydrift.commands.topics", "create the project's Kafka topics"),
    "simulate": ("levydrift.commands.simulate",
                 "write a synthetic levy stream with known drift to Kafka or a file"),
    "consume": ("consumer.cli",
                "watch levy.records for drift and publish drift events (exactly once)"),
    "train": ("trainer.cli", "train, gate and register a levy model from a CSV/Parquet/JSONL file"),
    "train-worker": ("trainer.cli",
                     "retrain on drift events and publish model versions (service)"),
    "registry": ("trainer.cli", "list, show, promote, roll back models"),
    "check": ("levydrift.commands.check_cli",
              "run the drift detectors over a file of levy records"),
    "demo": ("levydrift.commands.demo",
             "the drift -> retrain -> promote -> swap loop on the local broker"),
    "schedule": ("levydrift.commands.schedule", "run the batch drift check every --interval hours"),
    "daily": ("levydrift.commands.daily",
              "the scheduled batch job: check, retrain unhandled drift, outcome files"),
    "notify": ("levydrift.commands.daily",
               "send a daily outcome through the configured [notify] channels"),
}
EXIT_BROKEN_PIPE = 128 + 13  # as if killed by SIGPIPE, like any Unix filter


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, with no usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with full arguments for ``command`` (its module is imported) and a summary
    line for every other subcommand (nothing imported)."""
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
    chosen = COMMANDS[command][0] if command in COMMANDS else None
    for name, (module_name, summary) in COMMANDS.items():
        if module_name != chosen:
            subparsers.add_parser(name, help=summary, add_help=False)
    if chosen is not None:
        importlib.import_module(chosen).add_parser(subparsers)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option or its value)."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _version() -> str:
    try:
        return version("levy-drift")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; ``argv`` None: this process's command line (the process ends next)."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # here, not at exit, so a reader gone by now is caught below
            if argv is None:
                _skip_final_collection()
    except BrokenPipeError:
        # stdout's reader is gone: say nothing more, and keep the interpreter's final flush of
        # the buffered rest from printing a traceback of its own.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _skip_final_collection() -> None:
    """The process is about to exit: every object goes to the collector's permanent
    generation, so the interpreter's final collection does not take numba's compiled kernels
    and type registries apart object by object (0.3-0.5 s after a check); the OS reclaims
    the memory at once. Files are closed by then and atexit handlers still run."""
    gc.freeze()


def _run(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(chosen_command(argv))
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
