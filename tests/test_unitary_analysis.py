"""Cost, figures and the command line on unitary programs (one mesh per tile, no V mesh, no attenuators)."""

import contextlib
import functools
import io
import json
import re
import types

import jax
import numpy as np
import pytest
from conftest import random_matrix
from conftest import run_cli as run

import photocomp as pc
from photocomp.analysis.cost import heater_powers
from photocomp.analysis.plot import figure, plot
from photocomp.cli import main
from photocomp.core.ir import CompileReport, PhaseMap, TileGrid
from photocomp.core.phases import MeshPhases
from photocomp.hardware.chip import nominal_chip
from photocomp.hardware.chipsim import flatten_heaters, realized_phases, settings_from_program

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REL = 1e-9


@functools.cache
def _unitary(target="clements-8"):
    t = pc.get_target(target)
    prog = pc.compile(pc.haar_unitary(t.size, np.random.default_rng(0)), target=target)
    assert prog.circuit == "unitary"
    return prog


@functools.cache
def _svd(target="clements-8"):
    t = pc.get_target(target)
    prog = pc.compile(random_matrix(np.random.default_rng(1), (t.size, t.size), "real"), target=target)
    assert prog.circuit == "svd"
    return prog


@functools.cache
def _calibrated(seed=3):
    """The unitary program on its chip with the ideal settings (drives compensate offsets and crosstalk)."""
    prog = _unitary()
    chip = pc.fabricate(prog.target, seed, circuit="unitary")
    with jax.enable_x64(True):
        s = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), settings_from_program(prog.phase_map))
    return prog.with_chip(chip, s)


def _hand_unitary(target, matrix_error=0.01):
    """One unitary tile of all-zero angles and phases, unit gain, on ``target``."""
    k = target.size
    lay = pc.layout(target.mesh, k)
    zeros = MeshPhases(lay, np.zeros((1, lay.n_mzi)), np.zeros((1, lay.n_mzi)), np.zeros((1, k)))
    report = CompileReport((), types.MappingProxyType({"matrix_error": matrix_error}))
    return pc.Program(target, PhaseMap.unitary(TileGrid(k, k, k), zeros, np.ones(1)), report, "hand")


def _worst_mesh_loss(layout, t) -> float:
    """Independent worst-path loss through one mesh and its output screen (dynamic programming over columns)."""
    mzi, ps = t.mzi_loss_db, t.phase_shifter_loss_db
    best = np.zeros(layout.n_modes)
    pairs, cols = np.asarray(layout.pairs), np.asarray(layout.columns)
    for c in range(layout.depth):
        new = best.copy()
        for n in pairs[cols == c]:
            new[n] = new[n + 1] = max(best[n] + mzi + 2 * ps, best[n + 1] + mzi + ps)
        best = new
    return float((best + ps).max())


def _is_png(path) -> bool:
    data = open(path, "rb").read()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


# ---- cost ------------------------------------------------------------------------------------------------


def test_counts_of_one_mesh_by_hand():
    c = pc.cost(_unitary())
    assert c.circuit == "unitary"
    assert (c.mzis_per_mesh, c.mzis, c.depth) == (28, 28, 8)
    assert c.phase_shifters == 2 * 28 + 8 == 64  # internal and external per MZI, one output screen
    assert c.phase_shifters == pc.fabricate("clements-8", seed=0, circuit="unitary").n_heaters
    assert (c.mzi_settings, c.phase_settings) == (28, 64) == (_unitary().n_mzi, 64)


def test_counts_of_the_svd_circuit_by_hand():
    c = pc.cost(_svd())
    assert c.circuit == "svd"
    assert (c.mzis_per_mesh, c.mzis, c.depth) == (28, 28 + 28 + 8, 8 + 1 + 8)
    assert c.phase_shifters == 4 * 28 + 3 * 8 == pc.fabricate("clements-8", seed=0).n_heaters


