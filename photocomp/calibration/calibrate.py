"""``photocomp.calibrate``: calibrate a compiled program for a fabricated chip.

Methods: ``"local"`` (analytic per-MZI correction), ``"model"`` (optax on the
differentiable chip model, :mod:`photocomp.calibration.engine`) and
``"twin"`` (the chip as a black box, :mod:`photocomp.calibration.twin`) and
``"selfconfig"`` (measurement-only self-configuration of a unitary program,
:mod:`photocomp.calibration.selfconfig`) and ``"nullify"`` (a unitary program
programmed by nulling in-mesh power monitors, :mod:`photocomp.calibration.nullify`) and ``"diagonalize"`` (a
unitary program on a triangular mesh configured chain by chain from its output powers,
:mod:`photocomp.calibration.diagonalize`) and ``"cells"`` (a crossbar's cells read at once and set in closed
form, :mod:`photocomp.calibration.cells`) and ``"insitu"`` (gradients of the measured error by the parameter-shift
rule, :mod:`photocomp.calibration.insitu`).
"""

from __future__ import annotations

import dataclasses
import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from photocomp.calibration.engine import (
    better_per_tile,
    check_optimizer,
    check_program,
    ideal_settings,
    ideal_tiles,
    local_settings,
    optimize,
    quantized,
    settings_error,
)
from photocomp.calibration.methods import (
    METHOD_NAMES,
    Cells,
    Diagonalize,
    InSitu,
    Local,
    Method,
    Model,
    Nullify,
    SelfConfig,
    Twin,
    as_method,
    method_from_name,
    reject_loose_settings,
)
from photocomp.calibration.twin import calibrate_twin
from photocomp.compiler.program import Program
from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.ir import CompileReport, PassRecord
from photocomp.core.validate import check_int
from photocomp.hardware.chip import Chip, as_chip
from photocomp.hardware.dac import quantize_power
from photocomp.hardware.detector import BlackBoxChip, heater_monitored

__all__ = ["METHODS", "calibrate"]

METHODS = METHOD_NAMES


