"""The registry's versions: writing one complete (claimed number, staged, renamed into place),
reading it back, loading its model, and the housekeeping of its directory."""

from __future__ import annotations

import os
import platform
import shutil
import uuid
from dataclasses import dataclass, field
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
from trainer.registry_layout import (
    RegistryLayout,
    fsync_dir,
    pid_alive,
    read_json,
    utc_now,
    write_json_atomic,
)

METRICS_NAME = "metrics.json"
LINEAGE_NAME = "lineage.json"
PUBLISHED_NAME = "published.json"


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
    # [{topic, partition, first_offset, last_offset}]: the records' and the labels' ranges
    training_offsets: list[dict[str, Any]]
    training_records: int
    data_sha256: str
    trigger_event_ids: list[str]
    feature_signature: str
    code_version: str
    duration_s: float = 0.0
    extra_lineage: dict[str, Any] = field(default_factory=dict)
    # Holdout inputs, predictions and errors: the detectors' reference while this is champion.
    reference_sample: Any = None  # pandas.DataFrame
    # Per county with enough holdout rows: {"name", "rows", "candidate_mae", "champion_mae"}
    slices: list[dict[str, Any]] = field(default_factory=list)
    # The training window's category counts over whole event-time windows (manifest
    # "composition": {"window_s", "windows", "counts"}), or None.
    composition: dict[str, Any] | None = None


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


class VersionStore:
    """The ``<name>/versions/<n>`` directories: each one complete, written once."""

    def __init__(self, layout: RegistryLayout) -> None:
        self.layout = layout

    def get(self, name: str, version: int) -> VersionInfo:
        path = self.layout.version_dir(name, version)
        if not path.is_dir():
            self.layout.require_model(name)
            raise RegistryError(f"model {name} has no version {version} in {self.layout.root}")
        return VersionInfo(name, version, path, read_json(path / MANIFEST_NAME),
                           read_json(path / METRICS_NAME), read_json(path / LINEAGE_NAME))

    def load_model(self, name: str, version: int) -> Any:
        """The estimator of a version, verified against its manifest (``ArtifactError`` if not)."""
        info = self.get(name, version)
        return load_verified_model(info.artifact_path, info.sha256, label=f"{name}/{version}")

    def write(self, name: str, candidate: NewVersion) -> int:
        """Claim a number, build the version in ``staging/`` and rename it into ``versions/``
        complete; returns its number. A crash leaves a staging directory, never a version."""
        model_dir = self.layout.model_dir(name)
        (model_dir / "versions").mkdir(parents=True, exist_ok=True)
        version = self._claim_version(name)
        staging = model_dir / "staging" / f"{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            self._write_version_files(staging, name, version, candidate)
            fsync_dir(staging)
            crash_point("after_stage")
            os.rename(staging, self.layout.version_dir(name, version))
            fsync_dir(model_dir / "versions")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        crash_point("after_rename")
        return version

    def mark_published(self, name: str, version: int, where: dict[str, Any]) -> None:
        """Record that the version's model-version event is committed on Kafka."""
        path = self.layout.version_dir(name, version) / PUBLISHED_NAME
        if not path.exists():
            write_json_atomic(path, {"published_at": utc_now(), **where})

    def clean_stale_staging(self, name: str) -> int:
        """Remove staging directories of writers that are no longer alive; returns how many."""
        staging = self.layout.model_dir(name) / "staging"
        removed = 0
        if not staging.is_dir():
            return 0
        for entry in staging.iterdir():
            parts = entry.name.split("-")
            if len(parts) >= 2 and parts[1].isdigit() and not pid_alive(int(parts[1])):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed

    def _claim_version(self, name: str) -> int:
        """The next free number, taken with ``os.mkdir`` (atomic: no two writers share one)."""
        claims = self.layout.model_dir(name) / "claims"
        claims.mkdir(parents=True, exist_ok=True)
        taken = [int(p.name) for p in claims.iterdir() if p.name.isdigit()]
        candidate = max(taken + self.layout.versions(name) + [0]) + 1
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
        write_json_atomic(directory / MANIFEST_NAME, {
            "model": name, "version": version, "status": candidate.decision,
            "artifact": ARTIFACT_NAME, "sha256": sha256, **reference,
            **({} if candidate.composition is None else {"composition": candidate.composition}),
            "feature_signature": candidate.feature_signature,
            "estimator": type(candidate.estimator).__qualname__,
            "library_versions": library_versions(), "created_at": now})
        write_json_atomic(directory / METRICS_NAME, {
            "holdout_records": candidate.holdout_records,
            "candidate": candidate.candidate_metrics, "champion": candidate.champion_metrics,
            "champion_version": candidate.champion_version,
            "gate": {"decision": candidate.decision, "reason": candidate.reason,
                     "slices": candidate.slices}})
        write_json_atomic(directory / LINEAGE_NAME, {
            "training_window": {"offsets": candidate.training_offsets,
                                "record_count": candidate.training_records},
            "data_sha256": candidate.data_sha256,
            "drift_event_ids": candidate.trigger_event_ids,
            "code_version": candidate.code_version, "trained_at": now,
            "training_duration_s": round(candidate.duration_s, 3),
            **candidate.extra_lineage})


def library_versions() -> dict[str, str]:
    """Versions of the libraries a loader needs to reproduce the model's behaviour."""
    # lazy: scikit-learn and skops take seconds to import; only a registration needs them
    import sklearn
    import skops

    return {"python": platform.python_version(), "scikit-learn": sklearn.__version__,
            "skops": skops.__version__, "numpy": numpy.__version__,
            "pandas": pandas.__version__}