@pytest.mark.parametrize("target", ["clements-4", "clements-5", "reck-4", "reck-5"])
def test_loss_of_one_mesh_matches_dynamic_programming(target):
    t = pc.get_target(target)
    c = pc.cost(_hand_unitary(t))
    assert c.insertion_loss_db == pytest.approx(_worst_mesh_loss(pc.layout(t.mesh, t.size), t), rel=1e-12)
    assert c.insertion_loss_db == pytest.approx(c.path_mzis * t.mzi_loss_db + c.path_phase_shifters * t.phase_shifter_loss_db,
                                                rel=1e-12)
    assert c.path_mzis <= c.depth == pc.layout(t.mesh, t.size).depth


def test_loss_two_modes_by_hand():
    # in0 -> the MZI at its upper input (MZI + 2 shifters) -> output shifter: 1 MZI, 3 shifters
    t = pc.get_target("clements-2")
    c = pc.cost(_hand_unitary(t))
    assert (c.path_mzis, c.path_phase_shifters) == (1, 3)
    assert c.insertion_loss_db == pytest.approx(0.2 + 3 * 0.23, rel=1e-12)


def test_counts_multiply_with_tiles():
    # two scaled unitaries on the diagonal of an 8x8 matrix: four clements-4 tiles, two of them zero
    w = np.zeros((8, 8), complex)
    w[:4, :4] = pc.haar_unitary(4, np.random.default_rng(3))
    w[4:, 4:] = 2.0 * pc.haar_unitary(4, np.random.default_rng(4))
    prog = pc.compile(w, target="clements-4", pipeline="validate | tile | unitary | clements | lower")
    c = pc.cost(prog)
    assert prog.circuit == c.circuit == "unitary" and c.n_tiles == 4
    assert (c.mzis, c.phase_shifters, c.depth) == (6, 2 * 6 + 4, 4)
    assert (c.mzi_settings, c.phase_settings) == (4 * 6, 4 * 16) and c.mzi_settings == prog.n_mzi
    assert heater_powers(prog)[0].shape == (4, 16)
    fig = figure(prog, "phases")
    titles = [ax.get_title() for ax in fig.axes]
    assert all(f"tile {t}: U theta" in titles for t in range(4)) and not any("V " in t for t in titles)


def test_unitary_path_is_shorter_than_the_svd_path():
    u, s = pc.cost(_unitary()), pc.cost(_svd())
    t = pc.get_target("clements-8")
    # ports at x = -1 and x = depth + 1 (mesh, output screen): 10 column pitches; svd: 8 + 1 + 1 + 8 + 1 + 2 = 20
    assert u.optical_path_mm == pytest.approx(10 * t.column_pitch_um * 1e-3, rel=1e-12)
    assert s.optical_path_mm == pytest.approx(20 * t.column_pitch_um * 1e-3, rel=1e-12)
    assert u.insertion_loss_db < s.insertion_loss_db and u.path_mzis == 8 and s.path_mzis == 17


def test_power_two_modes_by_hand():
    # zero angles: the unitary chip's heaters are the svd chip's U heaters, [U int, U ext, U out 0/1] = [pi, 0, pi, 0]
    t = pc.Target(name="flat-2", mesh="clements", size=2, crosstalk=0.0)
    c = pc.cost(_hand_unitary(t))
    assert c.heater_power_mw == pytest.approx(2 * t.heater_p_pi_mw, rel=1e-12)
    assert "nominal chip" in c.power_source


def test_power_on_the_nominal_unitary_chip():
    prog = _unitary()
    power, source = heater_powers(prog)
    assert power.shape == (1, 64) and source == "ideal settings on a nominal chip"
    chip = nominal_chip(prog.target, "unitary")
    assert chip.circuit == "unitary" and chip.n_heaters == 64 and len(np.asarray(chip.xt_rows)) > 0
    with jax.enable_x64(True):
        want = np.asarray(flatten_heaters(settings_from_program(prog.phase_map)))
        got = np.asarray(realized_phases(chip, power))
    np.testing.assert_allclose(np.angle(np.exp(1j * (got - want))), 0.0, atol=1e-9, rtol=0)
    assert pc.cost(prog).heater_power_mw == pytest.approx(power.sum(), rel=REL)


