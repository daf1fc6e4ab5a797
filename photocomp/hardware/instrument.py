"""The instrument interface: what a lab's hardware driver implements, and what measuring costs.

Measurement-based calibration methods (:mod:`photocomp.calibration.selfconfig`)
talk to a chip only through an :class:`Instrument`: they set heater drives,
send input fields and read the output detectors, and read temperature
sensors where the chip has them. :class:`~photocomp.hardware.detector.BlackBoxChip`
implements it for a simulated fabricated chip; a lab implements the same
methods and properties over its own DACs, laser and receivers, and every
method written against the protocol runs on its chip unchanged.

Cost is kept in a :class:`Ledger` that every instrument owns: readings (one
input vector read out once per shot), configuration changes (heater settings
the chip had to settle into), temperature reads, faults and the re-reads
methods made to get past them. Its :attr:`Ledger.chip_time_s` converts them to
time on the chip::

    chip time = configuration changes x settling time + readings / clock

with the clock the target's ``clock_ghz`` and the settling time the target's
heater thermal time constant ``heater_tau_us`` (``docs/design.md`` §4.1),
multiplied by ``settle_taus`` (default 1: one time constant per change, as the
calibration issue in this repository states the cost; a lab that waits for the
heaters to settle to 1 % uses about 5).

Faults. Real read-outs fail in ways a method must survive.
:class:`FaultyInstrument` wraps any instrument and injects them from an
explicit seed: detectors that saturate (readings clip at ``saturate_at``,
which the wrapper declares as its :attr:`~Instrument.saturation`, as a
receiver's data sheet would), NaN readings, dropped bursts (a read that
returns nothing: :class:`BurstDropped`) and heaters that refuse drives past a
lower limit (:class:`DriveRefused`, or clipping). It counts every fault it
injects in the ledger's :attr:`Ledger.faults`; :func:`read_robust` is the
read that methods use to get past them (re-reads of NaN rows and dropped
bursts, attenuated inputs when a detector saturates), counting what it did in
:attr:`Ledger.retries`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from photocomp.core.errors import InvalidInputError, InvalidTypeError, PhotocompError
from photocomp.core.target import Target
from photocomp.core.validate import check_int, check_real

__all__ = [
    "set_drives_robust",
    "Instrument",
    "HeaterCharacterizer",
    "MonitoredInstrument",
    "AdjointInstrument",
    "Ledger",
    "FaultyInstrument",
    "InstrumentFault",
    "BurstDropped",
    "DriveRefused",
    "ReadFailed",
    "as_instrument",
    "measure",
    "read_robust",
    "DEFAULT_SETTLE_TAUS",
    "FAULT_KINDS",
    "READ_SOURCES",
]

DEFAULT_SETTLE_TAUS = 1.0
"""Heater time constants waited per configuration change (the issue's cost model: one)."""

READ_SOURCES = ("outputs", "monitors", "heaters", "backward")
"""What :func:`read_robust` reads: the output detectors (:meth:`Instrument.read`), the in-mesh monitors
(:meth:`MonitoredInstrument.read_monitors`), the monitors at the phase shifters
(:meth:`AdjointInstrument.read_heater_monitors`) or the input ports for light sent backwards
(:meth:`AdjointInstrument.read_backward`)."""

FAULT_KINDS = ("saturated", "nan", "dropped", "refused", "clipped")
"""Fault kinds a :class:`Ledger` counts: saturated readings, NaN readings, dropped bursts, refused and clipped drives."""


class InstrumentFault(PhotocompError, RuntimeError):
    """The hardware failed to deliver a measurement (a method may retry)."""


class BurstDropped(InstrumentFault):
    """A read returned nothing: the burst of readings was lost (its chip time was spent)."""


class ReadFailed(InstrumentFault):
    """:func:`read_robust` gave up: the readings stayed NaN, dropped or saturated after every retry."""


class DriveRefused(InvalidInputError):
    """Heaters refused drives outside ``[0, limit_mw]``; nothing was applied.

    Attributes:
      heaters: indices (flat heater order) of the heaters that refused.
      limit_mw: the largest drive (mW) those heaters accept.
    """

    def __init__(self, message: str, heaters: npt.ArrayLike = (), limit_mw: float = math.inf):
        super().__init__(message)
        self.heaters = np.asarray(heaters, dtype=np.int64).reshape(-1)
        self.limit_mw = float(limit_mw)


@dataclasses.dataclass
class Ledger:
    """What an instrument has been asked to do, and the chip time it took.

    Attributes:
      settle_s: seconds one configuration change costs (heater settling).
      clock_hz: readings per second (one input vector, one shot, per clock).
      readings: input vectors read out, times shots (dropped bursts included:
        their time was spent).
      configurations: heater configurations set (a set to the drives already
        applied is free).
      temperature_reads: temperature-sensor readings.
      faults: faults seen, by kind (:data:`FAULT_KINDS`).
      retries: re-reads and re-sets methods made to get past faults.

    Example:
      >>> import photocomp as pc
      >>> led = Ledger.for_target(pc.get_target("clements-4"))
      >>> led.add(readings=1000, configurations=2)
      >>> round(led.chip_time_s * 1e6, 6)  # 2 x 3 us + 1000 / 1 GHz
      7.0
    """

    settle_s: float
    clock_hz: float
    readings: int = 0
    configurations: int = 0
    temperature_reads: int = 0
    faults: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    retries: int = 0

    def __post_init__(self):
        self.settle_s = check_real(self.settle_s, "settle_s", low=0.0)
        self.clock_hz = check_real(self.clock_hz, "clock_hz", low=0.0, low_open=True)

    @classmethod
    def for_target(cls, target: Target, *, settle_taus: float = DEFAULT_SETTLE_TAUS) -> Ledger:
        """A ledger at ``target``'s clock, ``settle_taus`` heater time constants per configuration change."""
        if not isinstance(target, Target):
            raise InvalidTypeError(f"target must be a photocomp.Target; got {type(target).__name__}")
        settle_taus = check_real(settle_taus, "settle_taus", low=0.0)
        return cls(settle_s=settle_taus * target.heater_tau_us * 1e-6, clock_hz=target.clock_ghz * 1e9)

    def add(self, *, readings: int = 0, configurations: int = 0, temperature_reads: int = 0, retries: int = 0) -> None:
        """Count readings, configuration changes, temperature reads and retries (each an int >= 0)."""
        self.readings += check_int(readings, "readings", low=0)
        self.configurations += check_int(configurations, "configurations", low=0)
        self.temperature_reads += check_int(temperature_reads, "temperature_reads", low=0)
        self.retries += check_int(retries, "retries", low=0)

    def fault(self, kind: str, count: int = 1) -> None:
        """Count ``count`` faults of ``kind`` (one of :data:`FAULT_KINDS`)."""
        if kind not in FAULT_KINDS:
            raise InvalidInputError(f"kind must be one of {FAULT_KINDS}; got {kind!r:.80}")
        self.faults[kind] = self.faults.get(kind, 0) + check_int(count, "count", low=0)

    @property
    def chip_time_s(self) -> float:
        """Seconds on the chip: ``configurations * settle_s + readings / clock_hz``."""
        return self.configurations * self.settle_s + self.readings / self.clock_hz

    def snapshot(self) -> dict:
        """The counts and chip time now, as a plain dict (``faults`` copied)."""
        return {"readings": self.readings, "configurations": self.configurations,
                "temperature_reads": self.temperature_reads, "faults": dict(self.faults), "retries": self.retries,
                "chip_time_s": self.chip_time_s}

    def since(self, before: dict) -> dict:
        """What was spent since ``before`` (a :meth:`snapshot`), in the same form."""
        now = self.snapshot()
        out = {k: now[k] - before[k] for k in ("readings", "configurations", "temperature_reads", "retries",
                                               "chip_time_s")}
        out["faults"] = {k: now["faults"].get(k, 0) - before["faults"].get(k, 0) for k in now["faults"]}
        return out


@runtime_checkable
class Instrument(Protocol):
    """A programmable mesh on the bench: heater drives in, detector readings out.

    Units: drives in mW, in the chip's flat heater order
    (:mod:`photocomp.hardware.chip`: ``u_int``, ``u_ext``, ``u_out`` for a
    unitary chip); input fields in units where ``sum |x|^2 = 1`` is the laser's
    unit power; readings are detected powers in the same units (a lossless
    chip returns the input power). A source without phase control sends
    intensities: pass real, non-negative amplitudes ``sqrt(I)``.

    Every call is counted in :attr:`ledger`. Bad arguments raise the typed
    errors of :mod:`photocomp.core.errors` naming the argument; a drive
    outside ``[0, drive_limit_mw]`` raises :class:`DriveRefused` and leaves
    the drives as they were.
    """

    @property
    def target(self) -> Target:
        """The chip's :class:`~photocomp.core.target.Target` (nominal physics, clock, heater time constant)."""
        ...

    @property
    def n_heaters(self) -> int:
        """Heaters in the flat drive vector."""
        ...

    @property
    def circuit(self) -> str:
        """The chip's circuit, ``"svd"``, ``"unitary"`` or ``"crossbar"`` (``docs/design.md`` §3.6)."""
        ...

    @property
    def drive_limit_mw(self) -> float:
        """Largest drive (mW) every heater accepts."""
        ...

    @property
    def saturation(self) -> float:
        """Detector ceiling (units of unit input power): readings at or above it are clipped; ``inf`` if none."""
        ...

    @property
    def ledger(self) -> Ledger:
        """The cost ledger of this instrument."""
        ...

    @property
    def drives_mw(self) -> np.ndarray | None:
        """The drives applied now, ``(n_heaters,)`` mW, or None before the first :meth:`set_drives`."""
        ...

    def set_drives(self, drives_mw: npt.ArrayLike) -> None:
        """Apply heater drives ``(n_heaters,)`` (mW) and wait for them to settle (one configuration change)."""
        ...

    def read(self, inputs: npt.ArrayLike, *, shots: int | None = None,
             reference: npt.ArrayLike | None = None) -> np.ndarray:
        """Detected output powers ``(B, K)`` (or ``(K,)``) for input fields ``(B, K)`` (or ``(K,)``).

        ``reference``: a field from the same laser added to every output
        before detection (``|y + reference|^2``), a complex scalar or one per
        output, in the units of the input field. Adds ``B * shots`` readings.
        """
        ...

    def read_temperatures(self) -> np.ndarray:
        """Temperatures (K) of the chip's sensors, ``(n_sensors,)``; empty when it has none."""
        ...


@runtime_checkable
class HeaterCharacterizer(Protocol):
    """An instrument that can report a per-heater fringe characterisation (offsets and efficiencies)."""

    def characterize_heaters(self) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets (rad), efficiencies)``, each ``(n_heaters,)``, of the chip's heaters."""
        ...


