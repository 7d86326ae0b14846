"""``levydrift check``'s command line (the check itself: ``levydrift.commands.check``).

The file is read on a thread while the detectors' modules import and numba loads its compiled
kernels: reading and validating a file is mostly pyarrow, which releases the GIL, so on a
1 M-row file the two overlap by about half a second of a ~2 s command. Nothing heavier than
the file reader is imported before the file is on its way.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from levydrift.commands.check_result import (
    CHECKED_FIELDS,
    CheckResult,
    CheckSettings,
    describe,
    load_check_settings,
)
from levydrift.errors import UsageError
from levydrift.levyfile import read_levy_file_columns
from levydrift.logs import configure as configure_logging
from levydrift.progress import Progress

# ---------------------------------------------------------------------- command line

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check", help="run the drift detectors over a file of levy records",
        description="Run the consumer's detector bank over a CSV, Parquet or JSONL file of "
                    "levy records (in arrival order). Exit codes: 0 no drift, 1 drift, "
                    "2 usage error or bad file, 3 broker unreachable.")
    parser.add_argument("--data-path", required=True, type=Path, metavar="FILE",
                        help="levy records (.csv, .parquet, .jsonl) in arrival order")
    parser.add_argument("--reference", type=Path, metavar="FILE",
                        help="baseline records (default: the champion's reference sample, "
                             "else the first detectors.warmup_records rows of --data-path)")
    parser.add_argument("--report", type=Path, metavar="PATH",
                        help="write an HTML report (a table of every signal, distributions "
                             "and time course per drifted one) and a JSON summary: PATH.html "
                             "+ PATH.json, or PATH/index.html + PATH/summary.json")
    parser.add_argument("--trigger-retraining", action="store_true",
                        help="on drift no version has handled yet, train a candidate on the "
                             "file and gate it against the registry's champion (or, with "
                             "--publish-events, leave that to the trainer worker)")
    parser.add_argument("--publish-events", action="store_true",
                        help="with --trigger-retraining: publish the drift events to the "
                             "drift-events topic instead of training here")
    parser.add_argument("--model", help="model name (default: trainer.model_name)")
    parser.add_argument("--registry", metavar="DIR",
                        help="registry root (default: registry.root)")
    parser.set_defaults(handler=_run)


def _run(arguments: argparse.Namespace) -> int:
    if arguments.publish_events and not arguments.trigger_retraining:
        raise UsageError("--publish-events only makes sense with --trigger-retraining")
    settings = load_check_settings(arguments.config)
    configure_logging(settings.logging.level)
    with Progress("check", unit="rows") as progress:
        result = _read_and_check(arguments, settings, progress)
    for line in describe(result):
        print(line)
    if arguments.report is not None:
        from levydrift.commands.report import write_report  # lazy: matplotlib

        html, json_path = write_report(result, arguments.report)
        print(f"report: {html} (summary {json_path})")
    if result.drifted and arguments.trigger_retraining:
        from levydrift.commands.retraining import trigger_retraining  # lazy: Kafka, trainer

        print(trigger_retraining(result, settings, arguments.registry,
                                 arguments.publish_events).line)
    return result.exit_code


def _read_and_check(arguments: argparse.Namespace, settings: CheckSettings,
                    progress: Progress) -> CheckResult:
    """The file read on a thread while the check's modules and kernels load here."""
    path: Path = arguments.data_path
    progress.phase(f"reading {path}")
    with ThreadPoolExecutor(1, thread_name_prefix="levydrift-read") as reader:
        reading = reader.submit(read_levy_file_columns, path, progress, CHECKED_FIELDS)
        from levydrift.commands import check  # lazy: numba and the detectors, during the read

        check.load_kernels(settings.detectors)
        read = reading.result()
    return check.check_read_file(path, read, settings, arguments.reference, arguments.model,
                                 arguments.registry, progress=progress)
