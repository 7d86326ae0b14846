"""A file-system model registry: MLflow's concepts (numbered versions, named aliases, history)
without a server. Layout under the registry root::

    <name>/versions/<n>/model.skops       the artifact (skops)
                        manifest.json     status, SHA-256, feature signature, library versions
                        metrics.json      candidate and champion metrics, gate decision
                        lineage.json      training window offsets (records and labels
                                          topics), record count, data hash, drift event
                                          ids, code version
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

``ModelRegistry`` is the one door callers use; behind it each job has its own module: the layout,
lock and file writes (``registry_layout``), the versions (``registry_versions``), the aliases and
rollback (``registry_aliases``), the training history CSV (``registry_history``) and the
lineage queries (``registry_lineage``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from levydrift.errors import RegistryError
from levydrift.paths import ensure_writable_dir
from trainer.registry_aliases import ALIAS_HISTORY_NAME, ALIASES_NAME, CHAMPION, AliasBook
from trainer.registry_history import (
    TRAINING_HISTORY_COLUMNS,
    TRAINING_HISTORY_NAME,
    TrainingHistory,
)
from trainer.registry_layout import RegistryLayout, unwritable, utc_now
from trainer.registry_lineage import LineageIndex, data_sha256
from trainer.registry_versions import (
    LINEAGE_NAME,
    METRICS_NAME,
    PUBLISHED_NAME,
    NewVersion,
    VersionInfo,
    VersionStore,
    library_versions,
)

__all__ = [
    "ALIAS_HISTORY_NAME", "ALIASES_NAME", "CHAMPION", "LINEAGE_NAME", "METRICS_NAME",
    "PUBLISHED_NAME", "TRAINING_HISTORY_COLUMNS", "TRAINING_HISTORY_NAME", "ModelRegistry",
    "NewVersion", "VersionInfo", "data_sha256", "library_versions", "utc_now",
]


class ModelRegistry:
    """The registry under ``root``. Safe for one trainer worker plus CLI users at once.

    Its parts share one ``RegistryLayout``, so one lock per model, re-entrant across them."""

    def __init__(self, root: str | Path) -> None:
        self.layout = RegistryLayout(root)
        self.root = self.layout.root
        self.store = VersionStore(self.layout)
        self.alias_book = AliasBook(self.layout, self.store)
        self.run_history = TrainingHistory(self.layout)
        self.lineage = LineageIndex(self.layout, self.store)

    # ------------------------------------------------------------------ paths and versions

    def model_dir(self, name: str) -> Path:
        return self.layout.model_dir(name)

    def version_dir(self, name: str, version: int) -> Path:
        return self.layout.version_dir(name, version)

    def model_names(self) -> list[str]:
        return self.layout.model_names()

    def versions(self, name: str) -> list[int]:
        return self.layout.versions(name)

    def require_model(self, name: str) -> None:
        self.layout.require_model(name)

    def locked(self, name: str) -> AbstractContextManager[None]:
        return self.layout.locked(name)

    def get(self, name: str, version: int) -> VersionInfo:
        return self.store.get(name, version)

    def load_model(self, name: str, version: int) -> Any:
        return self.store.load_model(name, version)

    def mark_published(self, name: str, version: int, where: dict[str, Any]) -> None:
        self.store.mark_published(name, version, where)

    def clean_stale_staging(self, name: str) -> int:
        return self.store.clean_stale_staging(name)

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

    # ------------------------------------------------------------------ aliases

    def aliases(self, name: str) -> dict[str, int]:
        return self.alias_book.aliases(name)

    def champion(self, name: str) -> int | None:
        return self.alias_book.champion(name)

    def alias_history(self, name: str) -> list[dict[str, Any]]:
        return self.alias_book.history(name)

    def champion_at(self, name: str, when: str) -> int | None:
        return self.alias_book.champion_at(name, when)

    def last_champion_move(self, name: str) -> dict[str, Any] | None:
        return self.alias_book.last_champion_move(name)

    def set_alias(self, name: str, alias: str, version: int, action: str, reason: str,
                  event_ids: list[str] | None = None) -> dict[str, Any]:
        return self.alias_book.set_alias(name, alias, version, action, reason, event_ids)

    def rollback_target(self, name: str) -> tuple[int, int]:
        return self.alias_book.rollback_target(name)

    def rollback(self, name: str, reason: str = "manual rollback",
                 expected: tuple[int, int] | None = None) -> tuple[int, int]:
        return self.alias_book.rollback(name, reason, expected)

    # ------------------------------------------------------------------ history and lineage

    def training_history(self, name: str) -> list[dict[str, str]]:
        return self.run_history.rows(name)

    def record_failure(self, name: str, reason: str, trigger_event_ids: list[str],
                       training_records: int = 0, duration_s: float = 0.0,
                       code_version: str = "") -> None:
        self.run_history.record_failure(name, reason, trigger_event_ids, training_records,
                                    duration_s, code_version)

    def version_for_event(self, name: str, event_id: str) -> VersionInfo | None:
        return self.lineage.version_for_event(name, event_id)

    def handled_event_ids(self, name: str) -> dict[str, int]:
        return self.lineage.handled_event_ids(name)

    # ------------------------------------------------------------------ registering

    def ensure_writable(self) -> None:
        """Raise ``RegistryError`` unless the root can be created and written: checked before
        training, so a bad ``registry.root`` costs no training run and gives no traceback."""
        try:
            ensure_writable_dir(self.root)
        except OSError as error:
            raise RegistryError(unwritable(self.root, error)) from None

    def register(self, name: str, candidate: NewVersion, finish: bool = True) -> VersionInfo:
        """Write a complete version (claimed number, staged, renamed) and, with ``finish``,
        finish its registration at once (``finish_registration``). The trainer worker finishes
        it later, together with announcing it. Returns the new version. A write the disk
        refuses (full, read-only) raises ``RegistryError`` and leaves no version."""
        try:
            version = self.store.write(name, candidate)
        except OSError as error:
            raise RegistryError(unwritable(self.root, error)) from None
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
            if not self.run_history.has_version(name, version):
                self.run_history.record_version(name, info)
            if info.manifest.get("status") != "promoted":
                return False
            if (not self.alias_book.was_promoted(name, version)
                    and self.champion(name) == info.metrics.get("champion_version")):
                self.alias_book.move(name, CHAMPION, version, "promoted",
                                     info.metrics.get("gate", {}).get("reason", ""),
                                     list(info.lineage.get("drift_event_ids", [])))
            return self.champion(name) == version