def test_power_without_crosstalk_is_phase_times_p_pi_over_pi():
    t = pc.Target(name="flat-4", mesh="clements", size=4, crosstalk=0.0)
    prog = pc.compile(pc.haar_unitary(4, np.random.default_rng(2)) * 3.0, target=t)
    assert prog.circuit == "unitary"
    with jax.enable_x64(True):
        phases = np.mod(np.asarray(flatten_heaters(settings_from_program(prog.phase_map))), 2 * np.pi)
    assert phases.shape == (1, 2 * 6 + 4)
    assert pc.cost(prog).heater_power_mw == pytest.approx(phases.sum() * t.heater_p_pi_mw / np.pi, rel=REL)


def test_calibrated_unitary_program_uses_its_drive_map_and_chip():
    cal = _calibrated()
    c = pc.cost(cal)
    assert c.heater_power_mw == pytest.approx(cal.drives().sum(), rel=REL)
    assert c.power_source == "drive map of chip seed 3"
    assert c.error_source == "calibrated, on chip seed 3"
    assert c.matrix_error == pytest.approx(pc.error(cal, cal.chip)["matrix_error"], rel=REL)


def test_record_and_table_state_the_circuit():
    c = pc.cost(_unitary())
    d = c.as_dict()
    assert d["circuit"] == "unitary" and json.loads(json.dumps(d)) == d
    text = c.table()
    assert "8x8 on clements-8, unitary circuit" in text
    assert "28 in the core (one mesh of 28, no attenuators)" in text
    assert "attenuators)" not in pc.cost(_svd()).table().split("MZIs")[0]
    assert "28 per mesh + 8 attenuators" in pc.cost(_svd()).table()


# ---- figures ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["phases", "mesh"])
def test_each_kind_writes_a_png(tmp_path, what):
    path = plot(_unitary(), tmp_path / f"{what}.png", what=what)
    assert _is_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{what}.png"]


def test_phases_figure_has_one_mesh_and_no_attenuators():
    prog = _unitary()
    fig = figure(prog, "phases")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["tile 0: U theta", "tile 0: U phi", "electronic gain per tile"]
    assert "unitary circuit: one mesh (U) per tile, no V mesh or attenuators" in fig.get_suptitle()
    ax = next(a for a in fig.axes if a.get_title() == "tile 0: U theta")
    img = ax.get_images()[0].get_array()
    lay = prog.phase_map.layout
    np.testing.assert_array_equal(img[lay.pair_array, lay.column_array], prog.phase_map.u.theta[0])
    gain = next(a for a in fig.axes if a.get_title() == "electronic gain per tile")
    assert gain.get_ylabel() == "gain (scale of the tile's unitary)"
    # the svd figure keeps its V mesh and attenuator panels
    svd = [ax.get_title() for ax in figure(_svd(), "phases").axes]
    assert "tile 0: V theta" in svd and "attenuators sigma (amplitude cos sigma)" in svd


def test_mesh_figure_draws_the_one_mesh():
    prog = _unitary()
    fig = figure(prog, "mesh")
    ax = fig.axes[0]
    assert "(unitary circuit: one mesh (U), no V mesh or attenuators)" in ax.get_title()
    bars = ax.collections[1]
    np.testing.assert_allclose(np.sort(bars.get_array()), np.sort(prog.phase_map.u.theta[0]), rtol=0, atol=1e-12)
    assert len(ax.collections) == 3  # waveguides, MZI bars, output shifters: no attenuator markers
    labels = [a.get_ylabel() for a in fig.axes[1:]]
    assert "MZI theta (rad)" in labels and not any("sigma" in label for label in labels)
    assert "(V mesh | attenuators | U mesh)" in figure(_svd(), "mesh").axes[0].get_title()


