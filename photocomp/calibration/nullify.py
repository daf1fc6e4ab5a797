"""Calibration by in-mesh nullification: Pai et al. 2020's parallel programming, and one MZI at a time.

:class:`Nullify` programs a one-tile unitary program into a chip through the
:class:`~photocomp.hardware.instrument.Instrument` interface and the chip's
in-mesh power monitors (:class:`~photocomp.hardware.instrument.MonitoredInstrument`:
a monitor on every waveguide after every column of MZIs). It needs no model of
the chip's couplers; nothing of the hidden chip is read.

The principle (Miller's self-configuration with inputs computed from the network,
D. A. B. Miller, Opt. Express 25, 29233 (2017), made parallel by Pai et al. 2020).
Let ``P_c`` be the transfer of the nominal chip's columns ``0..c`` with the
program's phases. Choose a field ``y_c`` after column c that is zero on the
lower output port of every MZI of the column and of unit modulus with a
seeded random phase everywhere else, and send ``x_c = P_c^-1 y_c`` (the
inverse, not the adjoint: the edge waveguides that pass a column without an
MZI lose less light, so ``P_c`` is not unitary), normalised. If columns
``0..c-1`` of the chip implement the nominal ones up to a diagonal phase
screen (what each column's own tuning leaves), every MZI of column c sees its
nominal pair of input fields up to phases, and nulling the power at its
null-port monitor makes its lower row orthogonal to its inputs, hence the
MZI its nominal self up to the phases of its outputs, whatever its couplers'
errors, within the MZI's reach. After the last column the mesh is the
program's unitary up to a phase screen, which the output heaters take off by
phase stepping against a reference beam (as
:class:`~photocomp.calibration.selfconfig.SelfConfig` does).

Several inputs per column. The premise fails by a little wherever the MZIs
already set are not exactly their nominal selves (the spread of MZI losses,
which no phase can undo; monitor noise): an MZI nulling one input then
absorbs the error that input brings, and the unitary MZI passes the opposite
error on to its other port, so errors grow from column to column. Nulling
the summed power of ``vectors`` inputs (``y_c`` with independent random
phases) makes each MZI the least-squares compromise over inputs whose
upstream errors differ, which stays near its nominal self. What remains
still grows with the depth: ``benchmarks/nullification.py`` (table in
``benchmarks/README.md``) measures the method against mesh size, monitor
strength and the number of inputs, beside ``method="model"``.

Tuning one column. The power at a null port is ``|A + B e^{ii} + C e^{ie} +
D e^{i(e+i)}|^2`` in the MZI's external (e) and internal (i) heater phases: a
trigonometric polynomial of nine terms, which a 3 x 3 grid of probes at
``0, ±2π/3`` determines; its minimum is searched on a grid and refined, so the
first round lands near the null from anywhere. Later rounds probe one heater
at a time (``A + B cos d + C sin d`` through three probes, the
best-conditioned fit) with steps that shrink to 0.6 rad and moves limited to
the step, until no heater moved more than ``tol``; cells with trim heaters
(:attr:`photocomp.core.cell.Cell.trims`) probe each trim heater the same way.
A probe never reads the null itself, so a 10-bit monitor resolves the minimum
well below its quantisation step. Every move holds the other heaters' phases
under the nominal crosstalk law (the heater layout's, the same on every chip
of a target): a heater's neighbours take ``-X`` of its phase change, and a
drive that must jump a 2π branch has its changed crosstalk taken out too.
Without this, probing a column's heaters moves its neighbours' phases and
bends every fit by a fraction of the crosstalk.

Schedules. ``"parallel"`` (Pai et al. 2020): the MZIs of a column do not
interact, so every MZI of the column is probed at once, and the configuration
changes are proportional to the optical depth, about ``passes x depth x
(9 + 6 (rounds - 1))``. ``"sequential"``: one MZI at a time, as Miller's
progressive (2013) and direct (2017) self-configuration tune a mesh; the same inputs and fits, about
``n_mzi / depth`` times the configuration changes. A second pass
(``passes``) re-nulls every column from small steps.

Start, guarantee, faults: as :class:`~photocomp.calibration.selfconfig.SelfConfig`:
the start is the program's ideal phases through a heater characterisation;
the matrix error is measured by phase stepping at the start and at the end
and the start is returned if the end is not better; failed reads are retried
(:func:`~photocomp.hardware.instrument.read_robust`), an MZI group whose
reads keep failing is skipped for that round, and refused drives are moved to
another 2π branch. A triangular mesh can be configured without monitors, from
its outputs: :class:`~photocomp.calibration.diagonalize.Diagonalize`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import ClassVar

import jax
import numpy as np
import numpy.typing as npt

from photocomp.calibration.engine import MeasuredRun, check_program, ideal_settings
from photocomp.calibration.selfconfig import DriveSession, begin_unitary_run, finish_unitary_run, fit_sinusoid
from photocomp.compiler.program import Program
from photocomp.core.errors import InvalidTypeError, MismatchError, UnknownNameError
from photocomp.core.validate import check_int, check_real
from photocomp.hardware.chip import crosstalk_matrix, heater_positions, heater_slices, nominal_chip
from photocomp.hardware.chipsim import stage_coefficients
from photocomp.hardware.instrument import Instrument, MonitoredInstrument, ReadFailed, as_instrument, read_robust

__all__ = ["Nullify", "NullifyResult", "SCHEDULES", "DEFAULT_MONITOR_FRACTION", "FINE_ROUND", "HeaterMoves"]

SCHEDULES = ("parallel", "sequential")
"""How :class:`Nullify` walks a column: all its MZIs at once (Pai et al. 2020), or one at a time."""

DEFAULT_MONITOR_FRACTION = 0.1
"""Fraction of the guided power an in-mesh monitor detects when ``photocomp.calibrate`` builds the chip's box."""

