"""Figures of compiled and calibrated programs, and of thermal drift studies.

Kinds of figure (``what``), each a :class:`PlotKind` in one registry:

* ``"phases"`` – phase maps as heatmaps: theta and phi of every MZI of the V
  and U meshes (mode pair x column) for the chosen tiles, the attenuator
  angles sigma of all tiles (tile x mode) and the tiles' gains.
* ``"mesh"`` – the circuit drawing of one tile on the networkx circuit
  view's layout (:func:`photocomp.core.graph.circuit_graph`): waveguides along the
  modes, every MZI a bar across its two modes coloured by theta, every
  attenuator by sigma (same scale), every output phase shifter by its phase.
* ``"calibration"`` – for a calibrated program: the matrix error of every
  tile on its chip before (ideal settings) and after calibration
  (:func:`photocomp.calibration.calibrate.error`), and reachability maps
  (:func:`photocomp.calibration.calibrate.reachability`): how many tiles need a
  splitting each MZI cannot reach, with the error clipping them leaves.

A unitary program (``prog.circuit == "unitary"``: one mesh per tile, stored
as U) has no V mesh and no attenuators: its figures leave those panels out
and their titles say so.
* ``"drift"`` – a thermal drift study (:func:`photocomp.drift.study`, or the
  CSV file ``photocomp drift -o`` / :meth:`~photocomp.drift.DriftStudy.to_csv`
  writes): the matrix error against time for every compensator (median and
  range over runs, the fresh calibration dotted), the die's temperature state
  (ambient and the two end-to-end gradients, K) of run 0 and, for a study
  in memory, the die's temperature field at the last time.

Extension point: a kind is ``PlotKind(name, draw, load, description)`` with
``draw(fig, source, tile=None)`` filling a matplotlib Figure and
``load(path)`` reading the file ``photocomp plot`` is given.
:func:`register_plot` adds one; ``photocomp plot --what`` offers every
registered name.

matplotlib is imported only when a figure is drawn; figures are built on the
Agg canvas directly (no pyplot, no global backend state) and written
atomically (:func:`photocomp.core.atomic.atomic_write`) as PNG, PDF or SVG.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from photocomp.calibration.engine import error, reachability
from photocomp.compiler.program import Program, load
from photocomp.core.atomic import atomic_write
from photocomp.core.errors import InvalidInputError, InvalidTypeError, PhaseMapFileError, UnknownNameError
from photocomp.core.validate import check_int
from photocomp.drift.studies import DriftStudy, read_csv

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure

__all__ = ["PlotKind", "register_plot", "plot_kinds", "figure", "save_figure", "plot", "plot_file", "FORMATS"]

FORMATS = (".png", ".pdf", ".svg")
MAX_TILES = 4
"""Tiles the ``phases`` figure shows when no tile is chosen (the first ones)."""

_THETA_CMAP = "viridis"
_PHASE_CMAP = "hsv"  # cyclic: 0 and 2 pi look alike


@dataclasses.dataclass(frozen=True)
class PlotKind:
    """One kind of figure.
    Attributes:
      name: the ``what`` name (``photocomp plot --what NAME``).
      draw: ``draw(fig, source, tile=None)`` fills a matplotlib Figure.
      load: ``load(path)`` returns the source object from a file.
      description: one line for help texts.
    """
    name: str
    draw: Callable
    load: Callable
    description: str = ""


_KINDS: dict[str, PlotKind] = {}


def register_plot(kind: PlotKind, *, replace: bool = False) -> PlotKind:
    """Add a kind of figure to the registry (``replace=True`` to redefine a name)."""
    if not isinstance(kind, PlotKind):
        raise InvalidTypeError(f"kind must be a photocomp.analysis.plot.PlotKind; got {type(kind).__name__}")
    if not isinstance(kind.name, str) or not kind.name.isidentifier():
        raise InvalidInputError(f"kind.name must be an identifier-like string; got {kind.name!r}")
    if kind.name in _KINDS and not replace:
        raise InvalidInputError(f"kind.name must be new (or pass replace=True); {kind.name!r} is registered")
    _KINDS[kind.name] = kind
    return kind


def plot_kinds() -> list[str]:
    """Names of the registered kinds of figure."""
    return sorted(_KINDS)


def _kind(what) -> PlotKind:
    if what not in _KINDS:
        raise UnknownNameError(f"what must be one of {plot_kinds()}; got {what!r}")
    return _KINDS[what]


# ---- helpers ------------------------------------------------------------------------


def _program(source):

    if not isinstance(source, Program):
        raise InvalidTypeError(f"source must be a photocomp.Program (from photocomp.compile or load); got {type(source).__name__}")
    return source


def _load_program(path):

    return load(path)


def _check_tile(tile, n_tiles: int):
    if tile is None:
        return None
    tile = check_int(tile, "tile", low=0)
    if tile >= n_tiles:
        raise InvalidInputError(f"tile must be in [0, {n_tiles - 1}]; got {tile}")
    return tile


def _mesh_grid(layout, values) -> np.ndarray:
    """(N - 1, depth) image of per-MZI ``values``: row = upper mode, column = MZI column; NaN where no MZI.
    A crossbar's cells: the (N, N) matrix they realise, row = output, column = input."""
    if layout.crossbar:
        return np.asarray(values, dtype=np.float64).reshape(layout.n_modes, layout.n_modes)
    grid = np.full((max(layout.n_modes - 1, 1), max(layout.depth, 1)), np.nan)
    grid[layout.pair_array, layout.column_array] = np.asarray(values, dtype=np.float64)
    return grid


