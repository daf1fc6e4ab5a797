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
    theta: np.ndarray | jax.Array
    phi: np.ndarray | jax.Array
    out_phase: np.ndarray | jax.Array

    def unitary(self) -> np.ndarray | jax.Array:
        """The unitary (or stack of unitaries) these phases implement.

        Concrete phases (numpy or JAX arrays) rebuild it in float64 whatever
        JAX's precision setting, and give a complex128 numpy array (also when
        asked for inside a ``jax.jit`` trace, as a constant). Traced phases
        (under ``jax.jit``, ``jax.grad``, ``jax.vmap``) give a JAX array in
        the caller's precision.
        """
        fn = lambda t, p, o: mesh_unitary(self.layout, t, p, o)  # noqa: E731
        for _ in range(np.ndim(self.theta) - 1):
            fn = jax.vmap(fn)
        arrays = (self.theta, self.phi, self.out_phase)
        if any(isinstance(a, jax.core.Tracer) for a in arrays):
            return fn(*arrays)
        with jax.ensure_compile_time_eval(), jax.enable_x64(True):
            return np.asarray(fn(*(np.asarray(a, dtype=np.float64) for a in arrays)), dtype=np.complex128)


jax.tree_util.register_dataclass(
    MeshPhases, data_fields=["theta", "phi", "out_phase"], meta_fields=["layout"]
)
