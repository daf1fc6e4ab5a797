"""The crossbar target (fan-out / weight / fan-in), checked against float64 references written here."""

from __future__ import annotations

import dataclasses
from collections import deque

import jax
import networkx as nx
import numpy as np
import pytest

import photocomp as pc
from photocomp.calibration.engine import crossbar_cells, error
from photocomp.core.crossbar import tree_amplitudes, tree_structure
from photocomp.core.errors import InvalidInputError, InvalidTypeError, MismatchError, PipelineError
from photocomp.core.graph import to_sax_netlist
from photocomp.hardware.chip import TREE_ERRORS, heater_slices
from photocomp.hardware.chipsim import Settings, chip_column_fields, chip_tile_matrices, settings_from_program
from photocomp.targets.physics import crossbar_components

EXACT = "validate | tile | crossbar | canonicalize | lower"


def _tree_reference(k: int, errors: np.ndarray) -> np.ndarray:
    """Leaf amplitudes of a k-leaf splitter tree: the tree built by recursion, its splitters numbered and
    their amplitudes multiplied in breadth-first order from a queue."""
    def build(leaves):
        if len(leaves) == 1:
            return leaves[0]
        up = (len(leaves) + 1) // 2
        return (np.arctan(np.sqrt((len(leaves) - up) / up)), build(leaves[:up]), build(leaves[up:]))

    amp = np.ones(k)
    queue, index = deque([(build(list(range(k))), 1.0)]), 0
    while queue:
        node, factor = queue.popleft()
        if isinstance(node, int):
            amp[node] = factor
            continue
        alpha = node[0] + errors[index]
        index += 1
        queue.extend([(node[1], factor * np.cos(alpha)), (node[2], factor * np.sin(alpha))])
    return amp


def _cell_reference(internal, external, a, b, loss_db):
    """Upper-to-upper element of B(b) diag(e^{i internal}, 1) B(a) diag(e^{i external}, 1), times the loss,
    with B(e) = [[cos(pi/4 + e), i sin(pi/4 + e)], [i sin(pi/4 + e), cos(pi/4 + e)]]."""
    def coupler(e):
        c, s = np.cos(np.pi / 4 + e), np.sin(np.pi / 4 + e)
        return np.array([[c, 1j * s], [1j * s, c]])
    m = coupler(b) @ np.diag([np.exp(1j * internal), 1.0]) @ coupler(a) @ np.diag([np.exp(1j * external), 1.0])
    return m[0, 0] * 10 ** (-loss_db / 20)


def _chip_tile_reference(chip, s: Settings, tile: int) -> np.ndarray:
    """One tile of a crossbar chip, element by element (no gain)."""
    k = chip.target.size
    trees = chip.cell_errors["u"]
    fan_out = np.stack([_tree_reference(k, trees["fan_out"][j * (k - 1):(j + 1) * (k - 1)]) for j in range(k)])
    fan_in = np.stack([_tree_reference(k, trees["fan_in"][i * (k - 1):(i + 1) * (k - 1)]) for i in range(k)])
    m = np.zeros((k, k), complex)
    for i in range(k):
        for j in range(k):
            c = i * k + j
            cell = _cell_reference(s.u_int[tile, c], s.u_ext[tile, c], chip.coupler_in["u"][c],
                                   chip.coupler_out["u"][c], chip.loss_db["u"][c])
            m[i, j] = np.exp(1j * s.u_out[tile, i]) * fan_in[i, j] * cell * fan_out[j, i]
    return m


@pytest.mark.parametrize("k", [1, 2, 3, 5, 6, 8, 11])
def test_splitter_trees_share_power_equally_and_conserve_it(k):
    np.testing.assert_allclose(np.asarray(tree_amplitudes(k, xp=np), np.float64), np.full(k, 1 / np.sqrt(k)),
                               rtol=0, atol=1e-15)
    if k > 1:
        errors = np.random.default_rng(k).normal(0, 0.1, (3, k - 1))
        amp = tree_amplitudes(k, errors, xp=np)
        # a lossless tree sends all of its input's power to its leaves, whatever its splitting errors
        np.testing.assert_allclose(np.sum(amp**2, axis=-1), 1.0, rtol=0, atol=1e-14)
        np.testing.assert_allclose(amp, np.stack([_tree_reference(k, e) for e in errors]), rtol=0, atol=1e-15)
        alpha, node, _, valid = tree_structure(k)
        assert alpha.shape == (k - 1,) and valid.sum(axis=1).max() == int(np.ceil(np.log2(k)))


