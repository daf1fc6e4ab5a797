"""Calibration by measurement: in-situ gradient descent on the measured matrix error.

:class:`InSitu` calibrates a program on a chip it sees only through the
:class:`~photocomp.hardware.instrument.Instrument` interface (heater drives
in, detector readings out, every call counted in the instrument's
:class:`~photocomp.hardware.instrument.Ledger`). It needs no model of the
chip's couplers or losses; nothing of the hidden chip is read.

Read-out. Each tile's complex transfer matrix M is read by three-step phase
stepping: the K unit inputs are read with a reference beam from the same
laser (:meth:`Instrument.read`'s ``reference``) at amplitude ``a`` and the
three phases ``w^m = e^{2 pi i m / 3}``, all ``3K`` input vectors in one read,
and ``y = sum_m w^m R_m / (3 a)`` (the ``|y|^2 + a^2`` terms cancel, so no
reference-free read is needed). ``a`` is the rms output amplitude of one plain
read of the start, kept for the whole run. The measured error of a program of
tiles ``T_t`` is the matrix error with the best real gain per tile
(``docs/design.md`` §3.7), computed from these matrices:
``E^2 = sum_t ||T_t - g_t M_t||^2 / sum_t ||T_t||^2``.

Gradient. Every heater phase enters its tile's matrix once, as ``e^{i phi}``
(an MZI's internal or external phase shifter, an output phase, an attenuator
or trim heater), so M is affine in ``e^{i phi_h}`` for each heater h and the
parameter-shift rule is exact: ``dM/dphi_h = [M(phi_h + pi/2) - M(phi_h -
pi/2)] / 2``. The best gain is stationary, so ``dE^2/dphi_h = -2 g Re tr(R^H
dM/dphi_h) / sum ||T||^2`` with the measured residual ``R = T - g M``
(``gradient="shift"``: ``2H + 1`` configurations per tile and step). The
phases are *realised* heater phases: a heater with offset ``o``, efficiency
``eta`` and drive ``P`` gives ``o + (I + X) eta pi P / P_pi`` with the
target's nominal thermal crosstalk X (``docs/design.md`` §4.2), so a shift of
one heater's phase is applied as the drive change of that heater and the
small compensating changes of its neighbours, with the efficiencies and
offsets of a heater characterisation (the instrument's
``characterize_heaters``, or given). With exact heater estimates the
measured gradient equals the simulator's autodiff gradient of the same loss
(``tests/test_insitu.py``); an efficiency error ``d eta / eta`` turns the
shift into ``pi/2 (1 + d eta / eta)`` and perturbs the gradient by that order.
``gradient="spsa"`` estimates it instead from two configurations per step
(simultaneous perturbation of every phase by ``± spsa_step`` along a random
sign vector) and the centre; it reaches the same errors with far fewer readings per step but
many more steps (``benchmarks/measurement_cost.py`` compares them).
``gradient="backprop"`` measures the whole Jacobian at the point itself, by
in-situ backpropagation on a chip with a monitor at every phase shifter
(:mod:`photocomp.calibration.backprop`: ``2K^2 + 2K`` monitor frames and no
shifted configuration); with ``solver="optax"`` it measures the gradient
alone by Pai et al.'s protocol (light sent backwards, ``6K`` more readings).

Search. The parameter shifts measure every heater's ``dM/dphi_h``: the whole
Jacobian J of the tile's matrix, not only the gradient. The default solver
takes damped Gauss-Newton steps on it (``min ||R - g J d - dg M||^2 + lambda
||d||^2`` over the phase step d and the gain's change dg), which reach the error of the known-chip optimum in two or three
steps (Levenberg-Marquardt: a step that measures worse is retaken from
where it started with ten times the damping, which shrinks 3x per step taken);
``solver="optax"`` instead drives an optax optimiser (default Adam)
with the gradient (the only choice with SPSA, which measures no Jacobian). A
phase whose drive would leave ``[0, limit]`` moves to another 2 pi branch.
The start is the program's ideal phases through the heater characterisation
(the uncalibrated operating point, as for
:class:`~photocomp.calibration.selfconfig.SelfConfig`) or drives given. Every
step measures the error at its centre; the best measured iterate is kept, and
the search stops after ``steps``, or when the best measured error has not
improved by ``tol`` of itself in ``patience`` steps. At the end the start and
the best iterate are measured again with ``check_shots`` times the shots and
per tile the better one is returned: the result is never measured worse than
the start. Faults (NaN readings, dropped bursts, saturated detectors) are
survived by :func:`~photocomp.hardware.instrument.read_robust`; a step whose
reads still fail is skipped and counted; heaters that refuse a drive
(:class:`~photocomp.hardware.instrument.DriveRefused`) get the limit they
report and another branch (clipped where none fits).

References: K. Mitarai et al., Phys. Rev. A 98, 032309 (2018) and M. Schuld et
al., Phys. Rev. A 99, 032331 (2019) (the parameter-shift rule); T. W. Hughes
et al., Optica 5, 864 (2018) (in-situ gradients of photonic meshes); J. C.
Spall, IEEE Trans. Autom. Control 37, 332 (1992) (SPSA).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, ClassVar

import jax
import numpy as np
import numpy.typing as npt

from photocomp.calibration.backprop import backprop_gradient, backprop_jacobian, check_adjoint
from photocomp.calibration.engine import (
    MeasuredRun,
    check_instrument_target,
    check_optimizer,
    check_program,
    finite_array,
    heater_estimates,
    ideal_settings,
    ideal_tiles,
    spent_fields,
)
from photocomp.compiler.program import Program
from photocomp.core.errors import InvalidInputError, InvalidTypeError, MismatchError, UnknownNameError
from photocomp.core.target import Target
from photocomp.core.validate import check_int, check_real
from photocomp.hardware.chip import crosstalk_matrix, heater_positions
from photocomp.hardware.chipsim import flatten_heaters
from photocomp.hardware.detector import read_fields, reference_amplitude
from photocomp.hardware.instrument import (
    HeaterCharacterizer,
    Instrument,
    ReadFailed,
    as_instrument,
    read_robust,
    set_drives_robust,
)

__all__ = ["InSitu", "InSituResult", "HeaterModel", "PhaseSession", "GRADIENTS", "SOLVERS", "read_matrix", "measured_gradient",
           "gain_residual", "begin_phase_run", "finish_phase_run", "tile_losses"]

GRADIENTS = ("shift", "spsa", "backprop")
"""Gradient estimators of :class:`InSitu`: the parameter-shift rule per heater, SPSA, or in-situ
backpropagation (:mod:`photocomp.calibration.backprop`)."""

SOLVERS = ("gauss-newton", "optax")
"""How :class:`InSitu` steps: an optax optimiser on the gradient, or Gauss-Newton on the measured Jacobian."""

MAX_STEP = 0.3
"""Largest change of one phase (rad) in a Gauss-Newton step (a trust region)."""


@dataclasses.dataclass(frozen=True)
class HeaterModel:
    """Realised heater phases ↔ drives: ``phi = o + (I + X) eta pi P / P_pi`` (``docs/design.md`` §4.2).

    Attributes:
      offsets: static phases ``o`` (rad), ``(H,)``.
      efficiencies: ``eta`` (> 0), ``(H,)``.
      p_pi_mw: the target's ``heater_p_pi_mw``.
      coupling: ``I + X`` (dense ``(H, H)``), X the target's nominal crosstalk.
    """

    offsets: np.ndarray
    efficiencies: np.ndarray
    p_pi_mw: float
    coupling: np.ndarray

    @classmethod
    def build(cls, target: Target, circuit: str, offsets: npt.ArrayLike, efficiencies: npt.ArrayLike) -> HeaterModel:
        """The model of a ``circuit`` chip of ``target`` with these heater estimates and the nominal crosstalk."""
        rows, cols, w = crosstalk_matrix(target, heater_positions(target, circuit))
        o = np.asarray(offsets, np.float64)
        coupling = np.eye(o.size)
        np.add.at(coupling, (np.asarray(rows), np.asarray(cols)), np.asarray(w, np.float64))
        return cls(o, np.asarray(efficiencies, np.float64), float(target.heater_p_pi_mw), coupling)

    def own(self, phases: np.ndarray) -> np.ndarray:
        """Each heater's own phase ``eta pi P / P_pi`` for realised ``phases`` (..., H)."""
        return np.linalg.solve(self.coupling, (np.asarray(phases) - self.offsets)[..., None])[..., 0]

    def drives(self, phases: np.ndarray) -> np.ndarray:
        """Drives (mW) that realise ``phases`` (..., H) (unwrapped: no 2 pi is added or removed)."""
        return self.own(phases) * self.p_pi_mw / (math.pi * self.efficiencies)

    def phases(self, drives_mw: np.ndarray) -> np.ndarray:
        """Realised phases (rad) of ``drives_mw`` (..., H)."""
        own = np.asarray(drives_mw, np.float64) * math.pi * self.efficiencies / self.p_pi_mw
        return self.offsets + own @ self.coupling.T

    def into_range(self, phases: np.ndarray, limit: np.ndarray) -> np.ndarray:
        """``phases`` (H,) with heaters whose drive leaves ``[0, limit]`` moved by whole 2 pi (a few rounds)."""
        phi = np.array(phases, np.float64)
        for _ in range(4):
            own = self.own(phi)
            top = limit * math.pi * self.efficiencies / self.p_pi_mw  # the largest own phase allowed
            bad = (own < 0) | (own > top)
            if not bad.any():
                break
            k = np.floor(own / (2 * math.pi))
            k = np.where(own - 2 * math.pi * k > top, k + 1, k)  # in [0, 2 pi) unless that exceeds the limit
            phi = phi - np.where(bad, 2 * math.pi * k, 0.0)
        return phi


