"""Figures (photocomp.analysis.plot) and the plot CLI: files written, contents, errors, the extension point."""

import functools
import subprocess
import sys

import numpy as np
import pytest
from conftest import random_matrix
from conftest import run_cli as _run
from hypothesis import given, settings
from hypothesis import strategies as st

import photocomp as pc
from photocomp.analysis.plot import PlotKind, figure, plot, plot_file, plot_kinds, register_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@functools.cache
def _program():
    return pc.compile(random_matrix(np.random.default_rng(21), (6, 5), "real"), target="clements-4")


@functools.cache
def _calibrated():
    return pc.calibrate(_program(), pc.fabricate("clements-4", seed=3), method="local", progress=False)


def _is_png(path) -> bool:
    data = open(path, "rb").read()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_matplotlib_is_imported_lazily():
    code = "import sys, photocomp, photocomp.analysis.plot, photocomp.cli; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_kinds():
    assert {"phases", "mesh", "calibration", "drift"} <= set(plot_kinds())


@pytest.mark.parametrize("what", ["phases", "mesh", "calibration"])
def test_each_kind_writes_a_png(tmp_path, what):
    path = plot(_calibrated(), tmp_path / f"{what}.png", what=what)
    assert _is_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{what}.png"]  # no temporary file left


@pytest.mark.parametrize("ext, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_other_formats(tmp_path, ext, magic):
    path = plot(_program(), tmp_path / f"m{ext}", what="mesh")
    assert open(path, "rb").read().startswith(magic)


def test_phases_figure_panels():
    prog = _program()
    fig = figure(prog, "phases")
    titles = [ax.get_title() for ax in fig.axes]
    for t in range(prog.n_tiles):
        for name in ("V theta", "V phi", "U theta", "U phi"):
            assert f"tile {t}: {name}" in titles
    assert "attenuators sigma (amplitude cos sigma)" in titles and "electronic gain per tile" in titles
    one = [ax.get_title() for ax in figure(prog, "phases", tile=2).axes]
    assert "tile 2: V theta" in one and "tile 0: V theta" not in one
    # the heatmap shows the phase map: theta of V, tile 0, at (upper mode, column) of each MZI
    ax = next(a for a in fig.axes if a.get_title() == "tile 0: V theta")
    img = ax.get_images()[0].get_array()
    lay = prog.phase_map.v.layout
    np.testing.assert_array_equal(img[lay.pair_array, lay.column_array], prog.phase_map.v.theta[0])
    assert img.mask.sum() == img.size - lay.n_mzi  # cells without an MZI are masked


def test_mesh_figure_colours_every_mzi_by_its_setting():
    prog = _program()
    fig = figure(prog, "mesh", tile=1)
    ax = fig.axes[0]
    assert "tile 1 of 4" in ax.get_title()
    from matplotlib.collections import LineCollection

    bars = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_array() is not None]
    assert len(bars[0].get_segments()) == 2 * 6
    assert len(bars) == 1
    g = prog.graph(1)
    expected = [d["theta"] for _, d in g.nodes(data=True) if d["kind"] == "mzi"]
    np.testing.assert_array_equal(np.asarray(bars[0].get_array()), expected)


def test_calibration_figure_reports_the_errors():
    cal = _calibrated()
    fig = figure(cal, "calibration")
    reach = pc.reachability(cal, cal.chip)
    assert f"clipping them {reach.clip_error:.2e}" in fig.get_suptitle()
    bar_ax = next(a for a in fig.axes if a.get_title().startswith("per-tile error"))
    heights = [p.get_height() for p in bar_ax.patches]
    after = pc.error(cal, cal.chip)["tile_errors"]
    np.testing.assert_allclose(heights[cal.n_tiles:], after, rtol=1e-12, atol=0)


def _visible_ticks(axis, lim):
    lo, hi = sorted(lim)
    return [float(t) for t in axis.get_ticklocs() if lo <= t <= hi]


