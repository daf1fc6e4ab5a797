"""Lazy name resolution through entry-point groups.

The core never imports ``passes`` or ``targets``; names are resolved through
the entry-point groups ``photocomp.targets`` and ``photocomp.passes`` that a
distribution declares in its ``pyproject.toml``.
"""

from __future__ import annotations

import functools
from importlib import metadata

from photocomp.core.errors import PhotocompError

__all__ = ["entry_points"]


@functools.cache
def _group(group: str) -> tuple:
    return tuple(metadata.entry_points(group=group))


def entry_points(group: str) -> dict:
    """``{name: EntryPoint}`` of an entry-point group (first declaration of a name wins)."""
    out = {}
    for ep in _group(group):
        out.setdefault(ep.name, ep)
    if not out:
        raise PhotocompError(
            f"no entry points in group {group!r}: photocomp's distribution metadata is missing. "
            "Install the project (pip install -e .) rather than importing it from a source tree."
        )
    return out
