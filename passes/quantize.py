"""``quantize``: round every phase to the levels the chip's DACs can set."""

from __future__ import annotations

import dataclasses

import numpy as np

from photocomp.compiler.pipeline import Pass
from photocomp.compiler.state import CompileState
from photocomp.core import convention
from photocomp.core.errors import UnknownNameError
from photocomp.core.metrics import np_matrix_error
from photocomp.core.phases import MeshPhases
from photocomp.core.registry import quote
from photocomp.core.validate import check_int
from photocomp.hardware.dac import SCHEMES, level_at_or_above, quantize_phase
from photocomp.sim.ideal import updated_program_np


def _quantize_theta(theta, bits, scheme):
    internal, _ = convention.to_physical(np.asarray(theta, dtype=np.float64), 0.0)
    q = quantize_phase(np.asarray(internal), bits, scheme)
    # internal phase 2 theta + pi lives in [pi, 2 pi] for canonical theta: 2 pi wraps to 0,
    # and a level just below pi would give theta < 0, so take the lowest level >= pi instead
    q = np.where(q < np.pi / 2, q + 2 * np.pi, q)
    q = np.where(q < np.pi, level_at_or_above(np.pi, bits, scheme), q)
    th, _ = convention.from_physical(q, 0.0)
    return np.clip(np.asarray(th), 0.0, np.pi / 2)


def _quantize_mesh(mp: MeshPhases, bits, scheme) -> MeshPhases:
    fixed = mp.layout.cell.programming == "fixed"  # a static coupler's splitting has no heater to quantize
    return MeshPhases(
        mp.layout,
        mp.theta if fixed else _quantize_theta(mp.theta, bits, scheme),
        quantize_phase(mp.phi, bits, scheme),
        quantize_phase(mp.out_phase, bits, scheme),
    )


@dataclasses.dataclass(frozen=True)
class Quantize(Pass):
    """Quantize internal, external, output and attenuator phases to DAC levels.

    Args:
      bits: DAC resolution; default (``None``) the target's ``dac_bits``.
      scheme: ``"voltage"`` (phase = pi (V/V_pi)^2 with V on a uniform grid,
        the physical default) or ``"linear"`` (uniform in phase); see
        :mod:`photocomp.hardware.dac`.

    The report records the matrix error before and after, i.e. the fidelity
    cost of finite DAC resolution, and the largest phase change.
    """

    bits: int | None = None
    scheme: str = "voltage"

    name = "quantize"
    requires = frozenset({"phases", "canonical"})
    provides = frozenset({"quantized"})

    def __post_init__(self):
        if self.bits is not None:
            check_int(self.bits, "bits", low=1, high=32)
        if self.scheme not in SCHEMES:
            raise UnknownNameError(f"scheme must be one of {SCHEMES}; got {quote(self.scheme)}")

    def __call__(self, state: CompileState):
        pm = state.require("phase_map", "clements")
        bits = state.target.dac_bits if self.bits is None else self.bits
        kept = state.matrix  # None: not simulated (then quantize simulates the rounded program whole)
        if state.matrix_error is not None:
            before = state.matrix_error
        else:
            kept = state.program_matrix()
            before = np_matrix_error(state.weights, kept)
        if pm.v is None:  # a unitary program: one mesh
            new = pm.replace(u=_quantize_mesh(pm.u, bits, self.scheme))
            pairs = [(new.u.phi, pm.u.phi), (new.u.theta, pm.u.theta), (new.u.out_phase, pm.u.out_phase)]
        else:
            new = pm.replace(
                v=_quantize_mesh(pm.v, bits, self.scheme),
                u=_quantize_mesh(pm.u, bits, self.scheme),
                sigma=_quantize_theta(pm.sigma, bits, self.scheme),
            )
            pairs = [(new.v.phi, pm.v.phi), (new.u.phi, pm.u.phi), (new.v.theta, pm.v.theta),
                     (new.u.theta, pm.u.theta), (new.sigma, pm.sigma)]
        # phases on DAC levels already: tile kept (the whole program simulated where its matrix was not kept)
        matrix, meshes, _ = updated_program_np(pm, kept, state.meshes, new)
        after = np_matrix_error(state.weights, matrix)
        dphi = max(float(np.max(np.abs(convention.phase_difference(a, b)))) if np.size(a) else 0.0
                   for a, b in pairs)
        return state.replace(phase_map=new, matrix=matrix, meshes=meshes, matrix_error=after), {
            "bits": bits,
            "matrix_error_before": before,
            "matrix_error": after,
            "max_phase_error": dphi,
        }