def _integer_ticks(ax, axes: str = "xy"):
    """Integer tick positions only, also when an axis spans a single cell (one tile, one row)."""
    from matplotlib.ticker import MaxNLocator

    for name in axes:
        getattr(ax, f"{name}axis").set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _image(fig, ax, data, *, cmap, vmin, vmax, title, xlabel, ylabel, colorbar=True, label="rad"):
    """Heatmap of ``data``; NaN cells (no element there) in grey."""
    import matplotlib

    cmap = matplotlib.colormaps[cmap].with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                   interpolation="nearest")
    _integer_ticks(ax)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(label, fontsize=8)
    return im


# ---- phases -------------------------------------------------------------------------


def _draw_phases(fig, source, tile=None):
    prog = _program(source)
    pm = prog.phase_map
    tile = _check_tile(tile, pm.n_tiles)
    tiles = [tile] if tile is not None else list(range(min(pm.n_tiles, MAX_TILES)))
    lay = pm.layout
    svd = pm.circuit == "svd"
    meshes = (("V", pm.v), ("U", pm.u)) if svd else (("U", pm.u),)
    grid = fig.add_gridspec(len(tiles) + 1, 2 * len(meshes))
    half_pi, two_pi = np.pi / 2, 2 * np.pi
    for row, t in enumerate(tiles):
        panels = []
        for stage, mp in meshes:
            panels += [(f"{stage} theta", mp.theta[t], _THETA_CMAP, half_pi), (f"{stage} phi", mp.phi[t], _PHASE_CMAP, two_pi)]
        for col, (name, values, cmap, vmax) in enumerate(panels):
            ax = fig.add_subplot(grid[row, col])
            if lay.crossbar:  # the weight cells as the matrix they realise: row = output, column = input
                _image(fig, ax, _mesh_grid(lay, values), cmap=cmap, vmin=0.0, vmax=vmax, title=f"tile {t}: weight cells {name[2:]}", xlabel="input j",
                       ylabel="output i", colorbar=row == 0)
                continue
            _image(fig, ax, _mesh_grid(lay, values), cmap=cmap, vmin=0.0, vmax=vmax,
                   title=f"tile {t}: {name}", xlabel="column", ylabel="upper mode", colorbar=row == 0)
    if svd:
        ax = fig.add_subplot(grid[-1, :2])
        _image(fig, ax, np.asarray(pm.sigma), cmap=_THETA_CMAP, vmin=0.0, vmax=half_pi,
               title="attenuators sigma (amplitude cos sigma)", xlabel="mode", ylabel="tile")
        ax = fig.add_subplot(grid[-1, 2:])
    else:
        ax = fig.add_subplot(grid[-1, :])
    ax.bar(np.arange(pm.n_tiles), np.asarray(pm.gain), color="0.4")
    _integer_ticks(ax)
    ax.set_title("electronic gain per tile", fontsize=9)
    ax.set_xlabel("tile", fontsize=8)
    ax.set_ylabel("gain (tile's largest singular value)" if svd else
                  ("gain (K x the tile's largest entry)" if lay.crossbar else "gain (scale of the tile's unitary)"),
                  fontsize=8)
    ax.tick_params(labelsize=7)
    shown = "all tiles" if len(tiles) == pm.n_tiles else f"tiles {tiles} of {pm.n_tiles}"
    circuit = "" if svd else ("\ncrossbar circuit: one weight cell e^{i phi} cos(theta) per entry" if lay.crossbar
                              else "\nunitary circuit: one mesh (U) per tile, no V mesh or attenuators")
    fig.suptitle(f"{prog.target.name}: phase map of a {prog.shape[0]}x{prog.shape[1]} program ({shown}){circuit}",
                 fontsize=10)


