"""Snapshot format of a ``DetectorBank`` (no pickle).

    b"LDSNAP" | u16 format version | zlib( u32 header length | header | array bytes )

The header is JSON (orjson): settings, bank counters, and per channel its reference, warm-up
bookkeeping, never-seen category names and a manifest of its state arrays (name, dtype,
shape); the arrays follow in manifest order as little-endian raw bytes. Restoring rebuilds the
channels from the settings, then overwrites their state from the arrays.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from detectors.channels import CategoricalChannel, NumericChannel
from detectors.config import DetectorSettings
from detectors.errors import SnapshotError
from detectors.reference import Reference

if TYPE_CHECKING:
    from detectors.bank import DetectorBank

MAGIC = b"LDSNAP"
FORMAT_VERSION = 1
DTYPES = {"float64": "<f8", "int64": "<i8"}


def encode(bank: DetectorBank) -> bytes:
    header: dict[str, Any] = {
        "settings": bank.settings.to_dict(),
        "records_seen": bank.records_seen,
        "last_position": bank.last_position,
        "cooldown_until": bank.cooldown_until,
        "absorbed_alarms": bank.absorbed_alarms,
        "reference": bank.reference().to_dict(),
        "channels": {},
    }
    blobs: list[bytes] = []
    for name, channel in bank.channels.items():
        manifest = []
        for key, array in channel.state_arrays().items():
            dtype = DTYPES[array.dtype.name]
            manifest.append([key, dtype, list(array.shape)])
            blobs.append(np.ascontiguousarray(array, dtype=dtype).tobytes())
        header["channels"][name] = {"arrays": manifest, **_channel_extras(channel)}
    header_bytes = orjson.dumps(header)
    body = struct.pack("<I", len(header_bytes)) + header_bytes + b"".join(blobs)
    return MAGIC + struct.pack("<H", FORMAT_VERSION) + zlib.compress(body, 6)


def _channel_extras(channel: NumericChannel | CategoricalChannel) -> dict[str, Any]:
    extras: dict[str, Any] = {"warmup_first": channel.warmup_first,
                              "warmup_last": channel.warmup_last}
    if isinstance(channel, CategoricalChannel):
        extras["warmup_names"] = channel.warmup_names
        extras["new_names"] = [list(item) for item in channel.new_names]
    else:
        extras["warmup_target"] = channel.warmup_target
    return extras


def decode(data: bytes, settings: DetectorSettings) -> DetectorBank:
    from detectors.bank import DetectorBank

    header, arrays = _parse(data)
    reference = Reference.from_dict(header["reference"])
    if DetectorSettings.from_dict(header["settings"]) != settings:
        return DetectorBank(settings, reference)  # new settings: keep references only
    bank = DetectorBank(settings, reference)
    bank.records_seen = int(header["records_seen"])
    bank.last_position = header["last_position"]
    bank.cooldown_until = {k: int(v) for k, v in header["cooldown_until"].items()}
    bank.absorbed_alarms = {k: int(v) for k, v in header["absorbed_alarms"].items()}
    for name, channel in bank.channels.items():
        info = header["channels"][name]
        channel.warmup_first, channel.warmup_last = info["warmup_first"], info["warmup_last"]
        if isinstance(channel, CategoricalChannel):
            channel.warmup_names = list(info["warmup_names"])
            channel.new_names = [(str(n), int(p)) for n, p in info["new_names"]]
        else:
            channel.warmup_target = int(info["warmup_target"])
        channel.load_arrays(arrays[name])
    return bank


def _parse(data: bytes) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    if not data.startswith(MAGIC):
        raise SnapshotError("not a detector-bank snapshot (bad magic bytes)")
    (version,) = struct.unpack_from("<H", data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise SnapshotError(f"detector snapshot format {version} is not supported "
                            f"(this build reads {FORMAT_VERSION})")
    try:
        body = zlib.decompress(data[len(MAGIC) + 2:])
        (length,) = struct.unpack_from("<I", body, 0)
        header = orjson.loads(body[4:4 + length])
    except (zlib.error, struct.error, orjson.JSONDecodeError) as error:
        raise SnapshotError(f"corrupt detector snapshot: {error}") from None
    offset = 4 + length
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for name, info in header["channels"].items():
        arrays[name] = {}
        for key, dtype, shape in info["arrays"]:
            size = int(np.prod(shape)) * 8
            arrays[name][key] = np.frombuffer(body, dtype=dtype, count=size // 8,
                                              offset=offset).reshape(shape).copy()
            offset += size
    return header, arrays
