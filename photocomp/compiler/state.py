"""What flows between compiler passes: :class:`CompileState`."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from photocomp.core.ir import PhaseMap, TileGrid
from photocomp.sim.ideal import program_matrix_np

__all__ = ["CompileState"]


@dataclasses.dataclass(frozen=True)
class CompileState:
    """Immutable state threaded through a pipeline; passes return a new one.

    Attributes:
      weights: the validated target matrix, complex128 ``(M, N)``.
      target: the :class:`~photocomp.core.target.Target`.
      provided: names of the properties established so far.
      grid: tiling (after ``tile``).
      blocks: zero-padded tiles ``(n_tiles, K, K)`` (after ``tile``).
      svd: ``(u, s, vh)`` per tile (after ``svd``).
      phase_map: the :class:`PhaseMap` (after a decomposition).
      detection: ``"coherent"`` or ``"intensity"`` (set by ``lower``).
      dense: folded dense matrix of the ideal program (after ``lower``).
      records: :class:`PassRecord` of every pass run so far.
      matrix: the (M, N) matrix the ideal chip implements with ``phase_map``,
        kept by the passes that simulate it so the next one need not
        (:meth:`program_matrix`); :meth:`replace` drops it whenever
        ``phase_map`` changes without a matrix to go with it.
      meshes: ``(v_hat, u_hat)``, the matrices of every tile's V and U meshes
        (``v_hat`` None for a unitary program) simulated with ``matrix``
        (:func:`photocomp.sim.ideal.tiles_and_meshes_np`), or None; kept so
        that the compile's checks need no simulation of their own, dropped
        with ``matrix``.
      matrix_error: the relative error ``||W - W_hat||_F / ||W||_F`` of the
        program ``phase_map`` implements, where the pass that made it measured
        it (with or without simulating ``matrix``), or None; :meth:`replace`
        drops it with ``matrix``.
    """

    weights: np.ndarray
    target: Any
    provided: frozenset = frozenset()
    grid: TileGrid | None = None
    blocks: np.ndarray | None = None
    svd: tuple | None = None
    phase_map: PhaseMap | None = None
    detection: str = "coherent"
    dense: np.ndarray | None = None
    records: tuple = ()
    matrix: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    meshes: tuple | None = dataclasses.field(default=None, repr=False, compare=False)
    matrix_error: float | None = dataclasses.field(default=None, repr=False, compare=False)

    def replace(self, **changes) -> CompileState:
        if "phase_map" in changes and "matrix" not in changes:
            changes["matrix"] = None
        for kept in ("meshes", "matrix_error"):
            if ("phase_map" in changes or "matrix" in changes) and kept not in changes:
                changes[kept] = None
        return dataclasses.replace(self, **changes)

    def program_matrix(self) -> np.ndarray:
        """The (M, N) matrix of ``phase_map`` on the ideal chip: the kept one, or simulated now (float64 numpy)."""
        if self.matrix is not None:
            return self.matrix
        return program_matrix_np(self.require("phase_map", "clements"))

    def require(self, field: str, provider: str) -> Any:
        """Return a product, or raise a KeyError that says which pass provides it."""
        value = getattr(self, field)
        if value is None:
            raise KeyError(f"compile state has no {field!r} yet; run the {provider!r} pass first")
        return value
