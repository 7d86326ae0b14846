"""levydrift.commands.retraining: what a retrain from a file trains on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from levydrift.commands.retraining import file_mix, newest_labelled


def roll_file() -> tuple[pd.DataFrame, np.ndarray]:
    """Five counties' rolls one after another (the file's order), each spanning the same
    days, every third row without its levy; and their event times as RFC 3339 text."""
    counties = np.repeat(["Benton", "Franklin", "Grant", "Walla Walla", "Yakima"], 300)
    day = np.tile(np.arange(300), 5)
    levy = np.where(np.arange(counties.size) % 3 == 0, np.nan, day.astype(float))
    times = np.array([f"2026-01-01T{d // 60:02d}:{d % 60:02d}:00.000Z" for d in day])
    return pd.DataFrame({"county": counties, "day": day, "actual_levy_amount": levy}), times


def test_the_newest_rows_of_a_file_of_county_rolls_hold_every_county() -> None:
    frame, times = roll_file()
    window = newest_labelled(frame, times, 500)
    assert len(window) == 500
    assert window["actual_levy_amount"].notna().all()
    assert window["county"].value_counts().to_dict() == dict.fromkeys(
        ["Benton", "Franklin", "Grant", "Walla Walla", "Yakima"], 100)  # not the last two
    assert window["day"].min() >= 150  # the newest by event time, oldest first
    assert window["day"].is_monotonic_increasing


def test_without_event_times_the_file_order_decides() -> None:
    frame, _ = roll_file()
    window = newest_labelled(frame, None, 500)
    assert set(window["county"]) == {"Grant", "Walla Walla", "Yakima"}  # the file's last


def test_a_record_twice_in_a_file_is_one_training_row_its_last() -> None:
    frame = pd.DataFrame({"county": ["Grant"] * 4, "actual_levy_amount": [1.0, 2.0, 3.0, 4.0]})
    times = np.array(["2026-01-01T00:00:00.000Z"] * 4)
    window = newest_labelled(frame, times, 10, np.array(["a", "b", "a", "c"]))
    assert window["actual_levy_amount"].tolist() == [2.0, 3.0, 4.0]


def test_a_files_mix_counts_every_row_from_the_oldest_trained_on() -> None:
    day = 86_400_000
    times = np.array([0, day, 2 * day, 2 * day + 5, 3 * day, 4 * day, 5 * day])
    county = np.array(["old", "a", "b", "b", "c", "d", "e"], dtype=object)
    trained = np.array([2, 5])  # labelled rows the window took: from day 2 on
    counts, windows = file_mix({"county": county}, times, trained, 86_400)
    # Days 2-5 are its span; 3 and 4 lie wholly inside: unlabelled rows count too.
    assert (counts, windows) == ({"county": {"c": 1, "d": 1}}, 2)
    undated = times.copy()
    undated[5] = -1  # a trained row without an event time marks no span
    assert file_mix({"county": county}, undated, trained, 86_400) == \
        ({"county": {"c": 1}}, 1)
