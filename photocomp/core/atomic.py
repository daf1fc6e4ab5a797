"""Atomic file writes: write to a temporary file in the destination folder, then rename.

A failure at any point (including Ctrl-C) removes the temporary file and
leaves any existing destination untouched, so nothing half-written is ever
left on disk. The file gets the permissions a plain ``open(path, "w")``
would give it (``0o666`` less the umask; ``mkstemp`` alone would leave
``0o600``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from photocomp.core.errors import PhaseMapFileError

__all__ = ["atomic_write"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable) -> str:
    """Call ``write(binary_file)`` on a temporary file, fsync it, then ``os.replace`` it onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PhaseMapFileError(f"path's folder must exist; got {folder!r} (from path {path!r})")
    fd, tmp = tempfile.mkstemp(prefix=".photocomp-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
