"""Ideal-chip simulation of compiled programs: pure functions of (phase_map, x).

Everything here is a pure JAX function that works under ``jit``, ``vmap`` and
``grad``; the tile grid and mesh layouts are static pytree metadata, so jit
caches key on structure and phases flow as data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from photocomp.ir import PhaseMap
from photocomp.mesh import apply_mesh
from photocomp.phases import MeshPhases

__all__ = ["forward", "tile_matrices", "program_matrix", "apply_meshes"]


def apply_meshes(mp: MeshPhases, x):
    """Apply a stack of meshes (leading tile axis) to fields ``x`` (n_tiles, K[, B])."""
    fn = lambda t, p, o, xi: apply_mesh(mp.layout, t, p, o, xi)  # noqa: E731
    return jax.vmap(fn)(mp.theta, mp.phi, mp.out_phase, x)


def _tile_inputs(pm: PhaseMap, x):
    g = pm.grid
    k = g.tile
    xp = jnp.zeros((g.cols * k,) + x.shape[1:], dtype=x.dtype).at[: g.in_dim].set(x)
    blocks = xp.reshape((g.cols, k) + x.shape[1:])
    return blocks[jnp.asarray(g.tile_cols)]  # (n_tiles, K[, B])


def _accumulate(pm: PhaseMap, z):
    g = pm.grid
    k = g.tile
    y = jnp.zeros((g.rows, k) + z.shape[2:], dtype=z.dtype).at[jnp.asarray(g.tile_rows)].add(z)
    return y.reshape((g.rows * k,) + z.shape[2:])[: g.out_dim]


def _expand(a, z):
    return a.reshape(a.shape + (1,) * (z.ndim - a.ndim))


def forward(pm: PhaseMap, x, detection: str = "coherent"):
    """Field ``x`` (N,) or (N, B) through the ideal chip; returns (M,) or (M, B).

    Each tile applies its V mesh, the attenuator column (amplitude
    ``cos(sigma)``), its U mesh and its gain; partial products of the tiles in
    one block row are summed electronically. With ``detection="intensity"``
    the result is ``|y|^2``.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.complexfloating):
        x = x.astype(jax.dtypes.canonicalize_dtype(jnp.result_type(x.dtype, jnp.complex64)))
    z = _tile_inputs(pm, x)
    z = apply_meshes(pm.v, z)
    z = z * _expand(jnp.cos(pm.sigma), z)
    z = apply_meshes(pm.u, z)
    z = z * _expand(jnp.asarray(pm.gain), z)
    y = _accumulate(pm, z)
    if detection == "intensity":
        return jnp.abs(y) ** 2
    return y


def tile_matrices(pm: PhaseMap):
    """Per-tile implemented matrices ``gain U diag(cos sigma) V^H``, shape (n_tiles, K, K)."""
    k = pm.grid.tile
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(jnp.asarray(pm.sigma).dtype, jnp.complex64))
    eye = jnp.broadcast_to(jnp.eye(k, dtype=dtype), (pm.n_tiles, k, k))
    z = apply_meshes(pm.v, eye)
    z = z * jnp.cos(pm.sigma)[:, :, None]
    z = apply_meshes(pm.u, z)
    return z * jnp.asarray(pm.gain)[:, None, None]


def program_matrix(pm: PhaseMap):
    """The (M, N) matrix the ideal chip implements (tiles assembled, padding cropped)."""
    g = pm.grid
    k = g.tile
    t = tile_matrices(pm).reshape(g.rows, g.cols, k, k).transpose(0, 2, 1, 3)
    return t.reshape(g.rows * k, g.cols * k)[: g.out_dim, : g.in_dim]


def program_matrix_np(pm: PhaseMap) -> np.ndarray:
    """Float64 numpy copy of :func:`program_matrix` (for reports and metrics)."""
    with jax.enable_x64(True):
        return np.asarray(jax.jit(program_matrix)(pm))


def evaluate(weights, pm: PhaseMap) -> dict:
    """Matrix error of the ideal program against ``weights`` and its MZI count and depth."""
    from photocomp.metrics import np_matrix_error

    w_hat = program_matrix_np(pm)
    return {
        "matrix_error": np_matrix_error(weights, w_hat),
        "mzis": int(pm.n_tiles * (pm.v.layout.n_mzi + pm.u.layout.n_mzi + pm.grid.tile)),
        "depth": int(pm.v.layout.depth + 1 + pm.u.layout.depth),
    }
