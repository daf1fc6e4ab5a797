"""The MZI convention: the one place that defines what (theta, phi) mean.

Mathematical form (Clements et al., Optica 3, 1460 (2016), Eq. 1), acting on
modes (m, m+1)::

    T(theta, phi) = [[exp(i phi) cos(theta), -sin(theta)],
                     [exp(i phi) sin(theta),  cos(theta)]]

``theta`` (rad) sets the splitting: bar power cos^2(theta), cross power
sin^2(theta). ``phi`` (rad) is the external phase on the upper input.

Physical form. A fabricated MZI is a 50:50 coupler, an internal phase shifter
on the upper arm, a second 50:50 coupler and an external phase shifter on the
upper input. With the coupler ``B = [[1, i], [i, 1]] / sqrt(2)`` and
``P(a) = diag(exp(i a), 1)``::

    B @ P(internal) @ B @ P(external) = -exp(i theta) * Z @ T(theta, phi)

where ``internal = 2 theta + pi``, ``external = phi`` and ``Z = diag(1, -1)``.
So the internal phase is ``2 theta`` up to a constant ``pi`` offset, and the
physical device equals the mathematical one up to the common phase
``-exp(i theta)`` on both outputs and a fixed ``pi`` on the lower output
(a routing phase). :func:`to_physical` / :func:`from_physical` convert one
MZI, and :func:`physical_mzi` is the device model with coupler errors used by
chip simulation. In a mesh those output screens are pushed forward into the
next external phases and finally the output phase shifters, which makes the
ideal physical mesh exactly equal to the mathematical one; that sweep lives
in :mod:`photocomp.sim.physical` (``mesh_to_physical`` / ``mesh_from_physical``).

Phase ranges emitted after canonicalization: ``theta`` in [0, pi/2],
``phi`` in [0, 2 pi), output phases in [0, 2 pi).
"""

from __future__ import annotations

import types
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jax.typing import ArrayLike

__all__ = [
    "THETA_RANGE",
    "PHI_RANGE",
    "CONVENTION_TAG",
    "mzi",
    "mzi_inverse",
    "commute_through_inverse",
    "coupler",
    "physical_mzi",
    "to_physical",
    "from_physical",
    "wrap_phase",
    "phase_difference",
]

CONVENTION_TAG = "clements2016-eq1"
"""Tag stored in phase-map files; a reader refuses files of another convention."""

THETA_RANGE = (0.0, float(np.pi / 2))
"""Closed range of canonical internal angles theta (rad)."""

PHI_RANGE = (0.0, float(2 * np.pi))
"""Half-open range [0, 2 pi) of canonical external and output phases (rad)."""

# phases of the plain-arithmetic conversions: the type that goes in comes out
_Phase = TypeVar("_Phase", float, np.ndarray, jax.Array)
_Other = TypeVar("_Other")


def mzi(theta: ArrayLike, phi: ArrayLike, xp: types.ModuleType = jnp) -> jax.Array | np.ndarray:
    """Transfer matrix T(theta, phi) of the convention, batched over leading axes.

    Args:
      theta: internal angle (rad), any shape ``S``.
      phi: external phase (rad), shape broadcastable with ``theta``.
      xp: array module, ``jax.numpy`` (default) or ``numpy`` for host-side
        float64 work.

    Returns:
      complex array of shape ``S + (2, 2)``.
    """
    theta = xp.asarray(theta)
    phi = xp.asarray(phi)
    c, s = xp.cos(theta), xp.sin(theta)
    e = xp.exp(1j * phi)
    return xp.stack(
        [xp.stack([e * c, -s + 0j * e], -1), xp.stack([e * s, c + 0j * e], -1)], -2
    )


def mzi_inverse(theta: ArrayLike, phi: ArrayLike) -> jax.Array:
    """Inverse (= conjugate transpose) of :func:`mzi`, shape ``S + (2, 2)``."""
    return jnp.conj(jnp.swapaxes(mzi(theta, phi), -1, -2))


