"""``RecentRecords``: the last records the segment layer saw (position, event time, segment,
pooled score per signal), so a decision can be dated and the pooled layer's evidence traced
back to the segments it came from, exactly, whatever the batching."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from detectors.errors import SnapshotError

RING_RECORDS = 2048


@dataclass
class Batch:
    """One batch's records in the ring's terms."""

    positions: np.ndarray  # int64
    times: np.ndarray  # int64 ms, -1 = none
    codes: np.ndarray  # int32 segment codes
    scores: dict[str, np.ndarray]  # float, NaN = not scored
    matrix: np.ndarray | None = None  # the same scores as rows in the ring's signal order


class RecentRecords:
    def __init__(self, signals: tuple[str, ...], size: int = RING_RECORDS) -> None:
        self.signals = signals
        self.size = size
        self.positions = np.full(size, -1, dtype=np.int64)
        self.times = np.full(size, -1, dtype=np.int64)
        self.codes = np.full(size, -1, dtype=np.int32)
        self.scores = np.full((len(signals), size), np.nan, dtype=np.float16)  # attribution only
        self.head = 0
        self.held = 0
        self.pending: list[Batch] = []  # pushed, not written yet (see ``push``)
        self.pending_records = 0

    def push(self, batch: Batch) -> None:
        """Add a batch's records. They are written into the ring (as float16 scores) only
        when it is read: most batches are overwritten unread, and the conversion is most of
        a write (~80 us per 2,000 records of nine signals)."""
        if not len(batch.positions):
            return
        # Own copies of what the caller may reuse; the scores are the bank's own arrays.
        self.pending.append(Batch(batch.positions.copy(), batch.times.copy(),
                                  batch.codes.copy(), batch.scores, batch.matrix))
        self.pending_records += len(batch.positions)
        while self.pending_records - len(self.pending[0].positions) >= self.size:
            self.pending_records -= len(self.pending.pop(0).positions)

    def _settle(self) -> None:
        """Write the pending batches into the ring, oldest first."""
        for batch in self.pending:
            self._write(batch)
        self.pending, self.pending_records = [], 0

    def _write(self, batch: Batch) -> None:
        keep = min(len(batch.positions), self.size)
        # At most two runs of slots (the ring wraps once): slices, not a gather per array.
        first = min(keep, self.size - self.head)
        for into, (start, stop) in ((slice(self.head, self.head + first), (0, first)),
                                    (slice(0, keep - first), (first, keep))):
            if stop == start:
                continue
            part = slice(len(batch.positions) - keep + start, len(batch.positions) - keep + stop)
            self.positions[into] = batch.positions[part]
            self.times[into] = batch.times[part]
            self.codes[into] = batch.codes[part]
            if batch.matrix is not None:  # every signal's scores, in ring order: at once
                self.scores[:, into] = batch.matrix[:, part]
                continue
            for row, name in enumerate(self.signals):
                column = batch.scores.get(name)
                self.scores[row, into] = np.nan if column is None else column[part]
        self.head = (self.head + keep) % self.size
        self.held = min(self.held + keep, self.size)

    def records_held(self) -> int:
        self._settle()
        return self.held

    def with_batch(self, batch: Batch) -> Batch:
        """The ring (oldest first) followed by ``batch``: everything still known."""
        self._settle()
        order = (np.arange(self.head - self.held, self.head)) % self.size
        scores = {}
        for row, name in enumerate(self.signals):
            column = batch.scores.get(name)
            # Rounded as the ring stores them, so a restored bank attributes identically.
            tail = (np.full(len(batch.positions), np.nan) if column is None
                    else column.astype(np.float16).astype(np.float64))
            scores[name] = np.concatenate([self.scores[row, order].astype(np.float64), tail])
        return Batch(np.concatenate([self.positions[order], batch.positions]),
                     np.concatenate([self.times[order], batch.times]),
                     np.concatenate([self.codes[order], batch.codes]), scores)

    # ------------------------------------------------------------------ snapshot
    def to_bytes(self) -> bytes:
        self._settle()
        order = (np.arange(self.head - self.held, self.head)) % self.size
        parts = [self.positions[order].astype("<i8").tobytes(),
                 self.times[order].astype("<i8").tobytes(),
                 self.codes[order].astype("<i4").tobytes(),
                 self.scores[:, order].astype("<f2").tobytes()]
        return zlib.compress(b"".join(parts), 6)

    def load(self, data: bytes, held: int) -> None:
        """Restore ``to_bytes()`` of ``held`` records; sizes are checked."""
        if not 0 <= held <= self.size:
            raise SnapshotError(f"recent-records ring of {held} records (at most {self.size})")
        self.pending, self.pending_records = [], 0
        expected = held * (8 + 8 + 4 + 2 * len(self.signals))
        try:
            inflate = zlib.decompressobj()
            raw = inflate.decompress(data, expected + 1)
        except zlib.error as error:
            raise SnapshotError(f"corrupt recent-records ring: {error}") from None
        if len(raw) != expected or inflate.unconsumed_tail:
            raise SnapshotError("recent-records ring has the wrong size")
        offset = 0

        def take(dtype: str, count: int) -> np.ndarray:
            nonlocal offset
            array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
            offset += array.nbytes
            return array

        self.positions[:held] = take("<i8", held)
        self.times[:held] = take("<i8", held)
        self.codes[:held] = take("<i4", held)
        self.scores[:, :held] = take("<f2", held * len(self.signals)).reshape(
            len(self.signals), held)
        self.head = held % self.size
        self.held = held
