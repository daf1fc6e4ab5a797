"""``compile``: weights in, a :class:`~photocomp.compiler.program.Program` out.

Large problems
--------------
Every pass from the tiling pass on works tile by tile, and tiles are
independent. When a matrix has more tiles than fit comfortably in memory at
once, :func:`compile` runs the passes before tiling once on the whole matrix
and the rest on strips of whole block rows, one strip after the other, and
joins the strips' phase maps, folded matrices and reports
(:func:`_join_records`). Strip sizes come from a memory model
(:func:`memory_plan`); a problem whose whole-matrix arrays alone would not
fit fails before any work, with the size it needs: the estimate is made from
the shape alone, before the weights are copied or converted. Inside a pass,
tiles are sharded across all JAX devices
(:func:`photocomp.sim.devices.run_tiles`).

Unitary programs
----------------
A preset pipeline (``pipeline=None``) compiles a square matrix that fits one
tile and is a scaled unitary to :data:`photocomp.core.metrics.UNITARY_TOL`
as a *unitary program*: the ``unitary`` pass replaces ``svd`` and every tile
is one mesh and a gain (:class:`photocomp.core.ir.PhaseMap`). A pipeline
string may ask for it (``"tile | unitary | clements"``) on any matrix whose
tiles are scaled unitaries.

Weights of any finite magnitude
-------------------------------
Weights whose largest component lies outside ``[2**-400, 2**400]`` (see
:data:`photocomp.core.metrics.SAFE_EXPONENT`) are compiled as ``W * 2**-e``, a
power of two that brings it to ``[0.5, 1)`` and changes no digit, and the
result is scaled back: the tiles' gains and the folded matrix by ``2**e``,
and the metrics passes record in the units of the weights (the keys a pass
lists in its ``weight_units``). Relative errors need nothing: they are the
same for ``W`` and ``W * 2**-e``. (Entries more than 2**1074 times smaller
than the largest one underflow in ``W * 2**-e``: a tile of them compiles to
zero, an error below 2**-1074 relative to ``W``.) A compile whose gains cannot be represented
in float64 (a tile's largest singular value above the largest float64, or
the matrix's below :data:`SMALLEST_GAIN`, about 1e-292, where flushing
results below the smallest normal float64 to zero would cost more than
rounding) is refused with an :class:`~photocomp.core.errors.InvalidInputError`
(:func:`_restore_scale`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import math
import os
import threading
import types
from collections.abc import Callable

import jax
import numpy as np
import numpy.typing as npt

from photocomp.compiler.decompose import check_tiles
from photocomp.compiler.pipeline import INITIAL_PROPERTIES, Pass, Pipeline, get_pass
from photocomp.compiler.program import Program
from photocomp.compiler.state import CompileState
from photocomp.core.errors import InvalidInputError, InvalidTypeError, PipelineError
from photocomp.core.ir import CompileReport, PassRecord, PhaseMap, TileGrid
from photocomp.core.metrics import (
    UNITARY_TOL,
    fidelity,
    needs_scaling,
    np_matrix_error,
    np_norm,
    power_of_two_exponent,
    remembered_unitary_deviations,
    scale_by_power_of_two,
    unitary_deviation,
)
from photocomp.core.phases import MeshPhases
from photocomp.core.target import Target, get_target
from photocomp.core.validate import as_matrix, check_int, matrix_view
from photocomp.sim.devices import prepare_blas_limits, single_threaded_blas

__all__ = ["compile", "memory_plan"]

# ---- memory model ------------------------------------------------------------------------

WHOLE_MATRIX_COPIES = 4
"""Bytes the whole-matrix arrays take, in units of a complex128 copy of the weights:
the validated weights, the folded dense matrix, the joined phase map (two meshes of
K(K-1)/2 MZIs with two phases each, about one copy for K >= 8) and one transient."""

TILE_COPIES = 24
"""Bytes one tile needs while a strip runs through the passes, in units of one
complex128 K x K tile (blocks, SVD factors, decompositions, mesh rebuilds, the
passes' simulations); measured with benchmarks/decompositions.py --whole-model."""

STRIP_BUDGET = 1 << 31
"""Most bytes given to the working sets of the strips in flight together (2 GiB), whatever memory is free."""

STRIPS_IN_FLIGHT = 2
"""Strips of a compile in strips that run at once, each in a thread of its own: while the devices run
one strip's programs (decomposition, mesh rebuilds, SVD), the host turns another's results into
phases, quantizes and checks them, work that would otherwise leave a core idle. Measured with
``benchmarks/decompositions.py --whole-model`` (see benchmarks/README.md). One on a multi-process
runtime, whose collectives must come from one thread."""


def strips_in_flight() -> int:
    """:data:`STRIPS_IN_FLIGHT`, or 1 on a multi-process JAX runtime."""
    return 1 if jax.process_count() > 1 else max(1, int(STRIPS_IN_FLIGHT))


def available_memory() -> int | None:
    """Bytes of memory available to this process (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """How a compile is cut into strips of block rows.
    Attributes:
      grid: the whole problem's :class:`~photocomp.core.ir.TileGrid`.
      strip_rows: block rows per strip (the last strip may have fewer).
      whole_bytes: estimated bytes of the whole-matrix arrays.
      tile_bytes: estimated working bytes per tile while a strip runs.
      available: bytes of memory available, or None when unknown.
      in_flight: strips that run at once (:data:`STRIPS_IN_FLIGHT`).
    """
    grid: TileGrid
    strip_rows: int
    whole_bytes: int
    tile_bytes: int
    available: int | None
    in_flight: int = 1

    @property
    def strips(self) -> list[tuple[int, int]]:
        """Row ranges ``(r0, r1)`` of the weights, one per strip."""
        step = self.strip_rows * self.grid.tile
        return [(r, min(r + step, self.grid.out_dim)) for r in range(0, self.grid.out_dim, step)]

    @property
    def peak_bytes(self) -> int:
        """Estimated peak: the whole-matrix arrays plus the working sets of the strips in flight."""
        running = min(self.in_flight, len(self.strips))
        return self.whole_bytes + running * self.strip_rows * self.grid.cols * self.tile_bytes


def memory_plan(shape, tile: int, *, available: int | None = None, input_bytes: int = 0,
                in_flight: int | None = None) -> MemoryPlan:
    """Plan the strips of a compile of an ``(M, N)`` matrix on ``tile`` x ``tile`` tiles.
    Args:
      shape: ``(M, N)`` of the weights.
      tile: the tile size K.
      available: bytes of memory to plan for (default: what the OS reports free).
      input_bytes: bytes of a host copy of the input still to be made before
        its complex128 copy (weights that are not a numpy array), counted
        with the whole-matrix arrays.
      in_flight: strips that run at once (default :func:`strips_in_flight`).

    Returns:
      a :class:`MemoryPlan` whose ``in_flight`` strips together fit in
      ``min(available / 2, STRIP_BUDGET)`` next to the whole-matrix arrays,
      in strips of equal size (the last may be smaller), as many as a
      multiple of ``in_flight`` where there is more than one.

    Raises:
      InvalidInputError: if the whole-matrix arrays plus a single block row
        do not fit in ``available``.
    """
    m, n = int(shape[0]), int(shape[1])
    grid = TileGrid(out_dim=m, in_dim=n, tile=int(tile))
    whole = WHOLE_MATRIX_COPIES * 16 * m * n + int(input_bytes)
    per_tile = TILE_COPIES * 16 * tile * tile
    per_row = per_tile * grid.cols
    avail = available_memory() if available is None else available
    budget = STRIP_BUDGET if avail is None else max(0, min(STRIP_BUDGET, (avail - whole) // 2))
    flight = strips_in_flight() if in_flight is None else check_int(in_flight, "in_flight", low=1)
    rows = max(1, min(grid.rows, budget // flight // per_row))
    count = -(-grid.rows // rows)
    if count > 1:  # whole rounds of strips in flight
        count = -(-count // flight) * flight
    rows = -(-grid.rows // count)  # equal strips: one compiled program serves them all
    plan = MemoryPlan(grid, rows, whole, per_tile, avail, flight)
    if avail is not None and whole + per_row > avail:
        need = whole + per_row
        raise InvalidInputError(
            f"weights of shape {m}x{n} ({grid.n_tiles} tiles of {tile}x{tile}) need about "
            f"{need / 2**30:.1f} GiB to compile ({whole / 2**30:.1f} GiB for the whole-matrix arrays "
            f"in complex128, "
            f"{per_row / 2**30:.2f} GiB per block row of tiles); {avail / 2**30:.1f} GiB is available. "
            "Compile a smaller matrix (e.g. its column blocks one at a time) or run on a machine with more memory."
        )
    return plan


def _input_bytes(weights) -> tuple[tuple | None, int]:
    """Shape of array-like weights known without converting them, and the bytes a host copy would take.

    A numpy array (a broadcast view included) is used as it is: 0 bytes. An
    object with a 2-D ``shape`` and a ``dtype`` (a JAX array, say) is copied
    to the host first. Anything else (nested lists) is converted before its
    size is known; it takes more memory as Python objects than as an array.
    """
    if isinstance(weights, np.ndarray):
        return tuple(weights.shape), 0
    dims, dtype = getattr(weights, "shape", None), getattr(weights, "dtype", None)
    if dims is None:
        return None, 0
    try:
        shape = tuple(int(d) for d in dims)
        itemsize = np.dtype(dtype).itemsize
    except (TypeError, ValueError):
        return None, 0
    return (shape, itemsize * math.prod(shape)) if len(shape) == 2 else (None, 0)


def _check_memory(shape, k: int | None, available: int | None, input_bytes: int = 0) -> MemoryPlan | None:
    """The :func:`memory_plan` of a tiled compile (``k`` the tile size), or a check of the whole-matrix arrays."""
    if k is not None:
        return memory_plan(shape, k, available=available, input_bytes=input_bytes)
    m, n = int(shape[0]), int(shape[1])
    need = WHOLE_MATRIX_COPIES * 16 * m * n + int(input_bytes)
    if available is not None and need > available:
        raise InvalidInputError(
            f"weights of shape {m}x{n} need about {need / 2**30:.1f} GiB to compile (the whole-matrix arrays "
            f"in complex128); {available / 2**30:.1f} GiB is available. "
            "Compile a smaller matrix or run on a machine with more memory."
        )
    return None


# ---- scale ---------------------------------------------------------------------------------

SMALLEST_GAIN = float(np.finfo(np.float64).tiny / np.finfo(np.float64).eps)
"""Smallest largest-gain accepted (2**-970, about 1e-292). The simulators (XLA) flush
float64 results below the smallest normal number (2**-1022) to zero; with the largest gain
at least ``tiny / eps`` what is flushed stays within float64 rounding of the matrix."""


def _in_weight_units(p, rec: PassRecord, e: int) -> PassRecord:
    """``rec`` with the metrics ``p`` lists in ``weight_units`` multiplied by ``2**e``."""
    keys: frozenset[str] = getattr(p, "weight_units", frozenset())
    if e == 0 or not keys:
        return rec
    metrics = dict(rec.metrics)
    with np.errstate(over="ignore", under="ignore"):
        for key in keys & metrics.keys():
            v = metrics[key]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics[key] = float(np.ldexp(float(v), e))
    return dataclasses.replace(rec, metrics=types.MappingProxyType(metrics))


def _log2_text(x: float, e: int) -> str:
    """``x * 2**e`` as text, also beyond the float64 range."""
    if not np.isfinite(x) or x <= 0:
        return repr(float(x))
    log10 = (math.log2(x) + e) * math.log10(2)
    return f"{10 ** (log10 % 1):.3g}e{math.floor(log10):+d}"


def _restore_scale(pm: PhaseMap, e: int, row0: int = 0) -> PhaseMap:
    """The phase map of ``W`` from that of ``W * 2**-e``: gains times ``2**e``; refuse gains float64 cannot hold.

    ``row0``: the first block row of ``pm`` in the whole grid (a strip's), for messages.

    Raises:
      InvalidInputError: naming ``weights``, when a tile's gain (its largest
        singular value) is not finite or exceeds the largest float64, or the
        largest gain is positive but below :data:`SMALLEST_GAIN`.
    """
    gain_s = np.asarray(pm.gain, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore"):
        gain = np.ldexp(gain_s, e)
    bad = ~np.isfinite(gain) | (gain < 0)
    if bad.any():
        t = int(np.flatnonzero(bad)[0])
        r, c = divmod(t, pm.grid.cols)
        r += row0
        big = np.finfo(np.float64).max
        raise InvalidInputError(
            f"weights are too large to compile: tile ({r}, {c}) needs an electronic gain (its largest singular "
            f"value) of {_log2_text(float(gain_s[t]), e)}, which float64 cannot represent (largest {big:.4g}); "
            f"{int(bad.sum())} of {gain.size} tiles are affected. Divide the weights by a power of two "
            "(e.g. np.ldexp(weights, -8)) and multiply the outputs back."
        )
    top = float(gain.max()) if gain.size else 0.0
    if 0.0 < top < SMALLEST_GAIN:
        raise InvalidInputError(
            f"weights are too small to compile: their largest tile gain (largest singular value) is "
            f"{_log2_text(float(gain_s.max()), e)}, below {SMALLEST_GAIN:.3g} (2**-970); the simulated program "
            f"computes in float64 with results below the smallest normal float64 "
            f"({np.finfo(np.float64).tiny:.4g}) flushed to zero, which would lose more than float64 rounding. "
            "Multiply the weights by a power of two (e.g. np.ldexp(weights, 600)) and divide the outputs back."
        )
    return pm if e == 0 else pm.replace(gain=gain)


def _restore_dense(dense, e: int) -> np.ndarray:
    """The folded matrix of ``W`` from that of ``W * 2**-e``; refuse entries float64 cannot hold."""
    dense = np.asarray(dense)
    if e != 0:
        own = dense.dtype == np.complex128 and dense.flags.writeable and dense.flags.c_contiguous
        with np.errstate(over="ignore", under="ignore"):
            dense = scale_by_power_of_two(dense, e, out=dense if own else None)
    if not np.all(np.isfinite(dense)):
        raise InvalidInputError(
            f"weights are too large to compile: {int(dense.size - np.count_nonzero(np.isfinite(dense)))} entries "
            f"of the compiled matrix exceed the largest float64 ({np.finfo(np.float64).max:.4g}). Divide the "
            "weights by a power of two (e.g. np.ldexp(weights, -8)) and multiply the outputs back."
        )
    return dense


# ---- pipeline ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _parse_preset(text: str) -> Pipeline:
    """A target's preset pipeline text parsed once per process (pipelines and passes are immutable values)."""
    return Pipeline.parse(text)


def _resolve_pipeline(pipeline, target) -> Pipeline:
    if pipeline is None:
        pipe = _parse_preset(target.default_pipeline())
    elif isinstance(pipeline, Pipeline):
        pipe = pipeline
    elif isinstance(pipeline, str):
        pipe = Pipeline.parse(pipeline)
    else:
        raise InvalidTypeError(f"pipeline must be None, a string or a photocomp.Pipeline; got {type(pipeline).__name__}")
    if "phases" not in pipe.provides:
        raise PipelineError(
            f"pipeline must include a decomposition pass ({target.mesh!r} for target {target.name!r}); got {str(pipe)!r}"
        )
    if "lowered" not in pipe.provides:
        pipe = Pipeline(pipe.passes + (get_pass("lower"),))
    return pipe


def _fits_unitary(w: np.ndarray, k: int) -> bool:
    """Whether ``w`` is a square matrix of at most ``k`` modes that is a scaled unitary to ``UNITARY_TOL``
    (one tile, one mesh). Column norms are compared first (O(N^2)): most matrices stop there."""
    n, m = w.shape
    if n != m or n > k:
        return False
    norms = np.sum(np.abs(w) ** 2, axis=0)
    mean = norms.mean()
    if mean == 0 or np.max(np.abs(norms / mean - 1.0)) > 2 * UNITARY_TOL:
        return False
    with single_threaded_blas():
        return bool(unitary_deviation(w)[1] <= UNITARY_TOL)


def _tiling(pipe: Pipeline, target):
    """Index of the pass that tiles and the tile size it uses, or ``(None, None)``."""
    for i, p in enumerate(pipe.passes):
        if "tiled" in p.provides:
            size = getattr(p, "size", None)
            return i, target.size if size is None else int(size)
    return None, None


def _mesh_fidelity(state: CompileState) -> float | None:
    """The smallest fidelity of the compiled meshes against the factors they implement (the report's summary).

    The mesh matrices the passes simulated last, kept in the state
    (``state.meshes``), serve where they are there. Otherwise a unitary
    program's tile is ``gain U_hat``: where every tile is whole
    (no padding cropped off) and has a positive gain, ``U_hat`` is read off
    the program's dense matrix, simulated already, at O(K^2) per tile instead
    of rebuilding the meshes (:func:`_unitary_fidelities`). Otherwise every
    mesh is rebuilt from its phases (:func:`check_tiles`).
    """
    if state.svd is None or state.phase_map is None:
        return None
    u, _, vh, _ = state.svd
    pm = state.phase_map
    if state.meshes is not None:  # the mesh matrices the last pass simulated with the program's matrix
        v_hat, u_hat = state.meshes
        fids = [np.asarray(fidelity(np.asarray(u, np.complex128), u_hat))]
        if pm.v is not None and v_hat is not None:
            fids.append(np.asarray(fidelity(np.asarray(vh, np.complex128), v_hat)))
        return float(min(f.min() for f in fids))
    if pm.v is None and state.dense is not None:
        fid = _unitary_fidelities(pm, np.asarray(u), np.asarray(state.dense))
        if fid is not None:
            return float(fid.min())
    fid_v, fid_u, _, _ = check_tiles(pm, vh, u)
    return float(fid_u.min() if fid_v is None else min(fid_v.min(), fid_u.min()))


def _unitary_fidelities(pm: PhaseMap, u: np.ndarray, dense: np.ndarray) -> np.ndarray | None:
    """Per tile ``|Tr(U^H U_hat)|^2 / K^2`` of a unitary program from its simulated matrix, or None where it cannot.

    ``dense`` holds ``gain U_hat`` tile by tile; ``Tr(U^H U_hat) = Tr(U^H T) / gain``.
    None when a tile is cropped (padding: part of ``U_hat`` is not in ``dense``)
    or a gain is not positive and finite (a zero tile holds no ``U_hat``).
    """
    g = pm.grid
    gain = np.asarray(pm.gain, dtype=np.float64)
    if g.out_dim != g.rows * g.tile or g.in_dim != g.cols * g.tile or not np.all((gain > 0) & np.isfinite(gain)):
        return None
    tiles = g.split(dense)
    k = g.tile
    tr = np.einsum("tij,tij->t", np.conj(u), tiles) / gain
    return np.abs(tr) ** 2 / k**2


def _summary(weights, dense, fidelity: float | None, e: int = 0) -> dict:
    """The report's summary from the weights and the folded matrix, both scaled by ``2**-e``.

    The relative error is the same at every scale (computed free of
    overflow and underflow); the largest absolute error is scaled back.
    """
    out = {} if fidelity is None else {"min_mesh_fidelity": fidelity}
    w_hat = np.asarray(dense)
    out["matrix_error"] = np_matrix_error(weights, w_hat)
    with np.errstate(over="ignore", under="ignore"):
        out["max_abs_error"] = float(np.ldexp(float(np.max(np.abs(w_hat - weights))), e))
    return out


# ---- ahead-of-time compilation --------------------------------------------------------------

AHEAD_MAX_WORK = 512 * 64**3
"""Largest work (tiles x K^3) of a placeholder run a pass starts ahead of time
(:meth:`photocomp.compiler.pipeline.Pass.ahead`): a decomposition pass runs the tile program on
placeholders of the whole grid (of a strip, for a compile in strips) up to it, about 0.4 s of one
CPU core at 512 tiles of 64 x 64, next to about a second of XLA compilation that it takes off the
compile's path, and its kernel on one group of meshes (its program serves every full group)."""

_ahead_lock = threading.Lock()
_ahead_seen: set = set()


@functools.lru_cache(maxsize=1)
def _ahead_pool() -> concurrent.futures.ThreadPoolExecutor:
    """Two threads: the XLA programs of later passes compile there while the first passes run."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="photocomp-ahead")


def _circuit(pipe: Pipeline) -> str:
    names = {p.name for p in pipe.passes}
    return "crossbar" if "crossbar" in names else ("unitary" if "unitary" in names else "svd")


def _start_ahead(pipe: Pipeline, target: Target, grid: TileGrid) -> dict[int, list[concurrent.futures.Future]]:
    """Start the passes' ahead-of-time functions for ``grid``, once per process and (pass, target, grid shape);
    the futures by pass index, for :meth:`Pipeline.run`. Each pass keeps its placeholders small next to
    what they save (:data:`AHEAD_MAX_WORK`). Nothing on a multi-process runtime."""
    if jax.process_count() > 1:
        return {}  # (a multi-process run gathers every program's outputs: one thread of collectives only)
    circuit = _circuit(pipe)
    out: dict[int, list[concurrent.futures.Future]] = {}
    for i, p in enumerate(pipe.passes):
        key = (p, target, circuit, grid.tile, grid.n_tiles)
        with _ahead_lock:
            if key in _ahead_seen:
                continue
            _ahead_seen.add(key)
        fns = p.ahead(target, grid, circuit)
        if fns:
            prepare_blas_limits()  # before any thread starts: the lookup deadlocks against a thread's import
            out[i] = [_ahead_pool().submit(fn) for fn in fns]
    return out


# ---- joining strips ------------------------------------------------------------------------


def _join_metric(key: str, values: list, norms: list, grid: TileGrid, counts=frozenset()):
    """One metric of a pass from its values on every strip.
    Counts (keys in the pass's ``counts``) add up; ``grid`` becomes the
    whole grid; relative matrix errors (keys containing ``matrix_error``) are
    recombined exactly from the strips' norms into the whole matrix's error.
    Of the rest, equal values are kept; booleans must hold on every strip;
    keys starting with ``min`` take the minimum; other numbers take the
    maximum; other strings are listed.
    """
    first = values[0]
    if key in counts:
        return sum(values)
    if key == "grid":
        return f"{grid.rows}x{grid.cols}"
    if isinstance(first, (int, float)) and not isinstance(first, bool) and "matrix_error" in key:
        abs_err = [v * (w if w > 0 else 1.0) for v, w in zip(values, norms)]
        total = math.sqrt(sum(e * e for e in abs_err))
        norm = math.sqrt(sum(w * w for w in norms))
        return total / norm if norm > 0 else total
    if all(v == first for v in values):
        return first
    if isinstance(first, bool):
        return all(values)
    if isinstance(first, (int, float)) and key.startswith("min"):
        return min(values)
    if isinstance(first, (int, float)):
        return max(values)
    return ", ".join(sorted({str(v) for v in values}))


def _join_records(strip_records: list[tuple], norms: list, grid: TileGrid, passes) -> tuple:
    """Per-pass records of the whole compile from every strip's records (wall times add up).
    ``passes`` are the passes that ran on every strip, in order (their
    ``counts`` say which metrics add up).
    """
    joined = []
    for p, recs in zip(passes, zip(*strip_records)):
        keys = list(dict.fromkeys(k for r in recs for k in r.metrics))
        metrics = {}
        for key in keys:
            values = [r.metrics[key] for r in recs if key in r.metrics]
            metrics[key] = _join_metric(key, values, norms, grid, p.counts)
        joined.append(PassRecord(recs[0].name, recs[0].spec, float(sum(r.wall_s for r in recs)),
                                 types.MappingProxyType(metrics)))
    return tuple(joined)


def _join_phase_maps(maps: list, grid: TileGrid) -> PhaseMap:
    def mesh(parts):
        return MeshPhases(parts[0].layout, *(np.concatenate([getattr(p, f) for p in parts])
                                             for f in ("theta", "phi", "out_phase")))

    return PhaseMap(grid=grid, v=mesh([m.v for m in maps]), sigma=np.concatenate([m.sigma for m in maps]),
                    u=mesh([m.u for m in maps]), gain=np.concatenate([m.gain for m in maps]))


# ---- compile --------------------------------------------------------------------------------


def compile(weights: npt.ArrayLike, target: str | Target = "pace-64", pipeline: str | Pipeline | None = None, *,
            callback: Callable[[Pass, PassRecord, CompileState], object] | None = None,
            progress: bool = False) -> Program:
    """Compile a weight matrix to a phase map for a target chip.
    Args:
      weights: any finite real or complex (M, N) array-like; non-square and
        rank-deficient matrices are fine. Larger than the target: tiled.
      target: a target name (see :func:`photocomp.targets`) or a
        :class:`~photocomp.core.target.Target`.
      pipeline: ``None`` for the target's preset, a pipeline string such as
        ``"tile | svd | clements | canonicalize | quantize(bits=10) | lower"``,
        or a :class:`~photocomp.compiler.pipeline.Pipeline`. A ``lower`` pass is
        appended when missing.
      callback: optional ``callback(pass_, record, state)`` after every pass
        (after every pass on every strip, for a compile run in strips).
      progress: show a progress bar over the passes (and strips).

    Returns:
      a :class:`~photocomp.compiler.program.Program` whose ``report`` holds per-pass
      wall time and metrics.

    Raises:
      InvalidTypeError: if ``weights`` is not a numeric array (a masked
        array, whose mask would be ignored, included).
      InvalidInputError: before any copy of the weights, if the problem
        cannot fit in the memory available (the message gives the size it
        needs and the memory available); if the weights are not finite; or
        if a tile's gain cannot be represented in float64 (see the module
        docstring).

    Weights of any finite magnitude are compiled as accurately as weights
    near 1 (the module docstring says how); ``callback`` then sees the state
    of the scaled compile (``state.weights`` is ``W * 2**-e``), with records
    in the units of the weights.

    Large matrices are compiled in strips of block rows (see the module
    docstring); the result is the same as in one piece, tile by tile, and the
    report joins the strips' records (:func:`_join_metric` says how).
    Inside each pass the tiles are sharded across all JAX devices.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> w = np.random.default_rng(0).normal(size=(5, 3))
      >>> prog = pc.compile(w, target="clements-8")
      >>> prog.report.summary["matrix_error"] < 1e-2
      True
    """
    # no user code runs inside a compile without callbacks: one BLAS limit for all of it (else Pipeline.run's)
    limit = single_threaded_blas() if callback is None and not progress else contextlib.nullcontext()
    with remembered_unitary_deviations(), limit:  # the weights and then the unitary pass's tile: checked once
        return _compile(weights, target, pipeline, callback, progress)


def _compile(weights, target, pipeline, callback, progress) -> Program:
    """:func:`compile`'s body."""
    available = available_memory()  # before anything is allocated for this compile
    tgt = get_target(target)
    pipe = _resolve_pipeline(pipeline, tgt)
    split, k = _tiling(pipe, tgt)
    shape, host_bytes = _input_bytes(weights)
    if shape is not None and len(shape) == 2 and 0 not in shape:
        _check_memory(shape, k, available, host_bytes)  # before the weights are converted or copied
    view = matrix_view(weights, "weights")
    plan = _check_memory(view.shape, k, available)
    w = as_matrix(view, "weights")  # our own complex128 copy: scaled in place below
    del view
    e = power_of_two_exponent(w) if needs_scaling(w) else 0
    if e:
        scale_by_power_of_two(w, -e, out=w)
    if pipeline is None and "unitary" in tgt.circuits and _fits_unitary(w, k):
        pipe = _resolve_pipeline(_parse_preset(tgt.default_pipeline("unitary")), tgt)
    strips = plan.strips if plan is not None else [(0, w.shape[0])]
    prefix, suffix = (pipe.passes[:split], pipe.passes[split:]) if len(strips) > 1 else ((), pipe.passes)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prefix) + len(suffix) * len(strips),
                   desc=f"compile {w.shape[0]}x{w.shape[1]} -> {tgt.name}", unit="pass")
    where = ""

    def hook(p, rec, st):
        if bar is not None:
            bar.set_postfix_str(p.name + where)
            bar.update(1)
        if callback is not None:
            callback(p, _in_weight_units(p, rec, e), st)

    # without a hook the passes run under one BLAS limit (Pipeline.run leaves it for every callback)
    run_hook = hook if bar is not None or callback is not None else None

    def report(records, summary):
        records = tuple(_in_weight_units(p, r, e) for p, r in zip(pipe.passes, records))
        return CompileReport(records, types.MappingProxyType(summary))

    try:
        state = CompileState(weights=w, target=tgt, provided=frozenset(INITIAL_PROPERTIES))
        if prefix:
            state = Pipeline(prefix).run(state, callback=run_hook)
        if len(strips) == 1:
            ahead = _start_ahead(pipe, tgt, TileGrid(out_dim=w.shape[0], in_dim=w.shape[1], tile=k)) if k else {}
            state = Pipeline(suffix).run(state, callback=run_hook, ahead=ahead)
            phase_map = _restore_scale(state.require("phase_map", "clements"), e)
            summary = _summary(w, state.dense, _mesh_fidelity(state), e)
            dense = _restore_dense(state.dense, e)
            return Program(tgt, phase_map, report(state.records, summary), str(pipe), state.detection, dense)

        # strips of block rows, plan.in_flight at once (in threads); results taken in order
        assert plan is not None  # only a memory plan cuts the matrix into strips
        hook_lock, failed = threading.Lock(), threading.Event()

        def run_strip(i, r0, r1):
            if failed.is_set():  # an earlier strip failed: its error is the one raised (strips start in order)
                raise concurrent.futures.CancelledError()
            try:
                return compile_strip(i, r0, r1)
            except BaseException:
                failed.set()
                raise

        def compile_strip(i, r0, r1):
            label = f" (rows {r0}-{r1 - 1}, strip {i + 1}/{len(strips)})"

            def strip_hook(p, rec, st):  # one callback at a time, from whichever strip's thread
                nonlocal where
                with hook_lock:
                    where = label
                    hook(p, rec, st)

            part = Pipeline(suffix).run(
                CompileState(weights=w[r0:r1], target=tgt, provided=state.provided), callback=strip_hook,
                ahead=ahead)
            _restore_scale(part.require("phase_map", "clements"), e, r0 // plan.grid.tile)  # refuse early
            return (part.phase_map, np.asarray(part.dense), part.records, np_norm(w[r0:r1]), _mesh_fidelity(part),
                    part.detection)

        # the programs of a strip's shape compile while the first strips' first passes run
        ahead = _start_ahead(Pipeline(suffix), tgt, TileGrid(out_dim=strips[0][1] - strips[0][0], in_dim=w.shape[1],
                                                             tile=plan.grid.tile))
        maps, denses, records, norms, fids, detection = [], [], [], [], [], "coherent"
        with concurrent.futures.ThreadPoolExecutor(max_workers=plan.in_flight,
                                                   thread_name_prefix="photocomp-strip") as pool:
            futures = [pool.submit(run_strip, i, r0, r1) for i, (r0, r1) in enumerate(strips)]
            try:
                for future in futures:
                    strip_map, strip_dense, strip_records, norm, fid, detection = future.result()
                    maps.append(strip_map)
                    denses.append(strip_dense)
                    records.append(strip_records)
                    norms.append(norm)
                    if fid is not None:
                        fids.append(fid)
            except BaseException:  # the first failing strip's error (Ctrl-C included): start no other
                for future in futures:
                    future.cancel()
                raise
        grid = plan.grid
        dense = np.concatenate(denses)
        del denses
        summary = _summary(w, dense, min(fids) if fids else None, e)
        dense = _restore_dense(dense, e)
        phase_map = _restore_scale(_join_phase_maps(maps, grid), e)
        return Program(tgt, phase_map, report(state.records + _join_records(records, norms, grid, suffix), summary),
                       str(pipe), detection, dense)
    finally:
        if bar is not None:
            bar.close()
