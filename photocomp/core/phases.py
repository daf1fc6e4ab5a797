"""Phase programs as pytrees: the arrays that flow through jit, vmap and grad."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from photocomp.core.layout import MeshLayout, mesh_unitary

__all__ = ["MeshPhases"]


@dataclasses.dataclass(frozen=True)
class MeshPhases:
    """Phases of one mesh (or a stack of meshes sharing a layout).
    Attributes:
      layout: static :class:`~photocomp.core.layout.MeshLayout` (pytree metadata).
      theta: internal angles (rad), shape ``batch + (n_mzi,)``, layout order.
      phi: external phases (rad), shape ``batch + (n_mzi,)``.
      out_phase: output phase screen (rad), shape ``batch + (N,)``.
    """
    layout: MeshLayout
    theta: np.ndarray
    phi: np.ndarray
    out_phase: np.ndarray

    def unitary(self):
        """The unitary (or stack of unitaries) these phases implement, complex."""
        fn = lambda t, p, o: mesh_unitary(self.layout, t, p, o)  # noqa: E731
        for _ in range(np.ndim(self.theta) - 1):
            fn = jax.vmap(fn)
        return fn(self.theta, self.phi, self.out_phase)


jax.tree_util.register_dataclass(
    MeshPhases, data_fields=["theta", "phi", "out_phase"], meta_fields=["layout"]
)
