"""The compiler's intermediate representation.

* :class:`TileGrid` – static tiling of an M x N matrix onto K x K blocks.
* :class:`PhaseMap` – the arrays of a compiled program (a pytree). Its
  *circuit* (:data:`CIRCUITS`) is the sequence of stages every tile runs:

  - ``"svd"``: a V mesh (implements V^H, met first), a column of attenuator
    MZIs realising the normalised singular values, a U mesh, a gain;
  - ``"unitary"``: one mesh (stored as ``u``) with its output screen, a gain
    (a tile that is a scaled unitary needs no second mesh and no attenuators);
  - ``"crossbar"``: the weight cells of a fan-out / weight / fan-in core
    (:mod:`photocomp.core.crossbar`), stored as ``u`` on a crossbar layout,
    and a gain.
* :class:`PassRecord`, :class:`CompileReport` – what the pass manager records.

What flows between passes is :class:`photocomp.compiler.state.CompileState`.

Tile ``t`` sits at block row ``t // cols`` and block column ``t % cols``; its
output is accumulated electronically into output block ``t // cols``.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, overload

import jax
import numpy as np

from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.format import format_value
from photocomp.core.layout import MeshLayout
from photocomp.core.phases import MeshPhases

__all__ = ["TileGrid", "PhaseMap", "PassRecord", "CompileReport", "CIRCUITS", "circuit_stages"]

#: Program circuits: the stages every tile runs, in the order light meets them.
CIRCUITS = ("svd", "unitary", "crossbar")
_STAGES = {"svd": ("v", "att", "u"), "unitary": ("u",), "crossbar": ("u",)}


def circuit_stages(circuit: str) -> tuple[str, ...]:
    """The stages of a circuit in light order: ``"v"``/``"u"`` meshes, ``"att"`` the attenuator column (a
    crossbar's one stage, its weight cells, is stored as ``"u"``)."""
    try:
        return _STAGES[circuit]
    except (KeyError, TypeError):
        raise InvalidInputError(f"circuit must be one of {CIRCUITS}; got {_quote(circuit)}") from None

_MAX_DIM = 2**31 - 1  # largest matrix dimension or tile size (int32-indexable)
_JSON_SCALARS = (str, int, float, bool, type(None))


def _quote(value, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # e.g. an int too long to print
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "…"


def _json_mapping(d, where: str) -> dict:
    """``d`` as a dict of str keys and plain JSON values (scalars, lists, dicts), else a typed error."""
    if not isinstance(d, dict):
        raise InvalidTypeError(f"{where} must be a dict; got {type(d).__name__} {_quote(d)}")

    def check(v, at):
        if isinstance(v, _JSON_SCALARS):
            return
        if isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                check(x, f"{at}[{i}]")
            return
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    raise InvalidTypeError(f"{at} must have str keys; got {_quote(k)}")
                check(x, f"{at}[{k!r}]")
            return
        raise InvalidTypeError(f"{at} must hold plain JSON values (numbers, strings, lists, dicts); "
                               f"got {type(v).__name__} {_quote(v)}")

    check(d, where)
    return dict(d)


@dataclasses.dataclass(frozen=True)
class TileGrid:
    """Static tiling of an ``out_dim x in_dim`` matrix onto ``tile x tile`` blocks."""
    out_dim: int
    in_dim: int
    tile: int

    def __post_init__(self):
        for f in ("out_dim", "in_dim", "tile"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= _MAX_DIM:
                raise InvalidInputError(f"TileGrid.{f} must be an int in [1, 2**31 - 1]; got {_quote(v)}")

    @property
    def rows(self) -> int:
        return math.ceil(self.out_dim / self.tile)

    @property
    def cols(self) -> int:
        return math.ceil(self.in_dim / self.tile)

    @property
    def n_tiles(self) -> int:
        return self.rows * self.cols

    @property
    def tile_rows(self) -> np.ndarray:
        return np.arange(self.n_tiles) // self.cols

    @property
    def tile_cols(self) -> np.ndarray:
        return np.arange(self.n_tiles) % self.cols

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """Per tile, how many of its K rows and K columns hold the matrix (the rest is zero padding)."""
        k = self.tile
        return np.minimum(self.out_dim - self.tile_rows * k, k), np.minimum(self.in_dim - self.tile_cols * k, k)

    def split(self, w: np.ndarray) -> np.ndarray:
        """Zero-pad ``w`` (out_dim, in_dim) and cut it into blocks (n_tiles, K, K)."""
        k = self.tile
        pad = np.zeros((self.rows * k, self.cols * k), dtype=w.dtype)
        pad[: self.out_dim, : self.in_dim] = w
        return pad.reshape(self.rows, k, self.cols, k).transpose(0, 2, 1, 3).reshape(-1, k, k)

    @overload
    def join(self, blocks: jax.Array) -> jax.Array: ...

    @overload
    def join(self, blocks: np.ndarray) -> np.ndarray: ...

    def join(self, blocks):
        """Inverse of :meth:`split` (crops the padding): the (out_dim, in_dim) matrix of blocks
        (n_tiles, K, K), a NumPy or JAX array as given (so it also works under ``jit``)."""
        k = self.tile
        b = blocks if hasattr(blocks, "reshape") else np.asarray(blocks)
        b = b.reshape(self.rows, self.cols, k, k).transpose(0, 2, 1, 3)
        return b.reshape(self.rows * k, self.cols * k)[: self.out_dim, : self.in_dim]


@dataclasses.dataclass(frozen=True)
class PhaseMap:
    """Phases and gains of a compiled program (a pytree; ``grid`` is static).

    Attributes:
      grid: the :class:`TileGrid`.
      v: :class:`MeshPhases` of the input meshes, arrays ``(n_tiles, ...)``;
        tile t's V mesh implements V_t^H. ``None`` for a unitary program.
      sigma: attenuator angles (rad), ``(n_tiles, K)``; amplitude
        transmission ``cos(sigma)`` is the normalised singular value.
        ``None`` for a unitary program.
      u: :class:`MeshPhases` of the output meshes, ``(n_tiles, ...)`` (a
        unitary program's only mesh).
      gain: electronic gain per tile, ``(n_tiles,)``: the tile's largest
        singular value (for a unitary program, the scale of its unitary).

    Tile ``t`` implements ``gain[t] U_t diag(cos sigma_t) V_t^H`` (``svd``) or
    ``gain[t] U_t`` (``unitary``), each mesh with its output screen; a
    ``crossbar`` tile ``gain[t] diag(e^{i out}) W_t / K`` with ``W_t[i, j]``
    the weight cell ``e^{i phi} cos theta`` of cell ``i K + j``. Fields
    are not checked here (JAX rebuilds pytrees with placeholder leaves); a
    :class:`~photocomp.compiler.program.Program` checks them against its target.
    """
    grid: TileGrid
    v: MeshPhases | None
    sigma: Any
    u: MeshPhases
    gain: Any

    @classmethod
    def unitary(cls, grid: TileGrid, u: MeshPhases, gain: Any) -> PhaseMap:
        """A unitary program: one mesh ``u`` and a gain per tile (on a crossbar layout, a crossbar program)."""
        return cls(grid, None, None, u, gain)

    @property
    def circuit(self) -> str:
        """``"svd"``, ``"unitary"`` or ``"crossbar"`` (:data:`CIRCUITS`)."""
        if self.v is None:
            return "crossbar" if self.u.layout.crossbar else "unitary"
        return "svd"

    @property
    def stages(self) -> tuple[str, ...]:
        """The circuit's stages in light order (:func:`circuit_stages`)."""
        return circuit_stages(self.circuit)

    @property
    def meshes(self) -> tuple[MeshPhases, ...]:
        """The program's meshes in light order."""
        return (self.u,) if self.v is None else (self.v, self.u)

    @property
    def n_tiles(self) -> int:
        return self.grid.n_tiles

    @property
    def layout(self) -> MeshLayout:
        """The mesh layout (every mesh of a compiled program has the same one)."""
        return self.u.layout

    @property
    def mesh_kind(self) -> str:
        return self.u.layout.kind

    @property
    def n_mzi_per_tile(self) -> int:
        """MZIs of one tile's circuit: meshes plus attenuators."""
        k = self.grid.tile
        return sum(m.layout.n_mzi for m in self.meshes) + (0 if self.v is None else k)

    @property
    def depth(self) -> int:
        """Columns of MZIs light crosses in one tile."""
        return sum(m.layout.depth for m in self.meshes) + (0 if self.v is None else 1)

    def replace(self, **changes) -> PhaseMap:
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(
    PhaseMap, data_fields=["v", "sigma", "u", "gain"], meta_fields=["grid"]
)


@dataclasses.dataclass(frozen=True)
class PassRecord:
    """What the pass manager recorded for one pass."""
    name: str
    spec: str
    wall_s: float
    metrics: types.MappingProxyType

    def to_dict(self) -> dict:
        return {"name": self.name, "spec": self.spec, "wall_s": self.wall_s, "metrics": dict(self.metrics)}


@dataclasses.dataclass(frozen=True)
class CompileReport:
    """Per-pass wall time and metrics of a compile, plus a summary of the result."""
    records: tuple
    summary: types.MappingProxyType

    def __getitem__(self, name: str) -> PassRecord:
        for r in self.records:
            if r.name == name:
                return r
        raise KeyError(f"no pass named {name!r} in this report; passes: {[r.name for r in self.records]}")

    @property
    def total_s(self) -> float:
        return float(sum(r.wall_s for r in self.records))

    def to_dict(self) -> dict:
        return {"records": [r.to_dict() for r in self.records], "summary": dict(self.summary)}

    @classmethod
    def from_dict(cls, d: dict) -> CompileReport:
        # the inverse of to_dict, for records read from files: every part is type-checked
        # (InvalidTypeError / InvalidInputError name the part), nothing is converted silently
        if not isinstance(d, dict):
            raise InvalidTypeError(f"report must be a dict with 'records' and 'summary'; got {type(d).__name__} {_quote(d)}")
        extra = sorted(set(d) - {"records", "summary"})
        if extra:
            raise InvalidInputError(f"report must have only the keys 'records' and 'summary'; got also {_quote(extra)}")
        records, summary = d.get("records", []), d.get("summary", {})
        if not isinstance(records, list):
            raise InvalidTypeError(f"report['records'] must be a list; got {type(records).__name__} {_quote(records)}")
        recs = []
        for i, r in enumerate(records):
            where = f"report['records'][{i}]"
            if not isinstance(r, dict) or set(r) != {"name", "spec", "wall_s", "metrics"}:
                raise InvalidInputError(f"{where} must be a dict with exactly the keys name, spec, wall_s, metrics; "
                                        f"got {_quote(r)}")
            for key in ("name", "spec"):
                if not isinstance(r[key], str):
                    raise InvalidTypeError(f"{where}[{key!r}] must be a str; got {type(r[key]).__name__} {_quote(r[key])}")
            wall = r["wall_s"]
            if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not math.isfinite(wall) or wall < 0:
                raise InvalidInputError(f"{where}['wall_s'] must be a finite number >= 0 (s); got {_quote(wall)}")
            recs.append(PassRecord(r["name"], r["spec"], float(wall),
                                   types.MappingProxyType(_json_mapping(r["metrics"], f"{where}['metrics']"))))
        return cls(tuple(recs), types.MappingProxyType(_json_mapping(summary, "report['summary']")))

    def table(self) -> str:
        """A plain-text table: one row per pass, then the summary."""
        lines = [f"{'pass':<28} {'time':>9}  metrics", "-" * 78]
        for r in self.records:
            m = ", ".join(f"{k}={format_value(v)}" for k, v in r.metrics.items())
            lines.append(f"{r.spec[:28]:<28} {r.wall_s * 1e3:>7.1f}ms  {m}")
        lines.append("-" * 78)
        lines.append(f"{'total':<28} {self.total_s * 1e3:>7.1f}ms")
        for k, v in self.summary.items():
            lines.append(f"  {k:<26} {format_value(v)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
