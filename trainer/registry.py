"""A file-system model registry: MLflow's concepts (numbered versions, named aliases, history)
without a server. Layout under the registry root::

    <name>/versions/<n>/model.skops       the artifact (skops)
                        manifest.json     status, SHA-256, feature signature, library versions
                        metrics.json      candidate and champion metrics, gate decision
                        lineage.json      training window offsets, record count, data hash,
                                          drift event ids, code version
                        published.json    written once the version's event is on Kafka
    <name>/aliases.json                   {"champion": 3, ...}, replaced atomically
    <name>/aliases_history.jsonl          append-only: every alias move, with time and reason
    <name>/training_history.csv           one row per training run (failures included)
    <name>/claims/<n>                     version numbers taken (os.mkdir is atomic)
    <name>/staging/                       versions being built

A version number is claimed with ``os.mkdir`` (atomic, so two writers never share one), the
version is built in ``staging/`` and renamed into ``versions/`` complete: a reader never sees a
half-written version. A number claimed by a writer that died is never reused (a gap).
Alias changes and history appends run under an exclusive ``flock`` on ``<name>/.lock``
(``locked``, re-entrant in the thread that holds it).
The manifest's ``status`` is the gate decision at registration and never changes; which
version serves now is ``aliases.json``, and which served at time T is in the alias history.

Registering is a sequence a crash can cut anywhere: stage, rename, then (``finish_registration``)
the training history row and, for a promoted version, the champion move. The files after the
rename say everything the later steps need, so ``finish_registration`` is idempotent and a
restart simply runs it again; the move happens only if the champion is still the one the gate
compared against. Each champion move is announced on Kafka by whoever made it, and
``trainer.announcements.reconcile`` repairs a move whose announcement a crash prevented.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy
import pandas

from levydrift.artifacts import (
    ARTIFACT_NAME,
    MANIFEST_NAME,
    REFERENCE_NAME,
    file_sha256,
    load_verified_model,
    save_model,
)
from levydrift.errors import RegistryError
from levydrift.faults import crash_point

CHAMPION = "champion"
METRICS_NAME = "metrics.json"
LINEAGE_NAME = "lineage.json"
PUBLISHED_NAME = "published.json"
ALIASES_NAME = "aliases.json"
ALIAS_HISTORY_NAME = "aliases_history.jsonl"
TRAINING_HISTORY_NAME = "training_history.csv"
TRAINING_HISTORY_COLUMNS = (
    "run_at", "model", "version", "outcome", "reason", "trigger_event_ids",
    "training_records", "holdout_records", "champion_version",
    "candidate_mae", "candidate_rmse", "candidate_mape", "candidate_r2",
    "champion_mae", "champion_rmse", "champion_mape", "champion_r2",
    "duration_s", "data_sha256", "code_version",
)


def utc_now() -> str:
    """RFC 3339 UTC time with milliseconds, the registry's (and the events') time format."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class NewVersion:
    """Everything the registry records about a trained candidate."""

    estimator: Any
    decision: str  # "promoted" | "rejected": the gate's decision
    reason: str
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    champion_version: int | None
    holdout_records: int
    training_offsets: list[dict[str, Any]]  # [{topic, partition, first_offset, last_offset}]
    training_records: int
    data_sha256: str
    trigger_event_ids: list[str]
    feature_signature: str
    code_version: str
    duration_s: float = 0.0
    extra_lineage: dict[str, Any] = field(default_factory=dict)
    # Holdout inputs, predictions and errors: the detectors' reference while this is champion.
    reference_sample: Any = None  # pandas.DataFrame


@dataclass(frozen=True)
class VersionInfo:
    """A registered version as read back from its files."""

    name: str
    version: int
    path: Path
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]

    @property
    def artifact_path(self) -> Path:
        return self.path / self.manifest.get("artifact", ARTIFACT_NAME)

    @property
    def sha256(self) -> str:
        return str(self.manifest["sha256"])

    @property
    def published(self) -> bool:
        return (self.path / PUBLISHED_NAME).exists()

    def summary_line(self) -> str:
        """One line for people: status, candidate MAE and R², the gate's reason, where."""
        candidate = self.metrics.get("candidate", {})
        mae, r2 = candidate.get("mae", float("nan")), candidate.get("r2", float("nan"))
        reason = self.metrics.get("gate", {}).get("reason", "")
        return (f"{self.name} version {self.version}: {self.manifest['status']} "
                f"(MAE {mae:.2f}, R² {r2:.4f}; {reason}) at {self.path}")