def calibrate(prog: Program, chip: Chip | BlackBoxChip, method: str | Method = "model", *, optimizer: Any = None,
              steps: int | None = None,
              tol: float | None = None, patience: int | None = None, warm_start: str | None = None,
              progress: bool = True, shots: int | None = None, seed: int | None = None,
              twin_configs: int | None = None, twin_steps: int | None = None, twin_rounds: int | None = None,
              dac_bits: int | None = None, callback: Callable[[int, float], bool] | None = None) -> Program:
    """Calibrate ``prog`` for ``chip``; returns a calibrated :class:`~photocomp.compiler.program.Program`.

    Args:
      prog: a compiled program (not already calibrated for another chip).
      chip: a :class:`~photocomp.hardware.chip.Chip` of the same target, fabricated for the
        program's circuit (:attr:`Program.circuit`; :class:`MismatchError` otherwise).
      method: a method object, :class:`~photocomp.calibration.methods.Local`,
        :class:`~photocomp.calibration.methods.Model` (optax on the
        differentiable chip model, chip errors known) or
        :class:`~photocomp.calibration.methods.Twin` (the chip is a black box:
        a digital twin is fitted to noisy probe measurements, the program is
        calibrated on the twin, and the resulting drives are applied to the
        chip) or :class:`~photocomp.calibration.selfconfig.SelfConfig`
        (a unitary program of one tile configured from the chip's output
        powers alone, through the :class:`~photocomp.hardware.instrument.Instrument`
        interface) or :class:`~photocomp.calibration.nullify.Nullify` (a unitary program of one tile
        programmed column by column by nulling the chip's in-mesh power monitors) or
        :class:`~photocomp.calibration.diagonalize.Diagonalize` (a unitary program of one tile on a
        triangular mesh, configured chain by chain from the chip's output powers) or
        :class:`~photocomp.calibration.cells.Cells` (a crossbar program, every weight cell's
        response read at once and set in closed form) or
        :class:`~photocomp.calibration.insitu.InSitu` (any
        program, from measured parameter-shift gradients through the same
        interface; :meth:`~photocomp.calibration.insitu.InSitu.backprop`: a unitary program, from
        gradients measured by in-situ backpropagation), which holds the method's settings; or its
        name ``"local"``, ``"model"`` (default), ``"twin"``, ``"selfconfig"``, ``"nullify"``,
        ``"diagonalize"``, ``"cells"``, ``"insitu"`` or ``"backprop"``,
        whose
        settings are then the
        keyword arguments below (they must stay unset with a method object).
      optimizer: any ``optax.GradientTransformation``; default ``optax.lbfgs()``
        (line-search optimizers receive the objective through optax's
        extra-args interface).
      steps: maximum optimisation steps (model).
      tol, patience: early stopping: stop after ``patience`` steps without a
        relative improvement of the squared error by ``tol``.
      warm_start: ``"local"`` (default) or ``"ideal"`` settings to start from.
      progress: show a progress bar.
      shots: shots per reading of the black-box measurements (twin, selfconfig, nullify, diagonalize, cells, insitu,
        backprop).
      seed: seed of the measurement noise and the probe design (twin, selfconfig, nullify, diagonalize, cells, insitu,
        backprop).
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
    chip = as_chip(box._chip if box is not None else chip, "chip")
    chip.check_target(prog.target, circuit=prog.circuit)
    prog.require_full_tiles("calibrate")
    loose = {"optimizer": optimizer, "steps": steps, "tol": tol, "patience": patience, "warm_start": warm_start,
             "shots": shots, "seed": seed, "twin_configs": twin_configs, "twin_steps": twin_steps,
             "twin_rounds": twin_rounds}
    if isinstance(method, str):
        method = method_from_name(method, **{k: v for k, v in loose.items() if v is not None})
    else:
        method = as_method(method)
        reject_loose_settings(method, loose)
    if box is not None and not isinstance(method, (Twin, SelfConfig, Nullify, Diagonalize, Cells, InSitu)):
        raise InvalidInputError(f"a BlackBoxChip can only be calibrated with method='twin', 'selfconfig', 'nullify', "
                                f"'diagonalize', 'cells' or 'insitu' (photocomp.Twin, photocomp.SelfConfig, "
                                f"photocomp.Nullify, photocomp.Diagonalize, photocomp.Cells, photocomp.InSitu); "
                                f"got method={method.name!r}")
    if dac_bits is not None:
        dac_bits = check_int(dac_bits, "dac_bits", low=1, high=32)
    if callback is not None and not callable(callback):
        raise InvalidTypeError(f"callback must be callable as callback(step, error); got {type(callback).__name__}")
    if isinstance(method, (SelfConfig, Nullify, Diagonalize, Cells, InSitu)):
        backprop = isinstance(method, InSitu) and method.gradient == "backprop"
        # in-mesh monitors for nullification and backpropagation (at every heater, where the chip has them)
        fraction = (method.monitor_fraction if isinstance(method, Nullify) or (isinstance(method, InSitu) and backprop)
                    else None)
        box = box or BlackBoxChip(chip, seed=method.seed, shots=method.shots, monitor_fraction=fraction,
                                  heater_monitors=backprop and heater_monitored(chip))
        found = method.run(prog, box)
        if dac_bits is not None:
            found = dataclasses.replace(found, drives_mw=quantize_power(found.drives_mw, chip.target, dac_bits))
        return found.to_program(prog, chip)
    if isinstance(method, Twin):
        box = box or BlackBoxChip(chip, seed=method.seed, shots=method.shots)
        return calibrate_twin(prog, box, optimizer=check_optimizer(method.optimizer), steps=method.steps,
                              tol=method.tol, patience=method.patience, progress=progress, seed=method.seed,
                              configs=method.configs, twin_steps=method.fit_steps, dac_bits=dac_bits,
                              callback=callback, rounds=method.rounds, points_per_heater=method.points_per_heater,
                              probe_shots=method.probe_shots, check_shots=method.check_shots)
    warm_start = method.warm_start if isinstance(method, Model) else "local"
    t0 = time.perf_counter()
    target_tiles = ideal_tiles(prog)
    ideal = ideal_settings(prog)
    before, ideal_gain, _ = settings_error(chip, ideal, target_tiles)
    if not np.isfinite(before):
        raise InvalidInputError("calibration cannot start: the chip simulation of the program is not finite")
    ideal = ideal.replace(gain=ideal_gain)
    t_local = time.perf_counter()
    if isinstance(method, Local) or warm_start == "local":
        start, start_err = local_settings(prog, chip, target_tiles)
    else:
        start, start_err = ideal, before
    local_s = time.perf_counter() - t_local
    if isinstance(method, Local) or warm_start == "local":
        # never start from something worse than the ideal settings, tile by tile: the local correction of
        # a zero-padded tile (rank-deficient, its meshes full of bar and cross MZIs) can be the worse one
        start, start_err = better_per_tile(chip, ideal, start, target_tiles)
    metrics = {"method": method.name, "error_before": before, "error_start": start_err}
    records = [PassRecord("local", "local", local_s, types.MappingProxyType({"matrix_error": start_err}))]
    final = start
    if isinstance(method, Model):
        t_opt = time.perf_counter()
        final, history, info = optimize(chip, start, target_tiles, check_optimizer(method.optimizer), method.steps,
                                        method.tol, method.patience, progress,
                                         f"calibrate {prog.target.name}", callback)
        opt_err, opt_gain, _ = settings_error(chip, final, target_tiles)
        final = final.replace(gain=opt_gain)
        if opt_err > start_err:
            final, opt_err = start, start_err
        records.append(PassRecord("model", f"model(steps={method.steps})", time.perf_counter() - t_opt,
                                  types.MappingProxyType({"matrix_error": opt_err, **info})))
        metrics.update(info)
    after = opt_err if isinstance(method, Model) else start_err  # `final` carries its best gains
    if dac_bits is not None:
        final, after = quantized(chip, chip, final, target_tiles, dac_bits)
        metrics["error_unquantized"] = opt_err if isinstance(method, Model) else start_err
    metrics.update({"error_after": after, "measurements": 0, "wall_s": time.perf_counter() - t0})
    report = CompileReport(prog.report.records + tuple(records), types.MappingProxyType({**dict(prog.report.summary), **metrics}))
    return prog.with_chip(chip, final, report)
