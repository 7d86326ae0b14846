"""The registry's training history: ``<name>/training_history.csv``, one row per training
run, failed runs included, appended under the model's lock."""

from __future__ import annotations

import csv
import io
from typing import Any

from trainer.registry_layout import RegistryLayout, append_line, utc_now
from trainer.registry_versions import VersionInfo

TRAINING_HISTORY_NAME = "training_history.csv"
TRAINING_HISTORY_COLUMNS = (
    "run_at", "model", "version", "outcome", "reason", "trigger_event_ids",
    "training_records", "holdout_records", "champion_version",
    "candidate_mae", "candidate_rmse", "candidate_mape", "candidate_r2",
    "champion_mae", "champion_rmse", "champion_mape", "champion_r2",
    "duration_s", "data_sha256", "code_version",
)


class TrainingHistory:
    """The training history CSV of each model: read whole, appended a row at a time."""

    def __init__(self, layout: RegistryLayout) -> None:
        self.layout = layout

    def rows(self, name: str) -> list[dict[str, str]]:
        path = self.layout.model_dir(name) / TRAINING_HISTORY_NAME
        if not path.exists():
            return []
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def has_version(self, name: str, version: int) -> bool:
        return any(row["version"] == str(version) for row in self.rows(name))

    def record_version(self, name: str, info: VersionInfo) -> None:
        """The version's row, from its files (all of it is there); the caller holds the
        model's lock."""
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
        self._append(name, row)

    def record_failure(self, name: str, reason: str, trigger_event_ids: list[str],
                       training_records: int = 0, duration_s: float = 0.0,
                       code_version: str = "") -> None:
        """A row for a run that produced no version."""
        row = {"run_at": utc_now(), "model": name, "version": "", "outcome": "failed",
               "reason": reason, "trigger_event_ids": ";".join(trigger_event_ids),
               "training_records": training_records, "duration_s": f"{duration_s:.3f}",
               "code_version": code_version}
        self.layout.model_dir(name).mkdir(parents=True, exist_ok=True)
        with self.layout.locked(name):
            self._append(name, row)

    def _append(self, name: str, row: dict[str, Any]) -> None:
        """One CSV row in one append (a header first when the file is new)."""
        path = self.layout.model_dir(name) / TRAINING_HISTORY_NAME
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=TRAINING_HISTORY_COLUMNS,
                                lineterminator="\n")
        if not path.exists() or path.stat().st_size == 0:
            writer.writeheader()
        writer.writerow({key: row.get(key, "") for key in TRAINING_HISTORY_COLUMNS})
        append_line(path, buffer.getvalue().rstrip("\n"))
