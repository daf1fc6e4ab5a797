"""Exact phase canonicalization of meshes: theta into [0, pi/2], phases into [0, 2 pi).

Folding an angle theta into [0, pi/2] leaves a phase screen on the MZI's two
outputs (identities below), which is pushed forward through the rest of the
mesh and finally absorbed by the output phase screen, so the implemented
unitary is unchanged (to rounding). Identities, with T from
:mod:`photocomp.core.convention`::

    T(theta, phi) diag(e^{ia}, e^{ib}) = e^{ib} T(theta, phi + a - b)   (input screen)
    T(theta + pi, phi)  = -T(theta, phi)
    T(pi - theta, phi)  = diag(1, -1) T(theta, phi - pi)

A crossbar's weight cells are independent (:func:`_canonicalize_cells`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from photocomp.core.convention import PHI_RANGE, THETA_RANGE
from photocomp.core.layout import MeshLayout

__all__ = ["canonicalize_mesh", "is_canonical"]

_TWO_PI = 2 * np.pi


def _wrap(x):
    w = np.mod(x, _TWO_PI)
    return np.where(w >= _TWO_PI, 0.0, w)


def is_canonical(theta: npt.ArrayLike, phi: npt.ArrayLike, out_phase: npt.ArrayLike) -> np.ndarray:
    """Whether each mesh of a batch is canonical already: boolean of the leading (batch) shape.

    Canonical: every theta in [0, pi/2], every phi and output phase in [0, 2 pi).
    """
    theta, phi, out = (np.asarray(a, dtype=np.float64) for a in (theta, phi, out_phase))
    (t_lo, t_hi), (p_lo, p_hi) = THETA_RANGE, PHI_RANGE
    ok = np.all((theta >= t_lo) & (theta <= t_hi), axis=-1)
    for a in (phi, out):
        ok &= np.all((a >= p_lo) & (a < p_hi), axis=-1)
    return ok


def canonicalize_mesh(lay: MeshLayout, theta: npt.ArrayLike, phi: npt.ArrayLike,
                      out_phase: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical phases implementing the same unitary; batched over leading axes.

    Args:
      lay: the mesh layout.
      theta, phi: ``batch + (n_mzi,)`` (rad), any real values.
      out_phase: ``batch + (N,)`` (rad).

    Returns:
      ``(theta, phi, out_phase)`` float64 with theta in [0, pi/2] and phases in [0, 2 pi).
      Meshes that are canonical already (:func:`is_canonical`) come back unchanged.
    """
    theta = np.array(theta, dtype=np.float64, copy=True)
    phi = np.array(phi, dtype=np.float64, copy=True)
    out = np.array(out_phase, dtype=np.float64, copy=True)
    batch = out.shape[:-1]
    todo = np.flatnonzero(~is_canonical(theta, phi, out).reshape(-1))
    if todo.size:
        flat = [a.reshape((-1,) + a.shape[len(batch):]) for a in (theta, phi, out)]  # views
        done = _canonicalize(lay, *(a[todo] for a in flat))
        for a, d in zip(flat, done):
            a[todo] = d
    return theta, phi, out


def _canonicalize(lay: MeshLayout, theta, phi, out):
    """:func:`canonicalize_mesh` of meshes ``(B, ...)`` given as fresh float64 arrays (updated in place)."""
    if lay.crossbar:
        return _canonicalize_cells(theta, phi, out)
    screen = np.zeros(out.shape, dtype=np.float64)  # pending phases on every mode
    top, index, valid = lay.column_slots
    for c in range(lay.depth):
        idx = index[c][valid[c]]
        k, k2 = top[c][valid[c]], lay.column_bottoms[c][valid[c]]
        a = screen[..., k]
        b = screen[..., k2]
        ph = phi[..., idx] + a - b  # absorb the input screen; e^{ib} is common
        common = b
        th = np.mod(theta[..., idx], _TWO_PI)
        flip = th >= np.pi  # T(theta + pi) = -T(theta)
        th = np.where(flip, th - np.pi, th)
        common = common + np.where(flip, np.pi, 0.0)
        mirror = th > np.pi / 2  # T(pi - x) = diag(1, -1) T(x, phi - pi)
        th = np.where(mirror, np.pi - th, th)
        ph = np.where(mirror, ph - np.pi, ph)
        theta[..., idx] = th
        phi[..., idx] = _wrap(ph)
        screen[..., k] = common
        screen[..., k2] = common + np.where(mirror, np.pi, 0.0)
    return theta, phi, _wrap(out + screen)


def _canonicalize_cells(theta, phi, out):
    """A crossbar's independent weight cells ``e^{i phi} cos theta`` (:mod:`photocomp.core.crossbar`): a
    negative cosine is a phase pi, so theta folds into [0, pi/2] by ``arccos |cos theta|`` and phi takes
    the sign; nothing is pushed."""
    th = np.mod(theta, _TWO_PI)
    c = np.cos(th)
    ok = th <= np.pi / 2
    new = np.where(ok, th, np.arccos(np.clip(np.abs(c), 0.0, 1.0)))
    return new, _wrap(phi + np.where(~ok & (c < 0), np.pi, 0.0)), _wrap(out)
