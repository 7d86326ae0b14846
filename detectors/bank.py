"""``DetectorBank``: every signal's detectors, and the episode logic that turns their alarms
into ``DriftDecision``s.

Each signal is processed independently (its detectors restart after each of its alarms), so
a batch can be fed signal by signal in compiled loops and still give exactly the decisions of
feeding records one at a time. Episodes: alarms of one kind at the same record form one
decision; further alarms of that kind within ``cooldown_records`` records are absorbed (they
are the same change seen by slower detectors or other signals).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors import kernels as k
from detectors.channels import (
    Alarm,
    CategoricalChannel,
    Channel,
    DetectorStatus,
    NumericChannel,
    merged_reference,
)
from detectors.config import DetectorSettings
from detectors.decision import KINDS, DriftDecision
from detectors.errors import SnapshotError
from detectors.reference import Reference
from detectors.state import ArraySpec, ChannelState

__all__ = ["BankState", "DetectorBank", "DetectorStatus", "check_positions"]


@dataclass(frozen=True)
class BankState:
    """A bank's state apart from its settings: episode counters, the references in use and
    each channel's ``state()``, in channel order."""

    records_seen: int
    last_position: int | None
    cooldown_until: dict[str, int]
    absorbed_alarms: dict[str, int]
    reference: Reference
    channels: dict[str, ChannelState]


def channel_types(settings: DetectorSettings
                  ) -> dict[str, type[NumericChannel] | type[CategoricalChannel]]:
    """Each signal's channel class, in channel order (numeric-like signals first)."""
    types: dict[str, type[NumericChannel] | type[CategoricalChannel]] = {
        name: NumericChannel for name in settings.numeric_like()}
    types.update({name: CategoricalChannel for name in settings.categorical_signals})
    return types


def check_positions(positions: np.ndarray, last_position: int | None) -> None:
    """Positions of a batch: one-dimensional, strictly increasing, after ``last_position``."""
    if positions.ndim != 1:
        raise ValueError("positions must be a one-dimensional array")
    if not k.strictly_increasing(positions):
        raise ValueError("positions must be strictly increasing")
    if len(positions) and last_position is not None and positions[0] <= last_position:
        raise ValueError(f"position {int(positions[0])} is not after the last position "
                         f"seen ({last_position})")


