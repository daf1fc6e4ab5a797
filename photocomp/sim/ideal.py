"""Ideal-chip simulation of compiled programs: pure functions of (phase_map, x).

Everything here is a pure JAX function that works under ``jit``, ``vmap`` and
``grad``; the tile grid and mesh layouts are static pytree metadata, so jit
caches key on structure and phases flow as data.

Each tile's V mesh, attenuator column and U mesh (an svd program), or its
one mesh (a unitary program), run as one scan over the meshes' column steps (:func:`photocomp.sim.physical.propagate_meshes`). A batch
of at least K fields (``(N, B)``, or ``jax.vmap`` over the fields with the
phases shared) goes through the tiles' K x K matrices instead (one scan on
the identity, then a matrix product), which costs K propagations instead of
B.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jax.typing import ArrayLike

from photocomp.core.ir import PhaseMap, TileGrid
from photocomp.core.phases import MeshPhases
from photocomp.sim.devices import run_tiles, tile_chunk
from photocomp.sim.physical import fold_batches, ideal_coefficients, propagate_meshes, screen

__all__ = ["forward", "tile_matrices", "program_matrix", "apply_meshes", "changed_tiles", "updated_program_matrix_np",
           "updated_program_np", "tiles_and_meshes_np", "mesh_stack", "STACKED_MESH_BYTES", "tile_matrices_np", "program_matrix_np"]


def _arrays(*leaves):
    """jax arrays of the leaves (vmapping raw numpy leaves trips custom-derivative functions inside)."""
    return tuple(jnp.asarray(a) for a in leaves)


def _complex_dtype(*arrays):
    return jax.dtypes.canonicalize_dtype(jnp.result_type(*(jnp.asarray(a).dtype for a in arrays), jnp.complex64))


def apply_meshes(mp: MeshPhases, x: ArrayLike) -> jax.Array:
    """Apply a stack of meshes (leading tile axis) to fields ``x`` (n_tiles, K[, B])."""
    x = jnp.asarray(x)
    dtype = _complex_dtype(x, mp.theta)
    lay = mp.layout

    def one(t, p, o, xi):
        y = propagate_meshes(lay, [ideal_coefficients(t, p, dtype=dtype)], [], xi)
        return screen(o, dtype).reshape((-1,) + (1,) * (y.ndim - 1)) * y

    return jax.vmap(one)(*_arrays(mp.theta, mp.phi, mp.out_phase, x.astype(dtype)))


def _tiles_apply(pm: PhaseMap, z):
    """Each tile's V mesh, attenuators (cos sigma) and U mesh on fields z (n_tiles, K[, B]); gain not applied.
    A unitary program's tiles run their one mesh."""
    if pm.v is None:
        return apply_meshes(pm.u, z)
    dtype = _complex_dtype(z, pm.v.theta, pm.sigma)
    lay = pm.v.layout
    if pm.u.layout != lay:  # not produced by the compiler; run the meshes one after the other
        z = apply_meshes(pm.v, z.astype(dtype))
        z = z * _expand(jnp.cos(jnp.asarray(pm.sigma)), z)
        return apply_meshes(pm.u, z)

    def one(vt, vp, vo, sigma, ut, up, uo, zi):
        between = screen(vo, dtype) * jnp.cos(sigma).astype(dtype)
        coefs = [ideal_coefficients(vt, vp, dtype=dtype), ideal_coefficients(ut, up, dtype=dtype)]
        y = propagate_meshes(lay, coefs, [between], zi)
        return screen(uo, dtype).reshape((-1,) + (1,) * (y.ndim - 1)) * y

    rdtype = jnp.real(jnp.zeros((), dtype)).dtype
    sigma = jnp.asarray(pm.sigma, dtype=rdtype)
    return jax.vmap(one)(*_arrays(pm.v.theta, pm.v.phi, pm.v.out_phase, sigma, pm.u.theta, pm.u.phi,
                                  pm.u.out_phase, z.astype(dtype)))


