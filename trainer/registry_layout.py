"""Where the registry's files are, the per-model lock, and the file writes every part of the
registry shares (atomic JSON replacement, single-write appends, directory fsyncs)."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from levydrift.errors import RegistryError


def utc_now() -> str:
    """RFC 3339 UTC time with milliseconds, the registry's (and the events') time format."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RegistryLayout:
    """The directories under ``root`` (``<name>/versions/<n>``) and the lock of each model."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._held = threading.local()  # per thread: how deep each model's lock is held

    def model_dir(self, name: str) -> Path:
        return self.root / name

    def version_dir(self, name: str, version: int) -> Path:
        return self.model_dir(name) / "versions" / str(version)

    def model_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir())

    def versions(self, name: str) -> list[int]:
        """Complete versions of ``name``, ascending."""
        directory = self.model_dir(name) / "versions"
        if not directory.is_dir():
            return []
        return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())

    def require_model(self, name: str) -> None:
        """``RegistryError`` naming the models there are, when ``name`` is not one of them."""
        if not (self.model_dir(name) / "versions").is_dir():
            known = ", ".join(self.model_names()) or "none yet"
            raise RegistryError(f"no model {name!r} in the registry {self.root} "
                                f"(models: {known})")

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Exclusive use of model ``name`` across processes (``flock``) and threads; re-entrant
        in the thread that holds it, so a holder can call any method."""
        depth = getattr(self._held, name, 0)
        if depth:
            setattr(self._held, name, depth + 1)
            try:
                yield
            finally:
                setattr(self._held, name, depth)
            return
        try:
            self.model_dir(name).mkdir(parents=True, exist_ok=True)
            handle = open(self.model_dir(name) / ".lock", "a")  # noqa: SIM115 (closed below)
        except OSError as error:
            raise RegistryError(unwritable(self.root, error)) from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            setattr(self._held, name, 1)
            try:
                yield
            finally:
                setattr(self._held, name, 0)
                fcntl.flock(handle, fcntl.LOCK_UN)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON document at ``path``; ``{}`` when there is none."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise RegistryError(f"{path} is not valid JSON: {error}") from None


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write to a temporary file beside ``path``, fsync, then ``os.replace``: readers see the
    old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(temporary, "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write (O_APPEND) and fsync it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (line + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unwritable(root: Path, error: OSError) -> str:
    """The one line for a registry the file system refuses to write."""
    where = f" ({error.filename})" if error.filename else ""
    return (f"cannot write to the model registry {root}: {error.strerror or error}{where}; "
            "set registry.root (or --registry) to a writable directory with free space")
