"""Lazy name resolution through entry-point groups.

The core never imports ``passes`` or ``targets``; names are resolved through
the entry-point groups ``photocomp.targets`` and ``photocomp.passes`` that a
distribution declares in its ``pyproject.toml``.

:func:`quote` writes a name (or any value) someone passed in into an error
message, bounded in length, so that a huge or unprintable input cannot make
the message huge or unreadable.
"""

from __future__ import annotations

import functools
from importlib import metadata

from photocomp.core.errors import PhotocompError

__all__ = ["entry_points", "quote", "QUOTE_LIMIT"]

QUOTE_LIMIT = 80
"""Characters of an input that error messages quote before cutting it off with ``…``."""


@functools.cache
def _group(group: str) -> tuple[metadata.EntryPoint, ...]:
    return tuple(metadata.entry_points(group=group))


def entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    """``{name: EntryPoint}`` of an entry-point group (first declaration of a name wins)."""
    out: dict[str, metadata.EntryPoint] = {}
    for ep in _group(group):
        out.setdefault(ep.name, ep)
    if not out:
        raise PhotocompError(
            f"no entry points in group {group!r}: photocomp's distribution metadata is missing. "
            "Install the project (pip install -e .) rather than importing it from a source tree."
        )
    return out


def quote(value, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters.
    A longer string is quoted up to ``limit`` characters, then ``…`` and its
    length; any other value's ``repr`` is cut after ``limit`` characters (a
    value whose ``repr`` fails is named by its type).

    Example:
      >>> quote("clements-4")
      "'clements-4'"
      >>> quote("x" * 100, limit=5)
      "'xxxxx'… (100 characters)"
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}… ({len(value)} characters)"
    try:
        text = repr(value)
    except Exception:  # e.g. an int too long to print
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "…"