@runtime_checkable
class MonitoredInstrument(Protocol):
    """An instrument with power monitors inside the mesh (taps or transparent detectors after every column).

    What Pai et al. 2020's parallel nullification and Miller's self-configuration
    read (:mod:`photocomp.calibration.nullify`): the power on every waveguide
    after every column of MZIs, all monitors at once.
    """

    @property
    def monitor_columns(self) -> int:
        """Columns of monitors (the mesh depth; twice it for an svd chip); 0 when the chip has none."""
        ...

    def read_monitors(self, inputs: npt.ArrayLike, *, shots: int | None = None) -> np.ndarray:
        """Monitor powers ``(B, C, K)`` (or ``(C, K)``) for input fields ``(B, K)`` (or ``(K,)``); adds ``B * shots`` readings."""
        ...


@runtime_checkable
class AdjointInstrument(Protocol):
    """An instrument that carries light both ways and has a power monitor at every phase shifter.

    What in-situ backpropagation (Pai et al. 2023, :mod:`photocomp.calibration.backprop`)
    reads: fields sent into the output ports and detected at the input ports
    (a receiver with a reference beam at each input), and the power at every
    phase shifter for any input field, all monitors at once (a camera on
    grating taps, or transparent detectors).
    """

    @property
    def heater_monitors(self) -> bool:
        """Whether the chip has a monitor at every phase shifter."""
        ...

    def read_backward(self, fields: npt.ArrayLike, *, shots: int | None = None,
                      reference: npt.ArrayLike | None = None) -> np.ndarray:
        """Powers ``(B, K)`` (or ``(K,)``) at the input ports for ``fields`` sent into the outputs; as
        :meth:`Instrument.read` with the directions swapped (adds ``B * shots`` readings)."""
        ...

    def read_heater_monitors(self, inputs: npt.ArrayLike, *, shots: int | None = None) -> np.ndarray:
        """Powers ``(B, H)`` (or ``(H,)``) at every phase shifter, flat heater order, for input fields ``(B, K)``
        (or ``(K,)``); adds ``B * shots`` readings."""
        ...


