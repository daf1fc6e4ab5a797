"""``svd``: factor every tile as W = U Sigma V^H with Sigma normalised to [0, 1]."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jax import lax

from photocomp.compiler.pipeline import Pass
from photocomp.compiler.state import CompileState
from photocomp.sim.devices import run_tiles, single_threaded_blas


def tile_exponents(blocks: np.ndarray) -> np.ndarray:
    """Per tile, the exponent ``e`` with the tile's largest ``|Re|``/``|Im|`` times ``2**-e`` in ``[0.5, 1)`` (0 for a zero tile)."""
    b = np.asarray(blocks)
    parts = (b.real, b.imag) if np.iscomplexobj(b) else (b,)
    m = np.zeros(len(b))
    for p in parts:
        m = np.maximum(m, np.maximum(p.max(axis=(1, 2)), -p.min(axis=(1, 2))))
    return np.where(m > 0, np.frexp(m)[1], 0).astype(np.int64)


def _scale_tiles(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """``x * 2**e`` per tile, exactly (``ldexp``; real and imaginary parts apart)."""
    ee = e[:, None, None]
    if np.iscomplexobj(x):
        out = np.empty(x.shape, np.complex128)
        np.ldexp(x.real, ee, out=out.real)
        np.ldexp(x.imag, ee, out=out.imag)
        return out
    return np.ldexp(np.asarray(x, np.float64), ee)


HOST_MAX_TILES = 16
"""Most tiles the ``svd`` pass factors in NumPy on the host, one LAPACK call per tile; more run as one
compiled program sharded across the JAX devices (:func:`photocomp.sim.devices.run_tiles`). A compile of a
few tiles then builds no XLA program for its SVD: in a fresh process that program's compilation took
longer than factoring the tiles (``benchmarks/end_to_end.py`` times the first compile)."""


def _factors(xp, x, u, s, vh):
    """The pass's outputs from an SVD of ``x`` (C, K, K), in NumPy or JAX (``xp``): u, normalised s, vh
    (complex), gain and the reconstruction error; an all-zero tile gets gain 0 and identity factors."""
    k = x.shape[-1]
    err = xp.max(xp.abs((u * s[:, None, :]) @ vh - x), axis=(1, 2))
    gain = s[:, 0]
    zero = (gain == 0)[:, None]
    s_norm = xp.where(zero, 0.0, s / xp.where(zero, 1.0, gain[:, None]))
    eye = xp.eye(k, dtype=xp.complex128)
    u = xp.where(zero[..., None], eye, u.astype(xp.complex128))
    vh = xp.where(zero[..., None], eye, vh.astype(xp.complex128))
    return u, s_norm, vh, gain, err


def _svd_chunk(x):
    """SVD of a chunk of tiles (C, K, K) in JAX (:func:`_factors`)."""
    # One LAPACK call per tile: a batched call may hand its batch to XLA's shared CPU thread pool, which
    # deadlocks when several host devices run chunks at once (seen with 2 devices from 64 tiles up).
    return _factors(jnp, x, *lax.map(jnp.linalg.svd, x))


@dataclasses.dataclass(frozen=True)
class SVD(Pass):
    """Singular value decomposition of every tile (transform pass).

    Passive optics can only attenuate, so each tile's singular values are
    divided by the largest one, sigma_max, which becomes the tile's
    electronic gain. An all-zero tile gets gain 0 and identity factors.
    Computed in float64: up to :data:`HOST_MAX_TILES` tiles with
    ``numpy.linalg.svd`` on the host, more with ``jax.numpy.linalg.svd``, the
    tiles sharded across all JAX devices (real tiles use the real SVD, which
    is faster; the factors are stored complex). Each tile is factored scaled by a power of
    two that brings its largest component to ``[0.5, 1)`` (exact), and its
    gain and reconstruction error are scaled back: tiles of any finite
    magnitude are factored as accurately as tiles near 1 (a gain beyond the
    largest float64 comes out ``inf``, one below the smallest subnormal 0).
    """

    name = "svd"
    requires = frozenset({"tiled"})
    provides = frozenset({"svd"})
    counts = frozenset({"zero_tiles"})
    weight_units = frozenset({"max_gain", "reconstruction_max_abs"})

    def __call__(self, state: CompileState):
        blocks = state.require("blocks", "tile")
        x = np.ascontiguousarray(blocks.real) if not np.any(blocks.imag) else blocks
        e = tile_exponents(x)
        if e.any():
            x = _scale_tiles(x, -e)
        with single_threaded_blas():
            if len(blocks) <= HOST_MAX_TILES:
                u, s_norm, vh, gain, err = _factors(np, x, *np.linalg.svd(x))
            else:
                chunk = min(16, 1 << (len(blocks) - 1).bit_length())
                u, s_norm, vh, gain, err = run_tiles(_svd_chunk, [x], chunk=chunk)
        if e.any():
            with np.errstate(over="ignore", under="ignore"):
                gain = np.ldexp(np.asarray(gain, np.float64), e)
                err = np.ldexp(np.asarray(err, np.float64), e)
        return state.replace(svd=(u, s_norm, vh, gain)), {
            "max_gain": float(gain.max()),
            "zero_tiles": int(np.sum(gain == 0)),
            "reconstruction_max_abs": float(err.max()) if err.size else 0.0,
        }
