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

Output phases are invisible to intensity detectors. A *reference beam* split
from the same laser and interfered with every output (``reference=``) makes
them visible: with the reference stepped through three phases,
:func:`measure_matrix` recovers the complex transfer matrix from intensities
alone (phase-stepping interferometry), which is what digital-twin fitting
(:mod:`photocomp.calibration.twin`) and measured error estimates use.

:class:`BlackBoxChip` implements :class:`~photocomp.hardware.instrument.Instrument`
(``set_drives``, ``read``, ``read_temperatures`` and its properties), the
interface measurement-based calibration methods talk to, and keeps its counts
in a :class:`~photocomp.hardware.instrument.Ledger`: ``measurements`` is the
ledger's ``readings``; a configuration change is counted whenever the drives
it reads at differ from the ones applied before.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jax.typing import ArrayLike

from photocomp.core.errors import InvalidInputError, InvalidTypeError, MismatchError
from photocomp.core.ir import TileGrid, circuit_stages
from photocomp.core.layout import layout
from photocomp.core.registry import quote
from photocomp.core.target import Target
from photocomp.core.validate import check_int, check_real
from photocomp.hardware.chip import Chip, as_chip
from photocomp.hardware.chipsim import (
    Settings,
    chip_column_fields,
    chip_heater_fields,
    chip_tile_matrices,
    realized_phases,
    unflatten_heaters,
)
from photocomp.hardware.instrument import DriveRefused, Instrument, Ledger, read_robust

__all__ = ["detect", "BlackBoxChip", "measure_matrix", "heater_monitored", "read_fields"]

SEED_MAX = 2**63 - 1
"""Largest noise seed (``jax.random.PRNGKey`` takes a signed 64-bit integer)."""


def detect(intensity: ArrayLike, target: Target, key: jax.Array, *, shots: int = 1,
           full_scale: ArrayLike = 1.0) -> jax.Array:
    """Noisy detector read-out of exact intensities (same shape as ``intensity``).
    Args:
      intensity: exact optical powers (relative to unit input power), any shape.
      target: the :class:`~photocomp.core.target.Target` (photons_per_shot, dark_noise, adc_bits).
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


def drive_template(target: Target, n: int, circuit: str = "svd") -> Settings:
    """Settings of a ``circuit`` chip for ``n`` one-tile configurations: phases zero, gains one.
    The shape that :func:`~photocomp.hardware.chipsim.unflatten_heaters` fills
    with ``(n, n_heaters)`` heater phases (probe drives, twin fits).
    """
    k = target.size
    lay = layout(target.mesh, k, cell=target.cell)
    z = jnp.zeros((n, lay.n_mzi))
    zk = jnp.zeros((n, k))
    grid, gain = TileGrid(k * n, k, k), jnp.ones(n)
    if circuit_stages(circuit) == ("u",):
        return Settings.unitary(grid, lay, z, z, zk, gain)
    return Settings(grid, lay, z, z, zk, zk, z, z, zk, gain)


def _drive_settings(chip: Chip, power) -> Settings:
    """One-tile settings (gain 1) of the phases ``chip``'s heaters produce at powers ``power`` (H,)."""
    template = drive_template(chip.target, 1, chip.circuit)
    return unflatten_heaters(template, realized_phases(chip, power)[None], chip.target)


def _tile_matrix_from_drives(chip: Chip, power):
    """The (K, K) matrix, gain 1, ``chip`` implements with heater powers ``power`` (H,) of its circuit."""
    return chip_tile_matrices(chip, _drive_settings(chip, power), with_gain=False)[0]


_tile_matrix_jit = jax.jit(_tile_matrix_from_drives)


def _monitor_powers(chip: Chip, power, x, where: str = "columns"):
    """Exact powers at the in-mesh monitors for heater powers ``power`` (H,) and inputs ``x`` (B, K):
    ``(B, C, K)`` after every column (``where="columns"``) or ``(B, H)`` at every heater (``"heaters"``)."""
    s = _drive_settings(chip, power)
    if where == "heaters":
        return (jnp.abs(chip_heater_fields(chip, s, x.T)) ** 2).T
    return jnp.moveaxis(jnp.abs(chip_column_fields(chip, s, x.T)) ** 2, 2, 0)