def test_single_tile_calibration_figure_has_integer_tile_ticks():
    cal = pc.calibrate(pc.compile(random_matrix(np.random.default_rng(4), (4, 4), "real"), target="clements-4"),
                       pc.fabricate("clements-4", seed=3), method="local", progress=False)
    assert cal.n_tiles == 1
    fig = figure(cal, "calibration")
    fig.canvas.draw()
    bar_ax = next(a for a in fig.axes if a.get_title().startswith("per-tile error"))
    assert _visible_ticks(bar_ax.xaxis, bar_ax.get_xlim()) == [0.0]  # one tile: one tick, at 0 (not -0.4 ... 0.4)
    heights = [p.get_height() for p in bar_ax.patches]
    expected = [pc.error(_ideal(cal), cal.chip)["tile_errors"][0], pc.error(cal, cal.chip)["tile_errors"][0]]
    np.testing.assert_allclose(heights, expected, rtol=1e-12, atol=0)
    titles = [a.get_title() for a in fig.axes]
    assert "V mesh: unreachable in tile 0" in titles and "U mesh: unreachable in tile 0" in titles
    att = next(a for a in fig.axes if a.get_title() == "attenuators: unreachable")
    assert _visible_ticks(att.yaxis, att.get_ylim()) == [0.0]
    # the phases figure of one tile: the gain bar and the sigma row are labelled by tile 0 only
    fig = figure(cal, "phases")
    fig.canvas.draw()
    gain = next(a for a in fig.axes if a.get_title() == "electronic gain per tile")
    sigma = next(a for a in fig.axes if a.get_title().startswith("attenuators sigma"))
    assert _visible_ticks(gain.xaxis, gain.get_xlim()) == [0.0]
    assert _visible_ticks(sigma.yaxis, sigma.get_ylim()) == [0.0]


def _ideal(cal):
    from photocomp.compiler.program import Program

    return Program(cal.target, cal.phase_map, cal.report, cal.pipeline, cal.detection)


def test_bad_input(tmp_path):
    prog = _program()
    with pytest.raises(pc.InvalidInputError, match="source must be a calibrated program"):
        plot(prog, tmp_path / "c.png", what="calibration")
    with pytest.raises(pc.UnknownNameError, match=r"what must be one of \['calibration', 'drift', 'mesh', 'phases'.*got 'histogram'"):
        plot(prog, tmp_path / "d.png", what="histogram")
    with pytest.raises(pc.InvalidInputError, match=r"path must end in \.png, \.pdf, \.svg; got"):
        plot(prog, tmp_path / "x.jpg")
    with pytest.raises(pc.InvalidTypeError, match="path must be a file path"):
        plot(prog, None)
    with pytest.raises(pc.InvalidInputError, match=r"tile must be in \[0, 3\]; got 4"):
        plot(prog, tmp_path / "t.png", what="mesh", tile=4)
    with pytest.raises(pc.InvalidTypeError, match="tile must be an integer"):
        plot(prog, tmp_path / "t.png", what="phases", tile="0")
    with pytest.raises(pc.InvalidTypeError, match="source must be a photocomp.Program"):
        plot(np.eye(3), tmp_path / "p.png")
    with pytest.raises(pc.PhaseMapFileError, match="folder must exist"):
        plot(prog, tmp_path / "no" / "p.png", what="mesh")
    assert list(tmp_path.iterdir()) == []


def test_failed_drawing_leaves_an_existing_file_untouched(tmp_path):
    target = tmp_path / "c.png"
    target.write_bytes(b"old")
    with pytest.raises(pc.InvalidInputError):
        plot(_program(), target, what="calibration")
    assert target.read_bytes() == b"old"


def test_register_a_kind(tmp_path):
    def draw(fig, source, tile=None):
        fig.add_subplot(1, 1, 1).plot(np.asarray(source))

    kind = register_plot(PlotKind("series_test", draw, lambda path: np.load(path), "a test kind"))
    try:
        assert "series_test" in plot_kinds()
        np.save(tmp_path / "s.npy", np.arange(5.0))
        assert _is_png(plot_file(tmp_path / "s.npy", tmp_path / "s.png", what="series_test"))
        with pytest.raises(pc.InvalidInputError, match="'series_test' is registered"):
            register_plot(kind)
        with pytest.raises(pc.InvalidTypeError, match="kind must be a photocomp.analysis.plot.PlotKind"):
            register_plot("series_test")
    finally:
        from photocomp.analysis import plot as plot_module

        plot_module._KINDS.pop("series_test", None)