class HasGrid(Protocol):
    """Anything tiled on a :class:`TileGrid`: a :class:`PhaseMap`, or a chip's settings."""

    @property
    def grid(self) -> TileGrid: ...


def tile_inputs(pm: HasGrid, x: jax.Array) -> jax.Array:
    g = pm.grid
    k = g.tile
    xp = jnp.zeros((g.cols * k,) + x.shape[1:], dtype=x.dtype).at[: g.in_dim].set(x)
    blocks = xp.reshape((g.cols, k) + x.shape[1:])
    return blocks[jnp.asarray(g.tile_cols)]  # (n_tiles, K[, B])


def accumulate(pm: HasGrid, z: jax.Array) -> jax.Array:
    g = pm.grid
    k = g.tile
    y = jnp.zeros((g.rows, k) + z.shape[2:], dtype=z.dtype).at[jnp.asarray(g.tile_rows)].add(z)
    return y.reshape((g.rows * k,) + z.shape[2:])[: g.out_dim]


def _expand(a, z):
    return a.reshape(a.shape + (1,) * (z.ndim - a.ndim))


def forward(pm: PhaseMap, x: ArrayLike, detection: str = "coherent") -> jax.Array:
    """Field ``x`` (N,) or (N, B) through the ideal chip; returns (M,) or (M, B).

    Each tile applies its V mesh, the attenuator column (amplitude
    ``cos(sigma)``), its U mesh and its gain; partial products of the tiles in
    one block row are summed electronically. With ``detection="intensity"``
    the result is ``|y|^2``. A batch of at least K fields, ``(N, B)`` or
    under ``jax.vmap`` over ``x`` with shared ``pm``, goes through the tiles'
    matrices (:func:`photocomp.sim.physical.fold_batches`); the result is the
    same to rounding.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.complexfloating):
        x = x.astype(jax.dtypes.canonicalize_dtype(jnp.result_type(x.dtype, jnp.complex64)))
    z = fold_batches(_tiles_apply)(pm, tile_inputs(pm, x))
    z = z * _expand(jnp.asarray(pm.gain), z)
    y = accumulate(pm, z)
    if detection == "intensity":
        return jnp.abs(y) ** 2
    return y


def _identities(pm: PhaseMap, dtype):
    k = pm.grid.tile
    return jnp.broadcast_to(jnp.eye(k, dtype=dtype), (pm.n_tiles, k, k))


def tile_matrices(pm: PhaseMap) -> jax.Array:
    """Per-tile implemented matrices ``gain U diag(cos sigma) V^H`` (unitary: ``gain U``), shape (n_tiles, K, K)."""
    z = _tiles_apply(pm, _identities(pm, _complex_dtype(*(m.theta for m in pm.meshes))))
    return z * jnp.asarray(pm.gain)[:, None, None]


def program_matrix(pm: PhaseMap) -> jax.Array:
    """The (M, N) matrix the ideal chip implements (tiles assembled, padding cropped)."""
    return pm.grid.join(tile_matrices(pm))


STACKED_MESH_BYTES = 1 << 21
"""Largest stack of a chunk's mesh matrices (bytes) rebuilt through one loop over the mesh columns
(:func:`mesh_stack`); larger ones run a loop per mesh. Measured on a 2-core CPU: the V and U meshes of a
256-mode tile (2 MiB) rebuild 5-30 % faster stacked, those of a 512-mode tile (8 MiB) about 25 % slower."""


def mesh_stack(layout, arrays, c: int):
    """The mesh matrices (C, K, K) of ``len(arrays) // 3`` meshes per tile of one layout, given as triples
    (theta, phi, out_phase) of a chunk of ``c`` tiles; small stacks in one loop over the columns."""
    k = layout.n_modes
    n = len(arrays) // 3
    if n > 1 and n * c * k * k * 16 <= STACKED_MESH_BYTES:
        phases = [jnp.concatenate(arrays[i::3]) for i in range(3)]
        eye = jnp.broadcast_to(jnp.eye(k, dtype=jnp.complex128), (n * c, k, k))
        out = apply_meshes(MeshPhases(layout, *phases), eye)
        return [out[i * c:(i + 1) * c] for i in range(n)]
    eye = jnp.broadcast_to(jnp.eye(k, dtype=jnp.complex128), (c, k, k))
    return [apply_meshes(MeshPhases(layout, *arrays[3 * i:3 * i + 3]), eye) for i in range(n)]


def _tiles_and_meshes_chunk(*arrays, v_layout, u_layout):
    """Tile matrices and mesh matrices of a chunk of tiles given as arrays (for
    :func:`photocomp.sim.devices.run_tiles`), in :func:`_tile_settings`'s order; ``v_layout`` None for a
    unitary program. Returns ``(tiles, u_hat)`` (unitary) or ``(tiles, v_hat, u_hat)``, each (C, K, K):
    ``tile = gain U_hat diag(cos sigma) V_hat`` (unitary: ``gain U_hat``), the meshes' matrices with their
    output phase screens."""
    gain = arrays[-1]
    if v_layout is None:
        (u_hat,) = mesh_stack(u_layout, arrays[:3], gain.shape[0])
        return u_hat * gain[:, None, None], u_hat
    vt, vp, vo, sigma, ut, up, uo, _ = arrays
    if v_layout == u_layout:
        v_hat, u_hat = mesh_stack(u_layout, (vt, vp, vo, ut, up, uo), gain.shape[0])
    else:  # not produced by the compiler
        (v_hat,) = mesh_stack(v_layout, (vt, vp, vo), gain.shape[0])
        (u_hat,) = mesh_stack(u_layout, (ut, up, uo), gain.shape[0])
    scale = (gain[:, None] * jnp.cos(sigma)).astype(u_hat.dtype)
    return (u_hat * scale[:, None, :]) @ v_hat, v_hat, u_hat


def _tile_settings(pm: PhaseMap) -> list[np.ndarray]:
    """Every per-tile setting array of a phase map (tile axis first), in :func:`_tiles_and_meshes_chunk`'s order."""
    front = () if pm.v is None else (pm.v.theta, pm.v.phi, pm.v.out_phase, pm.sigma)
    return [np.asarray(a) for a in front + (pm.u.theta, pm.u.phi, pm.u.out_phase, pm.gain)]


