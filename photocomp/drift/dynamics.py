"""Heater dynamics and the drifting chip's error over a time grid (pure JAX).

Heaters respond to a change of drive with a first-order lag (time constant
``tau``, the target's ``heater_tau_us``): over a step ``dt`` with the drive
held, the state moves exactly as

    x' = x_target + (x - x_target) exp(-dt / tau)

(:func:`first_order_step`). At ``dt >> tau`` this is the settled value; at
``dt << tau`` it traces the exponential. The heater phases (own heating and
the crosstalk it causes, :func:`photocomp.hardware.chipsim.realized_phases`) are
affine in the drives, so the lag acts on the commanded *phase change*
itself.

At every step the chip realises

    phases(t) = phi_0 + lag(command)(t) + D @ z(t)

with ``phi_0`` the calibrated heater phases, ``command`` a compensator's
phase change (a piecewise-constant table entry minus a feed-forward
prediction ``D_twin @ z_hat``), ``D`` the die's phase per kelvin
(:class:`~photocomp.drift.thermal.ThermalDie`) and ``z`` the temperature
state. :func:`error_trace` scores every step with
:func:`photocomp.hardware.chipsim.chip_tile_matrices` in one ``lax.scan``; it is
pure, so ``jax.vmap`` runs many Monte-Carlo runs at once.

The error of a step is ``||W - g W_chip||_F / ||W||_F`` with the best
*complex* gain ``g`` per tile: a global phase per tile is invisible to
intensity detection and tracked by a coherent receiver's phase reference,
and uniform warming of a balanced mesh changes nothing else.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.hardware.chip import Chip, as_chip
from photocomp.hardware.chipsim import Settings, chip_tile_matrices, unflatten_heaters

__all__ = ["first_order_step", "phase_free_error", "drifted_chip", "error_trace", "lag_factor"]


def first_order_step(state: jax.Array | np.ndarray | float, target: jax.Array | np.ndarray | float, dt_s: ArrayLike,
                     tau_s: ArrayLike) -> jax.Array:
    """Exact update of a first-order lag over ``dt_s`` with ``target`` held (arrays broadcast)."""
    decay = jnp.exp(-jnp.asarray(dt_s) / tau_s)
    return decay * (state - target) + target  # JAX array on the left: numpy's stubs do not know an ndarray defers to it


def lag_factor(dt_s: float, tau_s: float) -> float:
    """``exp(-dt / tau)``: the fraction of a step change not yet reached after ``dt_s``."""
    return float(np.exp(-dt_s / tau_s))


def phase_free_error(target_tiles: ArrayLike, chip_tiles_no_gain: ArrayLike) -> jax.Array:
    """Matrix error with the best complex gain per tile: ``g = tr(B^H A) / ||B||^2``."""
    a, b = target_tiles, chip_tiles_no_gain
    num = jnp.einsum("...ij,...ij->...", jnp.conj(b), a)
    den = jnp.sum(jnp.abs(b) ** 2, axis=(-2, -1))
    g = num / jnp.where(den > 0, den, 1.0)
    d = a - g[..., None, None] * b
    tot = jnp.sum(jnp.abs(a) ** 2)
    return jnp.sqrt(jnp.sum(jnp.abs(d) ** 2) / jnp.where(tot > 0, tot, 1.0))


def drifted_chip(chip: Chip, phase_shift: ArrayLike) -> Chip:
    """The chip with every heater's phase shifted by ``phase_shift`` (H,) rad: its state under drift.

    A thermal shift adds to what every heater realises exactly as a change of
    its static offset does, so the drifted chip is the same chip with
    ``offset + phase_shift`` (the chip's class and sampling are untouched).
    """
    chip = as_chip(chip)
    if isinstance(phase_shift, jax.core.Tracer) or isinstance(chip.offset, jax.core.Tracer):
        return dataclasses.replace(chip, offset=chip.offset + phase_shift)
    try:
        shift = np.asarray(phase_shift, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"phase_shift must be a real array (rad); got {type(phase_shift).__name__}") from None
    if shift.shape != (chip.n_heaters,) or not np.all(np.isfinite(shift)):
        raise InvalidInputError(f"phase_shift must be finite with shape ({chip.n_heaters},), one phase per heater; "
                                f"got shape {shift.shape}")
    return dataclasses.replace(chip, offset=np.asarray(chip.offset, dtype=np.float64) + shift)


@dataclasses.dataclass(frozen=True)
class TraceInputs:
    """Everything :func:`error_trace` needs besides the per-run arrays (a pytree)."""

    chip: Chip
    template: Settings
    target_tiles: jax.Array
    phi0: jax.Array  # (T, H) calibrated phases
    die: jax.Array  # (H, 3) true phase per K
    twin: jax.Array  # (H, 3) the compensators' model of it
    decay: jax.Array  # exp(-dt / tau)


jax.tree_util.register_dataclass(
    TraceInputs, data_fields=["chip", "template", "target_tiles", "phi0", "die", "twin", "decay"], meta_fields=[])


def _error_trace(inp: TraceInputs, z, zhat, index, table, return_phases: bool):
    target = inp.chip.target

    def step(lagged, x):
        zt, zh, i = x
        command = table[i] - (inp.twin @ zh)[None, :]
        lagged = command + (lagged - command) * inp.decay
        flat = inp.phi0 + lagged + (inp.die @ zt)[None, :]
        b = chip_tile_matrices(inp.chip, unflatten_heaters(inp.template, flat, target), with_gain=False)
        err = phase_free_error(inp.target_tiles, b)
        return lagged, ((err, flat) if return_phases else err)

    _, out = jax.lax.scan(step, jnp.zeros_like(inp.phi0), (z, zhat, index))
    return out


@functools.partial(jax.jit, static_argnames=("return_phases",))
def error_trace(inp: TraceInputs, z: ArrayLike, zhat: ArrayLike, index: ArrayLike, table: ArrayLike,
                return_phases: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Matrix error at every time step (pure; ``jax.vmap`` over runs).

    Args:
      inp: :class:`TraceInputs` (chip, settings template, ideal tiles,
        calibrated phases ``(T, H)``, die and twin phase per kelvin ``(H, 3)``,
        heater decay per step).
      z: ``(S, 3)`` temperature state at each step (K).
      zhat: ``(S, 3)`` feed-forward estimate in force during the step (K).
      index: ``(S,)`` int, row of ``table`` in force during the step.
      table: ``(U, T, H)`` piecewise-constant phase changes (rad).
      return_phases: also return the realised heater phases ``(S, T, H)``.

    Returns:
      ``(S,)`` errors (and phases when asked).
    """
    return _error_trace(inp, z, zhat, index, table, return_phases)


@jax.jit
def error_trace_runs(inp: TraceInputs, z: ArrayLike, zhat: ArrayLike, index: ArrayLike, table: ArrayLike) -> jax.Array:
    """:func:`error_trace` over a leading run axis of ``z``, ``zhat``, ``index``, ``table``."""
    return jax.vmap(lambda a, b, c, d: _error_trace(inp, a, b, c, d, False))(z, zhat, index, table)
