"""Snapshot and restore: stopping anywhere and resuming changes nothing."""

from __future__ import annotations

import dataclasses
import functools
import json
import resource
import struct
import zlib

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import DetectorBank, DetectorSettings, Reference, SnapshotError
from detectors.snapshot import decode, encode
from detectors.synthetic import stationary_batch

SETTINGS = DetectorSettings(warmup_records=300, relearn_records=300, cooldown_records=150,
                            min_instances=30)
N = 4000


@functools.cache
def stream() -> tuple[dict, np.ndarray]:
    """Warm-up, then changes in several signals and kinds, with missing values."""
    rng = np.random.default_rng(42)
    columns = stationary_batch(SETTINGS, N, rng)
    columns["levy_rate"][1000:] *= 1.3
    columns["prediction"][1800:] *= 2.0
    columns["abs_error"][::4] = np.nan
    columns["abs_error"][2500:] *= 3.0
    columns["tax_district"][3000:3600:7] = "district-new"
    columns["county"][::11] = None
    return columns, np.arange(10, 10 + 3 * N, 3, dtype=np.int64)  # gapped positions


def run(bank: DetectorBank, start: int, stop: int, batch: int) -> list[dict]:
    columns, positions = stream()
    decisions = []
    for first in range(start, stop, batch):
        last = min(first + batch, stop)
        decisions += bank.update({k: v[first:last] for k, v in columns.items()},
                                 positions[first:last])
    return [d.to_dict() for d in decisions]


@functools.cache
def uninterrupted() -> tuple[list[dict], bytes]:
    bank = DetectorBank(SETTINGS)
    decisions = run(bank, 0, N, 500)
    return decisions, encode(bank)


def test_the_stream_produces_decisions_of_every_kind() -> None:
    decisions, _ = uninterrupted()
    assert {d["kind"] for d in decisions} == {"distribution", "prediction", "performance"}


@settings(max_examples=30, deadline=None)
@given(stop=st.integers(0, N), batch_before=st.sampled_from([13, 64, 500, 4000]),
       batch_after=st.sampled_from([3, 97, 1000, 4000]))
def test_restore_anywhere_gives_the_same_decisions(stop: int, batch_before: int,
                                                   batch_after: int) -> None:
    expected, final_snapshot = uninterrupted()
    first = DetectorBank(SETTINGS)
    before = run(first, 0, stop, batch_before)
    restored = decode(encode(first), SETTINGS)
    after = run(restored, stop, N, batch_after)
    assert before + after == expected
    assert encode(restored) == final_snapshot


def test_snapshot_of_a_twelve_signal_bank_is_small() -> None:
    _, snapshot = uninterrupted()
    assert snapshot.startswith(b"LDSNAP")
    assert len(snapshot) < 200_000


def test_garbage_is_refused() -> None:
    with pytest.raises(SnapshotError, match="magic"):
        decode(b"nonsense", SETTINGS)
    _, snapshot = uninterrupted()
    with pytest.raises(SnapshotError, match="format 9"):
        decode(snapshot[:6] + b"\x09\x00" + snapshot[8:], SETTINGS)
    with pytest.raises(SnapshotError, match="corrupt"):
        decode(snapshot[:40], SETTINGS)


def test_new_settings_keep_the_references_and_restart_detection() -> None:
    bank = DetectorBank(SETTINGS)
    run(bank, 0, 1000, 500)
    changed = dataclasses.replace(SETTINGS, cooldown_records=999)
    restored = decode(encode(bank), changed)
    assert restored.settings == changed
    assert restored.reference() == bank.reference()
    assert isinstance(restored.reference(), Reference)


# --- hostile and damaged snapshots: SnapshotError, never anything else -----------------------

def parts(snapshot: bytes) -> tuple[dict, bytes]:
    """The JSON header and the raw array bytes of a snapshot."""
    body = zlib.decompress(snapshot[8:])
    (length,) = struct.unpack_from("<I", body)
    return orjson.loads(body[4:4 + length]), body[4 + length:]


