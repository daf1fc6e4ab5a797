"""Calibration by measurement: column-by-column self-configuration of a unitary program.

:class:`SelfConfig` configures a chip through the
:class:`~photocomp.hardware.instrument.Instrument` interface only: heater drives
in, output powers out (``photocomp/hardware/instrument.py``). It needs no model
of the chip's couplers or losses, and nothing of the hidden chip is read.

The program. A unitary program (``docs/design.md`` §3.6) of one tile asks the
mesh for a unitary U. Sending the K inputs ``x_j = conj(U[j, :])`` (row j of
U†) through a chip that implements U delivers all of input j's power to output
j, since ``U x_j = e_j``. Through a chip that implements M the power at output
j is ``|(M U†)_jj|^2``, so

    J = sum_j |(M U†)_jj|^2  <=  K    (the power delivered to the right outputs)

reaches K exactly when ``M = D U`` for a diagonal phase screen D. The mesh is
configured to maximise J, which the output detectors measure directly.

One MZI phase at a time (Miller's self-configuration principle: each element
set by a power maximisation, progressively through the mesh). The search runs
over *virtual* mathematical phases (theta, phi per MZI, ``docs/design.md``
§3.1), starting at the program's: a change of one of them is turned into the
change of every physical heater phase the ideal chip needs for it (the screen
pushing of :func:`photocomp.sim.physical.mesh_to_physical`: the MZI's own
heater and the downstream external and output heaters), and into drives with
the heaters' estimated efficiencies, on the branch nearest the present drive.
The outputs are affine in ``e^{i phi}`` and in ``(cos theta, sin theta)``, so
J is a sinusoid in phi and in 2 theta, ``J = a + b cos d + c sin d``: three
readings of J (the present phases and ``d = ±2π/3``) determine it, and the
phase is set to its maximum, ``d* = atan2(c, b)``. The mesh is swept column by
column in the order light meets it (each MZI's phi, then its theta; a static
coupler of Fldzhyan's layout has only its phi), for up
to ``sweeps`` sweeps, until a sweep lowers the measured infidelity ``1 - J/P``
(``P`` the total power the outputs received, so the chip's mean loss does not
count) by less than ``tol`` of itself. After every sweep that raised J a
pattern move (Hooke-Jeeves) tries one jump along the sweep's displacement. A
sweep that lowers J, read twice at both ends, is undone and ends the search.
Each phase costs three reads of K input vectors and three configuration
changes (two probes and the new setting). Virtual phases move a chip's
heaters the way an ideal chip needs, which its coupler errors, crosstalk and
efficiency errors make approximate; the following sweeps correct that, but
the search converges slowly along ridges and stops short of what a model of
the chip reaches (``photocomp.calibrate(..., method="model")``).

Output phases. J cannot see D. With a reference beam from the same laser
(:meth:`Instrument.read`'s ``reference``) the output fields of the input
``sum_j x_j / sqrt(K)`` (for which U gives every output amplitude ``1/sqrt(K)``,
phase 0) are recovered by three-step phase stepping (as
:func:`photocomp.hardware.detector.measure_matrix` does) and the output
heaters take the phase errors off, for up to ``phase_rounds`` rounds.

Start and guarantee. The start is the program's ideal physical phases
(:func:`photocomp.hardware.chipsim.settings_from_program`) driven through a
heater characterisation (offsets and efficiencies, from the instrument's
``characterize_heaters`` when it has one, or given) with the nominal
crosstalk law, i.e. the uncalibrated operating point of ``photocomp.calibrate``
(``docs/design.md`` §4.2), or drives given by the caller. The matrix error is
measured by phase stepping (``4 K`` readings) at the start and at the end; if
the end is not better the start's drives are returned. Faults (NaN
readings, dropped bursts, saturated detectors) are survived by
:func:`~photocomp.hardware.instrument.read_robust`; a heater whose reads still
fail is skipped for that sweep; heaters that refuse a drive
(:class:`~photocomp.hardware.instrument.DriveRefused`) get the limit they
report and are driven on another 2π branch or clipped. Everything is counted
in the result.

What this method is not: Pai et al. 2020's parallel nullification and
Miller's direct self-configuration null one output of each MZI using power
monitors inside the mesh (:class:`~photocomp.calibration.nullify.Nullify`, for
a chip that has them); this method reads the outputs only, so the whole mesh
is the monitor and the heaters are set one at a time. On a triangular mesh the
outputs alone suffice for a null per MZI
(:class:`~photocomp.calibration.diagonalize.Diagonalize`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import ClassVar

import jax
import numpy as np
import numpy.typing as npt

from photocomp.calibration.engine import (
    MeasuredRun,
    check_instrument_target,
    check_program,
    finite_array,
    heater_estimates,
    ideal_settings,
    ideal_tiles,
    settings_error,
    spent_fields,
)
from photocomp.compiler.program import Program
from photocomp.core.errors import InvalidInputError, InvalidTypeError, MismatchError
from photocomp.core.phases import MeshPhases
from photocomp.core.validate import check_int, check_real
from photocomp.hardware.chip import Chip, as_chip, crosstalk_matrix, heater_positions, heater_slices
from photocomp.hardware.chipsim import Settings, drive_map, flatten_heaters, realized_phases, unflatten_heaters
from photocomp.hardware.detector import PHASE_STEPS, drive_template
from photocomp.hardware.instrument import (
    HeaterCharacterizer,
    Instrument,
    ReadFailed,
    as_instrument,
    read_robust,
    set_drives_robust,
)
from photocomp.sim.physical import mesh_to_physical

__all__ = ["SelfConfig", "SelfConfigResult", "chip_error", "measured_error", "finish_unitary_run"]


@dataclasses.dataclass(frozen=True)
class SelfConfigResult(MeasuredRun):
    """What :meth:`SelfConfig.run` found and what it cost (:class:`~photocomp.calibration.engine.MeasuredRun`).

    Attributes (beyond the shared ones):
      drives_mw: ``(n_heaters,)`` mW (the start's when the configured drives measured no better).
      error_start_measured, error_measured: matrix error (best real gain,
        ``docs/design.md`` §3.7) measured by phase stepping.
      kept: ``"configured"`` or ``"start"``.
      history: ``(readings, chip_time_s, 1 - J / P)`` after the start and
        after every sweep (``J`` the measured delivered power, see the module
        docstring, ``P`` all the power the outputs received: an infidelity
        free of the chip's mean loss); the last entry after the output phases.
      skipped: heater updates given up because reads kept failing.
      sweeps_run: sweeps made.
    """

    sweeps_run: int

    method: ClassVar[str] = "selfconfig"

    def details(self) -> dict:
        return {"sweeps_run": self.sweeps_run}

    def label(self) -> str:
        return f"selfconfig(sweeps={self.sweeps_run})"


def _settings_of(chip: Chip, drives_mw: npt.ArrayLike) -> Settings:
    with jax.enable_x64(True):
        phases = np.asarray(realized_phases(chip, np.asarray(drives_mw, np.float64)))
    return unflatten_heaters(drive_template(chip.target, 1, chip.circuit), phases[None], chip.target)


def chip_error(program: Program, chip: Chip, drives_mw: npt.ArrayLike) -> float:
    """True matrix error (best real gain, float64) of ``chip`` driven with ``drives_mw`` against ``program``.

    For evaluation only (it reads the hidden chip); :class:`SelfConfig` never calls it.
    """
    program = check_program(program)
    chip = as_chip(chip)
    chip.check_target(program.target, circuit=program.circuit)
    p = np.asarray(drives_mw, dtype=np.float64)
    if p.shape != (chip.n_heaters,):
        raise InvalidInputError(f"drives_mw must have shape ({chip.n_heaters},); got shape {p.shape}")
    return settings_error(chip, _settings_of(chip, p), ideal_tiles(program))[0]


def _fields(instrument: Instrument, x: np.ndarray, shots: int | None, retries: int) -> np.ndarray:
    """Output fields ``(B, K)`` for inputs ``x`` at the applied drives, by three-step phase stepping."""
    r0 = read_robust(instrument, x, shots=shots, retries=retries)
    a = float(max(np.sqrt(np.mean(np.clip(r0, 0.0, None))), 1e-6 / np.sqrt(x.shape[-1])))
    y = sum(w * (read_robust(instrument, x, shots=shots, reference=a * w, retries=retries) - r0 - a**2)
            for w in PHASE_STEPS) / (3 * a)
    return np.asarray(y)


def _relative_error(target: np.ndarray, m: np.ndarray) -> float:
    """``||U - g M||_F / ||U||_F`` with the best real gain g (``docs/design.md`` §3.7)."""
    den = float(np.sum(np.abs(m) ** 2))
    g = float(np.real(np.vdot(m, target))) / den if den > 0 else 0.0
    return float(np.linalg.norm(target - g * m) / np.linalg.norm(target))


def measured_error(instrument: Instrument, drives_mw: npt.ArrayLike, target: npt.ArrayLike, *,
                   shots: int | None = None, retries: int = 4) -> float:
    """Matrix error of ``instrument`` at ``drives_mw`` against ``target`` (K, K), from phase-stepped readings.

    Reads the K unit inputs without and with a reference at three phases
    (``4 K shots`` readings, one configuration change).
    """
    instrument = as_instrument(instrument)
    u = np.asarray(target, dtype=np.complex128)
    k = instrument.target.size
    if u.shape != (k, k):
        raise InvalidInputError(f"target must have shape ({k}, {k}); got shape {u.shape}")
    instrument.set_drives(drives_mw)
    m = _fields(instrument, np.eye(k, dtype=np.complex128), shots, retries).T
    return _relative_error(u, m)


_to_physical = jax.jit(mesh_to_physical, static_argnums=0)


def _prior_chip(target, offset, efficiency) -> Chip:
    """A unitary chip model: ideal couplers, nominal loss, the given heaters, the nominal crosstalk law."""
    m = target.layout.n_mzi
    rows, cols, w = crosstalk_matrix(target, heater_positions(target, "unitary"))
    zeros = {"u": np.zeros(m)}
    return Chip(target, -1, zeros, {"u": np.zeros(m)}, {"u": np.full(m, float(target.mzi_loss_db))},
                np.asarray(offset, np.float64), np.asarray(efficiency, np.float64), rows, cols, w, "unitary")


def fit_sinusoid(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, c)`` of ``a + b cos d + c sin d`` through three readings ``values`` at phase steps ``steps``.

    Both ``(..., 3)``: any leading axes are independent fits. The maximum is at
    ``d = atan2(c, b)``, the minimum half a turn away.
    """
    design = np.stack([np.ones_like(steps), np.cos(steps), np.sin(steps)], axis=-1)  # (..., 3, 3)
    a, b, c = np.moveaxis(np.linalg.solve(design, values[..., None])[..., 0], -1, 0)
    return a, b, c


class DriveSession:
    """The state of one measuring run on a one-tile unitary program: drives, per-heater limits and 2π
    branches, the instrument, the program's unitary and inputs, output-phase correction. Shared by
    :class:`SelfConfig` and :class:`~photocomp.calibration.nullify.Nullify`."""

    def __init__(self, cfg: SelfConfig, instrument: Instrument, u: np.ndarray, efficiency: np.ndarray,
                 mesh: MeshPhases):
        self.cfg = cfg
        self.ins = instrument
        self.u = u
        self.x = np.conj(u)  # row j: the input that U sends to output j
        t = instrument.target
        self.p_pi = float(t.heater_p_pi_mw)
        self.eta = efficiency
        self.limit = np.full(instrument.n_heaters, float(instrument.drive_limit_mw))
        self.skipped = 0
        self.fraction = 0.0
        self.lay = mesh.layout
        # the virtual mesh: mathematical phases whose changes the drives follow (module docstring)
        self.v = np.stack([np.asarray(mesh.theta, np.float64)[0], np.asarray(mesh.phi, np.float64)[0]])
        self.out = np.asarray(mesh.out_phase, np.float64)[0]
        self.phys = self.physical(self.v)
        self.p = np.zeros(instrument.n_heaters)

    def physical(self, v: np.ndarray) -> np.ndarray:
        """Flat physical phases ``(H,)`` of the ideal chip for virtual phases ``v`` (theta; phi); 0 for trim heaters."""
        with jax.enable_x64(True):
            parts = _to_physical(self.lay, v[0], v[1], self.out)
            flat = np.concatenate([np.asarray(a, np.float64) for a in parts])
        # a cell's trim heaters come last (heater_slices) and stay where they are: no virtual phase moves them
        return np.concatenate([flat, np.zeros(self.ins.n_heaters - flat.size)])

    def follow(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(drives, physical phases)`` for virtual phases ``v``: the present drives moved by the phase change."""
        phys = self.physical(v)
        d = np.mod(phys - self.phys + math.pi, 2 * math.pi) - math.pi
        p = self.p + d * self.p_pi / (math.pi * self.eta)
        moved = np.nonzero(d)[0]
        return self.into_range(p, moved[(p[moved] < 0) | (p[moved] > self.limit[moved])]), phys

    def update_virtual(self, kind: int, i: int) -> None:
        """Virtual phase ``v[kind, i]`` (0: theta, 1: phi) set to the maximum of the fitted J; drives follow."""
        freq = 2.0 if kind == 0 else 1.0  # J is a sinusoid in 2 theta and in phi
        try:
            self.p = self.apply(self.p)
            js = [self.delivered()]
            tried = [0.0]
            for step in (2 * math.pi / 3, -2 * math.pi / 3):
                v = self.v.copy()
                v[kind, i] += step / freq
                q, _ = self.follow(v)
                self.apply(q)
                js.append(self.delivered())
                tried.append(step)
        except ReadFailed:
            self.skipped += 1
            self.p = self.apply(self.p)
            return
        a, b, c = fit_sinusoid(np.asarray(tried), np.asarray(js))
        if a + math.hypot(b, c) <= js[0]:
            self.p = self.apply(self.p)
            return
        v = self.v.copy()
        v[kind, i] += math.atan2(c, b) / freq
        q, phys = self.follow(v)
        self.p = self.apply(q)
        self.v, self.phys = v, phys

    def pattern_move(self, v_before: np.ndarray, j_now: float) -> float:
        """Hooke-Jeeves step along the last sweep's displacement ``v - v_before``; returns J where it ends.

        Coordinate ascent creeps along ridges; J at one and two more such
        displacements, with a parabola through the three values, jumps along
        the ridge (at most four displacements; kept only if measured better).
        """
        direction = self.v - v_before
        try:
            js = [j_now]
            for alpha in (1.0, 2.0):
                q, _ = self.follow(self.v + alpha * direction)
                self.apply(q)
                js.append(self.delivered())
            curve = js[2] - 2 * js[1] + js[0]
            alpha = 4.0 if curve >= 0 else float(np.clip((js[0] - js[2]) / (2 * curve) + 1.0, 0.0, 4.0))
            v = self.v + alpha * direction
            q, phys = self.follow(v)
            self.apply(q)
            j = self.delivered()
        except ReadFailed:
            self.skipped += 1
            self.p = self.apply(self.p)
            return j_now
        if j > j_now:
            self.v, self.phys, self.p = v, phys, q
            return j
        self.p = self.apply(self.p)
        return j_now

    def state(self) -> tuple:
        return self.v.copy(), self.phys.copy(), self.p.copy()

    def restore(self, state: tuple) -> None:
        self.v, self.phys, p = (a.copy() for a in state)
        self.p = self.apply(p)

    def period(self, h) -> np.ndarray:
        """Drive (mW) of a 2π phase step of heater(s) h, from the efficiency estimate."""
        return 2 * self.p_pi / self.eta[h]

    def into_range(self, p: np.ndarray, heaters) -> np.ndarray:
        """Drives of ``heaters`` moved by whole periods into ``[0, limit]`` (clipped where no branch fits)."""
        p = p.copy()
        idx = np.atleast_1d(heaters)
        per = self.period(idx)
        v = p[idx] - np.floor(p[idx] / per) * per  # in [0, period)
        v = np.where(v > self.limit[idx], v - per, v)
        p[idx] = np.clip(v, 0.0, self.limit[idx])
        return p

    def moved(self, p: np.ndarray, h: int, delta: float) -> np.ndarray:
        """Drives with heater h moved by ``delta`` rad, on the branch nearest its present drive."""
        per = float(self.period(h))
        q = p.copy()
        options = [p[h] + (delta / (2 * math.pi) + k) * per for k in (0, -1, 1)]
        ok = [v for v in options if 0.0 <= v <= self.limit[h]]
        if ok:
            q[h] = min(ok, key=lambda v: abs(v - p[h]))
            return q
        q[h] = options[0]
        return self.into_range(q, h)

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Set drives ``p``; heaters that refuse get their reported limit and another branch. Returns what was set."""
        return set_drives_robust(self.ins, p, self.limit, self.into_range, retries=self.cfg.retries)

    def delivered(self) -> float:
        """``J``: the power the K program inputs deliver to their own outputs, at the applied drives."""
        r = read_robust(self.ins, self.x, shots=self.cfg.shots, retries=self.cfg.retries)
        total = float(np.sum(r))
        self.fraction = float(np.trace(r)) / total if total > 0 else 0.0  # J over the power the chip passed
        return float(np.trace(r))

    def output_phases(self, p: np.ndarray, out: slice) -> np.ndarray:
        """Output heaters set so that ``sum_j x_j / sqrt(K)`` leaves every output at phase 0."""
        k = self.u.shape[0]
        probe = self.x.sum(axis=0)[None] / math.sqrt(k)
        heaters = np.arange(out.start, out.stop)
        shots = self.cfg.shots * self.cfg.phase_shots
        for _ in range(self.cfg.phase_rounds):
            try:
                p = self.apply(p)
                y = _fields(self.ins, probe, shots, self.cfg.retries)[0]
            except ReadFailed:
                self.skipped += 1
                break
            err = np.angle(y)
            if np.max(np.abs(err)) < 1e-3:
                break
            for hh, e in zip(heaters, err):
                p = self.moved(p, int(hh), -float(e))
        return self.apply(p)


def begin_unitary_run(cfg, program: Program, instrument: Instrument, start_drives: npt.ArrayLike | None,
                      heaters: tuple[npt.ArrayLike, npt.ArrayLike] | None,
                      what: str) -> tuple[Program, Instrument, DriveSession, np.ndarray, float, dict]:
    """The checks and the start every measuring method of a one-tile unitary program shares.

    Checks ``program`` and ``instrument`` (a unitary program of one full tile,
    an instrument of its target and circuit), finds the heaters' offsets and
    efficiencies (``heaters``, else the instrument's characterisation unless
    ``start_drives`` is given), sets the start (``start_drives``, else the
    program's ideal phases through the heater estimates and the nominal
    crosstalk law) and measures its error, the reference every result is held
    to. ``cfg`` carries ``shots``, ``phase_shots``, ``phase_rounds`` and
    ``retries``. Returns ``(program, instrument, session, start drives,
    measured start error, ledger snapshot before the characterisation)``.
    """
    program = check_program(program)
    instrument = as_instrument(instrument)
    tgt = program.target
    check_instrument_target(program, instrument)
    if program.circuit == "crossbar":
        raise MismatchError(f"{what} configures a mesh cell by cell through its neighbours; a crossbar's weight "
                            f"cells are independent: calibrate it with method 'cells' (every cell read at once through "
                            f"the instrument), 'local' (its closed-form per-cell correction), 'model', 'twin' or "
                            f"'insitu'; got a crossbar program on "
                            f"{tgt.name!r}")
    if program.circuit != "unitary" or instrument.circuit != "unitary":
        raise MismatchError(f"program and instrument must both be of the unitary circuit (compile a unitary "
                            f"matrix; photocomp.fabricate(target, seed, circuit='unitary')); got a "
                            f"{program.circuit} program and a {instrument.circuit} instrument")
    program.require_full_tiles(what)
    if program.n_tiles != 1:
        raise InvalidInputError(f"program must have one tile (a K x K unitary); got {program.n_tiles} tiles")
    h = instrument.n_heaters
    before = instrument.ledger.snapshot()  # a characterisation made here is part of the cost
    offsets = np.zeros(h)
    if heaters is not None:
        offsets, eta = heater_estimates(heaters, h)
    elif start_drives is None:
        if not isinstance(instrument, HeaterCharacterizer):
            raise InvalidInputError("start_drives or heaters must be given for an instrument without "
                                    "characterize_heaters(); got neither")
        offsets, eta = heater_estimates(tuple(instrument.characterize_heaters()), h)
    else:
        eta = np.ones(h)
    if start_drives is None:
        with jax.enable_x64(True):
            phases = np.asarray(flatten_heaters(ideal_settings(program)))[0]
        start = drive_map(_prior_chip(tgt, offsets, eta), phases)
    else:
        start = finite_array(start_drives, "start_drives", (h,), " mW")
    tile = ideal_tiles(program)[0]
    u = tile * math.sqrt(tgt.size) / np.linalg.norm(tile)
    s = DriveSession(cfg, instrument, u, eta, program.phase_map.u)
    start = s.apply(s.into_range(start, np.nonzero((start < 0) | (start > s.limit))[0]))
    err_start = measured_error(instrument, start, u, shots=cfg.shots * cfg.phase_shots, retries=cfg.retries)
    return program, instrument, s, start, err_start, before


def end_error(cfg, s: DriveSession, p: np.ndarray) -> float:
    """The measured matrix error at drives ``p`` (inf when the reads keep failing)."""
    try:
        return measured_error(s.ins, p, s.u, shots=cfg.shots * cfg.phase_shots, retries=cfg.retries)
    except ReadFailed:
        return math.inf


def keep_better(s: DriveSession, start: np.ndarray, err_start: float, p: np.ndarray,
                err: float) -> tuple[np.ndarray, float, str]:
    """Drives ``p`` (measured ``err``) only if better than the start's; applies and returns
    ``(drives, measured error, "configured" or "start")``."""
    kept = "configured" if err < err_start else "start"
    final = p if kept == "configured" else start
    s.apply(final)
    return np.asarray(final).copy(), min(err, err_start), kept


def finish_unitary_run(cfg, s: DriveSession, program: Program, start: np.ndarray, err_start: float,
                       before: dict, t0: float) -> dict:
    """The end the configuring methods share (:class:`~photocomp.calibration.nullify.Nullify`,
    :class:`~photocomp.calibration.diagonalize.Diagonalize`): the output phases taken off, the error
    measured, the better of the start and the configured drives kept. Returns the
    :class:`~photocomp.calibration.engine.MeasuredRun` fields it knows, and the configured drives and
    their measured error (``configured_drives_mw``, ``configured_error_measured``)."""
    p = s.output_phases(s.p, heater_slices(program.target, "unitary")["u_out"])
    err = end_error(cfg, s, p)
    configured = np.asarray(p, np.float64).copy()
    final, err_kept, kept = keep_better(s, start, err_start, p, err)
    spent = s.ins.ledger.since(before)
    return {"drives_mw": final, "start_drives_mw": np.asarray(start).copy(), "error_start_measured": err_start,
            "error_measured": err_kept, "kept": kept, **spent_fields(spent),
            "configured_drives_mw": configured, "configured_error_measured": err,
            "wall_s": time.perf_counter() - t0}


@dataclasses.dataclass(frozen=True)
class SelfConfig:
    """Column-by-column self-configuration of a unitary program from output powers (module docstring).

    Attributes:
      sweeps: largest number of sweeps through the mesh (int >= 1).
      tol: stop when a sweep lowers the measured infidelity ``1 - J/P`` by
        less than this fraction of its value (real in [0, 1]).
      shots: shots per reading (int >= 1).
      phase_shots: extra shots factor for the output-phase read-outs (one
        input vector each, so they are cheap) (int >= 1).
      phase_rounds: rounds of output-phase correction (int >= 0).
      retries: re-reads per fault before a read is given up (int >= 0).
      pattern: after every sweep that improved J, a pattern move along the
        sweep's displacement (Hooke-Jeeves; a few reads of K inputs).
      seed: seed of the measurement noise when ``photocomp.calibrate`` builds
        the :class:`~photocomp.BlackBoxChip` (int >= 0); the method itself
        draws nothing at random.

    Example:
      >>> import photocomp as pc
      >>> SelfConfig(sweeps=2)
      SelfConfig(sweeps=2, tol=0.01, shots=1, phase_shots=16, phase_rounds=3, retries=4, pattern=True, seed=0)
    """

    sweeps: int = 3
    tol: float = 0.01
    shots: int = 1
    phase_shots: int = 16
    phase_rounds: int = 3
    retries: int = 4
    pattern: bool = True
    seed: int = 0

    name = "selfconfig"

    def __post_init__(self):
        object.__setattr__(self, "sweeps", check_int(self.sweeps, "SelfConfig.sweeps", low=1))
        object.__setattr__(self, "tol", check_real(self.tol, "SelfConfig.tol", low=0.0, high=1.0))
        object.__setattr__(self, "shots", check_int(self.shots, "SelfConfig.shots", low=1))
        object.__setattr__(self, "phase_shots", check_int(self.phase_shots, "SelfConfig.phase_shots", low=1))
        object.__setattr__(self, "phase_rounds", check_int(self.phase_rounds, "SelfConfig.phase_rounds", low=0))
        object.__setattr__(self, "retries", check_int(self.retries, "SelfConfig.retries", low=0))
        object.__setattr__(self, "seed", check_int(self.seed, "SelfConfig.seed", low=0))
        if not isinstance(self.pattern, bool):
            raise InvalidTypeError(f"SelfConfig.pattern must be a bool; got {type(self.pattern).__name__}")

    def run(self, program: Program, instrument: Instrument, *, start_drives: npt.ArrayLike | None = None,
            heaters: tuple[npt.ArrayLike, npt.ArrayLike] | None = None) -> SelfConfigResult:
        """Configure ``instrument`` to implement ``program``; returns a :class:`SelfConfigResult`.

        Args:
          program: a compiled unitary program of one tile at the target's size
            (``photocomp.compile(U, target)`` of a unitary U).
          instrument: an :class:`~photocomp.hardware.instrument.Instrument` of
            the program's target and a ``"unitary"`` circuit.
          start_drives: drives (mW, ``(n_heaters,)``) to start from; default:
            the program's ideal phases through ``heaters``.
          heaters: ``(offsets, efficiencies)`` of the heaters, each
            ``(n_heaters,)``; default: the instrument's
            ``characterize_heaters()`` when it has one. The efficiencies
            convert phase steps to drives (1 when only ``start_drives`` is given).
        """
        t0 = time.perf_counter()
        program, instrument, s, start, err_start, before = begin_unitary_run(
            self, program, instrument, start_drives, heaters, "SelfConfig.run")
        tgt = program.target
        history = []

        def note() -> None:
            spent = instrument.ledger.since(before)
            history.append((int(spent["readings"]), float(spent["chip_time_s"]), 1.0 - s.fraction))

        slices = heater_slices(tgt, "unitary")
        s.p = start
        j_prev = s.delivered()
        f_prev = s.fraction
        note()
        stopped, sweeps = f"{self.sweeps} sweeps", 0
        for sweep in range(self.sweeps):
            at_start = s.state()
            fixed = s.lay.cell.programming == "fixed"  # a static coupler's theta moves no heater
            for mzi in range(s.lay.n_mzi):  # the layout lists MZIs column by column, in the order light meets them
                s.update_virtual(1, mzi)
                if not fixed:
                    s.update_virtual(0, mzi)
            sweeps = sweep + 1
            j = s.delivered()
            if self.pattern and j > j_prev:
                j = s.pattern_move(at_start[0], j)
            if j < j_prev:  # read both ends again before undoing: one noisy reading is no verdict
                at_end = s.state()
                j_end = (j + s.delivered()) / 2
                s.restore(at_start)
                j_back = (j_prev + s.delivered()) / 2
                if j_end > j_back:
                    s.restore(at_end)
                    note()
                    stopped = f"sweep {sweeps} did not raise the delivered power beyond the noise"
                else:
                    stopped = f"sweep {sweeps} lowered the delivered power; undone"
                break
            note()
            gain = (s.fraction - f_prev) / max(1.0 - f_prev, 1e-12)
            j_prev, f_prev = j, s.fraction
            if gain < self.tol:
                stopped = f"sweep {sweeps} lowered the measured infidelity by {gain:.2g} of itself < tol"
                break
        p = s.output_phases(s.p, slices["u_out"])
        err = end_error(self, s, p)
        try:
            s.delivered()
        except ReadFailed:
            pass
        note()
        final, err, kept = keep_better(s, start, err_start, p, err)
        spent = instrument.ledger.since(before)
        return SelfConfigResult(
            drives_mw=final, start_drives_mw=np.asarray(start).copy(),
            error_start_measured=err_start, error_measured=err, kept=kept, history=tuple(history),
            **spent_fields(spent), skipped=s.skipped, sweeps_run=sweeps, stopped=stopped,
            wall_s=time.perf_counter() - t0)
