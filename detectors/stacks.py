"""``SegmentStack``: one numeric signal's detector state across every segment, stacked, so
the segment layer feeds a batch to all segments in one compiled call
(``kernels.run_numeric_segments``) instead of one bank call per segment and signal: with
segments interleaved, those calls and the copies in and out of them cost more than the
detection (CALIBRATION.md 7 has the why of segments; bench/RESULTS-detectors.md the cost).

Each segment's ``NumericChannel`` stays the owner of its state: its arrays become views
into row ``code`` of the stacks, so its findings, status and snapshot are unchanged. A
segment warming up collects its values in the stack too (its channel's warm-up list is
given a view of them), as many districts of ``county, tax_district`` warm up for long.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from detectors import kernels as k
from detectors.channels import Alarm, NumericChannel

# The channel arrays the compiled loop reads and writes, all shaped by the settings alone.
STACKED = ("ph_par", "ph_f", "ph_i", "aw_s", "aw_totals", "aw_variances", "aw_counts",
           "ring_values", "ring_positions", "counters", "alarm")


POOLED = -1  # the segment of the pooled channel's alarms in ``SegmentStack.feed``
# Called after segment ``code``'s alarm with its channel and its records still to feed (batch
# rows): the stratum layer re-learns there and rewrites those records' values.
AfterAlarm = Callable[[int, NumericChannel, np.ndarray], None]


class SegmentStack:
    """The stacked state of one signal; row ``code`` is segment ``code``'s channel."""

    def __init__(self) -> None:
        self.channels: list[NumericChannel] = []
        self.arrays: dict[str, np.ndarray] = {}
        # Reference tables, padded to the longest; the reference each row was copied from.
        self.references: list[object] = []
        self.knots, self.below, self.at_or_below = (np.zeros((0, 0)) for _ in range(3))
        self.n_knots = np.zeros(0, dtype=np.int64)
        self.u_min = np.zeros(0)
        # Warm-ups being collected: a row of values per segment warming up (``warm_row``,
        # -1: none), and per segment the count, first and last position, target, and the
        # list its channel was given (to know whether it changed since).
        self.warm_values = np.zeros((0, 0))
        self.warm_row = np.zeros(0, dtype=np.int64)
        self.row_owner: list[int] = []
        self.warm_count = np.zeros(0, dtype=np.int64)
        self.warm_span = np.zeros((0, 2), dtype=np.int64)
        self.warm_target = np.zeros(0, dtype=np.int64)
        self.warm_lists: list[list[np.ndarray] | None] = []
        self.warm_sizes: list[int] = []
        self.all_active = np.zeros(0, dtype=np.bool_)

    def feed(self, values: np.ndarray, positions: np.ndarray, order: np.ndarray,
             bounds: np.ndarray, present: list[bool], scores: np.ndarray,
             channels: list[NumericChannel], pool: NumericChannel | None = None,
             after_alarm: AfterAlarm | None = None) -> list[tuple[int, Alarm]]:
        """Feed the batch's ``values`` (one signal, every record) to the channel of each
        record's segment: segment ``s`` holds ``order[bounds[s]:bounds[s + 1]]`` (``present``:
        whether it holds any). Writes location scores into ``scores``, then feeds them to
        ``pool`` (the pooled layer's channel of the signal: see ``fits_pool``), within the
        same compiled call. Returns (segment, alarm) pairs, the alarm's index counted within
        the segment's records; ``POOLED`` for the segment: the pool's, counted in the batch."""
        if not channels:
            return []
        self._sync(channels)
        self._free_rows(channels)
        warming = [code for code, channel in enumerate(channels)
                   if channel.reference is None and present[code]]
        for code in warming:
            self._load_warmup(code, channels[code])
        active = self._active(len(channels), warming)
        found: list[tuple[int, Alarm]] = []
        first = 0
        while True:
            counted = self.warm_count.copy() if warming else self.warm_count
            segment, stop, event = self._run(values, positions, order, bounds, first, active,
                                             scores, channels[0], pool)
            if warming:
                self._store_warmups(channels, counted)
            if event in (k.SEGMENTS_DONE, k.POOL_ALARM):
                self._release_warmups(channels)
                if event == k.POOL_ALARM and pool is not None:
                    return found + _pool_rest(pool, scores, positions, stop)
                return found
            # As NumericChannel.feed does: after an alarm its finding and relearning, after
            # a warm-up the reference; the segment's later records then go through it.
            channel = channels[segment]
            rows = order[bounds[segment]:bounds[segment + 1]]
            if event == k.SEGMENT_ALARM:
                found.append((segment, channel.take_alarm(stop - 1)))
                if after_alarm is not None:
                    after_alarm(segment, channel, rows[stop:])
            else:
                channel.finish_warmup()
            found += [(segment, Alarm(alarm.index + stop, alarm.finding)) for alarm in
                      _feed_channel(channel, values, positions, rows[stop:], scores,
                                    after_alarm, segment)]
            first = segment + 1

    def _active(self, segments: int, warming: list[int]) -> np.ndarray:
        """Which segments detect (the others warm up); all of them, the usual case, is one
        array kept between batches (the compiled call only reads it)."""
        if warming or len(self.all_active) != segments:
            active = np.ones(segments, dtype=np.bool_)
            active[warming] = False
            if not warming:
                self.all_active = active
            return active
        return self.all_active

    def _run(self, values: np.ndarray, positions: np.ndarray, order: np.ndarray,
             bounds: np.ndarray, first: int, active: np.ndarray, scores: np.ndarray,
             model: NumericChannel, pool: NumericChannel | None) -> tuple[int, int, int]:
        a = self.arrays
        p = model if pool is None else pool  # without a pool: arrays of the right types, unread
        segment, stop, event = k.run_numeric_segments(
            values, positions, order, bounds, first, active, self.knots, self.below,
            self.at_or_below, self.n_knots, self.u_min, a["ph_par"], a["ph_f"], a["ph_i"],
            model.aw_par, a["aw_s"], a["aw_totals"], a["aw_variances"], a["aw_counts"],
            a["ring_values"], a["ring_positions"], a["counters"], a["alarm"], model.scoring,
            scores, self.warm_values, self.warm_row, self.warm_count, self.warm_span,
            self.warm_target, pool is not None, p.ph_par, p.ph_f, p.ph_i, p.aw_s, p.aw_totals,
            p.aw_variances, p.aw_counts, p.ring_values, p.ring_positions, p.counters, p.alarm)
        return int(segment), int(stop), int(event)

    # ------------------------------------------------------------------ warm-ups
    def _load_warmup(self, code: int, channel: NumericChannel) -> None:
        """A warming channel's values so far into the stack, unless they are there already
        (its list is the one the stack gave it, unchanged)."""
        listed = channel.warmup_values
        row = int(self.warm_row[code])
        if row >= 0 and self.warm_lists[code] is listed and self.warm_sizes[code] == len(listed):
            return
        if row < 0:
            row = self._take_row(code)
        collected = np.concatenate(listed) if listed else np.zeros(0)
        width = max(collected.size, channel.warmup_target)
        if width > self.warm_values.shape[1]:
            self.warm_values = _widened(self.warm_values, width)
        self.warm_values[row, :collected.size] = collected
        self.warm_count[code] = collected.size
        self.warm_span[code] = (channel.warmup_first or 0, channel.warmup_last or 0)
        self.warm_target[code] = channel.warmup_target
        self.warm_lists[code], self.warm_sizes[code] = listed, len(listed)

    def _take_row(self, code: int) -> int:
        """A row of the warm-up buffer for segment ``code``: a free one, or a new one."""
        row = self.row_owner.index(-1) if -1 in self.row_owner else len(self.row_owner)
        if row == len(self.row_owner):
            self.row_owner.append(-1)
            self.warm_values = _taller(self.warm_values, len(self.row_owner))
        self.row_owner[row], self.warm_row[code] = code, row
        return row

    def _free_rows(self, channels: list[NumericChannel]) -> None:
        """Rows of segments whose warm-up ended (their channels no longer hold views of
        them: a reference replaces the warm-up list) go back to the pool."""
        if not self.row_owner:  # no row held: no warm-up since the buffer was dropped
            return
        for code in np.flatnonzero(self.warm_row[:len(channels)] >= 0).tolist():
            if channels[code].reference is not None:
                self.row_owner[int(self.warm_row[code])] = -1
                self.warm_row[code], self.warm_lists[code] = -1, None
        owned = [code for code in self.row_owner if code >= 0]
        if len(self.row_owner) > max(2 * len(owned), 8):
            self._compact(owned, channels)

    def _compact(self, owned: list[int], channels: list[NumericChannel]) -> None:
        """A buffer with the rows of the segments still warming up only (after many began
        at once, as districts do); their channels' views re-pointed."""
        buffer = self.warm_values[[int(self.warm_row[code]) for code in owned]]
        for row, code in enumerate(owned):
            self.warm_row[code] = row
            channel = channels[code]
            if self.warm_lists[code] is channel.warmup_values:  # the stack's view: new one
                channel.warmup_values = [buffer[row, :int(self.warm_count[code])]]
                self.warm_lists[code], self.warm_sizes[code] = channel.warmup_values, 1
        self.warm_values, self.row_owner = buffer, owned

    def _release_warmups(self, channels: list[NumericChannel]) -> None:
        """Warm-ups are rare (a new segment, a relearn): their buffer (2,000 values per
        segment warming up) is dropped once none is under way."""
        if self.row_owner and all(c.reference is not None for c in channels):
            self.warm_values, self.row_owner = np.zeros((0, 0)), []
            self.warm_row[:] = -1
            self.warm_lists = [None] * len(self.warm_lists)

    def _store_warmups(self, channels: list[NumericChannel], counted: np.ndarray) -> None:
        """Channels whose warm-up grew in the compiled call get it back (a view, no copy):
        their state, snapshot and reference read it there."""
        grew = self.warm_count[:len(channels)] != counted[:len(channels)]
        for code in np.flatnonzero(grew).tolist():
            channel = channels[code]
            row, count = int(self.warm_row[code]), int(self.warm_count[code])
            channel.warmup_values = [self.warm_values[row, :count]]
            channel.warmup_first = int(self.warm_span[code, 0])
            channel.warmup_last = int(self.warm_span[code, 1])
            self.warm_lists[code], self.warm_sizes[code] = channel.warmup_values, 1

    # ------------------------------------------------------------------ stacking
    def _sync(self, channels: list[NumericChannel]) -> None:
        """Stack channels not stacked yet (new segments, restored banks) and copy the
        reference tables of channels whose reference changed."""
        if not self.arrays:
            self._shape_from(channels[0])
        if len(channels) > len(self.u_min):
            self._grow(len(channels))
        for code, channel in enumerate(channels):
            if code >= len(self.channels) or self.channels[code] is not channel:
                self._attach(code, channel)
            if channel.reference is not None and self.references[code] is not channel.reference:
                self._copy_reference(code, channel)

    def _attach(self, code: int, channel: NumericChannel) -> None:
        for name in STACKED:
            own = getattr(channel, name)
            stack = self.arrays[name]
            if stack.shape[1:] != own.shape:
                raise ValueError(f"channel {channel.name}: {name} {own.shape} does not fit "
                                 f"the stack {stack.shape[1:]}")
            stack[code] = own
            setattr(channel, name, stack[code])
        while len(self.channels) <= code:
            self.channels.append(channel)
            self.references.append(None)
            self.warm_lists.append(None)
            self.warm_sizes.append(0)
        self.channels[code] = channel
        self.references[code] = None
        self.warm_lists[code] = None

    def _copy_reference(self, code: int, channel: NumericChannel) -> None:
        m = channel.knots.shape[0]
        if m > self.knots.shape[1]:
            self.knots, self.below, self.at_or_below = (
                _widened(table, m) for table in (self.knots, self.below, self.at_or_below))
        self.knots[code, :m] = channel.knots
        self.below[code, :m] = channel.below
        self.at_or_below[code, :m] = channel.at_or_below
        self.n_knots[code] = m
        self.u_min[code] = channel.u_min
        self.references[code] = channel.reference

    def _grow(self, needed: int) -> None:
        """Room for ``needed`` segments, exactly (a segment's rows are ~14 KB a signal, and
        new segments are rare); stacked channels re-pointed at the new rows."""
        capacity = needed
        for name in STACKED:
            old = self.arrays[name]
            grown = np.zeros((capacity,) + old.shape[1:], dtype=old.dtype)
            grown[:old.shape[0]] = old
            self.arrays[name] = grown
        self.knots, self.below, self.at_or_below = (
            _taller(table, capacity) for table in (self.knots, self.below, self.at_or_below))
        self.n_knots = _taller(self.n_knots, capacity)
        self.u_min = _taller(self.u_min, capacity)
        self.warm_row = np.concatenate([self.warm_row, np.full(capacity - len(self.warm_row),
                                                               -1, dtype=np.int64)])
        self.warm_count = _taller(self.warm_count, capacity)
        self.warm_span = _taller(self.warm_span, capacity)
        self.warm_target = _taller(self.warm_target, capacity)
        for code, channel in enumerate(self.channels):
            for name in STACKED:
                setattr(channel, name, self.arrays[name][code])

    def _shape_from(self, channel: NumericChannel) -> None:
        """Empty stacks shaped like ``channel``'s arrays (every segment's are alike)."""
        self.arrays = {name: np.zeros((0,) + getattr(channel, name).shape,
                                      dtype=getattr(channel, name).dtype) for name in STACKED}


