"""Directories the commands write to, checked at start rather than at first use."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` if needed and write a file in it; raises the ``OSError`` that says why
    it cannot be used (a file in the way, no permission, a read-only or full disk)."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way, not a directory",
                                 str(path))
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
        pass
