"""Drift studies: one calibrated program, one chip, a thermal process, several compensators.

:func:`study` simulates the die's temperature for ``runs`` Monte-Carlo runs
at once (``jax.vmap`` over keys), lets every compensator build its
schedule of commands from what it may observe, and scores all of them with
one pure error trace (:func:`photocomp.drift.dynamics.error_trace`). The
result, :class:`DriftStudy`, holds tidy arrays keyed by compensator and time
and prints, plots and saves them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from photocomp.compiler.program import Program
from photocomp.core.atomic import atomic_write
from photocomp.core.errors import InvalidInputError, InvalidTypeError, MismatchError, PhaseMapFileError
from photocomp.core.validate import check_int, check_real
from photocomp.drift.compensators import COMPENSATORS, Compensator, get_compensator
from photocomp.drift.dynamics import TraceInputs, error_trace_runs, lag_factor
from photocomp.drift.thermal import (
    FIELD_NAMES,
    MEMORY_LIMIT_BYTES,
    ThermalDie,
    ThermalProcess,
    as_process,
    field_basis,
    format_bytes,
    process_matrices,
    simulate_runs,
    thermal_die,
    thermal_phase_map,
)
from photocomp.hardware.chip import Chip, as_chip
from photocomp.hardware.chipsim import Settings, realized_phases
from photocomp.io.program_file import chip_fingerprint
from photocomp.sim.ideal import tile_matrices_np

__all__ = ["study", "DriftStudy", "read_csv", "DEFAULT_COMPENSATORS"]

DEFAULT_COMPENSATORS = ("none", "feedforward", "closed-loop", "recalibrate")


@dataclasses.dataclass(frozen=True)
class DriftStudy:
    """Results of :func:`study` (host numpy arrays).
    Attributes:
      times_s: ``(S + 1,)`` sample times (s), ``0`` is the moment of calibration.
      errors: ``{compensator: (runs, S + 1)}`` matrix error at every time
        (best complex gain per tile, see :mod:`photocomp.drift.dynamics`).
      temperature: ``(runs, S + 1, 3)`` die temperature state (K): ambient and
        the end-to-end gradients along x and y, relative to calibration.
      measurements: ``{compensator: (runs,)}`` optical measurements used.
      sensor_reads: ``{compensator: (runs,)}`` temperature-sensor readings used.
      extra_power_mw: ``{compensator: (runs,)}`` time-averaged change of a
        tile's total heater power (mW).
      wall_s: ``{compensator: seconds}`` host time to build and score its schedules.
      events: faults survived: dicts with ``compensator``, ``run``, ``time_s``,
        ``kind``, ``message``.
      fresh_error: the error at ``t = 0`` (the calibrated program, no drift).
      info: target, circuit, chip seed, seed, runs, dt, duration, the process, compile time.
      die: the :class:`~photocomp.drift.thermal.ThermalDie` (for the field plot).
    """
    times_s: np.ndarray
    errors: dict
    temperature: np.ndarray
    measurements: dict
    sensor_reads: dict
    extra_power_mw: dict
    wall_s: dict
    events: tuple
    fresh_error: float
    info: dict
    die: ThermalDie | None = None

    @property
    def compensators(self) -> list[str]:
        return list(self.errors)

    def summary(self) -> dict:
        """Per compensator: mean / p95 / max error over runs and times, resources, events."""
        out = {}
        for name, e in self.errors.items():
            out[name] = {
                "mean_error": float(np.mean(e)),
                "p95_error": float(np.percentile(e, 95)),
                "max_error": float(np.max(e)),
                "final_error": float(np.mean(e[:, -1])),
                "measurements": float(np.mean(self.measurements[name])),
                "sensor_reads": float(np.mean(self.sensor_reads[name])),
                "extra_power_mw": float(np.mean(self.extra_power_mw[name])),
                "wall_s": float(self.wall_s[name]),
                "events": sum(1 for ev in self.events if ev["compensator"] == name),
            }
        return out

    def table(self) -> str:
        """A plain-text table of :meth:`summary` (measurements and power per run)."""
        i = self.info
        head = (f"drift study: {i['target']} chip seed {i['chip_seed']}{_circuit_note(i)}, {i['runs']} run(s), "
                f"{i['duration_s'] / 3600:.3g} h at dt = {i['dt_s']:g} s; fresh error {self.fresh_error:.3e}")
        cols = ("compensator", "mean error", "p95 error", "max error", "measurements", "sensor reads",
                "extra power (mW)", "wall (s)", "events")
        rows = []
        for name, s in self.summary().items():
            rows.append((name, f"{s['mean_error']:.3e}", f"{s['p95_error']:.3e}", f"{s['max_error']:.3e}",
                         f"{s['measurements']:.0f}", f"{s['sensor_reads']:.0f}", f"{s['extra_power_mw']:+.2f}",
                         f"{s['wall_s']:.1f}", str(s["events"])))
        width = [max(len(c), *(len(r[k]) for r in rows)) for k, c in enumerate(cols)]
        fmt = lambda r: "  ".join(v.ljust(w) if k == 0 else v.rjust(w) for k, (v, w) in enumerate(zip(r, width)))  # noqa: E731
        return "\n".join([head, fmt(cols), fmt(["-" * w for w in width])] + [fmt(r) for r in rows])

    def __str__(self) -> str:
        return self.table()

    def to_csv(self, path: str | os.PathLike) -> str:
        """Write tidy rows ``run, compensator, time_s, matrix_error, ambient_k, gradient_x_k, gradient_y_k`` (atomic)."""
        if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
            raise InvalidTypeError(f"path must be a file path (str or os.PathLike); got {type(path).__name__}")
        path = os.fspath(path)
        f = lambda x: repr(float(x))  # noqa: E731  (round-trips exactly)

        def write(fh):  # streamed into the temporary file: no copy of the table in memory
            text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
            w = csv.writer(text, lineterminator="\n")
            w.writerow(["run", "compensator", "time_s", "matrix_error", *FIELD_NAMES])
            for name, e in self.errors.items():
                for r in range(e.shape[0]):
                    temp = self.temperature[r]
                    for j, t in enumerate(self.times_s):
                        w.writerow([r, name, f(t), f(e[r, j]), *(f(v) for v in temp[j])])
            text.flush()
            text.detach()

        return atomic_write(path, write)


def _circuit_note(info: dict) -> str:
    """`` (unitary circuit)`` for a study of a unitary program; nothing for the svd circuit."""
    circuit = info.get("circuit", "svd")
    return "" if circuit == "svd" else f" ({circuit} circuit)"


def read_csv(path: str | os.PathLike) -> dict:
    """Read :meth:`DriftStudy.to_csv` output: ``{"times_s", "errors": {name: (runs, S+1)}, "temperature"}``.
    Raises :class:`~photocomp.core.errors.PhaseMapFileError` for a missing file or
    one that is not such a CSV (other columns, not text, numbers missing or
    rows not on one time grid), naming what was expected and what was found.
    """
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"path must be a file path (str or os.PathLike); got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PhaseMapFileError(f"path must be an existing drift CSV file; got {path!r}")
    need = ["run", "compensator", "time_s", "matrix_error", *FIELD_NAMES]
    what = f"a drift CSV (DriftStudy.to_csv, 'photocomp drift -o') with columns {need}"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PhaseMapFileError(f"path must be {what}; got {path!r}, which is not CSV text ({type(exc).__name__})") from None
    if not set(need) <= set(columns):
        raise PhaseMapFileError(f"path must be {what}; got {path!r} with columns {columns[:8]}")
    if not rows:
        raise PhaseMapFileError(f"path must be {what} and at least one row; got {path!r} with no rows")
    try:
        runs_of = [int(r["run"]) for r in rows]
        values = np.array([[float(r[c]) for c in need[2:]] for r in rows])
    except (TypeError, ValueError) as exc:
        raise PhaseMapFileError(f"path must be {what} holding numbers; got {path!r}: {exc}") from None
    names = list(dict.fromkeys(r["compensator"] for r in rows))
    runs = max(runs_of) + 1
    groups: dict = {}
    for i, (r, run) in enumerate(zip(rows, runs_of)):
        groups.setdefault((r["compensator"], run), []).append(i)
    expected = {(n, k) for n in names for k in range(runs)}
    if min(runs_of) < 0 or set(groups) != expected:
        raise PhaseMapFileError(f"path must be {what} with runs 0..{runs - 1} for every compensator; got {path!r} "
                                f"with (compensator, run) pairs {sorted(groups)[:6]}")
    times = values[groups[(names[0], 0)], 0]
    for key, idx in groups.items():
        if len(idx) != len(times) or not np.array_equal(values[idx, 0], times):
            raise PhaseMapFileError(f"path must be {what} on one time grid; got {path!r} where {key} has "
                                    f"{len(idx)} rows against {len(times)} for {(names[0], 0)}")
    errors = {n: np.stack([values[groups[(n, k)], 1] for k in range(runs)]) for n in names}
    temp = np.stack([values[groups[(names[-1], k)], 2:] for k in range(runs)])
    return {"times_s": times, "errors": errors, "temperature": temp}


SEED_MAX = 2**63 - 1
"""Largest seed :func:`study` accepts (``jax.random.PRNGKey`` takes a signed 64-bit integer)."""


def _n_steps(duration: float, dt_s: float) -> int:
    """Whole steps of ``dt_s`` in ``duration``, capped at ``10**18`` (far over any memory limit; checked next)."""
    steps = duration / dt_s + 1e-9
    return int(math.floor(steps)) if steps < 1e18 else 10**18


def study_bytes(runs: int, n_steps: int, n_compensators: int, rows: int, n_tiles: int, n_heaters: int,
                modes: int) -> int:
    """Estimated peak memory (bytes) of :func:`study`, the figure it refuses over :data:`MEMORY_LIMIT_BYTES`.

    Per run and time sample (float64): the simulation's noise and states
    (6 + 6), the temperature and a compensator's estimate on the host and
    the device (2 x 3 + 2 x 3), the row index and one error per compensator.
    Per run: a compensator's command table (``rows`` x tiles x heaters, host
    and device) and the chip simulation's working set (16 complex ``K x K``
    matrices per tile).
    """
    per_sample = 8 * (12 + 12 + 1 + n_compensators)
    per_run = (n_steps + 1) * per_sample + 2 * 8 * rows * n_tiles * n_heaters + 16 * 16 * n_tiles * modes**2
    return runs * per_run


def _check_memory(cal, comps, runs: int, n_steps: int, dt_s: float) -> None:
    """Refuse a study whose arrays would not fit in :data:`MEMORY_LIMIT_BYTES`, before allocating any."""
    shape = types.SimpleNamespace(dt_s=dt_s, n_steps=n_steps)
    rows = max(c.n_rows(shape) for c in comps)
    tiles, heaters, k = cal.phase_map.n_tiles, cal.chip.n_heaters, cal.target.size
    need = study_bytes(runs, n_steps, len(comps), rows, tiles, heaters, k)
    if need > MEMORY_LIMIT_BYTES:
        raise InvalidInputError(
            f"hours, dt_s and runs ask for {n_steps + 1:,} time samples in each of {runs:,} run(s) "
            f"({len(comps)} compensator(s), up to {rows:,} command row(s) of "
            f"{tiles} tile(s) x {heaters} heaters): about {format_bytes(need)} of memory, over the limit of "
            f"{format_bytes(MEMORY_LIMIT_BYTES)}; shorten hours, lengthen dt_s, or use fewer runs")


def _check_finite_errors(name: str, e: np.ndarray, times: np.ndarray, process, dt_s: float) -> None:
    """A trace with a non-finite error is refused, never reported."""
    bad = ~np.isfinite(e)
    if bad.any():
        run, j = np.argwhere(bad)[0]
        raise InvalidInputError(
            f"process and dt_s must keep the simulated error finite; compensator {name!r} gave {int(bad.sum())} "
            f"non-finite error(s) of {e.size}, the first in run {run} at t = {times[j]:g} s ({process}, "
            f"dt_s = {dt_s:g} s)")


# ---- the study -----------------------------------------------------------------------

@dataclasses.dataclass
class _Plan:
    """Everything the compensators share (host arrays; see compensators.py)."""
    program: Program
    chip: Chip
    template: Settings
    die: ThermalDie
    process: ThermalProcess
    dt_s: float
    n_steps: int
    times: np.ndarray
    phi0: np.ndarray
    drives_cal: np.ndarray
    decay: float
    seed: int
    faults: Callable[[str, float, Any], Any] | None
    power_samples: int = 24
    _twins: dict = dataclasses.field(default_factory=dict)

    def twin(self, model_error: float) -> np.ndarray:
        """The compensators' model of the die's phase per kelvin (H, 3), imbalance known to ``model_error``."""
        if model_error not in self._twins:
            rng = np.random.default_rng([self.seed, self.chip.seed, 0x7E1A])
            imb = {s: v * (1.0 + model_error * rng.standard_normal(np.shape(v))) for s, v in self.die.imbalance_um.items()}
            die = self.die
            phi = thermal_phase_map(self.chip.target, imb, lambda xy: _basis(xy, die), self.chip.circuit)
            sl = self.chip.group_slices()
            for g in ("v_out", "u_out"):  # a common phase on every output is global: leave it
                if g in sl:
                    phi[sl[g]] -= phi[sl[g]].mean(axis=0)
            self._twins[model_error] = phi
        return self._twins[model_error]


_COMPILED: dict = {}


def _compiled_trace(base, shapes):
    """The error trace compiled ahead of time for these shapes (kept for later studies of the same shapes)."""
    leaves, tree = jax.tree_util.tree_flatten((base, shapes))
    key = (tree, tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__))) for x in leaves))
    if key not in _COMPILED:
        if len(_COMPILED) >= 8:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = error_trace_runs.lower(base, *shapes).compile()
    return _COMPILED[key]


def _basis(xy, die):

    return field_basis(xy, die.centre, die.extent)


def _program(cal: object) -> Program:

    if not isinstance(cal, Program):
        raise InvalidTypeError(f"cal must be a photocomp.Program calibrated by photocomp.calibration.calibrate; got {type(cal).__name__}")
    if not cal.calibrated:
        raise InvalidInputError("cal must be a calibrated program (from photocomp.calibration.calibrate or a loaded .cal.npz); got an uncalibrated one")
    return cal


def _check_chip(cal, chip):

    chip = as_chip(chip)
    chip.check_target(cal.target, "calibrated program", circuit=cal.circuit)
    if chip_fingerprint(chip) != chip_fingerprint(cal.chip):
        raise MismatchError(f"chip must be the chip the program was calibrated for (seed {cal.chip.seed}); "
                            f"got a different chip (seed {chip.seed})")
    return chip


def _compensators(compensators) -> list:
    if isinstance(compensators, str):
        compensators = DEFAULT_COMPENSATORS if compensators == "all" else (compensators,)
    try:
        items = list(compensators)
    except TypeError:
        raise InvalidTypeError(f"compensators must be 'all', a name or a list of names/compensators; got {type(compensators).__name__}") from None
    if not items:
        raise InvalidInputError(f"compensators must not be empty; choose from {sorted(COMPENSATORS)}")
    out = [get_compensator(c) for c in items]
    names = [c.name for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidInputError(f"compensators must be distinct; got {dup} more than once")
    return out


def study(cal: Program, chip: Chip, process: ThermalProcess | None = None, *, hours: float = 1.0, dt_s: float = 1.0,
          compensators: str | Sequence[str | Compensator] = DEFAULT_COMPENSATORS, seed: int = 0, runs: int = 1,
          progress: bool = True, faults: Callable[[str, float, Any], Any] | None = None) -> DriftStudy:
    """Simulate thermal drift of a calibrated program and compare compensators.
    Args:
      cal: a program calibrated for ``chip`` (:func:`photocomp.calibration.calibrate`).
      chip: the fabricated chip it was calibrated for (of the program's circuit, ``cal.circuit``).
      process: the :class:`~photocomp.drift.thermal.ThermalProcess` (default: its defaults).
      hours: simulated duration (h), ``>= 0``.
      dt_s: time step (s), ``> 0`` and at most the duration. The heaters'
        microsecond lag is integrated exactly at any step.
      compensators: ``"all"``, a name, or a list of names (``"none"``,
        ``"feedforward"``, ``"closed-loop"``, ``"recalibrate"``) or
        compensator instances (:mod:`photocomp.drift.compensators`).
      seed: seed of everything random (temperature, sensors, detectors, twin),
        in ``[0, 2**63 - 1]``.
      runs: Monte-Carlo runs (temperature trajectories), simulated at once.
        A study whose arrays would exceed
        :data:`~photocomp.drift.thermal.MEMORY_LIMIT_BYTES` (``hours / dt_s``
        samples x ``runs``, see :func:`study_bytes`) is refused before anything
        is allocated, with the estimate in the message; so is a trace whose
        error is not finite.
      progress: show a progress bar.
      faults: optional hook ``faults(kind, time_s, value) -> value`` called on
        every sensor reading (``kind="sensor"``, value ``(n_sensors,)`` K),
        probe burst (``"measurement"``, ``(T, P, K)`` intensities) and
        recalibration (``"recalibrate"``, ``None``); it may return altered
        values (e.g. NaN) or raise. A compensator survives a failure by
        holding its last good settings, and the study records an event.

    Returns:
      a :class:`DriftStudy`.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> prog = pc.compile(np.eye(4), target="clements-4")  # a unitary program: one mesh
      >>> chip = pc.fabricate("clements-4", seed=1, circuit=prog.circuit)
      >>> cal = pc.calibrate(prog, chip, method="local", progress=False)
      >>> s = pc.drift.study(cal, chip, hours=0.05, dt_s=10, compensators=["none", "feedforward"], progress=False)
      >>> s.errors["none"].shape
      (1, 19)
    """
    cal = _program(cal)
    chip = _check_chip(cal, chip)
    process = ThermalProcess() if process is None else as_process(process)
    hours = check_real(hours, "hours", low=0.0)
    dt_s = check_real(dt_s, "dt_s", low=0.0, low_open=True)
    duration = hours * 3600.0
    if not math.isfinite(duration):
        raise InvalidInputError(f"hours must be finite in seconds (hours * 3600); got hours = {hours:g}")
    if dt_s > duration:
        raise InvalidInputError(f"dt_s must not exceed the duration (hours * 3600 = {duration:g} s); got dt_s = {dt_s:g} s")
    comps = _compensators(compensators)
    seed = check_int(seed, "seed", low=0, high=SEED_MAX)
    runs = check_int(runs, "runs", low=1, high=10**9)
    if faults is not None and not callable(faults):
        raise InvalidTypeError(f"faults must be a callable faults(kind, time_s, value) or None; got {type(faults).__name__}")
    if not isinstance(progress, bool):
        raise InvalidTypeError(f"progress must be a bool; got {type(progress).__name__}")
    n_steps = _n_steps(duration, dt_s)
    _check_memory(cal, comps, runs, n_steps, dt_s)

    with jax.enable_x64(True):
        t_setup = time.perf_counter()
        program = Program(cal.target, cal.phase_map, cal.report, cal.pipeline, cal.detection)
        tiles = tile_matrices_np(cal.ideal_phase_map)
        drives_cal = np.asarray(cal.drives(), dtype=np.float64)
        phi0 = np.asarray(realized_phases(chip, jnp.asarray(drives_cal)))
        die = thermal_die(chip, process)
        decay = lag_factor(dt_s, chip.target.heater_tau_us * 1e-6)
        assert cal.settings is not None  # _program admits calibrated programs only
        plan = _Plan(program, chip, cal.settings, die, process, dt_s, n_steps, dt_s * np.arange(n_steps + 1),
                     phi0, drives_cal, decay, seed, faults)

        keys = jax.random.split(jax.random.PRNGKey(seed), runs)
        z = np.asarray(simulate_runs(keys, *process_matrices(process, dt_s), n_steps=n_steps))
        if not np.all(np.isfinite(z)):
            raise InvalidInputError(f"process and dt_s must give a finite temperature; got {process} at dt_s = {dt_s:g} s, "
                                    "outside the range the thermal model can represent")
        n_rows = max(c.n_rows(plan) for c in comps)
        settings = jax.tree_util.tree_map(jnp.asarray, cal.settings)
        base = TraceInputs(chip.unseeded(), settings, jnp.asarray(tiles), jnp.asarray(phi0), jnp.asarray(die.phase_per_k),
                           jnp.asarray(die.phase_per_k), jnp.asarray(decay))
        shapes = (jnp.asarray(z), jnp.zeros((runs, n_steps + 1, 3)), jnp.zeros((runs, n_steps + 1), jnp.int32),
                  jnp.zeros((runs, n_rows) + phi0.shape))
        t_compile = time.perf_counter()
        trace = _compiled_trace(base, shapes)
        compile_s = time.perf_counter() - t_compile
        setup_s = time.perf_counter() - t_setup

        errors, meas, reads, power, wall, events = {}, {}, {}, {}, {}, []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(comps) * runs, desc="drift", unit="run")
        try:
            for comp in comps:
                t0 = time.perf_counter()
                scheds = []
                for r in range(runs):
                    if bar is not None:
                        bar.set_postfix(compensator=comp.name, run=r)
                    scheds.append(comp.schedule(plan, r, z[r]))
                    if bar is not None:
                        bar.update(1)
                table = np.zeros((runs, n_rows) + phi0.shape)
                for r, s in enumerate(scheds):
                    table[r, : len(s.table)] = s.table
                twin = plan.twin(comp.model_error) if hasattr(comp, "model_error") else die.phase_per_k
                inp = dataclasses.replace(base, twin=jnp.asarray(twin))
                err = trace(inp, jnp.asarray(z), jnp.asarray(np.stack([s.zhat for s in scheds])),
                            jnp.asarray(np.stack([s.index for s in scheds]).astype(np.int32)), jnp.asarray(table))
                errors[comp.name] = np.asarray(err)
                wall[comp.name] = time.perf_counter() - t0
                meas[comp.name] = np.array([s.measurements for s in scheds])
                reads[comp.name] = np.array([s.sensor_reads for s in scheds])
                power[comp.name] = np.array([s.extra_power_mw for s in scheds])
                for r, s in enumerate(scheds):
                    events += [{"compensator": comp.name, "run": r, **ev} for ev in s.events]
        finally:
            if bar is not None:
                bar.close()
    for name, e in errors.items():
        _check_finite_errors(name, e, plan.times, process, dt_s)
    first = errors[comps[0].name]
    info = {"target": chip.target.name, "circuit": chip.circuit, "chip_seed": chip.seed, "seed": seed, "runs": runs,
            "dt_s": dt_s, "duration_s": n_steps * dt_s, "process": dataclasses.asdict(process), "compile_s": compile_s,
            "setup_s": setup_s, "compensators": {c.name: dataclasses.asdict(c) for c in comps}}
    return DriftStudy(plan.times, errors, z, meas, reads, power, wall, tuple(events), float(np.mean(first[:, 0])),
                      info, die)
