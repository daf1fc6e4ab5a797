"""Fabricated chips: hidden component errors sampled from a target's statistics.

A :class:`Chip` is one sampled instance of a :class:`~photocomp.core.target.Target`
built for a program circuit (:data:`photocomp.core.ir.CIRCUITS`): the physical
core of an ``svd`` chip is a V mesh, an attenuator column, a U mesh and output
phase shifters; a ``unitary`` chip has one mesh and its output shifters. Every
component has

* coupler splitting-angle errors, one per coupler of the target's cell (two per
  MZI: ``coupler_in``, ``coupler_out``; a three-splitter MZI also
  ``coupler_mid``, kept in :attr:`Chip.cell_errors`), ``N(0, coupler_sigma_rad)``;
* insertion loss per MZI, ``N(mzi_loss_db, mzi_loss_sigma_db)`` clipped at 0,
  halved for the cells of Fldzhyan's layout (:func:`cell_loss_scale`)
  (waveguide crossings, a cell's own and a butterfly's planar routing, lose
  the target's nominal ``crossing_loss_db`` each on every chip:
  :func:`photocomp.hardware.chipsim.stage_coefficients`);
* a static phase offset per phase shifter, uniform on [0, 2 pi) as on real chips;
* a heater efficiency per phase shifter, ``N(1, heater_efficiency_sigma)``;
* thermal crosstalk between heaters, from their positions on the die (the
  networkx netlist view's layout coordinates times the target's pitches):
  heater i sees ``crosstalk * min(1, exp(-(d - d_nn) / d_nn))`` of heater
  j's phase for distances ``d <= 3 d_nn``, where ``d_nn = 2 mode_pitch_um``
  is the distance of adjacent MZIs in one column (which couple by exactly
  ``crosstalk``, 1 % by default).

Heaters are indexed in one flat vector per tile, in the order of
:func:`heater_groups`: V internal, V external, V output, attenuator, U
internal, U external, U output (a unitary chip: U internal, external, output),
then, for a cell with trim heaters (the three-splitter MZI), V trims and U
trims (trim-major: every cell's first trim, then every cell's second). A chip
of the symmetric cell (the Bell mesh, :mod:`photocomp.core.bell`) has lower-arm
heaters (``v_low``, ``u_low``) where the MZI has external ones, and its input
layers and edge shifters (``v_in``, ``v_edge``, ``u_in``, ``u_edge``) last.

A chip of another cell draws the same coupler_in / coupler_out errors, losses
and (for the heaters both have) offsets as the MZI chip of its seed would, so
architectures compare on the same fabrication; a cell's other errors are drawn
after them.

A crossbar chip (:mod:`photocomp.core.crossbar`) has K^2 weight MZIs with the
errors above (coupler errors bound a cell's extinction), the splitting errors
of its 2K splitter trees (``N(0, coupler_sigma_rad)`` each, :data:`TREE_ERRORS`),
and its heaters on a grid (:func:`_crossbar_positions`).

The unitary chip of a seed is the svd chip of that seed without its V mesh and
attenuators: its U mesh has the same couplers, losses, offsets and
efficiencies (its crosstalk follows from its own, shorter die), so the two
circuits compare on the same components.

The chip is a pytree (error arrays are data; target, seed and layout are
static), so chip simulations jit, vmap and differentiate. Jitted functions
take a chip as an argument in its :meth:`Chip.unseeded` form, so one
compiled program serves every chip of a target and circuit.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from photocomp.core.bell import edge_count, sweep_structure
from photocomp.core.cell import MZI, Cell, get_cell
from photocomp.core.errors import InvalidInputError, InvalidTypeError, MismatchError
from photocomp.core.graph import circuit_graph
from photocomp.core.ir import PhaseMap, TileGrid, circuit_stages
from photocomp.core.layout import MeshLayout
from photocomp.core.phases import MeshPhases
from photocomp.core.target import Target, get_target
from photocomp.core.validate import check_int

__all__ = ["Chip", "fabricate", "nominal_chip", "cell_loss_scale", "HEATER_GROUPS", "TRIM_GROUPS", "BELL_GROUPS", "TREE_ERRORS",
           "heater_groups",
           "group_size", "heater_positions"]

HEATER_GROUPS = ("v_int", "v_ext", "v_out", "att", "u_int", "u_ext", "u_out")
"""Heater groups of an ``svd`` chip, in flat order (:func:`heater_groups` for any circuit)."""
_GROUPS = {"svd": HEATER_GROUPS, "unitary": ("u_int", "u_ext", "u_out"), "crossbar": ("u_int", "u_ext", "u_out")}
TREE_ERRORS = ("fan_out", "fan_in")
"""A crossbar chip's splitter-tree errors, kept in ``cell_errors["u"]``: ``fan_out`` ``(K (K - 1),)`` the splitting
angles of input ``j``'s tree at ``[j (K - 1):(j + 1) (K - 1)]``, ``fan_in`` likewise per output
(:mod:`photocomp.core.crossbar`)."""
TRIM_GROUPS = {"v": "v_trim", "u": "u_trim"}
"""The trim heater group of each mesh stage (cells with trims only)."""
BELL_GROUPS = {"v": ("v_in", "v_edge"), "u": ("u_in", "u_edge")}
"""The input-layer and edge-shifter groups of each mesh stage of a Bell chip (:mod:`photocomp.core.bell`)."""


def heater_groups(circuit: str = "svd", cell: str | Cell = MZI) -> tuple[str, ...]:
    """The heater groups of a circuit's chip built of ``cell``, in flat order (trim groups last).

    A chip of the symmetric (``"sweep"``) cell has, per mesh stage, ``_int``
    (upper arm) and ``_low`` (lower arm) in place of the MZI's ``_int`` and
    ``_ext``, and its input layers and edge shifters (``_in``, ``_edge``) last.
    A chip of a fixed-splitting cell (Fldzhyan's) has no ``_int`` groups.
    """
    stages = circuit_stages(circuit)  # a typed error for an unknown circuit
    c = get_cell(cell)
    if c.programming == "sweep":
        base = tuple(g.replace("_ext", "_low") for g in _GROUPS[circuit])
        return base + tuple(g for s in stages if s in BELL_GROUPS for g in BELL_GROUPS[s])
    trims = tuple(TRIM_GROUPS[s] for s in stages if s in TRIM_GROUPS) if c.trims else ()
    if c.programming == "fixed":  # a static coupler's cell has no internal heater
        return tuple(g for g in _GROUPS[circuit] if not g.endswith("_int"))
    return _GROUPS[circuit] + trims


def group_size(group: str, lay: MeshLayout) -> int:
    """Heaters per tile in ``group``: one per cell (internal, external, lower arm), per mode (outputs,
    attenuators, input layers), per cell and trim (trim groups), or per edge shifter (edge groups)."""
    if group in TRIM_GROUPS.values():
        return lay.n_mzi * len(lay.cell.trims)
    if group.endswith("_edge"):
        return edge_count(lay)
    return lay.n_mzi if group.endswith(("_int", "_ext", "_low")) else lay.n_modes


def cell_loss_scale(cell: str | Cell) -> float:
    """A mesh cell's insertion loss in units of the target's ``mzi_loss_db``: 1, but 1/2 for a fixed-splitting
    cell (Fldzhyan's: one coupler and one shifter, half an MZI's components)."""
    return 0.5 if get_cell(cell).programming == "fixed" else 1.0


def _stage_loss_scale(cell: Cell, stage: str) -> float:
    """:func:`cell_loss_scale` for the mesh stages' cells; 1 for the attenuators (MZIs on every chip)."""
    return cell_loss_scale(cell) if stage in ("v", "u") else 1.0


@dataclasses.dataclass(frozen=True)
class Chip:
    """A fabricated chip (see the module docstring).
    Attributes:
      target: the target it was sampled from (static).
      seed: the sampling seed (static).
      coupler_in, coupler_out: splitting-angle errors (rad) of the first and
        second coupler of every MZI, dict of arrays keyed by stage
        (``"v"``, ``"att"``, ``"u"``; a unitary or crossbar chip only ``"u"``:
        a crossbar's are its weight cells').
      loss_db: insertion loss (dB) of every MZI, same keys.
      cell_errors: splitting-angle errors of the cell's other couplers,
        ``{stage: {coupler: array}}`` for the mesh stages (empty for the MZI);
        a crossbar chip's splitter trees (:data:`TREE_ERRORS`).
      offset: static phase offset (rad) of every heater, ``(H,)`` flat order.
      efficiency: relative heater efficiency, ``(H,)``.
      xt_rows, xt_cols, xt_weight: crosstalk as a sparse matrix: heater
        ``xt_rows[k]`` sees ``xt_weight[k]`` of heater ``xt_cols[k]``'s own phase.
    """
    target: Target
    seed: int
    coupler_in: dict
    coupler_out: dict
    loss_db: dict
    offset: np.ndarray
    efficiency: np.ndarray
    xt_rows: np.ndarray
    xt_cols: np.ndarray
    xt_weight: np.ndarray
    circuit: str = "svd"
    cell_errors: dict = dataclasses.field(default_factory=dict)

    @property
    def layout(self) -> MeshLayout:
        return self.target.layout

    @property
    def n_heaters(self) -> int:
        return int(np.shape(self.offset)[0])

    def group_slices(self) -> dict[str, slice]:
        """``{group: slice}`` into the flat heater vector."""
        return heater_slices(self.target, self.circuit)

    def crosstalk_dense(self) -> np.ndarray:
        """Dense (H, H) crosstalk matrix (for small chips and tests)."""
        x = np.zeros((self.n_heaters, self.n_heaters))
        np.add.at(x, (np.asarray(self.xt_rows), np.asarray(self.xt_cols)), np.asarray(self.xt_weight))
        return x

    def check_target(self, target: Target, what: str = "program", circuit: str | None = None) -> None:
        """Raise :class:`MismatchError` unless ``target`` (and ``circuit``, when given) are this chip's."""
        if target != self.target:
            raise MismatchError(
                f"chip must be fabricated from the {what}'s target {target.name!r}; "
                f"got a chip of {self.target.name!r}"
            )
        if circuit is not None and circuit != self.circuit:
            raise MismatchError(
                f"chip must be fabricated for the {what}'s {circuit} circuit "
                f"(photocomp.fabricate({target.name!r}, seed, circuit={circuit!r})); got a chip of the "
                f"{self.circuit} circuit"
            )

    def unseeded(self) -> Chip:
        """This chip with ``seed`` -1: the form in which jitted functions take chips as arguments.

        ``seed`` is static in the pytree (it labels the chip, it is no
        array), so two chips of one target and circuit differ in their
        pytree structure only by it. Passed unseeded, every such chip has the
        same structure and array shapes, and a function jitted over chips
        (calibration's evaluation and optimisation steps, the twin fit)
        compiles once and serves them all; nothing traced reads the seed.
        """
        return self if self.seed == -1 else dataclasses.replace(self, seed=-1)

    def __repr__(self) -> str:
        circ = "" if self.circuit == "svd" else f", circuit={self.circuit}"
        return f"Chip({self.target.name}{circ}, seed={self.seed}, {self.n_heaters} heaters, {len(np.asarray(self.xt_rows))} crosstalk links)"


jax.tree_util.register_dataclass(
    Chip,
    data_fields=["coupler_in", "coupler_out", "loss_db", "offset", "efficiency", "xt_rows", "xt_cols", "xt_weight",
                 "cell_errors"],
    meta_fields=["target", "seed", "circuit"],
)


def heater_slices(target: Target, circuit: str | None = None) -> dict[str, slice]:
    """``{group: slice}`` into a ``circuit`` chip's flat heater vector (default circuit: the target's first)."""
    lay = target.layout
    circuit = target.circuits[0] if circuit is None else circuit
    out: dict[str, slice] = {}
    start = 0
    for g in heater_groups(circuit, lay.cell):
        size = group_size(g, lay)
        out[g] = slice(start, start + size)
        start += size
    return out


def heater_positions(target: Target, circuit: str | None = None) -> np.ndarray:
    """(H, 2) heater positions (um) of a ``circuit`` chip in flat heater order, from the circuit graph's layout.

    The internal heater of an MZI sits at its node's (x, y); the external
    heater half a column earlier on the upper input arm; a trim heater a
    quarter column later on the upper arm (several trims: further quarter
    columns); output shifters and attenuators at their nodes. A crossbar: :func:`_crossbar_positions`. A symmetric
    (Bell) cell's arm heaters sit a quarter mode pitch above and below its
    node; its mesh's input layer half a column before the first column, its
    edge shifters on their modes in their column.
    """
    lay = target.layout
    k, m = target.size, lay.n_mzi
    if lay.crossbar:
        return _crossbar_positions(target)
    circuit = target.circuits[0] if circuit is None else circuit
    zeros = MeshPhases(lay, np.zeros((1, m)), np.zeros((1, m)), np.zeros((1, k)))
    grid = TileGrid(k, k, k)
    if circuit_stages(circuit) == ("u",):
        pm = PhaseMap.unitary(grid, zeros, np.ones(1))
    else:
        pm = PhaseMap(grid, zeros, np.zeros((1, k)), zeros, np.ones(1))
    g = circuit_graph(pm)
    xy = lambda node: (g.nodes[node]["x"], g.nodes[node]["y"])  # noqa: E731
    points = []
    trims = []
    sweep = lay.cell.programming == "sweep"
    for stage in ("V", "U") if pm.v is not None else ("U",):
        mz = [xy(f"{stage}:{c}:{n}") for n, c in zip(lay.pairs, lay.columns)]
        if sweep:  # symmetric cell: a heater on each arm, a quarter mode pitch either side of the node
            points += [(x, y - 0.25) for x, y in mz] + [(x, y + 0.25) for x, y in mz]
        else:
            if "internal" in lay.cell.heaters:  # a fixed-splitting cell has none
                points += mz  # internal heaters
            points += [(x - 0.5, y - 0.5) for x, y in mz]  # external heaters, upper input arm
        points += [xy(f"{stage}out:{q}") for q in range(k)]
        if stage == "V":
            points += [xy(f"S:{q}") for q in range(k)]
        for j in range(len(lay.cell.trims)):
            trims += [(x + 0.25 * (j + 1), y - 0.5) for x, y in mz]
        if sweep:  # input layer half a column before the first column; edge shifters beside their column
            x0 = xy(f"{stage}:0:0")[0]
            trims += [(x0 - 0.5, float(q)) for q in range(k)]
            trims += [(x0 + c, float(q)) for c, q in sweep_structure(lay).edges]
    pos = np.asarray(points + trims, dtype=np.float64)
    return pos * np.array([target.column_pitch_um, target.mode_pitch_um])


def _crossbar_positions(target: Target) -> np.ndarray:
    """(H, 2) heater positions (um) of a crossbar chip: weight cell ``(i, j)`` in column ``j``, two mode
    pitches per row ``i`` (an MZI is two waveguides wide), its internal heater at ``(j, 2 i)``, its input
    shifter half a column earlier on the upper arm; output ``i``'s phase reference a column after the array."""
    k = target.size
    i, j = np.divmod(np.arange(k * k), k)
    cells = np.stack([j, 2.0 * i], axis=1).astype(np.float64)
    outputs = np.stack([np.full(k, float(k)), 2.0 * np.arange(k)], axis=1)
    pos = np.concatenate([cells, cells - 0.5, outputs])
    return pos * np.array([target.column_pitch_um, target.mode_pitch_um])


def crosstalk_matrix(target: Target, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse crosstalk from heater positions by spatial hashing (cells of the cut-off size)."""
    n = len(pos)
    e = np.zeros(0, np.int32)
    if target.crosstalk == 0 or n < 2:
        return e, e, np.zeros(0)
    d_nn = 2.0 * target.mode_pitch_um  # adjacent MZIs of one column
    cutoff = 3.0 * d_nn
    cell = np.floor(pos / cutoff).astype(np.int64)
    members: dict[tuple, list[int]] = {}
    for i, key in enumerate(map(tuple, cell)):
        members.setdefault(key, []).append(i)
    buckets = {k: np.asarray(v) for k, v in members.items()}
    row_parts: list[np.ndarray] = []
    col_parts: list[np.ndarray] = []
    for (cx, cy), idx in buckets.items():
        near = [buckets[(cx + dx, cy + dy)] for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (cx + dx, cy + dy) in buckets]
        other = np.concatenate(near)
        d = np.linalg.norm(pos[idx, None, :] - pos[None, other, :], axis=-1)
        r, c = np.nonzero((d > 0) & (d <= cutoff))
        row_parts.append(idx[r])
        col_parts.append(other[c])
    rows = np.concatenate(row_parts)
    cols = np.concatenate(col_parts)
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    dist = np.linalg.norm(pos[rows] - pos[cols], axis=-1)
    weight = target.crosstalk * np.minimum(1.0, np.exp(-(dist - d_nn) / d_nn))
    return rows.astype(np.int32), cols.astype(np.int32), weight


def _check_circuit(t: Target, circuit) -> str:
    """``circuit`` (default: the target's first, :attr:`~photocomp.core.target.Target.circuits`) if ``t`` runs it,
    else a typed error."""
    if circuit is None:
        return t.circuits[0]
    circuit_stages(circuit)  # a typed error for an unknown circuit
    if circuit not in t.circuits:
        raise InvalidInputError(f"circuit must be one of {t.circuits} on target {t.name!r}; got {circuit!r}")
    return circuit


def _fabricate_crossbar(t: Target, seed: int) -> Chip:
    """A crossbar chip (:mod:`photocomp.core.crossbar`): its weight MZIs' couplers, losses, heaters, and the
    splitting errors of its fan-out and fan-in trees (:data:`TREE_ERRORS`)."""
    rng = np.random.default_rng([seed, t.size, 0x5EED])
    k = t.size
    m = k * k
    c_in = {"u": rng.normal(0.0, t.coupler_sigma_rad, m)}
    c_out = {"u": rng.normal(0.0, t.coupler_sigma_rad, m)}
    loss = {"u": np.clip(rng.normal(t.mzi_loss_db, t.mzi_loss_sigma_db, m), 0.0, None)}
    n = max(sl.stop for sl in heater_slices(t, "crossbar").values())
    offset = rng.uniform(0.0, 2 * np.pi, n)
    eff = np.clip(rng.normal(1.0, t.heater_efficiency_sigma, n), 0.5, 1.5)
    trees = {name: rng.normal(0.0, t.coupler_sigma_rad, k * (k - 1)) for name in TREE_ERRORS}
    rows, cols, w = crosstalk_matrix(t, heater_positions(t, "crossbar"))
    return Chip(t, seed, c_in, c_out, loss, offset, eff, rows, cols, w, "crossbar", {"u": trees})


def fabricate(target: str | Target = "pace-64", seed: int = 0, circuit: str | None = None) -> Chip:
    """Sample a chip from a target's fabrication statistics.

    Args:
      target: a target name or :class:`~photocomp.core.target.Target`.
      seed: explicit seed (int >= 0); the same seed gives the same chip.
      circuit: the program circuit the chip is built for: ``"svd"`` (V mesh,
        attenuators, U mesh) or ``"unitary"`` (one mesh; the same components
        as the svd chip's U mesh of this seed) on a mesh target, ``"crossbar"``
        on a crossbar; default the target's first (``"svd"`` on a mesh).

    Example:
      >>> import photocomp as pc
      >>> chip = pc.fabricate("clements-4", seed=7)
      >>> chip.n_heaters
      36
      >>> pc.fabricate("clements-4", seed=7, circuit="unitary").n_heaters
      16
    """
    t = get_target(target)
    seed = check_int(seed, "seed", low=0)
    circuit = _check_circuit(t, circuit)
    if circuit == "crossbar":
        return _fabricate_crossbar(t, seed)
    stages = circuit_stages(circuit)
    rng = np.random.default_rng([seed, t.size, 0x5EED])
    lay = t.layout
    m, k = lay.n_mzi, t.size
    sizes = {"v": m, "att": k, "u": m}
    c_in = {s: rng.normal(0.0, t.coupler_sigma_rad, n) for s, n in sizes.items()}
    c_out = {s: rng.normal(0.0, t.coupler_sigma_rad, n) for s, n in sizes.items()}
    loss = {s: np.clip(rng.normal(t.mzi_loss_db, t.mzi_loss_sigma_db, n), 0.0, None) for s, n in sizes.items()}
    loss = {s: v * _stage_loss_scale(lay.cell, s) for s, v in loss.items()}
    every = heater_slices(t)
    n_mzi_heaters = every["u_out"].stop  # the heaters an MZI chip has, drawn first
    n_heaters = max(sl.stop for sl in every.values())
    offset = rng.uniform(0.0, 2 * np.pi, n_mzi_heaters)
    eff = np.clip(rng.normal(1.0, t.heater_efficiency_sigma, n_mzi_heaters), 0.5, 1.5)
    extra = [c for c in lay.cell.couplers if c not in ("coupler_in", "coupler_out")]
    cell_errors = {s: {c: rng.normal(0.0, t.coupler_sigma_rad, m) for c in extra} for s in ("v", "u")}
    more = n_heaters - n_mzi_heaters
    offset = np.concatenate([offset, rng.uniform(0.0, 2 * np.pi, more)])
    eff = np.concatenate([eff, np.clip(rng.normal(1.0, t.heater_efficiency_sigma, more), 0.5, 1.5)])
    # the svd chip is sampled in full; a smaller circuit keeps its stages' components
    keep = np.concatenate([np.arange(every[g].start, every[g].stop) for g in heater_groups(circuit, lay.cell)])
    pick = lambda d: {s: d[s] for s in stages if s in d}  # noqa: E731
    rows, cols, w = crosstalk_matrix(t, heater_positions(t, circuit))
    return Chip(t, seed, pick(c_in), pick(c_out), pick(loss), offset[keep], eff[keep], rows, cols, w, circuit,
                pick(cell_errors))


@functools.lru_cache(maxsize=8)
def nominal_chip(target: Target, circuit: str | None = None) -> Chip:
    """The target's ``circuit`` chip without fabrication errors: no coupler errors or offsets, unit heater
    efficiency, nominal losses, the layout's crosstalk (what cost reports drive)."""
    chip = fabricate(target, 0, circuit=circuit)
    circuit = chip.circuit
    zeros = {k: np.zeros_like(np.asarray(v)) for k, v in chip.coupler_in.items()}
    loss = {k: np.full_like(np.asarray(v), target.mzi_loss_db * _stage_loss_scale(target.layout.cell, k))
            for k, v in chip.loss_db.items()}
    cell = {s: {c: np.zeros_like(np.asarray(v)) for c, v in d.items()} for s, d in chip.cell_errors.items()}
    return dataclasses.replace(chip, coupler_in=zeros, coupler_out=dict(zeros), loss_db=loss, cell_errors=cell,
                               offset=np.zeros_like(np.asarray(chip.offset)),
                               efficiency=np.ones_like(np.asarray(chip.efficiency)))


def as_chip(chip: object, name: str = "chip") -> Chip:
    if not isinstance(chip, Chip):
        raise InvalidTypeError(f"{name} must be a photocomp.Chip (from photocomp.fabricate); got {type(chip).__name__}")
    return chip
