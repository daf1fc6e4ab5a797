"""The Bell & Walmsley compact mesh: a Clements mesh of symmetric MZIs and its phase sweep.

Bell & Walmsley, "Further compactifying linear optical unitaries", APL
Photonics 6, 070804 (2021). The cell (:data:`photocomp.core.cell.BELL`) is a
symmetric MZI, a heater on *both* arms between two 50:50 couplers and no
external heater. With ``B = [[1, i], [i, 1]] / sqrt(2)``::

    B diag(e^{ia}, e^{ib}) B = i e^{i sigma} [[sin d, cos d], [cos d, -sin d]]
                             = i e^{i sigma} R(theta) Z

with ``sigma = (a + b)/2``, ``d = (a - b)/2 = pi/2 - theta``, the real
rotation ``R(theta) = [[cos, -sin], [sin, cos]]`` and ``Z = diag(1, -1)``. A
cell is a real rotation, a phase common to its pair (which commutes with it)
and a fixed pi on its lower input. The chip adds an *input phase layer* (one
shifter per mode before the first column), *edge shifters* (one on each mode
left unpaired by an odd column, beside that column's cells) and the *output
phase layer*: ``depth + 2`` phase-shifter layers (``N + 2`` for ``N >= 3``)
instead of the MZI mesh's ``2 depth + 1``.

The mathematical mesh stays the Clements one (:mod:`photocomp.core.convention`),
``U = D O_{D-1} Phi_{D-1} ... O_0 Phi_0``, ``O_c`` real block rotations and
``Phi_c`` diagonal phases (each cell's phi on its upper input); only the
programming differs. Writing ``T(theta, phi) = (R Z) diag(e^{i phi}, e^{i pi})``,
the phases before column ``c`` are a vector ``x_c`` (column ``c``'s phis, a pi
on every lower input, and what earlier columns pass on). :func:`bell_from_clements`
sweeps from input to output: ``x_0`` is the input layer; for ``c >= 1``,
``x_c = a + b`` with ``a`` constant on every pair of column ``c - 1`` (those
cells' common phase ``sigma``; on its unpaired modes the edge shifters) and
``b`` constant on every pair of column ``c`` (it commutes through column ``c``
and joins ``x_{c+1}``; unpaired modes pass it on). Along the chain of modes
the pairs of the two columns alternate, so ``a`` and ``b`` follow from
alternating partial sums of ``x_c``, up to one free value at the chain's
ends, which is set so that no even column needs an edge shifter and the
edge shifter of mode 0 stays at 0 (with both edges of an odd column on the
chain's ends, the mode ``N - 1`` one takes the remainder). What is left
after the last column, plus ``D``, is the output layer. Every step is an
identity, so the Bell phases reproduce ``U`` to rounding;
:func:`clements_from_bell` is the inverse sweep (the screen push of
:mod:`photocomp.sim.physical` for this cell). Any cell's input and output
phases are just more phases for the sweep, so :func:`bell_from_clements`
also takes every cell's actual form (``cells=``: a cell with coupler errors
is ``diag(e^{i alpha}, e^{i beta}) R(theta') diag(e^{i gamma}, e^{i eps})``
up to its arms' common phase): local correction sweeps with the corrected
cells, and the thermal model sweeps the phases of the waveguide sections
between the columns onto the heaters (``wrap=False``, linear).

Both sweeps are written once for an array module ``xp`` (``numpy``, the
float64 reference, or ``jax.numpy``, which the compiler and the chip
simulation trace), with static index arrays from :func:`sweep_structure`;
:func:`bell_unitary` is the float64 reference of a Bell chip, a plain loop
over every cell's :meth:`~photocomp.core.cell.Cell.transfer` and the layers.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from collections.abc import Mapping

import numpy as np
from jax.typing import ArrayLike

from photocomp.core.cell import BELL
from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.layout import MeshLayout
from photocomp.core.layout import layout as mesh_layout

__all__ = ["BELL_GROUPS", "CELL_FORM", "SweepStructure", "sweep_structure", "phase_layers", "edge_count", "bell_from_clements",
           "clements_from_bell", "bell_unitary", "fold_targets"]

BELL_GROUPS = ("internal", "lower", "input", "edge", "output")
"""The heater groups of one Bell mesh: upper-arm and lower-arm heater of every cell ``(n_mzi,)``, the input
layer ``(N,)``, the edge shifters ``(E,)`` (:func:`edge_count`) and the output layer ``(N,)``."""

_PI = math.pi


@dataclasses.dataclass(frozen=True, eq=False)
class SweepStructure:
    """Static index arrays of the Bell sweep of one Clements layout (see :func:`sweep_structure`).

    Attributes:
      n, depth: modes and columns.
      col_slices: ``(start, stop)`` of every column's cells in layout order.
      edges: ``(column, mode)`` of every edge shifter, in flat order.
      edge_slot: per column ``(N,)``: the edge shifter on each mode beside
        the column (its index in ``edges``) or ``E`` for none.
      node_of_cell: per column ``c >= 1``: the chain node of every cell of
        column ``c - 1`` (``n + 1`` for the pair ``(n, n + 1)``).
      node_of_mode: per column ``c >= 1``: the chain node of each mode's
        block in column ``c`` (what it carries on).
      edge_nodes: per column ``c >= 1``: the chain nodes of column ``c - 1``'s
        edge shifters, in their flat order.
      fix_end: per column ``c >= 1``: True where the chain's last node is
        set to 0 (an unpaired mode of an even column, which has no shifter),
        else its first node is.
      common_index: per column ``(N,)``: where each mode's phase after the
        column comes from in ``concat(the cells' common phases, the modes'
        phases + edges)`` (the inverse sweep).
      pair_index: per column ``(N,)``: each mode's index in ``concat(values
        of the cells' upper modes, of their lower modes, [0])`` (unpaired: 0).
    """
    n: int
    depth: int
    col_slices: tuple
    edges: tuple
    edge_slot: tuple
    node_of_cell: tuple
    node_of_mode: tuple
    edge_nodes: tuple
    fix_end: tuple
    common_index: tuple
    pair_index: tuple


def _check_layout(lay: object) -> MeshLayout:
    if not isinstance(lay, MeshLayout):
        raise InvalidTypeError(f"lay must be a photocomp MeshLayout; got {type(lay).__name__}")
    if lay.kind != "clements":
        raise InvalidInputError(f"the Bell sweep needs a Clements (brick) layout; got a {lay.kind!r} layout")
    return lay


@functools.lru_cache(maxsize=64)
def _structure(n: int) -> SweepStructure:
    lay = mesh_layout("clements", n)
    pairs, cols = lay.pair_array, lay.column_array
    depth = lay.depth
    col_slices, cols_pairs = [], []
    for c in range(depth):
        idx = np.flatnonzero(cols == c)
        col_slices.append((int(idx[0]), int(idx[-1]) + 1))
        cols_pairs.append(pairs[idx])
    singles = [np.setdiff1d(np.arange(n), np.concatenate([p, p + 1])) for p in cols_pairs]
    edges = tuple((c, int(m)) for c in range(depth) if c % 2 == 1 for m in singles[c])
    e_count = len(edges)
    edge_slot = []
    for c in range(depth):
        slot = np.full(n, e_count, dtype=np.int64)
        for j, (ec, m) in enumerate(edges):
            if ec == c:
                slot[m] = j
        edge_slot.append(slot)
    empty = np.zeros(0, dtype=np.int64)  # column 0 has no boundary before it
    node_of_cell: list[np.ndarray] = [empty]
    node_of_mode: list[np.ndarray] = [empty]
    edge_nodes: list[np.ndarray] = [empty]
    fix_end = [False]
    for c in range(1, depth):
        prev, cur = cols_pairs[c - 1], cols_pairs[c]
        node_of_cell.append(prev + 1)
        nodes = np.empty(n, dtype=np.int64)
        for m in range(n):
            if m in cur:
                nodes[m] = m + 1
            elif m - 1 in cur:
                nodes[m] = m
            else:  # unpaired in column c: a chain end
                nodes[m] = 0 if m == 0 else n
        node_of_mode.append(nodes)
        edge_nodes.append(np.asarray([0 if m == 0 else n for ec, m in edges if ec == c - 1], dtype=np.int64))
        # the chain's last node is column c - 1's unpaired mode N - 1 in an even column: no shifter, so 0
        fix_end.append(bool((c - 1) % 2 == 0 and (n - 1) in singles[c - 1]))
    common_index, pair_index = [], []
    for c in range(depth):
        p = cols_pairs[c]
        ci = len(p) + np.arange(n, dtype=np.int64)
        ci[p] = np.arange(len(p))
        ci[p + 1] = np.arange(len(p))
        common_index.append(ci)
        oi = np.full(n, 2 * len(p), dtype=np.int64)
        oi[p] = np.arange(len(p))
        oi[p + 1] = len(p) + np.arange(len(p))
        pair_index.append(oi)
    return SweepStructure(n, depth, tuple(col_slices), edges, tuple(edge_slot),
                          tuple(node_of_cell), tuple(node_of_mode), tuple(edge_nodes), tuple(fix_end),
                          tuple(common_index), tuple(pair_index))


def sweep_structure(lay: MeshLayout) -> SweepStructure:
    """The static index arrays of the Bell sweep of a Clements layout (cached per size)."""
    return _structure(_check_layout(lay).n_modes)


def edge_count(lay: MeshLayout) -> int:
    """Edge shifters of a Bell mesh: one per mode left unpaired by an odd column (``N`` for even ``N``,
    ``(N - 1)/2`` for odd ``N``, 0 for ``N = 2``, whose mesh is one column)."""
    return len(sweep_structure(lay).edges)


def phase_layers(lay: MeshLayout) -> int:
    """Phase-shifter layers light crosses in a Bell mesh: input, one per column, output (``depth + 2``)."""
    return sweep_structure(lay).depth + 2


def _wrap(xp, x):
    return xp.mod(x, 2 * _PI)


CELL_FORM = ("delta", "alpha", "beta", "gamma", "eps")
"""The keys of a cell form (:func:`bell_from_clements`)."""


def bell_from_clements(lay: MeshLayout, theta: ArrayLike, phi: ArrayLike, out_phase: ArrayLike,
                       xp: types.ModuleType = np, *, cells: Mapping[str, ArrayLike] | None = None,
                       wrap: bool = True) -> dict:
    """Bell heater phases (rad, wrapped to [0, 2 pi)) that realise a Clements mesh exactly.

    Args:
      lay: a Clements layout (any cell; the mathematical mesh is the cell-free one).
      theta, phi: ``batch + (n_mzi,)`` mathematical settings (rad).
      out_phase: ``batch + (N,)`` mathematical output screen (rad).
      xp: ``numpy`` (the float64 reference) or ``jax.numpy``.
      cells: the form of every cell on the chip, for cells that are not the
        ideal one (local correction): with the arm difference ``delta =
        upper - lower`` that sets its splitting and both arms' common phase
        at 0, the cell is ``diag(e^{i alpha}, e^{i beta}) R(theta')
        diag(e^{i gamma}, e^{i eps})`` (times a loss), and the sweep realises
        the mesh with those ``theta'``. ``{key: batch + (n_mzi,)}`` for the
        keys of :data:`CELL_FORM`. Default: the ideal cell, ``delta = pi -
        2 theta``, ``alpha = beta = pi/2``, ``gamma = 0``, ``eps = pi``.
      wrap: wrap the phases to [0, 2 pi) (default); False keeps the sweep
        linear (small phase changes stay small, as the thermal model needs).

    Returns:
      ``{"internal", "lower": batch + (n_mzi,), "input", "output": batch + (N,),
      "edge": batch + (E,)}`` (:data:`BELL_GROUPS`).
    """
    st = sweep_structure(lay)
    th, ph, out = xp.asarray(theta), xp.asarray(phi), xp.asarray(out_phase)
    n = st.n
    batch = tuple(out.shape[:-1])
    if st.depth == 0:
        empty = xp.zeros(batch + (0,), dtype=out.dtype)
        return {"internal": empty, "lower": empty, "input": xp.zeros_like(out), "edge": empty,
                "output": _wrap(xp, out) if wrap else out}
    if cells is None:
        form = {"delta": _PI - 2 * th, "alpha": _PI / 2, "beta": _PI / 2, "gamma": 0.0, "eps": _PI}
    else:
        missing = sorted(set(CELL_FORM) - set(cells)) if isinstance(cells, Mapping) else list(CELL_FORM)
        if missing:
            raise InvalidInputError(f"cells must be a mapping with the keys {list(CELL_FORM)}; missing {missing}")
        form = {k: xp.asarray(cells[k]) for k in CELL_FORM}
    form = {k: xp.broadcast_to(xp.asarray(v, dtype=out.dtype), batch + (lay.n_mzi,)) for k, v in form.items()}
    zero = xp.zeros(batch + (1,), dtype=out.dtype)

    def column_in(c):
        """Phases each mode needs before column c: phi - gamma on upper inputs, -eps on lower ones."""
        s0, s1 = st.col_slices[c]
        parts = [ph[..., s0:s1] - form["gamma"][..., s0:s1], -form["eps"][..., s0:s1], zero]
        return xp.concatenate(parts, axis=-1)[..., st.pair_index[c]]

    def column_out(c):
        """What column c's cells leave on their outputs: -alpha, -beta (0 on unpaired modes)."""
        s0, s1 = st.col_slices[c]
        parts = [-form["alpha"][..., s0:s1], -form["beta"][..., s0:s1], zero]
        return xp.concatenate(parts, axis=-1)[..., st.pair_index[c]]

    k = np.arange(1, n + 1)
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)  # (-1)^m
    alt_v = np.where(k % 2 == 1, 1.0, -1.0)  # (-1)^(k+1)
    alt_t = np.where(np.arange(n + 1) % 2 == 0, 1.0, -1.0)  # (-1)^k
    inp = column_in(0)
    passed = column_out(0)  # before column 1: what column 0 leaves (and, later, what a split passes on)
    sigmas, edge_parts = [], []
    for c in range(1, st.depth):
        x = column_in(c) + passed
        # chain nodes v_0 .. v_N with v_m + v_{m+1} = x_m, v_0 = 0: alternating partial sums
        v = xp.concatenate([zero, alt_v * xp.cumsum(sign * x, axis=-1)], axis=-1)
        if st.fix_end[c]:  # move the free value so that v_N = 0 instead
            v = v - (alt_t[n] * v[..., n:n + 1]) * alt_t
        sigmas.append(v[..., st.node_of_cell[c]])
        edge_parts.append(v[..., st.edge_nodes[c]])
        passed = v[..., st.node_of_mode[c]] + column_out(c)
    s0, s1 = st.col_slices[-1]
    sigmas.append(xp.zeros(batch + (s1 - s0,), dtype=out.dtype))
    # the last column's edge shifters stay at 0: the output layer takes what reaches it
    edge_parts.append(xp.zeros(batch + (sum(ec == st.depth - 1 for ec, _ in st.edges),), dtype=out.dtype))
    sigma = xp.concatenate(sigmas, axis=-1)
    half = form["delta"] / 2
    edge = xp.concatenate(edge_parts, axis=-1)
    fold = (lambda v: _wrap(xp, v)) if wrap else (lambda v: v)  # noqa: E731
    return {"internal": fold(sigma + half), "lower": fold(sigma - half), "input": fold(inp), "edge": fold(edge),
            "output": fold(out + passed)}


