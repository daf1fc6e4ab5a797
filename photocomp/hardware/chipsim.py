"""Differentiable simulation of compiled programs on fabricated chips.

A program's *physical settings* (:class:`Settings`) are the phases every
heater must produce, per tile: V mesh internal/external/output, attenuator
internal, U mesh internal/external/output, and the electronic gain (a
unitary program: the U mesh's only). On an
ideal chip, :func:`settings_from_program` gives settings that implement the
program exactly (screen pushing, :mod:`photocomp.sim.physical`); on a fabricated
chip the coupler errors and losses make the result differ, which is what
calibration corrects.

Heaters are driven with electrical power. A heater with static offset ``o``,
efficiency ``eta`` and power ``P`` produces ``o + eta pi P / P_pi`` plus the
crosstalk of its neighbours (:mod:`photocomp.hardware.chip`). :func:`drive_map`
solves for the powers that give wanted phases, pre-compensating crosstalk,
and :func:`realized_phases` is the forward model.

Everything is pure JAX (jit/vmap/grad); the chip's errors are shared by all
tiles (tiles are time-multiplexed on one core).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jax.typing import ArrayLike

from photocomp.core import convention
from photocomp.core.bell import bell_from_clements, clements_from_bell
from photocomp.core.cell import Coupler, Shifter
from photocomp.core.crossbar import tree_amplitudes
from photocomp.core.errors import InvalidTypeError
from photocomp.core.ir import PhaseMap, TileGrid
from photocomp.core.layout import MeshLayout, apply_columns, planar_crossings
from photocomp.core.phases import MeshPhases
from photocomp.core.target import Target
from photocomp.hardware.chip import Chip, heater_groups, heater_slices, nominal_chip
from photocomp.sim.ideal import accumulate, tile_inputs
from photocomp.sim.physical import (
    amplitude,
    as_real,
    bell_coefficients,
    fold_batches,
    mesh_from_physical,
    mesh_to_physical,
    physical_coefficients,
    propagate_meshes,
    screen,
    sincos,
)

__all__ = [
    "Settings",
    "settings_from_program",
    "program_from_settings",
    "attenuator_amplitude",
    "ideal_trims",
    "trim_settings",
    "stage_coefficients",
    "routing_amplitudes",
    "chip_forward",
    "chip_tile_matrices",
    "chip_matrix",
    "chip_column_fields",
    "chip_heater_fields",
    "best_gain",
    "flatten_heaters",
    "unflatten_heaters",
    "drive_map",
    "nominal_drives",
    "realized_phases",
]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Physical heater phases (rad) and gains of a program, per tile (a pytree).

    ``v_int``/``v_ext``/``u_int``/``u_ext`` are ``(T, n_mzi)``; ``v_out``,
    ``att`` and ``u_out`` are ``(T, K)``; ``gain`` is ``(T,)``. ``grid`` and
    ``layout`` are static. A unitary program's settings have ``v_int``,
    ``v_ext``, ``v_out`` and ``att`` None. A layout whose cell has trim
    heaters (:attr:`photocomp.core.cell.Cell.trims`) also has ``v_trim`` /
    ``u_trim``, ``(T, n_mzi * n_trims)`` trim-major; otherwise they are None.
    A layout of the symmetric (Bell) cell has no external heaters
    (``v_ext``/``u_ext`` None) and instead the lower-arm heaters
    ``v_low``/``u_low`` ``(T, n_mzi)`` (``v_int``/``u_int`` are the upper
    arms), the input layers ``v_in``/``u_in`` ``(T, K)`` and the edge
    shifters ``v_edge``/``u_edge`` ``(T, E)`` (:mod:`photocomp.core.bell`).
    """
    grid: TileGrid
    layout: MeshLayout
    v_int: jax.Array | np.ndarray | None
    v_ext: jax.Array | np.ndarray | None
    v_out: jax.Array | np.ndarray | None
    att: jax.Array | np.ndarray | None
    u_int: jax.Array | np.ndarray
    u_ext: jax.Array | np.ndarray | None
    u_out: jax.Array | np.ndarray
    gain: jax.Array | np.ndarray
    v_trim: jax.Array | np.ndarray | None = None
    u_trim: jax.Array | np.ndarray | None = None
    v_low: jax.Array | np.ndarray | None = None
    u_low: jax.Array | np.ndarray | None = None
    v_in: jax.Array | np.ndarray | None = None
    u_in: jax.Array | np.ndarray | None = None
    v_edge: jax.Array | np.ndarray | None = None
    u_edge: jax.Array | np.ndarray | None = None

    @classmethod
    def unitary(cls, grid: TileGrid, layout: MeshLayout, u_int: jax.Array | np.ndarray,
                u_ext: jax.Array | np.ndarray | None, u_out: jax.Array | np.ndarray, gain: jax.Array | np.ndarray,
                u_trim: jax.Array | np.ndarray | None = None, *, u_low: jax.Array | np.ndarray | None = None,
                u_in: jax.Array | np.ndarray | None = None,
                u_edge: jax.Array | np.ndarray | None = None) -> Settings:
        """Settings of a unitary program (one mesh per tile)."""
        return cls(grid, layout, None, None, None, None, u_int, u_ext, u_out, gain, None, u_trim,
                   u_low=u_low, u_in=u_in, u_edge=u_edge)

    @property
    def circuit(self) -> str:
        """``"svd"``, ``"unitary"`` or ``"crossbar"`` (a crossbar's settings are unitary-shaped on its layout)."""
        if self.v_int is None:
            return "crossbar" if self.layout.crossbar else "unitary"
        return "svd"

    @property
    def groups(self) -> tuple[str, ...]:
        """The heater groups these settings drive, in flat order."""
        return heater_groups(self.circuit, self.layout.cell)

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(
    Settings,
    data_fields=["v_int", "v_ext", "v_out", "att", "u_int", "u_ext", "u_out", "gain", "v_trim", "u_trim", "v_low",
                 "u_low", "v_in", "u_in", "v_edge", "u_edge"],
    meta_fields=["grid", "layout"],
)


