"""Generic meshes of any size: ``clements-N`` and ``reck-N``."""

from __future__ import annotations

from photocomp.core.errors import InvalidInputError
from photocomp.core.target import Target
from photocomp.targets.physics import DEFAULTS, component_count


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= 4096:
        raise InvalidInputError(f"mesh size N must be an int in [2, 4096]; got {size!r}")
    return size


def clements(size: int, **overrides) -> Target:
    """A generic N x N Clements (rectangular) mesh with the default physics.

    Example:
      >>> clements(16).depth
      16
    """
    size = _check_size(size)
    params = {**DEFAULTS, **overrides}
    return Target(
        name=f"clements-{size}", mesh="clements", size=size, components=component_count(size),
        description=f"generic {size}x{size} Clements mesh, default physics", **params,
    )


def reck(size: int, **overrides) -> Target:
    """A generic N x N Reck (triangular) mesh with the default physics."""
    size = _check_size(size)
    params = {**DEFAULTS, **overrides}
    return Target(
        name=f"reck-{size}", mesh="reck", size=size, components=component_count(size),
        description=f"generic {size}x{size} Reck mesh, default physics", **params,
    )