# ---- mesh ---------------------------------------------------------------------------


def _draw_mesh(fig, source, tile=None):
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    prog = _program(source)
    tile = _check_tile(tile, prog.n_tiles) or 0
    if prog.phase_map.layout.crossbar:
        _draw_crossbar(fig, prog, tile)
        return
    g = prog.graph(tile)
    k = g.graph["modes"]
    ax = fig.add_subplot(1, 1, 1)
    nodes = g.nodes
    wires = [((nodes[u]["x"], e["mode"]), (nodes[v]["x"], e["mode"])) for u, v, e in g.edges(data=True)]
    ax.add_collection(LineCollection(wires, colors="0.75", linewidths=0.8, zorder=1))
    theta_norm = Normalize(0.0, np.pi / 2)
    phase_norm = Normalize(0.0, 2 * np.pi)
    mzis = [(d["x"], d["mode"], d["lower"], d["theta"]) for _, d in g.nodes(data=True) if d["kind"] == "mzi"]
    # a butterfly's MZIs on (n, n + d), d > 1, would overlap in their column: spread them over half a column
    mzis = [(x + (0.5 * (n % (n2 - n)) / (n2 - n) - 0.25 if n2 - n > 1 else 0.0), n, n2, th) for x, n, n2, th in mzis]
    bars = LineCollection([((x, n), (x, n2)) for x, n, n2, _ in mzis], cmap=_THETA_CMAP, norm=theta_norm,
                          linewidths=max(1.5, 60.0 / max(k, 1)), zorder=2)
    bars.set_array(np.asarray([th for *_, th in mzis]))
    ax.add_collection(bars)
    size = max(4.0, 400.0 / max(k, 1))
    att = [(d["x"], d["mode"], d["sigma"]) for _, d in g.nodes(data=True) if d["kind"] == "attenuator"]
    if att:
        ax.scatter([a[0] for a in att], [a[1] for a in att], c=[a[2] for a in att], cmap=_THETA_CMAP,
                   norm=theta_norm, marker="s", s=size, edgecolors="k", linewidths=0.3, zorder=3)
    ps = [(d["x"], d["mode"], d["phase"]) for _, d in g.nodes(data=True) if d["kind"] == "phase"]
    sc = ax.scatter([p[0] for p in ps], [p[1] for p in ps], c=[p[2] for p in ps], cmap=_PHASE_CMAP, norm=phase_norm,
                    marker="o", s=size, edgecolors="k", linewidths=0.3, zorder=3)
    bar_label = "MZI theta, attenuator sigma (rad)" if att else "MZI theta (rad)"
    fig.colorbar(bars, ax=ax, fraction=0.03, pad=0.01).set_label(bar_label, fontsize=8)
    fig.colorbar(sc, ax=ax, fraction=0.03, pad=0.04).set_label("output phase (rad)", fontsize=8)
    xs = [d["x"] for _, d in g.nodes(data=True)]
    ax.set_xlim(min(xs) - 1.0, max(xs) + 1.0)
    ax.set_ylim(k - 0.5, -0.5)
    _integer_ticks(ax)
    if k <= 16:
        for m in range(k):
            ax.text(min(xs), m, f"in {m} ", ha="right", va="center", fontsize=7)
            ax.text(max(xs), m, f" out {m}", ha="left", va="center", fontsize=7)
    ax.set_xlabel("position along the chip (MZI columns)", fontsize=8)
    ax.set_ylabel("mode", fontsize=8)
    ax.tick_params(labelsize=7)
    stages = ("(V mesh | attenuators | U mesh)" if prog.circuit == "svd"
              else "\n(unitary circuit: one mesh (U), no V mesh or attenuators)")
    ax.set_title(f"{prog.target.name}: {g.graph['mesh']} circuit of tile {tile} of {prog.n_tiles} {stages}",
                 fontsize=10)


