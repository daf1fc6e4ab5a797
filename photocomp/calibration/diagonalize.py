"""Self-configuration of a triangular mesh with its output detectors alone: progressive diagonalisation.

:class:`Diagonalize` programs a one-tile unitary program into a Reck
(triangular) mesh through the :class:`~photocomp.hardware.instrument.Instrument`
interface, reading only the chip's output detectors: no in-mesh monitors, no
model of the chip's couplers or losses, nothing of the hidden chip read.

The diagonalisation. Reck's decomposition (``docs/design.md`` §3.2) clears the
rows of U from the last up, ``U C_{N-1}^-1 C_{N-2}^-1 ... C_1^-1 = D``: the
chain ``C_r`` of MZIs on modes ``(0, 1), (1, 2), ..., (r - 1, r)`` gathers the
light that U sends to output r into waveguide r, which leaves the mesh at
output r with no further MZI, and passes the rest on, through the upper ports
of its MZIs, to the chains of the smaller triangle. Light meets the chains in
the order ``r = N - 1, ..., 1``, and the mesh is configured chain by chain in
that order, each chain diagonalising one more row of the program.

One MZI at a time, from the external detector. Within chain r the light
bound for output r flows down the chain: MZI ``(j - 1, j)`` joins what came
down from the chain's inputs ``0..j-1`` (its upper port) with input j (its
lower port), passes the sum on through its lower port and drops the rest
through its upper port into the rest of the mesh. With the chain's inputs
``0..j`` lit by their share of the light bound for output r and its inputs
above j dark, the MZIs below ``(j - 1, j)`` in the chain see light at their
upper ports only, so the power at output r is the power of MZI ``(j - 1, j)``'s
lower port times a factor the MZI does not change: maximising the power at
output r nulls the MZI's drop port, which is Miller's self-configuring step
(D. A. B. Miller, Photon. Res. 1, 1 (2013)) read at an output instead of at a
detector inside the mesh. Hamerly, Bandyopadhyay and Englund (Phys. Rev.
Applied 18, 024019 (2022)) show that such null-based steps stay stable in
large meshes where steps that match matrix entries do not, and that a
triangular mesh can be self-configured with external detectors alone. The MZIs
of chain r are set in the order ``j = 1, ..., r``; each by the rounds of
:meth:`~photocomp.calibration.nullify.HeaterMoves.tune` (a 3 x 3 grid of
probes of its external and internal heaters fitted by the trigonometric
polynomial of the output power, then one heater at a time with smaller steps),
on the negated power at output r.

Lighting a chain's inputs. The chains set before lie between the chip's inputs
and chain r's, so the input that gives chain r's inputs a wanted field is
computed from the nominal transfer of those chains (the program's phases on
the nominal chip, ``x = P_r^-1 y``). A chain set by maximising its outputs is
its nominal self up to phases on its output ports (an MZI with the right
splitting and the right phase between its inputs is the nominal MZI up to
phases on its outputs; the phase between its inputs is what the maximisation
sets), so the computed input lights the wanted ports with phases that the next
chain's maximisation takes as they come. What the losses' spread and the
couplers' reach leave of that premise grows into the next chains' settings:
an MZI that cannot reach the full cross state its chain asks of it drops a
little of the light bound for its output, which no later step takes back.
After the last chain the output heaters take the output phases off by phase
stepping against a reference beam, as
:class:`~photocomp.calibration.selfconfig.SelfConfig` does.

Rectangular meshes. A Clements mesh's left multiplications clear rows from the
outputs' side; the light they null reaches the outputs through MZIs not set
yet. Hamerly et al. extend their scheme to it with a row of detectors along
the mesh's diagonal, which this chip model does not have; a Clements chip is
calibrated by measurement with :class:`~photocomp.calibration.nullify.Nullify`
(in-mesh monitors), :class:`~photocomp.calibration.selfconfig.SelfConfig`,
:class:`~photocomp.calibration.insitu.InSitu` or the twin.

Every heater move holds the other heaters' phases under the nominal crosstalk
law (:class:`~photocomp.calibration.nullify.HeaterMoves`). Start, guarantee
and faults as :class:`~photocomp.calibration.selfconfig.SelfConfig`: the start
is the program's ideal phases through a heater characterisation; the matrix
error is measured by phase stepping at the start and at the end and the start
is returned if the end is not better; failed reads are retried, an MZI whose
reads keep failing is left where it is for that round, and refused drives are
moved to another 2π branch.
"""

from __future__ import annotations

import dataclasses
import time
from typing import ClassVar

import jax
import numpy as np
import numpy.typing as npt

