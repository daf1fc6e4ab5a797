"""Digital twins: chip models fitted to black-box measurements.

A real chip only answers ``measure(drives, inputs) -> detected intensities``
(:class:`~photocomp.hardware.detector.BlackBoxChip`). :func:`fit_twin` learns a
:class:`~photocomp.hardware.chip.Chip` model of it -- coupler splitting-angle errors,
insertion losses, heater offsets and efficiencies -- by fitting the model's
predicted read-outs to probe measurements with optax:

1. Heater characterisation (:meth:`BlackBoxChip.characterize_heaters`) gives
   offsets and efficiencies to within its fit error; couplers start ideal
   and losses at the target's nominal value. It costs ``points_per_heater``
   readings (and configuration changes) per heater, whatever the shots.
2. Probe drives: the program's operating point, the operating point with
   random phase perturbations, and uniformly random phases -- so the twin is
   accurate where calibration will search and identifiable everywhere.
3. Each probe configuration is read with the K unit input vectors, without
   and with a reference beam at three phases (phase stepping, see
   :func:`~photocomp.hardware.detector.measure_matrix`): ``4 K`` measurements per
   configuration and shot, which determine the complex transfer matrix,
   output phases included.
4. The model's parameters are fitted to the raw intensities (least squares,
   L-BFGS by default) with the same differentiable chip simulation that
   calibration uses.

A reading is what :class:`~photocomp.hardware.detector.BlackBoxChip` counts:
one input vector detected once per shot. :func:`calibrate_twin` reports how
many went to the characterisation, the first fit's probes, the refinement
rounds and the final measured check (``readings_*`` in its summary).

The thermal crosstalk between heaters is taken from the layout's nominal
law (:mod:`photocomp.hardware.chip`), which is what fabricated chips follow here.

A twin has the black box's circuit (:attr:`BlackBoxChip.circuit`): an svd
chip's V mesh, attenuators and U mesh, or a unitary chip's one mesh, with
that circuit's heaters and crosstalk.

Reference: S. Bandyopadhyay et al., "Hardware error correction for
programmable photonics", Optica 8, 1247 (2021), for model-based correction
from measured component parameters.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from photocomp.calibration.engine import (
    check_optimizer,
    extra_args_optimizer,
    ideal_settings,
    ideal_tiles,
    local_settings,
    minimize,
    optimize,
    quantized,
    relative_error,
    settings_error,
)
from photocomp.core.convention import phase_difference
from photocomp.core.crossbar import crossbar_counts
from photocomp.core.errors import InvalidInputError, InvalidTypeError, MismatchError
from photocomp.core.ir import CompileReport, PassRecord, circuit_stages
from photocomp.core.validate import check_int, check_real
from photocomp.hardware.chip import Chip, crosstalk_matrix, heater_positions, heater_slices
from photocomp.hardware.chipsim import (
    Settings,
    chip_tile_matrices,
    drive_map,
    flatten_heaters,
    realized_phases,
    unflatten_heaters,
)
from photocomp.hardware.dac import quantize_power
from photocomp.hardware.detector import (
    PHASE_STEPS,
    BlackBoxChip,
    drive_template,
    measure_matrix,
    reference_amplitude,
)
from photocomp.sim.devices import bucket, pad_tiles

__all__ = ["TwinFit", "fit_twin", "refine_twin", "twin_parameter_errors"]


@dataclasses.dataclass(frozen=True)
class TwinFit:
    """A fitted digital twin.
    Attributes:
      chip: the fitted chip model (``seed`` -1: not a fabricated chip).
      residual: rms misfit of the read-outs relative to their rms, at the end.
      residual_start: the same for the starting model.
      measurements: measurements used (characterisation and probes).
      configs: probe drive configurations used.
      steps_run: optimisation steps run.
      stopped: why the optimisation stopped.
      history: rms relative residual per step.
      wall_s: wall time (s).
      data: the probe data ``(drives (C, H), references (C, 4), read-outs (C, 4, K, K))``.
      characterization_measurements: of ``measurements``, those the heater
        characterisation used (``points_per_heater * n_heaters``).
    """
    chip: Chip
    residual: float
    residual_start: float
    measurements: int
    configs: int
    steps_run: int
    stopped: str
    history: np.ndarray
    wall_s: float
    data: tuple = dataclasses.field(default=(), repr=False)
    characterization_measurements: int = 0


def _template(target, n: int, circuit: str = "svd") -> Settings:
    """Settings of a ``circuit`` chip shaped for ``n`` probe configurations (one tile each)."""
    return drive_template(target, n, circuit)


def _params_of(chip: Chip) -> dict:
    stages = circuit_stages(chip.circuit)
    return {
        "coupler_in": {s: jnp.asarray(chip.coupler_in[s], jnp.float64) for s in stages},
        "coupler_out": {s: jnp.asarray(chip.coupler_out[s], jnp.float64) for s in stages},
        "loss_db": {s: jnp.asarray(chip.loss_db[s], jnp.float64) for s in stages},
        "offset": jnp.asarray(chip.offset, jnp.float64),
        "efficiency": jnp.asarray(chip.efficiency, jnp.float64),
        "cell_errors": {s: {c: jnp.asarray(v, jnp.float64) for c, v in d.items()} for s, d in chip.cell_errors.items()},
    }


def _chip_of(params: dict, like: Chip) -> Chip:
    return dataclasses.replace(like, **params)


def _gauge(target, circuit: str = "svd") -> dict:
    """Masks (1 = fitted, 0 = held at the prior) that remove the model's exact symmetries.
    Between the V mesh and the U mesh of an svd chip every mode passes the V
    output phase shifter, its attenuator and, for the upper mode of a U MZI
    that is the first to touch it, that MZI's external phase shifter, with
    nothing that mixes modes in between: only the sum of those offsets
    matters, so the U external offsets there are held (a Bell chip: its U
    input layer, which every mode passes there). Likewise only the product of the
    losses along each mode there matters: the attenuators' losses absorb
    those of V MZIs that are last on both their modes and of U MZIs that
    are first on both, which are held at the nominal loss. A unitary chip
    has no such stretch: its one mesh lies between the unit inputs and the
    phase-stepping reference, which see every offset and loss, so nothing
    is held.
    """
    lay = target.layout
    k, m = target.size, lay.n_mzi
    cell = {s: {c: np.ones(m) for c in _other_couplers(lay)} for s in circuit_stages(circuit) if s != "att"}
    if circuit_stages(circuit) == ("u",):
        sl = heater_slices(target, circuit)
        n = max(g.stop for g in sl.values())
        offset = np.ones(n)
        if lay.crossbar:
            # only the sum of a cell's input offset and its output's reference offset matters: the references
            # are held; a path's tree amplitudes scale its cell like its loss, which takes them (no tree
            # parameters are fitted)
            offset[sl["u_out"]] = 0.0
        return {"coupler_in": {"u": np.ones(m)}, "coupler_out": {"u": np.ones(m)}, "loss_db": {"u": np.ones(m)},
                "offset": offset, "efficiency": np.ones(n), "cell_errors": cell}
    pairs, lower, cols = lay.pair_array, lay.lower_array, lay.column_array
    first = np.full(k, np.iinfo(np.int64).max)
    last = np.full(k, -1)
    for n, n2, c in zip(pairs, lower, cols):
        first[n] = min(first[n], c); first[n2] = min(first[n2], c)  # noqa: E702
        last[n] = max(last[n], c); last[n2] = max(last[n2], c)  # noqa: E702
    u_first_upper = cols == first[pairs]
    u_first_both = u_first_upper & (cols == first[lower])
    v_last_both = (cols == last[pairs]) & (cols == last[lower])
    sl = heater_slices(target)
    offset = np.ones(max(g.stop for g in sl.values()))
    if lay.cell.programming == "sweep":  # the Bell chip: its U input layer sits in that stretch, on every mode
        offset[sl["u_in"]] = 0.0
    else:
        offset[np.arange(sl["u_ext"].start, sl["u_ext"].stop)[u_first_upper]] = 0.0
    ones = {"v": np.ones(m), "att": np.ones(k), "u": np.ones(m)}
    loss = {"v": (~v_last_both).astype(float), "att": np.ones(k), "u": (~u_first_both).astype(float)}
    return {"coupler_in": ones, "coupler_out": dict(ones), "loss_db": loss, "offset": offset,
            "efficiency": np.ones_like(offset), "cell_errors": cell}


def _other_couplers(lay) -> tuple[str, ...]:
    """The cell's couplers other than the MZI's two (a three-splitter MZI: ``coupler_mid``)."""
    return tuple(c for c in lay.cell.couplers if c not in ("coupler_in", "coupler_out"))


def _scales(target, gauge: dict) -> dict:
    """Typical size of each parameter's deviation from the prior, times its gauge mask."""
    c = max(float(target.coupler_sigma_rad), 1e-3)
    l = max(float(target.mzi_loss_sigma_db), 1e-3)
    if target.layout.crossbar:  # a cell's loss also carries its path's tree imbalance: 2 trees of `depth` splitters
        depth = crossbar_counts(target.size)["tree_depth"]
        l = math.hypot(l, 20 / math.log(10) * c * math.sqrt(2 * depth))
    e = max(float(target.heater_efficiency_sigma), 1e-3)
    return {
        "coupler_in": {s: c * g for s, g in gauge["coupler_in"].items()},
        "coupler_out": {s: c * g for s, g in gauge["coupler_out"].items()},
        "loss_db": {s: l * g for s, g in gauge["loss_db"].items()},
        "offset": 0.1 * gauge["offset"],
        "efficiency": e * gauge["efficiency"],
        "cell_errors": {s: {n: c * g for n, g in d.items()} for s, d in gauge["cell_errors"].items()},
    }