def _draw_crossbar(fig, prog, tile: int) -> None:
    """A crossbar's circuit: its weight array as the tile's matrix, amplitude and phase of every cell
    (the trees are the same in every program, :mod:`photocomp.core.crossbar`)."""
    mp = prog.phase_map.u
    k = mp.layout.n_modes
    theta = np.asarray(mp.theta)[tile].reshape(k, k)
    phi = np.asarray(mp.phi)[tile].reshape(k, k)
    for col, (data, cmap, vmax, name, label) in enumerate((
            (np.cos(theta), "viridis", 1.0, "amplitude cos(theta)", ""),
            (phi, _PHASE_CMAP, 2 * np.pi, "phase phi", "rad"))):
        ax = fig.add_subplot(1, 2, col + 1)
        _image(fig, ax, data, cmap=cmap, vmin=0.0, vmax=vmax, title=f"weight cells: {name}", xlabel="input j",
               ylabel="output i", label=label)
    fig.suptitle(f"{prog.target.name}: crossbar circuit of tile {tile} of {prog.n_tiles} (fan-out trees, "
                 f"{k}x{k} weight cells, fan-in trees onto balanced detectors)", fontsize=10)


# ---- calibration --------------------------------------------------------------------


ZERO_ERROR_AT = 1e-16
"""Where the calibration figure draws a tile error of exactly 0 on its log axis when no value shown is
positive; otherwise a zero is drawn a decade below the smallest positive value shown. Either way a
dotted line in the legend says where, and the bar is labelled 0."""

_LOG_MARGIN = 4.0
"""Least factor left below the smallest and above the largest value on a log error axis, so every bar
has a visible height (bars on a log axis rise from the bottom of the axis); over a wide range the
margin grows to a fifth of the range."""


