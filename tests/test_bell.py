"""The Bell & Walmsley compact mesh (symmetric MZIs, input / edge / output phase layers): the float64 sweep
from Clements phases to Bell heater phases and back, the cell, and the ``bell-N`` target through the chip model."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from conftest import assert_same_fabrication, lossless_nominal

import photocomp as pc
from photocomp.calibration.engine import error, reachability
from photocomp.core import bell
from photocomp.core.cell import BELL, MZI, Cell, Coupler, Shifter
from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.layout import layout
from photocomp.core.reference import mesh_product
from photocomp.hardware.chipsim import chip_tile_matrices, program_from_settings, settings_from_program
from photocomp.sim.ideal import tile_matrices

SIZES = (2, 3, 4, 5, 6, 7, 8, 9, 16, 32)


def _clements_matrix(lay, theta, phi, out):
    return mesh_product(lay.n_modes, [(int(k), t, p) for k, t, p in zip(lay.pairs, theta, phi)], out)


def test_symmetric_cell_is_a_real_rotation_a_common_phase_and_a_pi_on_its_lower_input():
    """B diag(e^{ia}, e^{ib}) B = i e^{i sigma} R(theta) Z, sigma = (a + b)/2, theta = pi/2 - (a - b)/2."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 2 * np.pi, (2, 20))
    got = BELL.transfer({"internal": a, "lower": b})
    theta, sigma = np.pi / 2 - (a - b) / 2, (a + b) / 2
    c, s = np.cos(theta), np.sin(theta)
    rz = np.stack([np.stack([c, s], -1), np.stack([s, -c], -1)], -2)  # R(theta) Z
    np.testing.assert_allclose(got, (1j * np.exp(1j * sigma))[:, None, None] * rz, atol=1e-15)
    assert BELL.heaters == ("internal", "lower") and BELL.couplers == ("coupler_in", "coupler_out")
    assert BELL.programming == "sweep" and BELL.internal is None and "bell" in pc.core.cell.CELLS


def test_sweep_cells_are_checked_and_refuse_per_cell_programming():
    with pytest.raises(InvalidInputError, match=r"Shifter.arm must be one of \('upper', 'lower'\); got 'left'"):
        Shifter("x", arm="left")
    with pytest.raises(InvalidInputError, match="a 'sweep' cell must be Coupler"):
        Cell("sym", (Coupler("c"), Shifter("internal"), Coupler("d")), None, None, programming="sweep")
    with pytest.raises(InvalidInputError, match="programming must be one of"):
        Cell("m", MZI.components, MZI.internal, MZI.screen, programming="global")
    with pytest.raises(InvalidInputError, match="'bell' cell is programmed by a 'sweep'"):
        BELL.ideal_settings(0.3, 0.1)
    with pytest.raises(InvalidInputError, match="Clements"):
        bell.sweep_structure(layout("reck", 4))
    with pytest.raises(InvalidInputError, match="Target.mesh must be 'clements' with it; got 'reck'"):
        dataclasses.replace(pc.get_target("bell-4"), mesh="reck")  # refused when made, not at fabricate
    with pytest.raises(InvalidTypeError, match="MeshLayout"):
        bell.sweep_structure("clements-4")
    with pytest.raises(InvalidInputError, match="missing"):
        bell.clements_from_bell(layout("clements", 4), {"internal": np.zeros(6)})