def _prior_chip(target, offset, efficiency, circuit: str = "svd") -> Chip:
    """The starting ``circuit`` model: ideal couplers, nominal loss, characterised heaters, nominal crosstalk."""
    lay = target.layout
    sizes = {"v": lay.n_mzi, "att": target.size, "u": lay.n_mzi}
    stages = circuit_stages(circuit)
    zeros = {s: np.zeros(sizes[s]) for s in stages}
    loss = {s: np.full(sizes[s], float(target.mzi_loss_db)) for s in stages}
    rows, cols, w = crosstalk_matrix(target, heater_positions(target, circuit))
    cell = {s: {c: np.zeros(lay.n_mzi) for c in _other_couplers(lay)} for s in stages if s != "att"}
    return Chip(target, -1, zeros, dict(zeros), loss, np.asarray(offset, np.float64),
                np.asarray(efficiency, np.float64), rows, cols, w, circuit, cell)


def _predict(chip: Chip, template: Settings, drives, refs):
    """Predicted read-outs (C, R, K, K): config, reference (refs (C, R)), input (unit vectors), output."""
    s = unflatten_heaters(template, realized_phases(chip, drives), chip.target)
    m = chip_tile_matrices(chip, s, with_gain=False, reverse_only=True)  # (C, K, K): output x input; jax.grad only
    y = jnp.swapaxes(m, -1, -2)  # (C, input, output)
    return jnp.abs(y[:, None] + refs[:, :, None, None]) ** 2