# ---- CLI ---------------------------------------------------------------------------------------------




@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("plotfiles")
    return _program().save(d / "w.phases.npz"), _calibrated().save(d / "w.cal.npz")


def test_cli_plot_default_name_and_kinds(capsys, files, tmp_path):
    compiled, calibrated = files
    code, out, err = _run(capsys, "plot", compiled)
    assert code == 0, err
    default = compiled.removesuffix(".phases.npz") + ".phases.png"
    assert out.strip() == f"wrote {default}" and _is_png(default)
    for what in ("mesh", "calibration"):
        out_file = tmp_path / f"{what}.png"
        code, out, err = _run(capsys, "plot", calibrated, "--what", what, "-o", str(out_file), "--tile", "1")
        assert code == 0, err
        assert out.strip() == f"wrote {out_file}" and _is_png(out_file)


@pytest.mark.parametrize("argv, match", [
    (["plot", "{c}", "--what", "calibration", "-o", "{t}/x.png"], "source must be a calibrated program"),
    (["plot", "{c}", "--what", "histogram", "-o", "{t}/x.png"], "invalid choice: 'histogram'"),
    (["plot", "{c}", "--what", "drift", "-o", "{t}/x.png"], "file must be a drift CSV"),
    (["plot", "{c}", "-o", "{t}/x.jpg"], "-o/--output must end in .png, .pdf or .svg"),
    (["plot", "{c}", "--tile", "9", "-o", "{t}/x.png"], "tile must be in [0, 3]; got 9"),
    (["plot", "{t}/missing.npz", "-o", "{t}/x.png"], "must be an existing file"),
])
def test_cli_plot_bad_input(capsys, files, tmp_path, argv, match):
    compiled, _ = files
    code, out, err = _run(capsys, *[a.format(c=compiled, t=tmp_path) for a in argv])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("photocomp: error: ") and match in lines[0], err
    assert list(tmp_path.iterdir()) == []


# ---- drift ---------------------------------------------------------------------------------------------

DRIFT_PROCESS = pc.drift.ThermalProcess(ambient_k_per_hour=4.0, gradient_k=0.3, arm_imbalance_um=100.0)


@functools.cache
def _study():
    return pc.drift.study(_calibrated(), _calibrated().chip, DRIFT_PROCESS, hours=0.01, dt_s=3.0,
                          compensators=["none", "feedforward"], runs=2, seed=1, progress=False)