def _error_bars(ax, before, after, floor: float = 0.0):
    """Bars of every tile's error before and after calibration on a log axis whose limits show each bar.

    A zero error is drawn a decade below the smallest positive value (see :data:`ZERO_ERROR_AT`).
    The limits span every bar and the error of clipping unreachable cells (``floor``, a dashed line,
    when positive), with a
    margin of ``_LOG_MARGIN`` below and room for the legend above.
    """
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    values = np.concatenate([before, after, [floor]])
    positive = values[np.isfinite(values) & (values > 0)]
    zero_at = positive.min() / 10.0 if positive.size else ZERO_ERROR_AT
    is_zero = np.concatenate([before, after]) == 0

    def bar_heights(v):
        return np.where(v == 0, zero_at, v)

    idx = np.arange(before.size)
    ax.bar(idx - 0.2, bar_heights(before), width=0.4, label="ideal settings (uncalibrated)", color="0.6")
    ax.bar(idx + 0.2, bar_heights(after), width=0.4, label="calibrated", color="tab:blue")
    if floor > 0:
        ax.axhline(floor, color="tab:red", linestyle="--", linewidth=1, label=f"clipping unreachable cells {floor:.2e}")
    if is_zero.any():
        ax.axhline(zero_at, color="0.3", linestyle=":", linewidth=0.8, label=f"error 0 (drawn at {zero_at:.1e})")
        for x in np.concatenate([idx - 0.2, idx + 0.2])[is_zero]:
            ax.text(x, zero_at, "0", ha="center", va="bottom", fontsize=7)
    shown = np.concatenate([bar_heights(before), bar_heights(after), [floor] if floor > 0 else []])
    shown = shown[np.isfinite(shown)]
    ax.set_yscale("log")
    if shown.size:
        bottom, top = np.log10(shown.min()), np.log10(shown.max())
        margin = max(np.log10(_LOG_MARGIN), 0.2 * (top - bottom))  # the smallest bar: over a tenth of the axis
        lo = bottom - margin
        # headroom above the tallest bar for the one-row legend
        ax.set_ylim(10.0 ** lo, 10.0 ** (top + max(np.log10(_LOG_MARGIN), 0.3 * (top - lo))))
    _integer_ticks(ax, "x")
    ax.set_xlim(-0.6, before.size - 0.4)
    ax.set_xlabel("tile", fontsize=8)
    ax.set_ylabel("matrix error", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper center", ncol=4)  # one row, in the headroom above the bars


def _draw_calibration(fig, source, tile=None):

    prog = _program(source)
    if not prog.calibrated:
        raise InvalidInputError(
            "source must be a calibrated program (photocomp.calibration.calibrate, or 'photocomp calibrate'); got an uncalibrated one"
        )
    tile = _check_tile(tile, prog.n_tiles)
    chip = prog.chip
    ideal = Program(prog.target, prog.phase_map, prog.report, prog.pipeline, prog.detection)
    before = np.asarray(error(ideal, chip)["tile_errors"])
    after = np.asarray(error(prog, chip)["tile_errors"])
    reach = reachability(prog, chip)
    grid = fig.add_gridspec(2, 3)

    ax = fig.add_subplot(grid[0, :])
    _error_bars(ax, before, after, reach.clip_error)
    ax.set_title(f"per-tile error on chip seed {chip.seed}", fontsize=9)

    lay = prog.phase_map.layout
    svd = prog.circuit == "svd"
    if tile is not None or prog.n_tiles == 1:
        what = f"tile {tile or 0}"
    else:
        what = f"tiles (count of {prog.n_tiles})"
    pick = (lambda m: m[tile].astype(float)) if tile is not None else (lambda m: m.sum(axis=0).astype(float))
    vmax = 1.0 if tile is not None else float(prog.n_tiles)
    meshes = (("V mesh", reach.v), ("U mesh", reach.u)) if svd else (
        ("weight cells" if lay.crossbar else "U mesh (the only mesh)", reach.u),)
    axes = ("input j", "output i") if lay.crossbar else ("column", "upper mode")
    for col, (name, mask) in enumerate(meshes):
        ax = fig.add_subplot(grid[1, col] if svd else grid[1, :])
        _image(fig, ax, _mesh_grid(lay, pick(np.asarray(mask))), cmap="Reds", vmin=0.0, vmax=vmax,
               title=f"{name}: unreachable in {what}", xlabel=axes[0], ylabel=axes[1], label="count")
    if svd:
        ax = fig.add_subplot(grid[1, 2])
        att = reach.att[tile][None, :] if tile is not None else reach.att
        _image(fig, ax, att.astype(float), cmap="Reds", vmin=0.0, vmax=1.0,
               title="attenuators: unreachable", xlabel="mode", ylabel="tile" if tile is None else "",
               label="unreachable")
    circuit = "" if svd else ("\ncrossbar circuit: one weight cell per entry" if lay.crossbar
                              else "\nunitary circuit: one mesh (U), no V mesh or attenuators")
    fig.suptitle(f"{prog.target.name}: calibration on chip seed {chip.seed}; unreachable MZIs "
                 f"{reach.count} ({100 * reach.fraction:.2f} %), clipping them {reach.clip_error:.2e}{circuit}", fontsize=10)


# ---- drift --------------------------------------------------------------------------

_DRIFT_KEYS = ("times_s", "errors", "temperature")
_FIELD_LABELS = ("ambient", "gradient along x (end to end)", "gradient along y (end to end)")


@dataclasses.dataclass(frozen=True)
class _DriftTraces:
    times_s: np.ndarray  # (S + 1,) s
    errors: dict  # {compensator: (runs, S + 1)}
    temperature: np.ndarray  # (runs, S + 1, 3) K
    fresh_error: float
    title: str
    die: object = None


def _drift_traces(source) -> _DriftTraces:
    """The traces of a :class:`~photocomp.drift.DriftStudy` or of :func:`photocomp.drift.read_csv`'s dict, checked."""
    if isinstance(source, DriftStudy):
        i = source.info
        circuit = "" if i.get("circuit", "svd") == "svd" else f" ({i['circuit']} circuit)"
        title = (f"{i['target']} chip seed {i['chip_seed']}{circuit}: thermal drift over {i['duration_s'] / 3600:.3g} h, "
                 f"{i['runs']} run(s), dt = {i['dt_s']:g} s")
        return _DriftTraces(np.asarray(source.times_s, dtype=np.float64), dict(source.errors),
                            np.asarray(source.temperature, dtype=np.float64), float(source.fresh_error), title,
                            source.die)
    if not isinstance(source, dict) or not set(_DRIFT_KEYS) <= set(source):
        raise InvalidTypeError("source must be a photocomp.drift.DriftStudy or the dict photocomp.drift.read_csv "
                               f"returns (keys {list(_DRIFT_KEYS)}); got {type(source).__name__}")
    times = np.asarray(source["times_s"], dtype=np.float64)
    temp = np.asarray(source["temperature"], dtype=np.float64)
    errors = source["errors"]
    if times.ndim != 1 or times.size < 1:
        raise InvalidInputError(f"source['times_s'] must be a 1-D array of sample times; got shape {times.shape}")
    if not isinstance(errors, dict) or not errors:
        raise InvalidInputError(f"source['errors'] must be a non-empty dict {{compensator: (runs, steps)}}; got {errors!r:.80}")
    errors = {str(k): np.asarray(v, dtype=np.float64) for k, v in errors.items()}
    first = next(iter(errors.values()))
    runs = first.shape[0] if first.ndim == 2 else 0
    for name, e in errors.items():
        if runs < 1 or e.shape != (runs, times.size):
            raise InvalidInputError(f"source['errors'][{name!r}] must have shape (runs >= 1, {times.size}), the same "
                                    f"for every compensator; got {e.shape}")
    if temp.shape != (runs, times.size, 3):
        raise InvalidInputError(f"source['temperature'] must have shape ({runs}, {times.size}, 3); got {temp.shape}")
    fresh = float(np.mean(first[:, 0]))
    where = f" ({os.path.basename(str(source['file']))})" if "file" in source else ""
    title = f"thermal drift over {(times[-1] - times[0]) / 3600:.3g} h, {runs} run(s){where}"
    return _DriftTraces(times, errors, temp, fresh, title)


_DRIFT_LINESTYLES = ("-", "--", "-.", (0, (4, 1, 1, 1, 1, 1)))  # none dotted: that is the fresh calibration
_DRIFT_MARKERS = ("", "o", "s", "^", "D", "v", "x")


def _drift_style(i: int, n: int) -> dict:
    """Line style of the ``i``-th of ``n`` compensators on the drift figure.

    Traces often coincide (a compensator that has not acted yet follows ``"none"``), so each line
    differs from every other in colour, dash pattern and marker (distinct for up to 28 lines), and
    earlier lines are wider and drawn below later ones: where two traces overlap, both stay visible.
    """
    return {
        "color": f"C{i % 10}",
        "linestyle": _DRIFT_LINESTYLES[i % len(_DRIFT_LINESTYLES)],
        "marker": _DRIFT_MARKERS[i % len(_DRIFT_MARKERS)],
        "markersize": 4.5,
        "fillstyle": "none",
        "lw": 1.0 + 1.6 * (n - 1 - i) / max(n - 1, 1),
        "zorder": 2.0 + i / max(n, 1),
    }


def _draw_drift(fig, source, tile=None):
    if tile is not None:
        raise InvalidInputError(f"tile must be None for the drift figure (a study covers every tile); got {tile!r}")
    d = _drift_traces(source)
    panels = fig.subplots(1, 3 if d.die is not None else 2, width_ratios=[1.3, 1, 1.2][: 3 if d.die is not None else 2])
    ax_e, ax_t = panels[0], panels[1]
    hours = d.times_s / 3600.0
    scale, unit = (60.0, "min") if hours[-1] < 1.5 else (1.0, "h")
    x = hours * scale
    runs = next(iter(d.errors.values())).shape[0]
    n = len(d.errors)
    every = max(1, x.size // 12)
    for i, (name, e) in enumerate(d.errors.items()):
        style = _drift_style(i, n)
        marks = (min(x.size - 1, (i * every) // n), every)  # staggered: markers of equal traces do not coincide
        (line,) = ax_e.plot(x, np.median(e, axis=0), label=name, markevery=marks, **style)
        if runs > 1:
            ax_e.fill_between(x, e.min(axis=0), e.max(axis=0), color=line.get_color(), alpha=0.12, lw=0)
    ax_e.axhline(d.fresh_error, color="k", ls=":", lw=1, label="fresh calibration")
    ax_e.set_yscale("log")
    drawn = np.concatenate([np.ravel(e) for e in d.errors.values()] + [[d.fresh_error]])
    drawn = drawn[np.isfinite(drawn) & (drawn > 0)]
    if drawn.size:  # a margin below the fresh calibration, which the compensated lines often follow
        ax_e.set_ylim(drawn.min() / 1.25, drawn.max() * 1.25)
    ax_e.set_xlabel(f"time ({unit})")
    ax_e.set_ylabel("matrix error")
    ax_e.set_title("error against time" + (f" (median, range of {runs} runs)" if runs > 1 else ""), fontsize=9)
    ax_e.legend(fontsize=8)
    for k, lab in enumerate(_FIELD_LABELS):
        ax_t.plot(x, d.temperature[0, :, k], label=lab, lw=1.2)
    ax_t.set_xlabel(f"time ({unit})")
    ax_t.set_ylabel("temperature change (K)")
    ax_t.set_title("die temperature state (run 0)", fontsize=9)
    ax_t.legend(fontsize=8)
    if d.die is not None:
        ax_f, die = panels[2], d.die
        lo, hi = die.centre - die.extent / 2, die.centre + die.extent / 2
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 60))
        field = die.field(np.stack([gx, gy], -1), d.temperature[0, -1])
        im = ax_f.pcolormesh(gx / 1000, gy / 1000, field, shading="auto", cmap="coolwarm")
        ax_f.plot(die.heater_xy[:, 0] / 1000, die.heater_xy[:, 1] / 1000, ",", color="k", alpha=0.4)
        fig.colorbar(im, ax=ax_f, label="temperature change (K)")
        ax_f.set_xlabel("x along the light (mm)")
        ax_f.set_ylabel("y across the modes (mm)")
        ax_f.set_title(f"die field at t = {x[-1]:.3g} {unit} (run 0), heaters dotted", fontsize=9)
    fig.suptitle(d.title, fontsize=10)


def _load_drift(file):

    try:
        return dict(read_csv(file), file=os.fspath(file))
    except (PhaseMapFileError, InvalidTypeError) as exc:  # name the argument of this call, not read_csv's
        msg = str(exc)
        raise type(exc)("file" + msg[len("path"):] if msg.startswith("path ") else msg) from None


register_plot(PlotKind("phases", _draw_phases, _load_program,
                       "phase maps of the V/U meshes per tile (a unitary program: its one mesh), sigma and gains"))
register_plot(PlotKind("mesh", _draw_mesh, _load_program, "circuit drawing of one tile, every MZI coloured by its setting"))
register_plot(PlotKind("calibration", _draw_calibration, _load_program,
                       "per-tile error before/after calibration and reachability maps (calibrated files)"))
register_plot(PlotKind("drift", _draw_drift, _load_drift,
                       "error against time per compensator and the die's temperature (drift study CSV files)"))


# ---- entry points ------------------------------------------------------------------


def _figsize(what, source, tile):
    if what == "drift":
        return (13.0, 4.4) if getattr(source, "die", None) is not None else (10.0, 4.4)
    pm = getattr(source, "phase_map", None)
    if pm is None:
        return (10.0, 6.0)
    k = pm.grid.tile
    if what == "mesh":  # the drawing spans the circuit's columns, the output screens and the ports
        width = min(40.0, max(8.0, 0.14 * (pm.depth + 4)))
        return (width, min(30.0, max(3.5, 0.16 * k + 1.5)))
    if what == "phases":
        rows = (1 if tile is not None else min(pm.n_tiles, MAX_TILES)) + 1
        return (15.0 if pm.v is not None else 10.0, 2.8 * rows)
    return (13.0, 8.0)


def figure(source: object, what: str = "phases", *, tile: int | None = None) -> Figure:
    """A matplotlib Figure (Agg canvas) of kind ``what`` for ``source`` (see :func:`plot`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kind = _kind(what)
    fig = Figure(figsize=_figsize(what, source, tile), layout="constrained")
    FigureCanvasAgg(fig)
    kind.draw(fig, source, tile=tile)
    return fig


def _check_path(path) -> tuple[str, str]:
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"path must be a file path (str or os.PathLike); got {type(path).__name__}")
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise InvalidInputError(f"path must end in {', '.join(FORMATS)}; got {path!r}")
    return path, ext[1:]


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> str:
    """Write a matplotlib Figure to ``path`` (.png, .pdf or .svg) atomically; returns the path."""
    path, fmt = _check_path(path)
    dpi = check_int(dpi, "dpi", low=10, high=1200)
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))


def plot(source: object, path: str | os.PathLike, what: str = "phases", *, tile: int | None = None,
         dpi: int = 150) -> str:
    """Draw figure ``what`` of ``source`` and write it to ``path``; returns the path.
    Args:
      source: a :class:`~photocomp.compiler.program.Program` (calibrated for
        ``"calibration"``); for ``"drift"`` a
        :class:`~photocomp.drift.DriftStudy` or the dict
        :func:`photocomp.drift.read_csv` returns.
      path: output file, ``.png``, ``.pdf`` or ``.svg``.
      what: a registered kind (:func:`plot_kinds`): ``"phases"``, ``"mesh"``,
        ``"calibration"``, ``"drift"``.
      tile: ``phases``: show only this tile (default the first few);
        ``mesh``: the tile drawn (default 0); ``calibration``: reachability of
        this tile (default counts over all tiles); ``drift``: must be None.
      dpi: raster resolution.

    Example:
      >>> import numpy as np, photocomp as pc, tempfile, os
      >>> from photocomp.analysis.plot import plot
      >>> prog = pc.compile(np.eye(3), target="clements-4")
      >>> out = plot(prog, os.path.join(tempfile.mkdtemp(), "mesh.png"), what="mesh")
    """
    _check_path(path)  # before drawing: a bad path fails fast
    _kind(what)
    return save_figure(figure(source, what, tile=tile), path, dpi=dpi)


def plot_file(file: str | os.PathLike, path: str | os.PathLike, what: str = "phases", *, tile: int | None = None,
              dpi: int = 150) -> str:
    """:func:`plot` of what the kind's loader reads from ``file``.
    ``file`` is a phase-map file (``.npz``) for ``phases``, ``mesh`` and
    ``calibration``, and a drift study's CSV file for ``drift``.
    """
    _check_path(path)
    return plot(_kind(what).load(file), path, what, tile=tile, dpi=dpi)