def _probe_drives(prior: Chip, operating, n_configs: int, rng) -> np.ndarray:
    """Heater powers (C, H) for the probes: operating point, perturbed, random."""
    h = prior.n_heaters
    phases = [operating]
    n_near = (n_configs - 1 + 1) // 2
    for _ in range(n_near):
        phases.append(operating + rng.normal(0.0, 0.5, h))
    while len(phases) < n_configs:
        phases.append(rng.uniform(0.0, 2 * np.pi, h))
    return drive_map(prior, np.stack(phases[:n_configs]))


def fit_twin(box, *, operating_phases=None, configs: int = 6, shots: int | None = None, steps: int = 200,
             optimizer=None, tol: float = 1e-6, patience: int = 20, seed: int = 0, progress: bool = False,
             characterization: dict | None = None, points_per_heater: int | None = None) -> TwinFit:
    """Fit a digital twin of a black-box chip from probe measurements.
    Args:
      box: a :class:`~photocomp.hardware.detector.BlackBoxChip`; the twin is
        a chip of its circuit.
      operating_phases: ``(H,)`` heater phases (rad) of the program the twin
        will serve (flat heater order); default: all zero.
      configs: number of probe drive configurations (>= 1); each costs
        ``4 K shots`` measurements (readings: one input vector detected once
        per shot).
      shots: shots per probe reading (int >= 1; default: the box's).
      steps, tol, patience: L-BFGS iterations and early stopping on the
        relative improvement of the misfit.
      optimizer: any ``optax.GradientTransformation`` (default ``optax.lbfgs()``).
      seed: seed of the probe design.
      progress: show a progress bar.
      characterization: keyword arguments for
        :meth:`~photocomp.hardware.detector.BlackBoxChip.characterize_heaters`.
      points_per_heater: drives per heater of that characterisation (int >= 3;
        default 8, or ``characterization``'s); it costs
        ``points_per_heater * n_heaters`` measurements whatever ``shots`` is.
        Fewer points leave the offsets and efficiencies of the prior
        rougher, which the fit corrects.

    Returns:
      a :class:`TwinFit`.
    """
    if not isinstance(box, BlackBoxChip):
        raise InvalidTypeError(f"box must be a photocomp.BlackBoxChip; got {type(box).__name__}")
    configs = check_int(configs, "configs", low=1)
    steps = check_int(steps, "steps", low=0)
    tol = check_real(tol, "tol", low=0.0, high=1.0)
    patience = check_int(patience, "patience", low=1)
    seed = check_int(seed, "seed", low=0)
    if shots is not None:
        shots = check_int(shots, "shots", low=1)
    if characterization is not None and not isinstance(characterization, dict):
        raise InvalidTypeError(f"characterization must be a dict of characterize_heaters keyword arguments or None; "
                               f"got {type(characterization).__name__}")
    char = dict(characterization or {})
    if points_per_heater is not None:
        points_per_heater = check_int(points_per_heater, "points_per_heater", low=3)
        if "points_per_heater" in char and char["points_per_heater"] != points_per_heater:
            raise InvalidInputError(f"points_per_heater given twice: {points_per_heater} and characterization's "
                                    f"{char['points_per_heater']!r:.40}; give it once")
        char["points_per_heater"] = points_per_heater

    optimizer = check_optimizer(optimizer)
    t = box.target
    h = box.n_heaters
    if operating_phases is None:
        operating = np.zeros(h)
    else:
        operating = np.asarray(operating_phases, dtype=np.float64)
        if operating.shape != (h,) or not np.all(np.isfinite(operating)):
            raise InvalidInputError(f"operating_phases must be finite with shape ({h},); got shape {operating.shape}")
    t0 = time.perf_counter()
    used0 = box.measurements
    offset, efficiency = box.characterize_heaters(**char)
    characterized = box.measurements - used0
    prior = _prior_chip(t, offset, efficiency, box.circuit)
    drives = _probe_drives(prior, operating, configs, np.random.default_rng([seed, 0x7717]))
    refs, readings = _probe(box, drives, shots)
    measurements = box.measurements - used0
    fit, info = _fit(prior, drives, refs, readings, optimizer, steps, tol, patience, progress)
    return TwinFit(fit, info["residual"], info["residual_start"], measurements, configs, info["steps_run"],
                   info["stopped"], info["history"], time.perf_counter() - t0, (drives, refs, readings),
                   int(characterized))