from photocomp.calibration.engine import MeasuredRun, ideal_settings
from photocomp.calibration.nullify import HeaterMoves
from photocomp.calibration.selfconfig import DriveSession, begin_unitary_run, finish_unitary_run
from photocomp.compiler.program import Program
from photocomp.core.errors import MismatchError
from photocomp.core.layout import nulling_schedule
from photocomp.core.validate import check_int, check_real
from photocomp.hardware.chip import nominal_chip
from photocomp.hardware.chipsim import stage_coefficients
from photocomp.hardware.instrument import Instrument, ReadFailed, read_robust

__all__ = ["Diagonalize", "DiagonalizeResult", "chain_inputs"]


@dataclasses.dataclass(frozen=True)
class DiagonalizeResult(MeasuredRun):
    """What :meth:`Diagonalize.run` found and what it cost (:class:`~photocomp.calibration.engine.MeasuredRun`).

    Attributes (beyond the shared ones):
      history: ``(readings, chip_time_s, 1 - J / P)`` at the start and after
        every pass (``J`` the power the program's K inputs deliver to their own
        outputs, ``P`` all the power the outputs received).
      passes_run: passes made through the mesh.
      configured_drives_mw, configured_error_measured: the drives the
        configuration ended at and their measured error, kept or not.
    """

    passes_run: int
    configured_drives_mw: np.ndarray
    configured_error_measured: float

    method: ClassVar[str] = "diagonalize"

    def details(self) -> dict:
        return {"passes_run": self.passes_run, "configured_error_measured": self.configured_error_measured}

    def label(self) -> str:
        return f"diagonalize(passes={self.passes_run})"


