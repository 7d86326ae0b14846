"""Lineage queries: which version a drift event led to, read from the versions' lineage files
(the source of truth), which offsets a version trained on, and the digest of a training frame
that the lineage records.

A version's ``training_window.offsets`` holds one ``{topic, partition, first_offset,
last_offset}`` range per partition of each topic its window read: the records topic's, and,
when its levies came from labels, the labels topic's (the top-level ``labels`` entry says how
many rows were joined). Older versions have records ranges only."""

from __future__ import annotations

import hashlib
from typing import Any

import pandas

from trainer.registry_layout import RegistryLayout, read_json
from trainer.registry_versions import LINEAGE_NAME, VersionInfo, VersionStore


class LineageIndex:
    """Drift event ids to the versions they led to, from every version's ``lineage.json``."""

    def __init__(self, layout: RegistryLayout, versions: VersionStore) -> None:
        self.layout = layout
        self.versions = versions

    def version_for_event(self, name: str, event_id: str) -> VersionInfo | None:
        """The version a drift event already led to, from the lineage (the source of truth)."""
        for version in reversed(self.layout.versions(name)):
            info = self.versions.get(name, version)
            if event_id in info.lineage.get("drift_event_ids", []):
                return info
        return None

    def handled_event_ids(self, name: str) -> dict[str, int]:
        """Every drift event id in any version's lineage, with its version."""
        handled: dict[str, int] = {}
        for version in self.layout.versions(name):
            lineage = read_json(self.layout.version_dir(name, version) / LINEAGE_NAME)
            for event_id in lineage.get("drift_event_ids", []):
                handled[event_id] = version
        return handled


def window_ranges(lineage: dict[str, Any], topic: str | None = None) -> list[dict[str, Any]]:
    """The offset ranges a version's window read (of ``topic`` only, if given)."""
    ranges = lineage.get("training_window", {}).get("offsets", [])
    return [r for r in ranges if topic is None or r["topic"] == topic]


def trained_through(lineage: dict[str, Any], topic: str, partition: int, offset: int) -> bool:
    """Whether the version's window read ``topic``'s ``partition`` up to ``offset`` (a drift
    event there, of the records or of the labels, is one it has already trained on)."""
    return any(r["partition"] == partition and offset <= r["last_offset"]
               for r in window_ranges(lineage, topic))


def data_sha256(frame: Any) -> str:
    """A digest of a training frame: its column names and every row's values, in order."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pandas.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
