"""``photocomp.calibrate``: calibrate a compiled program for a fabricated chip.

Methods: ``"local"`` (analytic per-MZI correction), ``"model"`` (optax on the
differentiable chip model, :mod:`photocomp.calibration.engine`) and
``"twin"`` (the chip as a black box, :mod:`photocomp.calibration.twin`).
"""

from __future__ import annotations

import time
import types

import numpy as np

from photocomp.calibration.engine import (
    check_optimizer,
    check_program,
    ideal_settings,
    ideal_tiles,
    local_settings,
    optimize,
    quantized,
    settings_error,
)
from photocomp.calibration.twin import calibrate_twin
from photocomp.core.errors import InvalidInputError, InvalidTypeError, UnknownNameError
from photocomp.core.ir import CompileReport, PassRecord
from photocomp.core.validate import check_int, check_real
from photocomp.hardware.chip import as_chip
from photocomp.hardware.detector import BlackBoxChip

__all__ = ["METHODS", "calibrate"]

METHODS = ("model", "local", "twin")


def calibrate(prog, chip, method: str = "model", *, optimizer=None, steps: int = 300, tol: float = 1e-4,
              patience: int = 30, warm_start: str = "local", progress: bool = True, shots: int = 1,
              seed: int = 0, twin_configs: int = 6, twin_steps: int = 300, twin_rounds: int = 2,
              dac_bits: int | None = None, callback=None):
    """Calibrate ``prog`` for ``chip``; returns a calibrated :class:`~photocomp.compiler.program.Program`.
    Args:
      prog: a compiled program (not already calibrated for another chip).
      chip: a :class:`~photocomp.hardware.chip.Chip` of the same target.
      method: ``"local"`` (analytic per-MZI correction), ``"model"``
        (optax on the differentiable chip model, chip errors known) or
        ``"twin"`` (the chip is a black box: a digital twin is fitted to
        noisy probe measurements (:mod:`photocomp.calibration.twin`), the program is
        calibrated on the twin, and the resulting drives are applied to the
        chip).
      optimizer: any ``optax.GradientTransformation``; default ``optax.lbfgs()``
        (line-search optimizers receive the objective through optax's
        extra-args interface).
      steps: maximum optimisation steps (model).
      tol, patience: early stopping: stop after ``patience`` steps without a
        relative improvement of the squared error by ``tol``.
      warm_start: ``"local"`` (default) or ``"ideal"`` settings to start from.
      progress: show a progress bar.
      shots: shots per reading of the black-box measurements (twin).
      seed: seed of the measurement noise and the probe design (twin).
      twin_configs, twin_steps: probe drive configurations and fitting
        steps of the twin.
      twin_rounds: fit-calibrate rounds; each round after the first also
        probes the chip where the last calibration took it and refits.
      dac_bits: if given, the final heater drives are quantized by a DAC of
        this many bits (in voltage, ``P = P_pi (V / V_pi)^2``, spanning the
        drive limit), and the error is reported after quantization.
      callback: ``callback(step, error) -> bool``, called after every
        optimisation step with the best error so far; returning True stops
        the calibration (keeping the best settings).

    Returns:
      a Program whose ``forward``/``matrix`` simulate the chip with the
      calibrated settings; ``report`` has the error before/after, steps,
      stop reason, measurements used and wall time. The model result is
      never worse than its start; the twin result is kept only if its
      measured error beats the uncalibrated program's.
    """
    prog = check_program(prog)
    box = chip if isinstance(chip, BlackBoxChip) else None
    chip = as_chip(box._chip if box is not None else chip)
    chip.check_target(prog.target)
    if box is not None and method != "twin":
        raise InvalidInputError(f"a BlackBoxChip can only be calibrated with method='twin'; got method={method!r}")
    if method not in METHODS:
        raise UnknownNameError(f"method must be one of {METHODS}; got {method!r}")
    if warm_start not in ("local", "ideal"):
        raise UnknownNameError(f"warm_start must be 'local' or 'ideal'; got {warm_start!r}")
    steps = check_int(steps, "steps", low=0)
    tol = check_real(tol, "tol", low=0.0, high=1.0)
    patience = check_int(patience, "patience", low=1)
    optimizer = check_optimizer(optimizer)
    shots = check_int(shots, "shots", low=1)
    seed = check_int(seed, "seed", low=0)
    if dac_bits is not None:
        dac_bits = check_int(dac_bits, "dac_bits", low=1, high=32)
    if callback is not None and not callable(callback):
        raise InvalidTypeError(f"callback must be callable as callback(step, error); got {type(callback).__name__}")
    if method == "twin":

        box = box or BlackBoxChip(chip, seed=seed, shots=shots)
        return calibrate_twin(prog, box, optimizer=optimizer, steps=steps, tol=tol, patience=patience,
                              progress=progress, seed=seed, configs=twin_configs, twin_steps=twin_steps,
                              dac_bits=dac_bits, callback=callback,
                              rounds=check_int(twin_rounds, "twin_rounds", low=1))
    t0 = time.perf_counter()
    target_tiles = ideal_tiles(prog)
    ideal = ideal_settings(prog)
    before, ideal_gain, _ = settings_error(chip, ideal, target_tiles)
    if not np.isfinite(before):
        raise InvalidInputError("calibration cannot start: the chip simulation of the program is not finite")
    ideal = ideal.replace(gain=ideal_gain)
    t_local = time.perf_counter()
    if method == "local" or warm_start == "local":
        start, start_err = local_settings(prog, chip, target_tiles)
    else:
        start, start_err = ideal, before
    local_s = time.perf_counter() - t_local
    if start_err > before:  # never start from something worse than the ideal settings
        start, start_err = ideal, before
    metrics = {"method": method, "error_before": before, "error_start": start_err}
    records = [PassRecord("local", "local", local_s, types.MappingProxyType({"matrix_error": start_err}))]
    final = start
    if method == "model":
        t_opt = time.perf_counter()
        final, history, info = optimize(chip, start, target_tiles, optimizer, steps, tol, patience, progress,
                                         f"calibrate {prog.target.name}", callback)
        opt_err, opt_gain, _ = settings_error(chip, final, target_tiles)
        final = final.replace(gain=opt_gain)
        if opt_err > start_err:
            final, opt_err = start, start_err
        records.append(PassRecord("model", f"model(steps={steps})", time.perf_counter() - t_opt,
                                  types.MappingProxyType({"matrix_error": opt_err, **info})))
        metrics.update(info)
    after = opt_err if method == "model" else start_err  # `final` carries its best gains
    if dac_bits is not None:
        final, after = quantized(chip, chip, final, target_tiles, dac_bits)
        metrics["error_unquantized"] = opt_err if method == "model" else start_err
    metrics.update({"error_after": after, "measurements": 0, "wall_s": time.perf_counter() - t0})
    report = CompileReport(prog.report.records + tuple(records), types.MappingProxyType({**dict(prog.report.summary), **metrics}))
    return prog.with_chip(chip, final, report)
