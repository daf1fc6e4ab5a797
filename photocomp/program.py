"""A compiled program: phase map + target + report, with jit-compiled forward functions."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from photocomp import simulate
from photocomp.errors import InvalidInputError, InvalidTypeError
from photocomp.ir import CompileReport, PhaseMap
from photocomp.target import Target

__all__ = ["Program"]

_forward_jit = jax.jit(simulate.forward, static_argnames=("detection",))
_matrix_jit = jax.jit(simulate.program_matrix)


def _as_float64(pm: PhaseMap) -> PhaseMap:
    """Host copies of the phase map in float64 (the stored precision)."""
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), pm)


class Program:
    """A program compiled for a target.

    Attributes:
      target: the :class:`~photocomp.target.Target`.
      phase_map: the :class:`~photocomp.ir.PhaseMap` (phases per tile and stage, gains).
      report: the :class:`~photocomp.ir.CompileReport`.
      pipeline: the pipeline that produced it, as text.
      detection: ``"coherent"`` (fields) or ``"intensity"`` (``|y|^2``).

    The pure function behind :meth:`forward` is :attr:`forward_fn`
    ``(params, x) -> y`` with ``params = program.params``; it works under
    ``jax.jit``, ``jax.vmap`` and ``jax.grad`` and follows the caller's JAX
    precision. :meth:`forward` itself always computes in float64.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> prog = pc.compile(np.eye(3), target="clements-4")
      >>> np.allclose(prog.forward(np.ones(3)), np.ones(3))
      True
    """

    def __init__(self, target: Target, phase_map: PhaseMap, report: CompileReport, pipeline: str,
                 detection: str = "coherent", dense=None):
        if not isinstance(target, Target):
            raise InvalidTypeError(f"target must be a photocomp.Target; got {type(target).__name__}")
        if not isinstance(phase_map, PhaseMap):
            raise InvalidTypeError(f"phase_map must be a photocomp PhaseMap; got {type(phase_map).__name__}")
        self.target = target
        self.phase_map = _as_float64(phase_map)
        self.report = report
        self.pipeline = pipeline
        self.detection = detection
        self._dense = None if dense is None else np.asarray(dense)

    # -- structure ---------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """(M, N) of the compiled matrix."""
        g = self.phase_map.grid
        return (g.out_dim, g.in_dim)

    @property
    def n_tiles(self) -> int:
        return self.phase_map.n_tiles

    @property
    def n_mzi(self) -> int:
        """MZIs used: two meshes and one attenuator column per tile."""
        pm = self.phase_map
        return pm.n_tiles * (pm.v.layout.n_mzi + pm.u.layout.n_mzi + pm.grid.tile)

    @property
    def depth(self) -> int:
        """Optical depth in MZI columns: V mesh, attenuator column, U mesh."""
        pm = self.phase_map
        return pm.v.layout.depth + 1 + pm.u.layout.depth

    @property
    def params(self) -> PhaseMap:
        """The pytree of arrays :attr:`forward_fn` takes (the phase map)."""
        return self.phase_map

    @property
    def forward_fn(self):
        """Pure ``forward(params, x) -> y`` for one example ``x`` of shape (N,)."""
        return functools.partial(simulate.forward, detection=self.detection)

    # -- execution ---------------------------------------------------------------
    def _check_x(self, x):
        if isinstance(x, (str, bytes)) or x is None:
            raise InvalidTypeError(f"x must be a numeric array of shape ({self.shape[1]},); got {type(x).__name__}")
        if not isinstance(x, jax.Array):
            x = np.asarray(x)
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
                raise InvalidTypeError(f"x must be a numeric array of shape ({self.shape[1]},); got dtype {x.dtype}")
            if not np.all(np.isfinite(x)):
                raise InvalidInputError("x must be finite; got NaN/Inf entries")
        if tuple(x.shape) != (self.shape[1],):
            raise InvalidInputError(
                f"x must have shape ({self.shape[1]},) (one example; batch with jax.vmap); got shape {tuple(x.shape)}"
            )
        return x

    def forward(self, x):
        """Output ``y`` (M,) of the ideal chip for input ``x`` (N,).

        ``y ~= W @ x`` (or ``|W @ x|^2`` with intensity detection). jit-compiled.
        Called on concrete data it computes in float64 (complex128 out); inside
        ``jax.vmap``/``jax.grad``/``jax.jit`` it follows the caller's precision.
        """
        x = self._check_x(x)
        if isinstance(x, jax.core.Tracer):
            return _forward_jit(self.phase_map, x, detection=self.detection)
        with jax.enable_x64(True):
            return _forward_jit(self.phase_map, x, detection=self.detection)

    __call__ = forward

    def matrix(self, params: PhaseMap | None = None) -> np.ndarray:
        """The (M, N) complex matrix the ideal chip implements (float64)."""
        pm = self.phase_map if params is None else params
        with jax.enable_x64(True):
            return np.asarray(_matrix_jit(pm))

    @property
    def dense(self) -> np.ndarray:
        """The folded dense matrix (computed once, then cached)."""
        if self._dense is None:
            self._dense = self.matrix()
        return self._dense

    def forward_dense(self, x):
        """Folded fast path: ``dense @ x`` (same result as :meth:`forward` to ~1e-13)."""
        x = self._check_x(x)
        with jax.enable_x64(True):
            y = jnp.asarray(self.dense) @ jnp.asarray(x, dtype=jnp.complex128)
            return jnp.abs(y) ** 2 if self.detection == "intensity" else y

    def graph(self, tile: int = 0):
        """networkx view of the circuit with tile ``tile``'s settings (see :mod:`photocomp.graph`)."""
        from photocomp.graph import circuit_graph

        return circuit_graph(self.phase_map, tile)

    # -- I/O -----------------------------------------------------------------------
    def save(self, path) -> str:
        """Write the versioned phase-map file (atomically); returns the path written."""
        from photocomp.io import save_program

        return save_program(self, path)

    def summary(self) -> dict:
        """Headline numbers: target, shape, tiles, MZIs, depth and the report summary."""
        return {
            "target": self.target.name,
            "shape": f"{self.shape[0]}x{self.shape[1]}",
            "tiles": self.n_tiles,
            "mzis": self.n_mzi,
            "depth": self.depth,
            **dict(self.report.summary),
        }

    def __repr__(self) -> str:
        m, n = self.shape
        return (
            f"Program({m}x{n} on {self.target.name}: {self.n_tiles} tile(s), "
            f"{self.n_mzi} MZIs, depth {self.depth}, detection={self.detection})"
        )