def _probe(box: BlackBoxChip, drives, shots):
    """Phase-stepped read-outs of the K unit inputs at each drive configuration: ``(refs (C, 4), (C, 4, K, K))``."""
    k = box.target.size
    eye = np.eye(k)
    readings, refs = [], []
    for d in np.atleast_2d(drives):  # a plain read-out, then three reference phases matched to it
        r0 = box.measure(d, eye, shots=shots, full_scale="auto")
        ref = np.concatenate([[0.0], reference_amplitude(r0, k) * PHASE_STEPS])
        readings.append([r0] + [box.measure(d, eye, shots=shots, reference=r, full_scale="auto") for r in ref[1:]])
        refs.append(ref)
    return np.asarray(refs), np.asarray(readings)


def refine_twin(box: BlackBoxChip, fit: TwinFit, drives, *, shots: int | None = None, steps: int = 100,
                optimizer=None, tol: float = 1e-6, patience: int = 20, progress: bool = False) -> TwinFit:
    """Probe ``drives`` (C', H) too and refit, starting from ``fit``'s twin, on all data so far.
    Used to sharpen the twin where calibration has taken the chip: the new
    configurations are where the twin's predictions matter most.
    """
    optimizer = check_optimizer(optimizer)
    t0 = time.perf_counter()
    used0 = box.measurements
    new_refs, new_readings = _probe(box, drives, shots)
    old_drives, old_refs, old_readings = fit.data
    drives = np.concatenate([old_drives, np.atleast_2d(drives)])
    refs = np.concatenate([old_refs, new_refs])
    readings = np.concatenate([old_readings, new_readings])
    chip, info = _fit(fit.chip, drives, refs, readings, optimizer, steps, tol, patience, progress)
    return TwinFit(chip, info["residual"], info["residual_start"], fit.measurements + box.measurements - used0,
                   len(drives), fit.steps_run + info["steps_run"], info["stopped"],
                   np.concatenate([fit.history, info["history"]]), fit.wall_s + time.perf_counter() - t0,
                   (drives, refs, readings), fit.characterization_measurements)


