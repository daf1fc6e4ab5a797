"""``canonicalize``: bring every phase into its documented range, exactly."""

from __future__ import annotations

import dataclasses

import numpy as np

from photocomp.compiler.canonical import canonicalize_mesh
from photocomp.compiler.pipeline import Pass
from photocomp.compiler.state import CompileState
from photocomp.core.convention import THETA_RANGE
from photocomp.core.phases import MeshPhases
from photocomp.sim.ideal import changed_tiles, updated_program_np


def _canon(mp: MeshPhases) -> MeshPhases:
    return MeshPhases(mp.layout, *canonicalize_mesh(mp.layout, mp.theta, mp.phi, mp.out_phase))


@dataclasses.dataclass(frozen=True)
class Canonicalize(Pass):
    """theta into [0, pi/2], phi and output phases into [0, 2 pi), attenuators into [0, pi/2].

    Transform pass; the implemented matrix is unchanged (the report records
    the largest change, ~1e-15, and how many tiles had phases to change).
    Tiles whose phases are canonical already are left exactly as they are,
    and only the changed tiles are simulated again: after ``clements`` or
    ``reck``, which emit canonical phases, nothing is.
    """

    name = "canonicalize"
    requires = frozenset({"phases"})
    provides = frozenset({"canonical"})
    counts = frozenset({"tiles_changed"})
    weight_units = frozenset({"max_matrix_change"})

    def __call__(self, state: CompileState):
        pm = state.require("phase_map", "clements")
        if pm.v is None:  # a unitary program: one mesh, no attenuators
            new = pm.replace(u=_canon(pm.u))
        else:
            sigma = np.asarray(pm.sigma, dtype=np.float64)
            sig = np.mod(sigma, 2 * np.pi)
            # cos is even and 2 pi periodic; a sign flip (sigma in (pi/2, 3pi/2)) moves into the gain
            neg = np.cos(sig) < 0
            sig = np.arccos(np.clip(np.abs(np.cos(sig)), 0.0, 1.0))
            in_range = (sigma >= THETA_RANGE[0]) & (sigma <= THETA_RANGE[1])
            sig = np.where(in_range, sigma, sig)  # canonical already: kept exactly
            neg &= ~in_range
            new = pm.replace(v=_canon(pm.v), u=_canon(pm.u), sigma=sig)
            if neg.any():
                # a negative amplitude on mode j is a pi phase: push it into V's output screen
                v = new.v
                new = new.replace(
                    v=MeshPhases(v.layout, v.theta, v.phi, np.mod(v.out_phase + np.pi * neg, 2 * np.pi))
                )
        if not changed_tiles(pm, new).any():  # the same program: what was kept of it stays, simulated or not
            return state.replace(phase_map=new, matrix=state.matrix, meshes=state.meshes,
                                 matrix_error=state.matrix_error), {"max_matrix_change": 0.0, "tiles_changed": 0}
        # a tile whose settings are canonical already keeps its block of the matrix; only the others are simulated
        before = state.program_matrix()
        after, meshes, changed = updated_program_np(pm, before, state.meshes, new)
        change = float(np.max(np.abs(after - before)))
        return state.replace(phase_map=new, matrix=after, meshes=meshes), {
            "max_matrix_change": change,
            "tiles_changed": int(changed.sum()),
        }