def commute_through_inverse(theta, phi, alpha, beta):
    """Move a diagonal phase screen from the right of T^-1 to the left of T.

    Implements the identity (docs/design.md §3.5)::

        T^-1(theta, phi) @ diag(e^{i alpha}, e^{i beta})
            = diag(e^{i (beta - phi + pi)}, e^{i beta}) @ T(theta, alpha - beta + pi)

    Args:
      theta, phi: the MZI being passed (rad).
      alpha, beta: phases of the screen on the MZI's two modes (rad).

    Returns:
      ``(new_alpha, new_beta, new_phi)``: the screen on the left and the new
      external phase; ``theta`` is unchanged.
    """
    return beta - phi + jnp.pi, beta, alpha - beta + jnp.pi


def coupler(error: ArrayLike = 0.0, xp: types.ModuleType = jnp) -> jax.Array | np.ndarray:
    """Directional coupler with splitting-angle error ``error`` (rad).

    ``[[cos(pi/4 + e), i sin(pi/4 + e)], [i sin(pi/4 + e), cos(pi/4 + e)]]``;
    ``error = 0`` is the ideal 50:50 coupler. Batched over ``error``'s shape.
    """
    a = np.pi / 4 + xp.asarray(error)
    c, s = xp.cos(a) + 0j, 1j * xp.sin(a)
    return xp.stack([xp.stack([c, s], -1), xp.stack([s, c], -1)], -2)


def _upper_phase(a: ArrayLike, xp: types.ModuleType = jnp) -> jax.Array | np.ndarray:
    a = xp.asarray(a)
    one = xp.ones_like(a) + 0j
    zero = xp.zeros_like(a) + 0j
    return xp.stack(
        [xp.stack([xp.exp(1j * a), zero], -1), xp.stack([zero, one], -1)], -2
    )


def physical_mzi(internal: ArrayLike, external: ArrayLike, error_in: ArrayLike = 0.0, error_out: ArrayLike = 0.0,
                 xp: types.ModuleType = jnp) -> jax.Array | np.ndarray:
    """Physical device: coupler(error_out) . P(internal) . coupler(error_in) . P(external).

    Args:
      internal: internal (upper-arm) phase (rad).
      external: external (upper-input) phase (rad).
      error_in, error_out: splitting-angle errors of the first and second
        coupler (rad).

    Returns:
      complex array ``S + (2, 2)``. With zero errors this equals
      ``-exp(i theta) * diag(1, -1) @ mzi(theta, phi)`` for
      ``(internal, external) = to_physical(theta, phi)``.
    """
    return (
        coupler(error_out, xp)
        @ _upper_phase(internal, xp)
        @ coupler(error_in, xp)
        @ _upper_phase(external, xp)
    )


def to_physical(theta: _Phase, phi: _Other) -> tuple[_Phase, _Other]:
    """Convert ``(theta, phi)`` to physical ``(internal, external)`` phases (rad).

    Plain arithmetic: numpy in, numpy out (dtype kept); jax in, jax out.
    """
    return 2 * theta + np.pi, phi


def from_physical(internal: _Phase, external: _Other) -> tuple[_Phase, _Other]:
    """Inverse of :func:`to_physical` (numpy in, numpy out; jax in, jax out)."""
    return (internal - np.pi) / 2, external


def wrap_phase(x: ArrayLike) -> jax.Array:
    """Wrap phases (rad) into [0, 2 pi), mapping values within 1e-15 of 2 pi to 0."""
    two_pi = 2 * jnp.pi
    w = jnp.mod(x, two_pi)
    # XLA flushes subnormals: a negative subnormal survives mod unchanged
    return jnp.where((w >= two_pi) | jnp.signbit(w), 0.0, w)


def phase_difference(a: npt.ArrayLike, b: npt.ArrayLike = 0.0) -> np.ndarray:
    """``a - b`` wrapped into [-pi, pi) (numpy): the signed distance between two phases (rad)."""
    return np.mod(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64) + np.pi, 2 * np.pi) - np.pi
