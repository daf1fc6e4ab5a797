"""Detection noise and the black-box chip interface used for in-situ calibration.

:func:`detect` turns exact output intensities into what a detector reports:

* shot noise: photon counts ``~ Poisson(I * photons_per_shot * shots)``;
* dark noise: Gaussian, std ``dark_noise / sqrt(shots)`` (relative to unit power);
* an ADC of ``adc_bits`` spanning ``[0, full_scale]`` (the input power).

:class:`BlackBoxChip` hides a fabricated chip behind the only call a real
chip answers: ``measure(drives_mw, inputs) -> detected intensities``. It
counts every measurement (one input vector read out once per shot), so
calibration methods can report what they used. Its noise comes from an
explicit seed: the same seed and the same calls give the same answers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from photocomp.chip import Chip, as_chip
from photocomp.errors import InvalidInputError, InvalidTypeError
from photocomp.validate import check_int

__all__ = ["detect", "BlackBoxChip"]


def detect(intensity, target, key, *, shots: int = 1, full_scale=1.0):
    """Noisy detector read-out of exact intensities (same shape as ``intensity``).

    Args:
      intensity: exact optical powers (relative to unit input power), any shape.
      target: the :class:`~photocomp.target.Target` (photons_per_shot, dark_noise, adc_bits).
      key: a ``jax.random`` key.
      shots: shots averaged per reading (>= 1).
      full_scale: ADC full scale (same units as ``intensity``), scalar or broadcastable.
    """
    k_shot, k_dark = jax.random.split(key)
    photons = target.photons_per_shot * shots
    counts = jax.random.poisson(k_shot, jnp.clip(intensity, 0.0, None) * photons, shape=jnp.shape(intensity))
    reading = counts / photons + target.dark_noise / np.sqrt(shots) * jax.random.normal(k_dark, jnp.shape(intensity))
    levels = 2**target.adc_bits - 1
    fs = jnp.asarray(full_scale)
    return jnp.clip(jnp.round(reading / fs * levels), 0, levels) / levels * fs


def _tile_matrix_from_drives(chip: Chip, power):
    from photocomp.chipsim import Settings, chip_tile_matrices, realized_phases, unflatten_heaters
    from photocomp.ir import TileGrid

    k = chip.target.size
    lay = chip.layout
    z = jnp.zeros((1, lay.n_mzi))
    zk = jnp.zeros((1, k))
    template = Settings(TileGrid(k, k, k), lay, z, z, zk, zk, z, z, zk, jnp.ones(1))
    s = unflatten_heaters(template, realized_phases(chip, power)[None], chip.target)
    return chip_tile_matrices(chip, s, with_gain=False)[0]


_tile_matrix_jit = jax.jit(_tile_matrix_from_drives)


class BlackBoxChip:
    """A fabricated chip seen only through noisy measurements.

    Args:
      chip: the hidden :class:`~photocomp.chip.Chip`.
      seed: seed of the measurement noise (int >= 0).
      shots: default shots per reading.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> box = pc.BlackBoxChip(pc.fabricate("clements-4", seed=1), seed=0)
      >>> box.measure(np.zeros(box.n_heaters), np.eye(4)).shape
      (4, 4)
    """

    def __init__(self, chip, seed: int = 0, shots: int = 1):
        self._chip = as_chip(chip)
        self._key = jax.random.PRNGKey(check_int(seed, "seed", low=0))
        self.shots = check_int(shots, "shots", low=1)
        self.measurements = 0

    @property
    def target(self):
        return self._chip.target

    @property
    def n_heaters(self) -> int:
        return self._chip.n_heaters

    def measure(self, drives_mw, inputs, *, shots: int | None = None) -> np.ndarray:
        """Detected output intensities for heater powers and input fields.

        Args:
          drives_mw: heater powers (mW), shape ``(n_heaters,)`` in the flat
            heater order of :mod:`photocomp.chip`; within ``[0, drive limit]``.
          inputs: input fields, ``(K,)`` or ``(B, K)`` (complex or real).
          shots: shots per reading (default: the box's).

        Returns:
          ``(K,)`` or ``(B, K)`` float64 intensities; adds ``B * shots`` to
          :attr:`measurements`.
        """
        shots = self.shots if shots is None else check_int(shots, "shots", low=1)
        t = self.target
        p = np.asarray(drives_mw, dtype=np.float64) if not isinstance(drives_mw, str) else None
        if p is None or p.shape != (self.n_heaters,):
            raise InvalidInputError(f"drives_mw must have shape ({self.n_heaters},); got {getattr(p, 'shape', drives_mw)!r}")
        limit = t.drive_limit_p_pi * t.heater_p_pi_mw
        if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > limit:
            raise InvalidInputError(f"drives_mw must be finite and within [0, {limit:g}] mW; got range [{np.nanmin(p):g}, {np.nanmax(p):g}]")
        if isinstance(inputs, (str, bytes)):
            raise InvalidTypeError(f"inputs must be a numeric array of shape (K,) or (B, K); got {type(inputs).__name__}")
        x = np.asarray(inputs)
        single = x.ndim == 1
        x = x[None] if single else x
        if x.ndim != 2 or x.shape[1] != t.size or x.shape[0] == 0 or not np.all(np.isfinite(x)):
            raise InvalidInputError(f"inputs must be finite with shape ({t.size},) or (B, {t.size}); got shape {np.shape(inputs)}")
        self._key, key = jax.random.split(self._key)
        with jax.enable_x64(True):
            m = _tile_matrix_jit(self._chip, jnp.asarray(p))
            y = jnp.asarray(x, dtype=jnp.complex128) @ m.T
            full_scale = jnp.sum(jnp.abs(jnp.asarray(x)) ** 2, axis=1, keepdims=True)
            out = np.asarray(detect(jnp.abs(y) ** 2, t, key, shots=shots, full_scale=full_scale))
        self.measurements += x.shape[0] * shots
        return out[0] if single else out
