"""``validate``: check the weights and record their basic statistics."""

from __future__ import annotations

import dataclasses

import numpy as np

from photocomp.ir import CompileState
from photocomp.pipeline import Pass
from photocomp.validate import as_matrix


@dataclasses.dataclass(frozen=True)
class Validate(Pass):
    """Check that the weights are a finite, non-empty 2-D numeric array (analysis pass).

    Records shape, Frobenius norm, numerical rank and whether the matrix is real.
    """

    name = "validate"
    requires = frozenset({"weights"})
    provides = frozenset({"validated"})

    def __call__(self, state: CompileState):
        w = as_matrix(state.weights, "weights")
        s = np.linalg.svd(w, compute_uv=False) if min(w.shape) <= 2048 else None
        metrics = {
            "shape": f"{w.shape[0]}x{w.shape[1]}",
            "norm": float(np.linalg.norm(w)),
            "real": bool(np.all(w.imag == 0)),
        }
        if s is not None:
            tol = s.max() * max(w.shape) * np.finfo(float).eps if s.size else 0.0
            metrics["rank"] = int(np.sum(s > tol))
        return state, metrics
