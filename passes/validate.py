"""``validate``: check the weights and record their basic statistics."""

from __future__ import annotations

import dataclasses

import numpy as np

from photocomp.compiler.pipeline import Pass
from photocomp.compiler.state import CompileState
from photocomp.core.metrics import (
    known_unitary_deviation,
    needs_scaling,
    np_norm,
    power_of_two_exponent,
    scale_by_power_of_two,
)
from photocomp.core.validate import as_matrix
from photocomp.sim.devices import single_threaded_blas

RANK_MAX_SIDE = 512
"""Largest smaller side of a matrix whose numerical rank ``validate`` records."""


@dataclasses.dataclass(frozen=True)
class Validate(Pass):
    """Check that the weights are a finite, non-empty 2-D numeric array (analysis pass).

    Records shape, Frobenius norm, whether the matrix is real and, when its
    smaller side is at most ``RANK_MAX_SIDE``, its numerical rank (a full
    SVD, O(M N min(M, N)): about 1.3 s at 1024 x 1024 on one CPU core, a
    quarter of that size's whole compile, so larger matrices skip it). The
    SVD is skipped for weights that :func:`photocomp.compile` has found to be
    a scaled unitary (it checks before it picks a unitary program): their
    rank is their size (:func:`_full_rank_unitary`).
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
        if min(w.shape) <= RANK_MAX_SIDE:
            full = _full_rank_unitary(w)
            if full is not None:  # a scaled unitary: rank n (0 if zero), its singular values all alike
                s = np.full(w.shape[0], 1.0 if full else 0.0)
            else:  # the rank is the same for w times a power of two, exactly near 1
                ws = scale_by_power_of_two(w, -power_of_two_exponent(w)) if needs_scaling(w) else w
                with single_threaded_blas():
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


def _full_rank_unitary(w: np.ndarray) -> bool | None:
    """Whether ``w``, found a scaled unitary ``g U`` earlier in this compile, is nonzero; None when that is not known.

    :func:`photocomp.compile` checks whether the weights are a scaled unitary
    before it picks a program (:func:`photocomp.core.metrics.known_unitary_deviation`
    recalls the result, computing nothing). With ``d = max |A^H A / g^2 - I|``
    and ``n d < 1/2``, ``A^H A / g^2 = I + E`` with ``||E||_2 <= n d``, so every
    singular value of ``A`` lies in ``g [sqrt(1/2), sqrt(3/2)]``: all are above
    the rank threshold ``s_max max(M, N) eps`` for any ``n`` below 1e15, and the
    rank is ``n`` (0 for a zero matrix). The SVD is then not needed.
    """
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        return None
    known = known_unitary_deviation(w)
    if known is None:
        return None
    g, dev = float(known[0]), float(known[1])
    if g == 0.0:
        return False
    if not np.isfinite(g) or w.shape[0] * dev >= 0.5:
        return None
    return True