def tiles_and_meshes_np(pm: PhaseMap, tiles: npt.NDArray[np.integer] | None = None
                        ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Float64 numpy tile matrices and mesh matrices of a phase map, in one compiled program.

    Returns ``(tiles, v_hat, u_hat)``, each (n_tiles, K, K) complex128:
    the tiles ``gain U_hat diag(cos sigma) V_hat`` (unitary: ``gain U_hat``)
    and the matrices of every tile's V and U meshes, output phase screens
    included (``v_hat`` None for a unitary program). The meshes are rebuilt
    from their phases (the V and U meshes of a chunk of tiles in one loop over
    the columns where they fit in cache) and the tiles formed from them; the
    compiler checks its decompositions against the same mesh matrices, so a
    compile, its checks and a reloaded program run one XLA program. Tiles in
    cache-sized chunks, sharded across the JAX devices.

    ``tiles``: indices of the tiles to simulate (default: all), in the order given.
    """
    arrays = [np.asarray(a, np.float64) for a in _tile_settings(pm)]
    if tiles is not None:
        arrays = [a[tiles] for a in arrays]
    static = {"v_layout": None if pm.v is None else pm.v.layout, "u_layout": pm.u.layout}
    out = run_tiles(_tiles_and_meshes_chunk, arrays, chunk=tile_chunk(len(arrays[0])), static=static)
    return (out[0], None, out[1]) if pm.v is None else out


def tile_matrices_np(pm: PhaseMap, tiles: npt.NDArray[np.integer] | None = None) -> np.ndarray:
    """Float64 numpy tile matrices ``gain U diag(cos sigma) V^H`` (unitary: ``gain U``), (n_tiles, K, K).

    The tiles of :func:`tiles_and_meshes_np` (one compiled program for
    every simulation on the host: the compiler's passes, their checks and
    loaded programs); equal to :func:`tile_matrices` to rounding.
    ``tiles``: indices of the tiles to simulate (default: all), in the order given.
    """
    return tiles_and_meshes_np(pm, tiles)[0]


def program_matrix_np(pm: PhaseMap) -> np.ndarray:
    """Float64 numpy copy of :func:`program_matrix` (for reports and metrics), tiles computed in chunks."""
    return pm.grid.join(tile_matrices_np(pm))


def changed_tiles(old: PhaseMap, new: PhaseMap) -> np.ndarray:
    """Boolean ``(n_tiles,)``: the tiles whose phases, attenuators or gain differ between two phase maps.

    Phase maps on different grids, circuits or mesh layouts differ in every tile.
    """
    if (old.grid, [m.layout for m in old.meshes]) != (new.grid, [m.layout for m in new.meshes]):
        return np.ones(new.n_tiles, dtype=bool)
    changed = np.zeros(new.n_tiles, dtype=bool)
    for a, b in zip(_tile_settings(old), _tile_settings(new)):
        d = a != b
        changed |= d.reshape(d.shape[0], -1).any(axis=1)
    return changed


def updated_program_np(old: PhaseMap, matrix: np.ndarray | None, meshes: tuple | None, new: PhaseMap
                       ) -> tuple[np.ndarray, tuple | None, np.ndarray]:
    """The program matrix and mesh matrices of ``new`` given those of ``old``: only changed tiles are simulated.

    ``matrix`` is :func:`program_matrix_np` of ``old`` (or None, not known:
    then every tile of ``new`` is simulated) and ``meshes`` its
    ``(v_hat, u_hat)`` from :func:`tiles_and_meshes_np` (or None, not known).
    Tiles whose settings are identical in both phase maps (:func:`changed_tiles`)
    keep their blocks; with none changed, ``matrix`` and ``meshes`` themselves
    are returned. Returns ``(matrix of new, its (v_hat, u_hat) or None, changed-tile mask)``;
    the meshes are None only where ``meshes`` was None and some but not all tiles changed.
    """
    changed = changed_tiles(old, new)
    if changed.all() or matrix is None:
        tiles, v_hat, u_hat = tiles_and_meshes_np(new)
        return new.grid.join(tiles), (v_hat, u_hat), changed
    if not changed.any():
        return matrix, meshes, changed
    idx = np.flatnonzero(changed)
    blocks = new.grid.split(np.asarray(matrix))
    tiles, v_hat, u_hat = tiles_and_meshes_np(new, idx)
    blocks[idx] = tiles
    if meshes is not None:
        meshes = tuple(None if m is None else np.array(m) for m in meshes)
        for m, part in zip(meshes, (v_hat, u_hat)):
            if m is not None and part is not None:
                m[idx] = part
    return new.grid.join(blocks), meshes, changed


def updated_program_matrix_np(old: PhaseMap, matrix: np.ndarray, new: PhaseMap) -> tuple[np.ndarray, np.ndarray]:
    """:func:`program_matrix_np` of ``new``, given ``matrix``, that of ``old``: only changed tiles are simulated.

    Tiles whose settings are identical in both phase maps (:func:`changed_tiles`)
    keep their blocks of ``matrix``; with none changed, ``matrix`` itself is
    returned. Returns ``(matrix of new, changed-tile mask)``.
    """
    out, _, changed = updated_program_np(old, matrix, None, new)
    return out, changed