def _lines(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def _check_drift_axes(fig, study, with_field: bool):
    err_ax = next(a for a in fig.axes if a.get_title().startswith("error against time"))
    temp_ax = next(a for a in fig.axes if a.get_title() == "die temperature state (run 0)")
    assert err_ax.get_title() == "error against time (median, range of 2 runs)"
    assert err_ax.get_yscale() == "log" and err_ax.get_xlabel() == "time (min)"
    lines = _lines(err_ax)
    assert list(lines) == ["none", "feedforward", "fresh calibration"]
    assert [t.get_text() for t in err_ax.get_legend().get_texts()] == ["none", "feedforward", "fresh calibration"]
    for name in ("none", "feedforward"):
        np.testing.assert_allclose(lines[name].get_xdata(), study.times_s / 60.0, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(lines[name].get_ydata(), np.median(study.errors[name], axis=0))
    assert lines["fresh calibration"].get_ydata()[0] == pytest.approx(study.fresh_error, rel=1e-12)
    assert len(err_ax.collections) == 2  # the range over runs of each compensator
    temp = _lines(temp_ax)
    assert list(temp) == ["ambient", "gradient along x (end to end)", "gradient along y (end to end)"]
    for k, line in enumerate(temp.values()):
        np.testing.assert_array_equal(line.get_ydata(), study.temperature[0, :, k])
    field = [a for a in fig.axes if a.get_title().startswith("die field")]
    assert len(field) == (1 if with_field else 0)
    if with_field:
        from matplotlib.collections import QuadMesh

        mesh = next(c for c in field[0].collections if isinstance(c, QuadMesh))
        die, state = study.die, study.temperature[0, -1]
        lo, hi = die.centre - die.extent / 2, die.centre + die.extent / 2
        corners = die.field(np.array([[lo[0], lo[1]], [lo[0], hi[1]], [hi[0], lo[1]], [hi[0], hi[1]]]), state)
        # a linear field over the die: its extremes on the drawn grid are at the die's corners
        np.testing.assert_allclose([mesh.get_array().min(), mesh.get_array().max()], [corners.min(), corners.max()],
                                   atol=1e-12)


def test_drift_figure_of_a_study():
    s = _study()
    fig = figure(s, "drift")
    _check_drift_axes(fig, s, with_field=True)
    assert fig.get_suptitle().startswith("clements-4 chip seed 3: thermal drift over")


def test_drift_figure_from_the_csv_file(tmp_path, capsys):
    s = _study()
    csv_path = s.to_csv(tmp_path / "d.csv")
    from photocomp.analysis import plot as plot_module

    fig = figure(plot_module._KINDS["drift"].load(csv_path), "drift")  # what 'photocomp plot --what drift' draws
    _check_drift_axes(fig, s, with_field=False)
    assert fig.get_suptitle().endswith("(d.csv)")
    code, out, err = _run(capsys, "plot", csv_path, "--what", "drift")
    assert code == 0, err
    default = str(tmp_path / "d.drift.png")
    assert out.strip() == f"wrote {default}" and _is_png(default)
    assert _is_png(plot_file(csv_path, tmp_path / "e.png", what="drift"))
    assert _is_png(pc.plot(s, tmp_path / "s.png", what="drift"))  # the study itself: the same figure, atomically
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "d.drift.png", "e.png", "s.png"]


def test_drift_figure_bad_input(tmp_path, files):
    compiled, calibrated = files
    s = _study()
    with pytest.raises(pc.InvalidTypeError, match=r"source must be a photocomp.drift.DriftStudy or the dict .*got Program"):
        figure(_program(), "drift")
    with pytest.raises(pc.InvalidInputError, match="tile must be None for the drift figure.*got 0"):
        figure(s, "drift", tile=0)
    bad = {"times_s": s.times_s, "errors": {"none": s.errors["none"][:, :-1]}, "temperature": s.temperature}
    with pytest.raises(pc.InvalidInputError, match=r"source\['errors'\]\['none'\] must have shape \(runs >= 1, 13\).*got \(2, 12\)"):
        figure(bad, "drift")
    bad = {"times_s": s.times_s, "errors": {"none": s.errors["none"]}, "temperature": s.temperature[:, :, :2]}
    with pytest.raises(pc.InvalidInputError, match=r"source\['temperature'\] must have shape \(2, 13, 3\); got \(2, 13, 2\)"):
        figure(bad, "drift")
    # a phase-map file is not a drift CSV, and a drift CSV is not a phase-map file
    with pytest.raises(pc.PhaseMapFileError, match=r"file must be a drift CSV .* got '.*w.cal.npz', which is not CSV text"):
        plot_file(calibrated, tmp_path / "x.png", what="drift")
    csv_path = s.to_csv(tmp_path / "d.csv")
    with pytest.raises(pc.PhaseMapFileError, match=r"path must be a photocomp .npz file .*got a file starting with b'run,comp"):
        plot_file(csv_path, tmp_path / "x.png", what="phases")
    weights = tmp_path / "w.csv"
    np.savetxt(weights, np.eye(3), delimiter=",")
    with pytest.raises(pc.PhaseMapFileError, match=r"file must be a drift CSV .*'run', 'compensator'.*got '.*w.csv' with columns"):
        plot_file(weights, tmp_path / "x.png", what="drift")
    with pytest.raises(pc.PhaseMapFileError, match="file must be an existing drift CSV file; got"):
        plot_file(tmp_path / "missing.csv", tmp_path / "x.png", what="drift")
    with pytest.raises(pc.InvalidTypeError, match="file must be a file path"):
        plot_file(3, tmp_path / "x.png", what="drift")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "w.csv"]