def as_instrument(instrument: object, name: str = "instrument") -> Instrument:
    """``instrument`` if it implements :class:`Instrument`; else :class:`InvalidTypeError` naming ``name``."""
    if not isinstance(instrument, Instrument):
        raise InvalidTypeError(f"{name} must implement photocomp.hardware.instrument.Instrument (e.g. a "
                               f"photocomp.BlackBoxChip); got {type(instrument).__name__}")
    return instrument


def measure(instrument: Instrument, drives_mw: npt.ArrayLike, inputs: npt.ArrayLike, *, shots: int | None = None,
            reference: npt.ArrayLike | None = None) -> np.ndarray:
    """Set ``drives_mw`` on ``instrument`` and read ``inputs``: :meth:`Instrument.set_drives` then :meth:`Instrument.read`."""
    instrument = as_instrument(instrument)
    instrument.set_drives(drives_mw)
    return instrument.read(inputs, shots=shots, reference=reference)


def set_drives_robust(instrument: Instrument, drives_mw: np.ndarray, limit_mw: np.ndarray, reroute, *,
                      retries: int = 4) -> np.ndarray:
    """:meth:`Instrument.set_drives` that gets past heaters refusing a drive (:class:`DriveRefused`).

    The refusing heaters' entries of ``limit_mw`` (updated in place) drop to
    the limit the instrument reported, the ledger counts a retry, and
    ``reroute(drives, heaters)`` gives the drives to try next (e.g. the same
    phase on another 2 pi branch below the new limit). A refusal that names
    no heater or no finite limit is raised as it is; after ``retries``
    re-sets raises :class:`ReadFailed`. Returns the drives that were set.
    """
    p = np.asarray(drives_mw, dtype=np.float64)
    for _ in range(retries + 1):
        try:
            instrument.set_drives(p)
            return p
        except DriveRefused as exc:
            bad = exc.heaters[(exc.heaters >= 0) & (exc.heaters < len(p))]
            if bad.size == 0 or not np.isfinite(exc.limit_mw):
                raise
            limit_mw[bad] = np.minimum(limit_mw[bad], exc.limit_mw)
            instrument.ledger.add(retries=1)
            p = np.asarray(reroute(p, bad), dtype=np.float64)
    raise ReadFailed(f"set_drives: drives refused {retries + 1} times in a row")


