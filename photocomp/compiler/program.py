"""A compiled program: phase map + target + report, with jit-compiled forward functions."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from photocomp.core.atomic import quote_path
from photocomp.core.cell import FIXED_THETA
from photocomp.core.errors import (
    InvalidInputError,
    InvalidTypeError,
    MismatchError,
    PhaseMapFileError,
    PhotocompError,
)
from photocomp.core.graph import circuit_graph
from photocomp.core.ir import CompileReport, PhaseMap
from photocomp.core.layout import layout
from photocomp.core.phases import MeshPhases
from photocomp.core.target import Target
from photocomp.hardware.chip import Chip, group_size, heater_groups
from photocomp.hardware.chipsim import Settings, chip_forward, chip_matrix, drive_map, flatten_heaters
from photocomp.io.program_file import DETECTIONS, read_program, save_program
from photocomp.sim import ideal as simulate

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["Program", "load"]


def _ideal_matrix(pm: PhaseMap) -> np.ndarray:
    """The ideal chip's matrix of ``pm``: :func:`photocomp.sim.ideal.program_matrix_np`, the same compiled
    program the compiler's passes simulate with, so a loaded program's matrix is the compiled one to the
    last bit and costs no XLA program of its own. Concrete even when asked for inside a jax trace (then
    evaluated eagerly: outside a trace that would trace the tile program op by op, one small XLA program
    per constant)."""
    try:
        return simulate.program_matrix_np(pm)
    except jax.errors.TracerArrayConversionError:  # inside a jax.jit/vmap trace
        with jax.ensure_compile_time_eval():
            return simulate.program_matrix_np(pm)


_chip_matrix_jit = jax.jit(chip_matrix)


def _quote(value, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # e.g. an int too long to print
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "…"


def _check_structure(target: Target, pm: PhaseMap) -> None:
    """The phase map fits the target: K x K tiles with K <= the target's size, both meshes the target's
    architecture on K modes, arrays (n_tiles, ...) of that layout."""
    k = pm.grid.tile
    if not 2 <= k <= target.size:
        raise MismatchError(f"phase_map tiles must have 2 to {target.size} modes for target {target.name!r}; "
                            f"got tiles of {k}")
    if (pm.v is None) != (pm.sigma is None):
        raise InvalidInputError("phase_map.v and phase_map.sigma must both be given (an svd program) or both be "
                                f"None (a unitary program); got v={type(pm.v).__name__}, sigma={type(pm.sigma).__name__}")
    lay = layout(target.mesh, k, cell=target.cell)
    meshes = (("u", pm.u),) if pm.v is None else (("v", pm.v), ("u", pm.u))
    for name, mp in meshes:
        if not isinstance(mp, MeshPhases):
            raise InvalidTypeError(f"phase_map.{name} must be MeshPhases; got {type(mp).__name__}")
        if mp.layout != lay:
            raise MismatchError(f"phase_map.{name} must have target {target.name!r}'s layout ({lay.kind}, "
                                f"{lay.n_modes} modes); got {mp.layout.kind}, {mp.layout.n_modes} modes")
    t, m = pm.grid.n_tiles, lay.n_mzi
    shapes = {"u.theta": (pm.u.theta, (t, m)), "u.phi": (pm.u.phi, (t, m)), "u.out_phase": (pm.u.out_phase, (t, k)),
              "gain": (pm.gain, (t,))}
    if pm.v is not None:
        shapes.update({"v.theta": (pm.v.theta, (t, m)), "v.phi": (pm.v.phi, (t, m)),
                       "v.out_phase": (pm.v.out_phase, (t, k)), "sigma": (pm.sigma, (t, k))})
    for name, (a, shape) in shapes.items():
        if tuple(np.shape(a)) != shape:
            raise InvalidInputError(f"phase_map.{name} must have shape {shape} (n_tiles, ...); got {tuple(np.shape(a))}")
    if lay.cell.programming == "fixed":  # a static coupler's splitting is its own: theta can only be pi/4
        for name, mp in meshes:
            theta = np.asarray(mp.theta, dtype=np.float64)
            if theta.size and not np.allclose(theta, FIXED_THETA, rtol=0.0, atol=1e-12):
                worst = float(theta.flat[np.argmax(np.abs(theta - FIXED_THETA))])
                raise InvalidInputError(f"phase_map.{name}.theta must be pi/4 everywhere on target "
                                        f"{target.name!r} (static couplers); got {worst!r}")


def _check_settings(pm: PhaseMap, s) -> None:
    t = pm.grid.n_tiles
    if s.circuit != pm.circuit:
        raise MismatchError(f"settings must be for the program's {pm.circuit} circuit; got settings of a "
                            f"{s.circuit} circuit")
    for g in heater_groups(pm.circuit, pm.layout.cell) + ("gain",):
        shape = (t,) if g == "gain" else (t, group_size(g, pm.layout))
        if tuple(np.shape(getattr(s, g))) != shape:
            raise InvalidInputError(f"settings.{g} must have shape {shape}; got {tuple(np.shape(getattr(s, g)))}")


def _as_float64(pm: PhaseMap) -> PhaseMap:
    """Host copies of the phase map in float64 (the stored precision)."""
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), pm)


class Program:
    """A program compiled for a target.

    Attributes:
      target: the :class:`~photocomp.core.target.Target`.
      phase_map: the :class:`~photocomp.core.ir.PhaseMap` (phases per tile and stage, gains).
      report: the :class:`~photocomp.core.ir.CompileReport`.
      pipeline: the pipeline that produced it, as text.
      detection: ``"coherent"`` (fields) or ``"intensity"`` (``|y|^2``).
      chip: the :class:`~photocomp.hardware.chip.Chip` a calibrated program runs on
        (``None`` for the ideal chip).
      settings: the calibrated physical heater phases
        (:class:`~photocomp.hardware.chipsim.Settings`), ``None`` when uncalibrated.

    A calibrated program (from :func:`photocomp.calibration.calibrate`) has the same
    interface: ``forward``/``matrix`` then simulate its chip with its settings,
    while ``phase_map`` stays the ideal program it was calibrated to.

    The pure function that simulates the program is :attr:`forward_fn`
    ``(params, x) -> y`` with ``params = program.params``; it works under
    ``jax.jit``, ``jax.vmap`` and ``jax.grad`` and follows the caller's JAX
    precision. :meth:`forward` has nothing that varies between calls (the
    program's settings are fixed), so it uses the folded :attr:`dense`
    matrix, simulated once in float64: one matrix-vector product per call.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> prog = pc.compile(np.eye(3), target="clements-4")
      >>> np.allclose(prog.forward(np.ones(3)), np.ones(3))
      True
    """

    def __init__(self, target: Target, phase_map: PhaseMap, report: CompileReport, pipeline: str,
                 detection: str = "coherent", dense: npt.ArrayLike | None = None, chip: Chip | None = None,
                 settings: Settings | None = None):
        if not isinstance(target, Target):
            raise InvalidTypeError(f"target must be a photocomp.Target; got {type(target).__name__}")
        if not isinstance(phase_map, PhaseMap):
            raise InvalidTypeError(f"phase_map must be a photocomp PhaseMap; got {type(phase_map).__name__}")
        if not isinstance(report, CompileReport):
            raise InvalidTypeError(f"report must be a photocomp CompileReport; got {type(report).__name__}")
        if not isinstance(pipeline, str):
            raise InvalidTypeError(f"pipeline must be a str (the pipeline's text); got {type(pipeline).__name__}")
        if not isinstance(detection, str) or detection not in DETECTIONS:
            raise InvalidInputError(f"detection must be one of {DETECTIONS}; got {_quote(detection)}")
        _check_structure(target, phase_map)
        self.target = target
        self.phase_map = _as_float64(phase_map)
        self.report = report
        self.pipeline = pipeline
        self.detection = detection
        self._dense = None if dense is None else np.asarray(dense)
        if (chip is None) != (settings is None):
            raise InvalidInputError("chip and settings must be given together (a calibrated program) or not at all")
        if chip is not None:
            if not isinstance(chip, Chip):
                raise InvalidTypeError(f"chip must be a photocomp Chip (from photocomp.fabricate); got {type(chip).__name__}")
            if not isinstance(settings, Settings):
                raise InvalidTypeError(f"settings must be photocomp Settings; got {type(settings).__name__}")
            chip.check_target(target, circuit=phase_map.circuit)
            settings = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), settings)
            _check_settings(phase_map, settings)
        self.chip = chip
        self.settings = settings

    @property
    def calibrated(self) -> bool:
        """True when this program runs on a specific fabricated chip."""
        return self.chip is not None

    def require_full_tiles(self, what: str) -> None:
        """Raise :class:`MismatchError` unless the tiles have the target's size (``what`` names the operation).

        A pipeline may tile finer than the target (``tile(size=K)``); such a program simulates exactly,
        but the chip, its heaters and the file format describe tiles of the target's full size.
        """
        k, n = self.phase_map.grid.tile, self.target.size
        if k != n:
            raise MismatchError(f"{what} needs a program tiled at target {self.target.name!r}'s size ({n}x{n}); "
                                f"got tiles of {k}x{k} (compile with tile(size={n}), or for a {self.target.mesh}-{k} "
                                f"target)")

    @property
    def ideal_phase_map(self) -> PhaseMap:
        """The compiled (ideal-chip) phase map this program implements."""
        return self.phase_map

    def with_chip(self, chip: Chip, settings: Settings, report: CompileReport | None = None) -> Program:
        """A copy that runs on ``chip`` with physical ``settings``."""
        return Program(self.target, self.phase_map, report or self.report, self.pipeline, self.detection,
                       chip=chip, settings=settings)

    def drives(self) -> np.ndarray:
        """Heater powers (mW), (n_tiles, n_heaters), for a calibrated program's chip."""
        if self.chip is None or self.settings is None:  # (given together)
            raise InvalidInputError("drives need a chip: calibrate the program first (photocomp.calibration.calibrate)")
        with jax.enable_x64(True):
            return drive_map(self.chip, np.asarray(flatten_heaters(self.settings)))

    # -- structure ---------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """(M, N) of the compiled matrix."""
        g = self.phase_map.grid
        return (g.out_dim, g.in_dim)

    @property
    def n_tiles(self) -> int:
        return self.phase_map.n_tiles

    @property
    def circuit(self) -> str:
        """The program's circuit: ``"svd"`` (V mesh, attenuators, U mesh), ``"unitary"`` (one mesh) or ``"crossbar"``
        (one weight cell per entry, :mod:`photocomp.core.crossbar`)."""
        return self.phase_map.circuit

    @property
    def n_mzi(self) -> int:
        """MZIs used: per tile two meshes and one attenuator column (``svd``), one mesh (``unitary``) or the
        weight cells (``crossbar``)."""
        pm = self.phase_map
        return pm.n_tiles * pm.n_mzi_per_tile

    @property
    def depth(self) -> int:
        """Optical depth in MZI columns: V mesh, attenuator column, U mesh (``unitary``: the one mesh)."""
        return self.phase_map.depth

    @property
    def params(self) -> PhaseMap | Settings:
        """The pytree :attr:`forward_fn` takes: the phase map, or the settings when calibrated."""
        return self.settings if self.settings is not None else self.phase_map  # (settings come with a chip)

    @property
    def forward_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
        """Pure ``forward(params, x) -> y`` for one example ``x`` of shape (N,).

        ``params`` is :attr:`params`: the phase map, or for a calibrated
        program the physical settings (the chip is closed over).
        """
        if self.chip is not None:
            chip = self.chip
            return lambda params, x: chip_forward(chip, params, x, self.detection)
        return functools.partial(simulate.forward, detection=self.detection)

    # -- execution ---------------------------------------------------------------
    def _check_x(self, x: npt.ArrayLike) -> np.ndarray | jax.Array:
        if isinstance(x, (str, bytes)) or x is None:
            raise InvalidTypeError(f"x must be a numeric array of shape ({self.shape[1]},); got {type(x).__name__}")
        if not isinstance(x, jax.Array):
            x = np.asarray(x)
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
                raise InvalidTypeError(f"x must be a numeric array of shape ({self.shape[1]},); got dtype {x.dtype}")
        if not isinstance(x, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(x))):
            raise InvalidInputError("x must be finite; got NaN/Inf entries")
        if tuple(x.shape) != (self.shape[1],):
            raise InvalidInputError(
                f"x must have shape ({self.shape[1]},) (one example; batch with jax.vmap); got shape {tuple(x.shape)}"
            )
        return x

    def forward(self, x: npt.ArrayLike) -> np.ndarray | jax.Array:
        """Output ``y`` (M,) of the program (ideal or calibrated chip) for input ``x`` (N,).

        ``y ~= W @ x`` (or ``|W @ x|^2`` with intensity detection), computed as
        ``dense @ x`` with the folded :attr:`dense` matrix (the simulated
        program, computed once in float64 and cached); it equals simulating
        ``x`` through the meshes (:attr:`forward_fn`) to rounding. Called on
        concrete data it computes in float64 and returns a numpy array
        (complex128, or float64 intensities); inside
        ``jax.vmap``/``jax.grad``/``jax.jit`` it returns a jax array and follows
        the caller's precision (a batch under ``jax.vmap`` is one matrix
        product).
        """
        x = self._check_x(x)
        if isinstance(x, jax.core.Tracer):
            dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(x.dtype, jnp.complex64))
            y = jnp.asarray(self.dense, dtype=dtype) @ x.astype(dtype)
            return jnp.abs(y) ** 2 if self.detection == "intensity" else y
        out = self.dense @ np.asarray(x, dtype=np.complex128)
        return np.abs(out) ** 2 if self.detection == "intensity" else out

    __call__ = forward

    def matrix(self, params: PhaseMap | None = None) -> np.ndarray:
        """The (M, N) complex matrix the program implements (float64).

        The ideal chip's for a compiled program (or for ``params``); the
        fabricated chip's, with the calibrated settings, for a calibrated one.
        """
        if params is None and self.chip is not None:
            # concrete even when first asked for inside a jax.jit/vmap trace
            with jax.ensure_compile_time_eval(), jax.enable_x64(True):
                return np.asarray(_chip_matrix_jit(self.chip.unseeded(), self.settings))
        return _ideal_matrix(self.phase_map if params is None else params)

    @property
    def dense(self) -> np.ndarray:
        """The folded dense matrix (computed once, then cached)."""
        if self._dense is None:
            self._dense = self.matrix()
        return self._dense

    def forward_dense(self, x: npt.ArrayLike) -> np.ndarray | jax.Array:
        """Folded fast path ``dense @ x``: the same as :meth:`forward`."""
        return self.forward(x)

    def graph(self, tile: int = 0) -> nx.DiGraph:
        """networkx view of the circuit with tile ``tile``'s settings (see :mod:`photocomp.core.graph`)."""
        return circuit_graph(self.phase_map, tile)

    # -- I/O -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> str:
        """Write the versioned phase-map file (atomically); returns the path written.

        The format is documented in :mod:`photocomp.io.program_file`.

        Raises:
          InvalidTypeError: ``path`` is not a str or os.PathLike.
          InvalidInputError: ``path`` cannot name a file (empty, a NUL byte, a
            folder), or the program holds values a reader would refuse
            (e.g. theta outside [0, pi/2], non-finite phases).
          PhaseMapFileError: the folder is missing or the operating system
            refuses the write (permission, read-only file system, disk full);
            nothing is left behind and an existing file is kept.
        """
        return save_program(self, path)

    def summary(self) -> dict:
        """Headline numbers: target, shape, tiles, MZIs, depth and the report summary."""
        return {
            "target": self.target.name,
            "shape": f"{self.shape[0]}x{self.shape[1]}",
            "tiles": self.n_tiles,
            "mzis": self.n_mzi,
            "depth": self.depth,
            **dict(self.report.summary),
        }

    def __repr__(self) -> str:
        m, n = self.shape
        on = f", calibrated for chip seed {self.chip.seed}" if self.chip is not None else ""
        return (
            f"Program({m}x{n} on {self.target.name}: {self.n_tiles} tile(s), "
            f"{self.n_mzi} MZIs, depth {self.depth}, detection={self.detection}{on})"
        )


def load(path: str | os.PathLike) -> Program:
    """Load a phase-map file (written by :meth:`Program.save`) as a :class:`Program`.

    The loaded program's forward is bit-identical to the saved one's; a
    calibrated program comes back with its chip and settings.

    Raises:
      InvalidTypeError: ``path`` is not a str or os.PathLike.
      PhaseMapFileError: missing, unreadable (permission, a folder, a NUL
        byte in the path), truncated, tampered, of another format, schema
        version or MZI convention, or inconsistent; the message names the
        path and what was wrong. Nothing else is raised for any file content.
    """
    f = read_program(path)
    try:
        return Program(f.target, f.phase_map, f.report, f.pipeline, f.detection, chip=f.chip, settings=f.settings)
    except PhotocompError as exc:  # read_program checks all of this; kept so a file can never raise another type
        raise PhaseMapFileError(f"cannot read {quote_path(os.fspath(path))}: {exc}") from None