# ---- legibility: every bar inside the limits, every drift line visible, every axis labelled ----------------


def _bar_axis(fig):
    return next(a for a in fig.axes if a.get_title().startswith("per-tile error"))


def _check_bars_visible(ax):
    """Every bar of a log error axis rises visibly above the bottom and stays below the top and the legend."""
    lo, hi = ax.get_ylim()
    assert ax.get_yscale() == "log" and 0 < lo < hi
    span = np.log10(hi) - np.log10(lo)
    heights = np.array([p.get_height() for p in ax.patches])
    assert heights.size and np.all(np.isfinite(heights)) and np.all(heights > 0)
    # each bar covers at least a tenth of the axis and rises at least a factor 2 above its bottom ...
    assert np.all(np.log10(heights / lo) >= max(np.log10(2.0), 0.1 * span)), (lo, heights)
    # ... and its top is inside the axis, below the legend
    assert np.all(heights < hi)
    ax.figure.canvas.draw()
    legend_bottom = ax.get_legend().get_window_extent().y0
    tops = [p.get_window_extent().y1 for p in ax.patches]
    assert max(tops) <= legend_bottom + 0.5


def test_calibration_figure_shows_every_bar():
    cal = _calibrated()
    fig = figure(cal, "calibration")
    ax = _bar_axis(fig)
    _check_bars_visible(ax)
    # the best calibrated tile (the bar that used to sit under the axis' lower limit) is the smallest
    after = np.asarray(pc.error(cal, cal.chip)["tile_errors"])
    assert min(p.get_height() for p in ax.patches) == pytest.approx(after.min(), rel=1e-12)
    floor = pc.reachability(cal, cal.chip).clip_error
    assert ax.get_ylim()[0] < floor < ax.get_ylim()[1]


@functools.cache
def _calibrated_with_a_zero_tile():
    w = random_matrix(np.random.default_rng(21), (6, 5), "real")
    w[4:, 4:] = 0.0  # the last of the four tiles is all zeros: its error is exactly 0 before and after
    return pc.calibrate(pc.compile(w, target="clements-4"), pc.fabricate("clements-4", seed=3), method="local",
                        progress=False)


def test_calibration_figure_draws_zero_errors_at_a_floor():
    cal = _calibrated_with_a_zero_tile()
    after = np.asarray(pc.error(cal, cal.chip)["tile_errors"])
    assert after[3] == 0.0 and np.all(after[:3] > 0)
    ax = _bar_axis(figure(cal, "calibration"))
    _check_bars_visible(ax)
    heights = np.array([p.get_height() for p in ax.patches])
    positive = heights[heights > heights.min()]
    zero_at = positive.min() / 10.0  # a decade below the smallest positive bar (or the floor line)
    assert heights[3] == heights[7] == pytest.approx(min(zero_at, pc.reachability(cal, cal.chip).clip_error / 10))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("error 0 (drawn at ") for t in labels), labels
    assert [t.get_text() for t in ax.texts] == ["0", "0"]


_ERROR = st.one_of(st.just(0.0), st.floats(-17.0, 1.0).map(lambda e: 10.0 ** e))


