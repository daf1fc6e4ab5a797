"""Figures of merit, defined once (docs/design.md).

* Fidelity of a unitary implementation: ``F = |Tr(U^H V)|^2 / N^2``
  (1 for a perfect implementation, insensitive to a global phase).
* Matrix error: ``||W - W_hat||_F / ||W||_F`` (``||W_hat||_F`` when W = 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["fidelity", "matrix_error"]


def _xp(*arrays):
    """jax.numpy for jax inputs (traceable), numpy otherwise (float64 kept)."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def fidelity(target, implemented):
    """Unitary fidelity ``|Tr(U^H V)|^2 / N^2``, batched over leading axes.

    numpy inputs are computed in numpy (their precision kept); jax inputs in jax.
    """
    xp = _xp(target, implemented)
    u = xp.asarray(target)
    v = xp.asarray(implemented)
    n = u.shape[-1]
    tr = xp.einsum("...ij,...ij->...", xp.conj(u), v)
    return xp.abs(tr) ** 2 / n**2


def matrix_error(target, implemented):
    """Relative Frobenius error ``||W - W_hat||_F / ||W||_F``, batched over leading axes.

    If ``W`` is all zero the absolute error ``||W_hat||_F`` is returned instead.
    numpy inputs are computed in numpy (their precision kept); jax inputs in jax.
    """
    xp = _xp(target, implemented)
    w = xp.asarray(target)
    d = xp.asarray(implemented) - w
    num = xp.sqrt(xp.sum(xp.abs(d) ** 2, axis=(-2, -1)))
    den = xp.sqrt(xp.sum(xp.abs(w) ** 2, axis=(-2, -1)))
    return xp.where(den > 0, num / xp.where(den > 0, den, 1.0), num)


def np_matrix_error(target, implemented) -> float:
    """Float64 numpy version of :func:`matrix_error` for one matrix."""
    w = np.asarray(target)
    num = np.linalg.norm(np.asarray(implemented) - w)
    den = np.linalg.norm(w)
    return float(num / den) if den > 0 else float(num)