def read_robust(instrument: Instrument, inputs: npt.ArrayLike, *, shots: int | None = None,
                reference: npt.ArrayLike | None = None, retries: int = 4, source: str = "outputs") -> np.ndarray:
    """:meth:`Instrument.read` that gets past NaN readings, dropped bursts and saturated detectors.

    * a dropped burst (:class:`BurstDropped`) is read again;
    * input vectors with a NaN reading are read again (only those rows);
    * input vectors with a reading at or above :attr:`Instrument.saturation`
      are read again with input and reference attenuated by 2 in amplitude
      (a quarter of the power) per try, and their readings scaled back.

    Each re-read counts one in the ledger's ``retries``. After ``retries``
    re-reads of one kind without success raises :class:`ReadFailed`. Inputs
    are as for :meth:`Instrument.read`; returns the same shape. ``source``
    (one of :data:`READ_SOURCES`) reads other detectors the same way:
    ``"monitors"`` the in-mesh monitors (:meth:`MonitoredInstrument.read_monitors`,
    no reference; shape ``(B, C, K)`` or ``(C, K)``), ``"heaters"`` the
    monitors at the phase shifters (:meth:`AdjointInstrument.read_heater_monitors`,
    no reference; ``(B, H)`` or ``(H,)``), ``"backward"`` the input ports
    with ``inputs`` sent into the outputs (:meth:`AdjointInstrument.read_backward`).
    """
    retries = check_int(retries, "retries", low=0)
    if not isinstance(source, str) or source not in READ_SOURCES:
        raise InvalidInputError(f"source must be one of {READ_SOURCES}; got {source!r:.80}")
    monitors = source in ("monitors", "heaters")
    if monitors and reference is not None:
        raise InvalidInputError(f"reference must be None when source={source!r} (monitors see no reference "
                                f"beam); got a reference")
    x = np.asarray(inputs)
    single = x.ndim == 1
    x2 = x[None] if single else x
    ref = None if reference is None else np.broadcast_to(np.asarray(reference, dtype=np.complex128), x2.shape)
    ceiling = float(instrument.saturation)

    read = getattr(instrument, {"outputs": "read", "monitors": "read_monitors", "heaters": "read_heater_monitors",
                                "backward": "read_backward"}[source])
    shape: list[tuple] = []  # a monitor read's shape per input vector

    def attempt(rows: np.ndarray, scale: float) -> np.ndarray:
        for tries in range(retries + 1):
            try:
                if monitors:
                    got = np.asarray(read(x2[rows] * scale, shots=shots), dtype=np.float64)
                    shape[:] = [got.shape[1:]]
                    return got.reshape(len(rows), -1)
                r = ref[rows] * scale if ref is not None else None
                return np.asarray(read(x2[rows] * scale, shots=shots, reference=r), dtype=np.float64)
            except BurstDropped:
                if tries == retries:
                    raise ReadFailed(f"read: {retries + 1} bursts in a row were dropped") from None
                instrument.ledger.add(retries=1)
        raise AssertionError("unreachable")

    rows = np.arange(x2.shape[0])
    out = attempt(rows, 1.0)
    scale = np.ones(x2.shape[0])
    for tries in range(retries + 1):
        nan = ~np.all(np.isfinite(out), axis=1)
        sat = np.any(out >= ceiling, axis=1) & ~nan
        if not (nan.any() or sat.any()):
            out = out / scale[:, None] ** 2
            if monitors:
                out = out.reshape((x2.shape[0],) + shape[0])
            return out[0] if single else out
        if tries == retries:
            break
        scale = np.where(sat, scale * 0.5, scale)
        redo = np.nonzero(nan | sat)[0]
        instrument.ledger.add(retries=1)
        for i in redo:  # one vector at a time: each at its own attenuation
            out[i] = attempt(np.array([i]), float(scale[i]))[0]
    raise ReadFailed(f"read: readings stayed NaN or saturated after {retries} re-reads "
                     f"({int((~np.all(np.isfinite(out), axis=1)).sum())} NaN rows)")


