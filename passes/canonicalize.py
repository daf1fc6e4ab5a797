"""``canonicalize``: bring every phase into its documented range, exactly."""

from __future__ import annotations

import dataclasses

import numpy as np

from photocomp.canonical import canonicalize_mesh
from photocomp.ir import CompileState
from photocomp.phases import MeshPhases
from photocomp.pipeline import Pass
from photocomp.simulate import program_matrix_np


def _canon(mp: MeshPhases) -> MeshPhases:
    return MeshPhases(mp.layout, *canonicalize_mesh(mp.layout, mp.theta, mp.phi, mp.out_phase))


@dataclasses.dataclass(frozen=True)
class Canonicalize(Pass):
    """theta into [0, pi/2], phi and output phases into [0, 2 pi), attenuators into [0, pi/2].

    Transform pass; the implemented matrix is unchanged (the report records
    the largest change, ~1e-15).
    """

    name = "canonicalize"
    requires = frozenset({"phases"})
    provides = frozenset({"canonical"})

    def __call__(self, state: CompileState):
        pm = state.require("phase_map", "clements")
        before = state.program_matrix()
        sig = np.mod(np.asarray(pm.sigma, dtype=np.float64), 2 * np.pi)
        # cos is even and 2 pi periodic; a sign flip (sigma in (pi/2, 3pi/2)) moves into the gain
        neg = np.cos(sig) < 0
        sig = np.arccos(np.clip(np.abs(np.cos(sig)), 0.0, 1.0))
        new = pm.replace(v=_canon(pm.v), u=_canon(pm.u), sigma=sig)
        if neg.any():
            # a negative amplitude on mode j is a pi phase: push it into V's output screen
            v = new.v
            new = new.replace(
                v=MeshPhases(v.layout, v.theta, v.phi, np.mod(v.out_phase + np.pi * neg, 2 * np.pi))
            )
        after = program_matrix_np(new)
        return state.replace(phase_map=new, matrix=after), {"max_matrix_change": float(np.max(np.abs(after - before)))}
