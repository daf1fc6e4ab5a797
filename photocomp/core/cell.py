"""Cell models as values: the two-mode devices a mesh is built from.

A mesh layout (:class:`photocomp.core.layout.MeshLayout`) places cells on
mode pairs; *which* device sits there is a :class:`Cell` value, so a new
device is a new value, not a new code path. A cell is

* its **physical form**: the components light meets, in order:
  :class:`Shifter` (a heater's phase on the upper arm, or on the lower arm
  with ``arm="lower"``), :class:`Coupler`
  (a directional coupler, 50:50 at zero splitting-angle error) and
  :class:`Crossing` (a waveguide crossing that swaps the two modes);
* its **parameters**: the heaters (the shifters' names) and its **error
  parameters**: one splitting-angle error (rad) per coupler, named by the
  coupler, plus the cell's insertion loss ``loss_db``;
* its **programming**: how the convention's mathematical cell ``T(theta, phi)``
  (:mod:`photocomp.core.convention`) is set on the ideal device. Every cell
  has an ``"internal"`` heater, affine in theta, and an ``"external"`` heater,
  ``phi`` plus a constant once the screens of earlier cells are pushed
  through (see :func:`photocomp.sim.physical.mesh_to_physical`); other heaters
  are *trims* at constant ideal settings (degrees of freedom that error
  correction can use). The ideal programmed cell equals
  ``diag(e^{i alpha}, e^{i beta}) T(theta, chi)``, where ``chi`` is the
  external heater's phase minus the cell's external offset and the output
  screen ``(alpha, beta)`` is affine in theta too.

The built-in cells (:data:`CELLS`):

* ``"mzi"`` (:data:`MZI`): external shifter, coupler, internal shifter,
  coupler; the convention's physical form;
* ``"mzi3"`` (:data:`MZI3`): the three-splitter MZI (Hamerly et al., Nat.
  Commun. 13, 6831 (2022)): external shifter, coupler, internal shifter,
  coupler, ``trim`` shifter, coupler. With ideal couplers and ``trim = pi/2``
  the last two couplers act as one 50:50 coupler, and the cell is an MZI;
  with imperfect couplers the trim restores full splitting range;
* ``"mzix"`` (:data:`MZIX`): an MZI followed by a waveguide crossing, whose
  bar and cross states trade places (``X T(t, c) = -T(pi/2 - t, c + pi)``);
* ``"bell"`` (:data:`BELL`): the symmetric MZI of Bell & Walmsley (APL
  Photonics 6, 070804 (2021)): coupler, a heater on *each* arm (``internal``
  upper, ``lower`` lower), coupler, and no external heater. With ideal
  couplers ``B diag(e^{ia}, e^{ib}) B = i e^{i sigma} R(theta) Z`` with
  ``sigma = (a + b)/2``, ``theta = pi/2 - (a - b)/2`` and ``Z = diag(1, -1)``:
  a real rotation and a phase common to both modes. Such a cell cannot set
  ``phi`` by itself, so its programming is not per cell: it is the
  ``"sweep"`` programming of :mod:`photocomp.core.bell` (an input phase
  layer, edge shifters beside the columns and the output layer take the
  mesh's phases), and :attr:`Cell.internal` and :attr:`Cell.screen` are None;
* ``"fldzhyan"`` (:data:`FLDZHYAN`): the building block of Fldzhyan, Saygin
  & Kulik (Opt. Lett. 45, 2632 (2020)): one shifter on the upper input and
  one *static* coupler, no internal heater. Its splitting is fixed by the
  coupler, ``theta = pi/4`` (:data:`FIXED_THETA`) plus the coupler's
  splitting-angle error, so its programming is ``"fixed"``: the ideal cell is
  ``diag(e^{-i pi/2}, 1) T(pi/4, external + pi/2)``, a screen like the
  MZI's, but only ``phi`` is free. A mesh of such cells (the
  ``"fldzhyan"`` layout, :mod:`photocomp.core.layout`) is programmed by
  fitting its external phases (:mod:`photocomp.compiler.fit`), and a coupler
  error is a different fixed splitting that the fit on the chip absorbs.

:meth:`Cell.transfer` is the float64 reference (a product of the components'
2 x 2 matrices); the simulation engine evaluates the same product as
vectorised coefficients (:func:`photocomp.sim.physical.cell_coefficients`).
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping

import numpy as np
from jax.typing import ArrayLike

from photocomp.core.errors import InvalidInputError, InvalidTypeError, UnknownNameError
from photocomp.core.validate import check_int

__all__ = ["Shifter", "Coupler", "Crossing", "Affine", "Cell", "MZI", "MZI3", "MZIX", "BELL", "FLDZHYAN", "CELLS",
           "PROGRAMMINGS", "FIXED_THETA", "get_cell"]

ARMS = ("upper", "lower")
PROGRAMMINGS = ("screen", "sweep", "fixed")
"""How a cell is programmed: ``"screen"``, per cell with its output screen pushed on (every cell with an
external and an internal heater); ``"sweep"``, the global phase sweep of :mod:`photocomp.core.bell` (the
symmetric cell); ``"fixed"``, per cell like ``"screen"`` but with the splitting fixed at :data:`FIXED_THETA`
(a static coupler and an external heater only)."""
FIXED_THETA = math.pi / 4
"""The splitting angle ``theta`` (rad) of a ``"fixed"`` cell: its static 50:50 coupler."""


@dataclasses.dataclass(frozen=True)
class Shifter:
    """A thermo-optic phase shifter on the ``arm`` (``"upper"``, default, or ``"lower"``), set by ``heater``."""
    heater: str
    arm: str = "upper"

    def __post_init__(self):
        if self.arm not in ARMS:
            raise InvalidInputError(f"Shifter.arm must be one of {ARMS}; got {self.arm!r}")


@dataclasses.dataclass(frozen=True)
class Coupler:
    """A directional coupler; ``error`` names its splitting-angle error (rad, 50:50 at 0)."""
    error: str


@dataclasses.dataclass(frozen=True)
class Crossing:
    """A waveguide crossing: the two modes swap."""


Component = Shifter | Coupler | Crossing


@dataclasses.dataclass(frozen=True)
class Affine:
    """``slope * theta + offset`` (rad)."""
    slope: float
    offset: float

    def __call__(self, theta):
        return self.slope * theta + self.offset


def _name(value, what: str) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise InvalidInputError(f"{what} must be a name (an identifier string); got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Cell:
    """A two-mode device model (see the module docstring).

    Attributes:
      name: the cell's name.
      components: the physical form, in the order light meets the components.
      internal: the internal heater's ideal phase as a function of theta
        (None for a ``"sweep"`` or ``"fixed"`` cell).
      screen: the output phases ``(alpha, beta)`` on the upper and lower mode
        that the ideal programmed cell leaves, as functions of theta (None
        for a ``"sweep"`` cell; constants for a ``"fixed"`` one).
      external_offset: the external heater's phase minus ``chi`` (rad).
      trims: ideal phases of the heaters other than internal and external,
        as ``((heater, phase), ...)``.
      programming: ``"screen"`` (default) or ``"sweep"`` (:data:`PROGRAMMINGS`).
    """
    name: str
    components: tuple
    internal: Affine | None
    screen: tuple | None
    external_offset: float = 0.0
    trims: tuple = ()
    programming: str = "screen"

    def __post_init__(self):
        _name(self.name, "Cell.name")
        if not isinstance(self.components, tuple) or not self.components:
            raise InvalidTypeError(f"Cell.components must be a non-empty tuple of Shifter, Coupler and Crossing; "
                                   f"got {self.components!r}")
        for c in self.components:
            if not isinstance(c, (Shifter, Coupler, Crossing)):
                raise InvalidTypeError(f"Cell.components must hold Shifter, Coupler and Crossing values; "
                                       f"got {type(c).__name__} {c!r}")
            if not isinstance(c, Crossing):
                _name(c.heater if isinstance(c, Shifter) else c.error, f"a component name of cell {self.name!r}")
        heaters = [c.heater for c in self.components if isinstance(c, Shifter)]
        errors = [c.error for c in self.components if isinstance(c, Coupler)]
        for what, names in (("heater", heaters), ("coupler error", errors)):
            if len(set(names)) != len(names):
                raise InvalidInputError(f"cell {self.name!r}: every {what} name must be unique; got {names}")
        if "loss_db" in errors or set(heaters) & set(errors):
            raise InvalidInputError(f"cell {self.name!r}: coupler error names must differ from the heater names "
                                    f"and from 'loss_db'; got heaters {heaters}, coupler errors {errors}")
        if self.programming not in PROGRAMMINGS:
            raise InvalidInputError(f"cell {self.name!r}: programming must be one of {PROGRAMMINGS}; "
                                    f"got {self.programming!r}")
        if self.programming == "sweep":
            self._check_sweep()
            return
        if self.programming == "fixed":
            self._check_fixed()
            return
        if "internal" not in heaters or "external" not in heaters:
            raise InvalidInputError(f"cell {self.name!r} must have heaters named 'internal' and 'external'; "
                                    f"got {heaters}")
        if not isinstance(self.internal, Affine) or not (
                isinstance(self.screen, tuple) and len(self.screen) == 2
                and all(isinstance(s, Affine) for s in self.screen)):
            raise InvalidTypeError(f"cell {self.name!r}: internal must be an Affine and screen a pair of Affine; "
                                   f"got {self.internal!r}, {self.screen!r}")
        if self.internal.slope == 0:
            raise InvalidInputError(f"cell {self.name!r}: the internal heater must depend on theta (slope != 0)")
        trim_names = [t[0] for t in self.trims]
        if sorted(trim_names) != sorted(set(heaters) - {"internal", "external"}):
            raise InvalidInputError(f"cell {self.name!r}: trims must set exactly the heaters other than internal "
                                    f"and external ({sorted(set(heaters) - {'internal', 'external'})}); "
                                    f"got {trim_names}")

    def _check_sweep(self) -> None:
        """A ``"sweep"`` cell is the symmetric MZI: coupler, upper ``internal``, lower ``lower``, coupler."""
        form = tuple((type(c).__name__, getattr(c, "arm", None)) for c in self.components)
        want = (("Coupler", None), ("Shifter", "upper"), ("Shifter", "lower"), ("Coupler", None))
        if form != want or self.heaters != ("internal", "lower") or self.trims or self.internal is not None \
                or self.screen is not None or self.external_offset != 0.0:
            raise InvalidInputError(
                f"cell {self.name!r}: a 'sweep' cell must be Coupler, Shifter('internal'), "
                f"Shifter('lower', arm='lower'), Coupler with no trims, internal, screen or external offset; "
                f"got components {self.components!r}")

    def _check_fixed(self) -> None:
        """A ``"fixed"`` cell is an upper ``external`` shifter and one coupler, with a constant output screen."""
        form = tuple((type(c).__name__, getattr(c, "arm", None)) for c in self.components)
        if form != (("Shifter", "upper"), ("Coupler", None)) or self.heaters != ("external",) or self.trims \
                or self.internal is not None or not (
                    isinstance(self.screen, tuple) and len(self.screen) == 2
                    and all(isinstance(a, Affine) and a.slope == 0 for a in self.screen)):
            raise InvalidInputError(
                f"cell {self.name!r}: a 'fixed' cell must be Shifter('external'), Coupler with no trims or "
                f"internal heater and a constant screen (two Affine of slope 0); got components "
                f"{self.components!r}, internal {self.internal!r}, screen {self.screen!r}")

    @property
    def heaters(self) -> tuple[str, ...]:
        """Heater names, in the order light meets them."""
        return tuple(c.heater for c in self.components if isinstance(c, Shifter))

    @property
    def couplers(self) -> tuple[str, ...]:
        """Coupler error names, in the order light meets the couplers."""
        return tuple(c.error for c in self.components if isinstance(c, Coupler))

    @property
    def crossings(self) -> int:
        """Waveguide crossings in the cell (both arms pass each)."""
        return sum(isinstance(c, Crossing) for c in self.components)

    @property
    def errors(self) -> tuple[str, ...]:
        """Error parameter names: the couplers' splitting-angle errors (rad), then ``"loss_db"``."""
        return self.couplers + ("loss_db",)

    def path_shifters(self, port: int) -> int:
        """Phase shifters light entering input ``port`` (0 upper, 1 lower) passes through the cell.

        Before the first coupler light stays in its waveguide and meets only
        that arm's shifters; after it, light is in both arms, and each stretch
        between couplers (or after the last one) that holds a shifter on
        either arm counts once (a crossing swaps arms and counts nothing).
        The MZI: 2 from the upper input (external and internal), 1 from the
        lower; the three-splitter MZI adds its trim; the symmetric cell: 1.
        """
        arm = ARMS[check_int(port, "port", low=0, high=1)]
        count, split, stretch = 0, False, False
        for c in self.components:
            if isinstance(c, Coupler):
                count, split, stretch = count + stretch, True, False
            elif isinstance(c, Shifter):
                if split:
                    stretch = True
                elif c.arm == arm:
                    count += 1
            elif not split:  # a crossing before the first coupler moves the light to the other arm
                arm = ARMS[1 - ARMS.index(arm)]
        return count + stretch

    def ideal_settings(self, theta: ArrayLike, chi: ArrayLike, xp: types.ModuleType = np) -> dict:
        """Heater phases (rad) that set the ideal cell to ``diag(screen) T(theta, chi)`` (``"screen"`` and
        ``"fixed"`` cells; a fixed cell has no internal heater and ``theta`` is :data:`FIXED_THETA`)."""
        internal = self._screen_programmed("ideal_settings").internal
        theta = xp.asarray(theta)
        out = {"external": xp.asarray(chi) + self.external_offset}
        if internal is not None:
            out["internal"] = internal(theta)
        for heater, phase in self.trims:
            out[heater] = phase + 0.0 * theta
        return out

    def screen_phases(self, theta: ArrayLike, xp: types.ModuleType = np) -> tuple:
        """The output phases ``(alpha, beta)`` (rad) the ideal programmed cell leaves (``"screen"`` cells)."""
        scr = self._screen_programmed("screen_phases").screen
        assert scr is not None
        theta = xp.asarray(theta)
        return scr[0](theta), scr[1](theta)

    def _screen_programmed(self, what: str) -> Cell:
        if self.programming == "sweep":
            raise InvalidInputError(f"Cell.{what} needs a cell programmed per cell ('screen'); the {self.name!r} "
                                    f"cell is programmed by a {self.programming!r} (photocomp.core.bell)")
        return self

    def transfer(self, settings: Mapping[str, ArrayLike], errors: Mapping[str, ArrayLike] | None = None,
                 xp: types.ModuleType = np):
        """The cell's 2 x 2 transfer matrix, batched over the parameters' broadcast shape ``S``.

        Args:
          settings: a phase (rad) for every heater in :attr:`heaters`.
          errors: values of error parameters in :attr:`errors` (missing ones are 0).
          xp: array module (numpy, the float64 reference, or ``jax.numpy``).

        Returns:
          complex array ``S + (2, 2)``.
        """
        errors = dict(errors or {})
        _check_keys(self, "settings", settings, self.heaters, required=True)
        _check_keys(self, "errors", errors, self.errors, required=False)
        arrays = [xp.asarray(settings[h]) for h in self.heaters] + [xp.asarray(v) for v in errors.values()]
        shape = np.broadcast_shapes(*(np.shape(a) for a in arrays))
        m = xp.broadcast_to(xp.eye(2, dtype=complex), shape + (2, 2))
        for c in self.components:
            if isinstance(c, Shifter):
                e = xp.exp(1j * xp.asarray(settings[c.heater]))
                one = xp.ones_like(e)
                zero = xp.zeros_like(e)
                top, bottom = (e, one) if c.arm == "upper" else (one, e)
                k = xp.stack([xp.stack([top, zero], -1), xp.stack([zero, bottom], -1)], -2)
            elif isinstance(c, Coupler):
                a = math.pi / 4 + xp.asarray(errors.get(c.error, 0.0))
                co, si = xp.cos(a) + 0j, 1j * xp.sin(a)
                k = xp.stack([xp.stack([co, si], -1), xp.stack([si, co], -1)], -2)
            else:
                k = xp.asarray([[0.0, 1.0], [1.0, 0.0]], dtype=complex)
            m = k @ m
        return m * 10.0 ** (-xp.asarray(errors.get("loss_db", 0.0))[..., None, None] / 20.0)