@pytest.mark.parametrize("n", SIZES)
def test_bell_phases_reproduce_the_clements_mesh_and_its_decomposition(n):
    lay = layout("clements", n)
    # phase layers: input, one per column, output -- N + 2 (the N = 2 mesh is one column)
    assert bell.phase_layers(lay) == lay.depth + 2 == (n + 2 if n >= 3 else 3)
    assert bell.edge_count(lay) == (n if n % 2 == 0 else (n - 1) // 2) * (n >= 3)
    rng = np.random.default_rng(n)
    # a Haar unitary through the compiler's Clements decomposition
    u = pc.haar_unitary(n, rng)
    mp = pc.decompose(u, "clements")
    ph = bell.bell_from_clements(lay, np.asarray(mp.theta), np.asarray(mp.phi), np.asarray(mp.out_phase))
    assert {k: v.shape for k, v in ph.items()} == {"internal": (lay.n_mzi,), "lower": (lay.n_mzi,), "input": (n,),
                                                   "edge": (bell.edge_count(lay),), "output": (n,)}
    assert all(np.all((v >= 0) & (v < 2 * np.pi)) for v in ph.values())
    np.testing.assert_allclose(bell.bell_unitary(lay, ph), u, atol=1e-12)
    # random phases (outside the canonical ranges too), and back
    theta, phi, out = rng.uniform(-4, 4, lay.n_mzi), rng.uniform(-4, 4, lay.n_mzi), rng.uniform(-4, 4, n)
    want = _clements_matrix(lay, theta, phi, out)
    ph = bell.bell_from_clements(lay, theta, phi, out)
    np.testing.assert_allclose(bell.bell_unitary(lay, ph), want, atol=1e-12)
    t2, p2, o2 = bell.clements_from_bell(lay, ph)
    np.testing.assert_allclose(_clements_matrix(lay, t2, p2, o2), want, atol=1e-12)
    # the ideal programming leaves the mode-0 edge shifters, every edge of odd N and the last column's at 0
    st = bell.sweep_structure(lay)
    idle = [j for j, (c, q) in enumerate(st.edges) if q == 0 or n % 2 == 1 or c == lay.depth - 1]
    np.testing.assert_array_equal(ph["edge"][idle], 0.0)


def test_random_bell_phases_round_trip_through_the_clements_phases():
    for n in (5, 8):
        lay = layout("clements", n)
        rng = np.random.default_rng(7)
        ph = {g: rng.uniform(0, 2 * np.pi, s) for g, s in (("internal", lay.n_mzi), ("lower", lay.n_mzi),
                                                            ("input", n), ("edge", bell.edge_count(lay)),
                                                            ("output", n))}
        want = bell.bell_unitary(lay, ph)
        theta, phi, out = bell.clements_from_bell(lay, ph)
        np.testing.assert_allclose(_clements_matrix(lay, theta, phi, out), want, atol=1e-12)
        again = bell.bell_from_clements(lay, theta, phi, out)
        np.testing.assert_allclose(bell.bell_unitary(lay, again), want, atol=1e-12)


def test_sweep_batches_over_leading_axes():
    lay = layout("clements", 6)
    rng = np.random.default_rng(3)
    theta, phi, out = rng.uniform(0, 2, (2, 3, 15)), rng.uniform(0, 6, (2, 3, 15)), rng.uniform(0, 6, (2, 3, 6))
    batched = bell.bell_from_clements(lay, theta, phi, out)
    one = bell.bell_from_clements(lay, theta[1, 2], phi[1, 2], out[1, 2])
    for g in bell.BELL_GROUPS:
        np.testing.assert_allclose(batched[g][1, 2], one[g], atol=1e-12)


# ---- the bell-N target through the chip model ---------------------------------------------------------


def test_bell_target_resolves_with_its_cell():
    t = pc.get_target("bell-6")
    assert (t.mesh, t.size, t.cell, t.layout.cell) == ("clements", 6, "bell", BELL)
    assert t.depth == 6 and t.layout.n_mzi == 15 and "bell-<N>" in pc.available_targets()
    assert t.to_dict()["cell"] == "bell" and pc.Target.from_dict(t.to_dict()) == t


def test_bell_chip_shares_the_mzi_chips_fabrication_and_has_its_own_heater_groups():
    a, b = pc.fabricate("clements-6", seed=4), pc.fabricate("bell-6", seed=4)
    # the heaters both chips have (cells' first two, outputs, attenuators) draw the same offsets
    assert_same_fabrication(a, b)
    assert list(b.group_slices()) == ["v_int", "v_low", "v_out", "att", "u_int", "u_low", "u_out",
                                      "v_in", "v_edge", "u_in", "u_edge"]
    e = bell.edge_count(b.layout)
    assert b.n_heaters == a.n_heaters + 2 * (6 + e) and b.cell_errors == {"v": {}, "u": {}}
    u = pc.fabricate("bell-6", seed=4, circuit="unitary")
    assert list(u.group_slices()) == ["u_int", "u_low", "u_out", "u_in", "u_edge"]
    assert u.n_heaters == 2 * 15 + 6 + 6 + e


def _reference_tile(chip, s, tile: int = 0) -> np.ndarray:
    """Float64 reference of one tile of a Bell chip: bell_unitary of each mesh with the chip's errors, the
    attenuators (MZIs) and the V output layer between them (no gain)."""
    lay = s.layout
    f = lambda a: np.asarray(a, dtype=np.float64)[tile]  # noqa: E731

    def mesh(stage):
        ph = {g: f(getattr(s, f"{stage}_{k}")) for g, k in (("internal", "int"), ("lower", "low"), ("input", "in"),
                                                              ("edge", "edge"), ("output", "out"))}
        errs = {"coupler_in": chip.coupler_in[stage], "coupler_out": chip.coupler_out[stage],
                "loss_db": chip.loss_db[stage]}
        return bell.bell_unitary(lay, ph, errs)

    u = mesh("u")
    if s.v_int is None:
        return u
    att = [MZI.transfer({"internal": f(s.att)[q], "external": 0.0},
                        {"coupler_in": chip.coupler_in["att"][q], "coupler_out": chip.coupler_out["att"][q],
                         "loss_db": chip.loss_db["att"][q]})[0, 0] for q in range(lay.n_modes)]
    return u @ np.diag(att) @ mesh("v")


@pytest.mark.parametrize("n", [4, 5])
@pytest.mark.parametrize("circuit", ["svd", "unitary"])
def test_bell_chip_simulation_matches_the_float64_reference_with_random_heaters_and_errors(n, circuit):
    rng = np.random.default_rng(n)
    w = pc.haar_unitary(n, rng) if circuit == "unitary" else rng.normal(size=(n, n))
    prog = pc.compile(w, f"bell-{n}")
    assert prog.circuit == circuit
    chip = pc.fabricate(f"bell-{n}", seed=6, circuit=circuit)
    with jax.enable_x64(True):
        s = settings_from_program(prog.ideal_phase_map)
        s = jax.tree_util.tree_map(lambda a: rng.uniform(0, 2 * np.pi, np.shape(a)), s)
        got = np.asarray(chip_tile_matrices(chip, s, with_gain=False))
    np.testing.assert_allclose(got[0], _reference_tile(chip, s), atol=1e-12)


@pytest.mark.parametrize("n", [5])  # odd N: the sweep's other chain ends (even N: the simulation test's N = 4)
def test_ideal_bell_chip_runs_the_program_exactly_and_settings_invert(n):
    for w in (np.random.default_rng(0).normal(size=(n, n - 1)), pc.haar_unitary(n, np.random.default_rng(2))):
        prog = pc.compile(w, f"bell-{n}")
        assert error(*lossless_nominal(prog))["matrix_error"] < 1e-12
        with jax.enable_x64(True):
            pm = prog.ideal_phase_map
            back = program_from_settings(settings_from_program(pm))
            np.testing.assert_allclose(np.asarray(tile_matrices(back)), np.asarray(tile_matrices(pm)), atol=1e-12)


def test_bell_chip_simulation_is_differentiable_in_every_heater_group():
    """Reverse-mode gradients through the folded input layer and edge shifters agree with central differences."""
    prog = pc.compile(pc.haar_unitary(6, np.random.default_rng(0)), "bell-6")
    chip = pc.fabricate("bell-6", seed=2, circuit="unitary")
    want = np.asarray(pc.haar_unitary(6, np.random.default_rng(1)))
    with jax.enable_x64(True):
        s0 = settings_from_program(prog.ideal_phase_map)

        @jax.jit
        def loss(s):
            m = chip_tile_matrices(chip, s, with_gain=False)[0]
            return jax.numpy.sum(jax.numpy.abs(m - want) ** 2)

        grads = jax.grad(loss)(s0)
        for g in s0.groups:
            a = np.asarray(getattr(s0, g))
            assert a.size, g
            j = a.shape[-1] - 1
            step = np.zeros_like(a)
            step[0, j] = 1e-6
            plus = float(loss(s0.replace(**{g: a + step})))
            minus = float(loss(s0.replace(**{g: a - step})))
            np.testing.assert_allclose(np.asarray(getattr(grads, g))[0, j], (plus - minus) / 2e-6, atol=1e-6)


def _coupler_only(name: str, sigma: float) -> pc.Target:
    return dataclasses.replace(pc.get_target(name), coupler_sigma_rad=sigma, mzi_loss_db=0.0, mzi_loss_sigma_db=0.0,
                               crossing_loss_db=0.0)


def test_local_correction_of_the_bell_mesh_is_the_mzi_meshs():
    """The symmetric cell splits as an MZI at internal = upper - lower, so it reaches exactly the MZI's
    splittings; the sweep with every corrected cell's own phases is exact wherever the cells reach."""
    u = pc.haar_unitary(8, np.random.default_rng(0))
    for sigma in (0.005, 0.06):
        out = {}
        for fam in ("clements", "bell"):
            t = _coupler_only(f"{fam}-8", sigma)
            prog = pc.compile(u, t)
            chip = pc.fabricate(t, seed=1, circuit="unitary")
            reach = reachability(prog, chip)
            out[fam] = (reach.fraction, reach.clip_error, error(pc.calibrate(prog, chip, "local", progress=False),
                                                                chip)["matrix_error"])
        assert out["bell"][:2] == pytest.approx(out["clements"][:2], abs=1e-12)
        if sigma < 0.01:  # every cell reaches: exact
            assert out["bell"][0] == 0.0 and out["bell"][2] < 1e-12
        else:  # clipped cells: the error clipping leaves, as the MZI mesh
            assert out["bell"][0] > 0 and out["bell"][2] == pytest.approx(out["bell"][1], rel=1e-6)


def test_local_correction_of_padded_tiles_is_the_mzi_meshs_tile_by_tile():
    """Zero-padded tiles are mostly cells that want no coupling, where local correction leaves the external
    phase of a clipped cell alone (``_PHASE_FIT_MIN_RATIO``). The Bell mesh takes the MZI mesh's corrections
    over exactly, that rule included: every tile's error equals the MZI mesh's and beats no correction (the
    sweep with each cell's programmed phase lost to no correction on the padded tiles)."""
    from photocomp.calibration.engine import ideal_settings, ideal_tiles, local_settings, settings_error

    w = np.random.default_rng(0).normal(size=(30, 20))
    per = {}
    for fam in ("clements", "bell"):
        prog = pc.compile(w, f"{fam}-16")
        chip = pc.fabricate(f"{fam}-16", seed=0)
        tiles = ideal_tiles(prog)
        per[fam] = (settings_error(chip, ideal_settings(prog), tiles)[2],
                    settings_error(chip, local_settings(prog, chip, tiles)[0], tiles)[2])
    ideal, local = per["bell"]
    assert np.all(local < 0.9 * ideal)
    np.testing.assert_allclose(local, per["clements"][1], rtol=1e-9, atol=1e-13)


def test_bell_program_calibrated_locally_saves_and_loads(tmp_path):
    w = np.random.default_rng(1).normal(size=(5, 6))
    prog = pc.compile(w, "bell-6")
    chip = pc.fabricate("bell-6", seed=2)
    cal = pc.calibrate(prog, chip, "local", progress=False)
    assert error(cal, chip)["matrix_error"] < error(prog, chip)["matrix_error"]
    back = pc.load(cal.save(tmp_path / "cal.npz"))
    assert back.target.cell == "bell" and back.settings.u_ext is None
    for g in cal.settings.groups:
        np.testing.assert_array_equal(np.asarray(getattr(back.settings, g)), np.asarray(getattr(cal.settings, g)))
    np.testing.assert_array_equal(np.asarray(back.matrix()), np.asarray(cal.matrix()))
    u = pc.compile(pc.haar_unitary(6, np.random.default_rng(3)), "bell-6")
    back = pc.load(u.save(tmp_path / "u.npz"))
    np.testing.assert_array_equal(np.asarray(back.matrix()), np.asarray(u.matrix()))


def test_cost_counts_the_bell_meshs_phase_layers_and_heaters():
    u = pc.haar_unitary(6, np.random.default_rng(0))
    w = np.random.default_rng(1).normal(size=(6, 6))
    for n_layers, fam in (((13, 27), "clements"), ((8, 17), "bell"), ((19, 39), "mzi3")):
        costs = [pc.cost(pc.compile(x, f"{fam}-6")) for x in (u, w)]
        assert (costs[0].phase_layers, costs[1].phase_layers) == n_layers
        assert costs[1].phase_shifters == pc.fabricate(f"{fam}-6", seed=0).n_heaters
    bell_u = pc.cost(pc.compile(u, "bell-6"))
    assert bell_u.phase_layers == bell.phase_layers(layout("clements", 6))
    # one arm heater per cell on a path, plus the input and output layers (and any edge shifters it passes)
    assert bell_u.path_phase_shifters >= 6 + 2
    assert "heater energy" in str(bell_u)


@pytest.mark.parametrize("n", [2, 3, 6, 9])
def test_bell_component_count_adds_the_input_layer_and_edge_shifters_its_chip_has(n):
    bell_t, mzi_t = pc.get_target(f"bell-{n}"), pc.get_target(f"clements-{n}")
    extra_heaters = pc.fabricate(bell_t, seed=0).n_heaters - pc.fabricate(mzi_t, seed=0).n_heaters
    # both cells have 2 couplers and 2 shifters; the Bell chip's other shifters are its extra heaters
    assert bell_t.components - mzi_t.components == extra_heaters == 2 * (n + bell.edge_count(bell_t.layout))


def test_bell_thermal_phase_map_moves_the_chip_exactly_like_its_waveguide_sections():
    """A temperature field across and along the die, applied section by section to a Bell mesh (input
    sections, both arms with the imbalance, unpaired modes, output sections), equals its heater phases."""
    from photocomp.drift import thermal

    for n in (5, 6):
        t = pc.get_target(f"bell-{n}")
        lay = t.layout
        chip = pc.fabricate(t, seed=1, circuit="unitary")
        imb = thermal.sample_imbalance(chip, 2.0)
        field = lambda xy: (0.3 + 2e-3 * xy[:, 1] + 1e-3 * xy[:, 0] + 1e-6 * xy[:, 0] * xy[:, 1])[:, None]  # noqa: E731
        dphi = thermal.thermal_phase_map(t, imb, field, "unitary")[:, 0]
        kappa = float(thermal.thermo_optic_phase(1.0, 1.0, wavelength_nm=t.wavelength_nm, dn_dt_per_k=t.dn_dt_per_k))
        px, py, half = t.column_pitch_um, t.mode_pitch_um, t.column_pitch_um / 2
        pos = pc.hardware.chip.heater_positions(t, "unitary")
        sl = chip.group_slices()
        rng = np.random.default_rng(n)
        heat = rng.uniform(0, 2 * np.pi, chip.n_heaters)
        ph = lambda h: {g: h[sl[f"u_{k}"]] for g, k in (("internal", "int"), ("lower", "low"), ("input", "in"),  # noqa: E731
                                                          ("edge", "edge"), ("output", "out"))}
        got = bell.bell_unitary(lay, ph(heat + dphi))
        # the reference: the same heaters, and every waveguide section's thermal phase where it is
        h = ph(heat)
        st = bell.sweep_structure(lay)
        temp = lambda x, y: float(field(np.array([[x, y]]))[0, 0])  # noqa: E731
        m = np.diag(np.exp(1j * h["input"]))
        for c in range(lay.depth):
            x0 = c
            m = np.diag([np.exp(1j * kappa * half * temp((x0 - 0.5) * px, q * py)) for q in range(n)]) @ m
            s0, s1 = st.col_slices[c]
            for i in range(s0, s1):
                q = lay.pairs[i]
                up = h["internal"][i] + kappa * (half + imb["u"][i]) * temp(*pos[sl["u_int"]][i])
                low = h["lower"][i] + kappa * half * temp(*pos[sl["u_low"]][i])
                step = np.eye(n, dtype=complex)
                step[q:q + 2, q:q + 2] = BELL.transfer({"internal": up, "lower": low})
                m = step @ m
            paired = set(lay.pairs[s0:s1]) | {q + 1 for q in lay.pairs[s0:s1]}
            for q in sorted(set(range(n)) - paired):
                m[q] *= np.exp(1j * kappa * half * temp(x0 * px, q * py))
            for j, (ec, q) in enumerate(st.edges):
                if ec == c:
                    m[q] *= np.exp(1j * h["edge"][j])
        outs = [h["output"][q] + kappa * px * temp(*pos[sl["u_out"]][q]) for q in range(n)]
        want = np.diag(np.exp(1j * np.asarray(outs))) @ m
        np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.slow  # ~25 s on two loaded cores: heater characterisation, probes and a twin fit
def test_twin_of_a_bell_chip_fits_its_measurements():
    from photocomp.calibration.twin import fit_twin

    chip = pc.fabricate("bell-4", seed=3, circuit="unitary")
    fit = fit_twin(pc.BlackBoxChip(chip, seed=0, noise=False), configs=8, steps=200, tol=1e-12, patience=100)
    assert fit.residual < fit.residual_start / 50
    assert fit.chip.n_heaters == chip.n_heaters and fit.chip.target.cell == "bell"


@pytest.mark.slow  # ~60 s: a model calibration, a drift study, plots and the netlist of a Bell chip
def test_model_calibration_drift_plot_and_netlist_of_a_bell_chip(tmp_path):
    from photocomp.analysis.plot import plot
    from photocomp.core.graph import export_netlist

    w = np.random.default_rng(4).normal(size=(4, 4))
    prog = pc.compile(w, "bell-4")
    chip = pc.fabricate("bell-4", seed=3)
    before = error(prog, chip)["matrix_error"]
    local = error(pc.calibrate(prog, chip, "local", progress=False), chip)["matrix_error"]
    cal = pc.calibrate(prog, chip, "model", progress=False, steps=150)
    after = error(cal, chip)["matrix_error"]
    assert after < local < before and after < before / 5
    study = pc.drift.study(cal, chip, hours=0.01, dt_s=6.0, compensators=("none",), progress=False)
    assert study.errors["none"].shape == (1, 7) and np.all(np.isfinite(study.errors["none"]))
    assert study.errors["none"][0, 0] == pytest.approx(after, rel=0.2, abs=1e-4)
    for what in ("phases", "mesh", "calibration"):
        assert plot(cal, tmp_path / f"{what}.png", what=what).endswith(".png")
    assert export_netlist(cal, tmp_path / "net.json").endswith(".json")
    back = pc.load(cal.save(tmp_path / "cal.npz"))
    np.testing.assert_array_equal(np.asarray(back.matrix()), np.asarray(cal.matrix()))
