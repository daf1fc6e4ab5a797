"""Phase-drive DACs: quantization of phase settings to the levels a DAC can set.

A thermo-optic phase shifter driven by voltage V produces ``phase = pi (V / v_pi)^2``
(docs/design.md §4.4); a ``bits``-bit DAC spans ``[0, v_max]`` with ``v_max = sqrt(2) v_pi``
(a full 2 pi of phase) in ``2^bits - 1`` equal voltage steps. The reachable
phase levels are therefore ``2 pi (code / (2^bits - 1))^2``: fine near 0,
coarse near 2 pi. ``scheme="linear"`` models a drive that is linear in phase
(levels ``2 pi code / 2^bits``), e.g. a DAC behind a linearising look-up table.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from photocomp.core.errors import UnknownNameError
from photocomp.core.target import Target
from photocomp.core.validate import check_int

__all__ = ["SCHEMES", "quantize_phase", "phase_step", "quantize_power"]

SCHEMES = ("voltage", "linear")
_TWO_PI = 2 * np.pi


def quantize_phase(phase: npt.ArrayLike, bits: int, scheme: str = "voltage") -> np.ndarray:
    """Nearest DAC-reachable phase (rad, in [0, 2 pi)) for each phase (rad, any real).

    Nearest in phase, on the circle: the top level 2 pi is the phase 0.
    """
    bits = check_int(bits, "bits", low=1, high=32)
    if scheme not in SCHEMES:
        raise UnknownNameError(f"scheme must be one of {SCHEMES}; got {scheme!r}")
    p = np.asarray(phase, dtype=np.float64)
    if p.size and not (p.min() >= 0 and p.max() < _TWO_PI):  # a floating-point modulo is slow in NumPy
        p = np.mod(p, _TWO_PI)
    if scheme == "linear":
        levels = 2**bits
        q = np.round(p / _TWO_PI * levels) / levels * _TWO_PI
        return np.where(q >= _TWO_PI, 0.0, q)
    top = 2**bits - 1
    # the two levels around p: rounding the voltage instead would pick the farther one for some phases,
    # since the levels are not evenly spaced in phase
    lo = np.minimum(np.floor(np.sqrt(p / _TWO_PI) * top), top - 1)
    q_lo = _TWO_PI * (lo / top) ** 2
    q_hi = _TWO_PI * ((lo + 1) / top) ** 2  # the top level is 2 pi, i.e. 0
    q = np.where(q_hi - p < p - q_lo, q_hi, q_lo)
    return np.where(q >= _TWO_PI, 0.0, q)


def level_at_or_above(phase: npt.ArrayLike, bits: int, scheme: str = "voltage") -> np.ndarray:
    """Smallest DAC-reachable phase >= ``phase`` (rad, in [0, 2 pi])."""
    bits = check_int(bits, "bits", low=1, high=32)
    p = np.clip(np.asarray(phase, dtype=np.float64), 0.0, _TWO_PI)
    if scheme == "linear":
        levels = 2**bits
        return np.ceil(p / _TWO_PI * levels - 1e-9) / levels * _TWO_PI
    top = 2**bits - 1
    return _TWO_PI * (np.ceil(np.sqrt(p / _TWO_PI) * top - 1e-9) / top) ** 2


def phase_step(bits: int, scheme: str = "voltage") -> float:
    """Largest spacing between adjacent reachable phase levels (rad)."""
    bits = check_int(bits, "bits", low=1, high=32)
    if scheme == "linear":
        return _TWO_PI / 2**bits
    top = 2**bits - 1
    return float(_TWO_PI * (top**2 - (top - 1) ** 2) / top**2)


def quantize_power(power_mw: npt.ArrayLike, target: Target, bits: int) -> np.ndarray:
    """Heater powers (mW) as set by a ``bits``-bit voltage DAC.

    The DAC spans ``[0, V_max]`` with ``V_max = v_pi sqrt(drive_limit_p_pi)``
    (the target's drive limit) in ``2^bits - 1`` equal steps; the heater's
    power is ``P = P_pi (V / v_pi)^2``, so the nearest code is taken in voltage.
    """
    bits = check_int(bits, "bits", low=1, high=32)
    p = np.clip(np.asarray(power_mw, dtype=np.float64), 0.0, None)
    v_max = target.v_pi * np.sqrt(target.drive_limit_p_pi)
    top = 2**bits - 1
    v = target.v_pi * np.sqrt(p / target.heater_p_pi_mw)
    code = np.clip(np.round(v / v_max * top), 0, top)
    return target.heater_p_pi_mw * (code / top * v_max / target.v_pi) ** 2