def fits_pool(channel: NumericChannel) -> bool:
    """Whether the stacked call can feed the pooled ``channel``: it runs
    ``run_location_page_hinkley`` (so only when its ``feed`` would) and has a reference."""
    return channel.location_only and channel.reference is not None


def _pool_rest(pool: NumericChannel, scores: np.ndarray, positions: np.ndarray,
               stop: int) -> list[tuple[int, Alarm]]:
    """After the compiled call fed ``scores[:stop]`` to the pooled channel and it stopped at
    an alarm, as its ``feed`` goes on: that alarm, then the rest of the batch."""
    found = [(POOLED, pool.take_alarm(stop - 1))]
    rest = pool.feed(scores[stop:], positions[stop:])
    return found + [(POOLED, Alarm(alarm.index + stop, alarm.finding)) for alarm in rest]


def _feed_channel(channel: NumericChannel, values: np.ndarray, positions: np.ndarray,
                  rows: np.ndarray, scores: np.ndarray, after_alarm: AfterAlarm | None = None,
                  segment: int = -1) -> list[Alarm]:
    """One segment's records through its channel (warming up, or relearning)."""
    if not rows.size:
        return []
    out = np.full(rows.size, np.nan)
    rest: Callable[[int], np.ndarray] | None = None
    if after_alarm is not None:
        def rest(index: int) -> np.ndarray:  # the records after an alarm, as re-learned
            after_alarm(segment, channel, rows[index:])
            later: np.ndarray = values[rows[index:]]
            return later
    alarms = channel.feed(values[rows], positions[rows], out, rest)
    scores[rows] = out
    return alarms


def _widened(table: np.ndarray, columns: int) -> np.ndarray:
    wider = np.zeros((table.shape[0], columns))
    wider[:, :table.shape[1]] = table
    return wider


def _taller(table: np.ndarray, rows: int) -> np.ndarray:
    taller = np.zeros((rows,) + table.shape[1:], dtype=table.dtype)
    taller[:table.shape[0]] = table
    return taller
