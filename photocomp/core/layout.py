"""Static mesh layouts (Clements rectangular, Reck triangular, butterfly) and their simulation.

A :class:`MeshLayout` is hashable structure: the number of modes, the kind,
and for every MZI the upper mode of the pair it acts on, its lower mode and
its column. MZIs are stored column by column (the order light meets them),
upper mode ascending inside a column. jit caches key on the layout; phases
are data.

Clements and Reck layouts are derived from the nulling order of the
decompositions by as-soon-as-possible scheduling, then checked against the
closed forms (Clements: N(N-1)/2 MZIs, depth N, pair n in column c iff
n = c mod 2; Reck: N(N-1)/2 MZIs, depth 2N-3); their MZIs act on adjacent
modes ``(n, n + 1)``. A butterfly layout (N = 2^m modes) has m columns of
N / 2 MZIs; column ``s`` pairs mode ``n`` with ``n + 2^s`` for every ``n``
whose bit ``s`` is 0 (the radix-2 FFT's pattern, :func:`butterfly_pairs`).
It has (N / 2) log2 N MZIs, so it is not universal: it is programmed by
fitting (:mod:`photocomp.compiler.fit`). A Fldzhyan layout (Fldzhyan, Saygin
& Kulik, Opt. Lett. 45, 2632 (2020)) is the Clements brick continued to 2N
columns of cells on adjacent pairs, column ``c`` on the pairs ``n = c (mod
2)``: N (N - 1) cells. Its cell is a single static coupler after one phase
shifter (:data:`photocomp.core.cell.FLDZHYAN`), whose splitting is fixed, so
the N (N - 1) external phases and N output phases, N^2 in all, are the
parameters; they are fitted too.

A crossbar layout (:mod:`photocomp.core.crossbar`) is no mesh: its K^2 cells
are the weight cells of a fan-out / weight / fan-in core, cell ``i K + j``
carrying input ``j`` to output ``i`` (``pairs`` holds the output row, every
cell sits in column 0). Its cells are MZIs used from one input port to one
output port; the layout's simulations take each cell's upper-to-upper
element ``e^{i phi} cos theta`` as the weight, times the ``1 / K`` of an
ideal fan-out and fan-in (:func:`crossbar_apply`). Nothing that walks mesh
columns applies to it: :attr:`MeshLayout.column_slots` refuses it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from photocomp.core.cell import MZI, Cell, get_cell
from photocomp.core.convention import mzi
from photocomp.core.errors import InvalidInputError, UnknownNameError

__all__ = ["MESH_KINDS", "DECOMPOSED_KINDS", "MeshLayout", "layout", "apply_mesh", "mesh_unitary",
           "nulling_levels", "butterfly_pairs", "mesh_counts", "planar_crossings", "crossbar_apply"]

MESH_KINDS = ("clements", "reck", "butterfly", "fldzhyan", "crossbar")
DECOMPOSED_KINDS = ("clements", "reck")  # the universal meshes, programmed by an exact decomposition


@dataclasses.dataclass(frozen=True)
class MeshLayout:
    """Static structure of an MZI mesh.
    Attributes:
      kind: ``"clements"`` or ``"reck"``.
      n_modes: number of optical modes N.
      pairs: upper mode index of each MZI (tuple of int, length N(N-1)/2).
      columns: column of each MZI (tuple of int, non-decreasing).
      cell: the device on every pair (:class:`photocomp.core.cell.Cell`;
        default the convention's MZI). The mathematical mesh is the same for
        every cell; the cell decides the physical form, its heaters and errors.
      lower: lower mode of each MZI (tuple of int, each above its upper
        mode), or ``()`` for adjacent pairs ``(n, n + 1)`` (Clements, Reck).
    """
    kind: str
    n_modes: int
    pairs: tuple
    columns: tuple
    cell: Cell = MZI
    lower: tuple = ()

    @property
    def n_mzi(self) -> int:
        return len(self.pairs)

    @property
    def depth(self) -> int:
        return (max(self.columns) + 1) if self.columns else 0

    @functools.cached_property
    def pair_array(self) -> np.ndarray:
        return np.asarray(self.pairs, dtype=np.int32)

    @functools.cached_property
    def column_array(self) -> np.ndarray:
        return np.asarray(self.columns, dtype=np.int32)

    @property
    def crossbar(self) -> bool:
        """Whether this is a crossbar's array of weight cells (no mesh: see the module docstring)."""
        return self.kind == "crossbar"

    @property
    def adjacent(self) -> bool:
        """Whether every MZI acts on adjacent modes ``(n, n + 1)``."""
        return not self.lower

    @functools.cached_property
    def lower_array(self) -> np.ndarray:
        """Lower mode of each MZI (int32, ``pair_array + 1`` for adjacent pairs)."""
        return np.asarray(self.lower, dtype=np.int32) if self.lower else self.pair_array + 1

    @functools.cached_property
    def column_bottoms(self) -> np.ndarray:
        """Lower mode of every slot of :attr:`column_slots`, shape ``(depth, width)``: padding slots point
        at the dummy mode N + 1 (with ``top`` at N)."""
        top, index, valid = self.column_slots
        return np.where(valid, self.lower_array[index] if self.n_mzi else top + 1, self.n_modes + 1).astype(np.int32)

    @functools.cached_property
    def column_slots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded per-column view used by the simulators.
        Returns ``(top, index, valid)`` each of shape ``(depth, width)`` with
        ``width = max MZIs per column``: ``top`` the upper mode (padding slots
        point at the dummy modes N, N+1), ``index`` the MZI's position in
        ``pairs`` (padding: 0) and ``valid`` a boolean mask.
        """
        if self.crossbar:
            raise InvalidInputError("a crossbar layout has no mesh columns to walk: its weight cells act in "
                                    "parallel (photocomp.core.crossbar)")
        depth = self.depth
        counts = np.bincount(self.column_array, minlength=depth) if depth else np.zeros(0, int)
        width = int(counts.max()) if depth else 0
        top = np.full((depth, width), self.n_modes, dtype=np.int32)
        index = np.zeros((depth, width), dtype=np.int32)
        valid = np.zeros((depth, width), dtype=bool)
        start = 0
        for c in range(depth):
            k = int(counts[c])
            top[c, :k] = self.pair_array[start : start + k]
            index[c, :k] = np.arange(start, start + k)
            valid[c, :k] = True
            start += k
        return top, index, valid

    def __hash__(self):  # explicit: cached_property adds instance attributes
        return hash((self.kind, self.n_modes, self.pairs, self.columns, self.cell, self.lower))

    def __eq__(self, other):
        return isinstance(other, MeshLayout) and (
            self.kind,
            self.n_modes,
            self.pairs,
            self.columns,
            self.cell,
            self.lower,
        ) == (other.kind, other.n_modes, other.pairs, other.columns, other.cell, other.lower)


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise InvalidInputError(f"n_modes must be an int >= 1; got {n!r} of type {type(n).__name__}")
    if n < 1:
        raise InvalidInputError(f"n_modes must be an int >= 1; got {n}")
    return int(n)


@functools.lru_cache(maxsize=64)
def nulling_schedule(kind: str, n: int):
    """Static nulling order of a decomposition, as numpy arrays (cached per (kind, n)).
    Returns a dict with, per nulling step (in the order the algorithm runs):
      ``left``: bool, True for a left multiplication by T on rows (k, k+1)
        nulling entry (k+1, target), False for a right multiplication by
        T^-1 on columns (k, k+1) nulling entry (target, k).
      ``k``: upper index of the pair.
      ``target``: the column (left) or row (right) of the nulled entry.
      ``slot``: position of the resulting MZI in the layout's ``pairs``.
    and ``layout``: the :class:`MeshLayout`.
    """
    if kind not in DECOMPOSED_KINDS:
        raise UnknownNameError(f"mesh kind must be one of {DECOMPOSED_KINDS} to have a nulling order; got {kind!r}")
    left_list: list[bool] = []
    k_list: list[int] = []
    target_list: list[int] = []
    if kind == "clements":
        for i in range(n - 1):
            for j in range(i + 1):
                if i % 2 == 0:  # right multiplication: null (n-1-j, i-j) with columns (i-j, i-j+1)
                    left_list.append(False)
                    k_list.append(i - j)
                    target_list.append(n - 1 - j)
                else:  # left multiplication: null (n-1-i+j, j) with rows (n-2-i+j, n-1-i+j)
                    left_list.append(True)
                    k_list.append(n - 2 - i + j)
                    target_list.append(j)
    elif kind == "reck":
        for r in range(n - 1, 0, -1):
            for c in range(r):
                left_list.append(False)
                k_list.append(c)
                target_list.append(r)
    else:
        raise UnknownNameError(f"mesh kind must be one of {MESH_KINDS}; got {kind!r}")
    left = np.asarray(left_list, dtype=bool)
    ks = np.asarray(k_list, dtype=np.int32)
    targets = np.asarray(target_list, dtype=np.int32)
    # Light meets the right-multiplication MZIs first (in nulling order), then the
    # left-multiplication ones in reverse nulling order.
    right_steps = np.flatnonzero(~left)
    left_steps = np.flatnonzero(left)[::-1]
    light_order = np.concatenate([right_steps, left_steps]).astype(np.int64)
    # As-soon-as-possible column assignment.
    free = np.zeros(n + 1, dtype=np.int64)
    col_of_step = np.zeros(len(ks), dtype=np.int64)
    for s in light_order:
        k = ks[s]
        c = max(free[k], free[k + 1])
        col_of_step[s] = c
        free[k] = free[k + 1] = c + 1
    # Layout order: by column, then upper mode.
    order = np.lexsort((ks, col_of_step)) if len(ks) else np.zeros(0, np.int64)
    slot = np.empty(len(ks), dtype=np.int64)
    slot[order] = np.arange(len(ks))
    lay = MeshLayout(
        kind=kind,
        n_modes=n,
        pairs=tuple(int(x) for x in ks[order]),
        columns=tuple(int(x) for x in col_of_step[order]),
    )
    return {"left": left, "k": ks, "target": targets, "slot": slot, "layout": lay}


@functools.lru_cache(maxsize=64)
def nulling_levels(kind: str, n: int) -> np.ndarray:
    """Dependency levels of the nulling steps (cached per (kind, n)).
    Step j depends on an earlier step i when i changes an entry j reads, when
    j changes an entry i read, or when both multiply on the same side and
    share a line (a column for right steps, a row for left steps). A right
    step on columns (k, k+1) reads (t, k), (t, k+1) and changes both columns;
    a left step on rows (k, k+1) reads (k, t), (k+1, t) and changes both rows.
    Left and right multiplications commute as operators, so they need no
    order unless one reads what the other changes. The level of a step is the
    length of the longest dependency chain ending in it; steps of one level
    are independent and could run at once, in any order, with the same result.

    Reck: 2N - 3 levels (step (r, c) at level c + 2 (N-1-r)). Clements: every
    step reads an entry the step before it changed, so the levels are
    0, 1, 2, ... (a chain of N(N-1)/2 steps).

    Returns:
      int array, the level of every step in nulling order.
    """
    sched = nulling_schedule(kind, n)
    left, ks, targets = sched["left"], sched["k"], sched["target"]
    col_write = np.full(n + 1, -1)  # last level of a right step changing column c
    row_write = np.full(n + 1, -1)  # last level of a left step changing row r
    col_read = np.full(n + 1, -1)  # last level of a left step reading column c
    row_read = np.full(n + 1, -1)  # last level of a right step reading row r
    level = np.zeros(len(ks), dtype=np.int64)
    for s, (is_left, k, t) in enumerate(zip(left, ks, targets)):
        if is_left:
            lv = 1 + max(row_write[k], row_write[k + 1], col_write[t], row_read[k], row_read[k + 1])
            row_write[k] = row_write[k + 1] = lv
            col_read[t] = max(col_read[t], lv)
        else:
            lv = 1 + max(col_write[k], col_write[k + 1], row_write[t], col_read[k], col_read[k + 1])
            col_write[k] = col_write[k + 1] = lv
            row_read[t] = max(row_read[t], lv)
        level[s] = lv
    return level


def layout(kind: str, n_modes: int, cell: str | Cell = MZI) -> MeshLayout:
    """The :class:`MeshLayout` of a ``kind`` mesh on ``n_modes`` modes, built of ``cell``.
    Example:
      >>> layout("clements", 4).depth
      4
      >>> layout("clements", 4, cell="mzi3").cell.heaters
      ('external', 'internal', 'trim')
    """
    if kind not in MESH_KINDS:
        raise UnknownNameError(f"mesh kind must be one of {MESH_KINDS}; got {kind!r}")
    n = _check_n(n_modes)
    builders = {"butterfly": _butterfly, "fldzhyan": _fldzhyan, "crossbar": _crossbar}
    lay = builders[kind](n) if kind in builders else nulling_schedule(kind, n)["layout"]
    cell = get_cell(cell)
    return lay if cell == MZI else _with_cell(lay, cell)


def mesh_counts(kind: str, n: int) -> tuple[int, int]:
    """``(n_mzi, depth)`` of a ``kind`` mesh on ``n >= 2`` modes, in closed form (no layout is built).

    ``n_mzi = n (n - 1) / 2``; depth ``n`` for Clements (1 for ``n = 2``), ``2 n - 3`` for Reck. A
    butterfly (``n`` a power of two): ``(n / 2) log2 n`` MZIs in ``log2 n`` columns. Fldzhyan:
    ``n (n - 1)`` cells in ``2 n`` columns (2 for ``n = 2``). A crossbar: ``n^2`` weight cells, all in one
    column.
    """
    if kind == "crossbar":
        return n * n, 1
    if kind == "butterfly":
        m = n.bit_length() - 1
        return n // 2 * m, m
    if kind == "fldzhyan":
        return n * (n - 1), (2 * n if n > 2 else 2)
    return n * (n - 1) // 2, ((n if n > 2 else 1) if kind == "clements" else 2 * n - 3)


def butterfly_pairs(n_modes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(upper, lower, column)`` of every MZI of the ``n_modes``-mode butterfly, in layout order.

    Column ``s`` (``s = 0 .. log2 N - 1``) holds the N / 2 MZIs on ``(n, n + 2^s)`` for every ``n``
    whose bit ``s`` is 0, ``n`` ascending.

    Example:
      >>> [p.tolist() for p in butterfly_pairs(4)]
      [[0, 2, 0, 1], [1, 3, 2, 3], [0, 0, 1, 1]]
    """
    n = _check_n(n_modes)
    if n < 2 or n & (n - 1):
        raise InvalidInputError(f"a butterfly mesh needs a power of two >= 2 modes; got n_modes={n}")
    modes = np.arange(n)
    upper, lower, column = [], [], []
    for s in range(n.bit_length() - 1):
        top = modes[(modes >> s) & 1 == 0]
        upper.append(top)
        lower.append(top + (1 << s))
        column.append(np.full(len(top), s))
    return tuple(np.concatenate(a).astype(np.int32) for a in (upper, lower, column))  # type: ignore[return-value]


@functools.lru_cache(maxsize=64)
def planar_crossings(lay: MeshLayout) -> np.ndarray:
    """Waveguide crossings each mode passes on a planar chip to reach its MZI of every column, ``(depth, N)``.

    Zero for adjacent pairs. A butterfly's column ``s`` pairs ``n`` with ``n + d`` (``d = 2^s``): in
    each group of ``2d`` modes the waveguides are interleaved (a perfect shuffle) so that pairs sit side
    by side, and taken back to mode order after the column. The waveguide at place ``r < d`` of its
    group crosses ``r`` others, the one at ``d + r`` crosses ``d - 1 - r``; entry ``[s, q]`` is that
    count, met once before the column and once after it.

    Example:
      >>> planar_crossings(layout("butterfly", 8))[2].tolist()
      [0, 1, 2, 3, 3, 2, 1, 0]
    """
    out = np.zeros((lay.depth, lay.n_modes), dtype=np.int64)
    if lay.adjacent:
        return out
    q = np.arange(lay.n_modes)
    for c in range(lay.depth):
        idx = np.flatnonzero(lay.column_array == c)
        d = int(lay.lower_array[idx[0]] - lay.pair_array[idx[0]])
        r = q % (2 * d)
        out[c] = np.where(r < d, r, 2 * d - 1 - r)
    return out


@functools.lru_cache(maxsize=64)
def _butterfly(n: int) -> MeshLayout:
    upper, lower, column = butterfly_pairs(n)
    return MeshLayout(kind="butterfly", n_modes=n, pairs=tuple(upper.tolist()), columns=tuple(column.tolist()),
                      lower=tuple(lower.tolist()))


@functools.lru_cache(maxsize=64)
def _fldzhyan(n: int) -> MeshLayout:
    """2N brick columns, column ``c`` on the adjacent pairs ``n = c (mod 2)``; empty columns (N = 2) dropped."""
    cols = [list(range(c % 2, n - 1, 2)) for c in range(2 * n)]
    cols = [c for c in cols if c]
    pairs = tuple(p for c in cols for p in c)
    columns = tuple(i for i, c in enumerate(cols) for _ in c)
    return MeshLayout(kind="fldzhyan", n_modes=n, pairs=pairs, columns=columns)


@functools.lru_cache(maxsize=64)
def _crossbar(n: int) -> MeshLayout:
    """N^2 weight cells in one column, cell ``i N + j`` on output row ``i`` (``pairs``) and input ``j``."""
    rows = tuple(i for i in range(n) for _ in range(n))
    return MeshLayout(kind="crossbar", n_modes=n, pairs=rows, columns=(0,) * (n * n))


def crossbar_apply(lay: MeshLayout, m00, x):
    """A crossbar's fields ``(N,)`` or ``(N, B)`` at its outputs (no output screen): ``(W / N) x`` with
    ``W[i, j] = m00[i N + j]``, every cell's upper-to-upper element, and ``1 / N`` the amplitude an ideal
    fan-out and fan-in leave on every path (:mod:`photocomp.core.crossbar`)."""
    n = lay.n_modes
    w = m00.reshape(n, n)
    return (w @ x) * jnp.asarray(1.0 / n, dtype=jnp.real(w).dtype)


@functools.lru_cache(maxsize=64)
def _with_cell(lay: MeshLayout, cell: Cell) -> MeshLayout:
    return dataclasses.replace(lay, cell=cell)


def apply_columns(lay: MeshLayout, mats, out_phase, x, *, every_column: bool = False):
    """Propagate fields through a mesh given every MZI's 2 x 2 transfer matrix.
    The one propagation loop shared by the ideal and the physical simulators:
    a ``lax.scan`` over the columns, each column's MZIs applied at once.

    Args:
      lay: the static layout.
      mats: ``(n_mzi, 2, 2)`` complex transfer matrices in layout order.
      out_phase: ``(N,)`` output phase screen (rad); unused with ``every_column``.
      x: fields ``(N,)`` or ``(N, B)``, already of the complex dtype to use.
      every_column: return the fields after every column instead (what
        in-mesh monitors see), without the output screen.

    Returns:
      output fields, same shape as ``x``; with ``every_column``, ``(depth,) + x.shape``
      (``(1,) + x.shape``, the input, for a mesh without MZIs).
    """
    n = lay.n_modes
    extra = x.shape[1:]
    if lay.crossbar:  # one column of weight cells in parallel
        y = crossbar_apply(lay, mats[:, 0, 0], x)
        if every_column:
            return y[None]
        return jnp.exp(1j * jnp.asarray(out_phase)).reshape((n,) + (1,) * len(extra)) * y
    xp = jnp.concatenate([x, jnp.zeros((2,) + extra, x.dtype)], 0)
    fields = x[None]
    if lay.n_mzi:
        top, index, valid = lay.column_slots
        eye = jnp.eye(2, dtype=mats.dtype)
        col_mats = jnp.where(jnp.asarray(valid)[..., None, None], mats[jnp.asarray(index)], eye)
        shape = (-1,) + (1,) * len(extra)

        def column(field, col):
            t, t2, mm = col
            a = field[t]
            b = field[t2]
            g = lambda i, j: mm[:, i, j].reshape(shape)  # noqa: E731
            field = field.at[t].set(g(0, 0) * a + g(0, 1) * b)
            field = field.at[t2].set(g(1, 0) * a + g(1, 1) * b)
            return field, (field[:n] if every_column else None)

        xp, fields = jax.lax.scan(column, xp, (jnp.asarray(top), jnp.asarray(lay.column_bottoms), col_mats))
    if every_column:
        return fields
    screen = jnp.exp(1j * jnp.asarray(out_phase)).reshape((n,) + (1,) * len(extra))
    return screen * xp[:n]


def apply_mesh(lay: MeshLayout, theta: ArrayLike, phi: ArrayLike, out_phase: ArrayLike, x: ArrayLike) -> jax.Array:
    """Propagate fields ``x`` through an ideal mesh.
    Args:
      lay: the static layout.
      theta, phi: shape ``(n_mzi,)`` (rad), in layout order.
      out_phase: shape ``(N,)`` (rad), the output phase screen.
      x: complex field(s), shape ``(N,)`` or ``(N, B)`` (modes first).

    Returns:
      the output field(s), same shape as ``x``. Equals ``mesh_unitary(...) @ x``.
    """
    x = jnp.asarray(x)
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(x.dtype, jnp.complex64, jnp.asarray(theta).dtype))
    mats = mzi(jnp.asarray(theta), jnp.asarray(phi)).astype(dtype)
    return apply_columns(lay, mats, out_phase, x.astype(dtype))


def mesh_unitary(lay: MeshLayout, theta: ArrayLike, phi: ArrayLike, out_phase: ArrayLike) -> jax.Array:
    """The N x N unitary a mesh implements: ``apply_mesh`` on the identity."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(jnp.asarray(theta).dtype, jnp.complex64))
    return apply_mesh(lay, theta, phi, out_phase, jnp.eye(lay.n_modes, dtype=dtype))