def read_matrix(instrument: Instrument, amplitude: float, *, shots: int | None = None, retries: int = 4) -> np.ndarray:
    """The complex ``(K, K)`` transfer matrix at the applied drives, by three-step phase stepping.

    Reads the K unit inputs with a reference of ``amplitude`` at the phases
    ``e^{2 pi i m / 3}`` (one read of ``3K`` input vectors, references per
    input vector) and returns ``sum_m w^m R_m / (3 a)``, column j the output
    field of input j.
    """
    x = np.eye(instrument.target.size, dtype=np.complex128)
    return read_fields(instrument, x, amplitude, shots=shots, retries=retries).T  # rows were (input, output)


def gain_residual(tile: np.ndarray, m: np.ndarray) -> tuple[float, float, np.ndarray]:
    """``(||T - g M||^2, g, R = T - g M)`` with the best real gain g."""
    den = float(np.sum(np.abs(m) ** 2))
    g = float(np.real(np.vdot(m, tile))) / den if den > 0 else 0.0
    r = tile - g * m
    return float(np.sum(np.abs(r) ** 2)), g, r


class PhaseSession:
    """One run's state: the instrument, the heater model, per-heater limits and what was skipped."""

    def __init__(self, instrument: Instrument, model: HeaterModel, shots: int | None, retries: int):
        self.ins = instrument
        self.model = model
        self.shots = shots
        self.retries = retries
        self.limit = np.full(instrument.n_heaters, float(instrument.drive_limit_mw))
        self.amplitude = 1.0

    def apply(self, phases: np.ndarray) -> np.ndarray:
        """Set the drives of ``phases`` (moved into range); refused heaters get their limit. Returns the phases set."""
        phi = [self.model.into_range(phases, self.limit)]

        def reroute(_drives, _heaters):  # the same phases, on branches below the lowered limits
            phi[0] = self.model.into_range(phi[0], self.limit)
            return np.clip(self.model.drives(phi[0]), 0.0, self.limit)

        set_drives_robust(self.ins, np.clip(self.model.drives(phi[0]), 0.0, self.limit), self.limit, reroute,
                          retries=self.retries)
        return phi[0]

    def matrix(self, phases: np.ndarray, shots: int | None = None) -> np.ndarray:
        self.apply(phases)
        return read_matrix(self.ins, self.amplitude, shots=shots or self.shots, retries=self.retries)


