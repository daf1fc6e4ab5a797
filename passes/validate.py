"""``validate``: check the weights and record their basic statistics."""

from __future__ import annotations

import dataclasses

import numpy as np

from photocomp.compiler.pipeline import Pass
from photocomp.compiler.state import CompileState
from photocomp.core.metrics import needs_scaling, np_norm, power_of_two_exponent, scale_by_power_of_two
from photocomp.core.validate import as_matrix
from photocomp.sim.devices import one_blas_thread

RANK_MAX_SIDE = 512
"""Largest smaller side of a matrix whose numerical rank ``validate`` records."""


@dataclasses.dataclass(frozen=True)
class Validate(Pass):
    """Check that the weights are a finite, non-empty 2-D numeric array (analysis pass).

    Records shape, Frobenius norm, whether the matrix is real and, when its
    smaller side is at most ``RANK_MAX_SIDE``, its numerical rank (a full
    SVD, O(M N min(M, N)): about 1.3 s at 1024 x 1024 on one CPU core, a
    quarter of that size's whole compile, so larger matrices skip it).
    The norm is computed free of overflow and underflow (``inf`` only when it
    exceeds the largest float64); no copy of complex128 weights is made.
    """

    name = "validate"
    requires = frozenset({"weights"})
    provides = frozenset({"validated"})
    weight_units = frozenset({"norm"})

    def __call__(self, state: CompileState):
        w = as_matrix(state.weights, "weights", copy=False)
        s = None
        if min(w.shape) <= RANK_MAX_SIDE:  # the rank is the same for w times a power of two, exactly near 1
            ws = scale_by_power_of_two(w, -power_of_two_exponent(w)) if needs_scaling(w) else w
            with one_blas_thread():
                s = np.linalg.svd(ws, compute_uv=False)
        metrics = {
            "shape": f"{w.shape[0]}x{w.shape[1]}",
            "norm": np_norm(w),
            "real": bool(np.all(w.imag == 0)),
        }
        if s is not None:
            tol = s.max() * max(w.shape) * np.finfo(float).eps if s.size else 0.0
            metrics["rank"] = int(np.sum(s > tol))
        return state, metrics
