"""``crossbar``: one weight cell per matrix entry, in closed form (:mod:`photocomp.core.crossbar`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from photocomp.compiler.pipeline import Pass
from photocomp.compiler.state import CompileState
from photocomp.core.crossbar import weights_to_cells
from photocomp.core.errors import PipelineError
from photocomp.core.ir import PhaseMap, TileGrid
from photocomp.core.layout import layout
from photocomp.core.phases import MeshPhases
from photocomp.core.registry import quote
from photocomp.passes.decompose import tile_errors
from photocomp.sim import ideal


@dataclasses.dataclass(frozen=True)
class Crossbar(Pass):
    """Set every weight cell of every tile from its matrix entry (decomposition pass; replaces ``svd``
    and the mesh passes on a crossbar target).

    Tile ``t``'s entry ``w_ij = |w_ij| e^{i arg w_ij}`` becomes cell ``i K + j`` with ``theta =
    arccos(|w_ij| / max |w|)`` and ``phi = arg w_ij``, and the tile's gain is ``K max |w|`` (an ideal
    tile computes ``W x / K``): the largest entry passes at full transmission, the others are dimmed,
    and no factorization is needed. Zero padding is a dark cell. The report records the matrix error of
    the tiles rebuilt from their phases (rounding).
    """

    name = "crossbar"
    requires = frozenset({"tiled"})
    provides = frozenset({"phases", "canonical"})  # the cells' phases are canonical as set
    counts = frozenset({"mzis", "dark_cells"})

    def __call__(self, state: CompileState):
        if state.target.mesh != "crossbar":
            raise PipelineError(
                f"pass 'crossbar' sets the weight cells of a crossbar target; target {quote(state.target.name)} "
                f"is a {state.target.mesh} mesh; use 'svd' (or 'unitary') and the {state.target.mesh!r} pass")
        grid: TileGrid = state.require("grid", "tile")
        blocks = np.asarray(state.require("blocks", "tile"), np.complex128)
        theta, phi, gain = weights_to_cells(blocks)
        lay = layout("crossbar", grid.tile)
        pm = PhaseMap.unitary(grid, MeshPhases(lay, theta, phi, np.zeros((grid.n_tiles, grid.tile))), gain)
        tiles, _, u_hat = ideal.tiles_and_meshes_np(pm)
        err = float(np.sqrt(tile_errors(grid, blocks, tiles).sum()))
        norm = float(np.linalg.norm(state.weights))
        metrics = {
            "matrix_error": err / norm if norm > 0 else err,
            "mzis": int(pm.n_tiles * pm.n_mzi_per_tile),
            "dark_cells": int(np.count_nonzero(theta == np.pi / 2)),
        }
        return state.replace(phase_map=pm, matrix=pm.grid.join(tiles), meshes=(None, u_hat)), metrics