def _gradient(s: PhaseSession, phases: np.ndarray, tile: np.ndarray, norm: float, kind: str, rng, spsa_step: float,
              solver: str = "optax", damping: float = 0.0, m0: np.ndarray | None = None):
    """``(measured E^2 contribution, dE^2/dphi (H,))`` of one tile at ``phases`` (centre ``m0`` if measured);
    for Gauss-Newton minus the step instead of the gradient."""
    m0 = s.matrix(phases) if m0 is None else m0
    loss, g, r = gain_residual(tile, m0)  # the centre: the error the search tracks
    if kind == "backprop":  # the instrument must be at this tile's drives (a multi-tile step read them all)
        s.apply(phases)
        if solver != "gauss-newton":
            return loss / norm, backprop_gradient(s.ins, r, g, norm, s.amplitude, shots=s.shots, retries=s.retries)
        jac = backprop_jacobian(s.ins, m0, shots=s.shots, retries=s.retries)
    elif kind == "spsa":
        delta = rng.choice([-1.0, 1.0], size=phases.shape)
        lp = gain_residual(tile, s.matrix(phases + spsa_step * delta))[0]
        lm = gain_residual(tile, s.matrix(phases - spsa_step * delta))[0]
        return loss / norm, (lp - lm) / (2 * spsa_step * norm) * delta
    else:
        jac = np.zeros((phases.size,) + tile.shape, np.complex128)
        for h in range(phases.size):
            e = np.zeros(phases.shape)
            e[h] = math.pi / 2
            jac[h] = 0.5 * (s.matrix(phases + e) - s.matrix(phases - e))
    grad = -2.0 * g * np.real(np.einsum("ij,hij->h", np.conj(r), jac))
    if solver == "gauss-newton":  # the step instead of the gradient: min ||R - g J d - dg M||^2 + damping ||d||^2
        # the gain is a variable of the step too: without it the phases that scale M (attenuators) chase the gain
        cols = np.concatenate([g * jac, m0[None]]).reshape(phases.size + 1, -1)
        a = np.concatenate([cols.real, cols.imag], axis=1).T
        b = np.concatenate([r.real.ravel(), r.imag.ravel()])
        return loss / norm, (a.T @ a, a.T @ b)  # the normal equations; :func:`_lm_step` solves them
    return loss / norm, grad / norm