def test_calibration_figure_has_no_v_mesh_or_attenuator_panel(tmp_path):
    cal = _calibrated()
    fig = figure(cal, "calibration")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["per-tile error on chip seed 3", "U mesh (the only mesh): unreachable in tile 0"]
    assert "unitary circuit: one mesh (U), no V mesh or attenuators" in fig.get_suptitle()
    assert _is_png(plot(cal, tmp_path / "cal.png", what="calibration"))


# ---- command line ----------------------------------------------------------------------------------------




def _rows(out: str) -> dict:
    return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.strip().splitlines() if "  " in line.strip())


@pytest.fixture(scope="module")
def unitary_file(tmp_path_factory):
    """A Haar unitary saved with np.save and compiled by the command onto clements-8."""
    d = tmp_path_factory.mktemp("unitary")
    np.save(d / "u.npy", pc.haar_unitary(8, np.random.default_rng(0)))
    assert main(["compile", str(d / "u.npy"), "--target", "clements-8", "-o", str(d / "u.phases.npz"), "-q"]) == 0
    return d / "u.phases.npz"


def test_cli_compile_identity_states_the_circuit(capsys, tmp_path):
    np.save(tmp_path / "eye.npy", np.eye(8))
    code, out, err = run(capsys, "compile", str(tmp_path / "eye.npy"), "--target", "clements-8")
    assert code == 0, err
    assert "circuit: unitary (one mesh per tile; no V mesh, no attenuators)" in out
    prog = pc.load(tmp_path / "eye.phases.npz")
    assert prog.circuit == "unitary" and (prog.n_mzi, prog.depth) == (28, 8)
    np.testing.assert_allclose(prog.matrix(), np.eye(8), rtol=0, atol=1e-2)


def test_cli_inspect_unitary(capsys, unitary_file):
    code, out, err = run(capsys, "inspect", str(unitary_file))
    assert code == 0 and err == ""
    rows = _rows(out)
    assert rows["circuit"] == "unitary (one mesh per tile; no V mesh, no attenuators)"
    assert rows["MZIs"] == "28 (28 per tile: one mesh, no attenuators)"
    assert rows["optical depth"] == "8 columns"
    assert rows["U mesh phases"].startswith("theta [")
    assert "V mesh phases" not in rows and "attenuators" not in rows and "unitary" in rows["pipeline"]


def test_cli_inspect_svd_states_the_circuit(capsys, tmp_path):
    f = _svd().save(tmp_path / "s.phases.npz")
    code, out, _ = run(capsys, "inspect", str(f))
    rows = _rows(out)
    assert code == 0 and rows["circuit"] == "svd (V mesh, attenuator column, U mesh per tile)"
    assert rows["MZIs"] == "64 (28 per mesh, 2 meshes + 8 attenuators per tile)"
    assert "V mesh phases" in rows and rows["attenuators"].startswith("sigma [")


def test_cli_inspect_exports_the_one_mesh_netlist(capsys, unitary_file, tmp_path):
    code, out, err = run(capsys, "inspect", str(unitary_file), "--graph", str(tmp_path / "g.json"),
                         "--netlist", str(tmp_path / "n.json"))
    assert code == 0, err
    net = json.loads((tmp_path / "n.json").read_text())
    assert net["info"]["circuit"] == "unitary"
    assert sum(i["component"] == "mzi" for i in net["instances"].values()) == 28
    assert not any(i["component"] == "attenuator" for i in net["instances"].values())


def test_cli_report_unitary(capsys, unitary_file):
    prog = pc.load(unitary_file)
    code, out, err = run(capsys, "report", str(unitary_file))
    assert code == 0 and err == ""
    assert out.strip() == pc.cost(prog).table()
    assert "unitary circuit" in out and "one mesh of 28, no attenuators" in out
    code, out, _ = run(capsys, "report", str(unitary_file), "--json")
    d = json.loads(out)
    assert code == 0 and d == pc.cost(prog).as_dict()
    assert (d["circuit"], d["mzis"], d["depth"], d["phase_shifters"]) == ("unitary", 28, 8, 64)