class DetectorBank:
    """Online drift detection over named signals. Pure: no I/O, no clock."""

    def __init__(self, settings: DetectorSettings, reference: Reference | None = None,
                 channels: dict[str, Channel] | None = None) -> None:
        """Fresh channels (against ``reference``), or ``channels`` as they are (a restore's)."""
        settings.validate()
        self.settings = settings
        self.records_seen = 0
        self.last_position: int | None = None
        self.cooldown_until = {kind: 0 for kind in KINDS}
        self.absorbed_alarms = {kind: 0 for kind in KINDS}
        self.channels: dict[str, Channel] = channels if channels is not None else {
            name: kind(name, settings, None) for name, kind in channel_types(settings).items()}
        if reference is not None and channels is None:
            self._apply_reference(reference)

    # ------------------------------------------------------------------ feeding
    def update(self, columns: Mapping[str, Any], positions: Any,
               scores: Mapping[str, np.ndarray] | None = None,
               positions_checked: bool = False) -> list[DriftDecision]:
        """Feed one batch: one array per signal (NaN / None = no value for that record) and
        the records' strictly increasing positions. Returns the decisions it produced, in
        order. A signal missing from ``columns`` has no value in this batch. ``scores``
        (optional, numeric signals): NaN-filled arrays that receive each value's location
        score (see ``NumericChannel.feed``). ``positions_checked``: the caller (the segment
        layer, feeding parts of a batch it checked) vouches for the positions."""
        positions = np.ascontiguousarray(positions, dtype=np.int64)
        if not positions_checked:
            self._check_positions(positions)
        alarms: list[tuple[int, int, str, Alarm]] = []
        order = {name: i for i, name in enumerate(self.channels)}
        for name, channel in self.channels.items():
            column = columns.get(name)
            if column is None:
                continue
            if len(column) != len(positions):
                raise ValueError(f"column {name!r} has {len(column)} values for "
                                 f"{len(positions)} positions")
            fired = channel.feed(column, positions, None if scores is None else scores.get(name))
            for alarm in fired:
                alarms.append((alarm.index, order[name], name, alarm))
        return self.account(alarms, positions)

    def account(self, alarms: list[tuple[int, int, str, Alarm]],
                positions: np.ndarray) -> list[DriftDecision]:
        """A fed batch's decisions from its channels' alarms (index in the batch, channel
        order, signal, alarm), and the batch counted. The segment layer, which feeds every
        segment's channels in one compiled call, accounts each segment's part here."""
        alarms.sort(key=lambda item: (item[0], item[1]))
        decisions = self._episodes(alarms, positions) if alarms else []
        if len(positions):
            self.count(len(positions), int(positions[-1]))
        return decisions

    def count(self, records: int, last_position: int) -> None:
        """A fed batch of ``records`` without alarms counted (``account``'s bookkeeping)."""
        self.records_seen += records
        self.last_position = last_position

    def _check_positions(self, positions: np.ndarray) -> None:
        check_positions(positions, self.last_position)

    def _episodes(self, alarms: list[tuple[int, int, str, Alarm]],
                  positions: np.ndarray) -> list[DriftDecision]:
        decisions: list[DriftDecision] = []
        grouped: dict[tuple[int, str], list[Alarm]] = {}
        for index, _, name, alarm in alarms:
            grouped.setdefault((index, self.settings.kind_of(name)), []).append(alarm)
        for (index, kind), group in sorted(grouped.items(),
                                           key=lambda item: (item[0][0], KINDS.index(item[0][1]))):
            record = self.records_seen + index
            if record < self.cooldown_until[kind]:
                self.absorbed_alarms[kind] += len(group)
                continue
            self.cooldown_until[kind] = record + 1 + self.settings.cooldown_records
            decisions.append(DriftDecision(kind=kind, detected_at=int(positions[index]),
                                           signals=tuple(a.finding for a in group)))
        return decisions

    # ------------------------------------------------------------------ re-baselining
    def rebaseline(self, reference: Reference | None = None,
                   signals: Collection[str] | None = None) -> None:
        """Start again against a new champion: signals in ``reference`` use it at once, the
        others warm up on the next ``warmup_records`` values. Detectors restart (fresh
        running means, empty windows), so the old regime cannot raise a burst of alarms.
        ``signals``: only those start again (None: all)."""
        chosen = [channel for name, channel in self.channels.items()
                  if signals is None or name in signals]
        for channel in chosen:
            channel.start_warmup()
        if reference is not None:
            for channel in chosen:
                channel.use_reference(reference)
        self.cooldown_until = {kind: 0 for kind in KINDS}

    def _apply_reference(self, reference: Reference) -> None:
        for channel in self.channels.values():
            channel.use_reference(reference)

    def reference(self) -> Reference:
        """The references in use (warm-up references included); for the registry/snapshot."""
        return merged_reference(list(self.channels.values()))

    # ------------------------------------------------------------------ observation
    def status(self) -> list[DetectorStatus]:
        """Current statistic and threshold of every detector (for Prometheus gauges). ADWIN
        reports its largest |mean difference| / epsilon over cuts against threshold 1."""
        return [row for channel in self.channels.values() for row in channel.status()]

    # ------------------------------------------------------------------ state
    def state(self) -> BankState:
        return BankState(self.records_seen, self.last_position, dict(self.cooldown_until),
                         dict(self.absorbed_alarms), self.reference(),
                         {name: channel.state() for name, channel in self.channels.items()})

    def state_specs(self) -> dict[str, dict[str, ArraySpec]]:
        """Per channel, the arrays ``from_state`` accepts (see ``Channel.state_specs``)."""
        return {name: channel.state_specs() for name, channel in self.channels.items()}

    @classmethod
    def from_state(cls, settings: DetectorSettings, state: BankState) -> DetectorBank:
        """The bank ``state()`` was taken from (under the same settings); channel state that
        does not fit raises ``SnapshotError``."""
        types = channel_types(settings)
        if set(state.channels) != set(types):
            raise SnapshotError(f"detector snapshot holds signals {sorted(state.channels)}, "
                                f"the settings {sorted(types)}", "shape")
        bank = cls(settings, channels={
            name: kind.from_state(name, settings, state.reference, state.channels[name])
            for name, kind in types.items()})
        bank.records_seen = state.records_seen
        bank.last_position = state.last_position
        bank.cooldown_until = dict(state.cooldown_until)
        bank.absorbed_alarms = dict(state.absorbed_alarms)
        return bank