def attenuator_amplitude(internal: ArrayLike, coupler_in: ArrayLike = 0.0, coupler_out: ArrayLike = 0.0,
                         loss_db: ArrayLike = 0.0) -> jax.Array:
    """Upper-port amplitude of an attenuator MZI: ``[B(out) P(internal) B(in)]_00`` times loss.
    Ideal couplers: ``(e^{i internal} - 1) / 2``; with ``internal = 2 sigma + pi``
    this is ``e^{i(sigma + pi)} cos(sigma)``.
    """
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(
        *(jnp.asarray(v).dtype for v in (internal, coupler_in, coupler_out)), jnp.float32))
    sa, ca = sincos(as_real(coupler_in, dtype) + np.pi / 4)
    sb, cb = sincos(as_real(coupler_out, dtype) + np.pi / 4)
    si, ci = sincos(as_real(internal, dtype))
    amp = jax.lax.complex(ca * cb * ci - sa * sb, ca * cb * si)
    return amp * amplitude(as_real(loss_db, dtype))


def _bell_stage(lay: MeshLayout, mp: MeshPhases, stage: str) -> dict:
    """A Bell mesh's heater groups ``{stage}_int, _low, _in, _edge, _out`` from its mathematical phases."""
    ph = bell_from_clements(lay, mp.theta, mp.phi, mp.out_phase, xp=jnp)
    return {f"{stage}_{g}": ph[k] for g, k in (("int", "internal"), ("low", "lower"), ("in", "input"),
                                                ("edge", "edge"), ("out", "output"))}


def _bell_phases(s: Settings, stage: str) -> dict:
    """The Bell sweep's groups (:data:`photocomp.core.bell.BELL_GROUPS`) of mesh ``stage`` of settings ``s``."""
    return {k: getattr(s, f"{stage}_{g}") for g, k in (("int", "internal"), ("low", "lower"), ("in", "input"),
                                                        ("edge", "edge"), ("out", "output"))}