def _check_keys(cell: Cell, what: str, given: Mapping, names: tuple, *, required: bool) -> None:
    if not isinstance(given, Mapping):
        raise InvalidTypeError(f"{what} must be a mapping of name to array; got {type(given).__name__}")
    unknown = sorted(set(given) - set(names))
    missing = sorted(set(names) - set(given)) if required else []
    if unknown or missing:
        raise InvalidInputError(f"{what} of a {cell.name!r} cell must have the keys {list(names)}"
                                f"{'' if required else ' (missing ones are 0)'}; got {sorted(given)}")


_PI = math.pi

MZI = Cell(
    name="mzi",
    components=(Shifter("external"), Coupler("coupler_in"), Shifter("internal"), Coupler("coupler_out")),
    internal=Affine(2.0, _PI),
    screen=(Affine(1.0, _PI), Affine(1.0, 0.0)),
)
"""The convention's MZI: ``B(out) P(internal) B(in) P(external)``, internal = 2 theta + pi."""

MZI3 = Cell(
    name="mzi3",
    components=(Shifter("external"), Coupler("coupler_in"), Shifter("internal"), Coupler("coupler_mid"),
                Shifter("trim"), Coupler("coupler_out")),
    internal=Affine(2.0, _PI / 2),
    screen=(Affine(1.0, 5 * _PI / 4), Affine(1.0, -_PI / 4)),
    trims=(("trim", _PI / 2),),
)
"""Three-splitter MZI: with ``trim = pi/2`` the last coupler pair is ``e^{i pi/4} diag(1, -i) B P(pi/2)``."""

