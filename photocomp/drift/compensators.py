"""Drift compensators: what a controller does between the calibration and now.

Each compensator is a frozen dataclass of its settings whose
``schedule(plan, run, z)`` turns one temperature trajectory into the phase
changes it commands (a :class:`Schedule`), counting what it measured. The
study (:mod:`photocomp.drift.studies`) then scores every schedule with one
pure error trace.

* :class:`NoCompensation` (``"none"``): the calibrated drives, held.
* :class:`FeedForward` (``"feedforward"``): a few on-chip temperature
  sensors (Gaussian noise) are read every interval; a Kalman filter on the
  thermal process model (:func:`~photocomp.drift.thermal.state_space`)
  estimates the die's temperature state, and the drives are re-solved to
  cancel the phase shifts the die model predicts for it.
* :class:`ClosedLoop` (``"closed-loop"``): every interval, at most ``2 N``
  probe inputs per tile are sent through the drifted chip at its current
  drives and read out by the target's detectors (shot noise, dark noise and
  ADC of :func:`photocomp.hardware.detector.detect`, every reading counted); an
  iterated extended Kalman filter fits the temperature state to those
  intensities on the digital twin (Gauss-Newton steps with the process
  model as prior) and the drives are re-solved.
* :class:`Recalibrate` (``"recalibrate"``): every interval, a full
  :func:`photocomp.calibration.calibrate` of the program on the drifted chip, whose
  drives are then applied; it reports the measurements a re-characterisation
  of every heater would take.

The twin (feed-forward and closed loop) knows the layout and the chip's
fabrication errors but each MZI's arm imbalance only to a relative error
``model_error``. Its predicted common phase of the output shifters is left
out (a global phase costs heater power and changes nothing).

References: R. E. Kalman, "A new approach to linear filtering and prediction
problems", J. Basic Eng. 82, 35 (1960); B. M. Bell and F. W. Cathey, "The
iterated Kalman filter update as a Gauss-Newton method", IEEE Trans. Autom.
Control 38, 294 (1993).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from photocomp.calibration.calibrate import METHODS, calibrate
from photocomp.calibration.methods import OPTIMISING
from photocomp.core.convention import phase_difference
from photocomp.core.errors import InvalidInputError, InvalidTypeError, UnknownNameError
from photocomp.core.registry import quote
from photocomp.core.validate import check_int, check_real
from photocomp.drift.dynamics import drifted_chip
from photocomp.drift.thermal import MAX_TEMPERATURE_K, ThermalDie, field_basis, state_space
from photocomp.hardware.chipsim import chip_tile_matrices, drive_map, realized_phases, unflatten_heaters
from photocomp.hardware.detector import detect

__all__ = ["NoCompensation", "FeedForward", "ClosedLoop", "Recalibrate", "Schedule", "COMPENSATORS", "get_compensator",
           "n_updates"]

#: largest mesh size :func:`probe_inputs` builds probes for
SIZE_MAX = 4096
#: largest detector integration of a closed-loop probe reading (shots; 1 s at a 1 GHz clock)
MAX_SHOTS = 10**9
#: most Gauss-Newton iterations of a closed-loop update
MAX_ITERATIONS = 100


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What one compensator commanded during one run.
    Attributes:
      zhat: ``(S + 1, 3)`` feed-forward temperature estimate in force during each step (K).
      index: ``(S + 1,)`` row of ``table`` in force during each step.
      table: ``(U, T, H)`` phase changes (rad) relative to the calibrated phases.
      measurements: optical measurements used (one input vector read once per shot).
      sensor_reads: temperature-sensor readings used.
      extra_power_mw: time-averaged change of the total heater power of a tile (mW).
      events: faults survived, as dicts (``time_s``, ``kind``, ``message``).
    """
    zhat: np.ndarray
    index: np.ndarray
    table: np.ndarray
    measurements: int = 0
    sensor_reads: int = 0
    extra_power_mw: float = 0.0
    events: tuple = ()


