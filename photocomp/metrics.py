"""Figures of merit, defined once (DESIGN.md).

* Fidelity of a unitary implementation: ``F = |Tr(U^H V)|^2 / N^2``
  (1 for a perfect implementation, insensitive to a global phase).
* Matrix error: ``||W - W_hat||_F / ||W||_F`` (``||W_hat||_F`` when W = 0).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["fidelity", "matrix_error"]


def fidelity(target, implemented):
    """Unitary fidelity ``|Tr(U^H V)|^2 / N^2``, batched over leading axes."""
    u = jnp.asarray(target)
    v = jnp.asarray(implemented)
    n = u.shape[-1]
    tr = jnp.einsum("...ij,...ij->...", jnp.conj(u), v)
    return jnp.abs(tr) ** 2 / n**2


def matrix_error(target, implemented):
    """Relative Frobenius error ``||W - W_hat||_F / ||W||_F``, batched over leading axes.

    If ``W`` is all zero the absolute error ``||W_hat||_F`` is returned instead.
    """
    w = jnp.asarray(target)
    d = jnp.asarray(implemented) - w
    num = jnp.sqrt(jnp.sum(jnp.abs(d) ** 2, axis=(-2, -1)))
    den = jnp.sqrt(jnp.sum(jnp.abs(w) ** 2, axis=(-2, -1)))
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), num)


def np_matrix_error(target, implemented) -> float:
    """Float64 numpy version of :func:`matrix_error` for one matrix."""
    w = np.asarray(target)
    num = np.linalg.norm(np.asarray(implemented) - w)
    den = np.linalg.norm(w)
    return float(num / den) if den > 0 else float(num)