@pytest.mark.parametrize("shape, k", [((6, 6), 6), ((10, 13), 4), ((3, 9), 8)])
def test_compiled_crossbar_is_the_matrix_to_rounding(shape, k):
    rng = np.random.default_rng(sum(shape) + k)
    w = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    prog = pc.compile(w, f"crossbar-{k}", pipeline=EXACT)
    assert prog.circuit == "crossbar" and prog.n_mzi == prog.n_tiles * k * k and prog.depth == 1
    np.testing.assert_allclose(prog.matrix(), w, rtol=0, atol=1e-12 * np.abs(w).max())
    # the phase map's own meaning, written out: tile = gain / K diag(e^{i out}) [cos theta e^{i phi}]
    pm = prog.phase_map
    cells = np.cos(pm.u.theta) * np.exp(1j * pm.u.phi)
    tiles = (pm.gain[:, None, None] / k) * np.exp(1j * pm.u.out_phase)[:, :, None] * cells.reshape(-1, k, k)
    np.testing.assert_allclose(pm.grid.join(tiles), w, rtol=0, atol=1e-12 * np.abs(w).max())
    assert np.all((pm.u.theta >= 0) & (pm.u.theta <= np.pi / 2)) and np.all((pm.u.phi >= 0) & (pm.u.phi < 2 * np.pi))
    # the default pipeline quantizes to the target's DACs
    q = pc.compile(w, f"crossbar-{k}")
    err = np.linalg.norm(q.matrix() - w) / np.linalg.norm(w)
    assert 1e-6 < err < 5e-3 and q.report["quantize"].metrics["bits"] == 12


def test_chip_simulation_matches_the_elementwise_reference():
    with jax.enable_x64(True):
        prog = pc.compile(np.random.default_rng(5).normal(size=(5, 5)), "crossbar-5", pipeline=EXACT)
        chip = pc.fabricate("crossbar-5", seed=2)
        s = jax.tree_util.tree_map(np.asarray, settings_from_program(prog.phase_map))
        rng = np.random.default_rng(1)
        s = s.replace(u_int=s.u_int + rng.normal(0, 0.3, s.u_int.shape), u_out=rng.uniform(0, 6, s.u_out.shape))
        got = np.asarray(chip_tile_matrices(chip, s, with_gain=False))
    np.testing.assert_allclose(got[0], _chip_tile_reference(chip, s, 0), rtol=0, atol=1e-15)
    assert set(chip.cell_errors["u"]) == set(TREE_ERRORS)
    assert all(v.shape == (20,) for v in chip.cell_errors["u"].values())


def test_ideal_chip_and_its_heaters():
    t = pc.get_target("crossbar-4")
    sl = heater_slices(t)
    assert [(g, s.stop - s.start) for g, s in sl.items()] == [("u_int", 16), ("u_ext", 16), ("u_out", 4)]
    chip = pc.fabricate(t, seed=0)
    assert chip.circuit == "crossbar" and chip.n_heaters == 36
    nominal = pc.hardware.chip.nominal_chip(t)
    lossless = dataclasses.replace(nominal, loss_db={"u": np.zeros(16)})
    w = np.random.default_rng(0).normal(size=(4, 4))
    prog = pc.compile(w, t, pipeline=EXACT)
    with jax.enable_x64(True):
        m = np.asarray(pc.hardware.chipsim.chip_matrix(lossless, settings_from_program(prog.phase_map)))
    np.testing.assert_allclose(m, w, rtol=0, atol=1e-13)