@jax.jit  # one compiled program: called eagerly it would compile its many small operations one by one
def settings_from_program(pm: PhaseMap) -> Settings:
    """Physical settings that implement ``pm`` exactly on an ideal chip."""
    lay = pm.layout
    if lay.cell.programming == "sweep":  # the Bell mesh: a global phase sweep (photocomp.core.bell)
        u = _bell_stage(lay, pm.u, "u")
        if pm.v is None:
            return Settings.unitary(pm.grid, lay, u.pop("u_int"), None, u.pop("u_out"), jnp.asarray(pm.gain), **u)
        v = _bell_stage(lay, pm.v, "v")
        sigma = jnp.asarray(pm.sigma)
        v["v_out"] = convention.wrap_phase(v["v_out"] - (sigma + jnp.pi))
        att, _ = convention.to_physical(sigma, 0.0)
        return Settings(pm.grid, lay, v.pop("v_int"), None, v.pop("v_out"), convention.wrap_phase(att),
                        u.pop("u_int"), None, u.pop("u_out"), jnp.asarray(pm.gain), **v, **u)
    u_int, u_ext, u_out = mesh_to_physical(lay, pm.u.theta, pm.u.phi, pm.u.out_phase)
    u_trim = ideal_trims(lay, pm.u.theta)
    if pm.v is None:
        return Settings.unitary(pm.grid, lay, u_int, u_ext, u_out, jnp.asarray(pm.gain), u_trim)
    v_int, v_ext, v_out = mesh_to_physical(lay, pm.v.theta, pm.v.phi, pm.v.out_phase)
    sigma = jnp.asarray(pm.sigma)
    att, _ = convention.to_physical(sigma, 0.0)
    # the ideal attenuator adds phase sigma + pi; V's output shifters take it off
    v_out = convention.wrap_phase(v_out - (sigma + jnp.pi))
    return Settings(pm.grid, lay, v_int, v_ext, v_out, convention.wrap_phase(att), u_int, u_ext, u_out,
                    jnp.asarray(pm.gain), ideal_trims(lay, pm.v.theta), u_trim)


def ideal_trims(lay: MeshLayout, theta: ArrayLike) -> jax.Array | None:
    """The trim heaters' ideal phases ``(T, n_mzi * n_trims)`` (trim-major) for phases ``theta`` ``(T, n_mzi)``;
    None for a cell without trims."""
    if not lay.cell.trims:
        return None
    theta = jnp.asarray(theta)
    return jnp.concatenate([jnp.full(theta.shape, phase, theta.dtype) for _, phase in lay.cell.trims], axis=-1)


def trim_settings(lay: MeshLayout, trims: jax.Array | np.ndarray | None) -> dict | None:
    """``{heater: (..., n_mzi)}`` of the cell's trims from a flat trim group ``(..., n_mzi * n_trims)``."""
    if trims is None or not lay.cell.trims:
        return None
    m = lay.n_mzi
    return {h: trims[..., j * m:(j + 1) * m] for j, (h, _) in enumerate(lay.cell.trims)}


def program_from_settings(s: Settings) -> PhaseMap:
    """Mathematical phase map equivalent to settings on an ideal chip (inverse of the above)."""
    lay = s.layout
    if lay.cell.programming == "sweep":
        u = MeshPhases(lay, *clements_from_bell(lay, _bell_phases(s, "u"), xp=jnp))
        if s.v_int is None:
            return PhaseMap.unitary(s.grid, u, s.gain)
        sigma, _ = convention.from_physical(jnp.asarray(s.att), 0.0)
        vph = _bell_phases(s, "v")
        vph["output"] = jnp.asarray(vph["output"]) + sigma + jnp.pi
        return PhaseMap(s.grid, MeshPhases(lay, *clements_from_bell(lay, vph, xp=jnp)), sigma, u, s.gain)
    if s.u_ext is None:
        raise InvalidTypeError(f"settings.u_ext must be an array for a {lay.cell.name!r} cell (it has external "
                               f"heaters); got None")
    ut, up, uo = mesh_from_physical(lay, s.u_int, s.u_ext, s.u_out)
    if s.v_int is None:
        return PhaseMap.unitary(s.grid, MeshPhases(lay, ut, up, uo), s.gain)
    if s.v_ext is None or s.v_out is None or s.att is None:
        raise InvalidTypeError("settings.v_ext, v_out and att must be arrays when settings.v_int is one (an svd "
                               "circuit); got None")
    sigma, _ = convention.from_physical(jnp.asarray(s.att), 0.0)
    v_out = s.v_out + sigma + jnp.pi
    vt, vp, vo = mesh_from_physical(lay, s.v_int, s.v_ext, v_out)
    return PhaseMap(s.grid, MeshPhases(lay, vt, vp, vo), sigma, MeshPhases(lay, ut, up, uo), s.gain)


