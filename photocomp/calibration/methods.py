"""Calibration methods as values: :class:`Local`, :class:`Model`, :class:`Twin`,
:class:`~photocomp.calibration.selfconfig.SelfConfig`, :class:`~photocomp.calibration.nullify.Nullify`,
:class:`~photocomp.calibration.diagonalize.Diagonalize`, :class:`~photocomp.calibration.cells.Cells` and
:class:`~photocomp.calibration.insitu.InSitu`.

A method object holds a method's settings and checks them when it is built,
like the drift compensators of :mod:`photocomp.drift` and optax's
transformations: ``pc.calibrate(prog, chip, pc.Model(optimizer=optax.adam(1e-2),
steps=500))``. The strings ``"local"``, ``"model"``, ``"twin"``, ``"selfconfig"``, ``"nullify"``, ``"diagonalize"``,
``"cells"``, ``"insitu"`` and ``"backprop"`` (:meth:`InSitu.backprop`: in-situ gradients by
backpropagation, :mod:`photocomp.calibration.backprop`) still work
and build the same objects from :func:`photocomp.calibrate`'s keyword
arguments (:func:`method_from_name`).

Example:
  >>> import numpy as np, photocomp as pc
  >>> pc.Twin(configs=8, rounds=1, shots=100)
  Twin(configs=8, fit_steps=300, rounds=1, shots=100, seed=0, optimizer=None, steps=300, tol=0.0001, patience=30, points_per_heater=8, probe_shots=None, check_shots=None)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from photocomp.calibration.cells import Cells
from photocomp.calibration.diagonalize import Diagonalize
from photocomp.calibration.engine import check_optimizer
from photocomp.calibration.insitu import InSitu
from photocomp.calibration.nullify import Nullify
from photocomp.calibration.selfconfig import SelfConfig
from photocomp.core.errors import InvalidInputError, InvalidTypeError, UnknownNameError
from photocomp.core.validate import check_int, check_real

__all__ = ["Local", "Model", "Twin", "SelfConfig", "Nullify", "Diagonalize", "Cells", "InSitu", "Method", "METHOD_NAMES", "OPTIMISING", "method_from_name", "as_method", "reject_loose_settings"]

METHOD_NAMES = ("model", "local", "twin", "selfconfig", "nullify", "diagonalize", "cells", "insitu", "backprop")
OPTIMISING = ("model", "twin", "insitu", "backprop")
"""The methods that take an optimiser's settings (``optimizer``, ``steps``, ``tol``, ``patience``)."""
_WARM_STARTS = ("local", "ideal")


def _check_optimizer(optimizer, name: str):
    if optimizer is None:
        return None
    try:
        return check_optimizer(optimizer)
    except InvalidTypeError as exc:
        raise InvalidTypeError(str(exc).replace("optimizer must", f"{name} must", 1)) from None


def _check_search(obj, cls: str) -> None:
    """The optimiser settings shared by Model and Twin, checked with the field names users wrote."""
    object.__setattr__(obj, "optimizer", _check_optimizer(obj.optimizer, f"{cls}.optimizer"))
    object.__setattr__(obj, "steps", check_int(obj.steps, f"{cls}.steps", low=0))
    object.__setattr__(obj, "tol", check_real(obj.tol, f"{cls}.tol", low=0.0, high=1.0))
    object.__setattr__(obj, "patience", check_int(obj.patience, f"{cls}.patience", low=1))


@dataclasses.dataclass(frozen=True)
class Local:
    """Analytic per-MZI correction for known coupler errors (the baseline).

    Each MZI's internal phase is set so that its erroneous couplers give the
    wanted splitting (clipped where unreachable); external phases and the
    pushed output screens fix the phases. No optimisation, no measurements.
    """

    name = "local"


@dataclasses.dataclass(frozen=True)
class Model:
    """Gradient descent on the differentiable chip model (the chip's errors are known).

    Attributes:
      optimizer: any ``optax.GradientTransformation``; ``None`` means
        ``optax.lbfgs()`` (line-search optimizers get the objective through
        optax's extra-args interface).
      steps: maximum optimisation steps (int >= 0).
      tol, patience: early stopping: stop after ``patience`` steps without a
        relative improvement of the squared error by ``tol``.
      warm_start: ``"local"`` (start from the local correction) or ``"ideal"``.
    """

    optimizer: Any = None
    steps: int = 300
    tol: float = 1e-4
    patience: int = 30
    warm_start: str = "local"

    name = "model"

    def __post_init__(self):
        _check_search(self, "Model")
        if not isinstance(self.warm_start, str) or self.warm_start not in _WARM_STARTS:
            raise UnknownNameError(f"Model.warm_start must be one of {_WARM_STARTS}; got {self.warm_start!r:.80}")