def test_per_cell_correction_is_exact_where_the_cells_reach():
    """Entries away from zero: every cell reaches its share, so the closed-form correction undoes every error."""
    rng = np.random.default_rng(7)
    w = rng.uniform(0.3, 1.0, (6, 6)) * np.exp(2j * np.pi * rng.uniform(size=(6, 6)))
    prog = pc.compile(w, "crossbar-6", pipeline=EXACT)
    chip = pc.fabricate("crossbar-6", seed=4)
    before = error(prog, chip)["matrix_error"]
    reach = pc.reachability(prog, chip)
    assert reach.count == 0 and reach.clip_error < 1e-13
    local = pc.calibrate(prog, chip, method="local")
    assert before > 0.02 and error(local, chip)["matrix_error"] < 1e-12


def test_unreachable_cells_are_those_outside_their_range():
    """Small entries of a Gaussian matrix fall below a cell's floor (and the tile's best scale may clip its
    brightest cells); the mask agrees with a brute-force sweep of every cell's internal phase, and local
    correction reaches exactly the clip error, which model calibration does not beat by more than 1e-3."""
    w = np.random.default_rng(3).normal(size=(8, 8))
    prog = pc.compile(w, pc.get_target("crossbar-8").__class__(
        **{**pc.get_target("crossbar-8").to_dict(), "coupler_sigma_rad": 0.08}), pipeline=EXACT)
    chip = pc.fabricate(prog.target, seed=1)
    reach = pc.reachability(prog, chip)
    cells = crossbar_cells(prog.phase_map, chip)
    # brute force: every cell's amplitude over a fine grid of its internal phase, path and loss included
    psi = np.linspace(0, 2 * np.pi, 20001)
    with jax.enable_x64(True):
        k = 8
        lay = prog.phase_map.layout
        amp = np.stack([np.abs(np.asarray(pc.hardware.chipsim.stage_coefficients(
            chip, lay, "u", np.full(k * k, p), np.zeros(k * k), dtype=np.complex128)[0])) for p in psi[::20]])
    lo, hi = amp.min(axis=0), amp.max(axis=0)
    mag = np.abs(np.cos(prog.phase_map.u.theta[0]))
    want = cells.scale[0] * mag
    assert cells.scale[0] >= np.min(hi / mag) * (1 - 1e-6)  # at least the scale at which every cell reaches its top
    brute = (want < lo * (1 - 1e-4)) | (want > hi * (1 + 1e-4))
    # cells not within the grid's resolution of an end
    clear = (np.abs(want / lo - 1) > 1e-3) & (np.abs(want / hi - 1) > 1e-3)
    np.testing.assert_array_equal(reach.u[0][clear], brute[clear])
    assert 0 < reach.count < 64 and reach.fraction == pytest.approx(reach.count / 64)
    local = pc.calibrate(prog, chip, method="local")
    assert error(local, chip)["matrix_error"] == pytest.approx(reach.clip_error, rel=1e-9)
    model = pc.calibrate(prog, chip, method="model", steps=60, progress=False)
    assert reach.clip_error * (1 - 1e-3) <= error(model, chip)["matrix_error"] <= reach.clip_error * (1 + 1e-9)


def test_mesh_only_methods_refuse_a_crossbar_with_a_typed_error():
    prog = pc.compile(np.eye(4), "crossbar-4")
    chip = pc.fabricate("crossbar-4", seed=0)
    for method in ("selfconfig", "nullify"):
        with pytest.raises(MismatchError, match="crossbar's weight cells are independent"):
            pc.calibrate(prog, chip, method=method)
    with pytest.raises(InvalidTypeError, match="needs a mesh chip"):
        chip_column_fields(chip, settings_from_program(prog.phase_map), np.eye(4))