def stage_coefficients(chip: Chip, lay: MeshLayout, stage: str, internal, external, trims=None, *, dtype):
    """2 x 2 coefficients ``(4, n_mzi)`` of mesh ``stage`` (``"v"`` or ``"u"``) of the chip: its couplers,
    losses and the cell's other coupler errors, with the heaters' phases (trims: a flat trim group or None).

    Waveguide crossings lose ``chip.target.crossing_loss_db`` each: a cell's own crossings (the MZI +
    crossing cell's, which both arms pass) add to its insertion loss, and the planar routing of a layout
    with non-adjacent pairs (a butterfly) scales each cell's ports by :func:`routing_amplitudes`.
    For the Bell cell see :func:`_stage_mesh`."""
    if lay.crossbar:
        return _crossbar_coefficients(chip, lay, internal, external, dtype=dtype)
    loss = _cell_loss_db(chip, lay, stage)
    coef = physical_coefficients(lay, internal, external, chip.coupler_in[stage], chip.coupler_out[stage],
                                 loss, dtype=dtype, trims=trim_settings(lay, trims),
                                 errors=chip.cell_errors.get(stage) or None)
    route = routing_amplitudes(lay, chip.target.crossing_loss_db)
    if route is None:
        return coef
    top, bottom = route
    return coef * jnp.asarray(np.stack([top * top, top * bottom, bottom * top, bottom * bottom]), dtype=coef.dtype)


def _cell_loss_db(chip: Chip, lay: MeshLayout, stage: str):
    """Each cell's insertion loss (dB) in mesh ``stage``: the chip's, plus its own crossings' (both arms pass them)."""
    loss = chip.loss_db[stage]
    own = lay.cell.crossings
    if own and chip.target.crossing_loss_db:
        loss = loss + own * chip.target.crossing_loss_db
    return loss


def _crossbar_coefficients(chip: Chip, lay: MeshLayout, internal, external, *, dtype):
    """A crossbar's weight cells as coefficients ``(4, K^2)``: each MZI with its couplers and loss, scaled by
    its path's fan-out and fan-in amplitudes relative to an ideal tree's ``1 / sqrt(K)`` each (so an ideal
    chip's cells are the mathematical ones; :func:`photocomp.core.layout.crossbar_apply` adds the ``1 / K``)."""
    k = lay.n_modes
    coef = physical_coefficients(lay, internal, external, chip.coupler_in["u"], chip.coupler_out["u"],
                                 chip.loss_db["u"], dtype=dtype)
    trees = chip.cell_errors.get("u") or {}
    rdtype = jnp.real(coef).dtype
    fan_out = tree_amplitudes(k, as_real(trees.get("fan_out", jnp.zeros(k * (k - 1))), rdtype).reshape(k, k - 1))
    fan_in = tree_amplitudes(k, as_real(trees.get("fan_in", jnp.zeros(k * (k - 1))), rdtype).reshape(k, k - 1))
    # cell i K + j: input j's fan-out leaf i, output i's fan-in leaf j, each relative to 1 / sqrt(K)
    path = (fan_out.T * fan_in * k).reshape(-1)
    return coef * path.astype(coef.dtype)


