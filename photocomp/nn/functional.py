"""The functional core of photonic linear layers: the matrix a chip applies for real weights ``W``.

:func:`chip_matrix` takes a real weight matrix ``W`` of shape (out, in), of
any size, and a :class:`ChipState` (a target and the condition of the chip
it runs on), and returns the real (out, in) matrix that chip actually
applies. Nothing here re-implements the physics: ``W`` is compiled with
:func:`photocomp.compile` (tiled onto the target's K x K tiles, factored
``U diag(cos sigma) V^H`` per tile and decomposed into MZI phases exactly as
every other program), and the result is simulated by the code the rest of
photocomp uses:

* ``"ideal"``: the compiled program on the ideal chip (:meth:`Program.matrix`,
  i.e. :func:`photocomp.sim.ideal.program_matrix`): ``W`` itself to rounding
  unless ``dac_bits`` quantizes the phases;
* ``"fabricated"``: the program's ideal settings on the chip
  ``photocomp.fabricate(target, seed)``, uncalibrated, each tile's real
  electronic gain set to its best value (what :func:`photocomp.error` scores;
  :func:`photocomp.hardware.chipsim.chip_tile_matrices`);
* ``"calibrated"``: :func:`photocomp.calibrate` of the program for that chip
  (``calibration="local"``, the analytic per-MZI correction, by default: a few
  milliseconds per 64 x 64 tile; ``"model"`` runs the optimiser and takes
  seconds per call);
* ``"drifting"``: the calibrated drives held while the die's temperature
  moves by ``temperature_k`` (ambient, gradient along and across the light,
  K) through :mod:`photocomp.drift` (:func:`~photocomp.drift.thermal_die` with
  the default :class:`~photocomp.drift.ThermalProcess`'s arm imbalance,
  :func:`~photocomp.drift.drifted_chip`,
  :func:`~photocomp.hardware.chipsim.realized_phases`); each tile's gain is the
  best complex one, as :mod:`photocomp.drift` scores errors (a coherent
  receiver tracks the phase).

The chip's coherent outputs are complex; the read-out keeps their real part
(the electronic layers of :mod:`photocomp.models` do the same), so the
applied matrix is the real part of the chip's matrix.

Gradients
---------
Compiling and calibrating run on the host (NumPy and separately jitted
kernels), reached from traced code through :func:`jax.pure_callback`, so
:func:`chip_matrix` works under ``jax.jit``, ``jax.vmap`` (sequentially) and
``jax.grad``. The map from ``W`` to the chip's matrix is not differentiated:
the derivative of :func:`chip_matrix` with respect to ``W`` is the
*straight-through estimator* ``d chip_matrix(W) / dW = identity`` (forward:
the chip's matrix; backward: as if the chip applied ``W``). In the ideal
state without DAC quantization that is the exact derivative (the chip
applies ``W``); with phase quantization (``dac_bits``), on a fabricated,
calibrated or drifting chip it is an estimate that ignores how the chip's
error changes with ``W``. Gradients with respect to the inputs ``x`` and
the bias of :func:`linear` are exact (the chip's matrix is a constant for
them); the read-out's ADC and detector noise are straight-through as well
(:func:`read_out`). Results are cached per weights and chip state, so
evaluating the same weights again costs nothing; calibrated programs are
cached per weights and calibration settings, so the ``"drifting"`` states of
a chip reuse the calibration of its ``"calibrated"`` state.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import numbers
import threading
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from photocomp.calibration.calibrate import calibrate
from photocomp.calibration.engine import ideal_tiles
from photocomp.compiler.driver import compile as compile_weights
from photocomp.compiler.program import Program
from photocomp.core.errors import InvalidInputError, InvalidTypeError, UnknownNameError
from photocomp.core.ir import PhaseMap
from photocomp.core.registry import quote
from photocomp.core.target import Target, get_target
from photocomp.core.validate import check_int, check_real
from photocomp.drift.dynamics import drifted_chip
from photocomp.drift.thermal import ThermalDie, ThermalProcess, thermal_die
from photocomp.hardware.chip import Chip, fabricate
from photocomp.hardware.chipsim import (
    best_gain,
    chip_tile_matrices,
    realized_phases,
    settings_from_program,
    unflatten_heaters,
)
from photocomp.hardware.detector import detect
from photocomp.sim.ideal import tile_matrices

__all__ = ["STATES", "CALIBRATIONS", "ChipState", "as_chip_state", "chip_matrix", "read_out", "linear",
           "clear_cache"]

STATES = ("ideal", "fabricated", "calibrated", "drifting")
"""The chip states :class:`ChipState` knows."""

CALIBRATIONS = ("local", "model")
"""Calibration methods of the ``"calibrated"`` and ``"drifting"`` states (:func:`photocomp.calibrate`)."""

CACHE_SIZE = 64
"""Chip matrices kept per process (most recently used first), keyed by the weights and the chip state; as many
calibrated programs, keyed by the weights, the chip and the calibration settings (the ``"calibrated"`` and
``"drifting"`` states of one chip share them)."""


def _temperature(value: object) -> tuple[float, float, float]:
    """``temperature_k`` as (ambient, gradient x, gradient y) K: one real number is the ambient change."""
    expected = "a real number (ambient change, K) or three (ambient, gradient along, gradient across the light)"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return (check_real(value, "temperature_k"), 0.0, 0.0)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and not isinstance(value, np.ndarray):
        raise InvalidTypeError(f"temperature_k must be {expected}; got {type(value).__name__} {quote(value)}")
    items = list(np.asarray(value).ravel()) if isinstance(value, np.ndarray) else list(value)
    if len(items) != 3:
        raise InvalidInputError(f"temperature_k must be {expected}; got {len(items)} values {quote(value)}")
    return tuple(check_real(v.item() if isinstance(v, np.generic) else v, f"temperature_k[{i}]")
                 for i, v in enumerate(items))  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class ChipState:
    """A target and the condition of the chip a photonic layer runs on (hashable: a static jit argument).

    Attributes:
      target: the :class:`~photocomp.core.target.Target` (a name is resolved).
      state: ``"ideal"`` (exact decomposition, no errors), ``"fabricated"``
        (the chip ``photocomp.fabricate(target, seed)``, uncalibrated),
        ``"calibrated"`` (that chip, calibrated for every weight matrix) or
        ``"drifting"`` (calibrated, then the die's temperature moved by
        ``temperature_k`` with the drives held).
      seed: the chip's fabrication seed (int >= 0; states other than ``"ideal"``).
      calibration: ``"local"`` (default; analytic, fast) or ``"model"``
        (optimised, seconds per call); ``"calibrated"`` and ``"drifting"`` only.
      temperature_k: ``(ambient, gradient along, gradient across the light)``
        change since calibration (K), or one number for the ambient alone;
        ``"drifting"`` only.
      dac_bits: phase-drive DAC resolution (bits), or None for exact phases.
        Ideal and fabricated chips: the compiled phases are quantized (the
        ``quantize`` pass); calibrated and drifting chips: the calibrated drives
        are (``calibrate(dac_bits=)``).
      adc_bits: output ADC resolution (bits) of :func:`read_out`, or None
        (no output quantization without a noise key; the target's ADC with one).
      shots: shots averaged per detector reading when noise is simulated (>= 1).

    Example:
      >>> import photocomp as pc
      >>> pc.nn.ChipState("clements-8", "fabricated", seed=3).state
      'fabricated'
    """

    target: Target
    state: str = "ideal"
    seed: int = 0
    calibration: str | None = None
    temperature_k: tuple[float, float, float] | float | None = None
    dac_bits: int | None = None
    adc_bits: int | None = None
    shots: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", get_target(self.target))
        if not isinstance(self.state, str):
            raise InvalidTypeError(f"state must be one of {STATES}; got {type(self.state).__name__} {quote(self.state)}")
        if self.state not in STATES:
            raise UnknownNameError(f"state must be one of {STATES}; got {quote(self.state)}")
        object.__setattr__(self, "seed", check_int(self.seed, "seed", low=0))
        calibrates = self.state in ("calibrated", "drifting")
        if self.calibration is not None:
            if not calibrates:
                raise InvalidInputError(f"calibration must be None unless state is 'calibrated' or 'drifting'; got "
                                        f"calibration={quote(self.calibration)} with state={self.state!r}")
            if not isinstance(self.calibration, str) or self.calibration not in CALIBRATIONS:
                raise UnknownNameError(f"calibration must be one of {CALIBRATIONS}; got {quote(self.calibration)}")
        elif calibrates:
            object.__setattr__(self, "calibration", "local")
        if self.temperature_k is not None:
            if self.state != "drifting":
                raise InvalidInputError(f"temperature_k must be None unless state is 'drifting'; got "
                                        f"temperature_k={quote(self.temperature_k)} with state={self.state!r}")
            object.__setattr__(self, "temperature_k", _temperature(self.temperature_k))
        elif self.state == "drifting":
            object.__setattr__(self, "temperature_k", (0.0, 0.0, 0.0))
        for name in ("dac_bits", "adc_bits"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_int(getattr(self, name), name, low=1, high=32))
        object.__setattr__(self, "shots", check_int(self.shots, "shots", low=1))

    def __repr__(self) -> str:
        fields = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)[2:]
                  if getattr(self, f.name) != f.default]
        return f"ChipState({', '.join([repr(self.target.name), repr(self.state), *fields])})"

    @property
    def chip(self) -> Chip | None:
        """The fabricated chip (None in the ideal state)."""
        return None if self.state == "ideal" else _fabricated(self.target, self.seed)

    def replace(self, **changes) -> ChipState:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)


def as_chip_state(target: object, state: str | None = None, name: str = "target", **options) -> ChipState:
    """A :class:`ChipState` from a ChipState, or from a target (name or Target), ``state`` and options.

    A ChipState is returned as it is; ``state`` and options must then be unset.
    """
    if isinstance(target, ChipState):
        given = {k: v for k, v in {"state": state, **options}.items() if v is not None}
        if given:
            raise InvalidInputError(f"{name} must be a target name or Target when chip settings are given; got a "
                                    f"ChipState and the settings {sorted(given)} (use {name}.replace(...))")
        return target
    if not isinstance(target, (str, Target)):
        raise InvalidTypeError(f"{name} must be a photocomp.nn.ChipState, a target name (str) or a Target; got "
                               f"{type(target).__name__} {quote(target)}")
    return ChipState(get_target(target), "ideal" if state is None else state, **options)


# ---- the host side: compile, simulate, cache ----------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _fabricated(target: Target, seed: int) -> Chip:
    return fabricate(target, seed)


@functools.lru_cache(maxsize=16)
def _die(target: Target, seed: int) -> ThermalDie:
    return thermal_die(_fabricated(target, seed), ThermalProcess())


def _pipeline(cs: ChipState) -> str:
    quantize = f" | quantize(bits={cs.dac_bits})" if cs.dac_bits is not None and cs.state in ("ideal", "fabricated") \
        else ""
    return f"tile | svd | {cs.target.mesh} | canonicalize{quantize} | lower"


@jax.jit
def _uncalibrated_tiles(chip: Chip, pm: PhaseMap) -> jax.Array:
    """Per tile the chip's matrix with the program's ideal settings and the best real gain."""
    b = chip_tile_matrices(chip, settings_from_program(pm), with_gain=False)
    return b * best_gain(tile_matrices(pm), b)[:, None, None]


_chip_tiles_no_gain = jax.jit(functools.partial(chip_tile_matrices, with_gain=False))


def _phase_tracked(ideal: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tiles ``b`` (T, K, K) times their best complex gain against ``ideal`` (:func:`photocomp.drift.phase_free_error`'s)."""
    num = np.einsum("tij,tij->t", np.conj(b), ideal)
    den = np.sum(np.abs(b) ** 2, axis=(-2, -1))
    return b * (num / np.where(den > 0, den, 1.0))[:, None, None]


_CALIBRATED: collections.OrderedDict = collections.OrderedDict()
_CAL_LOCK = threading.Lock()


def _calibrated(prog: Program, cs: ChipState, chip: Chip, w: np.ndarray) -> Program:
    """``calibrate`` of ``prog`` (compiled from ``w``) for ``chip``, kept per weights and calibration settings,
    so that the ``"calibrated"`` and ``"drifting"`` states of one chip calibrate each weight matrix once."""
    key = (cs.target, cs.seed, cs.calibration, cs.dac_bits, w.shape, w.tobytes())
    with _CAL_LOCK:
        if key in _CALIBRATED:
            _CALIBRATED.move_to_end(key)
            return _CALIBRATED[key]
    cal = calibrate(prog, chip, method=str(cs.calibration), progress=False, dac_bits=cs.dac_bits)
    with _CAL_LOCK:
        _CALIBRATED[key] = cal
        while len(_CALIBRATED) > CACHE_SIZE:
            _CALIBRATED.popitem(last=False)
    return cal


def host_matrix(weights: np.ndarray, cs: ChipState) -> np.ndarray:
    """The real (out, in) matrix (float64) the chip of ``cs`` applies for real ``weights`` (host arrays, no cache)."""
    w = np.asarray(weights, dtype=np.float64)
    prog = compile_weights(w, target=cs.target, pipeline=_pipeline(cs))
    if cs.state == "ideal":
        return np.real(prog.dense)
    chip = _fabricated(cs.target, cs.seed)
    grid = prog.phase_map.grid
    with jax.enable_x64(True):
        if cs.state == "fabricated":
            return np.real(np.asarray(grid.join(_uncalibrated_tiles(chip.unseeded(), prog.phase_map))))
        cal = _calibrated(prog, cs, chip, w)
        if cs.state == "calibrated":
            return np.real(cal.matrix())
        assert cal.settings is not None  # calibrated programs carry their settings
        die = _die(cs.target, cs.seed)
        warm = drifted_chip(chip, die.phase_per_k @ np.asarray(cs.temperature_k, dtype=np.float64))
        phases = np.mod(np.asarray(realized_phases(warm, cal.drives())), 2 * np.pi)
        settings = unflatten_heaters(cal.settings, phases, cs.target)
        b = np.asarray(_chip_tiles_no_gain(warm.unseeded(), settings))
        ideal = ideal_tiles(prog)
        return np.real(grid.join(_phase_tracked(ideal, b)))


_CACHE: collections.OrderedDict = collections.OrderedDict()
_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every cached chip matrix and calibrated program (:data:`CACHE_SIZE` of each are kept)."""
    with _LOCK:
        _CACHE.clear()
    with _CAL_LOCK:
        _CALIBRATED.clear()


def _cached_matrix(weights: np.ndarray, cs: ChipState) -> np.ndarray:
    w = np.ascontiguousarray(weights, dtype=np.float64)
    key = (cs, w.shape, w.tobytes())
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    m = host_matrix(w, cs)
    m.setflags(write=False)
    with _LOCK:
        _CACHE[key] = m
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return m


# ---- the traced side --------------------------------------------------------------------------------------

def _check_weights(weights: object, name: str = "weights") -> jax.Array:
    if isinstance(weights, (str, bytes)) or weights is None:
        raise InvalidTypeError(f"{name} must be a real 2-D array (out, in); got {type(weights).__name__}")
    try:
        w = weights if isinstance(weights, jax.Array) else jnp.asarray(weights)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(f"{name} must be a real 2-D array (out, in); could not convert "
                               f"{type(weights).__name__}: {str(exc)[:80]}") from None
    if jnp.issubdtype(w.dtype, jnp.complexfloating) or not (jnp.issubdtype(w.dtype, jnp.floating)
                                                            or jnp.issubdtype(w.dtype, jnp.integer)):
        raise InvalidTypeError(f"{name} must be a real 2-D array (out, in); got dtype {w.dtype}")
    if w.ndim != 2 or 0 in w.shape:
        raise InvalidInputError(f"{name} must be a non-empty real 2-D array (out, in); got shape {tuple(w.shape)}")
    if not jnp.issubdtype(w.dtype, jnp.floating):
        w = w.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    if not isinstance(w, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(w))):
        raise InvalidInputError(f"{name} must be finite; got NaN/Inf entries in shape {tuple(w.shape)}")
    return w


def _check_state(cs: object, name: str = "chip") -> ChipState:
    if not isinstance(cs, ChipState):
        raise InvalidTypeError(f"{name} must be a photocomp.nn.ChipState (e.g. ChipState('pace-64', 'fabricated', "
                               f"seed=0)); got {type(cs).__name__} {quote(cs)}")
    return cs


def _callback(w: jax.Array, cs: ChipState) -> jax.Array:
    def host(a):
        return np.asarray(_cached_matrix(np.asarray(a), cs), dtype=a.dtype)
    return jax.pure_callback(host, jax.ShapeDtypeStruct(w.shape, w.dtype), w, vmap_method="sequential")


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _chip_matrix(w: jax.Array, cs: ChipState) -> jax.Array:
    return _callback(w, cs)


@_chip_matrix.defjvp
def _chip_matrix_jvp(cs, primals, tangents):
    (w,), (dw,) = primals, tangents
    return _callback(w, cs), dw  # straight through: d chip_matrix / dW = identity


def chip_matrix(weights: ArrayLike, chip: ChipState) -> jax.Array:
    """The real (out, in) matrix the chip of ``chip`` applies for real weights (out, in).

    ``weights`` of any shape are tiled onto the target's K x K tiles by
    :func:`photocomp.compile`; the result has ``weights``'s shape and dtype
    (computed in float64). Differentiable with the straight-through estimator
    ``d chip_matrix / d weights = identity`` (exact in the ideal state without
    ``dac_bits``; see the module docstring).

    Raises:
      InvalidTypeError: ``weights`` is not a real numeric array, or ``chip`` not a :class:`ChipState`.
      InvalidInputError: ``weights`` is not 2-D, is empty or has NaN/Inf entries.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> W = np.random.default_rng(0).normal(size=(5, 12))
      >>> with jax.enable_x64(True):
      ...     M = pc.nn.chip_matrix(W, pc.nn.ChipState("clements-8"))
      >>> bool(np.abs(np.asarray(M) - W).max() < 1e-12)
      True
    """
    cs = _check_state(chip)
    return _chip_matrix(_check_weights(weights), cs)


def _check_key(key: object) -> jax.Array:
    if isinstance(key, jax.Array) and (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                                       or (key.dtype == jnp.uint32 and key.shape == (2,))):
        return key
    raise InvalidTypeError(f"key must be a jax.random key (jax.random.key(seed)) or None; got "
                           f"{type(key).__name__} {quote(key)}")


def read_out(y: ArrayLike, chip: ChipState, key: jax.Array | None = None) -> jax.Array:
    """What the receivers report for exact real outputs ``y`` (..., out): ADC and detector noise.

    Without ``key`` and ``chip.adc_bits`` the outputs are returned as they are.
    Every output vector is auto-ranged: its full scale ``s`` is its largest
    ``|y|``. With ``chip.adc_bits`` (and no key) each ``y / s`` is rounded to
    one of ``2^adc_bits`` evenly spaced levels on [-1, 1]. With a ``key``
    the coherent receiver is simulated: each output ``u = y / s`` beats
    against a reference of unit amplitude in a balanced pair of detectors,
    intensities ``(u + 1)^2 / 2`` and ``(u - 1)^2 / 2``, each read by
    :func:`photocomp.hardware.detector.detect` (the target's shot noise,
    dark noise and ADC; ``chip.adc_bits`` overrides the ADC's bits;
    ``chip.shots`` shots), and ``u`` is their difference over 2. The
    quadrature the receiver does not read adds no noise here.

    Gradients are straight through (the derivative of the exact ``y``).
    """
    cs = _check_state(chip)
    y = jnp.asarray(y)
    if key is None and cs.adc_bits is None:
        return y
    scale = jax.lax.stop_gradient(jnp.max(jnp.abs(y), axis=-1, keepdims=True))
    scale = jnp.where(scale > 0, scale, 1.0)
    u = jax.lax.stop_gradient(y) / scale
    if key is None:
        levels = 2 ** int(cs.adc_bits or 0) - 1
        q = jnp.round((u + 1) / 2 * levels) / levels * 2 - 1
    else:
        key = _check_key(key)
        target = cs.target if cs.adc_bits is None else dataclasses.replace(cs.target, adc_bits=cs.adc_bits)
        k_plus, k_minus = jax.random.split(key)
        plus = detect((u + 1) ** 2 / 2, target, k_plus, shots=cs.shots, full_scale=2.0)
        minus = detect((u - 1) ** 2 / 2, target, k_minus, shots=cs.shots, full_scale=2.0)
        q = (plus - minus) / 2
    return y + jax.lax.stop_gradient(q.astype(y.dtype) * scale - y)


def linear(weights: ArrayLike, bias: ArrayLike | None, x: ArrayLike, chip: ChipState,
           key: jax.Array | None = None) -> jax.Array:
    """``y = read_out(chip_matrix(weights) @ x) + bias`` for ``x`` (..., in), batched over leading axes.

    The bias is added electronically after detection. ``key`` (a
    ``jax.random`` key) turns on detector noise (:func:`read_out`).

    Raises:
      InvalidTypeError: a non-array argument or a key that is not a ``jax.random`` key.
      InvalidInputError: ``x``'s last axis is not ``in``, or ``bias`` not of shape (out,).

    Example:
      >>> import numpy as np, photocomp as pc
      >>> W, b = np.eye(3), np.ones(3)
      >>> y = pc.nn.linear(W, b, np.ones((2, 3)), pc.nn.ChipState("clements-4"))
      >>> y.shape
      (2, 3)
    """
    cs = _check_state(chip)
    w = _check_weights(weights)
    out_dim, in_dim = w.shape
    if isinstance(x, (str, bytes)) or x is None:
        raise InvalidTypeError(f"x must be a real array of shape (..., {in_dim}); got {type(x).__name__}")
    xa = jnp.asarray(x)
    if jnp.issubdtype(xa.dtype, jnp.complexfloating):
        raise InvalidTypeError(f"x must be a real array of shape (..., {in_dim}); got dtype {xa.dtype}")
    if xa.ndim == 0 or xa.shape[-1] != in_dim:
        raise InvalidInputError(f"x must have shape (..., {in_dim}) (inputs last); got shape {tuple(xa.shape)}")
    m = chip_matrix(w, cs)
    dtype = jnp.result_type(m.dtype, xa.dtype)
    y = read_out(jnp.einsum("oi,...i->...o", m.astype(dtype), xa.astype(dtype)), cs, key)
    if bias is None:
        return y
    b = jnp.asarray(bias)
    if b.shape != (out_dim,):
        raise InvalidInputError(f"bias must have shape ({out_dim},) (out,) or be None; got shape {tuple(b.shape)}")
    return y + b
