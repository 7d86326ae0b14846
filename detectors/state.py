"""A channel's saved state, and the checks that make state read back from untrusted bytes
safe to hand to compiled loops. Checks raise ``SnapshotError`` with a stable ``reason``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.errors import SnapshotError

# Manifest dtype codes: the arrays are stored little-endian whatever the machine.
DTYPES = {"float64": "<f8", "int64": "<i8"}
# The same keyed by dtype: ``dtype.name`` is computed in Python on each access, and a restore
# asks it of every array of every channel of every segment.
CODES = {np.dtype(name): code for name, code in DTYPES.items()}


@dataclass(frozen=True)
class ChannelState:
    """Everything a channel needs to resume: plain values (JSON-able, in a fixed order) and
    state arrays (float64/int64, in a fixed order)."""

    values: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ArraySpec:
    """Which arrays a channel's state may hold: dtype code and per-dimension bounds."""

    dtype: str
    low: tuple[int, ...]
    high: tuple[int, ...]
    required: bool = True

    @classmethod
    def exactly(cls, array: np.ndarray) -> ArraySpec:
        return cls(CODES[array.dtype], array.shape, array.shape)

    def fits(self, dtype: str, shape: tuple[int, ...]) -> bool:
        return (dtype == self.dtype and len(shape) == len(self.low)
                and all(lo <= n <= hi for lo, n, hi in zip(self.low, shape, self.high,
                                                            strict=True)))


def check_layout(channel: str, specs: Mapping[str, ArraySpec],
                 layout: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
    """Every array known, of the right dtype and shape, none required missing."""
    for key, (dtype, shape) in layout.items():
        check_array(channel, specs, key, dtype, shape)
    check_complete(channel, specs, layout)


def check_array(channel: str, specs: Mapping[str, ArraySpec], key: str, dtype: str,
                shape: tuple[int, ...]) -> None:
    spec = specs.get(key)
    if spec is None:
        raise SnapshotError(f"channel {channel}: unexpected array {key}", "shape")
    if not spec.fits(dtype, shape):
        raise SnapshotError(f"channel {channel}: array {key} is {dtype}{list(shape)}, "
                            "which does not fit the detectors", "shape")


def check_complete(channel: str, specs: Mapping[str, ArraySpec], keys: Iterable[str]) -> None:
    missing = {key for key, spec in specs.items() if spec.required} - set(keys)
    if missing:
        raise SnapshotError(f"channel {channel}: arrays {sorted(missing)} missing", "shape")


def layout_of(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {key: (CODES.get(array.dtype, array.dtype.str), array.shape)
            for key, array in arrays.items()}


def check_numbers(channel: str, arrays: Mapping[str, np.ndarray],
                  finite: frozenset[str]) -> None:
    """No NaN anywhere (a NaN CUSUM sends the categorical crossing search into an endless
    loop), and no infinity in the ``finite`` arrays (where the detectors never put one)."""
    for key, array in arrays.items():
        if array.dtype.kind != "f":
            continue
        if np.isnan(array).any() or (key in finite and not np.isfinite(array).all()):
            raise SnapshotError(f"channel {channel}: array {key} holds NaN or infinite values",
                                "shape")


# ------------------------------------------------------------------ JSON values
def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SnapshotError(f"detector snapshot {what} is not an object", "header")
    return value


def json_int(value: Any, what: str, low: int = -(2 ** 63), high: int = 2 ** 63 - 1) -> int:
    if not is_int(value) or not low <= value <= high:
        raise SnapshotError(f"detector snapshot {what} must be an integer in [{low}, {high}]",
                            "header")
    return int(value)


def json_optional_int(value: Any, what: str) -> int | None:
    return None if value is None else json_int(value, what)