_SMALLEST_STEP = 0.6
"""Smallest probe step (rad): its power change, about ``|c|^2 h^2``, must stand above the monitors' noise."""

FINE_ROUND = 2
"""The round whose step later passes start at (:func:`_step` of it is the smallest step)."""


def _step(r: int) -> float:
    """Probe step (rad) of round r: ``2π/3`` first (the fit finds the minimum from anywhere), then halved
    down to :data:`_SMALLEST_STEP` for the rounds near the null, whose fits are trusted within one step."""
    return max(2 * math.pi / 3 * 0.5**r, _SMALLEST_STEP)


@dataclasses.dataclass(frozen=True)
class NullifyResult(MeasuredRun):
    """What :meth:`Nullify.run` found and what it cost (:class:`~photocomp.calibration.engine.MeasuredRun`).

    Attributes (beyond the shared ones):
      history: ``(readings, chip_time_s, null fraction)`` after every pass:
        the mean over columns of the power left at the null ports over the
        power the column's monitors saw, read after the column's last round.
      schedule: ``"parallel"`` or ``"sequential"``.
      passes_run: passes made through the mesh.
      configured_drives_mw, configured_error_measured: the drives the
        nulling ended at and their measured error, kept or not.
    """

    schedule: str
    passes_run: int
    configured_drives_mw: np.ndarray
    configured_error_measured: float

    method: ClassVar[str] = "nullify"

    def details(self) -> dict:
        return {"schedule": self.schedule, "passes_run": self.passes_run,
                "configured_error_measured": self.configured_error_measured}

    def label(self) -> str:
        return f"nullify({self.schedule}, passes={self.passes_run})"


