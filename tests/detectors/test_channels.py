"""Every channel kind resumes from its ``state()`` exactly, through ``from_state()`` alone, and
refuses state that does not fit it."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import kernels as k
from detectors.channels import CategoricalChannel, Channel, NumericChannel
from detectors.config import DetectorSettings
from detectors.errors import SnapshotError
from detectors.state import ChannelState

SETTINGS = DetectorSettings(numeric_signals=("x",), categorical_signals=("county",),
                            prediction_signals=(), performance_signals=(),
                            warmup_records=200, relearn_records=200, min_instances=30)
N = 3000


def column(kind: type[Channel]) -> np.ndarray:
    rng = np.random.default_rng(5)
    if kind is NumericChannel:
        values = rng.normal(0.0, 1.0, N)
        values[1500:] += 1.5
        return values
    names = np.array(["A", "B", "C", "D"], dtype=object)
    return names[np.where(np.arange(N) < 1500, rng.integers(0, 2, N), rng.integers(0, 4, N))]


def feed(channel: Channel, values: np.ndarray, start: int, stop: int) -> list[int]:
    positions = np.arange(N, dtype=np.int64)
    alarms = []
    for first in range(start, stop, 250):
        last = min(first + 250, stop)
        alarms += [first + a.index for a in channel.feed(values[first:last],
                                                           positions[first:last])]
    return alarms


@pytest.mark.parametrize("kind", [NumericChannel, CategoricalChannel])
@pytest.mark.parametrize("cut", [100, 1000, 1600])
def test_a_channel_resumes_from_its_state(kind: type[NumericChannel | CategoricalChannel],
                                          cut: int) -> None:
    values = column(kind)
    name = "x" if kind is NumericChannel else "county"
    straight = kind(name, SETTINGS, None)
    expected = feed(straight, values, 0, N)
    assert expected, "the stream must make the channel fire"
    first = kind(name, SETTINGS, None)
    before = feed(first, values, 0, cut)
    resumed = kind.from_state(name, SETTINGS, first.reference_part(), first.state())
    assert before + feed(resumed, values, cut, N) == expected
    assert resumed.status() == straight.status()


def test_state_that_does_not_fit_is_refused() -> None:
    channel = NumericChannel("x", SETTINGS, None)
    feed(channel, column(NumericChannel), 0, 100)
    state = channel.state()
    reference = channel.reference_part()
    extra = ChannelState(state.values, {**state.arrays, "surprise": np.zeros(3)})
    with pytest.raises(SnapshotError, match="unexpected array") as caught:
        NumericChannel.from_state("x", SETTINGS, reference, extra)
    assert caught.value.reason == "shape"
    arrays = {**state.arrays, "aw_s": state.arrays["aw_s"].copy()}
    arrays["aw_s"][k.AW_WIDTH] += 1.0  # more values than its buckets hold
    with pytest.raises(SnapshotError, match="ADWIN state out of range") as caught:
        NumericChannel.from_state("x", SETTINGS, reference, ChannelState(state.values, arrays))
    assert caught.value.reason == "shape"
    values = {**state.values, "warmup_target": 0}
    with pytest.raises(SnapshotError, match="warmup_target") as caught:
        NumericChannel.from_state("x", SETTINGS, reference, ChannelState(values, state.arrays))
    assert caught.value.reason == "header"
