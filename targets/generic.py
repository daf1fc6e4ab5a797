"""Generic meshes of any size: ``clements-N`` and ``reck-N``."""

from __future__ import annotations

import dataclasses

from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.registry import quote
from photocomp.core.target import SIZE_RANGE, Target
from photocomp.targets.physics import DEFAULTS, component_count


def _check_size(size, family: str) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise InvalidTypeError(f"target {family}-N: mesh size N must be an int; got {type(size).__name__} {quote(size)}")
    if not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise InvalidInputError(
            f"target {family}-N: mesh size N must be an int in [{SIZE_RANGE[0]}, {SIZE_RANGE[1]}]; got {quote(size)}"
        )
    return size


_FIXED = ("name", "mesh", "size", "components", "description")


def _params(family: str, overrides: dict) -> dict:
    """The default physics with ``overrides`` applied; the name, mesh, size and counts are not overridable."""
    fields = {f.name for f in dataclasses.fields(Target)}
    bad = sorted(k for k in overrides if k not in fields or k in _FIXED)
    if bad:
        allowed = sorted(fields - set(_FIXED))
        raise InvalidInputError(
            f"target {family}-N: physics overrides must be among {allowed}; got [{', '.join(quote(k, 40) for k in bad[:5])}]"
        )
    return {**DEFAULTS, **overrides}


def clements(size: int, **overrides: object) -> Target:
    """A generic N x N Clements (rectangular) mesh with the default physics.

    Example:
      >>> clements(16).depth
      16
    """
    size = _check_size(size, "clements")
    params = _params("clements", overrides)
    return Target(
        name=f"clements-{size}", mesh="clements", size=size, components=component_count(size),
        description=f"generic {size}x{size} Clements mesh, default physics", **params,
    )


def reck(size: int, **overrides: object) -> Target:
    """A generic N x N Reck (triangular) mesh with the default physics."""
    size = _check_size(size, "reck")
    params = _params("reck", overrides)
    return Target(
        name=f"reck-{size}", mesh="reck", size=size, components=component_count(size),
        description=f"generic {size}x{size} Reck mesh, default physics", **params,
    )