def clements_from_bell(lay: MeshLayout, phases: Mapping[str, ArrayLike],
                       xp: types.ModuleType = np) -> tuple:
    """Inverse of :func:`bell_from_clements`: mathematical ``(theta, phi, out_phase)`` of Bell phases.

    ``theta = pi/2 - (internal - lower)/2`` is returned unwrapped (as
    :func:`photocomp.sim.physical.mesh_from_physical` does); ``phi`` and the
    output phases are wrapped to [0, 2 pi). The mesh they give equals the
    Bell mesh's matrix on an ideal chip.
    """
    st = sweep_structure(lay)
    missing = sorted(set(BELL_GROUPS) - set(phases)) if isinstance(phases, Mapping) else list(BELL_GROUPS)
    if missing:
        raise InvalidInputError(f"phases must be a mapping with the keys {list(BELL_GROUPS)}; missing {missing}")
    a, b = xp.asarray(phases["internal"]), xp.asarray(phases["lower"])
    x = xp.asarray(phases["input"])
    edge, output = xp.asarray(phases["edge"]), xp.asarray(phases["output"])
    theta = _PI / 2 - (a - b) / 2
    sigma = (a + b) / 2
    batch = tuple(x.shape[:-1])
    edge0 = xp.concatenate([edge, xp.zeros(batch + (1,), dtype=edge.dtype)], axis=-1)
    phis = []
    for c in range(st.depth):
        s0, s1 = st.col_slices[c]
        pairs = np.asarray(lay.pairs[s0:s1])
        up, low = x[..., pairs], x[..., pairs + 1]
        phis.append(up - low - _PI)
        common = low + _PI + sigma[..., s0:s1] + _PI / 2
        passed = x + edge0[..., st.edge_slot[c]]
        x = _wrap(xp, xp.concatenate([common, passed], axis=-1)[..., st.common_index[c]])
    phi = xp.concatenate(phis, axis=-1) if phis else xp.zeros(batch + (0,), dtype=x.dtype)
    return theta, _wrap(xp, phi), _wrap(xp, output + x)