def _lm_step(normal: tuple[np.ndarray, np.ndarray], damping: float) -> np.ndarray:
    """The phase step of the damped normal equations ``(A^T A + lambda D) x = A^T b`` (the gain's change dropped)."""
    ata, atb = normal
    h = ata.shape[0] - 1
    lam = damping * float(np.trace(ata[:-1, :-1])) / h
    reg = np.diag(np.r_[np.full(h, lam), 0.0])
    return np.linalg.lstsq(ata + reg, atb, rcond=None)[0][:-1]


def measured_gradient(instrument: Instrument, phases: npt.ArrayLike, target: npt.ArrayLike,
                      heaters: tuple[npt.ArrayLike, npt.ArrayLike], *, amplitude: float | None = None,
                      shots: int | None = None, retries: int = 4) -> tuple[float, np.ndarray]:
    """Measured matrix error and its parameter-shift gradient for one tile (module docstring).

    Args:
      instrument: an :class:`~photocomp.hardware.instrument.Instrument`.
      phases: realised heater phases (rad), ``(n_heaters,)``.
      target: the tile's wanted matrix, ``(K, K)`` complex.
      heaters: ``(offsets, efficiencies)`` of the heaters, each ``(n_heaters,)``.
      amplitude: reference amplitude (default: the rms output amplitude of a
        plain read at ``phases``).
      shots, retries: per reading, and re-reads per fault.

    Returns:
      ``(E, dE^2/dphi)``: the relative error with the best real gain and the
      gradient of its square, ``(n_heaters,)``; costs ``2 n_heaters + 1``
      configurations of ``3K`` input vectors (and ``K`` for the amplitude).
    """
    instrument = as_instrument(instrument)
    h, k = instrument.n_heaters, instrument.target.size
    phi = finite_array(phases, "phases", (h,))
    u = np.asarray(target, dtype=np.complex128)
    if u.shape != (k, k) or not np.all(np.isfinite(u)):
        raise InvalidInputError(f"target must be finite with shape ({k}, {k}); got shape {u.shape}")
    offsets, eta = heater_estimates(heaters, h)
    shots = None if shots is None else check_int(shots, "shots", low=1)
    s = PhaseSession(instrument, HeaterModel.build(instrument.target, instrument.circuit, offsets, eta), shots,
                 check_int(retries, "retries", low=0))
    if amplitude is None:
        s.apply(phi)
        s.amplitude = reference_amplitude(read_robust(instrument, np.eye(k), shots=shots, retries=s.retries), k)
    else:
        s.amplitude = check_real(amplitude, "amplitude", low=0.0, low_open=True)
    norm = float(np.sum(np.abs(u) ** 2))
    e2, grad = _gradient(s, phi, u, norm, "shift", None, 0.0)
    return math.sqrt(max(e2, 0.0)), grad