class ModelRegistry:
    """The registry under ``root``. Safe for one trainer worker plus CLI users at once."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._held = threading.local()  # per thread: how deep each model's lock is held

    # ------------------------------------------------------------------ paths and listing

    def model_dir(self, name: str) -> Path:
        return self.root / name

    def version_dir(self, name: str, version: int) -> Path:
        return self.model_dir(name) / "versions" / str(version)

    def model_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir())

    def versions(self, name: str) -> list[int]:
        """Complete versions of ``name``, ascending."""
        directory = self.model_dir(name) / "versions"
        if not directory.is_dir():
            return []
        return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())

    def require_model(self, name: str) -> None:
        """``RegistryError`` naming the models there are, when ``name`` is not one of them."""
        if not (self.model_dir(name) / "versions").is_dir():
            known = ", ".join(self.model_names()) or "none yet"
            raise RegistryError(f"no model {name!r} in the registry {self.root} "
                                f"(models: {known})")

    def get(self, name: str, version: int) -> VersionInfo:
        path = self.version_dir(name, version)
        if not path.is_dir():
            self.require_model(name)
            raise RegistryError(f"model {name} has no version {version} in {self.root}")
        return VersionInfo(name, version, path, _read_json(path / MANIFEST_NAME),
                           _read_json(path / METRICS_NAME), _read_json(path / LINEAGE_NAME))

    def resolve(self, reference: str) -> VersionInfo:
        """``NAME``, ``NAME@alias`` or ``NAME/version`` to a version (``NAME`` is the champion)."""
        if "@" in reference:
            name, alias = reference.split("@", 1)
        elif "/" in reference:
            name, number = reference.split("/", 1)
            if not number.isdigit():
                raise RegistryError(f"{reference!r}: a version is a number, as in {name}/3")
            return self.get(name, int(number))
        else:
            name, alias = reference, CHAMPION
        self.require_model(name)
        version = self.aliases(name).get(alias)
        if version is None:
            raise RegistryError(f"model {name} has no alias {alias!r} in {self.root}")
        return self.get(name, version)

    def load_model(self, name: str, version: int) -> Any:
        """The estimator of a version, verified against its manifest (``ArtifactError`` if not)."""
        info = self.get(name, version)
        return load_verified_model(info.artifact_path, info.sha256, label=f"{name}/{version}")

    # ------------------------------------------------------------------ aliases and history

    def aliases(self, name: str) -> dict[str, int]:
        """Where each alias points: the alias history replayed (the source of truth, one
        atomic append per move); ``aliases.json`` is its snapshot for readers of the files."""
        history = self.alias_history(name)
        if history:
            return {entry["alias"]: int(entry["version"]) for entry in history}
        path = self.model_dir(name) / ALIASES_NAME
        if not path.exists():
            return {}
        return {alias: int(v) for alias, v in _read_json(path)["aliases"].items()}

    def champion(self, name: str) -> int | None:
        return self.aliases(name).get(CHAMPION)

    def alias_history(self, name: str) -> list[dict[str, Any]]:
        """Every alias move, oldest first. A last line cut short (a crash mid-append) is no
        move: it is ignored; damage anywhere else is a ``RegistryError``."""
        path = self.model_dir(name) / ALIAS_HISTORY_NAME
        if not path.exists():
            return []
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        history = []
        for number, line in enumerate(lines, 1):
            try:
                history.append(json.loads(line))
            except ValueError:
                if number < len(lines):
                    raise RegistryError(f"{path} line {number} is not valid JSON") from None
        return history

    def champion_at(self, name: str, when: str) -> int | None:
        """The champion version at RFC 3339 UTC time ``when`` (None if none yet)."""
        current = None
        for entry in self.alias_history(name):
            if entry["alias"] == CHAMPION and entry["time"] <= when:
                current = entry["version"]
        return current

    def set_alias(self, name: str, alias: str, version: int, action: str, reason: str,
                  event_ids: list[str] | None = None) -> dict[str, Any]:
        """Point ``alias`` at ``version``; returns the alias-history entry (``previous_version``
        is where it pointed before)."""
        self.get(name, version)  # must exist
        with self.locked(name):
            return self._move_alias(name, alias, version, action, reason, event_ids or [])

    def last_champion_move(self, name: str) -> dict[str, Any] | None:
        """The newest alias-history entry that moved the champion (None if none did)."""
        moves = [entry for entry in self.alias_history(name) if entry["alias"] == CHAMPION]
        return moves[-1] if moves else None

    def rollback_target(self, name: str) -> tuple[int, int]:
        """``(version a rollback would restore, current champion)``, changing nothing;
        ``RegistryError`` when there is nothing to go back to."""
        current = self.champion(name)
        if current is None:
            self.require_model(name)
            raise RegistryError(f"model {name} has no champion to roll back")
        previous = self._previous_champion(name, current)
        if previous is None:
            raise RegistryError(f"model {name}: champion {current} replaced no earlier "
                                "version; nothing to roll back to")
        return previous, current

    def rollback(self, name: str, reason: str = "manual rollback",
                 expected: tuple[int, int] | None = None) -> tuple[int, int]:
        """Move the champion one step back, to the version it replaced. Returns
        ``(restored, replaced)``. With ``expected`` (from ``rollback_target``) it refuses
        when someone else moved the champion in between."""
        with self.locked(name):
            target = self.rollback_target(name)
            if expected is not None and target != expected:
                raise RegistryError(f"model {name}: the champion changed meanwhile "
                                    f"(now {target[1]}); run the rollback again")
            self._move_alias(name, CHAMPION, target[0], "rolled_back", reason, [])
            return target

    def _previous_champion(self, name: str, current: int) -> int | None:
        """The champion before ``current`` took over, following the history (so a second
        rollback goes one further step back rather than flipping between two versions)."""
        history = [e for e in self.alias_history(name) if e["alias"] == CHAMPION]
        # Walk back through the chain of champions, skipping those rolled back away from.
        stack: list[int] = []
        for entry in history:
            if entry["action"] == "rolled_back":
                while stack and stack[-1] != entry["version"]:
                    stack.pop()
                if not stack:
                    stack.append(entry["version"])
            else:
                stack.append(entry["version"])
        if not stack or stack[-1] != current or len(stack) < 2:
            return None
        return stack[-2]

    def _move_alias(self, name: str, alias: str, version: int, action: str, reason: str,
                    event_ids: list[str]) -> dict[str, Any]:
        model_dir = self.model_dir(name)
        aliases = self.aliases(name)
        entry = {"time": utc_now(), "alias": alias, "version": version,
                 "previous_version": aliases.get(alias), "action": action, "reason": reason,
                 "drift_event_ids": event_ids}
        aliases[alias] = version
        # The history line is the move (one atomic append); aliases.json follows as a snapshot.
        _append_line(model_dir / ALIAS_HISTORY_NAME, json.dumps(entry))
        _write_json_atomic(model_dir / ALIASES_NAME,
                           {"aliases": aliases, "updated_at": entry["time"]})
        crash_point("after_alias")
        return entry

    # ------------------------------------------------------------------ registering

    def register(self, name: str, candidate: NewVersion, finish: bool = True) -> VersionInfo:
        """Write a complete version (claimed number, staged, renamed) and, with ``finish``,
        finish its registration at once (``finish_registration``). The trainer worker finishes
        it later, together with announcing it. Returns the new version."""
        model_dir = self.model_dir(name)
        (model_dir / "versions").mkdir(parents=True, exist_ok=True)
        version = self._claim_version(name)
        staging = model_dir / "staging" / f"{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            self._write_version_files(staging, name, version, candidate)
            _fsync_dir(staging)
            crash_point("after_stage")
            os.rename(staging, self.version_dir(name, version))
            _fsync_dir(model_dir / "versions")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        crash_point("after_rename")
        if finish:
            self.finish_registration(name, version)
        return self.get(name, version)

    def finish_registration(self, name: str, version: int) -> bool:
        """The steps after the rename, safe to run again after a crash: the training history
        row, and for a version the gate promoted, the champion move, unless it happened already
        or the champion is no longer the one the gate compared against (the version then
        stays registered, not champion). True when the version is the champion."""
        with self.locked(name):
            info = self.get(name, version)
            if not any(row["version"] == str(version) for row in self.training_history(name)):
                self._append_training_row(name, info)
            if info.manifest.get("status") != "promoted":
                return False
            promoted_before = any(
                entry["alias"] == CHAMPION and entry["version"] == version
                and entry["action"] == "promoted" for entry in self.alias_history(name))
            if not promoted_before and self.champion(name) == info.metrics.get("champion_version"):
                self._move_alias(name, CHAMPION, version, "promoted",
                                 info.metrics.get("gate", {}).get("reason", ""),
                                 list(info.lineage.get("drift_event_ids", [])))
            return self.champion(name) == version

    def record_failure(self, name: str, reason: str, trigger_event_ids: list[str],
                       training_records: int = 0, duration_s: float = 0.0,
                       code_version: str = "") -> None:
        """A training history row for a run that produced no version."""
        row = {"run_at": utc_now(), "model": name, "version": "", "outcome": "failed",
               "reason": reason, "trigger_event_ids": ";".join(trigger_event_ids),
               "training_records": training_records, "duration_s": f"{duration_s:.3f}",
               "code_version": code_version}
        self.model_dir(name).mkdir(parents=True, exist_ok=True)
        with self.locked(name):
            self._append_csv_row(name, row)

    def mark_published(self, name: str, version: int, where: dict[str, Any]) -> None:
        """Record that the version's model-version event is committed on Kafka."""
        path = self.version_dir(name, version) / PUBLISHED_NAME
        if not path.exists():
            _write_json_atomic(path, {"published_at": utc_now(), **where})

    def version_for_event(self, name: str, event_id: str) -> VersionInfo | None:
        """The version a drift event already led to, from the lineage (the source of truth)."""
        for version in reversed(self.versions(name)):
            info = self.get(name, version)
            if event_id in info.lineage.get("drift_event_ids", []):
                return info
        return None

    def handled_event_ids(self, name: str) -> dict[str, int]:
        """Every drift event id in any version's lineage, with its version."""
        handled: dict[str, int] = {}
        for version in self.versions(name):
            lineage = _read_json(self.version_dir(name, version) / LINEAGE_NAME)
            for event_id in lineage.get("drift_event_ids", []):
                handled[event_id] = version
        return handled

    def clean_stale_staging(self, name: str) -> int:
        """Remove staging directories of writers that are no longer alive; returns how many."""
        staging = self.model_dir(name) / "staging"
        removed = 0
        if not staging.is_dir():
            return 0
        for entry in staging.iterdir():
            parts = entry.name.split("-")
            if len(parts) >= 2 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed

    def _claim_version(self, name: str) -> int:
        claims = self.model_dir(name) / "claims"
        claims.mkdir(parents=True, exist_ok=True)
        taken = [int(p.name) for p in claims.iterdir() if p.name.isdigit()]
        candidate = max(taken + self.versions(name) + [0]) + 1
        while True:
            try:
                os.mkdir(claims / str(candidate))
                return candidate
            except FileExistsError:
                candidate += 1

    def _write_version_files(self, directory: Path, name: str, version: int,
                             candidate: NewVersion) -> None:
        sha256 = save_model(candidate.estimator, directory / ARTIFACT_NAME)
        now = utc_now()
        reference: dict[str, str] = {}
        if candidate.reference_sample is not None:
            candidate.reference_sample.to_parquet(directory / REFERENCE_NAME, index=False)
            reference = {"reference": REFERENCE_NAME,
                         "reference_sha256": file_sha256(directory / REFERENCE_NAME)}
        _write_json_atomic(directory / MANIFEST_NAME, {
            "model": name, "version": version, "status": candidate.decision,
            "artifact": ARTIFACT_NAME, "sha256": sha256, **reference,
            "feature_signature": candidate.feature_signature,
            "estimator": type(candidate.estimator).__qualname__,
            "library_versions": library_versions(), "created_at": now})
        _write_json_atomic(directory / METRICS_NAME, {
            "holdout_records": candidate.holdout_records,
            "candidate": candidate.candidate_metrics, "champion": candidate.champion_metrics,
            "champion_version": candidate.champion_version,
            "gate": {"decision": candidate.decision, "reason": candidate.reason}})
        _write_json_atomic(directory / LINEAGE_NAME, {
            "training_window": {"offsets": candidate.training_offsets,
                                "record_count": candidate.training_records},
            "data_sha256": candidate.data_sha256,
            "drift_event_ids": candidate.trigger_event_ids,
            "code_version": candidate.code_version, "trained_at": now,
            "training_duration_s": round(candidate.duration_s, 3),
            **candidate.extra_lineage})

    def _append_training_row(self, name: str, info: VersionInfo) -> None:
        """The version's training history row, from its files (all of it is there)."""
        window = info.lineage.get("training_window", {})
        row: dict[str, Any] = {
            "run_at": utc_now(), "model": name, "version": info.version,
            "outcome": info.manifest.get("status", ""),
            "reason": info.metrics.get("gate", {}).get("reason", ""),
            "trigger_event_ids": ";".join(info.lineage.get("drift_event_ids", [])),
            "training_records": window.get("record_count", ""),
            "holdout_records": info.metrics.get("holdout_records", ""),
            "champion_version": info.metrics.get("champion_version") or "",
            "duration_s": f"{float(info.lineage.get('training_duration_s', 0.0)):.3f}",
            "data_sha256": info.lineage.get("data_sha256", ""),
            "code_version": info.lineage.get("code_version", "")}
        for prefix in ("candidate", "champion"):
            for key, value in (info.metrics.get(prefix) or {}).items():
                row[f"{prefix}_{key}"] = repr(float(value))
        self._append_csv_row(name, row)

    def _append_csv_row(self, name: str, row: dict[str, Any]) -> None:
        path = self.model_dir(name) / TRAINING_HISTORY_NAME
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=TRAINING_HISTORY_COLUMNS,
                                lineterminator="\n")
        if not path.exists() or path.stat().st_size == 0:
            writer.writeheader()
        writer.writerow({key: row.get(key, "") for key in TRAINING_HISTORY_COLUMNS})
        _append_line(path, buffer.getvalue().rstrip("\n"))

    def training_history(self, name: str) -> list[dict[str, str]]:
        path = self.model_dir(name) / TRAINING_HISTORY_NAME
        if not path.exists():
            return []
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Exclusive use of model ``name`` across processes (``flock``) and threads; re-entrant
        in the thread that holds it, so a holder can call any method."""
        depth = getattr(self._held, name, 0)
        if depth:
            setattr(self._held, name, depth + 1)
            try:
                yield
            finally:
                setattr(self._held, name, depth)
            return
        self.model_dir(name).mkdir(parents=True, exist_ok=True)
        with open(self.model_dir(name) / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            setattr(self._held, name, 1)
            try:
                yield
            finally:
                setattr(self._held, name, 0)
                fcntl.flock(handle, fcntl.LOCK_UN)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a loader needs to reproduce the model's behaviour."""
    # lazy: scikit-learn and skops take seconds to import; only a registration needs them
    import sklearn
    import skops

    return {"python": platform.python_version(), "scikit-learn": sklearn.__version__,
            "skops": skops.__version__, "numpy": numpy.__version__,
            "pandas": pandas.__version__}


def data_sha256(frame: Any) -> str:
    """A digest of a training frame: its column names and every row's values, in order."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pandas.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise RegistryError(f"{path} is not valid JSON: {error}") from None


def _write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write to a temporary file beside ``path``, fsync, then ``os.replace``: readers see the
    old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(temporary, "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _append_line(path: Path, line: str) -> None:
    """Append one line with a single write (O_APPEND) and fsync it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (line + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