def _interval_steps(interval_s, dt_s: float, n_steps: int | None = None) -> int:
    """Steps per update interval (at least 1; capped at ``n_steps + 1``, i.e. never, when given)."""
    if interval_s is None:
        return 1
    ratio = interval_s / dt_s
    if n_steps is not None and not ratio < n_steps + 1:  # also an overflowing ratio
        return n_steps + 1
    return max(1, int(round(ratio)))


def n_updates(interval_s, dt_s: float, n_steps: int, first: int | None = None) -> int:
    """How many updates :func:`_update_steps` makes, by arithmetic (no array; any ``n_steps``)."""
    m = _interval_steps(interval_s, dt_s, n_steps)
    start = m if first is None else first
    return max(0, -(-(n_steps - start) // m))


def _update_steps(interval_s, plan, first: int | None = None) -> np.ndarray:
    """Steps at which a compensator updates (its command is in force from the next step)."""
    m = _interval_steps(interval_s, plan.dt_s, plan.n_steps)
    start = m if first is None else first
    return np.arange(start, plan.n_steps, m, dtype=np.int64)


def _piecewise_index(updates: np.ndarray, rows: np.ndarray, n_samples: int) -> np.ndarray:
    """Row in force at each step: row ``rows[k]`` from step ``updates[k] + 1`` on (0 before)."""
    index = np.zeros(n_samples, dtype=np.int32)
    for j, r in zip(updates, rows):
        index[j + 1:] = r
    return index


def _power_change(plan, commands) -> float:
    """Mean over ``commands`` (M, T, H) of a tile's total heater power change (mW), via drive_map."""
    if len(commands) == 0:
        return 0.0
    want = plan.phi0[None] + np.asarray(commands)
    p = drive_map(plan.chip, want)
    return float(np.mean(p.sum(axis=-1) - plan.drives_cal.sum(axis=-1)[None]))


def _table_power(plan, index: np.ndarray, table) -> float:
    """Time-averaged power change of piecewise-constant commands: drive_map on up to ``power_samples`` steps."""
    steps = np.linspace(0, len(index) - 1, min(len(index), plan.power_samples)).astype(int)
    return _power_change(plan, [table[i] for i in index[steps]])


def _check_interval(v, name):
    if v is None:
        return None
    return check_real(v, name, low=0.0, low_open=True)


def _set(obj, name: str, value) -> None:
    """Store a checked (normalised) field value on a frozen compensator."""
    object.__setattr__(obj, name, value)


#: largest relative model error of the twin's arm imbalances (1 = the twin knows nothing of them)
MAX_MODEL_ERROR = 1.0


# ---- none ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NoCompensation:
    """Hold the calibrated drives."""
    name = "none"

    def n_rows(self, plan) -> int:
        return 1

    def schedule(self, plan, run: int, z) -> Schedule:
        s = plan.n_steps + 1
        return Schedule(np.zeros((s, 3)), np.zeros(s, np.int32), np.zeros((1,) + plan.phi0.shape))


# ---- Kalman filtering of the temperature state --------------------------------------

def _augmented(ss):
    """Process state plus the die's state at calibration (constant): 9 states, and ``C`` giving relative temps."""
    F = np.zeros((9, 9))
    F[:6, :6] = ss.F
    F[6:, 6:] = np.eye(3)
    Q = np.zeros((9, 9))
    Q[:6, :6] = ss.Q
    sel = ss.die
    P0 = np.zeros((9, 9))
    P0[:6, :6] = ss.P0
    P0[6:, :6] = sel @ ss.P0
    P0[:6, 6:] = ss.P0 @ sel.T
    P0[6:, 6:] = sel @ ss.P0 @ sel.T
    C = np.concatenate([sel, -np.eye(3)], axis=1)
    return F, Q, P0, C


@jax.jit
def _kalman(F, Q, P0, C, O, R, ys, valid):
    """Linear Kalman filter over updates; returns the relative die temperatures to command (K, 3).
    Invalid readings skip the measurement update, and the command holds the last good estimate.
    """
    H = O @ C
    n = F.shape[0]

    def update(s, P, y):
        S = H @ P @ H.T + R
        K = jnp.linalg.solve(S, H @ P).T
        s = s + K @ (y - H @ s)
        P = (jnp.eye(n) - K @ H) @ P
        return s, (P + P.T) / 2

    def step(carry, x):
        s, P, last, first = carry
        y, ok = x
        s = jnp.where(first, s, F @ s)
        P = jnp.where(first, P, F @ P @ F.T + Q)
        s_new, P_new = update(s, P, jnp.where(ok, y, 0.0))
        s = jnp.where(ok, s_new, s)
        P = jnp.where(ok, P_new, P)
        cmd = jnp.where(ok, C @ s, last)
        return (s, P, cmd, False), cmd

    init = (jnp.zeros(n), P0, jnp.zeros(3), True)
    _, cmds = jax.lax.scan(step, init, (ys, valid))
    return cmds


def sensor_positions(die: ThermalDie, n: int) -> np.ndarray:
    """``(n, 2)`` sensor positions (um): die corners first, then the centre and edge midpoints."""
    if not isinstance(die, ThermalDie):
        raise InvalidTypeError(f"die must be a photocomp.drift.ThermalDie (photocomp.drift.thermal_die); "
                               f"got {type(die).__name__}")
    n = check_int(n, "n", low=1, high=9)
    rel = np.array([(-.5, -.5), (.5, .5), (.5, -.5), (-.5, .5), (0, 0), (-.5, 0), (.5, 0), (0, -.5), (0, .5)])
    return die.centre + rel[:n] * die.extent


@dataclasses.dataclass(frozen=True)
class FeedForward:
    """Feed-forward from on-chip temperature sensors through the die model.
    Attributes:
      sensors: number of sensors (1-9): the die's corners, then its centre and edge midpoints.
      sensor_noise_k: RMS noise of one reading (K), default 0.01 (assumption:
        on-chip resistive thermometers resolve 1-10 mK).
      interval_s: time between readings (s); ``None`` reads at every step.
      model_error: relative error of the twin's arm imbalances.
    """
    sensors: int = 4
    sensor_noise_k: float = 0.01
    interval_s: float | None = None
    model_error: float = 0.05
    name = "feedforward"

    def __post_init__(self):
        _set(self, "sensors", check_int(self.sensors, "FeedForward.sensors", low=1, high=9))
        _set(self, "sensor_noise_k", check_real(self.sensor_noise_k, "FeedForward.sensor_noise_k", low=0.0,
                                                high=MAX_TEMPERATURE_K))
        _set(self, "interval_s", _check_interval(self.interval_s, "FeedForward.interval_s"))
        _set(self, "model_error", check_real(self.model_error, "FeedForward.model_error", low=0.0, high=MAX_MODEL_ERROR))

    def n_rows(self, plan) -> int:
        return 1

    def schedule(self, plan, run: int, z) -> Schedule:

        die = plan.die
        xy = sensor_positions(die, self.sensors)
        basis = field_basis(xy, die.centre, die.extent)
        updates = _update_steps(self.interval_s, plan, first=0)
        rng = np.random.default_rng([plan.seed, run, 0xFEED])
        ys = np.asarray(z)[updates] @ basis.T + self.sensor_noise_k * rng.standard_normal((len(updates), len(xy)))
        events = []
        if plan.faults is not None:
            for k, j in enumerate(updates):
                t = float(plan.times[j])
                try:
                    ys[k] = np.asarray(plan.faults("sensor", t, ys[k].copy()), dtype=np.float64).reshape(len(xy))
                except Exception as exc:  # a failed read: hold
                    ys[k] = np.nan
                    events.append({"time_s": t, "kind": "sensor", "message": f"read failed ({type(exc).__name__}: {exc}); held"})
        valid = np.all(np.isfinite(ys), axis=1)
        failed = {e["time_s"] for e in events}
        for j in updates[~valid]:
            t = float(plan.times[j])
            if t not in failed:
                events.append({"time_s": t, "kind": "sensor", "message": "non-finite reading; held the last good settings"})
        ss = state_space(plan.process, _interval_steps(self.interval_s, plan.dt_s, plan.n_steps) * plan.dt_s)
        F, Q, P0, C = _augmented(ss)
        R = max(self.sensor_noise_k, 1e-9) ** 2 * np.eye(len(xy))
        cmds = np.asarray(_kalman(F, Q, P0, C, basis, R, np.where(np.isfinite(ys), ys, 0.0), valid))
        zhat = np.zeros((plan.n_steps + 1, 3))
        for k, j in enumerate(updates):
            zhat[j + 1:] = cmds[k]
        twin = plan.twin(self.model_error)
        sample = updates[np.linspace(0, len(updates) - 1, min(len(updates), plan.power_samples)).astype(int)]
        commands = [np.broadcast_to(-(twin @ zhat[j + 1]), plan.phi0.shape) for j in sample]
        return Schedule(zhat, np.zeros(plan.n_steps + 1, np.int32), np.zeros((1,) + plan.phi0.shape),
                        sensor_reads=int(len(updates) * len(xy)), extra_power_mw=_power_change(plan, commands),
                        events=tuple(events))


# ---- closed loop ---------------------------------------------------------------------

def probe_inputs(k: int, count: int) -> np.ndarray:
    """``(count, K)`` unit-power probes: the K unit vectors, then ``(e_j + i e_{j+1}) / sqrt 2``.
    The quadrature pairs make the read-out sensitive to the sign of a phase
    error: for a real matrix M, ``M`` and ``conj(M)`` (phase errors of
    opposite sign) give the same intensities for every real input.
    """
    k = check_int(k, "k", low=1, high=SIZE_MAX)
    count = check_int(count, "count", low=0, high=2 * k)
    eye = np.eye(k, dtype=np.complex128)
    pairs = (eye + 1j * np.roll(eye, 1, axis=1)) / np.sqrt(2)
    return np.concatenate([eye, pairs])[:count]


@jax.jit
def _probe_intensities(chip, template, phases, probes):
    """Exact output intensities ``(T, P, K)`` of the probes through each tile at heater ``phases`` (T, H)."""
    b = chip_tile_matrices(chip, unflatten_heaters(template, phases, chip.target), with_gain=False)
    return jnp.abs(jnp.einsum("pk,tjk->tpj", probes.astype(b.dtype), b)) ** 2


@functools.partial(jax.jit, static_argnames=("iterations",))
def _iekf(chip, template, phi0, twin, probes, command, meas, s, P, F, Q, C, noise, iterations: int):
    """One predict + iterated update of the closed loop's Kalman filter on probe intensities."""
    target = chip.target
    photons, dark, lsb = noise  # lsb: (T,) ADC step of each tile's read-out
    s = F @ s
    P = F @ P @ F.T + Q
    r_prior = C @ s
    P_r = C @ P @ C.T

    def h(r):
        flat = phi0 + command + (twin @ r)[None, :]
        b = chip_tile_matrices(chip, unflatten_heaters(template, flat, target), with_gain=False)
        y = jnp.einsum("pk,tjk->tpj", probes.astype(b.dtype), b)
        return jnp.abs(y) ** 2

    def variance(pred):
        return jnp.clip(pred, 0.0, None) / photons + dark**2 + lsb[:, None, None] ** 2 / 12.0

    def linearise(r):
        pred, jvp = jax.linearize(h, r)
        jac = jax.vmap(jvp, out_axes=-1)(jnp.eye(3, dtype=r.dtype))
        return pred, jac.reshape(-1, 3)

    y = meas.reshape(-1)
    pred, J = linearise(r_prior)
    # Readings the ADC clipped (at 0 or full scale), and outputs predicted within
    # two noise widths of 0, are censored or biased by the clipping: left out.
    full = lsb[:, None, None] * (2**target.adc_bits - 1)
    keep = ((meas > 0) & (meas < full) & (pred > 2.0 * jnp.sqrt(variance(pred)))).reshape(-1)

    def gauss_newton(r, pred, J):
        w = jnp.where(keep, 1.0 / variance(pred).reshape(-1), 0.0)
        lam = J.T @ (w[:, None] * J)
        g = J.T @ (w * (y - pred.reshape(-1) - J @ (r_prior - r)))
        return r_prior + P_r @ jnp.linalg.solve(lam @ P_r + jnp.eye(3), g), w, lam

    r_lin = r_prior
    r, w, lam = gauss_newton(r_lin, pred, J)

    def body(_, carry):
        r, r_lin, pred, J, w, lam = carry
        pred, J = linearise(r)
        r_new, w, lam = gauss_newton(r, pred, J)
        return r_new, r, pred, J, w, lam

    r, r_lin, pred, J, w, lam = jax.lax.fori_loop(0, iterations - 1, body, (r, r_lin, pred, J, w, lam))
    # Kalman update of the full state, linearised at the last iterate
    v = J.T @ (w * (y - pred.reshape(-1) + J @ r_lin))
    gain = P @ C.T @ jnp.linalg.inv(lam @ P_r + jnp.eye(3))
    s = s + gain @ (v - lam @ r_prior)
    P = P - gain @ lam @ C @ P
    return s, (P + P.T) / 2, C @ s


@dataclasses.dataclass(frozen=True)
class ClosedLoop:
    """In-situ updates from a small budget of noisy probe measurements.
    Attributes:
      interval_s: time between updates (s).
      probes: probe inputs per tile and update, at most ``2 N``; ``None`` uses ``2 N``
        (:func:`probe_inputs`).
      shots: detector samples integrated per probe reading, default 1000 (1 us
        at a 1 GHz clock). Counted like :class:`photocomp.BlackBoxChip` does:
        one measurement per probe and shot. A deep, lossy mesh delivers
        each output a small fraction of the input power, on ``pace-64``
        below the detectors' dark noise of one sample, so single-sample
        readings carry no information; integrating buys it back
        (``benchmarks/drift.py`` compares integrations).

    The read-out gain is set once at calibration (the largest probe output
    at half the ADC range), as a programmable gain stage would be;
    :meth:`photocomp.BlackBoxChip.measure` spans its ADC over the input
    power instead, which on such a mesh leaves every output below one ADC
    step, so the probes are read with :func:`photocomp.hardware.detector.detect`
    directly. Readings the ADC clipped are left out of the fit.
      iterations: Gauss-Newton iterations per update.
      model_error: relative error of the twin's arm imbalances.
    """
    interval_s: float = 10.0
    probes: int | None = None
    shots: int = 1000
    iterations: int = 2
    model_error: float = 0.05
    name = "closed-loop"

    def __post_init__(self):
        _set(self, "interval_s", _check_interval(self.interval_s, "ClosedLoop.interval_s"))
        if self.probes is not None:
            _set(self, "probes", check_int(self.probes, "ClosedLoop.probes", low=1))
        _set(self, "shots", check_int(self.shots, "ClosedLoop.shots", low=1, high=MAX_SHOTS))
        _set(self, "iterations", check_int(self.iterations, "ClosedLoop.iterations", low=1, high=MAX_ITERATIONS))
        _set(self, "model_error", check_real(self.model_error, "ClosedLoop.model_error", low=0.0, high=MAX_MODEL_ERROR))

    def _probes(self, k: int) -> int:
        p = 2 * k if self.probes is None else self.probes
        if p > 2 * k:
            raise InvalidInputError(f"ClosedLoop.probes must be at most 2 N = {2 * k} per update for {k}-mode tiles; got {p}")
        return p

    def n_rows(self, plan) -> int:
        return 1 + n_updates(self.interval_s, plan.dt_s, plan.n_steps)

    def schedule(self, plan, run: int, z) -> Schedule:

        t = plan.chip.target
        k = t.size
        probes = probe_inputs(k, self._probes(k))
        updates = _update_steps(self.interval_s, plan)
        m = _interval_steps(self.interval_s, plan.dt_s, plan.n_steps)
        ss = state_space(plan.process, m * plan.dt_s)
        F, Q, P0, C = _augmented(ss)
        s, P = np.zeros(9), P0
        twin = plan.twin(self.model_error)
        shape = plan.phi0.shape
        with jax.enable_x64(True):
            jprobes = jnp.asarray(probes)
            # read-out gain set once at calibration: the largest probe output at half the ADC range
            cal_out = np.asarray(_probe_intensities(plan.chip.unseeded(), plan.template, jnp.asarray(plan.phi0), jprobes))
        full_scale = 2.0 * cal_out.max(axis=(1, 2))
        lsb = full_scale / (2**t.adc_bits - 1)
        noise = (t.photons_per_shot * self.shots, t.dark_noise / np.sqrt(self.shots), lsb)
        table = [np.zeros(shape)]
        rows = []
        command = np.zeros(shape)
        lagged, since = np.zeros(shape), 0
        measurements, events, last_t = 0, [], 0
        for kk, j in enumerate(updates):
            tj = float(plan.times[j])
            lagged_now = command + (lagged - command) * plan.decay ** (j - since)
            shift = plan.die.phase_per_k @ np.asarray(z[j])
            try:
                with jax.enable_x64(True):
                    # the drives realise phi_0 + command (drive_map pre-compensates crosstalk)
                    phases = plan.phi0 + command + shift + (lagged_now - command)
                    exact = _probe_intensities(plan.chip.unseeded(), plan.template, jnp.asarray(phases), jprobes)
                    key = jax.random.PRNGKey(int(np.random.SeedSequence([plan.seed, run, kk, 0xC105ED]).generate_state(1)[0]))
                    burst = np.asarray(detect(exact, t, key, shots=self.shots, full_scale=jnp.asarray(full_scale)[:, None, None]))
                measurements += shape[0] * len(probes) * self.shots
                if plan.faults is not None:
                    burst = np.asarray(plan.faults("measurement", tj, burst), dtype=np.float64).reshape(burst.shape)
                if not np.all(np.isfinite(burst)):
                    raise FloatingPointError("non-finite intensities")
            except Exception as exc:  # a failed burst (or an injected fault): hold
                events.append({"time_s": tj, "kind": "measurement",
                               "message": f"probe burst failed ({type(exc).__name__}: {exc}); held the last good settings"})
                rows.append(len(table) - 1)
                continue
            # steps since the last successful update (a skipped update widens the prior)
            n_pred = (j - last_t) // m
            Fp, Qp = np.linalg.matrix_power(F, max(n_pred, 1)), _accumulate_q(F, Q, max(n_pred, 1))
            with jax.enable_x64(True):
                s_new, P_new, r = _iekf(plan.chip.unseeded(), plan.template, jnp.asarray(plan.phi0), jnp.asarray(twin),
                                        jnp.asarray(probes), jnp.asarray(command), jnp.asarray(burst),
                                        jnp.asarray(s), jnp.asarray(P), jnp.asarray(Fp), jnp.asarray(Qp),
                                        jnp.asarray(C), (float(noise[0]), float(noise[1]), jnp.asarray(noise[2])),
                                        iterations=self.iterations)
            r = np.asarray(r)
            if not np.all(np.isfinite(r)):
                events.append({"time_s": tj, "kind": "measurement", "message": "estimate not finite; held the last good settings"})
                rows.append(len(table) - 1)
                continue
            s, P, last_t = np.asarray(s_new), np.asarray(P_new), j
            lagged, since = lagged_now, j
            command = np.broadcast_to(-(twin @ r), shape).copy()
            table.append(command)
            rows.append(len(table) - 1)
        index = _piecewise_index(updates, np.asarray(rows, dtype=np.int64), plan.n_steps + 1)
        return Schedule(np.zeros((plan.n_steps + 1, 3)), index, np.stack(table), measurements=measurements,
                        extra_power_mw=_table_power(plan, index, table), events=tuple(events))


def _accumulate_q(F, Q, n: int):
    """Process noise of ``n`` steps of ``(F, Q)``."""
    acc = np.zeros_like(Q)
    for _ in range(n):
        acc = F @ acc @ F.T + Q
    return acc


# ---- periodic recalibration ----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Recalibrate:
    """Periodic full recalibration on the drifted chip with :func:`photocomp.calibration.calibrate`.
    The model and local methods take the chip's heater offsets as known, so
    on hardware every such recalibration starts by re-characterising every
    heater: the measurements reported are ``characterisation_points``
    readings per heater plus what the calibration itself reports (the twin
    method counts its own).

    Attributes:
      interval_s: time between recalibrations (s).
      method: :func:`photocomp.calibration.calibrate` method (``"model"`` or ``"local"``).
      steps: optimisation steps (the optimising methods, :data:`OPTIMISING`; the others take none).
      characterisation_points: readings per heater of the re-characterisation.
    """
    interval_s: float = 900.0
    method: str = "model"
    steps: int = 300
    characterisation_points: int = 8
    name = "recalibrate"

    def __post_init__(self):
        _set(self, "interval_s", _check_interval(self.interval_s, "Recalibrate.interval_s"))
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise UnknownNameError(f"Recalibrate.method must be one of {METHODS}; got {quote(self.method)}")
        _set(self, "steps", check_int(self.steps, "Recalibrate.steps", low=0))
        _set(self, "characterisation_points", check_int(self.characterisation_points,
                                                        "Recalibrate.characterisation_points", low=1, high=10**6))

    def n_rows(self, plan) -> int:
        return 1 + n_updates(self.interval_s, plan.dt_s, plan.n_steps)

    def schedule(self, plan, run: int, z) -> Schedule:

        updates = _update_steps(self.interval_s, plan)
        table, rows, events = [np.zeros(plan.phi0.shape)], [], []
        measurements = 0
        for j in updates:
            tj = float(plan.times[j])
            shift = plan.die.phase_per_k @ np.asarray(z[j])
            try:
                if plan.faults is not None:
                    plan.faults("recalibrate", tj, None)
                chip_now = drifted_chip(plan.chip, shift)
                steps = self.steps if self.method in OPTIMISING else None  # the other methods take none
                new = calibrate(plan.program, chip_now, self.method, steps=steps, progress=False)
                drives = new.drives()
                if not np.all(np.isfinite(drives)):
                    raise FloatingPointError("non-finite drives")
            except Exception as exc:  # a failed recalibration (or an injected fault): hold
                events.append({"time_s": tj, "kind": "recalibrate",
                               "message": f"recalibration failed ({type(exc).__name__}: {exc}); held the last good settings"})
                rows.append(len(table) - 1)
                continue
            measurements += int(new.report.summary.get("measurements", 0))
            if self.method in ("model", "local"):  # they take the heater offsets as known: re-measure them
                measurements += self.characterisation_points * plan.chip.n_heaters
            with jax.enable_x64(True):
                realized = np.asarray(realized_phases(plan.chip, jnp.asarray(drives)))
            table.append(phase_difference(realized, plan.phi0))
            rows.append(len(table) - 1)
        index = _piecewise_index(updates, np.asarray(rows, dtype=np.int64), plan.n_steps + 1)
        return Schedule(np.zeros((plan.n_steps + 1, 3)), index, np.stack(table), measurements=measurements,
                        extra_power_mw=_table_power(plan, index, table), events=tuple(events))


COMPENSATORS = {"none": NoCompensation, "feedforward": FeedForward, "closed-loop": ClosedLoop,
                "recalibrate": Recalibrate}

Compensator = NoCompensation | FeedForward | ClosedLoop | Recalibrate


def get_compensator(c: object) -> Compensator:
    """A compensator instance from a name (defaults) or an instance."""
    if isinstance(c, (NoCompensation, FeedForward, ClosedLoop, Recalibrate)):
        return c
    if isinstance(c, str) and c in COMPENSATORS:
        return COMPENSATORS[c]()
    raise UnknownNameError(f"compensator must be one of {sorted(COMPENSATORS)} or 'all' (or a compensator instance); "
                           f"got {quote(c)}")