def begin_phase_run(program: Program, instrument: Instrument, start_drives: npt.ArrayLike | None,
                    heaters: tuple[npt.ArrayLike, npt.ArrayLike] | None, shots: int, retries: int,
                    what: str) -> tuple[Program, Instrument, PhaseSession, np.ndarray, dict]:
    """The checks and the start the methods that set realised heater phases share (:class:`InSitu`,
    :class:`~photocomp.calibration.cells.Cells`).

    Checks ``program`` and ``instrument`` (full tiles, an instrument of the program's target and
    circuit), finds the heaters' offsets and efficiencies (``heaters``, else the instrument's
    characterisation), sets the start (``start_drives``, ``(n_tiles, n_heaters)`` or ``(n_heaters,)``
    for one tile, else the program's ideal phases) on every tile and matches the reference amplitude to
    the start's outputs. Returns ``(program, instrument, session, start phases (n_tiles, H), ledger
    snapshot before the characterisation)``.
    """
    program = check_program(program)
    instrument = as_instrument(instrument)
    tgt = program.target
    check_instrument_target(program, instrument)
    if instrument.circuit != program.circuit:
        raise MismatchError(f"instrument must be a chip of the program's {program.circuit} circuit; got one of "
                            f"the {instrument.circuit} circuit")
    program.require_full_tiles(what)
    h, k, n_tiles = instrument.n_heaters, tgt.size, program.n_tiles
    before = instrument.ledger.snapshot()  # a characterisation made here is part of the cost
    if heaters is None:
        if not isinstance(instrument, HeaterCharacterizer):
            raise InvalidInputError("heaters must be given for an instrument without characterize_heaters(); "
                                    "got None")
        heaters = tuple(instrument.characterize_heaters())  # type: ignore[assignment]
    offsets, eta = heater_estimates(heaters, h)
    model = HeaterModel.build(tgt, program.circuit, offsets, eta)
    s = PhaseSession(instrument, model, shots, retries)
    if start_drives is None:
        with jax.enable_x64(True):
            ideal = np.asarray(flatten_heaters(ideal_settings(program)), np.float64)
        start = np.stack([model.into_range(p, s.limit) for p in ideal])
    else:
        p = np.asarray(start_drives, dtype=np.float64) if not isinstance(start_drives, (str, bytes)) else None
        if p is not None and p.shape == (h,) and n_tiles == 1:
            p = p[None]
        start = model.phases(finite_array(p if p is not None else start_drives, "start_drives", (n_tiles, h)))
    start = np.stack([s.apply(p) for p in start])
    s.amplitude = reference_amplitude(read_robust(instrument, np.eye(k), shots=shots, retries=retries), k)
    return program, instrument, s, start, before


def tile_losses(s: PhaseSession, tiles: np.ndarray, phases: np.ndarray, shots: int | None = None) -> np.ndarray:
    """Per tile ``||T - g M||^2`` of the matrices read at ``phases`` ``(n_tiles, H)`` (``shots`` per reading)."""
    return np.array([gain_residual(t, s.matrix(p, shots))[0] for t, p in zip(tiles, phases)])


def finish_phase_run(s: PhaseSession, tiles: np.ndarray, start: np.ndarray, start_losses: np.ndarray,
                     end: np.ndarray, end_losses: np.ndarray | None, check: int, before: dict, t0: float) -> dict:
    """The end :class:`InSitu` and :class:`~photocomp.calibration.cells.Cells` share: per tile the better of
    the start and the end as measured (``end_losses``, else read now with ``check`` shots per reading; a read
    that fails keeps the start), those phases set, and the :class:`~photocomp.calibration.engine.MeasuredRun`
    fields it knows (drives, the errors measured at the start and kept, what was kept, cost, wall time)."""
    if end_losses is None:
        try:
            end_losses = tile_losses(s, tiles, end, check)
        except ReadFailed:
            end_losses = np.full(len(tiles), np.inf)
    take = end_losses < start_losses
    final = np.where(take[:, None], end, start)
    norm = float(np.sum(np.abs(tiles) ** 2))
    drives = np.stack([np.clip(s.model.drives(p), 0.0, s.limit) for p in final])
    s.apply(final[-1])
    spent = s.ins.ledger.since(before)
    return {"drives_mw": drives, "start_drives_mw": np.stack([np.clip(s.model.drives(p), 0.0, s.limit)
                                                              for p in start]),
            "error_start_measured": math.sqrt(float(start_losses.sum()) / norm),
            "error_measured": math.sqrt(float(np.where(take, end_losses, start_losses).sum()) / norm),
            "kept": "calibrated" if take.all() else "start" if not take.any() else "mixed",
            **spent_fields(spent), "wall_s": time.perf_counter() - t0}


