"""Black-box calibration of a crossbar: every weight cell's response read at once, then set in closed form.

:class:`Cells` calibrates a crossbar program (``docs/design.md`` §3.4) through the
:class:`~photocomp.hardware.instrument.Instrument` interface: heater drives in,
phase-stepped output fields out. It needs no model of the chip's couplers,
losses or splitter trees; nothing of the hidden chip is read.

Why a crossbar allows it. Entry ``(i, j)`` of a crossbar tile's matrix is the
one path from input j through weight cell ``(i, j)`` to output i, so it depends
on that cell's two heaters (and output i's phase reference) alone. With its
input shifter held, the entry is affine in ``e^{i d}`` for a change d of the
cell's internal phase: ``M_ij(d) = A_ij + B_ij e^{i d}`` (``B`` carries the
cell's path, its couplers and losses; ``A`` is what the couplers' extinction
leaves). Stepping every internal heater of the tile by the same ``d_k``
(``k = 1..probes``, spread evenly over a turn) and reading the tile's matrix
by phase stepping at each (:func:`~photocomp.calibration.insitu.read_matrix`:
``3 K`` input vectors) gives every cell's ``A`` and ``B`` by least squares, all
``K^2`` cells in ``probes`` configuration changes. Each step moves the heaters'
realised phases, with the heaters' crosstalk taken out through the nominal
crosstalk law and the characterised efficiencies
(:class:`~photocomp.calibration.insitu.HeaterModel`).

The setting. A cell's amplitude ranges over ``[||B| - |A||, |B| + |A|]``. The
tile takes a common scale ``c`` (its electronic gain restores it), chosen as
the model-based correction chooses it
(:func:`~photocomp.calibration.engine.crossbar_scales`): the scale whose cells,
clipped into their measured ranges, leave the least error. Every cell's
internal phase is then moved to the root of ``|A + B e^{i d}| = c |w_ij|``
nearest its present phase, and its input shifter by the phase that makes the
entry's phase the program's, ``arg w_ij - arg(A + B e^{i d})``. The output
phase references stay where they are: the measured entries carry them. This
is the local correction of :func:`~photocomp.calibration.engine.crossbar_cells`
with measured ``A`` and ``B`` instead of the chip's known errors; a second
round (``rounds``) measures again where the first left the tile and takes out
what the efficiency estimates made of the steps.

Where it stops. The steps, and the crosstalk compensation between a cell's
two heaters, are made with the characterised efficiencies, and their errors
bend the measured responses in a way more shots do not remove: on a default
16-mode crossbar it ends at about 2.4 times the model-based error whatever the
shots, where the twin (:class:`photocomp.Twin`), which fits the heaters with
everything else, comes within a few percent for twice the readings
(``benchmarks/measurement_cost.py``). With exact heater estimates it is exact.

Cost. Per tile and round, ``probes`` configurations of ``3 K`` readings (times
the shots) and one setting; the start and the end are read with
``check_shots`` times the shots, and per tile the better is returned (never
worse than the start, as measured). A mesh's entries depend on many cells at
once, so a mesh is refused with a message that names its methods. Faults are
survived as in :class:`~photocomp.calibration.insitu.InSitu`: failed reads are
retried (:func:`~photocomp.hardware.instrument.read_robust`), a round whose reads
keep failing is skipped and counted, refused drives are moved to another 2π
branch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from photocomp.calibration.engine import (
    MeasuredRun,
    cell_amplitudes,
    check_program,
    ideal_tiles,
)
from photocomp.calibration.insitu import begin_phase_run, finish_phase_run, tile_losses
from photocomp.compiler.program import Program
from photocomp.core.errors import MismatchError
from photocomp.core.validate import check_int
from photocomp.hardware.chip import heater_slices
from photocomp.hardware.instrument import Instrument, ReadFailed

__all__ = ["Cells", "CellsResult", "cell_responses", "cell_moves"]


@dataclasses.dataclass(frozen=True)
class CellsResult(MeasuredRun):
    """What :meth:`Cells.run` found and what it cost (:class:`~photocomp.calibration.engine.MeasuredRun`).

    Attributes (beyond the shared ones):
      drives_mw: ``(n_tiles, n_heaters)`` mW (per tile the start's where the
        calibrated ones measured no better).
      kept: ``"calibrated"``, ``"start"`` or ``"mixed"`` (per tile).
      history: ``(readings, chip_time_s, measured error)`` after every round
        (the error of the program's tiles as measured at the round's end; the last round's is the end
        check, read with ``check_shots`` times the shots).
      rounds_run: rounds made; unreachable: cells of the program whose wanted
        amplitude lay outside their measured range in the last round (clipped).
    """

    rounds_run: int
    unreachable: int

    method: ClassVar[str] = "cells"

    def details(self) -> dict:
        return {"rounds_run": self.rounds_run, "unreachable": self.unreachable}

    def label(self) -> str:
        return f"cells(rounds={self.rounds_run})"


def cell_responses(steps: np.ndarray, matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` of ``M(d) = A + B e^{i d}`` for every entry, by least squares over the probes.

    Args:
      steps: ``(P,)`` phase steps (rad), ``P >= 2`` distinct modulo 2π.
      matrices: ``(P, ...)`` the entries read at each step.
    """
    steps = np.asarray(steps, np.float64)
    design = np.stack([np.ones(steps.size), np.exp(1j * steps)], axis=1)  # (P, 2)
    flat = np.asarray(matrices, np.complex128).reshape(steps.size, -1)
    coef = np.linalg.lstsq(design, flat, rcond=None)[0]  # (2, n)
    shape = np.shape(matrices)[1:]
    return coef[0].reshape(shape), coef[1].reshape(shape)