def _monitor_read(chip: Chip, power, x, key, frac, *, shots: int, noise: bool, where: str = "columns"):
    """Monitor readings (:func:`_monitor_powers`' shape): exact powers, or each monitor's detection of the
    fraction ``frac`` of them over its own auto-ranged full scale (one compiled program for the field and the
    detection)."""
    exact = _monitor_powers(chip, power, x, where)
    if not noise:
        return exact
    fs = jnp.maximum(jnp.max(exact, axis=0, keepdims=True), 1e-300) * frac / 0.8
    return detect(exact * frac, chip.target, key, shots=shots, full_scale=fs) / frac


_monitor_read_jit = jax.jit(_monitor_read, static_argnames=("shots", "noise", "where"))


def heater_monitored(chip: Chip) -> bool:
    """Whether ``chip`` can carry a monitor at every phase shifter in this model
    (:func:`~photocomp.hardware.chipsim.chip_heater_fields`): a unitary mesh of per-cell programmed cells."""
    return chip.circuit == "unitary" and chip.target.layout.cell.programming != "sweep"


def _as_drives(drives_mw, n_heaters: int, limit: float) -> tuple[np.ndarray, bool]:
    """``drives_mw`` as ``(T, n_heaters)`` float64 within ``[0, limit]``, and whether it came with a tile axis."""
    expected = f"(n_tiles, {n_heaters}) as Program.drives() returns, or ({n_heaters},)"
    if isinstance(drives_mw, (str, bytes)) or drives_mw is None:
        raise InvalidTypeError(f"drives_mw must be a real array of heater powers (mW) of shape {expected}; "
                               f"got {type(drives_mw).__name__}")
    try:
        raw = np.asarray(drives_mw)
    except Exception:  # ragged lists and the like
        raise InvalidTypeError(f"drives_mw must be a real array of heater powers (mW) of shape {expected}; "
                               f"got {type(drives_mw).__name__} that is not an array") from None
    if raw.dtype.kind not in "biuf":
        raise InvalidTypeError(f"drives_mw must be a real array of heater powers (mW) of shape {expected}; "
                               f"got dtype {raw.dtype}")
    p = raw.astype(np.float64)
    if p.ndim not in (1, 2) or p.shape[-1] != n_heaters or p.size == 0:
        raise InvalidInputError(f"drives_mw must have shape {expected}; got shape {p.shape}")
    finite = np.isfinite(p)
    if not np.all(finite) or p.min() < 0 or p.max() > limit:
        seen = f"range [{p[finite].min():g}, {p[finite].max():g}]" if finite.any() else "no finite value"
        bad = "" if finite.all() else f" and {p.size - int(finite.sum())} NaN/Inf"
        message = f"drives_mw must be finite and within [0, {limit:g}] mW; got {seen}{bad}"
        if not finite.all():
            raise InvalidInputError(message)
        heaters = np.nonzero(np.any((p < 0) | (p > limit), axis=tuple(range(p.ndim - 1))))[0]
        raise DriveRefused(message, heaters, limit)
    return (p if p.ndim == 2 else p[None]), p.ndim == 2


def _as_inputs(inputs, k: int) -> np.ndarray:
    """``inputs`` as a finite numeric ``(K,)`` or ``(B, K)`` array."""
    if isinstance(inputs, (str, bytes)) or inputs is None:
        raise InvalidTypeError(f"inputs must be a numeric array of shape (K,) or (B, K); got {type(inputs).__name__}")
    try:
        x = np.asarray(inputs)
    except Exception:
        raise InvalidTypeError(f"inputs must be a numeric array of shape ({k},) or (B, {k}); "
                               f"got {type(inputs).__name__} that is not an array") from None
    if x.dtype.kind not in "biufc":
        raise InvalidTypeError(f"inputs must be a numeric array of shape ({k},) or (B, {k}); got dtype {x.dtype}")
    if x.ndim not in (1, 2) or x.shape[-1] != k or x.size == 0 or not np.all(np.isfinite(x)):
        raise InvalidInputError(f"inputs must be finite with shape ({k},) or (B, {k}); got shape {x.shape}")
    return x


