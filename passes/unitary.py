"""``unitary``: factor every tile as ``gain U`` with U unitary, for one mesh per tile."""

from __future__ import annotations

import dataclasses

import numpy as np

from photocomp.compiler.pipeline import Pass
from photocomp.compiler.state import CompileState
from photocomp.core.errors import PipelineError
from photocomp.core.ir import TileGrid
from photocomp.core.metrics import (
    UNITARY_TOL,
    needs_scaling,
    power_of_two_exponent,
    scale_by_power_of_two,
    unitary_deviation,
)
from photocomp.core.validate import check_real
from photocomp.sim.devices import single_threaded_blas


@dataclasses.dataclass(frozen=True)
class Unitary(Pass):
    """Factor every tile as ``gain U``, U unitary (transform pass; replaces ``svd``).

    A tile that is a scaled unitary needs one mesh and no attenuators: the
    decomposition that follows builds a *unitary program* (half the MZIs of
    an ``svd`` program and none of its attenuators, which a unitary would
    leave at full transmission, a setting no imperfect chip reaches).
    ``photocomp.compile`` picks this pass itself for a preset pipeline when
    the weights are a square matrix that fits one tile and is a scaled
    unitary to :data:`photocomp.core.metrics.UNITARY_TOL`.

    The part of a tile that holds the matrix must be square (an edge tile of
    ``r x c`` entries needs ``r == c``); its padding gets ``gain`` on the
    diagonal, so the tile is unitary and the padded modes pass straight
    through (their outputs are cropped). The scale is ``gain = ||A||_F /
    sqrt(r)``; an all-zero tile gets gain 0 and the identity.

    Args:
      tol: largest ``max |A^H A / gain^2 - I|`` accepted per tile; a tile
        beyond it is refused (use ``svd``).
    """

    name = "unitary"
    requires = frozenset({"tiled"})
    # the factor property the decompositions require (what svd provides)
    provides = frozenset({"svd"})
    counts = frozenset({"zero_tiles"})
    weight_units = frozenset({"max_gain"})
    tol: float = UNITARY_TOL

    def __post_init__(self):
        check_real(self.tol, "tol", low=0.0, low_open=True, high=1.0)

    def __call__(self, state: CompileState):
        blocks = np.array(state.require("blocks", "tile"), dtype=np.complex128)
        grid: TileGrid = state.require("grid", "tile")
        rows, cols = grid.extent()
        bad = np.flatnonzero(rows != cols)
        if bad.size:
            t = int(bad[0])
            raise PipelineError(
                f"pass 'unitary' needs square tiles: tile {t} holds {rows[t]}x{cols[t]} entries of the "
                f"{grid.out_dim}x{grid.in_dim} matrix on {grid.tile}x{grid.tile} tiles; use 'svd'")
        # the padding of a tile of r x r entries: gain on the diagonal beyond r, from the valid part's norm
        gain = valid_scale(blocks, rows)
        k = grid.tile
        i = np.arange(k)
        pad = i[None, :] >= rows[:, None]
        blocks[:, i, i] = np.where(pad, gain[:, None], blocks[:, i, i])
        with single_threaded_blas():
            _, dev = unitary_deviation(blocks)
        worst = int(np.argmax(dev)) if dev.size else 0
        if dev.size and dev[worst] > self.tol:
            raise PipelineError(
                f"pass 'unitary' needs every tile to be a scaled unitary to tol={self.tol:g}; tile {worst} "
                f"deviates by {dev[worst]:.3g} (max |A^H A / g^2 - I|); use 'svd'")
        zero = gain == 0
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            u = blocks / np.where(zero, 1.0, gain)[:, None, None]
        u[zero] = np.eye(k)
        return state.replace(svd=(u, None, None, gain)), {
            "max_gain": float(gain.max()) if gain.size else 0.0,
            "zero_tiles": int(zero.sum()),
            "max_unitarity_error": float(dev.max()) if dev.size else 0.0,
        }


def valid_scale(blocks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per tile ``||A||_F / sqrt(r)`` of its leading ``r x r`` block (``r = rows[t]``): the scale of a scaled unitary.

    The padding beyond ``r`` is zero, so the whole tile's norm is the valid block's; computed by
    :func:`photocomp.core.metrics.unitary_deviation`'s rule (scaled by a power of two, free of overflow).
    """
    b = np.asarray(blocks)
    e = power_of_two_exponent(b) if needs_scaling(b) else 0
    s = scale_by_power_of_two(b, -e) if e else b
    g = np.sqrt(np.sum(np.abs(s) ** 2, axis=(-2, -1)) / np.maximum(rows, 1))
    with np.errstate(over="ignore", under="ignore"):
        return np.ldexp(g, e)