@settings(max_examples=40, deadline=None)
@given(tiles=st.integers(1, 6), data=st.data(), floor=_ERROR)
def test_error_bars_show_every_value(tiles, data, floor):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from photocomp.analysis import plot as plot_module

    before = np.array(data.draw(st.lists(_ERROR, min_size=tiles, max_size=tiles)))
    after = np.array(data.draw(st.lists(_ERROR, min_size=tiles, max_size=tiles)))
    fig = Figure(figsize=(10.0, 3.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    plot_module._error_bars(ax, before, after, floor)
    _check_bars_visible(ax)
    heights = np.array([p.get_height() for p in ax.patches])
    values = np.concatenate([before, after])
    np.testing.assert_array_equal(heights[values > 0], values[values > 0])  # nonzero errors drawn as they are
    if (values == 0).any():
        shown = np.concatenate([values, [floor]])
        zero_at = shown[shown > 0].min() / 10 if (shown > 0).any() else plot_module.ZERO_ERROR_AT
        np.testing.assert_array_equal(heights[values == 0], zero_at)
        assert len(ax.texts) == int((values == 0).sum())
    lo, hi = ax.get_ylim()
    if floor > 0:
        assert lo < floor < hi


def _drift_source(traces: dict, steps: int) -> dict:
    runs = next(iter(traces.values())).shape[0]
    return {"times_s": np.arange(steps) * 10.0, "errors": traces, "temperature": np.zeros((runs, steps, 3))}


def _check_drift_lines_distinct(ax, names):
    lines = _lines(ax)
    assert list(lines) == [*names, "fresh calibration"]
    # the legend shows every line with the style it is drawn in
    handles = ax.get_legend().legend_handles
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(lines)
    for handle, line in zip(handles, lines.values()):
        assert (handle.get_linestyle(), handle.get_marker(), handle.get_color()) == (
            line.get_linestyle(), line.get_marker(), line.get_color())
    comp = [lines[n] for n in names]
    fresh = lines["fresh calibration"]
    keys = [(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in comp]
    assert len(set(keys)) == len(keys)
    for i in range(len(comp)):
        for j in range(i + 1, len(comp)):
            a, b = comp[i], comp[j]
            # not the colour alone: dash pattern or marker tells them apart (also in greyscale) ...
            assert (a.get_linestyle(), a.get_marker()) != (b.get_linestyle(), b.get_marker()), (names[i], names[j])
            # ... and the later line is narrower and above, so where traces coincide both stay visible
            assert a.get_linewidth() > b.get_linewidth() and a.get_zorder() < b.get_zorder()
        # none looks like the fresh calibration's dotted black line
        assert (comp[i].get_linestyle(), comp[i].get_color()) != (fresh.get_linestyle(), fresh.get_color())
    lo, hi = ax.get_ylim()
    for ln in comp:
        y = np.asarray(ln.get_ydata())
        y = y[y > 0]
        assert np.all((lo < y) & (y < hi))


def test_drift_figure_keeps_coinciding_lines_visible():
    # 'recalibrate' equals 'none' until it acts: the old figure drew it exactly over 'none'
    rng = np.random.default_rng(5)
    none = 0.05 + np.cumsum(rng.uniform(0, 1e-3, size=(2, 40)), axis=1)
    traces = {"none": none, "feedforward": none * 0.5 + 0.02, "closed-loop": none * 0.5 + 0.02, "recalibrate": none}
    fig = figure(_drift_source(traces, 40), "drift")
    ax = next(a for a in fig.axes if a.get_title().startswith("error against time"))
    _check_drift_lines_distinct(ax, list(traces))
    lines = _lines(ax)
    # markers of equal traces sit at different samples
    starts = {n: lines[n].get_markevery()[0] for n in ("none", "recalibrate") if lines[n].get_marker() != ""}
    assert len(set(starts.values())) == len(starts)
    marked = [n for n in traces if lines[n].get_marker() not in ("", "None", None)]
    assert len(marked) >= len(traces) - 1


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), steps=st.integers(2, 60), runs=st.integers(1, 3), seed=st.integers(0, 2**32 - 1),
       same=st.booleans())
def test_drift_lines_are_distinct_for_any_compensators(n, steps, runs, seed, same):
    rng = np.random.default_rng(seed)
    base = 10.0 ** rng.uniform(-4, -1, size=(runs, steps))
    names = [f"comp{i}" for i in range(n)]
    traces = {name: base if same else base * rng.uniform(0.5, 2.0) for name in names}
    fig = figure(_drift_source(traces, steps), "drift")
    ax = next(a for a in fig.axes if a.get_title().startswith("error against time"))
    _check_drift_lines_distinct(ax, names)


def test_every_phases_panel_is_labelled():
    fig = figure(_program(), "phases")
    gain = next(a for a in fig.axes if a.get_title() == "electronic gain per tile")
    assert gain.get_ylabel().strip() != "" and "gain" in gain.get_ylabel()
    for ax in fig.axes:
        if ax.get_title():  # the colour bars carry their unit as their label
            assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