@pytest.mark.parametrize("what", ["phases", "mesh"])
def test_cli_plot_unitary(capsys, unitary_file, tmp_path, what):
    out_file = tmp_path / f"{what}.png"
    code, out, err = run(capsys, "plot", str(unitary_file), "--what", what, "-o", str(out_file))
    assert code == 0, err
    assert out.strip() == f"wrote {out_file}" and _is_png(out_file)


@pytest.fixture(scope="module")
def calibrated_file(tmp_path_factory):
    """'photocomp calibrate' on a compiled unitary file: (exit code, stdout, the .cal.npz path)."""
    d = tmp_path_factory.mktemp("ucal")
    np.save(d / "u.npy", pc.haar_unitary(8, np.random.default_rng(0)))
    assert main(["compile", str(d / "u.npy"), "--target", "clements-8", "-o", str(d / "u.phases.npz"), "-q"]) == 0
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["calibrate", str(d / "u.phases.npz"), "--chip-seed", "3", "--method", "local", "-q"])
    return code, buf.getvalue(), d / "u.cal.npz"


def test_cli_calibrate_fabricates_the_programs_circuit(calibrated_file):
    code, out, path = calibrated_file
    assert code == 0, out
    assert "chip: clements-8 seed 3 (unitary circuit)  method: local" in out
    cal = pc.load(path)
    assert cal.calibrated and cal.circuit == "unitary" and cal.chip.circuit == "unitary"
    assert cal.chip.n_heaters == 64 and cal.chip.seed == 3
    before = float(re.search(r"matrix error before: (\S+)", out).group(1))
    after = float(re.search(r"matrix error after:\s+(\S+)", out).group(1))
    assert np.isfinite(after) and after < before


def test_cli_inspect_report_and_plot_a_calibrated_unitary_file(capsys, calibrated_file, tmp_path):
    _, _, path = calibrated_file
    code, out, err = run(capsys, "inspect", str(path))
    rows = _rows(out)
    assert code == 0, err
    assert rows["calibrated for"] == "chip seed 3 (64 heaters)" and rows["circuit"].startswith("unitary")
    code, out, err = run(capsys, "report", str(path))
    assert code == 0 and "drive map of chip seed 3" in out and "calibrated, on chip seed 3" in out
    code, out, err = run(capsys, "plot", str(path), "--what", "calibration", "-o", str(tmp_path / "c.png"))
    assert code == 0, err
    assert _is_png(tmp_path / "c.png")


def test_cli_drift_on_a_calibrated_unitary_file(capsys, calibrated_file, tmp_path):
    _, _, path = calibrated_file
    csv, fig = tmp_path / "d.csv", tmp_path / "d.png"
    code, out, err = run(capsys, "drift", str(path), "--hours", "0.02", "--dt", "10", "--compensator", "none",
                         "--compensator", "feedforward", "--chip-seed", "3", "-o", str(csv), "--plot", str(fig), "-q")
    assert code == 0, err
    assert "drift study: clements-8 chip seed 3 (unitary circuit), 1 run(s)" in out
    assert f"wrote {csv}" in out and f"wrote {fig}" in out
    study = pc.drift.read_csv(csv)
    assert set(study["errors"]) == {"none", "feedforward"}
    assert all(np.all(np.isfinite(e)) for e in study["errors"].values())
    assert _is_png(fig)
    # a chip of another seed is refused by name
    code, _, err = run(capsys, "drift", str(path), "--hours", "0.02", "--dt", "10", "--compensator", "none",
                       "--chip-seed", "4", "-q")
    assert code == 2 and err.count("\n") == 1
    assert "photocomp: error: --chip-seed must be the chip the program was calibrated for (seed 3)" in err