def fold_targets(lay: MeshLayout) -> np.ndarray:
    """Where each input-layer and edge shifter's phase acts, for a simulator that folds them into the cells.

    A shifter on a mode between two cells multiplies the next cell's input on
    that mode, so its phase is exactly an input phase of that cell (or of the
    output layer when no cell follows). Returns ``(N + E,)`` indices into
    ``concat(upper inputs (n_mzi), lower inputs (n_mzi), output modes (N))``
    for ``concat(input layer, edges)`` (cached per size).
    """
    return _fold_targets(sweep_structure(lay).n)


@functools.lru_cache(maxsize=64)
def _fold_targets(n: int) -> np.ndarray:
    lay = mesh_layout("clements", n)
    st = sweep_structure(lay)
    m = lay.n_mzi
    pairs, cols = lay.pair_array, lay.column_array
    # per mode, the cells that meet it in column order and the input index each would take
    meets = {q: np.flatnonzero((pairs == q) | (pairs == q - 1)) for q in range(n)}

    def next_cell(q: int, after: int) -> int:
        cells = meets[q]
        later = cells[cols[cells] > after]
        if not len(later):
            return 2 * m + q
        i = int(later[0])
        return i if pairs[i] == q else m + i

    out = [next_cell(q, -1) for q in range(n)] + [next_cell(q, c) for c, q in st.edges]
    targets = np.asarray(out, dtype=np.int64)
    targets.setflags(write=False)
    return targets


