"""Commands: ``levydrift train``, ``levydrift train-worker`` and ``levydrift registry``.

``registry promote`` and ``registry rollback`` move the champion and publish a model-version
event (decision ``promoted`` / ``rolled_back``) so consumers swap models. The broker is checked
*before* the registry changes: when it cannot be reached the command fails and nothing changes,
unless ``--no-publish`` asks for a registry-only change now. Each first reconciles the registry
with the topic (``trainer.announcements``) and holds the registry lock from the move to the
announcement; a move whose announcement failed or was cut short by a crash is announced by the
next reconcile: ``registry reconcile``, the next promote or rollback, or the trainer worker's
start (so a ``--no-publish`` change reaches the fleet then, too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from levydrift import settings as settings_module
from levydrift.artifacts import file_window
from levydrift.errors import ArtifactError, BrokerUnavailableError, UsageError
from levydrift.faults import crash_point
from levydrift.features import TARGET, to_model_frame
from levydrift.kafka import admin_client, ensure_reachable
from levydrift.logs import configure as configure_logging
from levydrift.progress import Progress
from schemas.model_version import ModelVersionEvent
from trainer.announcements import (
    move_event,
    read_model_events,
    reconcile,
    registration_announcement,
)
from trainer.config import TrainerSettings
from trainer.events import code_version, version_event
from trainer.model import ModelParams
from trainer.registry import CHAMPION, ModelRegistry, VersionInfo, utc_now
from trainer.training import TrainingRequest, train_and_register
from trainer.window import event_time_order, newest_of_each


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="train, gate and register a levy model from a CSV/Parquet/JSONL file",
        description="Train a candidate on a file of labelled levy records, evaluate it against "
                    "the champion on the same holdout and register it as a new version "
                    "(promoted when the gate passes). Prints the version line.")
    train.add_argument("--data-path", required=True, metavar="FILE",
                       help="levy records with actual_levy_amount (.csv, .parquet, .jsonl)")
    train.add_argument("--model", help="model name (default: trainer.model_name)")
    train.add_argument("--registry", metavar="DIR", help="registry root (default: "
                       "registry.root)")
    train.add_argument("--publish", action="store_true",
                       help="also publish the model-version event to Kafka")
    train.set_defaults(handler=_run_train)

    worker = subparsers.add_parser(
        "train-worker", help="retrain on drift events and publish model versions (service)",
        description="The retraining service: read drift events, read the training window back "
                    "from the records topic, train, gate against the champion, register the "
                    "version and publish its model-version event, exactly once per episode. "
                    "Prometheus metrics on metrics.port; JSON logs on stderr; SIGTERM or SIGINT "
                    "stops it.")
    worker.set_defaults(handler=_run_worker)

    registry = subparsers.add_parser(
        "registry", help="list, show, promote, roll back models",
        description="The model registry on disk (registry.root): versions, aliases "
                    "and their history.")
    registry.add_argument("--registry", metavar="DIR",
                          help="registry root (default: registry.root)")
    actions = registry.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser(
        "list", help="models and their versions",
        description="One line per version: status, aliases, and its holdout MAE next to the "
                    "champion's on the same holdout.")
    listing.add_argument("model", nargs="?", help="only this model")
    listing.set_defaults(handler=_run_list)
    show = actions.add_parser(
        "show", help="one version's manifest, metrics and lineage",
        description="Print one version's manifest, metrics and lineage as JSON.")
    show.add_argument("reference", help="NAME (champion), NAME@alias or NAME/version")
    show.set_defaults(handler=_run_show)
    settle = actions.add_parser(
        "reconcile", help="announce champion moves a crash or a broker outage kept from Kafka",
        description="Compare the registry's champion moves with the model-version topic and "
                    "publish, exactly once, every move a crash or a broker outage kept from "
                    "Kafka (the worker and the registry commands also do this on start).")
    settle.add_argument("model", nargs="?", help="only this model")
    settle.set_defaults(handler=_run_reconcile)
    for name, helptext in (("promote", "make a version the champion"),
                           ("rollback", "move the champion one step back")):
        action = actions.add_parser(
            name, help=helptext,
            description=f"{helptext[0].upper()}{helptext[1:]} and publish a model-version "
                        "event so consumers swap models (checks the broker first; "
                        "--no-publish changes the registry only).")
        action.add_argument("reference", help="NAME/version" if name == "promote" else "NAME")
        action.add_argument("--reason", default=f"manual {name}")
        action.add_argument("--no-publish", action="store_true",
                            help="change the registry only; publish no model-version event")
        action.set_defaults(handler=_run_promote if name == "promote" else _run_rollback)


def _settings(arguments: argparse.Namespace) -> TrainerSettings:
    config = settings_module.load(TrainerSettings, arguments.config)
    configure_logging(config.logging.level)
    return config


def _registry(arguments: argparse.Namespace, config: TrainerSettings) -> ModelRegistry:
    return ModelRegistry(getattr(arguments, "registry", None) or config.registry.root)


# ---------------------------------------------------------------------- train (from a file)

def _run_train(arguments: argparse.Namespace) -> int:
    config = _settings(arguments)
    if arguments.publish:
        ensure_reachable(admin_client(config.kafka), config.kafka)
    name = arguments.model or config.trainer.model_name
    path = Path(arguments.data_path)
    with Progress("train") as progress:
        info = _train_file(arguments, config, name, path, progress)
    print(info.summary_line())
    return 0


def _train_file(arguments: argparse.Namespace, config: TrainerSettings, name: str, path: Path,
                progress: Progress) -> VersionInfo:
    progress.phase(f"reading {path}")
    frame = read_training_file(path)
    section = config.trainer
    registry = _registry(arguments, config)
    progress.phase(f"training {name} on {len(frame):,} records, then gating it against the "
                   "champion")
    info = train_and_register(registry, name, TrainingRequest(
        frame=frame, trigger_event_ids=[], training_offsets=[file_window(path, len(frame))],
        code_version=section.code_version or code_version(),
        holdout_fraction=section.holdout_fraction, gate_margin=section.gate_margin,
        slice_tolerance=section.slice_tolerance,
        min_training_records=section.min_training_records,
        params=ModelParams(max_iter=section.max_iter),
        extra_lineage={"source_file": str(Path(arguments.data_path).resolve())}))
    if arguments.publish:
        progress.phase("publishing the model-version event")
        with registry.locked(name):
            _reconcile(config, registry, name, announcing=info.version)
            event = registration_announcement(registry, info)
            if event is not None and not registry.get(name, info.version).published:
                _announce(config, event, f"version {info.version} is registered")
                registry.mark_published(name, info.version, {"decision": event.decision})
    return info


def read_training_file(path: Path) -> pd.DataFrame:
    """A labelled model frame from CSV, Parquet or JSONL, ordered by event_time when present,
    each record once."""
    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet,
               ".jsonl": lambda p: pd.read_json(p, lines=True),
               ".ndjson": lambda p: pd.read_json(p, lines=True)}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise UsageError(f"{path}: unknown file type {path.suffix!r}; use .csv, .parquet or "
                         ".jsonl")
    try:
        raw = reader(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except Exception as error:  # noqa: BLE001 - pandas raises many kinds on a bad file
        raise UsageError(f"{path}: cannot be read: {str(error).splitlines()[0]}") from None
    if TARGET not in raw.columns:
        raise UsageError(f"{path}: no {TARGET} column; training needs actual levies")
    # Oldest to newest, each record once (its last row): twice, it could be trained on and
    # held out at once.
    order = newest_of_each(raw.get("record_id"), event_time_order(raw.get("event_time"),
                                                                  len(raw)))
    raw = raw.iloc[order].reset_index(drop=True)
    try:
        return to_model_frame(raw, include_target=True)
    except KeyError as error:
        raise UsageError(f"{path}: {error.args[0]}") from None


# ---------------------------------------------------------------------- the worker

def _run_worker(arguments: argparse.Namespace) -> int:
    # lazy: the worker's imports (scikit-learn, prometheus) only for the service
    from trainer.metrics import start_metrics_server
    from trainer.worker import TrainWorker

    config = _settings(arguments)
    worker = TrainWorker(config)
    worker.install_signal_handlers()
    start_metrics_server(config.metrics.port, config.metrics.host)
    return worker.run()


# ---------------------------------------------------------------------- registry

def _run_list(arguments: argparse.Namespace) -> int:
    config = _settings(arguments)
    registry = _registry(arguments, config)
    if arguments.model:
        registry.require_model(arguments.model)
    names = [arguments.model] if arguments.model else registry.model_names()
    rows = [("model", "version", "status", "aliases", "holdout", "mae",
             "champion, same holdout", "created")]
    for name in names:
        aliases = registry.aliases(name)
        rolled_back = rolled_back_versions(registry.alias_history(name))
        for version in registry.versions(name):
            info = registry.get(name, version)
            tags = ",".join(a for a, v in sorted(aliases.items()) if v == version)
            status = info.manifest.get("status", "?")
            if version in rolled_back:
                status = "rolled back"
            rows.append((name, str(version), status, tags or "-", *_holdout_columns(info.metrics),
                         str(info.manifest.get("created_at", ""))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {1, 4, 5}  # numbers
    for row in rows:
        print("  ".join(cell.rjust(width) if i in right else cell.ljust(width)
                        for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
              .rstrip())
    print("mae: each version on its own holdout (the newest records of its training window); "
          "compare it with the champion of its time on that same holdout, not across rows")
    return 0


def rolled_back_versions(history: list[dict[str, Any]]) -> set[int]:
    """Versions a rollback took the champion alias away from (and that never got it back)."""
    rolled_back: set[int] = set()
    for entry in history:
        if entry["alias"] != CHAMPION:
            continue
        rolled_back.discard(entry["version"])
        if entry["action"] == "rolled_back" and entry.get("previous_version") is not None:
            rolled_back.add(entry["previous_version"])
    return rolled_back


def _holdout_columns(metrics: dict[str, Any]) -> tuple[str, str, str]:
    """(holdout records, the version's MAE on it, ``v<champion> <its MAE on the same holdout>``)."""
    holdout = metrics.get("holdout_records")
    mae = (metrics.get("candidate") or {}).get("mae")
    champion_mae = (metrics.get("champion") or {}).get("mae")
    champion = metrics.get("champion_version")
    then = "-" if champion is None else f"v{champion} " + (
        "not scored" if champion_mae is None else f"{champion_mae:.2f}")
    return ("?" if holdout is None else f"{holdout:,} rec",
            "?" if mae is None else f"{mae:.2f}", then)


def _run_show(arguments: argparse.Namespace) -> int:
    config = _settings(arguments)
    registry = _registry(arguments, config)
    info = registry.resolve(arguments.reference)
    aliases = [a for a, v in registry.aliases(info.name).items() if v == info.version]
    json.dump({"model": info.name, "version": info.version, "path": str(info.path),
               "aliases": aliases, "published": info.published, "manifest": info.manifest,
               "metrics": info.metrics, "lineage": info.lineage}, sys.stdout, indent=2)
    print()
    return 0


def _run_promote(arguments: argparse.Namespace) -> int:
    config = _settings(arguments)
    registry = _registry(arguments, config)
    if "/" not in arguments.reference:
        raise UsageError(f"{arguments.reference!r}: name the version, as in levy-impact/3")
    info = registry.resolve(arguments.reference)
    _verify_artifact(registry, info)
    publish = not arguments.no_publish
    if publish:
        ensure_reachable(admin_client(config.kafka), config.kafka)
    # Refuse before changing anything if the event would break the contract.
    version_event(info, "promoted", registry.champion(info.name), created_at=utc_now()).to_bytes()
    with registry.locked(info.name):
        if publish:
            _reconcile(config, registry, info.name)
        move = registry.set_alias(info.name, CHAMPION, info.version, "promoted",
                                  arguments.reason)
        if publish:
            _announce(config, move_event(registry, info.name, move),
                      f"the champion of {info.name} is now {info.version} in the registry")
    print(f"{info.name}: champion {move['previous_version']} -> {info.version}")
    return 0


def _run_rollback(arguments: argparse.Namespace) -> int:
    config = _settings(arguments)
    registry = _registry(arguments, config)
    name = arguments.reference
    publish = not arguments.no_publish
    if publish:
        ensure_reachable(admin_client(config.kafka), config.kafka)
    with registry.locked(name):
        if publish:
            _reconcile(config, registry, name)
        restored, replaced = registry.rollback_target(name)
        # Refuse before changing anything if the event would break the contract.
        version_event(registry.get(name, restored), "rolled_back", replaced,
                      created_at=utc_now()).to_bytes()
        registry.rollback(name, arguments.reason, expected=(restored, replaced))
        if publish:
            move = registry.last_champion_move(name)
            assert move is not None, "the rollback just moved the champion"
            _announce(config, move_event(registry, name, move),
                      f"the champion of {name} is now {restored} in the registry")
    print(f"{name}: champion {replaced} -> {restored} (rolled back)")
    return 0


def _run_reconcile(arguments: argparse.Namespace) -> int:
    config = _settings(arguments)
    registry = _registry(arguments, config)
    ensure_reachable(admin_client(config.kafka), config.kafka)
    for name in [arguments.model] if arguments.model else registry.model_names():
        event = _reconcile(config, registry, name)
        if event is None:
            print(f"{name}: registry and {config.topics.model_versions} agree")
        else:
            print(f"{name}: announced {event.decision} version {event.version}")
    return 0


def _reconcile(config: TrainerSettings, registry: ModelRegistry, name: str,
               announcing: int | None = None) -> ModelVersionEvent | None:
    return reconcile(registry, name, lambda: read_model_events(
        config.kafka, config.topics.model_versions, name),
        lambda event: _publish(config, event), announcing)


def _announce(config: TrainerSettings, event: ModelVersionEvent, done: str) -> None:
    """Publish ``event`` after the registry changed; a failure says the change stands and how
    it will reach the fleet."""
    try:
        _publish(config, event)
    except BrokerUnavailableError as error:
        raise BrokerUnavailableError(
            f"{done}, but announcing it failed ({error}); `levydrift registry reconcile` "
            "announces it, as does the trainer worker's next start") from None
    crash_point("after_publish")


def _verify_artifact(registry: ModelRegistry, info: VersionInfo) -> None:
    """Never promote a version whose artifact would be refused on load."""
    try:
        registry.load_model(info.name, info.version)
    except ArtifactError as error:
        raise ArtifactError(f"not promoting: {error}") from None


def _publish(config: TrainerSettings, event: Any) -> None:
    from trainer.worker import publish_decision  # lazy: scikit-learn, only when publishing

    publish_decision(config, event)