def chain_inputs(coef: np.ndarray, kind: str, n: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The chains of a Reck mesh in the order light meets them, with the inputs that set them.

    Args:
      coef: ``(4, n_mzi)`` each MZI's 2 x 2 transfer ``[[c0, c1], [c2, c3]]`` on its
        modes ``(k, k + 1)``, in layout order (the nominal chip's, e.g.
        :func:`photocomp.hardware.chipsim.stage_coefficients`).
      kind, n: the mesh's kind (``"reck"``) and modes.

    Returns:
      per chain ``(r, mzis, inputs)``: the output r it serves, its MZIs (layout
      indices, chain order ``(0, 1), (1, 2), ...``) and ``inputs`` ``(r + 1, n)``:
      row j the unit input whose light reaches chain r's inputs as the nominal
      mesh's light bound for output r does on the chain's inputs ``0..j``, and
      nothing on its inputs above j. For the transfer ``M`` of these MZIs,
      ``(M @ inputs[r])`` is, up to its norm, the unit vector of output r.
    """
    sched = nulling_schedule(kind, n)
    ks, rows, slots = sched["k"], sched["target"], sched["slot"]
    chains = []
    before = []  # P_r: the transfer of the chains light meets before chain r
    p = np.eye(n, dtype=complex)
    for r in range(n - 1, 0, -1):
        steps = np.flatnonzero(rows == r)
        chains.append((r, slots[steps]))
        before.append(p.copy())
        for slot, k in zip(slots[steps], ks[steps]):
            p[[k, k + 1]] = coef[:, slot].reshape(2, 2) @ p[[k, k + 1]]
    to_out = np.linalg.inv(p)  # column r: the input the mesh sends to output r alone
    out = []
    for (r, mzis), p_r in zip(chains, before):
        field = p_r @ to_out[:, r]  # what chain r's inputs receive of the light bound for output r
        parts = np.tril(np.ones((r + 1, n))) * field[None, :]  # row j: its entries 0..j
        xs = np.linalg.solve(p_r, parts.T).T
        out.append((r, mzis, xs / np.maximum(np.linalg.norm(xs, axis=1, keepdims=True), 1e-300)))
    return out


class _Chains(HeaterMoves):
    """One run's state: the session, the heaters, and the chains with their inputs."""

    def __init__(self, cfg: Diagonalize, s: DriveSession, program: Program):
        super().__init__(cfg, s, program)
        lay = program.phase_map.u.layout
        ideal = ideal_settings(program)
        with jax.enable_x64(True):
            coef = np.asarray(stage_coefficients(nominal_chip(program.target, "unitary"), lay, "u",
                                                 np.asarray(ideal.u_int)[0], np.asarray(ideal.u_ext)[0], None,
                                                 dtype=np.complex128))
        self.chains = chain_inputs(coef, lay.kind, lay.n_modes)

    def values(self, key, x: np.ndarray) -> np.ndarray:
        """The negated power at output ``key`` for the inputs ``x`` ``(B, K)`` (summed): what tuning lowers."""
        r = read_robust(self.s.ins, x, shots=self.cfg.shots, retries=self.cfg.retries)
        return -np.asarray(r)[:, key].sum(axis=0, keepdims=True)

    def chain(self, index: int) -> None:
        """Set chain ``index``'s MZIs, top down, each by maximising its output's power (large probe steps
        first in every pass: the peak of a sinusoid is flat, and small steps would read mostly noise)."""
        r, mzis, inputs = self.chains[index]
        for j in range(1, r + 1):  # MZI (j - 1, j): inputs 0..j lit
            self.tune(r, inputs[j][None], mzis[j - 1:j])


@dataclasses.dataclass(frozen=True)
class Diagonalize:
    """Self-configuration of a triangular (Reck) mesh from its output powers, chain by chain (module docstring).

    Attributes:
      passes: passes through the mesh (int >= 1); a later pass starts from the
        earlier one's drives. One is the default: on default chips of 8 and
        16 modes a second and a third pass changed the error by less than the
        spread of the shot noise (``benchmarks/measurement_cost.py``).
      rounds: largest number of rounds over an MZI's heaters per pass (int >= 1):
        the joint 3 x 3 probe fit, then one heater at a time. Two is the
        default: on a default 16-mode chip one, two and four rounds ended
        within the shot noise's spread of each other, and two cost a third
        fewer configuration changes than four.
      tol: an MZI is done when no heater moved more than this (rad, real >= 0).
      shots: shots per reading (int >= 1).
      phase_shots: extra shots factor for the output-phase and error read-outs (int >= 1).
      phase_rounds: rounds of output-phase correction (int >= 0).
      retries: re-reads per fault before a read is given up (int >= 0).
      seed: seed of the measurement noise when ``photocomp.calibrate`` builds
        the :class:`~photocomp.BlackBoxChip` (int >= 0); the method itself
        draws nothing at random.

    An MZI's first round costs nine configuration changes and readings (the
    3 x 3 grid of probes of its two heaters), each later round six (three per
    heater); every reading is one input vector.

    Example:
      >>> Diagonalize(shots=100)
      Diagonalize(passes=1, rounds=2, tol=0.001, shots=100, phase_shots=1, phase_rounds=3, retries=4, seed=0)
    """

    passes: int = 1
    rounds: int = 2
    tol: float = 1e-3
    shots: int = 1000
    phase_shots: int = 1
    phase_rounds: int = 3
    retries: int = 4
    seed: int = 0

    name = "diagonalize"

    def __post_init__(self):
        for name in ("passes", "rounds", "shots", "phase_shots"):
            object.__setattr__(self, name, check_int(getattr(self, name), f"Diagonalize.{name}", low=1))
        for name in ("phase_rounds", "retries", "seed"):
            object.__setattr__(self, name, check_int(getattr(self, name), f"Diagonalize.{name}", low=0))
        object.__setattr__(self, "tol", check_real(self.tol, "Diagonalize.tol", low=0.0))

    def run(self, program: Program, instrument: Instrument, *, start_drives: npt.ArrayLike | None = None,
            heaters: tuple[npt.ArrayLike, npt.ArrayLike] | None = None) -> DiagonalizeResult:
        """Configure ``instrument`` to implement ``program``; returns a :class:`DiagonalizeResult`.

        Args:
          program: a compiled unitary program of one tile on a Reck mesh of
            MZIs (``photocomp.compile(U, "reck-N")`` of a unitary U).
          instrument: an :class:`~photocomp.hardware.instrument.Instrument` of the
            program's target and a ``"unitary"`` circuit (its output detectors
            are all it reads).
          start_drives, heaters: as for :meth:`photocomp.SelfConfig.run`.
        """
        t0 = time.perf_counter()
        if isinstance(program, Program):  # the mesh checked first; begin_unitary_run checks the rest
            lay = program.target.layout
            if lay.kind != "reck" or lay.cell.heaters != ("external", "internal"):
                others = ("'cells', 'insitu' or 'twin'" if lay.kind == "crossbar"
                          else "'nullify', 'selfconfig', 'insitu' or 'twin'")
                raise MismatchError(
                    f"Diagonalize configures a triangular (Reck) mesh of MZIs from its output powers; target "
                    f"{program.target.name!r} is a {lay.kind} mesh of {lay.cell.name!r} cells (calibrate it by "
                    f"measurement with {others})")
        program, instrument, s, start, err_start, before = begin_unitary_run(
            self, program, instrument, start_drives, heaters, "Diagonalize.run")
        chains = _Chains(self, s, program)
        history = []

        def note() -> None:
            try:
                s.delivered()
            except ReadFailed:
                s.skipped += 1
                return
            spent = instrument.ledger.since(before)
            history.append((int(spent["readings"]), float(spent["chip_time_s"]), 1.0 - s.fraction))

        s.p = start
        note()
        passes = 0
        for _ in range(self.passes):
            for index in range(len(chains.chains)):
                chains.chain(index)
            passes += 1
            note()
        return DiagonalizeResult(**finish_unitary_run(self, s, program, start, err_start, before, t0),
                                 history=tuple(history), skipped=s.skipped + chains.skipped,
                                 stopped=f"{passes} passes", passes_run=passes)