def bell_unitary(lay: MeshLayout, phases: Mapping[str, ArrayLike],
                 errors: Mapping[str, ArrayLike] | None = None) -> np.ndarray:
    """Float64 reference: the ``N x N`` matrix of one Bell mesh, a loop over its layers and cells.

    Args:
      lay: a Clements layout.
      phases: the heater phases of :data:`BELL_GROUPS` (one mesh, no batch).
      errors: per-cell ``coupler_in``, ``coupler_out`` (rad) and ``loss_db``
        ``(n_mzi,)`` (missing ones are 0).

    Returns:
      complex128 ``(N, N)``: output layer, then for every column from the
      last its edge shifters and cells, then the input layer.
    """
    st = sweep_structure(lay)
    n = st.n
    f = {g: np.asarray(phases[g], dtype=np.float64) for g in BELL_GROUPS}
    errs = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), (lay.n_mzi,)) for k, v in (errors or {}).items()}
    m = np.diag(np.exp(1j * f["input"]))
    for c in range(st.depth):
        s0, s1 = st.col_slices[c]
        for i in range(s0, s1):
            q = lay.pairs[i]
            t = BELL.transfer({"internal": f["internal"][i], "lower": f["lower"][i]},
                              {k: v[i] for k, v in errs.items()})
            step = np.eye(n, dtype=complex)
            step[q:q + 2, q:q + 2] = t
            m = step @ m
        for j, (ec, q) in enumerate(st.edges):
            if ec == c:
                m[q] *= np.exp(1j * f["edge"][j])
    return np.diag(np.exp(1j * f["output"])) @ m