def _nulling_inputs(coef: np.ndarray, top: np.ndarray, bottom: np.ndarray, index: np.ndarray, valid: np.ndarray, n: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Inputs ``(depth, N)``: row c sends the ideal columns ``0..c`` to a field zero on every column-c MZI's lower port.

    The ideal columns carry the nominal MZI loss, which waveguides passing a
    column at the mesh's edge do not: their transfer is not unitary, so the
    inputs are its inverse (not its adjoint) applied to the wanted field.
    """
    depth = top.shape[0]
    out = np.zeros((depth, n), complex)
    for c in range(depth):
        y = np.exp(2j * np.pi * rng.random(n))
        y[bottom[c][valid[c]]] = 0.0
        for cc in range(c, -1, -1):  # x = C_0^-1 ... C_c^-1 y
            t, t2 = top[cc][valid[cc]], bottom[cc][valid[cc]]
            m = coef[:, index[cc][valid[cc]]]
            det = m[0] * m[3] - m[1] * m[2]
            a, b = y[t].copy(), y[t2].copy()
            y[t] = (m[3] * a - m[1] * b) / det
            y[t2] = (m[0] * b - m[2] * a) / det
        out[c] = y / np.linalg.norm(y)
    return out


def _fit_minimum(steps: list[np.ndarray], grid: list[tuple[int, ...]], power: np.ndarray,
                 reach: float) -> np.ndarray:
    """Where each MZI's fitted null-port power is least: moves ``(len(steps), n)`` (rad) within ``±reach``.

    One heater: ``P = a + b cos d + c sin d`` through its three probes. Two
    heaters (external e, internal i): the null-port field is
    ``A + B e^{ii} + C e^{ie} + D e^{i(e+i)}``, so its power is the
    trigonometric polynomial of the nine terms ``1, cos/sin i, cos/sin e,
    cos/sin (e+i), cos/sin (e-i)``, which the 3 x 3 grid of probes determines;
    its minimum is searched on a grid and refined twice. Either fit is exact
    for the ideal response, so a first round lands near the null from anywhere.
    """
    n = power.shape[1]
    if len(steps) == 1:
        a, b, c = fit_sinusoid(steps[0], power.T)
        amp = np.hypot(b, c)
        best = np.where(amp > 1e-12 * np.maximum(np.abs(a), 1e-300),
                        np.mod(np.arctan2(c, b) + 2 * math.pi, 2 * math.pi) - math.pi, 0.0)
        return np.clip(best, -reach, reach)[None]

    def terms(e, i):
        e, i = np.broadcast_arrays(e, i)
        return np.stack([np.ones_like(e), np.cos(i), np.sin(i), np.cos(e), np.sin(e), np.cos(e + i), np.sin(e + i),
                         np.cos(e - i), np.sin(e - i)], axis=-1)

    e = np.stack([steps[0][:, k] for k, _ in grid], axis=1)  # (n, 9)
    i = np.stack([steps[1][:, m] for _, m in grid], axis=1)
    w = np.linalg.solve(terms(e, i), power.T[..., None])[..., 0]  # (n, 9)
    center = np.zeros((2, n))
    span = reach
    for _ in range(3):  # grid search, then two finer grids around the best point
        ax = np.linspace(-span, span, 25)
        ge = np.clip(center[0][:, None, None] + ax[None, :, None], -reach, reach)
        gi = np.clip(center[1][:, None, None] + ax[None, None, :], -reach, reach)
        val = np.einsum("nabk,nk->nab", terms(ge, gi), w)
        a_idx, b_idx = np.unravel_index(np.argmin(val.reshape(n, -1), axis=1), (ax.size, ax.size))
        center = np.stack([ge[np.arange(n), a_idx, 0], gi[np.arange(n), 0, b_idx]])
        span = 2 * span / (ax.size - 1)
    return center


class HeaterMoves:
    """Moves of chosen heaters' phases that hold every other heater's phase under the nominal crosstalk law.

    Shared by the methods that tune MZIs' heaters through an instrument
    (:class:`Nullify`, :class:`~photocomp.calibration.diagonalize.Diagonalize`):
    ``cfg`` is the method (``rounds``, ``tol``, ``shots``, ``retries``), ``s``
    the run's :class:`~photocomp.calibration.selfconfig.DriveSession`. A
    subclass says what to read (:meth:`values`); :meth:`tune` minimises it.
    """

    def __init__(self, cfg, s: DriveSession, program: Program):
        self.cfg = cfg  # carries rounds, tol, shots and retries
        self.s = s
        tgt = program.target
        self.xt_rows, self.xt_cols, self.xt_weight = crosstalk_matrix(tgt, heater_positions(tgt, "unitary"))
        lay = program.phase_map.u.layout
        sl = heater_slices(tgt, "unitary")
        m = lay.n_mzi
        kinds = [np.arange(sl["u_ext"].start, sl["u_ext"].start + m), np.arange(sl["u_int"].start, sl["u_int"].start + m)]
        if lay.cell.trims:
            start = sl["u_trim"].start
            kinds += [np.arange(start + j * m, start + (j + 1) * m) for j in range(len(lay.cell.trims))]
        self.kinds = np.stack(kinds)  # (kinds, n_mzi) heater index of each MZI: external, internal, trims
        self.skipped = 0

    def values(self, key, x: np.ndarray) -> np.ndarray:
        """What :meth:`tune` minimises, ``(n,)`` one value per tuned MZI, read for inputs ``x`` (``key``: the
        subclass's choice of what to read)."""
        raise NotImplementedError

    def drive_step(self, moves: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Drive changes ``(H,)`` (mW) that move the phases of the given heaters by the given amounts (rad) and
        leave every other heater's phase where it is, under the nominal crosstalk law.

        Heating one heater also shifts its neighbours' phases (``phase = own + X own``, the sparse
        ``X`` of :func:`photocomp.hardware.chip.crosstalk_matrix`, the same on every chip of a
        target); the own phases are ``(I + X)^-1`` of the wanted change (three terms of its series,
        ``X`` being about a percent), converted to drives with the estimated efficiencies.
        """
        want = np.zeros(self.s.ins.n_heaters)
        for hs, d in moves:
            want[hs] = d
        return self.own_to_drive(self.uncoupled(want))

    def uncoupled(self, want: np.ndarray) -> np.ndarray:
        """Own phase changes ``(I + X)^-1 want`` (three terms of the series)."""
        own = want.copy()
        term = want
        for _ in range(3):
            term = -self.crosstalk(term)
            own = own + term
        return own

    def own_to_drive(self, own: np.ndarray) -> np.ndarray:
        return own * self.s.p_pi / (math.pi * self.s.eta)

    def crosstalk(self, own: np.ndarray) -> np.ndarray:
        """``X own``: the crosstalk phase every heater receives from own phases ``own`` (H,)."""
        out = np.zeros_like(own)
        np.add.at(out, self.xt_rows, self.xt_weight * own[self.xt_cols])
        return out

    def shift(self, p: np.ndarray, moves: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Drives ``p`` with heater phases moved (``[(heaters, rad), ...]``), the others held.

        A drive pushed out of ``[0, limit]`` takes another 2π branch
        (:meth:`DriveSession.into_range`); the jump changes what that heater
        gives its neighbours, which is compensated in turn (a few rounds).
        """
        q = p + self.drive_step(moves)
        for _ in range(4):
            bad = np.nonzero((q < 0) | (q > self.s.limit))[0]
            if not bad.size:
                break
            wrapped = self.s.into_range(q, bad)
            jump = np.zeros_like(q)
            jump[bad] = (wrapped[bad] - q[bad]) * math.pi * self.s.eta[bad] / self.s.p_pi  # own phase, about ±2π
            q = wrapped + self.own_to_drive(self.uncoupled(-self.crosstalk(jump)))
        return np.clip(q, 0.0, self.s.limit)

    def probe_steps(self, p: np.ndarray, heaters: np.ndarray, h: float) -> np.ndarray:
        """Phase steps ``(len(heaters), 3)`` (rad) of the three probes, none leaving ``[0, limit]`` by a branch jump.

        A drive that jumps a whole period lands 2π off by the efficiency
        estimate's error and heats its neighbours differently, which would
        bend the sinusoid; so each heater probes ``0, ±h`` where its range
        allows, else ``0, +h, +2h`` or ``0, -h, -2h``.
        """
        per = self.s.period(heaters)
        room_up = (self.s.limit[heaters] - p[heaters]) / per * 2 * math.pi  # phase left above, rad
        room_down = p[heaters] / per * 2 * math.pi
        steps = np.tile([0.0, h, -h], (len(heaters), 1))
        up = (room_down < h) & (room_up >= 2 * h)
        down = ~up & (room_up < h) & (room_down >= 2 * h)
        steps[up] = [0.0, h, 2 * h]
        steps[down] = [0.0, -h, -2 * h]
        return steps

    def probe(self, key, x: np.ndarray, base: np.ndarray, heaters: list[np.ndarray],
              steps: list[np.ndarray], grid: list[tuple[int, ...]]) -> np.ndarray:
        """:meth:`values` ``(len(grid), n)``: for each grid point, heater group g moved by ``steps[g][:, k_g]``."""
        s = self.s
        power = []
        for point in grid:
            q = base + self.drive_step([(hs, st[:, k]) for hs, st, k in zip(heaters, steps, point)])
            s.apply(np.clip(q, 0.0, s.limit))  # the steps keep the probed heaters in range (probe_steps)
            power.append(self.values(key, x))
        return np.asarray(power)

    def tune(self, key, x: np.ndarray, mzis: np.ndarray, first: int = 0) -> float:
        """Up to ``rounds`` rounds over the heaters of MZIs ``mzis``, minimising :meth:`values` of ``key``
        for inputs ``x``, the first with step ``_step(first)``: the external and internal heaters jointly (a
        3 x 3 grid of probes), then each trim heater (3 probes); returns the largest move of the last round."""
        s = self.s
        moved = math.inf
        for r in range(first, first + self.cfg.rounds):
            moved = 0.0
            h = _step(r)
            reach = math.pi if r == 0 else h  # a small-step fit is trusted near its probes only
            if r == 0:  # the external and internal heaters jointly, from anywhere
                groups = [(self.kinds[0][mzis], self.kinds[1][mzis])] + [(kind[mzis],) for kind in self.kinds[2:]]
            else:  # near the null: one heater at a time, the best-conditioned fit
                groups = [(kind[mzis],) for kind in self.kinds]
            for group in groups:
                base = s.p
                try:
                    base = s.apply(base)
                    steps = [self.probe_steps(base, hs, h) for hs in group]
                    grid: list[tuple[int, ...]] = ([(k, m) for k in range(3) for m in range(3)] if len(group) == 2
                                                   else [(k,) for k in range(3)])
                    power = self.probe(key, x, base, list(group), steps, grid)
                except ReadFailed:
                    self.skipped += len(mzis)
                    s.p = s.apply(base)
                    continue
                best = _fit_minimum(steps, grid, power, reach)  # (len(group), n)
                s.p = s.apply(self.shift(base, list(zip(group, best))))
                moved = max(moved, float(np.max(np.abs(best))) if best.size else 0.0)
            if moved < self.cfg.tol:
                break
        return moved


class _Nuller(HeaterMoves):
    """One run's nulling state: the session (drives, branches, reads), inputs, heaters and null ports per column."""

    def __init__(self, cfg: Nullify, s: DriveSession, program: Program):
        super().__init__(cfg, s, program)
        lay = program.phase_map.u.layout
        tgt = program.target
        ideal = ideal_settings(program)
        trims = None if ideal.u_trim is None else np.asarray(ideal.u_trim)[0]
        with jax.enable_x64(True):
            coef = np.asarray(stage_coefficients(nominal_chip(tgt, "unitary"), lay, "u", np.asarray(ideal.u_int)[0],
                                                 np.asarray(ideal.u_ext)[0], trims, dtype=np.complex128))
        top, index, valid = lay.column_slots
        bottom = lay.column_bottoms
        rng = np.random.default_rng([cfg.seed, 0x9011])
        vectors = lay.n_modes if cfg.vectors is None else cfg.vectors
        modelled = np.stack([_nulling_inputs(coef, top, bottom, index, valid, lay.n_modes, rng) for _ in range(vectors)],
                            axis=1)  # (depth, vectors, K)
        self.inputs = modelled  # column c's nulling inputs (V, K)
        self.columns = [(index[c][valid[c]], bottom[c][valid[c]]) for c in range(lay.depth)]  # (MZIs, null ports)

    def read(self, c: int, x: np.ndarray) -> np.ndarray:
        """Monitor powers ``(K,)`` after column c, summed over the inputs ``x`` ``(V, K)``."""
        r = read_robust(self.s.ins, x, shots=self.cfg.shots, retries=self.cfg.retries, source="monitors")
        return np.asarray(r)[:, c].sum(axis=0)

    def values(self, key, x: np.ndarray) -> np.ndarray:
        """The null ports' powers of column ``c``, ``key = (c, ports)``."""
        c, ports = key
        return self.read(c, x)[ports]

    def column(self, c: int, first: int = 0) -> float:
        """Null column c (all its MZIs at once or one at a time), starting at step ``_step(first)``; returns its
        null fraction (the null ports' power over the column's), read after it."""
        x = self.inputs[c]
        mzis, ports = self.columns[c]
        if self.cfg.schedule == "parallel":
            self.tune((c, ports), x, mzis, first)
        else:
            for j in range(len(mzis)):
                self.tune((c, ports[j:j + 1]), x, mzis[j:j + 1], first)
        try:
            r = self.read(c, x)
        except ReadFailed:
            return math.nan
        total = float(np.sum(r))
        return float(np.sum(r[ports])) / total if total > 0 else math.nan


@dataclasses.dataclass(frozen=True)
class Nullify:
    """In-mesh nullification of a one-tile unitary program (module docstring).

    Attributes:
      schedule: ``"parallel"`` (every MZI of a column at once, Pai et al.
        2020) or ``"sequential"`` (one MZI at a time).
      passes: passes through the mesh (int >= 1); the second takes out what
        the heaters' crosstalk did to columns set before.
      rounds: largest number of rounds over a column's heaters per pass (int >= 1).
      tol: a column is done when no heater moved more than this (rad, real >= 0).
      shots: shots per reading (int >= 1; a thousand shots take 1 us at a 1 GHz
        clock, a third of a heater's settling).
      phase_shots: extra shots factor for the output-phase and error read-outs (int >= 1).
      phase_rounds: rounds of output-phase correction (int >= 0).
      retries: re-reads per fault before a read is given up (int >= 0).
      seed: seed of the nulling fields' free phases, and of the measurement
        noise when ``photocomp.calibrate`` builds the chip's box (int >= 0).
      monitor_fraction: the power fraction its monitors detect when
        ``photocomp.calibrate`` builds the box (real in (0, 1]).
      vectors: nulling inputs per column whose summed null-port power is
        nulled (int >= 1); None (default): as many as the mesh has modes.
        More inputs keep the errors of MZIs set before from growing through
        the depth (module docstring); each costs one reading per probe, not a
        configuration change.

    Example:
      >>> Nullify(passes=1)
      Nullify(schedule='parallel', passes=1, rounds=4, tol=0.001, shots=1000, phase_shots=1, phase_rounds=3, retries=4, seed=0, monitor_fraction=0.1, vectors=None)
    """

    schedule: str = "parallel"
    passes: int = 2
    rounds: int = 4
    tol: float = 1e-3
    shots: int = 1000
    phase_shots: int = 1
    phase_rounds: int = 3
    retries: int = 4
    seed: int = 0
    monitor_fraction: float = DEFAULT_MONITOR_FRACTION
    vectors: int | None = None

    name = "nullify"

    def __post_init__(self):
        if not isinstance(self.schedule, str):
            raise InvalidTypeError(f"Nullify.schedule must be a str, one of {SCHEDULES}; "
                                   f"got {type(self.schedule).__name__}")
        if self.schedule not in SCHEDULES:
            raise UnknownNameError(f"Nullify.schedule must be one of {SCHEDULES}; got {self.schedule!r:.80}")
        if self.vectors is not None:
            object.__setattr__(self, "vectors", check_int(self.vectors, "Nullify.vectors", low=1))
        for name in ("passes", "rounds", "shots", "phase_shots"):
            object.__setattr__(self, name, check_int(getattr(self, name), f"Nullify.{name}", low=1))
        for name in ("phase_rounds", "retries", "seed"):
            object.__setattr__(self, name, check_int(getattr(self, name), f"Nullify.{name}", low=0))
        object.__setattr__(self, "tol", check_real(self.tol, "Nullify.tol", low=0.0))
        object.__setattr__(self, "monitor_fraction", check_real(self.monitor_fraction, "Nullify.monitor_fraction",
                                                                low=0.0, high=1.0, low_open=True))

    def run(self, program: Program, instrument: Instrument, *, start_drives: npt.ArrayLike | None = None,
            heaters: tuple[npt.ArrayLike, npt.ArrayLike] | None = None) -> NullifyResult:
        """Configure ``instrument`` to implement ``program``; returns a :class:`NullifyResult`.

        Args:
          program: a compiled unitary program of one tile at the target's size,
            on a mesh whose cell has an external and an internal heater (not the Bell
            cell, not Fldzhyan's static couplers).
          instrument: an :class:`~photocomp.hardware.instrument.Instrument` of the
            program's target and a ``"unitary"`` circuit with in-mesh monitors
            (:class:`~photocomp.hardware.instrument.MonitoredInstrument`, e.g.
            ``photocomp.BlackBoxChip(chip, monitor_fraction=0.1)``).
          start_drives, heaters: as for :meth:`photocomp.SelfConfig.run`.
        """
        t0 = time.perf_counter()
        program = check_program(program)
        lay = program.target.layout
        if lay.cell.programming == "sweep":
            raise MismatchError(f"Nullify needs MZIs with an external heater; target {program.target.name!r} has "
                                f"the {lay.cell.name!r} cell (programmed by a global sweep)")
        if lay.cell.programming == "fixed":
            raise MismatchError(f"Nullify sets each cell's splitting with its internal heater; target "
                                f"{program.target.name!r} has the {lay.cell.name!r} cell, a static coupler without "
                                f"one (calibrate it with 'model', 'twin' or 'insitu')")
        instrument = as_instrument(instrument)
        depth = lay.depth
        columns = instrument.monitor_columns if isinstance(instrument, MonitoredInstrument) else 0
        if program.circuit == "unitary" and columns != depth:  # checked before anything is read
            raise MismatchError(f"instrument must have in-mesh monitors after each of the mesh's {depth} columns "
                                f"(photocomp.BlackBoxChip(chip, monitor_fraction=0.1)); got {columns} columns")
        program, instrument, s, start, err_start, before = begin_unitary_run(
            self, program, instrument, start_drives, heaters, "Nullify.run")
        nul = _Nuller(self, s, program)
        history = []
        s.p = start
        passes = 0
        for k in range(self.passes):  # a later pass starts near the nulls: small steps only
            fractions = [nul.column(c, first=0 if k == 0 else FINE_ROUND) for c in range(depth)]
            passes += 1
            spent = instrument.ledger.since(before)
            history.append((int(spent["readings"]), float(spent["chip_time_s"]), float(np.nanmean(fractions))))
        return NullifyResult(**finish_unitary_run(self, s, program, start, err_start, before, t0),
                             history=tuple(history), skipped=s.skipped + nul.skipped, stopped=f"{passes} passes",
                             schedule=self.schedule, passes_run=passes)
