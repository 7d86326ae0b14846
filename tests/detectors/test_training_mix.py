"""A champion's mix from whole event-time windows (``whole_window_counts``), and the
reference built from such counts (``CategoricalReference.from_counts``,
``Reference.with_composition``)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.composition import MISSING, WindowTally, whole_window_counts
from detectors.errors import DetectorConfigError
from detectors.reference import MIN_REFERENCE_VALUES, CategoricalReference, Reference

DAY_MS = 86_400_000


def test_only_windows_strictly_inside_the_rows_count() -> None:
    # Day 0 and day 3 are the window's edges (held in part); days 1 and 2 count.
    times = np.array([0, 5, DAY_MS + 1, DAY_MS + 2, 2 * DAY_MS, 3 * DAY_MS + 7])
    counties = ["A", "A", "B", "A", "B", "B"]
    counts, windows = whole_window_counts({"county": counties}, times, 86_400)
    assert windows == 2
    assert counts == {"county": {"A": 1, "B": 2}}


def test_rows_without_an_event_time_are_left_out_and_missing_values_counted() -> None:
    times = np.array([0, -1, DAY_MS, DAY_MS + 5, 2 * DAY_MS])
    counts, windows = whole_window_counts({"county": ["A", "A", "", None, "B"]}, times,
                                          86_400)
    assert windows == 1
    assert counts == {"county": {MISSING: 2}}


@pytest.mark.parametrize("times", [[], [-1, -1], [0, 10, DAY_MS]])
def test_rows_within_two_windows_have_no_whole_window(times: list[int]) -> None:
    counts, windows = whole_window_counts({"county": ["A"] * len(times)},
                                          np.array(times, dtype=np.int64), 86_400)
    assert windows == 0
    assert counts == {"county": {}}


def test_the_same_rows_in_any_order_give_the_same_counts() -> None:
    rng = np.random.default_rng(3)
    times = rng.integers(0, 5 * DAY_MS, 2_000)
    counties = rng.choice(["A", "B", "C"], 2_000)
    order = rng.permutation(2_000)
    assert whole_window_counts({"county": counties}, times, 86_400) == \
        whole_window_counts({"county": counties[order]}, times[order], 86_400)


def test_a_reference_from_counts_is_the_reference_from_the_values() -> None:
    values = ["A"] * 60 + ["B"] * 30 + ["C"]
    assert CategoricalReference.from_counts({"A": 60, "B": 30, "C": 1, "D": 0}) == \
        CategoricalReference.from_values(values)
    with pytest.raises(DetectorConfigError):
        CategoricalReference.from_counts({"A": MIN_REFERENCE_VALUES - 1})


def test_the_training_mix_replaces_the_holdout_shares() -> None:
    holdout = Reference.from_columns({"county": ["A"] * 90 + ["B"] * 10,
                                      "levy_rate": np.linspace(0.01, 0.02, 100)})
    mixed = holdout.with_composition({"county": {"A": 50, "B": 50}}, windows=3)
    assert mixed.categorical["county"].shares == {"A": 0.5, "B": 0.5}
    assert mixed.numeric == holdout.numeric


@pytest.mark.parametrize("counts, windows", [({"county": {"A": 50, "B": 50}}, 0),
                                             ({"county": {"A": 3}}, 2)])
def test_no_whole_window_or_too_few_values_leave_no_shares(counts, windows) -> None:
    # Composition then takes the stream's own first whole window.
    holdout = Reference.from_columns({"county": ["A"] * 90 + ["B"] * 10})
    assert "county" not in holdout.with_composition(counts, windows).categorical


def test_a_tally_of_chunks_is_the_tally_of_their_rows() -> None:
    # A reader scans a partition backwards in chunks: the whole windows are those inside the
    # rows of every chunk, not of each.
    rng = np.random.default_rng(5)
    times = np.sort(rng.integers(0, 6 * DAY_MS, 3_000))
    counties = rng.choice(["A", "B", "C", ""], 3_000)
    tally = WindowTally(86_400)
    for stop in (3_000, 2_000, 700, 100):  # newest first, as the reader goes
        start = {3_000: 2_000, 2_000: 700, 700: 100, 100: 0}[stop]
        tally.add({"county": counties[start:stop]}, times[start:stop])
    counts, windows = tally.whole()
    assert (counts, len(windows)) == whole_window_counts({"county": counties}, times, 86_400)
    assert windows == {1, 2, 3, 4}


def test_a_few_stray_dates_do_not_make_a_partial_day_whole() -> None:
    # Days 10 and 14 are partial; a record dated 1970 and one dated 2079 (a default date, a
    # typo in a year) would otherwise make them look whole.
    rng = np.random.default_rng(8)
    times = np.sort(rng.integers(10 * DAY_MS + DAY_MS // 2, 14 * DAY_MS + DAY_MS // 2, 5_000))
    counties = rng.choice(["A", "B"], 5_000)
    alone = whole_window_counts({"county": counties}, times, 86_400)
    strays = np.array([0, 40_000 * DAY_MS])
    with_strays = whole_window_counts({"county": np.concatenate([counties, ["C", "C"]])},
                                      np.concatenate([times, strays]), 86_400)
    assert alone[1] == 3
    assert with_strays == alone