def cell_moves(a: np.ndarray, b: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per entry the internal and input-phase moves that take ``A + B e^{i d}`` to ``c w``, in closed form.

    Args:
      a, b: ``(K, K)`` the measured responses (:func:`cell_responses`).
      want: ``(K, K)`` the program's entries ``w`` (any scale).

    Returns:
      ``(d, e, unreachable)``: the internal phase moves (the root of
      ``|A + B e^{i d}| = c |w|`` nearest 0, the nearest reachable amplitude
      where there is none), the input-phase moves ``arg w - arg(A + B e^{i d})``
      (0 where ``w = 0``) and which entries of ``w != 0`` were clipped. The
      scale c is :func:`~photocomp.calibration.engine.crossbar_scales`'s for the
      measured ranges (:func:`~photocomp.calibration.engine.cell_amplitudes`).
    """
    mag = np.abs(want)
    # the element a + b e^{id} is p e^{id} - q with p = b, q = -a: the known-chip correction's solve
    _, _, unreachable, half, chi = cell_amplitudes(b.ravel(), -a.ravel(), mag.ravel()[None], mag.ravel()[None] > 0)
    unreachable, half, chi = unreachable.reshape(mag.shape), half.reshape(mag.shape), chi.reshape(mag.shape)
    wrap = lambda x: np.mod(x + np.pi, 2 * np.pi) - np.pi  # noqa: E731
    plus, minus = wrap(half - chi), wrap(-half - chi)
    d = np.where(np.abs(a * b) > 0, np.where(np.abs(plus) <= np.abs(minus), plus, minus), 0.0)
    m = a + b * np.exp(1j * d)
    e = np.where(mag > 0, wrap(np.angle(want) - np.angle(m)), 0.0)
    return d, e, unreachable


@dataclasses.dataclass(frozen=True)
class Cells:
    """Black-box calibration of a crossbar program, every cell read at once (module docstring).

    Attributes:
      rounds: measure-and-set rounds per tile (int >= 1). One is the default: on a
        16 x 16 crossbar a second round changed the error by less than the
        shot noise's spread.
      probes: internal-phase steps read per round, spread evenly over a turn (int >= 3).
      shots: shots per reading (int >= 1). A unit probe reaches each of a
        K-input crossbar's detectors with about 1/K^2 of its power, so the
        default is a thousand.
      check_shots: shots factor of the start and end measurements that decide
        what is returned (int >= 1).
      retries: re-reads per fault before a read is given up (int >= 0).
      seed: seed of the measurement noise when ``photocomp.calibrate`` builds
        the :class:`~photocomp.BlackBoxChip` (int >= 0); the method itself
        draws nothing at random.

    Example:
      >>> Cells(shots=100)
      Cells(rounds=1, probes=3, shots=100, check_shots=1, retries=4, seed=0)
    """

    rounds: int = 1
    probes: int = 3
    shots: int = 1000
    check_shots: int = 1
    retries: int = 4
    seed: int = 0

    name = "cells"

    def __post_init__(self):
        for name in ("rounds", "shots", "check_shots"):
            object.__setattr__(self, name, check_int(getattr(self, name), f"Cells.{name}", low=1))
        object.__setattr__(self, "probes", check_int(self.probes, "Cells.probes", low=3))
        for name in ("retries", "seed"):
            object.__setattr__(self, name, check_int(getattr(self, name), f"Cells.{name}", low=0))

    def run(self, program: Program, instrument: Instrument, *, start_drives: npt.ArrayLike | None = None,
            heaters: tuple[npt.ArrayLike, npt.ArrayLike] | None = None) -> CellsResult:
        """Calibrate a crossbar ``program`` on ``instrument``; returns a :class:`CellsResult`.

        Args:
          program: a compiled crossbar program (``photocomp.compile(W, "crossbar-N")``; any number of
            full tiles, each a drive setting of the chip).
          instrument: an :class:`~photocomp.hardware.instrument.Instrument` of the program's target.
          start_drives, heaters: as for :meth:`photocomp.InSitu.run`.
        """
        t0 = time.perf_counter()
        program = check_program(program)
        tgt = program.target
        if program.circuit != "crossbar":
            others = "'nullify', 'selfconfig', " + ("'diagonalize', " if tgt.mesh == "reck" else "")
            raise MismatchError(f"Cells reads a crossbar's cells one entry each; a {program.circuit} program on "
                                f"{tgt.name!r} has entries that mix many cells (calibrate it by measurement with "
                                f"{others}'insitu' or 'twin')")
        program, instrument, s, start, before = begin_phase_run(program, instrument, start_drives, heaters,
                                                                self.shots, self.retries, "Cells.run")
        h, n_tiles = instrument.n_heaters, program.n_tiles
        sl = heater_slices(tgt, "crossbar")
        internal, external = np.arange(h)[sl["u_int"]], np.arange(h)[sl["u_ext"]]
        tiles = ideal_tiles(program).astype(np.complex128)
        norm = float(np.sum(np.abs(tiles) ** 2))
        check = self.shots * self.check_shots
        steps = 2 * math.pi * np.arange(self.probes) / self.probes
        start_losses = tile_losses(s, tiles, start, check)
        phases = start.copy()
        history = []
        skipped, unreachable, rounds = 0, 0, 0
        end_losses = None
        for r in range(self.rounds):
            unreachable = 0
            for t in range(n_tiles):
                try:
                    reads = []
                    for d in steps:
                        probe = phases[t].copy()
                        probe[internal] += d
                        reads.append(s.matrix(probe))
                except ReadFailed:
                    skipped += 1
                    continue
                a, b = cell_responses(steps, np.asarray(reads))
                d, e, clipped = cell_moves(a, b, tiles[t])
                unreachable += int(clipped.sum())
                moved = phases[t].copy()
                moved[internal] += d.ravel()  # cell i K + j: entry (i, j)
                moved[external] += e.ravel()
                phases[t] = s.apply(moved)
            rounds += 1
            last = r == self.rounds - 1  # the last round's read is the end check, at its shots
            try:
                losses = tile_losses(s, tiles, phases, check if last else None)
            except ReadFailed:
                skipped += 1
                continue
            end_losses = losses if last else None
            spent = instrument.ledger.since(before)
            err = math.sqrt(float(losses.sum()) / norm)
            history.append((int(spent["readings"]), float(spent["chip_time_s"]), err))
        return CellsResult(**finish_phase_run(s, tiles, start, start_losses, phases, end_losses, check, before, t0),
                           history=tuple(history), skipped=skipped, stopped=f"{rounds} rounds", rounds_run=rounds,
                           unreachable=unreachable)
