"""Chip targets: one frozen dataclass, built by constructor functions in ``targets/``.

A :class:`Target` carries everything the compiler and the simulators need to
know about a chip family: the mesh (kind and size), component nominals,
fabrication statistics, thermal parameters, the DAC, the clock and the
detection model. It holds no randomness; :func:`photocomp.fabricate` samples
a concrete chip from its statistics.

Targets are found by name through the ``photocomp.targets`` entry-point group
(see :func:`get_target`), so a lab can ship its own chip as a separate package.
A name is either an exact entry-point name (``"pace-64"``) or a family and a
size, ``family-N`` (``"clements-16"``), with ``N`` in ASCII digits, no sign, no
leading zero and no surrounding whitespace, and within :data:`SIZE_RANGE`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from importlib import metadata

from photocomp.core import registry
from photocomp.core.cell import CELLS
from photocomp.core.errors import InvalidInputError, InvalidTypeError, UnknownNameError
from photocomp.core.layout import MESH_KINDS, MeshLayout, layout, mesh_counts
from photocomp.core.registry import quote

__all__ = ["Target", "get_target", "available_targets", "SIZE_RANGE", "GROUP_INDEX", "SPEED_OF_LIGHT_M_S"]

SIZE_RANGE = (2, 4096)
"""Smallest and largest number of optical modes K of a target."""

_DETECTION = ("coherent", "intensity")

GROUP_INDEX = 4.2
"""Default group index of the chip's waveguides (silicon strip waveguide near 1550 nm)."""

