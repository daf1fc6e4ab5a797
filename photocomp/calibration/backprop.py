"""In-situ backpropagation: every heater's gradient from three interference measurements.

Pai et al. (Science 380, 398 (2023)) measured the gradient of a loss with
respect to every phase shifter of a mesh at once, by light alone, following
the adjoint method of Hughes et al. (Optica 5, 864 (2018)). A heater's phase
``phi_h`` multiplies the field ``a_h`` on its arm, so for the output ``y = M x``
``dy/dphi_h = i G_h a_h`` with ``G_h`` the transfer from the heater's arm to the
outputs. By reciprocity the field ``b_h`` on that arm when a field ``d`` is
sent backwards into the outputs is ``G_h^T d``, so for a real loss of ``y``
with Wirtinger derivative ``d = dL/dy``::

    dL/dphi_h = 2 Re(d^T dy/dphi_h) = -2 Im(a_h b_h).

Three reads of the monitors at the phase shifters give ``Im(a_h b_h)`` for
every heater together. The backward field leaves the chip at its inputs as
``x_adj = M^T d``, measured there by phase stepping with a reference beam.
Its time reverse ``i conj(x_adj)``, sent forwards, retraces the backward
light: on a lossless chip it arrives at heater h as ``i conj(b_h)``. So, with
``I(x)`` the monitor powers for input x::

    I(x + i conj(x_adj)) - I(x) - I(i conj(x_adj)) = 2 Im(a_h b_h).

Here the loss is the matrix error with the best real gain, ``E^2 = sum_t ||T_t
- g_t M_t||^2 / sum_t ||T_t||^2`` (:mod:`photocomp.calibration.insitu`). For
the unit input ``e_k``, ``d_k`` is ``-g conj(R[:, k])`` with the measured
residual ``R = T - g M`` (the best gain is stationary), so::

    dE^2/dphi_h = (2 g / sum ||T||^2) sum_k Im(a_hk b_hk),  b_hk from d_k = conj(R[:, k]).

Each ``d_k`` is sent at unit power and its share scaled back by ``||d_k||``, so
the interference reads stay at the monitors' working level however small
the residual is.

Losses. On a lossy chip the time reverse does not retrace the backward light
exactly: it passes the mesh before heater h twice, so it arrives weaker by
that mesh's power transmission, which is each heater's *reach*
``sum_k |a_hk|^2`` (1 on a lossless chip), and the frames of the K unit
inputs measure it. Each heater's estimate is divided by it. With equal
losses along every path this is exact; the chip model's spread of losses
leaves a few per cent of the gradient's norm (``tests/test_backprop.py``
bounds it on clements-8).

The whole Jacobian. Sending outputs backwards one at a time gives more: the
field at heater h from output o's backward light is ``b_ho``, and ``dM[o,
k]/dphi_h = i a_hk b_ho``. Output o's backward light leaves the inputs as row
o of M, which the step's phase-stepped matrix read has measured, so its time
reverse needs no backward read. Interfering it with each unit input at the
relative phases 1 and i gives both quadratures of ``a_hk b_ho``:
:func:`backprop_jacobian`, the parameter-shift Jacobian of
:mod:`photocomp.calibration.insitu` from ``2K^2 + 2K`` monitor frames at one
configuration, on which :class:`~photocomp.calibration.insitu.InSitu` takes
its Gauss-Newton steps.

Cost per tile and step: one configuration (the point itself) and the
phase-stepped matrix read there (``3K`` input vectors); then ``3K`` backward
vectors and ``3K`` monitor frames for the gradient, or ``2K^2 + 2K`` frames for
the Jacobian; against ``2H + 1`` configurations of ``3K`` vectors for the
parameter-shift rule. Both are exact on a lossless chip with exact read-outs
(``tests/test_backprop.py`` holds them to the parameter-shift rule); shot
noise adds to each frame.

It needs an :class:`~photocomp.hardware.instrument.AdjointInstrument`: a
monitor at every phase shifter (:class:`~photocomp.BlackBoxChip`'s
``heater_monitors``) and, for the gradient protocol, light sent backwards and
detected at the inputs; and a unitary mesh (a chip with attenuators between
two meshes is not time-reversal symmetric: its reverse light would be
attenuated twice).
"""

from __future__ import annotations

import numpy as np

from photocomp.core.errors import MismatchError
from photocomp.hardware.detector import read_fields
from photocomp.hardware.instrument import AdjointInstrument, Instrument, read_robust

__all__ = ["backprop_gradient", "backprop_jacobian", "check_adjoint"]


def check_adjoint(instrument: Instrument, circuit: str, alternatives: str) -> AdjointInstrument:
    """``instrument`` if it can run the protocol (light both ways, a monitor at every phase shifter, a unitary
    circuit); else :class:`MismatchError` that names ``alternatives``."""
    if circuit != "unitary":
        raise MismatchError(f"in-situ backpropagation needs a unitary program (a mesh with attenuators is not "
                            f"time-reversal symmetric); got the {circuit} circuit: use {alternatives}")
    if not isinstance(instrument, AdjointInstrument) or not instrument.heater_monitors:
        raise MismatchError(f"in-situ backpropagation needs an instrument with a monitor at every phase shifter "
                            f"that reads light sent backwards (photocomp.BlackBoxChip(chip, monitor_fraction=0.1, "
                            f"heater_monitors=True)); got {type(instrument).__name__} without them: use "
                            f"{alternatives}")
    return instrument