class FaultyInstrument:
    """An :class:`Instrument` with injected faults, for testing that methods survive them.

    Args:
      inner: the instrument to wrap (its ledger is shared: the wrapper's
        faults are counted in ``inner.ledger.faults``).
      saturate_at: detector ceiling (units of unit input power): readings
        clip to it (each clipped reading counts a ``"saturated"`` fault);
        ``None``: no saturation. Reported as :attr:`saturation`.
      nan_rate: probability that one input vector's readings come back NaN
        (counted per vector as ``"nan"``).
      burst_drop_rate: probability that a whole :meth:`read` returns nothing
        and raises :class:`BurstDropped` (its readings are still counted:
        the chip time was spent; counted as ``"dropped"``).
      heater_limit_mw: a drive limit below the inner instrument's (heaters
        that refuse drives past it); ``None``: the inner limit.
      weak_heaters: indices of the heaters ``heater_limit_mw`` applies to,
        which the wrapper does not advertise (:attr:`drive_limit_mw` stays
        the inner one): a method learns of them only from
        :class:`DriveRefused`. ``None`` (default): every heater, advertised.
      on_limit: ``"raise"`` (default): a drive past the limit raises
        :class:`DriveRefused` naming the heaters and applies nothing (counted
        as ``"refused"``, once per refused :meth:`set_drives`); ``"clip"``:
        such drives are clipped to the limit and applied (counted per clipped
        heater as ``"clipped"``).
      seed: seed of the fault draws (int >= 0).
    """

    def __init__(self, inner: Instrument, *, saturate_at: float | None = None, nan_rate: float = 0.0,
                 burst_drop_rate: float = 0.0, heater_limit_mw: float | None = None,
                 weak_heaters: npt.ArrayLike | None = None, on_limit: str = "raise", seed: int = 0):
        self._inner = as_instrument(inner, "inner")
        self._saturate_at = (math.inf if saturate_at is None
                             else check_real(saturate_at, "saturate_at", low=0.0, low_open=True))
        self._nan_rate = check_real(nan_rate, "nan_rate", low=0.0, high=1.0)
        self._drop_rate = check_real(burst_drop_rate, "burst_drop_rate", low=0.0, high=1.0)
        inner_limit = float(self._inner.drive_limit_mw)
        self._limit = (inner_limit if heater_limit_mw is None
                       else check_real(heater_limit_mw, "heater_limit_mw", low=0.0, high=inner_limit))
        self._limits = np.full(self._inner.n_heaters, self._limit)
        self._advertised = self._limit
        if weak_heaters is not None:
            weak = np.asarray(weak_heaters)
            if weak.dtype.kind not in "iu" or weak.ndim != 1 or np.any((weak < 0) | (weak >= self._inner.n_heaters)):
                raise InvalidInputError(f"weak_heaters must be a 1-d array of heater indices in "
                                        f"[0, {self._inner.n_heaters}); got {weak!r:.80}")
            self._limits = np.full(self._inner.n_heaters, inner_limit)
            self._limits[weak] = self._limit
            self._advertised = inner_limit
        if not isinstance(on_limit, str) or on_limit not in ("raise", "clip"):
            raise InvalidInputError(f"on_limit must be 'raise' or 'clip'; got {on_limit!r:.80}")
        self._on_limit = on_limit
        self._rng = np.random.default_rng([check_int(seed, "seed", low=0), 0xFA17])

    @property
    def inner(self) -> Instrument:
        return self._inner

    @property
    def target(self) -> Target:
        return self._inner.target

    @property
    def n_heaters(self) -> int:
        return self._inner.n_heaters

    @property
    def circuit(self) -> str:
        return self._inner.circuit

    @property
    def drive_limit_mw(self) -> float:
        return self._advertised

    @property
    def saturation(self) -> float:
        return min(self._saturate_at, float(self._inner.saturation))

    @property
    def ledger(self) -> Ledger:
        return self._inner.ledger

    @property
    def drives_mw(self) -> np.ndarray | None:
        return self._inner.drives_mw

    def set_drives(self, drives_mw: npt.ArrayLike) -> None:
        try:
            p = np.asarray(drives_mw, dtype=np.float64)
        except (TypeError, ValueError):
            p = None  # the inner instrument names what is wrong with it
        if p is not None and p.shape == (self.n_heaters,) and np.all(np.isfinite(p)):
            over = np.nonzero(p > self._limits)[0]
            if over.size and self._on_limit == "raise":
                self.ledger.fault("refused")
                raise DriveRefused(
                    f"drives_mw must be within [0, {self._limit:g}] mW for heaters "
                    f"{over[:8].tolist()}{'…' if over.size > 8 else ''}; got up to {p[over].max():g} mW",
                    over, self._limit)
            if over.size:
                self.ledger.fault("clipped", int(over.size))
                p = np.minimum(p, self._limits)
            drives_mw = p
        self._inner.set_drives(drives_mw)

    def read(self, inputs: npt.ArrayLike, *, shots: int | None = None,
             reference: npt.ArrayLike | None = None) -> np.ndarray:
        out = np.array(self._inner.read(inputs, shots=shots, reference=reference), dtype=np.float64)
        return self._inject(out, np.ndim(inputs) == 1)

    @property
    def monitor_columns(self) -> int:
        """The inner instrument's monitor columns (0 when it has no monitors)."""
        return int(getattr(self._inner, "monitor_columns", 0))

    def read_monitors(self, inputs: npt.ArrayLike, *, shots: int | None = None) -> np.ndarray:
        """The inner instrument's monitor readings, with the same faults as :meth:`read` (per input vector)."""
        if not isinstance(self._inner, MonitoredInstrument):
            raise InvalidTypeError(f"inner instrument {type(self._inner).__name__} has no in-mesh monitors")
        out = np.array(self._inner.read_monitors(inputs, shots=shots), dtype=np.float64)
        return self._inject(out, np.ndim(inputs) == 1)

    @property
    def heater_monitors(self) -> bool:
        """Whether the inner instrument has a monitor at every phase shifter."""
        return bool(getattr(self._inner, "heater_monitors", False))

    def read_backward(self, fields: npt.ArrayLike, *, shots: int | None = None,
                      reference: npt.ArrayLike | None = None) -> np.ndarray:
        """The inner instrument's backward reading, with the same faults as :meth:`read`."""
        inner = self._adjoint()
        out = np.array(inner.read_backward(fields, shots=shots, reference=reference), dtype=np.float64)
        return self._inject(out, np.ndim(fields) == 1)

    def read_heater_monitors(self, inputs: npt.ArrayLike, *, shots: int | None = None) -> np.ndarray:
        """The inner instrument's monitors at the phase shifters, with the same faults as :meth:`read`."""
        inner = self._adjoint()
        out = np.array(inner.read_heater_monitors(inputs, shots=shots), dtype=np.float64)
        return self._inject(out, np.ndim(inputs) == 1)

    def _adjoint(self) -> AdjointInstrument:
        if not isinstance(self._inner, AdjointInstrument):
            raise InvalidTypeError(f"inner instrument {type(self._inner).__name__} reads no light sent backwards "
                                   f"and no monitors at its phase shifters")
        return self._inner

    def _inject(self, out: np.ndarray, single: bool) -> np.ndarray:
        """Faults drawn for one read: a dropped burst, NaN input vectors, saturated readings."""
        if self._drop_rate > 0 and self._rng.random() < self._drop_rate:
            self.ledger.fault("dropped")
            raise BurstDropped("read: the burst was dropped (no readings came back)")
        rows = out.reshape(1 if single else out.shape[0], -1)  # one row per input vector
        if self._nan_rate > 0:
            bad = self._rng.random(rows.shape[0]) < self._nan_rate
            rows[bad] = np.nan
            self.ledger.fault("nan", int(bad.sum()))
        clipped = rows >= self._saturate_at
        if clipped.any():
            self.ledger.fault("saturated", int(clipped.sum()))
            rows[clipped] = self._saturate_at
        return rows.reshape(out.shape)

    def read_temperatures(self) -> np.ndarray:
        return self._inner.read_temperatures()

    def characterize_heaters(self) -> tuple[np.ndarray, np.ndarray]:
        """The inner instrument's heater characterisation (:class:`HeaterCharacterizer`)."""
        if not isinstance(self._inner, HeaterCharacterizer):
            raise InvalidTypeError(f"inner instrument {type(self._inner).__name__} has no characterize_heaters")
        return self._inner.characterize_heaters()

    def __repr__(self) -> str:
        return (f"FaultyInstrument({self._inner!r}, saturate_at={self._saturate_at:g}, nan_rate={self._nan_rate:g}, "
                f"burst_drop_rate={self._drop_rate:g}, heater_limit_mw={self._limit:g}, on_limit={self._on_limit!r})")
