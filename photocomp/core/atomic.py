"""Atomic file writes: write to a temporary file in the destination folder, then rename.

A failure at any point (including Ctrl-C) removes the temporary file and
leaves any existing destination untouched, so nothing half-written is ever
left on disk. The file gets the permissions a plain ``open(path, "w")``
would give it (``0o666`` less the umask; ``mkstemp`` alone would leave
``0o600``).

Errors are typed: a path that cannot name a file (empty, containing a NUL
byte, naming a folder) is an :class:`InvalidInputError`; a missing folder and
every operating-system failure on the way (permission denied, read-only file
system, disk full, ...) is a :class:`PhaseMapFileError` that names ``path``
and the reason, with the ``OSError`` as its ``__cause__``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from photocomp.core.errors import InvalidInputError, PhaseMapFileError

__all__ = ["atomic_write", "quote_path", "os_reason"]

PATH_QUOTE_LIMIT = 120
"""Characters of a path that messages quote; a longer one keeps its start and its end (the file name)."""


def quote_path(path: object) -> str:
    """``repr(path)`` for an error message, bounded: a long path keeps its start and end around ``…``."""
    text = repr(os.fspath(path)) if isinstance(path, (str, bytes, os.PathLike)) else repr(path)
    if len(text) <= PATH_QUOTE_LIMIT:
        return text
    half = PATH_QUOTE_LIMIT // 2
    return f"{text[:half]}…{text[-half:]} ({len(text)} characters)"


def os_reason(exc: OSError) -> str:
    """A short reason for an ``OSError``: its ``strerror`` (e.g. ``Permission denied``), else its text."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return reason if len(reason) <= 200 else reason[:200] + "…"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable) -> str:
    """Call ``write(binary_file)`` on a temporary file, fsync it, then ``os.replace`` it onto ``path``.

    Raises:
      InvalidInputError: ``path`` is empty, contains a NUL byte or names a folder.
      PhaseMapFileError: the folder is missing, or the operating system refused
        (permission, read-only file system, disk full, ...); no temporary file
        is left behind.
    """
    path = os.fspath(path)
    q = quote_path(path)
    if isinstance(path, bytes):
        raise InvalidInputError(f"path must be a str or os.PathLike naming a file; got bytes {q}")
    if not path:
        raise InvalidInputError(f"path must name a file; got an empty path {q}")
    if "\0" in path:
        raise InvalidInputError(f"path must not contain a NUL byte; got {q}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PhaseMapFileError(f"path's folder must exist; got {quote_path(folder)} (from path {q})")
    if os.path.isdir(path):
        raise InvalidInputError(f"path must name a file, not a folder; got {q}, which is a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".photocomp-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise PhaseMapFileError(f"cannot write path {q}: {os_reason(exc)} (creating a file in its folder)") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise PhaseMapFileError(f"cannot write path {q}: {os_reason(exc)}") from exc
        raise
    return path
