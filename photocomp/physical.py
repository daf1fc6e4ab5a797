"""Mesh-level conversion between mathematical (theta, phi) settings and physical phases.

Per MZI (see :mod:`photocomp.convention`)::

    physical_mzi(2 theta + pi, chi) = diag(e^{i(theta + pi)}, e^{i theta}) @ T(theta, chi)

so a physical device leaves a known phase screen on its outputs. In a mesh
that screen is pushed forward, column by column: the next MZI's external
phase absorbs the difference of its two input phases and passes their common
part on; whatever remains after the last column is taken off by the output
phase shifters. :func:`mesh_to_physical` computes the physical phases
(internal, external, output) such that the ideal physical mesh implements
*exactly* the mathematical one; :func:`mesh_from_physical` inverts it.
:func:`apply_physical_mesh` simulates a physical mesh with coupler
splitting-angle errors and per-MZI loss (the building block of chip models).

All functions are pure JAX, work under jit/vmap/grad, and accept leading
batch axes on the setting arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from photocomp import convention
from photocomp.mesh import MeshLayout, apply_columns

__all__ = ["mesh_to_physical", "mesh_from_physical", "apply_physical_mesh", "physical_mesh_unitary"]


def _columns(lay: MeshLayout):
    top, index, valid = lay.column_slots
    return jnp.asarray(top), jnp.asarray(index), jnp.asarray(valid)


def _sweep(lay: MeshLayout, theta, ext, to_physical: bool):
    """Push output screens through the mesh; returns (new external phases, final screen)."""
    n = lay.n_modes
    theta = jnp.asarray(theta)
    ext = jnp.asarray(ext)
    screen = jnp.zeros((n + 2,), dtype=theta.dtype if lay.n_mzi else jnp.float32)
    if lay.n_mzi == 0:
        return ext, screen[:n]
    top, index, valid = _columns(lay)
    # padding slots write to a dummy element n_mzi, never onto a real MZI
    index = jnp.where(valid, index, lay.n_mzi)
    theta = jnp.concatenate([theta, jnp.zeros((1,), theta.dtype)])
    ext = jnp.concatenate([ext, jnp.zeros((1,), ext.dtype)])
    sign = -1.0 if to_physical else 1.0

    def column(carry, col):
        scr, new_ext = carry
        t, idx, ok = col
        a = scr[t]
        b = scr[t + 1]
        th = theta[idx]
        # math phi = chi + a - b  <=>  chi = phi - a + b
        val = ext[idx] + sign * (a - b)
        new_ext = new_ext.at[idx].set(val)
        top_phase = jnp.where(ok, th + jnp.pi + b, scr[t])
        bot_phase = jnp.where(ok, th + b, scr[t + 1])
        scr = scr.at[t].set(top_phase).at[t + 1].set(bot_phase)
        return (scr, new_ext), None

    (screen, new_ext), _ = jax.lax.scan(column, (screen, jnp.zeros_like(ext)), (top, index, valid))
    return new_ext[:-1], screen[:n]


def _batched(fn, *arrays):
    nb = jnp.ndim(arrays[0]) - 1
    for _ in range(nb):
        fn = jax.vmap(fn)
    return fn(*arrays)


def mesh_to_physical(lay: MeshLayout, theta, phi, out_phase):
    """Physical ``(internal, external, out_phase)`` phases (rad) realising a mathematical mesh.

    Args:
      lay: the layout.
      theta, phi: ``batch + (n_mzi,)`` mathematical settings (rad).
      out_phase: ``batch + (N,)`` mathematical output screen (rad).

    Returns:
      ``internal = 2 theta + pi``, the external phases with the pushed screens
      absorbed, and the physical output phases, all wrapped to [0, 2 pi).
    """

    def one(t, p, o):
        ext, screen = _sweep(lay, t, p, to_physical=True)
        internal, _ = convention.to_physical(t, p)
        return (
            convention.wrap_phase(internal),
            convention.wrap_phase(ext),
            convention.wrap_phase(o - screen),
        )

    return _batched(one, theta, phi, out_phase)


def mesh_from_physical(lay: MeshLayout, internal, external, out_phase):
    """Inverse of :func:`mesh_to_physical`: mathematical ``(theta, phi, out_phase)``."""

    def one(i, e, o):
        theta, _ = convention.from_physical(i, e)
        phi, screen = _sweep(lay, theta, e, to_physical=False)
        return theta, convention.wrap_phase(phi), convention.wrap_phase(o + screen)

    return _batched(one, internal, external, out_phase)


def apply_physical_mesh(lay: MeshLayout, internal, external, out_phase, x, *,
                        coupler_in=0.0, coupler_out=0.0, loss_db=0.0):
    """Propagate fields through a physical mesh with component errors.

    Each MZI is ``coupler(coupler_out) P(internal) coupler(coupler_in) P(external)``
    times the amplitude loss ``10^(-loss_db / 20)``; the output phase screen follows.

    Args:
      lay: the layout.
      internal, external: physical phases ``(n_mzi,)`` (rad).
      out_phase: physical output phases ``(N,)`` (rad).
      x: fields ``(N,)`` or ``(N, B)``.
      coupler_in, coupler_out: splitting-angle errors ``(n_mzi,)`` or scalars (rad).
      loss_db: insertion loss per MZI ``(n_mzi,)`` or scalar (dB).

    Returns:
      output fields, same shape as ``x``.
    """
    x = jnp.asarray(x)
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(x.dtype, jnp.complex64, jnp.asarray(internal).dtype))
    m = lay.n_mzi
    rdtype = jnp.real(jnp.zeros((), dtype)).dtype
    bcast = lambda v: jnp.broadcast_to(jnp.asarray(v, dtype=rdtype), (m,))  # noqa: E731
    mats = convention.physical_mzi(bcast(internal), bcast(external), bcast(coupler_in), bcast(coupler_out))
    mats = (mats * (10.0 ** (-bcast(loss_db) / 20.0))[:, None, None]).astype(dtype)
    return apply_columns(lay, mats, out_phase, x.astype(dtype))


def physical_mesh_unitary(lay: MeshLayout, internal, external, out_phase, **errors):
    """Transfer matrix of a physical mesh (see :func:`apply_physical_mesh`)."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(jnp.asarray(internal).dtype, jnp.complex64))
    return apply_physical_mesh(lay, internal, external, out_phase, jnp.eye(lay.n_modes, dtype=dtype), **errors)