@dataclasses.dataclass(frozen=True)
class Twin:
    """The chip as a black box: fit a digital twin to probe readings, calibrate on it, apply its drives.

    Attributes:
      configs: probe drive configurations of the first fit (int >= 1); each
        costs ``4 K shots`` readings per tile of K modes.
      fit_steps: fitting steps of the twin (int >= 0).
      rounds: fit-calibrate rounds (int >= 1); each round after the first
        probes the chip where the last calibration took it and refits.
      shots: shots per reading (int >= 1).
      seed: seed of the measurement noise and of the probe design (int >= 0).
      optimizer, steps, tol, patience: the calibration on the twin, as for
        :class:`Model`.
      points_per_heater: drives per heater of the heater characterisation
        (int >= 3); it costs ``points_per_heater * n_heaters`` readings and as
        many configuration changes, whatever ``shots`` is.
      probe_shots: shots per probe reading of the twin fit and of its
        refinement rounds (int >= 1; None: ``shots``).
      check_shots: shots per reading of the final measured check, which
        phase-steps every tile at the calibrated and at the uncalibrated drives
        (``2 x 4 K`` readings per tile and shot) and keeps the better (int >= 1;
        None: ``shots``).

    Readings are counted as the black box counts them: one input vector
    detected once per shot. The defaults are those of the first twin; a
    frugal twin (``points_per_heater=3`` and fewer probe and check shots,
    see ``benchmarks/measurement_cost.py``) spends a fraction of the readings.
    """

    configs: int = 6
    fit_steps: int = 300
    rounds: int = 2
    shots: int = 1
    seed: int = 0
    optimizer: Any = None
    steps: int = 300
    tol: float = 1e-4
    patience: int = 30
    points_per_heater: int = 8
    probe_shots: int | None = None
    check_shots: int | None = None

    name = "twin"

    def __post_init__(self):
        object.__setattr__(self, "configs", check_int(self.configs, "Twin.configs", low=1))
        object.__setattr__(self, "fit_steps", check_int(self.fit_steps, "Twin.fit_steps", low=0))
        object.__setattr__(self, "rounds", check_int(self.rounds, "Twin.rounds", low=1))
        object.__setattr__(self, "shots", check_int(self.shots, "Twin.shots", low=1))
        object.__setattr__(self, "seed", check_int(self.seed, "Twin.seed", low=0))
        object.__setattr__(self, "points_per_heater", check_int(self.points_per_heater, "Twin.points_per_heater", low=3))
        for name in ("probe_shots", "check_shots"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_int(getattr(self, name), f"Twin.{name}", low=1))
        _check_search(self, "Twin")


Method = Local | Model | Twin | SelfConfig | Nullify | Diagonalize | Cells | InSitu