MZIX = Cell(
    name="mzix",
    components=(Shifter("external"), Coupler("coupler_in"), Shifter("internal"), Coupler("coupler_out"),
                Crossing()),
    internal=Affine(-2.0, 2 * _PI),
    screen=(Affine(-1.0, 3 * _PI / 2), Affine(-1.0, 5 * _PI / 2)),
    external_offset=-_PI,
)
"""MZI plus crossing: to realise ``T(theta, .)`` its MZI is set to ``pi/2 - theta``."""

FLDZHYAN = Cell(
    name="fldzhyan",
    components=(Shifter("external"), Coupler("coupler_in")),
    internal=None,
    screen=(Affine(0.0, -_PI / 2), Affine(0.0, 0.0)),
    external_offset=-_PI / 2,
    programming="fixed",
)
"""Fldzhyan's block: ``B(in) P(external) = diag(e^{-i pi/2}, 1) T(pi/4 + coupler_in, external + pi/2)``."""

BELL = Cell(
    name="bell",
    components=(Coupler("coupler_in"), Shifter("internal"), Shifter("lower", arm="lower"), Coupler("coupler_out")),
    internal=None,
    screen=None,
    programming="sweep",
)
"""Symmetric MZI (Bell & Walmsley 2021): ``B(out) diag(e^{i internal}, e^{i lower}) B(in)``, no external heater."""

CELLS: dict[str, Cell] = {c.name: c for c in (MZI, MZI3, MZIX, BELL, FLDZHYAN)}
"""The built-in cells by name."""


def get_cell(cell: str | Cell) -> Cell:
    """A :class:`Cell` from its name (:data:`CELLS`), or the cell itself."""
    if isinstance(cell, Cell):
        return cell
    if isinstance(cell, str) and cell in CELLS:
        return CELLS[cell]
    raise UnknownNameError(f"cell must be a Cell or one of {sorted(CELLS)}; got {cell!r}")