def _fit_loss(z, prior: Chip, template: Settings, drives, refs, data, scale, weight, p0, sc):
    """The twin's misfit: read-outs predicted with parameters ``p0 + sc * z`` against the measured ``data``,
    the mean over the configurations whose ``weight`` is 1 (the others pad the batch).
    Module-level, with every array an argument, so the compiled fitting step serves every fit of one shape."""
    params = jax.tree_util.tree_map(lambda a, b, c: a + b * c, p0, sc, z)
    pred = _predict(_chip_of(params, prior), template, drives, refs)
    per_config = jnp.mean(((pred - data) / scale) ** 2, axis=(1, 2, 3))
    return jnp.sum(per_config * weight) / jnp.sum(weight)


def _fit_args(prior: Chip, drives, refs, readings, size: int) -> tuple:
    """:func:`_fit_loss`'s arguments after ``z``, the configurations padded to ``size`` (repeating the last,
    with weight 0). Call under ``jax.enable_x64(True)``."""
    c = len(drives)
    drives, refs, readings = (pad_tiles(np.asarray(a), size) for a in (drives, refs, readings))
    template = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                      _template(prior.target, size, prior.circuit))
    data = jnp.asarray(readings)
    # each configuration's read-outs are weighted by their own rms (receivers auto-range per read-out)
    scale = jnp.sqrt(jnp.mean(data**2, axis=(1, 2, 3), keepdims=True))
    weight = jnp.asarray(np.arange(size) < c, jnp.float64)
    p0 = _params_of(prior)
    # fit normalised deviations z from the prior: p = p0 + scale * z (scale 0 where the gauge holds p)
    sc = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                _scales(prior.target, _gauge(prior.target, prior.circuit)))
    return prior.unseeded(), template, jnp.asarray(drives), jnp.asarray(refs), data, scale, weight, p0, sc