def method_from_name(method: str, *, optimizer=None, steps=None, tol=None, patience=None, warm_start="local",
                     shots=None, seed=0, twin_configs=6, twin_steps=300, twin_rounds=2) -> Method:
    """The method object a method name and :func:`photocomp.calibrate`'s keyword arguments describe.

    Every argument is checked under the name the caller wrote (``twin_configs``,
    not ``configs``), so a message points at the right keyword. ``steps``,
    ``tol`` and ``patience`` left None take the method's defaults (model and
    twin: 300, 1e-4, 30; :class:`~photocomp.calibration.insitu.InSitu`: its own).
    """
    if not isinstance(method, str) or method not in METHOD_NAMES:
        raise UnknownNameError(
            f"method must be one of {METHOD_NAMES} or a method object (photocomp.Local, Model, Twin, SelfConfig, "
            f"Nullify, Diagonalize, Cells or InSitu, e.g. photocomp.InSitu.backprop()); got {method!r:.80}"
        )
    search = [k for k, v in (("optimizer", optimizer), ("steps", steps), ("tol", tol), ("patience", patience))
              if v is not None]
    if method not in OPTIMISING and search:  # e.g. local, selfconfig, nullify, diagonalize, cells
        raise InvalidInputError(f"{', '.join(search)} apply to the optimising methods {OPTIMISING}; "
                                f"method={method!r} takes none of them")
    if method == "local":
        return Local()
    if method == "nullify":  # its own shots unless given: a monitor read is cheap beside a heater's settling
        return Nullify(shots=Nullify.shots if shots is None else check_int(shots, "shots", low=1),
                       seed=check_int(seed, "seed", low=0))
    if method == "diagonalize":  # its own shots unless given, as nullify
        return Diagonalize(shots=Diagonalize.shots if shots is None else check_int(shots, "shots", low=1),
                           seed=check_int(seed, "seed", low=0))
    if method == "cells":  # its own shots unless given: a crossbar's detectors see 1/K^2 of a probe
        return Cells(shots=Cells.shots if shots is None else check_int(shots, "shots", low=1),
                     seed=check_int(seed, "seed", low=0))
    given_shots, shots = shots, 1 if shots is None else shots
    if method == "selfconfig":
        return SelfConfig(shots=check_int(shots, "shots", low=1), seed=check_int(seed, "seed", low=0))
    optimizer = _check_optimizer(optimizer, "optimizer")
    if method in ("insitu", "backprop"):  # their own defaults unless given: steps and patience count measured steps
        default = InSitu() if method == "insitu" else InSitu.backprop()
        return dataclasses.replace(
            default, shots=default.shots if given_shots is None else check_int(shots, "shots", low=1),
            seed=check_int(seed, "seed", low=0),
            steps=default.steps if steps is None else check_int(steps, "steps", low=0),
            tol=default.tol if tol is None else check_real(tol, "tol", low=0.0, high=1.0),
            patience=default.patience if patience is None else check_int(patience, "patience", low=1),
            optimizer=optimizer, solver=default.solver if optimizer is None else "optax")
    steps = 300 if steps is None else steps
    tol = 1e-4 if tol is None else tol
    patience = 30 if patience is None else patience
    steps = check_int(steps, "steps", low=0)
    tol = check_real(tol, "tol", low=0.0, high=1.0)
    patience = check_int(patience, "patience", low=1)
    if method == "model":
        if not isinstance(warm_start, str) or warm_start not in _WARM_STARTS:
            raise UnknownNameError(f"warm_start must be one of {_WARM_STARTS}; got {warm_start!r:.80}")
        return Model(optimizer=optimizer, steps=steps, tol=tol, patience=patience, warm_start=warm_start)
    return Twin(configs=check_int(twin_configs, "twin_configs", low=1),
                fit_steps=check_int(twin_steps, "twin_steps", low=0),
                rounds=check_int(twin_rounds, "twin_rounds", low=1),
                shots=check_int(shots, "shots", low=1), seed=check_int(seed, "seed", low=0),
                optimizer=optimizer, steps=steps, tol=tol, patience=patience)


def as_method(method) -> Method:
    """A method object as given, or :class:`InvalidTypeError` naming ``method``."""
    if isinstance(method, (Local, Model, Twin, SelfConfig, Nullify, Diagonalize, Cells, InSitu)):
        return method
    raise InvalidTypeError(
        f"method must be 'local', 'model', 'twin', 'selfconfig', 'nullify', 'diagonalize', 'cells', 'insitu', "
        f"'backprop' or a "
        f"method object (photocomp.Local(), photocomp.Model(...), photocomp.Twin(...), photocomp.SelfConfig(...), "
        f"photocomp.Nullify(...), photocomp.Diagonalize(...), photocomp.Cells(...), photocomp.InSitu(...)); "
        f"got {type(method).__name__}"
    )


def reject_loose_settings(method, given: dict) -> None:
    """With a method object, the string-era keywords must stay unset: the object holds the settings."""
    loose = sorted(k for k, v in given.items() if v is not None)
    if loose:
        raise InvalidInputError(
            f"calibrate got method={type(method).__name__}(...) and also {', '.join(loose)}: give these settings to "
            f"the method object (e.g. photocomp.Model(steps=500)), not to calibrate"
        )