SPEED_OF_LIGHT_M_S = 299_792_458.0
"""Speed of light in vacuum (m/s)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A programmable photonic chip family.
    Attributes:
      name: registry name, e.g. ``"pace-64"``.
      mesh: ``"clements"``, ``"reck"``, ``"butterfly"`` (K a power of two), ``"fldzhyan"`` (with the
        ``"fldzhyan"`` cell only) or ``"crossbar"`` (a fan-out / weight / fan-in core of MZI weight cells,
        :mod:`photocomp.core.crossbar`).
      size: K, the number of optical modes; matrices are tiled onto K x K blocks.
      wavelength_nm: operating wavelength (nm).
      dn_dt_per_k: thermo-optic coefficient of the waveguide (1/K).
      heater_p_pi_mw: heater power for a pi phase shift (mW).
      heater_tau_us: heater thermal time constant (us).
      v_pi: heater voltage for a pi phase shift (V); phase = pi (V / v_pi)^2.
      crosstalk: nearest-neighbour thermal crosstalk (fraction of phase).
      phase_shifter_loss_db: insertion loss of one phase shifter (dB).
      mzi_loss_db: mean insertion loss of one MZI (dB); a cell of Fldzhyan's layout, one coupler and
        one shifter, loses half of it.
      mzi_loss_sigma_db: spread (std) of MZI insertion loss across a chip (dB).
      coupler_sigma_rad: std of the coupler splitting-angle error (rad).
      dac_bits: resolution of the phase-drive DACs (bits).
      clock_ghz: modulation / detection clock (GHz).
      detection: ``"coherent"`` (field read-out) or ``"intensity"``.
      crossing_loss_db: insertion loss of a waveguide crossing (dB): the MZI + crossing cell's, and the
        planar routing of a butterfly's long pairs (counted in the cost report's loss budget and, the
        same on every chip, in the chip simulation).
      heater_efficiency_sigma: relative spread of heater efficiency (phase per mW) across a chip.
      mode_pitch_um: waveguide (mode) pitch on the die (um).
      column_pitch_um: MZI column pitch along the light (um).
      drive_limit_p_pi: largest heater power, in units of P_pi.
      adc_bits: resolution of the output detectors' ADCs (bits).
      photons_per_shot: detected photons per unit optical power and shot (sets shot noise).
      dark_noise: detector dark-noise std per shot, relative to unit power.
      components: approximate number of optical components (for reports).
      description: one line for ``photocomp targets``.
      cell: the two-mode device on every mesh position, a name in
        :data:`photocomp.core.cell.CELLS` (``"mzi"``, ``"mzi3"``, ``"mzix"``, ``"bell"``, ``"fldzhyan"``).
        The mathematical mesh and its decomposition are the same for every
        cell; the cell decides the chip's physical form, heaters and errors.
    """
    name: str
    mesh: str
    size: int
    wavelength_nm: float = 1550.0
    dn_dt_per_k: float = 1.8e-4
    heater_p_pi_mw: float = 25.0
    heater_tau_us: float = 3.0
    v_pi: float = 4.4
    crosstalk: float = 0.01
    phase_shifter_loss_db: float = 0.23
    mzi_loss_db: float = 0.2
    mzi_loss_sigma_db: float = 0.05
    crossing_loss_db: float = 0.18
    coupler_sigma_rad: float = 0.03
    dac_bits: int = 12
    clock_ghz: float = 1.0
    detection: str = "coherent"
    heater_efficiency_sigma: float = 0.05
    mode_pitch_um: float = 50.0
    column_pitch_um: float = 300.0
    drive_limit_p_pi: float = 2.5
    adc_bits: int = 10
    photons_per_shot: float = 1.0e5
    dark_noise: float = 1.0e-4
    components: int = 0
    description: str = ""
    cell: str = "mzi"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInputError(f"Target.name must be a non-empty string; got {quote(self.name)}")
        if self.mesh not in MESH_KINDS:
            raise UnknownNameError(f"Target.mesh must be one of {MESH_KINDS}; got {quote(self.mesh)}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < SIZE_RANGE[0]:
            raise InvalidInputError(f"Target.size must be an int >= {SIZE_RANGE[0]}; got {quote(self.size)}")
        if self.size > SIZE_RANGE[1]:
            raise InvalidInputError(f"Target.size must be <= {SIZE_RANGE[1]} modes; got {quote(self.size)}")
        if isinstance(self.dac_bits, bool) or not isinstance(self.dac_bits, int) or not 1 <= self.dac_bits <= 32:
            raise InvalidInputError(f"Target.dac_bits must be an int in [1, 32]; got {self.dac_bits!r}")
        if not isinstance(self.cell, str) or self.cell not in CELLS:
            raise UnknownNameError(f"Target.cell must be one of {sorted(CELLS)}; got {quote(self.cell)}")
        if self.mesh == "butterfly" and self.size & (self.size - 1):
            raise InvalidInputError(f"Target.size must be a power of two for a butterfly mesh; got {self.size}")
        if CELLS[self.cell].programming == "sweep" and self.mesh != "clements":
            # the phase sweep of a symmetric cell (photocomp.core.bell) needs the Clements mesh's alternating columns
            raise InvalidInputError(f"Target.cell {quote(self.cell)} is programmed by a phase sweep over a Clements "
                                    f"mesh; Target.mesh must be 'clements' with it; got {quote(self.mesh)}")
        if (CELLS[self.cell].programming == "fixed") != (self.mesh == "fldzhyan"):
            # the fixed-splitting cell needs the doubled brick to be universal, and that brick is built of it
            raise InvalidInputError(f"Target.cell 'fldzhyan' (a fixed-splitting cell) and Target.mesh 'fldzhyan' "
                                    f"go together; got cell {quote(self.cell)} on mesh {quote(self.mesh)}")
        if self.mesh == "crossbar" and self.cell != "mzi":
            # a crossbar's weight cells are MZIs used as amplitude modulators (photocomp.core.crossbar)
            raise InvalidInputError(f"Target.mesh 'crossbar' has MZI weight cells; Target.cell must be 'mzi' "
                                    f"with it; got {quote(self.cell)}")
        if self.detection not in _DETECTION:
            raise UnknownNameError(f"Target.detection must be one of {_DETECTION}; got {quote(self.detection)}")
        if isinstance(self.adc_bits, bool) or not isinstance(self.adc_bits, int) or not 1 <= self.adc_bits <= 32:
            raise InvalidInputError(f"Target.adc_bits must be an int in [1, 32]; got {self.adc_bits!r}")
        positive = ("wavelength_nm", "dn_dt_per_k", "heater_p_pi_mw", "heater_tau_us", "v_pi", "clock_ghz",
                    "mode_pitch_um", "column_pitch_um", "photons_per_shot")
        nonneg = ("crosstalk", "phase_shifter_loss_db", "mzi_loss_db", "mzi_loss_sigma_db", "crossing_loss_db",
                  "coupler_sigma_rad",
                  "heater_efficiency_sigma", "dark_noise")
        for f in positive + nonneg:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidTypeError(f"Target.{f} must be a finite number; got {type(v).__name__} {v!r}")
            if not math.isfinite(v):
                raise InvalidInputError(f"Target.{f} must be a finite number; got {v!r}")
            if (f in positive and v <= 0) or (f in nonneg and v < 0):
                raise InvalidInputError(f"Target.{f} must be {'> 0' if f in positive else '>= 0'}; got {v}")
        if self.crosstalk >= 0.5:
            raise InvalidInputError(f"Target.crosstalk must be < 0.5 (fraction of phase); got {self.crosstalk}")
        if not isinstance(self.drive_limit_p_pi, (int, float)) or not 2.0 <= self.drive_limit_p_pi <= 10.0:
            raise InvalidInputError(f"Target.drive_limit_p_pi must be in [2, 10] (a full 2 pi of phase); got {self.drive_limit_p_pi!r}")
        if self.heater_efficiency_sigma >= 0.5:
            raise InvalidInputError(f"Target.heater_efficiency_sigma must be < 0.5; got {self.heater_efficiency_sigma}")
        if self.coupler_sigma_rad > math.pi / 8:
            raise InvalidInputError(f"Target.coupler_sigma_rad must be <= pi/8 rad; got {self.coupler_sigma_rad}")

    @property
    def n_mzi(self) -> int:
        """Cells in one mesh: K (K - 1) / 2 for Clements and Reck, (K / 2) log2 K for a butterfly, K (K - 1)
        for Fldzhyan's layout; a crossbar's K^2 weight cells."""
        return mesh_counts(self.mesh, self.size)[0]

    @property
    def layout(self) -> MeshLayout:
        """The layout of one mesh: kind, size and cell (cached by :func:`photocomp.core.layout.layout`)."""
        return layout(self.mesh, self.size, cell=self.cell)

    @property
    def depth(self) -> int:
        """Optical depth of one mesh in MZI columns."""
        return self.layout.depth

    @property
    def settle_ns(self) -> float:
        """Heater settling time to half a DAC step (ns): a first-order response, ``tau (dac_bits + 1) ln 2``."""
        return self.heater_tau_us * 1e3 * (self.dac_bits + 1) * math.log(2)

    @property
    def settle_cycles(self) -> int:
        """:attr:`settle_ns` in clock cycles, rounded up."""
        return math.ceil(self.settle_ns * self.clock_ghz)

    def flight(self, path_mm: float, group_index: float = GROUP_INDEX) -> tuple[float, int]:
        """Time of flight through ``path_mm`` of waveguide: ``(ns, clock cycles)``, at least one cycle."""
        ns = path_mm * 1e-3 * group_index / SPEED_OF_LIGHT_M_S * 1e9
        return ns, max(1, math.ceil(ns * self.clock_ghz))

    @property
    def circuits(self) -> tuple[str, ...]:
        """The program circuits this target runs: ``("crossbar",)`` for a crossbar, else ``("svd", "unitary")``."""
        return ("crossbar",) if self.mesh == "crossbar" else ("svd", "unitary")

    def default_pipeline(self, circuit: str | None = None) -> str:
        """Preset pipeline string for this target (DAC bits from the target).

        ``circuit``: ``"svd"`` (any matrix; two meshes and attenuators per
        tile) or ``"unitary"`` (scaled unitary tiles; one mesh per tile) on a
        mesh; ``"crossbar"`` (any matrix, one weight cell per entry) on a
        crossbar. Default: the first of :attr:`circuits`.
        """
        if circuit is None:
            circuit = self.circuits[0]
        if not isinstance(circuit, str) or circuit not in self.circuits:
            raise InvalidInputError(f"circuit must be one of {self.circuits} on target {self.name!r}; "
                                    f"got {quote(circuit)}")
        if circuit == "crossbar":
            return f"validate | tile | crossbar | canonicalize | quantize(bits={self.dac_bits}) | lower"
        return (
            f"validate | tile | {circuit} | {self.mesh} | canonicalize | "
            f"quantize(bits={self.dac_bits}) | lower"
        )

    def to_dict(self) -> dict:
        """Plain-JSON form, stored in phase-map files. ``cell`` and ``crossing_loss_db`` are written only
        when they differ from their defaults (:data:`OPTIONAL_FIELDS`), so that files of targets that keep
        them read the same in every version, those written before the fields existed included."""
        data = dataclasses.asdict(self)
        for name, default in OPTIONAL_FIELDS.items():
            if data[name] == default and type(data[name]) is type(default):
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Target:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        if not isinstance(data, dict):
            raise InvalidTypeError(f"target must be a dict; got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(data) - fields)
        if extra:
            raise InvalidInputError(f"target has unknown fields {extra}; expected a subset of {sorted(fields)}")
        return cls(**data)


OPTIONAL_FIELDS = {f.name: f.default for f in dataclasses.fields(Target) if f.name in ("cell", "crossing_loss_db")}
"""Target fields a stored target may leave out (then their defaults): added after the file format's
fields, and written only when they differ from these defaults (:meth:`Target.to_dict`)."""

_GROUP = "photocomp.targets"
_FAMILY = re.compile(r"(?P<family>[a-z][a-z0-9_]*)-(?P<size>[0-9]+)", re.ASCII)
_SIZE_DIGITS = len(str(SIZE_RANGE[1]))


def _entry_points() -> dict[str, metadata.EntryPoint]:

    return registry.entry_points(_GROUP)


def available_targets() -> list[str]:
    """Names of the available targets; families that take a size show as ``name-<N>``.
    Example:
      >>> "pace-64" in available_targets()
      True
    """
    names = []
    for name, _ep in sorted(_entry_points().items()):
        names.append(name if _FAMILY.fullmatch(name) else f"{name}-<N>")
    return sorted(names)


def _unknown(target: str, hint: str = "") -> UnknownNameError:
    return UnknownNameError(f"target must be one of {available_targets()}; got {quote(target)}{hint}")


def _name_hint(target: str, eps) -> str:
    """Why ``target`` is not a well-formed name, for the message (empty when nothing specific is wrong)."""
    stripped = target.strip()
    if stripped != target:
        return f" (target names have no surrounding whitespace: {quote(stripped)})"
    if any(c.isspace() for c in target):
        return " (target names have no whitespace)"
    if not target.isascii():
        return " (target names are ASCII: sizes are written in the digits 0-9)"
    m = re.fullmatch(r"(?P<family>[a-z][a-z0-9_]*)-[+]?0*(?P<size>[0-9]+)", target, re.ASCII)
    if m and m["family"] in eps and f"{m['family']}-{m['size']}" != target:
        return f" (write the size without a sign or leading zeros: {quote(m['family'] + '-' + m['size'])})"
    return ""


def get_target(target: str | Target) -> Target:
    """Resolve a target name (``"pace-64"``, ``"clements-16"``) or pass a Target through.
    Exact names are looked up first; otherwise ``family-N`` calls the family
    constructor with ``N``.

    Raises:
      InvalidTypeError: if ``target`` is neither a string nor a Target.
      UnknownNameError: on a name that is neither registered nor ``family-N``
        of a registered family (whitespace, signs, leading zeros and non-ASCII
        digits included).
      InvalidInputError: if ``N`` is outside :data:`SIZE_RANGE` (checked before
        anything is built).
    """
    if isinstance(target, Target):
        return target
    if not isinstance(target, str):
        raise InvalidTypeError(
            f"target must be a target name (str) or a Target; got {type(target).__name__} {quote(target)}"
        )
    eps = _entry_points()
    m = _FAMILY.fullmatch(target)
    if target in eps and m:
        obj = eps[target].load()()
    else:
        if not m or m["family"] not in eps:
            raise _unknown(target, _name_hint(target, eps))
        digits = m["size"]
        if len(digits) > 1 and digits[0] == "0":
            raise _unknown(target, _name_hint(target, eps))
        size = int(digits) if len(digits) <= _SIZE_DIGITS else None
        if size is None or not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
            got = digits if size is not None else f"a {len(digits)}-digit number"
            raise InvalidInputError(
                f"target {quote(target)}: mesh size N of {m['family']}-N must be an int in "
                f"[{SIZE_RANGE[0]}, {SIZE_RANGE[1]}]; got {got}"
            )
        obj = eps[m["family"]].load()(size)
    if not isinstance(obj, Target):
        raise InvalidTypeError(
            f"target constructor for {quote(target)} returned {type(obj).__name__}, expected photocomp.Target"
        )
    return obj