def _fit(prior: Chip, drives, refs, readings, optimizer, steps, tol, patience, progress):
    """Fit the twin's parameters to the read-outs of the configurations ``drives`` (C, H), starting at ``prior``.

    The configurations are padded to the batch sizes of
    :func:`photocomp.sim.devices.bucket` (:func:`_fit_args`), so the rounds of
    a calibration, which add a few configurations each, reuse a few compiled
    fitting steps instead of compiling one per round.
    """
    with jax.enable_x64(True):
        args = _fit_args(prior, drives, refs, readings, bucket(len(drives), 1))
        p0, sc = args[-2:]
        z0 = jax.tree_util.tree_map(jnp.zeros_like, p0)
        best, history, info = minimize(_fit_loss, z0, extra_args_optimizer(optimizer), steps, tol, patience, progress,
                                       "fit twin", args=args)
        best = jax.tree_util.tree_map(lambda a, b, c: np.asarray(a + b * c, dtype=np.float64), p0, sc, best)
    info.update(history=np.asarray(history), residual=float(history.min()) if len(history) else float("nan"),
                residual_start=float(history[0]))
    return _chip_of(best, prior), info


def twin_parameter_errors(twin: Chip, chip: Chip) -> dict:
    """RMS differences between a twin's parameters and a (simulated) chip's true ones.
    Offsets are compared modulo 2 pi. Only meaningful in simulation, where
    the true chip is known; used by tests and benchmarks. Both chips must be
    of one circuit (:class:`~photocomp.core.errors.MismatchError` otherwise).
    """
    if twin.circuit != chip.circuit:
        raise MismatchError(f"twin must model a chip of the chip's {chip.circuit} circuit; got a twin of the "
                            f"{twin.circuit} circuit")
    out = {}
    for name in ("coupler_in", "coupler_out", "loss_db"):
        diff = np.concatenate([np.asarray(getattr(twin, name)[s]) - np.asarray(getattr(chip, name)[s])
                               for s in circuit_stages(chip.circuit)])
        out[name] = float(np.sqrt(np.mean(diff**2)))
    d_off = phase_difference(twin.offset, chip.offset)
    out["offset"] = float(np.sqrt(np.mean(d_off**2)))
    out["efficiency"] = float(np.sqrt(np.mean((np.asarray(twin.efficiency) - np.asarray(chip.efficiency)) ** 2)))
    return out



def _measured_error(box: BlackBoxChip, power, target_tiles, shots: int | None = None) -> float:
    """Matrix error (best real gain per tile) estimated from phase-stepped measurements of every tile."""
    with jax.enable_x64(True):
        m = jnp.asarray(np.stack([measure_matrix(box, p, shots=shots) for p in np.atleast_2d(power)]))
        err, _ = relative_error(jnp.asarray(target_tiles), m)
        return float(err)


