"""A persistent cache of compiled XLA programs for the ``photocomp`` command.

Every process pays the JIT compilation of the programs it runs (the
decomposition kernels, the mesh checks, the simulators); for a short job such
as ``photocomp demo`` that is most of its time. JAX can keep compiled
programs on disk and reuse them in later processes. The command line turns
that on for its own process (:func:`enable_compilation_cache`); a library user
opts in by calling the same function, since it changes JAX's global
configuration.

Where: ``$PHOTOCOMP_CACHE_DIR`` if set (an empty value turns the cache off),
else ``$XDG_CACHE_HOME/photocomp/xla`` (``~/.cache/photocomp/xla``). A cache
directory the user already gave JAX (``JAX_COMPILATION_CACHE_DIR``) is left
as it is. Deleting the directory is always safe.
"""

from __future__ import annotations

import os
from pathlib import Path

from photocomp.core.errors import InvalidTypeError

__all__ = ["CACHE_ENV", "default_cache_dir", "enable_compilation_cache"]

CACHE_ENV = "PHOTOCOMP_CACHE_DIR"


def default_cache_dir() -> Path | None:
    """The cache directory the environment asks for; ``None`` if ``$PHOTOCOMP_CACHE_DIR`` is set but empty."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return Path(value).expanduser() if value.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "photocomp" / "xla"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Keep JAX's compiled programs in ``path`` (default :func:`default_cache_dir`) for later processes.

    Sets JAX's ``jax_compilation_cache_dir`` and caches every compiled
    program, however quick its compilation (``photocomp`` runs many small
    ones). Does nothing when JAX already has a cache directory, when the
    cache is turned off (``PHOTOCOMP_CACHE_DIR=""``) or when the directory
    cannot be created or written (a path with a NUL character included).

    Returns:
      the cache directory in use, or ``None`` when caching stays off.

    Raises:
      InvalidTypeError: if ``path`` is not a string or path.
    """
    import jax

    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    # jax adds its options to Config at run time; its type stubs do not declare them
    current = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]
    if current:
        return Path(current)
    target = Path(path).expanduser() if path is not None else default_cache_dir()
    if target is None:
        return None
    try:
        target.mkdir(parents=True, exist_ok=True)
        if not os.access(target, os.W_OK | os.X_OK):
            return None
    except (OSError, ValueError):  # ValueError: a NUL character in the path
        return None
    jax.config.update("jax_compilation_cache_dir", str(target))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return target