def forge(header: dict | bytes, arrays: bytes, declared: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(raw) if declared is None else declared
    return b"LDSNAP\x01\x00" + zlib.compress(struct.pack("<I", length) + raw + arrays)


@functools.cache
def midway() -> bytes:
    """A bank mid-stream: references set, detectors running, a categorical warm-up done."""
    bank = DetectorBank(SETTINGS)
    run(bank, 0, 1500, 500)
    return encode(bank)


def refused(data: bytes, reason: str) -> SnapshotError:
    with pytest.raises(SnapshotError) as caught:
        decode(data, SETTINGS)
    assert caught.value.reason == reason, caught.value
    return caught.value


def with_array(header: dict, arrays: bytes, channel: str, key: str,
               value: np.ndarray) -> bytes:
    """The snapshot with one array's bytes replaced (same size)."""
    offset = 0
    for name, info in header["channels"].items():
        for array_key, _, shape in info["arrays"]:
            size = int(np.prod(shape)) * 8
            if (name, array_key) == (channel, key):
                replaced = arrays[:offset] + value.tobytes() + arrays[offset + size:]
                return forge(header, replaced)
            offset += size
    raise AssertionError(f"no array {channel}/{key}")


def test_truncated_bad_magic_and_bad_version_are_refused() -> None:
    snapshot = midway()
    refused(snapshot[: len(snapshot) // 2], "corrupt")
    refused(snapshot[:7], "corrupt")
    refused(b"PKZIP" + snapshot[5:], "magic")
    refused(snapshot[:6] + b"\x02\x00" + snapshot[8:], "version")


def test_a_zip_bomb_is_refused_without_inflating_it() -> None:
    header, arrays = parts(midway())
    packer = zlib.compressobj(9)
    chunks = [b"LDSNAP\x01\x00", packer.compress(struct.pack("<I", len(orjson.dumps(header)))
                                                 + orjson.dumps(header) + arrays)]
    zeros = bytes(1 << 20)
    chunks += [packer.compress(zeros) for _ in range(400)]  # 400 MB of trailing zeros
    bomb = b"".join(chunks) + packer.flush()
    assert len(bomb) < 1_000_000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused(bomb, "corrupt")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 100_000, f"peak memory grew by {grown_kib} KiB"


def test_huge_declared_lengths_are_refused() -> None:
    header, arrays = parts(midway())
    refused(forge(header, arrays, declared=0xFFFFFFFF), "too_large")
    header["channels"]["levy_rate"]["arrays"][0][2] = [2 ** 40, 2 ** 20]
    refused(forge(header, arrays), "shape")


def test_non_json_and_mistyped_headers_are_refused() -> None:
    header, arrays = parts(midway())
    refused(forge(b"{not json", arrays), "header")
    refused(forge(b"[1, 2, 3]", arrays), "header")
    for path, value in [(("records_seen",), "many"), (("cooldown_until",), []),
                        (("last_position",), 1.5), (("channels", "county"), None),
                        (("reference", "numeric", "levy_rate", "knots"), ["a", "b"]),
                        (("reference", "numeric", "levy_rate", "below"), [0.5]),
                        (("reference", "categorical", "county", "shares"), [[1, 2]]),
                        (("channels", "levy_rate", "warmup_target"), True),
                        (("channels", "county", "new_names"), [["x"]] * 3)]:
        mutated = orjson.loads(orjson.dumps(header))
        target = mutated
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        refused(forge(mutated, arrays), "header")


def test_arrays_that_do_not_fit_the_detectors_are_refused() -> None:
    header, arrays = parts(midway())
    wrong_shape = orjson.loads(orjson.dumps(header))
    manifest = wrong_shape["channels"]["levy_rate"]["arrays"]
    manifest[0][2] = [manifest[0][2][0] + 1, manifest[0][2][1]]
    refused(forge(wrong_shape, arrays + bytes(8 * manifest[0][2][1])), "shape")
    wrong_dtype = orjson.loads(orjson.dumps(header))
    wrong_dtype["channels"]["county"]["arrays"][0][1] = "|O"
    refused(forge(wrong_dtype, arrays), "shape")
    refused(forge(header, arrays + b"\x00" * 8), "corrupt")  # trailing bytes
    # Values the compiled loops would use as indices, unchecked:
    head = np.array([5, 10 ** 9], dtype="<i8")  # count, ring head far outside the ring
    refused(with_array(header, arrays, "levy_rate", "counters", head), "shape")
    refused(with_array(header, arrays, "county", "counters",
                       np.array([5, -1, 0], dtype="<i8")), "shape")
    buckets = np.full(48, 99, dtype="<i8")
    refused(with_array(header, arrays, "levy_rate", "aw_counts", buckets), "shape")
    # A NaN CUSUM would send the categorical crossing search into an endless loop.
    [shape] = [s for key, _, s in header["channels"]["county"]["arrays"] if key == "cusum"]
    refused(with_array(header, arrays, "county", "cusum", np.full(shape, np.nan)), "shape")


def json_values() -> st.SearchStrategy:
    scalars = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(
        allow_nan=False) | st.text(max_size=8)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def leaf_paths(value: object, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in leaf_paths(item, (*path, key))]
    if isinstance(value, list) and value:
        return [p for index, item in enumerate(value) for p in leaf_paths(item, (*path, index))]
    return [path]


def restores_or_refuses(data: bytes) -> None:
    """Either SnapshotError, or a bank that can take the next batch."""
    try:
        bank = decode(data, SETTINGS)
    except SnapshotError:
        return
    columns, _ = stream()
    start = (bank.last_position or 0) + 1
    bank.update({name: column[:50] for name, column in columns.items()},
                np.arange(start, start + 50, dtype=np.int64))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_only_snapshot_errors(data: bytes) -> None:
    restores_or_refuses(data)
    restores_or_refuses(b"LDSNAP\x01\x00" + data)
    restores_or_refuses(b"LDSNAP\x01\x00" + zlib.compress(data))


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10 ** 6), byte=st.integers(0, 255),
       compressed=st.booleans())
def test_flipped_bytes_raise_only_snapshot_errors(position: int, byte: int,
                                                  compressed: bool) -> None:
    snapshot = midway()
    data = bytearray(snapshot if compressed else zlib.decompress(snapshot[8:]))
    data[position % len(data)] = byte
    restores_or_refuses(bytes(data) if compressed else snapshot[:8] + zlib.compress(data))


@settings(max_examples=300, deadline=None)
@given(choice=st.integers(0, 10 ** 6), value=json_values())
def test_any_header_field_replaced_raises_only_snapshot_errors(choice: int,
                                                               value: object) -> None:
    header, arrays = parts(midway())
    paths = leaf_paths(header)
    path = paths[choice % len(paths)]
    target = header
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    restores_or_refuses(forge(header, arrays))