@functools.lru_cache(maxsize=64)
def routing_amplitudes(lay: MeshLayout, crossing_loss_db: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Field amplitudes the planar routing leaves on each cell's upper and lower port, ``(n_mzi,)`` each, or None.

    None for adjacent pairs (no routing) or lossless crossings. Otherwise the light of mode ``q`` passes
    ``planar_crossings(lay)[c, q]`` crossings on its way into the cell of column ``c`` and as many on its
    way back to mode order (:func:`photocomp.core.layout.planar_crossings`), so a cell's transfer element
    from port ``j`` to port ``i`` is scaled by ``a_i a_j`` with ``a = 10^(-crossing_loss_db * crossings / 20)``
    (every mode of a butterfly's column passes one of its cells, so the routing is all folded into them).
    """
    if lay.adjacent or not crossing_loss_db or not lay.n_mzi:
        return None
    counts = planar_crossings(lay)
    amp = 10.0 ** (-float(crossing_loss_db) * counts / 20.0)
    cols = lay.column_array
    return amp[cols, lay.pair_array], amp[cols, lay.lower_array]


def _stage_mesh(chip: Chip, lay: MeshLayout, stage: str, p: dict, *, dtype):
    """Mesh ``stage``'s coefficients ``(4, n_mzi)`` and its output phases (rad): the output shifters, and for
    the Bell cell the input layer and edge shifters folded into the cells and outputs
    (:func:`photocomp.sim.physical.bell_coefficients`)."""
    if lay.cell.programming == "sweep":
        coef, extra = bell_coefficients(lay, p[f"{stage}_int"], p[f"{stage}_low"], p[f"{stage}_in"],
                                        p[f"{stage}_edge"], chip.coupler_in[stage], chip.coupler_out[stage],
                                        chip.loss_db[stage], dtype=dtype)
        return coef, p[f"{stage}_out"] + extra
    coef = stage_coefficients(chip, lay, stage, p.get(f"{stage}_int"), p[f"{stage}_ext"], p.get(f"{stage}_trim"),
                              dtype=dtype)
    return coef, p[f"{stage}_out"]


def _tile_core(chip: Chip, lay: MeshLayout, p: dict, z, *, reverse_only=False):
    """One tile's core (V mesh, attenuators, U mesh, output shifters) on fields z (K[, B]), as one scan."""
    dtype = z.dtype
    v, v_out = _stage_mesh(chip, lay, "v", p, dtype=dtype)
    u, u_out = _stage_mesh(chip, lay, "u", p, dtype=dtype)
    amp = attenuator_amplitude(p["att"], chip.coupler_in["att"], chip.coupler_out["att"], chip.loss_db["att"])
    between = (screen(v_out, dtype) * amp).astype(dtype)
    y = propagate_meshes(lay, [v, u], [between], z, reverse_only=reverse_only)
    return screen(u_out, dtype).reshape((-1,) + (1,) * (y.ndim - 1)) * y


def _unitary_core(chip: Chip, lay: MeshLayout, p: dict, z, *, reverse_only=False):
    """One tile's core of a unitary program (its mesh and output shifters) on fields z (K[, B])."""
    dtype = z.dtype
    coef, out = _stage_mesh(chip, lay, "u", p, dtype=dtype)
    y = propagate_meshes(lay, [coef], [], z, reverse_only=reverse_only)
    return screen(out, dtype).reshape((-1,) + (1,) * (y.ndim - 1)) * y


def _tile_apply(chip: Chip, s: Settings, z, reverse_only: bool = False):
    """Apply each tile's core to fields z (T, K[, B]); gain not applied."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(z.dtype, jnp.complex64, jnp.asarray(s.u_int).dtype))
    fn = _unitary_core if s.v_int is None else _tile_core
    core = lambda p, z: fn(chip, s.layout, p, z, reverse_only=reverse_only)  # noqa: E731
    phases = {g: jnp.asarray(getattr(s, g)) for g in s.groups}
    return jax.vmap(core)(phases, z.astype(dtype))


def chip_tile_matrices(chip: Chip, s: Settings, *, with_gain: bool = True, reverse_only: bool = False) -> jax.Array:
    """(T, K, K) matrices the chip implements per tile with settings ``s``.
    ``reverse_only=True`` (for losses differentiated with ``jax.grad`` only,
    as calibration's) makes reverse-mode gradients faster and forward-mode
    derivatives unavailable (:func:`photocomp.sim.physical.propagate_meshes`).
    """
    k = s.grid.tile
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(jnp.asarray(s.u_int).dtype, jnp.complex64))
    eye = jnp.broadcast_to(jnp.eye(k, dtype=dtype), (s.grid.n_tiles, k, k))
    z = _tile_apply(chip, s, eye, reverse_only)
    return z * jnp.asarray(s.gain)[:, None, None] if with_gain else z


def _column_fields(lay: MeshLayout, coef, z):
    """Fields ``(depth, N, B)`` after every column of a mesh of coefficients ``coef`` ``(4, n_mzi)``, fields ``z`` (N, B)."""
    mats = jnp.moveaxis(coef, 0, -1).reshape(-1, 2, 2)  # (m00, m01, m10, m11) -> (n_mzi, 2, 2)
    return apply_columns(lay, mats, None, z, every_column=True)


def chip_column_fields(chip: Chip, s: Settings, x: ArrayLike) -> jax.Array:
    """Fields inside the chip's mesh(es) after every column, for the first tile of settings ``s``.

    What in-mesh power monitors see (:meth:`photocomp.hardware.detector.BlackBoxChip.read_monitors`).

    Args:
      chip: the chip.
      s: settings (only tile 0 is used).
      x: input fields ``(K, B)``.

    Returns:
      ``(C, K, B)`` complex fields, ``C`` the mesh depth (unitary circuit) or
      twice it (svd: the V mesh's columns, then the U mesh's, whose input has
      passed V's output shifters and the attenuators). Output phase shifters
      after the last column are not applied (they change no power).
    """
    lay = s.layout
    if lay.crossbar:
        raise InvalidTypeError("chip_column_fields needs a mesh chip: a crossbar's weight cells act in parallel, "
                               "its fields inside are each cell's input and output (photocomp.core.crossbar)")
    x = jnp.asarray(x)
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(x.dtype, jnp.complex64, jnp.asarray(s.u_int).dtype))
    x = x.astype(dtype)
    p = {g: jnp.asarray(getattr(s, g))[0] for g in s.groups}
    u, _ = _stage_mesh(chip, lay, "u", p, dtype=dtype)
    if s.v_int is None:
        return _column_fields(lay, u, x)
    v, v_out = _stage_mesh(chip, lay, "v", p, dtype=dtype)
    amp = attenuator_amplitude(p["att"], chip.coupler_in["att"], chip.coupler_out["att"], chip.loss_db["att"])
    fv = _column_fields(lay, v, x)
    between = (screen(v_out, dtype) * amp).astype(dtype)
    return jnp.concatenate([fv, _column_fields(lay, u, between[:, None] * fv[-1])])


def chip_heater_fields(chip: Chip, s: Settings, x: ArrayLike) -> jax.Array:
    """Fields at every heater of a unitary mesh chip, for the first tile of settings ``s``.

    What a monitor at every phase shifter sees (in-situ backpropagation,
    :meth:`photocomp.hardware.detector.BlackBoxChip.read_heater_monitors`):
    the field on the arm each heater sits on, just after its shifter, in the
    chip's flat heater order (:func:`photocomp.hardware.chip.heater_groups`).
    Each cell's components are walked in light order from the field entering
    it (:mod:`photocomp.core.cell`); half of a cell's insertion loss acts
    before its components and half after (the chip model lumps a cell's loss;
    a field's power inside the cell lies between the two). An output
    heater's field is the mesh's output on its mode (its shifter changes no power).

    Args:
      chip: the chip (a unitary circuit of an MZI-family cell; not a
        crossbar and not the symmetric cell's global sweep).
      s: settings (only tile 0 is used).
      x: input fields ``(K, B)``.

    Returns:
      ``(H, B)`` complex fields, ``H = chip.n_heaters``.
    """
    lay = s.layout
    if lay.crossbar or lay.cell.programming == "sweep" or s.v_int is not None:
        raise InvalidTypeError(f"chip_heater_fields needs a unitary mesh chip of a per-cell programmed cell; got "
                               f"the {s.circuit} circuit of {lay.cell.name!r} cells")
    x = jnp.asarray(x)
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(x.dtype, jnp.complex64, jnp.asarray(s.u_int).dtype))
    rdtype = jnp.real(jnp.zeros((), dtype)).dtype
    x = x.astype(dtype)
    p = {g: jnp.asarray(getattr(s, g))[0] for g in s.groups}
    coef, _ = _stage_mesh(chip, lay, "u", p, dtype=dtype)
    after = _column_fields(lay, coef, x)  # (depth, K, B)
    cell, seen = lay.cell, {}
    entering = jnp.concatenate([x[None], after[:-1]])  # into each column (a mesh of K >= 2 modes has one or more)
    cols = lay.column_array
    a, b = entering[cols, lay.pair_array], entering[cols, lay.lower_array]  # (n_mzi, B) each
    route = routing_amplitudes(lay, chip.target.crossing_loss_db)
    if route is not None:
        a, b = a * jnp.asarray(route[0], rdtype)[:, None], b * jnp.asarray(route[1], rdtype)[:, None]
    half = jnp.sqrt(jnp.broadcast_to(amplitude(as_real(_cell_loss_db(chip, lay, "u"), rdtype)), (lay.n_mzi,)))
    a, b = a * half[:, None].astype(dtype), b * half[:, None].astype(dtype)
    phases = dict(cell.trims)
    phases.update(trim_settings(lay, p.get("u_trim")) or {})
    phases["external"] = p["u_ext"]
    if "internal" in cell.heaters:
        phases["internal"] = p["u_int"]
    errors = {"coupler_in": chip.coupler_in["u"], "coupler_out": chip.coupler_out["u"],
              **(chip.cell_errors.get("u") or {})}
    for comp in cell.components:
        if isinstance(comp, Shifter):
            turn = screen(jnp.broadcast_to(as_real(phases[comp.heater], rdtype), (lay.n_mzi,)), dtype)[:, None]
            if comp.arm == "upper":
                a = a * turn
                seen[comp.heater] = a
            else:
                b = b * turn
                seen[comp.heater] = b
        elif isinstance(comp, Coupler):
            sn, cs = sincos(as_real(errors.get(comp.error, 0.0), rdtype) + np.pi / 4)
            sn, cs = (jnp.broadcast_to(v, (lay.n_mzi,))[:, None] for v in (sn, cs))
            a, b = cs * a + 1j * sn * b, 1j * sn * a + cs * b
        else:
            a, b = b, a
    parts = {"u_int": lambda: seen["internal"], "u_ext": lambda: seen["external"], "u_out": lambda: after[-1],
             "u_trim": lambda: jnp.concatenate([seen[h] for h, _ in cell.trims])}
    return jnp.concatenate([parts[g]() for g in s.groups]).astype(dtype)


def chip_matrix(chip: Chip, s: Settings) -> jax.Array:
    """The (M, N) matrix the chip implements with settings ``s``."""
    return s.grid.join(chip_tile_matrices(chip, s))


def chip_forward(chip: Chip, s: Settings, x: ArrayLike, detection: str = "coherent") -> jax.Array:
    """Field ``x`` (N,) or (N, B) through the chip; returns (M,) or (M, B).
    A batch of at least K fields, ``(N, B)`` or under ``jax.vmap`` over ``x``
    with shared settings, goes through the tiles' matrices (one scan on the
    identity, then a matrix product); fewer fields are propagated.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.complexfloating):
        x = x.astype(jax.dtypes.canonicalize_dtype(jnp.result_type(x.dtype, jnp.complex64)))
    z = fold_batches(lambda s, z: _tile_apply(chip, s, z))(s, tile_inputs(s, x))
    z = z * jnp.asarray(s.gain).reshape((-1,) + (1,) * (z.ndim - 1))
    y = accumulate(s, z)
    return jnp.abs(y) ** 2 if detection == "intensity" else y


def best_gain(target: ArrayLike, implemented_no_gain: ArrayLike) -> jax.Array:
    """Best real gain per tile: ``argmin_g ||A - g B||_F = Re tr(B^H A) / ||B||_F^2``."""
    num = jnp.real(jnp.einsum("...ij,...ij->...", jnp.conj(implemented_no_gain), target))
    den = jnp.sum(jnp.abs(implemented_no_gain) ** 2, axis=(-2, -1))
    return num / jnp.where(den > 0, den, 1.0)


# ---- heaters and drives -----------------------------------------------------------

def flatten_heaters(s: Settings) -> jax.Array:
    """(T, H) heater phases in the flat order of :func:`photocomp.hardware.chip.heater_groups`."""
    return jnp.concatenate([jnp.asarray(getattr(s, g)) for g in s.groups], axis=-1)


def unflatten_heaters(template: Settings, flat: jax.Array | np.ndarray, target: Target) -> Settings:
    """Settings with heater phases from ``flat`` (T, H) and gains from ``template`` (its circuit's groups)."""
    sl = heater_slices(target, template.circuit)
    return template.replace(**{g: flat[..., sl[g]] for g in template.groups})


def _crosstalk_apply(chip: Chip, own):
    """Crosstalk phase each heater receives: ``X @ own`` with the sparse X, own (..., H)."""
    contrib = own[..., chip.xt_cols] * chip.xt_weight
    return jnp.zeros_like(own).at[..., chip.xt_rows].add(contrib)


def realized_phases(chip: Chip, power_mw: ArrayLike) -> jax.Array:
    """Phases (rad) the heaters produce for powers ``power_mw`` (..., H)."""
    own = jnp.asarray(chip.efficiency) * jnp.pi * power_mw / chip.target.heater_p_pi_mw
    return jnp.asarray(chip.offset) + own + _crosstalk_apply(chip, own)


def drive_map(chip: Chip, phases: npt.ArrayLike, *, iterations: int = 30) -> np.ndarray:
    """Heater powers (mW) that make ``chip`` produce ``phases`` (..., H) (mod 2 pi).
    Solves ``own + X own = phases - offset (mod 2 pi)`` for the heaters' own
    phases ``own >= 0`` by fixed-point iteration (crosstalk pre-compensation;
    converges because every row of X sums to well below 1). A heater whose
    required phase would go negative takes the next 2 pi branch. Powers are
    ``own P_pi / (pi eta)``, capped at the target's drive limit.
    """
    t = chip.target
    two_pi = 2 * np.pi
    want = np.mod(np.asarray(phases, dtype=np.float64) - np.asarray(chip.offset), two_pi)
    rows, cols, w = (np.asarray(a) for a in (chip.xt_rows, chip.xt_cols, chip.xt_weight))
    flat = want.reshape(-1, want.shape[-1])
    own = flat.copy()
    for _ in range(iterations):
        xt = np.zeros_like(own)
        np.add.at(xt.T, rows, (own[:, cols] * w).T)  # crosstalk received, per heater
        own_new = np.mod(flat - xt, two_pi)
        # keep the branch closest to the previous iterate, never negative
        own_new = own_new + two_pi * np.round((own - own_new) / two_pi)
        own_new = np.where(own_new < 0, own_new + two_pi, own_new)
        done = np.max(np.abs(own_new - own)) < 1e-13
        own = own_new
        if done:
            break
    own = own.reshape(want.shape)
    power = own * t.heater_p_pi_mw / (np.pi * np.asarray(chip.efficiency))
    return np.minimum(power, t.drive_limit_p_pi * t.heater_p_pi_mw)


def nominal_drives(pm: PhaseMap, target: Target) -> np.ndarray:
    """Heater powers (mW), ``(n_tiles, n_heaters)``, of a phase map's ideal settings on the target's
    :func:`~photocomp.hardware.chip.nominal_chip` (crosstalk pre-compensated)."""
    with jax.enable_x64(True):
        flat = np.asarray(flatten_heaters(settings_from_program(pm)), dtype=np.float64)
        return drive_map(nominal_chip(target, pm.circuit), flat)
