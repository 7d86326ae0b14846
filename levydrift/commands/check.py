"""``levydrift check``: the consumer's detector bank over a file of levy records.

The successor of ``python ml/hooks/drift_detector.py --data-path ... --trigger-retraining``.
Rows are fed in file order (their arrival order) with row positions in place of Kafka offsets,
through the same ``SegmentedBank`` and the same model signals (``levydrift.signals``) as the
consumer. The baseline is, in order: ``--reference FILE``; the champion's reference sample (its
holdout, as the consumer uses it); else each segment learns its reference from its first
``detectors.segment_warmup_records`` values, as the consumer does from the start of a partition.
The output and the JSON summary say which. A file no longer than ``detectors.warmup_records``
rows with no reference cannot be judged (exit 2). A reference (file or champion sample) warms
every segment up before the file's rows.

Handled drift is handled once: with ``--trigger-retraining`` the drift episodes are planned as
the trainer worker plans them (``TrainWorker.plan``: events already in a version's lineage, or
covered by a version trained on the same data or within the episode gap, are not retrained), so
a second run on the same file trains nothing.

Exit codes: 0 no drift, 1 drift, 2 usage error or bad file, 3 broker unreachable
(``--publish-events``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from consumer.clock import dated_ahead
from detectors.composition import code_dictionary, event_times_ms
from detectors.config import MAX_COMPOSITION_LATENESS_S, DetectorSettings
from detectors.errors import DetectorConfigError
from detectors.kernels import start_compiler
from detectors.reference import Reference, reference_for_signals
from detectors.segments import SegmentedBank
from detectors.synthetic import stationary_batch
from levydrift.artifacts import file_window, load_reference_sample, with_training_composition
from levydrift.commands.check_result import CHECKED_FIELDS, CheckResult, CheckSettings
from levydrift.errors import UsageError
from levydrift.levyfile import FileColumns, read_levy_file, read_levy_file_columns
from levydrift.progress import Progress
from levydrift.signals import ModelScorer, signal_columns
from trainer.registry import ModelRegistry

log = logging.getLogger(__name__)

CHECK_SLICE_ROWS = 262_144  # rows fed to the detectors at a time, between progress updates


# ---------------------------------------------------------------------- the check itself

def print_note(text: str) -> None:
    """How a file check tells the user what it could not check (no champion...)."""
    print(f"note: {text}")


@dataclass(frozen=True)
class Baseline:
    """What the current rows are compared against; ``reference`` None means the warm-up."""

    reference: Reference | None
    description: str
    kind: str  # "file" | "champion" | "warm-up"
    columns: dict[str, np.ndarray] | None = None  # the values it was built from


def warmup_baseline(detectors: DetectorSettings) -> Baseline:
    strata = detectors.strata_fields()
    learner = (f"each {', '.join(strata)}'s first {detectors.stratum_warmup_records:,} values "
               "within its segment" if strata
               else f"each segment's first {detectors.segment_warmup_records:,} values")
    return Baseline(None, f"{learner} (warm-up, no champion reference sample)", "warm-up")


def whole_file_windows(detectors: DetectorSettings, times_ms: np.ndarray) -> DetectorSettings:
    """Composition settings for a file: its event-time windows close at its end, not once a
    later event time has been read. A file holds every row at once, so none is late, but
    files are often sorted by county: read in that order, the first county's rows would close
    every window alone, and each window would read as that county's takeover."""
    known = times_ms[times_ms >= 0]
    span_s = int((known.max() - known.min()) // 1000) + 1 if known.size else 0
    lateness_s = min(max(span_s, detectors.composition_lateness_s), MAX_COMPOSITION_LATENESS_S)
    return replace(detectors, composition_lateness_s=lateness_s)


def run_check(columns: dict[str, np.ndarray], detectors: DetectorSettings,
              scorer: ModelScorer | None = None, baseline: Baseline | None = None,
              source: str = "", model: str = "",
              window: dict[str, Any] | None = None,
              progress: Progress | None = None,
              times_ms: np.ndarray | None = None,
              dictionaries: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
              ) -> CheckResult:
    """Feed ``columns`` (arrival order) through a fresh bank; pure apart from the model.
    ``times_ms``: the rows' event times as ``event_times_ms`` reads them, if already read;
    ``dictionaries``: category columns as (indices, distinct values), if the file had them."""
    started = time.perf_counter()
    rows = len(columns["event_time"])
    if progress is not None:
        progress.phase(f"scoring {rows:,} rows" if scorer else f"preparing {rows:,} rows")
    columns = signal_columns(dict(columns), scorer)
    times = event_times_ms(columns["event_time"]) if times_ms is None else times_ms
    fed = {**columns, "event_time": times}  # the bank reads ms, not text, as the consumer's
    baseline = baseline or warmup_baseline(detectors)
    bank = SegmentedBank(whole_file_windows(detectors, times), baseline.reference)
    if baseline.kind == "file":  # baseline rows seed every segment; the champion's holdout
        assert baseline.columns is not None, "a file baseline keeps its rows"
        bank.learn(baseline.columns)  # sample is used as the consumer uses it

    if progress is not None:
        progress.phase("running the detectors")
    decisions = []
    # In slices, to show progress: the bank gives the same decisions however a stream is cut.
    for start in range(0, rows, CHECK_SLICE_ROWS):
        stop = min(rows, start + CHECK_SLICE_ROWS)
        coded = {name: code_dictionary(indices[start:stop], values)
                 for name, (indices, values) in (dictionaries or {}).items()}
        decisions.extend(bank.update({name: values[start:stop] for name, values in fed.items()},
                                     np.arange(start, stop, dtype=np.int64), coded))
        if progress is not None:
            progress.update(stop)
    decisions.extend(bank.finish())  # end of input closes every event-time window
    reference_columns = baseline.columns if baseline.columns is not None else {
        name: column[:detectors.warmup_records] for name, column in columns.items()}
    return CheckResult(
        source, rows, columns, decisions, model, scorer.version if scorer else None,
        baseline.description, time.perf_counter() - started, dict(window or {}), baseline.kind,
        reference_columns=reference_columns,
        signal_kinds={name: detectors.kind_of(name) for name in detectors.all_signals()},
        detector_status=bank.status())


def file_baseline(path: Path, detectors: DetectorSettings,
                  scorer: ModelScorer | None) -> Baseline:
    """``--reference FILE``: its records (scored by the champion, if any) describe normal."""
    columns = signal_columns(dict(read_levy_file(path, fields=CHECKED_FIELDS)), scorer)
    return Baseline(reference_for_signals(columns, detectors.all_signals()),
                    f"{path} ({len(columns['event_time']):,} rows, --reference)", "file",
                    columns)


def champion_baseline(registry_root: str, model: str, version: int,
                      detectors: DetectorSettings) -> Baseline | None:
    """The champion's reference sample (``reference.parquet``, its holdout with predictions
    and errors) and its training window's mix, as the consumer uses them; None when the
    version has no sample."""
    version_dir = ModelRegistry(registry_root).version_dir(model, version)
    sample = load_reference_sample(version_dir)
    if sample is None:
        return None
    columns = {name: sample[name].to_numpy() for name in sample.columns}
    reference = with_training_composition(
        replace(reference_for_signals(columns, detectors.all_signals()), rows=columns),
        version_dir)
    return Baseline(reference,
                    f"champion {model} v{version} reference sample ({len(sample):,} holdout "
                    f"rows, {version_dir / 'reference.parquet'})", "champion", columns)


def load_scorer(registry_root: str, model: str) -> tuple[ModelScorer | None, str]:
    """The champion of ``model`` in the registry (verified artifact), or None with the reason
    the model signals are skipped."""
    registry = ModelRegistry(registry_root)
    version = registry.champion(model) if model in registry.model_names() else None
    if version is None:
        return None, f"no champion of {model} in {registry.root}: prediction and error " \
                     "signals not checked"
    return ModelScorer(registry.load_model(model, version), version), ""


def check_file(path: Path, settings: CheckSettings, reference: Path | None = None,
               model: str | None = None, registry: str | None = None,
               note: Callable[[str], None] = print_note,
               progress: Progress | None = None) -> CheckResult:
    """Read, validate and check one file against the registry's champion."""
    if progress is not None:
        progress.phase(f"reading {path}")
    read = read_levy_file_columns(path, progress, CHECKED_FIELDS)
    return check_read_file(path, read, settings, reference, model, registry, note, progress)


def check_read_file(path: Path, read: FileColumns, settings: CheckSettings,
                    reference: Path | None = None, model: str | None = None,
                    registry: str | None = None,
                    note: Callable[[str], None] = print_note,
                    progress: Progress | None = None) -> CheckResult:
    """``check_file`` on the file as read (``read_levy_file_columns``, ``CHECKED_FIELDS``)."""
    rows = len(read.columns["event_time"])
    if progress is not None:
        progress.total = rows
    return check_columns(read.columns, settings, str(path), file_window(path, rows), reference,
                         model, registry, note, progress, read.times_ms, read.dictionaries)


def check_columns(columns: dict[str, np.ndarray], settings: CheckSettings, source: str,
                  window: dict[str, Any], reference: Path | None = None,
                  model: str | None = None, registry: str | None = None,
                  note: Callable[[str], None] = log.info,
                  progress: Progress | None = None,
                  times_ms: np.ndarray | None = None,
                  dictionaries: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
                  ) -> CheckResult:
    """Check records (a file's, a topic window's) against the baseline ``choose_baseline``
    picks, scored by the registry's champion. ``times_ms`` and ``dictionaries``: what
    ``FileColumns`` says of a file's columns, if known."""
    # Once: the date guard and the bank.
    times = event_times_ms(columns["event_time"]) if times_ms is None else times_ms
    refuse_dated_ahead(times, columns["event_time"], settings.consumer.max_event_time_ahead_s,
                       source)
    model = model or settings.trainer.model_name
    registry = registry or settings.registry.root
    scorer, missing_model = load_scorer(registry, model)
    if missing_model:
        note(missing_model)
    try:
        baseline = choose_baseline(settings.detectors, scorer, reference, registry, model)
        rows = len(columns["event_time"])
        if baseline.kind == "warm-up" and rows <= settings.detectors.warmup_records:
            raise ShortInputError(
                f"{source}: {rows:,} rows cannot be judged: the detectors learn their "
                f"reference from the first {settings.detectors.warmup_records:,} values and "
                "there is no reference; pass --reference FILE (baseline rows) or a longer "
                "file")
        return run_check(columns, settings.detectors, scorer, baseline, source=source,
                         model=model, window=window, progress=progress, times_ms=times,
                         dictionaries=dictionaries)
    except DetectorConfigError as error:  # a reference too small to describe a signal
        raise UsageError(f"{reference or source}: {error}") from None


def refuse_dated_ahead(times_ms: np.ndarray, event_times: np.ndarray, allowance_s: float,
                       source: str) -> None:
    """The consumer's rule for a file: a row dated more than ``allowance_s`` ahead of this
    machine's clock would close every event-time window early; one line naming the first
    (``event_times`` as written, ``times_ms`` as ``event_times_ms`` reads them)."""
    ahead = dated_ahead(times_ms, allowance_s)
    if ahead.size:
        row = int(ahead[0])
        raise UsageError(f"{source}: row {row + 1}, column event_time: invalid_value: "
                         f"{str(event_times[row])[:40]!r} is more than {allowance_s:g} s ahead of "
                         "this machine's clock (consumer.max_event_time_ahead_s)")


def choose_baseline(detectors: DetectorSettings, scorer: ModelScorer | None,
                    reference: Path | None, registry: str, model: str) -> Baseline:
    """``--reference FILE``, else the champion's reference sample, else the warm-up."""
    if reference is not None:
        return file_baseline(reference, detectors, scorer)
    if scorer is not None and scorer.version is not None:
        baseline = champion_baseline(registry, model, scorer.version, detectors)
        if baseline is not None:
            return baseline
    return warmup_baseline(detectors)


def load_kernels(detectors: DetectorSettings) -> None:
    """What the first compiled calls pay (numba's CPU target, ~0.25 s once ``start_compiler``
    spares it scipy, and each kernel from its cache, ~0.02 s), paid now by a throwaway bank
    on a few synthetic records: the command line does it while the file is read on another
    thread."""
    start_compiler()
    event_times_ms(np.array(["1970-01-01T00:00:00.000Z"], dtype=object))
    small = replace(detectors, warmup_records=200, segment_warmup_records=200,
                    stratum_warmup_records=min(detectors.stratum_warmup_records, 200))
    records = 3 * small.segment_warmup_records
    columns = stationary_batch(small, records, np.random.default_rng(0))
    columns.update({name: np.full(records, "x", dtype=object) for name in
                    small.segment_by + small.strata_fields()},
                   event_time=np.arange(records, dtype=np.int64))
    SegmentedBank(small).update(columns, np.arange(records, dtype=np.int64))


class ShortInputError(UsageError):
    """Too few rows to judge, and no reference: exit 2, never a silent "no drift"."""