def test_bad_crossbar_input_is_refused():
    t = pc.get_target("crossbar-4")
    with pytest.raises(InvalidInputError, match="Target.cell must be 'mzi'"):
        pc.Target(**{**t.to_dict(), "cell": "mzi3"})
    with pytest.raises(InvalidInputError, match=r"circuit must be one of \('crossbar',\)"):
        pc.fabricate(t, seed=0, circuit="svd")
    with pytest.raises(InvalidInputError, match=r"circuit must be one of \('svd', 'unitary'\)"):
        pc.fabricate("clements-4", seed=0, circuit="crossbar")
    with pytest.raises(InvalidInputError, match="circuit must be one of"):
        t.default_pipeline("unitary")
    with pytest.raises(PipelineError, match="pass 'crossbar' sets the weight cells of a crossbar target"):
        pc.compile(np.eye(4), "clements-4", pipeline=EXACT)
    with pytest.raises(PipelineError, match="is a crossbar chip"):
        pc.compile(np.eye(4), t, pipeline="validate | tile | svd | clements | lower")
    with pytest.raises(InvalidInputError, match="no mesh columns"):
        _ = t.layout.column_slots


def test_netlist_of_a_crossbar_computes_its_tile():
    """Propagating unit inputs through the SAX netlist's instances with their documented transfers gives the
    tile's matrix."""
    rng = np.random.default_rng(9)
    k = 5
    w = rng.normal(size=(k, k)) + 1j * rng.normal(size=(k, k))
    prog = pc.compile(w, f"crossbar-{k}", pipeline=EXACT)
    g = prog.graph()
    assert nx.is_directed_acyclic_graph(g)
    kinds = nx.get_node_attributes(g, "kind")
    assert sum(v == "splitter" for v in kinds.values()) == k * (k - 1) == sum(v == "combiner" for v in kinds.values())
    net = to_sax_netlist(prog)
    inst, conn, ports = net["instances"], net["connections"], net["ports"]
    transfer = {
        "splitter": lambda s, x: {"o0": np.cos(s["alpha"]) * x.get("i", 0), "o1": np.sin(s["alpha"]) * x.get("i", 0)},
        "combiner": lambda s, x: {"o": np.cos(s["alpha"]) * x.get("i0", 0) + np.sin(s["alpha"]) * x.get("i1", 0)},
        "weight": lambda s, x: {"o": np.exp(1j * s["phi"]) * np.cos(s["theta"]) * x.get("i", 0)},
        "phase_shifter": lambda s, x: {"o": np.exp(1j * s["phase"]) * x.get("i", 0)},
        "gain": lambda s, x: {"o": s["gain"] * x.get("i", 0)},
    }
    dag = nx.DiGraph()
    dag.add_nodes_from(inst)
    for src, dst in conn.items():
        dag.add_edge(src.split(",")[0], dst.split(",")[0])
    order = list(nx.topological_sort(dag))
    m = np.zeros((k, k), complex)
    for j in range(k):
        inputs: dict[str, dict] = {name: {} for name in inst}
        first, port = ports[f"in{j}"].split(",")
        inputs[first][port] = 1.0
        outputs = {}
        for name in order:
            outputs[name] = transfer[inst[name]["component"]](inst[name]["settings"], inputs[name])
            for out_port, value in outputs[name].items():
                dst = conn.get(f"{name},{out_port}")
                if dst is not None:
                    d_name, d_port = dst.split(",")
                    inputs[d_name][d_port] = inputs[d_name].get(d_port, 0) + value
        for i in range(k):
            m[i, j] = outputs[f"gain_{i}"]["o"]
    np.testing.assert_allclose(m, w, rtol=0, atol=1e-13)


def test_files_cost_and_drift_of_a_crossbar(tmp_path):
    w = np.random.default_rng(2).normal(size=(6, 7))
    prog = pc.compile(w, "crossbar-4")
    chip = pc.fabricate("crossbar-4", seed=5)
    local = pc.calibrate(prog, chip, method="local")
    for p, name in ((prog, "p"), (local, "c")):
        back = pc.load(p.save(tmp_path / name))
        assert back.circuit == "crossbar"
        np.testing.assert_array_equal(back.phase_map.u.theta, p.phase_map.u.theta)
        np.testing.assert_array_equal(back.matrix(), p.matrix())
    back = pc.load(tmp_path / "c.npz" if (tmp_path / "c.npz").exists() else tmp_path / "c")
    assert error(back, chip)["matrix_error"] == error(local, chip)["matrix_error"]
    t = prog.target
    c = pc.cost(prog)
    assert t.components == crossbar_components(4) == 4 * 16 + 2 * 4 * 3 + 4 + 8
    assert c.mzis == 16 and c.phase_shifters == 2 * 16 + 4 and c.depth == 1
    assert c.insertion_loss_db == pytest.approx(t.mzi_loss_db + 3 * t.phase_shifter_loss_db)
    assert "1/4 of the power (6.0 dB)" in str(c)
    study = pc.drift.study(local, chip, hours=0.01, dt_s=6.0, compensators=("none",), progress=False)
    assert np.all(np.isfinite(study.errors["none"]))
    assert study.errors["none"][0, 0] == pytest.approx(error(local, chip)["matrix_error"], rel=0.2, abs=1e-4)