def backprop_gradient(instrument: Instrument, residual: np.ndarray, gain: float, norm: float,
                      amplitude: float, *, shots: int | None = None, retries: int = 4) -> np.ndarray:
    """``dE^2/dphi`` ``(H,)`` of one tile at the applied drives, by in-situ backpropagation (module docstring).

    Args:
      instrument: an instrument that is also an :class:`~photocomp.hardware.instrument.AdjointInstrument`
        (:func:`check_adjoint`), at the tile's drives.
      residual: the measured residual ``R = T - g M`` ``(K, K)`` there.
      gain: the best real gain ``g``.
      norm: ``sum ||T||^2`` over the program's tiles.
      amplitude: the reference amplitude of the backward phase stepping (the
        rms output amplitude of a unit input, which a unit-power backward
        field also has at the inputs of a unitary mesh).
      shots, retries: per reading, and re-reads per fault.

    Returns:
      the gradient, ``(n_heaters,)``; adds ``3K`` backward and ``3K`` monitor readings (times shots; ``K + 2L``
      monitor readings when only ``L`` columns of the residual are nonzero).
    """
    k = residual.shape[1]
    d = np.conj(residual).T  # row k: the field sent backwards for input k
    scale = np.linalg.norm(d, axis=1)
    live = scale > 0
    if not live.any():
        return np.zeros(instrument.n_heaters)
    d, scale = d[live], scale[live]
    unit = d / scale[:, None]
    adj = read_fields(instrument, unit, amplitude, shots=shots, retries=retries, source="backward")
    reverse = 1j * np.conj(adj)
    x = np.eye(k, dtype=np.complex128)  # every unit input alone: the heaters' reach needs them all
    frames = read_robust(instrument, np.concatenate([x, reverse, x[live] + reverse]), shots=shots, retries=retries,
                         source="heaters")
    n = len(reverse)
    alone, rev, both = frames[:k], frames[k:k + n], frames[k + n:]
    im = 0.5 * (both - alone[live] - rev)  # Im(a_h b_h) per unit-power backward field
    return 2.0 * gain / norm * (scale @ im) / _reach(alone)


def backprop_jacobian(instrument: Instrument, matrix: np.ndarray, *, shots: int | None = None,
                      retries: int = 4) -> np.ndarray:
    """Every heater's ``dM/dphi_h`` ``(H, K, K)`` at the applied drives, from interference frames alone.

    ``dM[o, k]/dphi_h = i a_hk b_ho`` with ``b_ho`` the field at heater h when
    output o is lit backwards (module docstring). Light sent backwards into
    output o leaves the inputs as row o of M, which the phase-stepped read of
    ``matrix`` measured already; its time reverse ``conj(M[o, :])`` (at unit
    power) is sent forwards, alone and together with each unit input ``e_k``
    at the relative phases 1 and i. With ``I`` the monitor powers,
    ``I(e_k + psi c_o) - I(e_k) - I(c_o)`` is ``2 Re(conj(psi) a_hk b_ho) / ||M[o, :]||`` on a lossless chip,
    so both quadratures give ``a_hk b_ho``. This is the parameter-shift
    Jacobian (:mod:`photocomp.calibration.insitu`) at one configuration and
    ``2K^2 + 2K`` monitor frames instead of ``2H`` configurations of ``3K``
    vectors. A chip's losses scale each heater's row by about the loss its
    light passes twice, which the division by the heater's reach takes out
    (module docstring); what the spread of losses leaves is mostly a
    per-heater scale, which moves a Gauss-Newton step's length but not where
    it stops.

    Args:
      instrument: an instrument that is also an :class:`~photocomp.hardware.instrument.AdjointInstrument`
        (only its phase-shifter monitors are read), at the drives ``matrix`` was read at.
      matrix: the measured ``(K, K)`` transfer matrix there.
      shots, retries: per reading, and re-reads per fault.
    """
    k = matrix.shape[0]
    scale = np.linalg.norm(matrix, axis=1)
    live = np.nonzero(scale > 0)[0]
    jac = np.zeros((instrument.n_heaters, k, k), np.complex128)
    if live.size == 0:
        return jac
    reverse = np.conj(matrix[live]) / scale[live, None]  # (L, K): each lit output's time reverse
    x = np.eye(k, dtype=np.complex128)
    both = [(x[:, None, :] + psi * reverse[None]).reshape(-1, k) for psi in (1.0, 1j)]
    frames = read_robust(instrument, np.concatenate([x, reverse, *both]), shots=shots, retries=retries,
                         source="heaters")
    n = len(live)
    alone, rev = frames[:k], frames[k:k + n]
    cross = frames[k + n:].reshape(2, k, n, -1) - alone[None, :, None] - rev[None, None]  # (2, K, L, H)
    ab = 0.5 * scale[live][None, :, None] * (cross[0] + 1j * cross[1])  # a_hk b_ho: (K, L, H)
    jac[:, live, :] = 1j * np.transpose(ab, (2, 1, 0)) / _reach(alone)[:, None, None]
    return jac


def _reach(alone: np.ndarray) -> np.ndarray:
    """Each heater's share of the light sent in, ``sum_k |a_hk|^2`` from the monitor frames of the K unit inputs
    ``(K, H)``: 1 on a lossless chip; ``g^2`` when the mesh before the heater passes ``g`` of every field, and then
    the time reverse reaches the heater as ``g^2`` times the backward light (it passes that mesh twice). Dividing
    by it takes out that attenuation."""
    reach = alone.sum(axis=0)
    return np.maximum(reach, 1e-6 * max(float(reach.max()), 1e-300))