def calibrate_twin(prog, box: BlackBoxChip, *, optimizer, steps, tol, patience, progress, seed, configs,
                   twin_steps, dac_bits, callback, rounds: int = 2, points_per_heater: int = 8,
                   probe_shots: int | None = None, check_shots: int | None = None):
    """``calibrate(method="twin")``: fit a twin from measurements, calibrate on it, apply its drives.
    After the first calibration, each further round (``rounds``) probes
    the chip at the calibrated drives of every tile, refits the twin on all
    data, and recalibrates from where the last round ended.

    The black box's hidden chip is used only to simulate the returned
    program (what the real chip would do with the applied drives) and to
    report the true errors; every decision is taken from measurements.

    ``points_per_heater`` drives per heater characterise the heaters;
    ``probe_shots`` (None: the box's shots) are the shots of the twin's probe
    readings, first fit and refinement rounds alike; ``check_shots`` those of
    the final measured check. The report's summary splits the readings:
    ``readings_characterization``, ``readings_probes`` (first fit),
    ``readings_refinement`` (later rounds) and ``readings_check``.
    """
    import types

    t0 = time.perf_counter()
    chip = box._chip
    used0 = box.measurements
    target_tiles = ideal_tiles(prog)
    ideal = ideal_settings(prog)
    before, _, _ = settings_error(chip, ideal, target_tiles)
    operating = np.asarray(flatten_heaters(ideal))[0]
    fit = fit_twin(box, operating_phases=operating, configs=configs, shots=probe_shots, steps=twin_steps, seed=seed,
                   progress=progress, points_per_heater=points_per_heater)
    first_fit = fit.measurements
    twin = fit.chip
    t_cal = time.perf_counter()
    start, start_twin_err = local_settings(prog, twin, target_tiles)
    final, history, info = optimize(twin, start, target_tiles, optimizer, steps, tol, patience, progress,
                                     f"calibrate {prog.target.name} on twin", callback)
    for _ in range(rounds - 1):
        if "interrupted" in info["stopped"] or "callback" in info["stopped"]:
            break
        with jax.enable_x64(True):
            at = drive_map(twin, np.asarray(flatten_heaters(final)))
        fit = refine_twin(box, fit, at, shots=probe_shots, steps=max(twin_steps // 2, 1), optimizer=optimizer,
                          progress=progress)
        twin = fit.chip
        final, history, info = optimize(twin, final, target_tiles, optimizer, steps, tol, patience, progress,
                                         f"calibrate {prog.target.name} on twin", callback)
    cal_s = time.perf_counter() - t_cal
    # the uncalibrated program as it would be driven with what the twin knows of the heaters
    fallback, _ = quantized(twin, chip, ideal, target_tiles, dac_bits)
    applied, after = quantized(twin, chip, final, target_tiles, dac_bits)
    with jax.enable_x64(True):
        def power_of(s):
            p = drive_map(twin, np.asarray(flatten_heaters(s)))
            return p if dac_bits is None else quantize_power(p, chip.target, dac_bits)

        before_check = box.measurements
        measured_after = _measured_error(box, power_of(final), target_tiles, check_shots)
        measured_fallback = _measured_error(box, power_of(ideal), target_tiles, check_shots)
        check_readings = box.measurements - before_check
    unquantized = quantized(twin, chip, final, target_tiles, None)[1] if dac_bits is not None else None
    kept = measured_after <= measured_fallback
    if not kept:
        applied, after = fallback, settings_error(chip, fallback, target_tiles)[0]
    measurements = box.measurements - used0
    metrics = {
        "method": "twin", "error_before": before, "error_after": after,
        "error_after_measured": measured_after if kept else measured_fallback,
        "measurements": int(measurements), "twin_measurements": int(fit.measurements),
        "readings_characterization": int(fit.characterization_measurements),
        "readings_probes": int(first_fit - fit.characterization_measurements),
        "readings_refinement": int(fit.measurements - first_fit), "readings_check": int(check_readings),
        "twin_residual": fit.residual, "twin_configs": fit.configs, "twin_steps": fit.steps_run, "twin_rounds": rounds,
        "error_on_twin": float(np.min(history)) if len(history) else start_twin_err,
        "steps_run": info["steps_run"], "stopped": info["stopped"] if kept else
        "twin result measured worse than the uncalibrated program; kept the uncalibrated drives",
        "wall_s": time.perf_counter() - t0,
    }
    if unquantized is not None and kept:
        metrics["error_unquantized"] = unquantized
    records = (
        PassRecord("twin-fit", f"twin(configs={configs}, steps={twin_steps}, points_per_heater={points_per_heater})",
                   fit.wall_s,
                   types.MappingProxyType({"residual": fit.residual, "measurements": fit.measurements})),
        PassRecord("twin-calibrate", f"model-on-twin(steps={steps})", cal_s,
                   types.MappingProxyType({"matrix_error": after, **info})),
    )
    report = CompileReport(prog.report.records + records, types.MappingProxyType({**dict(prog.report.summary), **metrics}))
    return prog.with_chip(chip, applied, report)
