"""The registry's aliases (``champion`` above all): where each points, every move in the
append-only alias history, and rollback along that history."""

from __future__ import annotations

import json
from typing import Any

from levydrift.errors import RegistryError
from levydrift.faults import crash_point
from trainer.registry_layout import (
    RegistryLayout,
    append_line,
    read_json,
    utc_now,
    write_json_atomic,
)
from trainer.registry_versions import VersionStore

CHAMPION = "champion"
ALIASES_NAME = "aliases.json"
ALIAS_HISTORY_NAME = "aliases_history.jsonl"


class AliasBook:
    """``<name>/aliases_history.jsonl`` (the moves, the source of truth) and its snapshot
    ``<name>/aliases.json``. Moves run under the model's lock."""

    def __init__(self, layout: RegistryLayout, versions: VersionStore) -> None:
        self.layout = layout
        self.versions = versions

    def aliases(self, name: str) -> dict[str, int]:
        """Where each alias points: the alias history replayed (the source of truth, one
        atomic append per move); ``aliases.json`` is its snapshot for readers of the files."""
        history = self.history(name)
        if history:
            return {entry["alias"]: int(entry["version"]) for entry in history}
        path = self.layout.model_dir(name) / ALIASES_NAME
        if not path.exists():
            return {}
        return {alias: int(v) for alias, v in read_json(path)["aliases"].items()}

    def champion(self, name: str) -> int | None:
        return self.aliases(name).get(CHAMPION)

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every alias move, oldest first. A last line cut short (a crash mid-append) is no
        move: it is ignored; damage anywhere else is a ``RegistryError``."""
        path = self.layout.model_dir(name) / ALIAS_HISTORY_NAME
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

    def champion_moves(self, name: str) -> list[dict[str, Any]]:
        """The alias-history entries that moved the champion, oldest first."""
        return [entry for entry in self.history(name) if entry["alias"] == CHAMPION]

    def champion_at(self, name: str, when: str) -> int | None:
        """The champion version at RFC 3339 UTC time ``when`` (None if none yet)."""
        current = None
        for entry in self.champion_moves(name):
            if entry["time"] <= when:
                current = entry["version"]
        return current

    def last_champion_move(self, name: str) -> dict[str, Any] | None:
        """The newest alias-history entry that moved the champion (None if none did)."""
        moves = self.champion_moves(name)
        return moves[-1] if moves else None

    def was_promoted(self, name: str, version: int) -> bool:
        """Whether ``version`` was ever made champion by its promotion."""
        return any(entry["version"] == version and entry["action"] == "promoted"
                   for entry in self.champion_moves(name))

    def set_alias(self, name: str, alias: str, version: int, action: str, reason: str,
                  event_ids: list[str] | None = None) -> dict[str, Any]:
        """Point ``alias`` at ``version``; returns the alias-history entry (``previous_version``
        is where it pointed before)."""
        self.versions.get(name, version)  # must exist
        with self.layout.locked(name):
            return self.move(name, alias, version, action, reason, event_ids or [])

    def rollback_target(self, name: str) -> tuple[int, int]:
        """``(version a rollback would restore, current champion)``, changing nothing;
        ``RegistryError`` when there is nothing to go back to."""
        current = self.champion(name)
        if current is None:
            self.layout.require_model(name)
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
        with self.layout.locked(name):
            target = self.rollback_target(name)
            if expected is not None and target != expected:
                raise RegistryError(f"model {name}: the champion changed meanwhile "
                                    f"(now {target[1]}); run the rollback again")
            self.move(name, CHAMPION, target[0], "rolled_back", reason, [])
            return target

    def move(self, name: str, alias: str, version: int, action: str, reason: str,
             event_ids: list[str]) -> dict[str, Any]:
        """Move ``alias`` to ``version``; the caller holds the model's lock."""
        model_dir = self.layout.model_dir(name)
        aliases = self.aliases(name)
        entry = {"time": utc_now(), "alias": alias, "version": version,
                 "previous_version": aliases.get(alias), "action": action, "reason": reason,
                 "drift_event_ids": event_ids}
        aliases[alias] = version
        # The history line is the move (one atomic append); aliases.json follows as a snapshot.
        append_line(model_dir / ALIAS_HISTORY_NAME, json.dumps(entry))
        write_json_atomic(model_dir / ALIASES_NAME,
                          {"aliases": aliases, "updated_at": entry["time"]})
        crash_point("after_alias")
        return entry

    def _previous_champion(self, name: str, current: int) -> int | None:
        """The champion before ``current`` took over, following the history (so a second
        rollback goes one further step back rather than flipping between two versions)."""
        # Walk back through the chain of champions, skipping those rolled back away from.
        stack: list[int] = []
        for entry in self.champion_moves(name):
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