class BlackBoxChip:
    """A fabricated chip seen only through noisy measurements.
    Args:
      chip: the hidden :class:`~photocomp.hardware.chip.Chip`, of either
        circuit; drives are in its flat heater order (:attr:`n_heaters`
        heaters: 7 groups for an svd chip, 3 for a unitary one).
      seed: seed of the measurement noise (int in ``[0, 2**63 - 1]``).
      shots: default shots per reading.
      noise: False for exact readings (tests, and bounds on what a method can reach).
      monitor_fraction: in-mesh power monitors (:meth:`read_monitors`): the
        fraction of the guided power each monitor detects (real in (0, 1]),
        or None (default) for a chip with output detectors only. Monitors sit
        on every waveguide after every column of the mesh(es); they are
        modelled as taking no power from the mesh (transparent detectors; a
        weak tap's insertion loss is the same on every path of the mesh, a
        factor the gain absorbs), and ``monitor_fraction`` sets their shot
        noise: a monitor counts that fraction of the photons.
      heater_monitors: also a monitor at every phase shifter, on the arm the
        heater sits on (:meth:`read_heater_monitors`; what in-situ
        backpropagation reads, :mod:`photocomp.calibration.backprop`), with
        the same ``monitor_fraction``. A unitary mesh chip only.

    Light can also be sent into the outputs and detected at the inputs
    (:meth:`read_backward`): the chip is passive and reciprocal, so it
    carries light backwards by the transpose of its matrix.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> box = pc.BlackBoxChip(pc.fabricate("clements-4", seed=1), seed=0)
      >>> box.measure(np.zeros(box.n_heaters), np.eye(4)).shape
      (4, 4)
    """
    def __init__(self, chip: Chip, seed: int = 0, shots: int = 1, *, noise: bool = True,
                 monitor_fraction: float | None = None, heater_monitors: bool = False):
        self._chip = as_chip(chip)
        self.monitor_fraction = (None if monitor_fraction is None else
                                 check_real(monitor_fraction, "monitor_fraction", low=0.0, high=1.0, low_open=True))
        if not isinstance(heater_monitors, bool):
            raise InvalidTypeError(f"heater_monitors must be a bool; got {type(heater_monitors).__name__}")
        if heater_monitors and self.monitor_fraction is None:
            raise InvalidInputError("heater_monitors=True needs monitor_fraction (the power every monitor taps, "
                                    "e.g. 0.1); got monitor_fraction=None")
        if heater_monitors and not heater_monitored(self._chip):
            raise MismatchError(f"heater_monitors needs a unitary mesh chip of per-cell programmed cells; got a "
                                f"{self._chip.circuit} chip of {self._chip.target.name!r}")
        self.heater_monitors = heater_monitors
        self._key = jax.random.PRNGKey(check_int(seed, "seed", low=0, high=SEED_MAX))
        self.shots = check_int(shots, "shots", low=1)
        if not isinstance(noise, bool):
            raise InvalidTypeError(f"noise must be a bool; got {type(noise).__name__}")
        self.noise = noise
        self.ledger = Ledger.for_target(self._chip.target)
        self._drives: np.ndarray | None = None
        # the largest output amplitude per unit input amplitude: a crossbar's fan-in passes at most 1/sqrt(K)
        self._carry = 1.0 / np.sqrt(self._chip.target.size) if self._chip.target.layout.crossbar else 1.0

    @property
    def measurements(self) -> int:
        """Readings so far (input vectors times shots): the ledger's ``readings``."""
        return self.ledger.readings

    @measurements.setter
    def measurements(self, value: int) -> None:
        self.ledger.readings = check_int(value, "measurements", low=0)

    @property
    def target(self) -> Target:
        return self._chip.target

    @property
    def n_heaters(self) -> int:
        return self._chip.n_heaters

    @property
    def circuit(self) -> str:
        """The hidden chip's circuit (``"svd"``, ``"unitary"`` or ``"crossbar"``), which a chip's owner knows."""
        return self._chip.circuit

    @property
    def drive_limit_mw(self) -> float:
        """Largest heater drive (mW): the target's ``drive_limit_p_pi * heater_p_pi_mw``."""
        t = self.target
        return float(t.drive_limit_p_pi * t.heater_p_pi_mw)

    @property
    def saturation(self) -> float:
        """Detector ceiling: ``inf`` (the ADC spans what the outputs can carry, :meth:`measure`'s ``full_scale``)."""
        return float("inf")

    @property
    def drives_mw(self) -> np.ndarray | None:
        """The drives applied last (``(n_heaters,)`` mW, a copy), None before any."""
        return None if self._drives is None else self._drives.copy()

    def _apply(self, drives: np.ndarray) -> None:
        """Make ``drives`` (checked, ``(n_heaters,)``) the applied setting, counting a change if it is one."""
        if self._drives is None or not np.array_equal(drives, self._drives):
            self.ledger.add(configurations=1)
            self._drives = drives.copy()

    def set_drives(self, drives_mw: npt.ArrayLike) -> None:
        """Apply heater drives ``(n_heaters,)`` (mW, within ``[0, drive_limit_mw]``) for later :meth:`read` calls.
        Counts one configuration change unless they equal the drives applied
        now. Out-of-range drives raise
        :class:`~photocomp.hardware.instrument.DriveRefused` and leave the
        drives as they were.
        """
        p, tiled = _as_drives(drives_mw, self.n_heaters, self.drive_limit_mw)
        if tiled:
            raise InvalidInputError(f"drives_mw must have shape ({self.n_heaters},) (one setting); "
                                    f"got shape {np.shape(drives_mw)}")
        self._apply(p[0])

    def read(self, inputs: npt.ArrayLike, *, shots: int | None = None, reference: npt.ArrayLike | None = None,
             full_scale: str = "input") -> np.ndarray:
        """Detected output intensities for ``inputs`` at the applied drives (:meth:`set_drives`).
        As :meth:`measure` with the drives set before; ``(K,)`` or ``(B, K)``.
        """
        if self._drives is None:
            raise InvalidInputError("drives_mw must be set (set_drives) before read; got no drives yet")
        return self.measure(self._drives, inputs, shots=shots, reference=reference, full_scale=full_scale)

    def read_temperatures(self) -> np.ndarray:
        """Temperatures of the chip's sensors: none on a simulated chip, so an empty ``(0,)`` array."""
        return np.zeros(0)

    @property
    def monitor_columns(self) -> int:
        """Columns of in-mesh monitors (:meth:`read_monitors`): the mesh depth (twice it for an svd chip); 0 without."""
        if self.monitor_fraction is None:
            return 0
        return self.target.depth * sum(stage != "att" for stage in circuit_stages(self.circuit))

    def read_monitors(self, inputs: npt.ArrayLike, *, shots: int | None = None) -> np.ndarray:
        """Detected powers at the in-mesh monitors for ``inputs`` at the applied drives (:meth:`set_drives`).

        Args:
          inputs: input fields ``(K,)`` or ``(B, K)``.
          shots: shots per reading (default: the box's).

        Returns:
          float64 powers ``(C, K)`` or ``(B, C, K)`` (``C`` = :attr:`monitor_columns`;
          entry ``[b, c, k]`` the power on waveguide k after column c), in units
          of unit input power. Each monitor has its own receiver whose ADC
          range is set to its brightest reading of the call (auto-ranging);
          shot noise is that of ``monitor_fraction`` of the photons and the
          dark noise the target's, on the detected power. All
          monitors are read at once: adds ``B * shots`` readings.
        """
        return self._read_monitors(inputs, shots, "columns")

    def _read_monitors(self, inputs: npt.ArrayLike, shots: int | None, where: str) -> np.ndarray:
        """Monitor readings after every column or at every heater (``where``) at the applied drives."""
        if self.monitor_fraction is None:  # heater monitors need a monitor fraction: only read_monitors gets here
            raise MismatchError("read_monitors needs a chip with in-mesh monitors "
                                "(BlackBoxChip(..., monitor_fraction=0.1)); this one has output detectors only")
        if self._drives is None:
            raise InvalidInputError("drives_mw must be set (set_drives) before reading monitors; got no drives yet")
        shots = self.shots if shots is None else check_int(shots, "shots", low=1)
        x = _as_inputs(inputs, self.target.size)
        single = x.ndim == 1
        x = x[None] if single else x
        self._key, key = jax.random.split(self._key)
        frac = float(self.monitor_fraction)
        with jax.enable_x64(True):
            out = np.asarray(_monitor_read_jit(self._chip.unseeded(), jnp.asarray(self._drives),
                                               jnp.asarray(x, dtype=jnp.complex128), key, frac, shots=shots,
                                               noise=self.noise, where=where), dtype=np.float64)
        self.ledger.add(readings=x.shape[0] * shots)
        return out[0] if single else out

    def read_heater_monitors(self, inputs: npt.ArrayLike, *, shots: int | None = None) -> np.ndarray:
        """Detected powers at the monitor of every phase shifter for ``inputs`` at the applied drives.

        Args:
          inputs: input fields ``(K,)`` or ``(B, K)``.
          shots: shots per reading (default: the box's).

        Returns:
          float64 powers ``(H,)`` or ``(B, H)`` in the flat heater order
          (:func:`~photocomp.hardware.chipsim.chip_heater_fields`: the power on
          the arm each heater sits on), in units of unit input power, detected
          as :meth:`read_monitors`' are. All monitors are read at once: adds
          ``B * shots`` readings.
        """
        if not self.heater_monitors:
            raise MismatchError("read_heater_monitors needs a chip with a monitor at every phase shifter "
                                "(BlackBoxChip(..., monitor_fraction=0.1, heater_monitors=True)); this one has none")
        return self._read_monitors(inputs, shots, "heaters")

    def read_backward(self, fields: npt.ArrayLike, *, shots: int | None = None,
                      reference: npt.ArrayLike | None = None, full_scale: str = "input") -> np.ndarray:
        """Detected powers at the input ports for ``fields`` sent into the output ports, at the applied drives.

        The chip carries light backwards by the transpose of its matrix
        (reciprocity): the inputs see ``|M^T f + reference|^2``. Arguments,
        detection and counting as :meth:`read` (``fields`` in place of
        ``inputs``; one reading per field vector and shot).
        """
        if self._drives is None:
            raise InvalidInputError("drives_mw must be set (set_drives) before read_backward; got no drives yet")
        return self._measure(self._drives, fields, shots, reference, full_scale, backward=True)

    def measure(self, drives_mw: npt.ArrayLike, inputs: npt.ArrayLike, *, shots: int | None = None,
                reference: npt.ArrayLike | None = None, full_scale: str = "input") -> np.ndarray:
        """Detected output intensities for heater powers and input fields.
        Args:
          drives_mw: heater powers (mW) in the flat heater order of
            :mod:`photocomp.hardware.chip`, within ``[0, drive limit]``:
            ``(n_tiles, n_heaters)`` as :meth:`Program.drives` returns them
            (every tile's setting is read in turn), or ``(n_heaters,)`` for one
            setting.
          inputs: input fields, ``(K,)`` or ``(B, K)`` (complex or real).
          shots: shots per reading (default: the box's).
          reference: optional reference field added to every output before
            detection (the detectors see ``|y + reference|^2``): a complex
            scalar, ``(K,)`` or ``(B, K)``, in the units of the input field.

          full_scale: the detectors' range: ``"input"`` (default) spans the
            largest power the outputs could carry, ``(|x| + max|reference|)^2``
            per input vector (a crossbar's outputs carry at most ``|x|^2 / K``
            of it, :mod:`photocomp.core.crossbar`: ``(|x| / sqrt(K) +
            max|reference|)^2``); ``"auto"`` sets the gain so that the brightest
            output of the call sits at 80 % of full scale (per tile setting;
            auto-ranging receivers; use it when the mesh's loss leaves the
            outputs far below the input power).

        Returns:
          float64 intensities ``(K,)`` or ``(B, K)`` for ``(n_heaters,)``
          drives, with a leading tile axis ``(n_tiles, ...)`` for
          ``(n_tiles, n_heaters)`` drives; adds ``n_tiles * B * shots`` to
          :attr:`measurements`.
        """
        return self._measure(drives_mw, inputs, shots, reference, full_scale)

    def _measure(self, drives_mw, inputs, shots, reference, full_scale, *, backward: bool = False) -> np.ndarray:
        """:meth:`measure`; ``backward``: ``inputs`` sent into the outputs and detected at the inputs."""
        if not isinstance(full_scale, str) or full_scale not in ("input", "auto"):
            raise InvalidInputError(f"full_scale must be 'input' or 'auto'; got {quote(full_scale)}")
        shots = self.shots if shots is None else check_int(shots, "shots", low=1)
        t = self.target
        p, tiled = _as_drives(drives_mw, self.n_heaters, t.drive_limit_p_pi * t.heater_p_pi_mw)
        x = _as_inputs(inputs, t.size)
        single = x.ndim == 1
        x = x[None] if single else x
        ref = np.zeros((1, 1), complex) if reference is None else _as_reference(reference, x.shape)
        self._key, key = jax.random.split(self._key)
        keys = jax.random.split(key, p.shape[0]) if tiled else [key]
        reads = []
        for drives, k in zip(p, keys):
            self._apply(drives)
            reads.append(self._read(drives, x, ref, k, shots, full_scale, backward))
        out = np.stack(reads) if tiled else reads[0]
        self.ledger.add(readings=p.shape[0] * x.shape[0] * shots)
        return out[..., 0, :] if single else out

    def _read(self, p, x, ref, key, shots: int, full_scale: str, backward: bool = False) -> np.ndarray:
        """Detected intensities ``(B, K)`` of inputs ``x`` at one drive setting ``p`` (checked); ``backward``:
        ``x`` sent into the outputs and detected at the inputs."""
        t = self.target
        with jax.enable_x64(True):
            m = _tile_matrix_jit(self._chip.unseeded(), jnp.asarray(p))  # one compiled program for every chip
            y = jnp.asarray(x, dtype=jnp.complex128) @ (m if backward else m.T) + ref
            intensity = jnp.abs(y) ** 2
            if full_scale == "auto":
                fs = jnp.maximum(jnp.max(intensity), 1e-300) / 0.8
            else:
                amp = np.sqrt(np.sum(np.abs(x) ** 2, axis=1, keepdims=True)) * self._carry + \
                    np.max(np.abs(ref), axis=-1, keepdims=True)
                fs = jnp.asarray(amp**2)
            if self.noise:
                return np.asarray(detect(intensity, t, key, shots=shots, full_scale=fs))
            return np.asarray(intensity)

    def characterize_heaters(self, *, sigma_rad: float = 0.02, sigma_efficiency: float = 0.005,
                             points_per_heater: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Result of a per-heater phase characterisation: ``(offsets, efficiencies)`` estimates.
        Models the standard first step of bringing up a mesh: every heater's
        fringe (output power against drive) is recorded at
        ``points_per_heater`` drives and fitted, giving its static phase
        offset and efficiency to within the fit's uncertainty. The estimates
        are the chip's values plus Gaussian errors of ``sigma_rad`` (rad) and
        ``sigma_efficiency`` (relative) drawn from the box's noise seed; the
        step adds ``points_per_heater * n_heaters`` to :attr:`measurements`
        and as many configuration changes to the :attr:`ledger`.
        The fringe fits themselves are not simulated; everything after this
        step (:mod:`photocomp.calibration.twin`) works from measurements only.
        """
        sigma_rad = check_real(sigma_rad, "sigma_rad", low=0.0, high=np.pi)
        sigma_efficiency = check_real(sigma_efficiency, "sigma_efficiency", low=0.0, high=0.5)
        points = check_int(points_per_heater, "points_per_heater", low=3)
        self._key, key = jax.random.split(self._key)
        k1, k2 = jax.random.split(key)
        h = self.n_heaters
        with jax.enable_x64(True):
            off = np.asarray(self._chip.offset) + sigma_rad * np.asarray(jax.random.normal(k1, (h,)))
            eff = np.asarray(self._chip.efficiency) * (1 + sigma_efficiency * np.asarray(jax.random.normal(k2, (h,))))
        self.ledger.add(readings=points * h, configurations=points * h)
        return np.mod(off, 2 * np.pi), eff


def _as_reference(reference, shape) -> np.ndarray:
    if isinstance(reference, (str, bytes)):
        raise InvalidTypeError(f"reference must be a complex scalar or array; got {type(reference).__name__}")
    r = np.asarray(reference, dtype=np.complex128)
    try:
        r = np.broadcast_to(r, shape)
    except ValueError:
        raise InvalidInputError(f"reference must broadcast to the outputs' shape {shape}; got shape {r.shape}") from None
    if not np.all(np.isfinite(r)):
        raise InvalidInputError("reference must be finite")
    return r


#: reference phases of the three-step read-out
PHASE_STEPS = np.exp(2j * np.pi * np.arange(3) / 3)


def reference_amplitude(readings, k: int) -> float:
    """Reference amplitude matched to the outputs: their rms amplitude (floor: 1e-6 / sqrt(K))."""
    return float(max(np.sqrt(np.mean(np.clip(readings, 0.0, None))), 1e-6 / np.sqrt(k)))


def read_fields(instrument: Instrument, fields: np.ndarray, amplitude: float, *, shots: int | None = None,
                retries: int = 4, source: str = "outputs") -> np.ndarray:
    """Complex fields ``(B, K)`` that ``fields`` ``(B, K)`` give at the detectors, by three-step phase stepping.

    Reads every field with a reference of ``amplitude`` at the phases ``w^m = e^{2 pi i m / 3}`` (one
    :func:`~photocomp.hardware.instrument.read_robust` of ``3B`` vectors from ``source``: the outputs, or
    the input ports for fields sent backwards) and returns ``sum_m w^m R_m / (3 a)``: the ``|y|^2 + a^2``
    terms cancel, so no reference-free read is needed.
    """
    b, k = fields.shape
    x = np.tile(fields, (3, 1))
    ref = np.repeat(amplitude * PHASE_STEPS, b)[:, None] * np.ones((1, k))
    r = read_robust(instrument, x, shots=shots, reference=ref, retries=retries, source=source)
    return np.tensordot(PHASE_STEPS, r.reshape(3, b, k), axes=1) / (3 * amplitude)


def measure_matrix(box: BlackBoxChip, drives_mw: npt.ArrayLike, *, inputs: npt.ArrayLike | None = None,
                   amplitude: float | None = None, shots: int | None = None) -> np.ndarray:
    """Estimate the complex transfer matrix at ``drives_mw`` from intensities (phase stepping).
    Every input vector is read four times: without reference (``|y|^2``) and
    with a reference of amplitude ``a`` at phases 0, 2 pi/3, 4 pi/3; then
    ``y = sum_m w^m (R_m - R_0 - a^2) / (3 a)`` with ``w = e^{2 pi i / 3}``.
    The receivers auto-range (``full_scale="auto"``).

    Args:
      box: the :class:`BlackBoxChip`.
      drives_mw: heater powers (mW): ``(n_tiles, n_heaters)`` as
        :meth:`Program.drives` returns them, or ``(n_heaters,)``.
      inputs: ``(B, K)`` probe inputs (default: the K unit vectors, giving
        the matrix's columns directly).
      amplitude: reference amplitude (default: the rms output amplitude of
        the first, reference-free read-out, which maximises the fringe contrast).

    Returns:
      ``(K, K)`` complex estimate (for unit-vector inputs) or the ``(B, K)``
      estimated output fields, with a leading tile axis ``(n_tiles, ...)``
      for ``(n_tiles, n_heaters)`` drives; adds ``4 n_tiles B shots``
      measurements to the box.
    """
    if not isinstance(box, BlackBoxChip):
        raise InvalidTypeError(f"box must be a photocomp.BlackBoxChip; got {type(box).__name__}")
    k = box.target.size
    t = box.target
    p, tiled = _as_drives(drives_mw, box.n_heaters, t.drive_limit_p_pi * t.heater_p_pi_mw)
    x = np.eye(k) if inputs is None else _as_inputs(inputs, k)
    if amplitude is not None:
        amplitude = check_real(amplitude, "amplitude", low=0.0, low_open=True)
    out = []
    for drives in p:  # one tile setting at a time: the reference matches that setting's outputs
        r0 = box.measure(drives, x, shots=shots, full_scale="auto")
        a = amplitude or reference_amplitude(r0, k)
        y = sum(w * (box.measure(drives, x, shots=shots, reference=a * w, full_scale="auto") - r0 - a**2)
                for w in PHASE_STEPS) / (3 * a)
        out.append(y.T if inputs is None else y)
    return np.stack(out) if tiled else out[0]