def test_uniform_heating_of_a_balanced_crossbar_moves_no_splitting():
    from photocomp.drift.thermal import ThermalProcess, thermal_die

    chip = pc.fabricate("crossbar-4", seed=0)
    die = thermal_die(chip, ThermalProcess(), imbalance_um={"u": np.zeros(16)})
    sl = heater_slices(chip.target)
    ambient = die.phase_per_k[:, 0]
    # both arms of every weight MZI warm alike: its splitting holds; every path's common phase moves alike
    np.testing.assert_allclose(ambient[sl["u_int"]], 0.0, atol=1e-15)
    np.testing.assert_allclose(ambient[sl["u_ext"]], ambient[sl["u_ext"]][0], rtol=1e-12)
    assert ambient[sl["u_ext"]][0] > 0


@pytest.mark.slow
def test_black_box_methods_improve_a_crossbar():
    w = np.random.default_rng(0).normal(size=(8, 8))
    prog = pc.compile(w, "crossbar-8")
    chip = pc.fabricate("crossbar-8", seed=1)
    before = error(prog, chip)["matrix_error"]
    twin = pc.calibrate(prog, chip, method=pc.Twin(rounds=2), progress=False)
    insitu = pc.calibrate(prog, chip, method=pc.InSitu(steps=10))
    assert error(twin, chip)["matrix_error"] < before / 2
    assert error(insitu, chip)["matrix_error"] < before


def test_cli_and_figures_of_a_crossbar(capsys, tmp_path):
    import re

    import matplotlib

    matplotlib.use("Agg")
    from conftest import run_cli

    from photocomp.analysis.plot import figure

    np.save(tmp_path / "w.npy", np.random.default_rng(0).normal(size=(10, 12)))
    code, out, err = run_cli(capsys, "compile", str(tmp_path / "w.npy"), "--target", "crossbar-8", "-o",
                             str(tmp_path / "p.npz"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "inspect", str(tmp_path / "p.npz"))
    assert code == 0, err
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.strip().splitlines())
    assert rows["circuit"].startswith("crossbar (fan-out trees, one weight cell per entry")
    assert rows["MZIs"] == "256 (64 weight cells per tile)" and rows["weight cells"].startswith("theta [")
    code, out, err = run_cli(capsys, "calibrate", str(tmp_path / "p.npz"), "--chip-seed", "3", "--method", "local",
                             "-o", str(tmp_path / "c.npz"))
    assert code == 0, err
    cal = pc.load(tmp_path / "c.npz")
    assert cal.calibrated and cal.chip.circuit == "crossbar"
    code, out, err = run_cli(capsys, "targets")
    assert re.search(r"crossbar-<N>\s+crossbar\s+N\s+N\^2", out)
    # figures: the weight cells drawn as the tile's matrix
    titles = [ax.get_title() for ax in figure(cal, "phases").axes]
    assert "tile 0: weight cells theta" in titles and "tile 0: weight cells phi" in titles
    mesh = figure(cal, "mesh")
    assert [ax.get_xlabel() for ax in mesh.axes[:1]] == ["input j"]
    assert "crossbar circuit of tile 0 of 4" in mesh._suptitle.get_text()
    calib = figure(cal, "calibration", tile=0)
    assert any(ax.get_title() == "weight cells: unreachable in tile 0" and ax.get_xlabel() == "input j"
               for ax in calib.axes)