@dataclasses.dataclass(frozen=True)
class InSituResult(MeasuredRun):
    """What :meth:`InSitu.run` found and what it cost (:class:`~photocomp.calibration.engine.MeasuredRun`).

    Attributes (beyond the shared ones):
      drives_mw: ``(n_tiles, n_heaters)`` mW (per tile the start's where the
        calibrated ones measured no better).
      error_start_measured, error_measured: matrix error (best real gain per
        tile) measured at the start and at :attr:`drives_mw` (``check_shots``
        times the shots).
      kept: ``"calibrated"``, ``"start"`` or ``"mixed"`` (per tile).
      history: ``(readings, chip_time_s, measured error)`` after every step.
      skipped: steps given up because reads kept failing.
      steps_run: steps made; gradient: the estimator used.
    """

    steps_run: int
    gradient: str

    method: ClassVar[str] = "insitu"

    def details(self) -> dict:
        return {"gradient": self.gradient, "steps_run": self.steps_run}

    def label(self) -> str:
        return f"insitu(gradient={self.gradient}, steps={self.steps_run})"


@dataclasses.dataclass(frozen=True)
class InSitu:
    """In-situ gradient descent on the measured matrix error (module docstring).

    Attributes:
      steps: largest number of steps (int >= 0).
      learning_rate: Adam's step size (rad) when ``optimizer`` is None (real > 0).
      gradient: ``"shift"`` (parameter-shift rule, exact, ``2H + 1``
        configurations per tile and step), ``"spsa"`` (three per tile and
        step) or ``"backprop"`` (in-situ backpropagation,
        :mod:`photocomp.calibration.backprop`: one configuration per tile and
        step and a monitor at every phase shifter, plus light sent backwards
        for the optax gradient; a unitary program).
      solver: ``"gauss-newton"`` (default; needs ``gradient="shift"``): the
        parameter shifts measure every heater's ``dM/dphi``, i.e. the
        Jacobian, and each step solves the damped least-squares problem
        ``min_{d, dg} ||R - g J d - dg M||^2 + lambda ||d||^2`` (each phase moved by at
        most :data:`MAX_STEP`); ``"optax"``: ``optimizer`` (default Adam) on
        the gradient. Gauss-Newton reaches the model error in two or three
        steps, an order of magnitude fewer readings than Adam
        (``benchmarks/measurement_cost.py``).
      damping: Gauss-Newton's starting ``lambda`` relative to the mean
        diagonal of ``J^T J`` (real >= 0); x10 after a step that measured
        worse, /3 after one that did not.
      spsa_step: SPSA perturbation of every phase (rad, in (0, pi/2]).
      tol, patience: stop when the best measured error has not improved by
        ``tol`` of itself in ``patience`` steps.
      shots: shots per reading (int >= 1).
      check_shots: shots factor of the start and end measurements that
        decide what is returned (int >= 1).
      retries: re-reads per fault before a read is given up (int >= 0).
      seed: seed of the SPSA directions and, when ``photocomp.calibrate``
        builds the :class:`~photocomp.BlackBoxChip`, of its noise (int >= 0).
      optimizer: any ``optax.GradientTransformation`` on the phases
        (``solver="optax"``); None: ``optax.adam(learning_rate)``.
      monitor_fraction: the power each phase-shifter monitor taps, for the
        :class:`~photocomp.BlackBoxChip` that :func:`photocomp.calibrate`
        builds for ``gradient="backprop"`` (real in (0, 1]).

    Example:
      >>> import photocomp as pc
      >>> InSitu(steps=20)
      InSitu(steps=20, learning_rate=0.01, gradient='shift', spsa_step=0.2, tol=0.001, patience=3, shots=1, check_shots=4, retries=4, seed=0, optimizer=None, solver='gauss-newton', damping=0.01, monitor_fraction=0.1)
    """

    steps: int = 10
    learning_rate: float = 0.01
    gradient: str = "shift"
    spsa_step: float = 0.2
    tol: float = 1e-3
    patience: int = 3
    shots: int = 1
    check_shots: int = 4
    retries: int = 4
    seed: int = 0
    optimizer: Any = None
    solver: str = "gauss-newton"
    damping: float = 0.01
    monitor_fraction: float = 0.1

    name = "insitu"

    def __post_init__(self):
        object.__setattr__(self, "steps", check_int(self.steps, "InSitu.steps", low=0))
        object.__setattr__(self, "learning_rate", check_real(self.learning_rate, "InSitu.learning_rate", low=0.0,
                                                             low_open=True))
        if not isinstance(self.gradient, str) or self.gradient not in GRADIENTS:
            raise UnknownNameError(f"InSitu.gradient must be one of {GRADIENTS}; got {self.gradient!r:.80}")
        object.__setattr__(self, "spsa_step", check_real(self.spsa_step, "InSitu.spsa_step", low=0.0,
                                                         high=math.pi / 2, low_open=True))
        object.__setattr__(self, "tol", check_real(self.tol, "InSitu.tol", low=0.0, high=1.0))
        object.__setattr__(self, "patience", check_int(self.patience, "InSitu.patience", low=1))
        object.__setattr__(self, "shots", check_int(self.shots, "InSitu.shots", low=1))
        object.__setattr__(self, "check_shots", check_int(self.check_shots, "InSitu.check_shots", low=1))
        object.__setattr__(self, "retries", check_int(self.retries, "InSitu.retries", low=0))
        object.__setattr__(self, "seed", check_int(self.seed, "InSitu.seed", low=0))
        if not isinstance(self.solver, str) or self.solver not in SOLVERS:
            raise UnknownNameError(f"InSitu.solver must be one of {SOLVERS}; got {self.solver!r:.80}")
        if self.solver == "gauss-newton" and self.gradient == "spsa":
            raise InvalidInputError("InSitu.gradient must be 'shift' or 'backprop' with solver='gauss-newton' (it "
                                    "uses the measured Jacobian; use solver='optax' for SPSA); got 'spsa'")
        object.__setattr__(self, "monitor_fraction", check_real(self.monitor_fraction, "InSitu.monitor_fraction",
                                                                low=0.0, high=1.0, low_open=True))
        object.__setattr__(self, "damping", check_real(self.damping, "InSitu.damping", low=0.0))
        if self.optimizer is not None:
            try:
                check_optimizer(self.optimizer)
            except InvalidTypeError as exc:
                raise InvalidTypeError(str(exc).replace("optimizer must", "InSitu.optimizer must", 1)) from None

    @classmethod
    def backprop(cls, **settings) -> InSitu:
        """In-situ calibration by backpropagation (:mod:`photocomp.calibration.backprop`): the method ``"backprop"``.

        Its defaults: ``gradient="backprop"`` with Gauss-Newton steps on the
        Jacobian the interference frames measure (one configuration and
        ``3K + 2K^2 + 2K`` readings per step), 10 shots per reading, the
        other fields :class:`InSitu`'s. ``solver="optax"`` runs Pai et al.'s
        gradient protocol instead (light sent backwards, ``9K`` readings per
        step) under an optax optimiser (default Adam at ``learning_rate``);
        a first-order search needs hundreds of steps where Gauss-Newton needs
        a few (``benchmarks/measurement_cost.py``), so give it ``steps`` and
        ``patience`` to match. ``settings`` override any field.
        """
        return cls(**{"gradient": "backprop", "shots": 10, **settings})

    def run(self, program: Program, instrument: Instrument, *, start_drives: npt.ArrayLike | None = None,
            heaters: tuple[npt.ArrayLike, npt.ArrayLike] | None = None) -> InSituResult:
        """Calibrate ``program`` on ``instrument``; returns an :class:`InSituResult`.

        Args:
          program: a compiled program of the instrument's target and circuit
            (any number of full tiles; each tile is a drive setting of the chip).
          instrument: an :class:`~photocomp.hardware.instrument.Instrument`.
          start_drives: drives (mW) to start from, ``(n_tiles, n_heaters)``
            or ``(n_heaters,)`` for one tile; default: the program's ideal
            phases through ``heaters``.
          heaters: ``(offsets, efficiencies)`` of the heaters, each
            ``(n_heaters,)``; default: the instrument's ``characterize_heaters()``.
        """
        import optax

        t0 = time.perf_counter()
        if self.gradient == "backprop":  # before any reading: a chip without the hardware costs nothing
            check_program(program)
            check_adjoint(as_instrument(instrument), program.circuit, "InSitu(gradient='shift') or 'spsa'")
        program, instrument, s, start, before = begin_phase_run(program, instrument, start_drives, heaters,
                                                                self.shots, self.retries, "InSitu.run")
        model = s.model
        tiles = ideal_tiles(program).astype(np.complex128)
        norm = float(np.sum(np.abs(tiles) ** 2))
        check = self.shots * self.check_shots

        start_losses = tile_losses(s, tiles, start, check)
        opt = optax.adam(self.learning_rate) if self.optimizer is None else check_optimizer(self.optimizer)
        rng = np.random.default_rng([self.seed, 0x1751])
        phi = start.copy()
        state = opt.init(phi)
        best, best_err = start.copy(), math.sqrt(float(start_losses.sum()) / norm)
        history = []
        skipped, since, stopped, steps = 0, 0, f"{self.steps} steps", 0
        accepted: tuple | None = None  # Gauss-Newton: (phases, error, normal equations) of the last point taken
        damping = self.damping
        for step in range(self.steps):
            try:
                centres = [s.matrix(p) for p in phi]
                if self.solver == "gauss-newton":
                    err = math.sqrt(sum(gain_residual(t, c)[0] for t, c in zip(tiles, centres)) / norm)
                    if accepted is not None and err > accepted[1]:  # worse: back, with 10x the damping
                        damping = damping * 10
                        move = np.stack([np.clip(_lm_step(n, damping), -MAX_STEP, MAX_STEP) for n in accepted[2]])
                        phi = np.stack([model.into_range(p, s.limit) for p in accepted[0] + move])
                        spent = instrument.ledger.since(before)
                        history.append((int(spent["readings"]), float(spent["chip_time_s"]), err))
                        steps, since = step + 1, since + 1
                        if since >= self.patience:
                            stopped = f"stalled (no {self.tol:g} relative improvement in {self.patience} steps)"
                            break
                        continue
                parts = [_gradient(s, p, t, norm, self.gradient, rng, self.spsa_step, self.solver, self.damping, c)
                         for t, p, c in zip(tiles, phi, centres)]
            except ReadFailed:
                skipped += 1
                steps = step + 1
                continue
            err = math.sqrt(max(sum(e for e, _ in parts), 0.0))
            if self.solver == "gauss-newton":
                if accepted is not None:
                    damping = max(damping / 3, 1e-6)  # the last step was taken: trust the linear model more
                normal = [g for _, g in parts]
                grad = np.stack([-_lm_step(n, damping) for n in normal])
            else:
                grad = np.stack([g for _, g in parts])
            spent = instrument.ledger.since(before)
            history.append((int(spent["readings"]), float(spent["chip_time_s"]), err))
            steps = step + 1
            if not np.all(np.isfinite(grad)):
                skipped += 1
                continue
            if err < best_err * (1 - self.tol):
                best, best_err, since = phi.copy(), err, 0
            else:
                since += 1
                if since >= self.patience:
                    stopped = f"stalled (no {self.tol:g} relative improvement in {self.patience} steps)"
                    break
            if self.solver == "gauss-newton":  # the step itself, each phase moved by at most MAX_STEP rad
                move = np.clip(grad, -MAX_STEP, MAX_STEP)
                accepted = (phi.copy(), err, normal)
                phi = np.stack([model.into_range(p, s.limit) for p in phi - move])
            else:
                updates, state = opt.update(grad, state, phi)
                phi = np.asarray(optax.apply_updates(phi, updates), np.float64)
            phi = np.stack([model.into_range(p, s.limit) for p in phi])
        # the end: the start and the best iterate measured again, per tile the better one kept
        return InSituResult(**finish_phase_run(s, tiles, start, start_losses, best, None, check, before, t0),
                            history=tuple(history), skipped=skipped, steps_run=steps, stopped=stopped,
                            gradient=self.gradient)
