"""``clements`` / ``reck``: decompose every tile's U and V^H into MZI phases."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from photocomp.decompose import decompose
from photocomp.errors import PipelineError
from photocomp.ir import CompileState, PhaseMap
from photocomp.metrics import fidelity
from photocomp.phases import MeshPhases
from photocomp.pipeline import Pass
from photocomp.simulate import evaluate


@dataclasses.dataclass(frozen=True)
class _Decompose(Pass):
    requires = frozenset({"svd"})
    provides = frozenset({"phases", "canonical"})  # decompositions emit canonical ranges
    kind = ""

    def __call__(self, state: CompileState):
        if state.target.mesh != self.kind:
            raise PipelineError(
                f"pass {self.name!r} builds a {self.kind} mesh but target {state.target.name!r} "
                f"is a {state.target.mesh} chip; use the {state.target.mesh!r} pass"
            )
        u, s_norm, vh, gain = state.require("svd", "svd")
        t = u.shape[0]
        both = decompose(np.concatenate([vh, u]), self.kind, check=False)
        v_ph = MeshPhases(both.layout, both.theta[:t], both.phi[:t], both.out_phase[:t])
        u_ph = MeshPhases(both.layout, both.theta[t:], both.phi[t:], both.out_phase[t:])
        sigma = np.arccos(np.clip(s_norm, 0.0, 1.0))
        pm = PhaseMap(grid=state.grid, v=v_ph, sigma=sigma, u=u_ph, gain=gain)
        with jax.enable_x64(True):
            got = np.asarray(both.unitary())
            f = np.asarray(fidelity(np.concatenate([vh, u]), got))
        metrics = {"min_mesh_fidelity": float(f.min()), **evaluate(state.weights, pm)}
        return state.replace(phase_map=pm), metrics


@dataclasses.dataclass(frozen=True)
class Clements(_Decompose):
    """Clements rectangular decomposition of every tile (depth K per mesh).

    Reference: W. R. Clements et al., Optica 3, 1460 (2016).
    """

    name = "clements"
    kind = "clements"


@dataclasses.dataclass(frozen=True)
class Reck(_Decompose):
    """Reck triangular decomposition of every tile (depth 2K - 3 per mesh).

    Reference: M. Reck et al., PRL 73, 58 (1994).
    """

    name = "reck"
    kind = "reck"
