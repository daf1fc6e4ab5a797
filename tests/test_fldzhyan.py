"""Fldzhyan's layout (``fldzhyan-N``): 2N brick columns of static couplers, one phase shifter each, programmed by
fitting; its fixed-splitting cell through the chip model, calibration, drift, cost and files."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from conftest import lossless_nominal

import photocomp as pc
from photocomp.calibration.engine import error
from photocomp.compiler.fit import fit_meshes
from photocomp.core.cell import FIXED_THETA, FLDZHYAN, Affine, Cell, Coupler, Shifter
from photocomp.core.convention import mzi
from photocomp.core.errors import InvalidInputError, MismatchError
from photocomp.core.layout import layout, mesh_counts, mesh_unitary
from photocomp.hardware.chip import heater_groups, nominal_chip


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_layout_is_the_brick_continued_to_2n_columns(n):
    lay = layout("fldzhyan", n, cell="fldzhyan")
    assert (lay.n_mzi, lay.depth) == (n * (n - 1), 2 * n if n > 2 else 2) == mesh_counts("fldzhyan", n)
    assert lay.adjacent and lay.cell is FLDZHYAN
    for c in range(lay.depth):
        tops = lay.pair_array[lay.column_array == c]
        # every column a full brick layer of one parity (N = 2: both columns hold the one pair)
        want = np.arange(c % 2, n - 1, 2) if n > 2 else np.array([0])
        np.testing.assert_array_equal(tops, want)


def test_the_cell_is_a_screened_convention_cell_at_a_fixed_splitting():
    """``B(in) P(external) = diag(e^{-i pi/2}, 1) T(pi/4 + coupler_in, external + pi/2)``, in float64."""
    rng = np.random.default_rng(0)
    ext, err = rng.uniform(0, 2 * np.pi, 20), rng.normal(0, 0.2, 20)
    got = FLDZHYAN.transfer({"external": ext}, {"coupler_in": err})
    with jax.enable_x64(True):
        t = np.asarray(mzi(FIXED_THETA + err, ext + np.pi / 2))
    want = np.stack([np.exp(-0.5j * np.pi) * t[:, 0], t[:, 1]], axis=1)
    np.testing.assert_allclose(got, want, atol=1e-14)
    assert FLDZHYAN.heaters == ("external",) and FLDZHYAN.internal is None
    assert FLDZHYAN.ideal_settings(FIXED_THETA, 0.3) == {"external": 0.3 - np.pi / 2}
    assert (FLDZHYAN.path_shifters(0), FLDZHYAN.path_shifters(1)) == (1, 0)


def test_a_fixed_cell_must_be_one_shifter_and_one_coupler():
    with pytest.raises(InvalidInputError, match=r"a 'fixed' cell must be Shifter\('external'\), Coupler"):
        Cell("bad", (Shifter("external"), Coupler("a"), Coupler("b")), None,
             (Affine(0.0, 0.0), Affine(0.0, 0.0)), programming="fixed")
    with pytest.raises(InvalidInputError, match="constant screen"):
        Cell("bad", (Shifter("external"), Coupler("a")), None, (Affine(1.0, 0.0), Affine(0.0, 0.0)),
             programming="fixed")


def test_target_pairs_the_layout_with_its_cell_and_has_no_internal_heaters():
    t = pc.get_target("fldzhyan-6")
    assert (t.mesh, t.cell, t.n_mzi, t.depth) == ("fldzhyan", "fldzhyan", 30, 12)
    assert "fldzhyan-<N>" in pc.available_targets()
    with pytest.raises(InvalidInputError, match="go together; got cell 'mzi' on mesh 'fldzhyan'"):
        dataclasses.replace(t, cell="mzi")
    with pytest.raises(InvalidInputError, match="go together; got cell 'fldzhyan' on mesh 'clements'"):
        dataclasses.replace(pc.get_target("clements-6"), cell="fldzhyan")
    assert heater_groups("unitary", "fldzhyan") == ("u_ext", "u_out")
    assert heater_groups("svd", "fldzhyan") == ("v_ext", "v_out", "att", "u_ext", "u_out")
    # N (N - 1) cells of two components, the attenuators and the output shifters
    assert t.components == 2 * 2 * 30 + 4 * 6 + 6
    assert pc.fabricate(t, seed=1, circuit="unitary").n_heaters == 30 + 6


def test_the_physical_mesh_equals_the_mathematical_one():
    lay = layout("fldzhyan", 7, cell="fldzhyan")
    rng = np.random.default_rng(1)
    theta = np.full(lay.n_mzi, FIXED_THETA)
    phi, out = rng.uniform(0, 2 * np.pi, lay.n_mzi), rng.uniform(0, 2 * np.pi, 7)
    from photocomp.sim.physical import mesh_from_physical, mesh_to_physical, physical_mesh_unitary

    with jax.enable_x64(True):
        internal, external, out_phys = mesh_to_physical(lay, theta, phi, out)
        assert internal.shape == (0,)
        np.testing.assert_allclose(np.asarray(physical_mesh_unitary(lay, internal, external, out_phys)),
                                   np.asarray(mesh_unitary(lay, theta, phi, out)), atol=1e-13)
        back = mesh_from_physical(lay, internal, external, out_phys)
        np.testing.assert_allclose(np.asarray(back[0]), theta, atol=0)
        np.testing.assert_allclose(np.asarray(mesh_unitary(lay, *back)),
                                   np.asarray(mesh_unitary(lay, theta, phi, out)), atol=1e-13)


def test_fit_reaches_haar_unitaries_of_a_few_modes_and_keeps_the_splitting():
    lay = layout("fldzhyan", 4, cell="fldzhyan")
    u = np.stack([pc.haar_unitary(4, np.random.default_rng(s)) for s in range(3)])
    theta, phi, out, err = fit_meshes(lay, u, key=jax.random.key(0), restarts=4, steps=2000)
    assert np.all(err < 1e-10), err
    np.testing.assert_array_equal(theta, FIXED_THETA)
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(jax.vmap(lambda t, p, o: mesh_unitary(lay, t, p, o))(theta, phi, out)),
                                   u, atol=1e-9)


def test_compile_quantize_and_the_program_keep_theta_at_the_couplers():
    u = pc.haar_unitary(4, np.random.default_rng(3))
    prog = pc.compile(u, "fldzhyan-4")
    assert prog.circuit == "unitary" and prog.report.records[-1].name == "lower"
    np.testing.assert_array_equal(np.asarray(prog.phase_map.u.theta), FIXED_THETA)
    assert prog.report["fldzhyan"].metrics["matrix_error"] < 1e-10
    # DAC quantization (12 bits) is what remains of the fit's exactness
    assert 0 < prog.report["quantize"].metrics["matrix_error"] < 5e-3
    bad = prog.phase_map.replace(u=dataclasses.replace(prog.phase_map.u, theta=np.full_like(prog.phase_map.u.theta,
                                                                                             0.5)))
    with pytest.raises(InvalidInputError, match=r"phase_map.u.theta must be pi/4 everywhere on target 'fldzhyan-4'"):
        pc.Program(prog.target, bad, prog.report, prog.pipeline)


def test_chip_losses_are_half_an_mzi_per_cell_in_the_model_and_the_budget():
    t = pc.get_target("fldzhyan-4")
    nominal = nominal_chip(t, "svd")
    np.testing.assert_allclose(nominal.loss_db["u"], t.mzi_loss_db / 2)
    np.testing.assert_allclose(nominal.loss_db["att"], t.mzi_loss_db)
    chip = pc.fabricate(t, seed=5)
    assert np.all(chip.loss_db["u"] <= (t.mzi_loss_db + 6 * t.mzi_loss_sigma_db) / 2)
    w = np.random.default_rng(0).normal(size=(4, 4))
    cost = pc.cost(pc.compile(w, t))
    # worst path: 8 + 8 cells, half an MZI's loss each, one attenuator, the heaters it passes, the output shifter
    assert cost.path_mzis == 17
    want = 16 * t.mzi_loss_db / 2 + t.mzi_loss_db + cost.path_phase_shifters * t.phase_shifter_loss_db
    assert cost.insertion_loss_db == pytest.approx(want)


@pytest.mark.slow  # ~40 s: two fitted compiles, a model calibration and a drift study
def test_whole_flow_on_a_fldzhyan_chip(tmp_path):
    w = np.random.default_rng(4).normal(size=(6, 5))
    prog = pc.compile(w, "fldzhyan-4")
    assert error(*lossless_nominal(prog))["matrix_error"] < 1e-12
    chip = pc.fabricate("fldzhyan-4", seed=3)
    start = error(prog, chip)["matrix_error"]
    local = pc.calibrate(prog, chip, "local", progress=False)
    assert local.settings.u_int.shape == (prog.n_tiles, 0)
    assert error(local, chip)["matrix_error"] <= start * (1 + 1e-9)
    cal = pc.calibrate(prog, chip, "model", progress=False, steps=200)
    fitted = error(cal, chip)["matrix_error"]
    assert fitted < start / 2
    study = pc.drift.study(cal, chip, hours=0.01, dt_s=6.0, compensators=("none",), progress=False)
    assert np.all(np.isfinite(study.errors["none"]))
    assert study.errors["none"][0, 0] == pytest.approx(fitted, rel=0.2)
    path = cal.save(tmp_path / "f.phases.npz")
    back = pc.load(path)
    np.testing.assert_array_equal(np.asarray(back.matrix()), np.asarray(cal.matrix()))
    assert back.target.cell == "fldzhyan" and back.settings.u_int.shape == (prog.n_tiles, 0)
    g = cal.graph()
    assert sum(1 for _, d in g.nodes(data=True) if d.get("kind") == "mzi") == 2 * 12  # one tile's circuit


@pytest.mark.slow  # ~30 s: two architectures, two chips each, model calibration
def test_large_coupler_errors_are_fitted_away_better_than_on_an_mzi_mesh():
    """Fldzhyan et al. 2020: static couplers far from 50:50 still leave a programmable layout. With coupler
    errors of 0.2 rad and no losses, model calibration on the chip ends lower on fldzhyan-6 than on
    clements-6 (whose MZIs can no longer reach their splittings) for the same unitary and chip seeds."""
    u = pc.haar_unitary(6, np.random.default_rng(0))
    ends = {}
    for fam in ("clements", "fldzhyan"):
        t = dataclasses.replace(pc.get_target(f"{fam}-6"), coupler_sigma_rad=0.2, mzi_loss_db=0.0,
                                mzi_loss_sigma_db=0.0, crossing_loss_db=0.0)
        prog = pc.compile(u, t)
        ends[fam] = np.median([error(pc.calibrate(prog, chip, "model", progress=False, steps=500), chip)
                               ["matrix_error"] for chip in (pc.fabricate(t, seed=s, circuit="unitary")
                                                             for s in (0, 1))])
    assert ends["fldzhyan"] < ends["clements"] / 1.5, ends


@pytest.mark.slow  # ~40 s: a measuring self-configuration, in-situ gradients and the twin on a 4-mode chip
def test_measurement_methods_on_static_couplers():
    """Nullification needs a heater that sets each splitting, so it refuses; self-configuration (phases only,
    a static coupler's theta moves nothing), in-situ gradients and the twin end no worse than the start, and
    the gradient-based ones well below it."""
    prog = pc.compile(pc.haar_unitary(4, np.random.default_rng(3)), "fldzhyan-4")
    chip = pc.fabricate("fldzhyan-4", seed=1, circuit="unitary")
    with pytest.raises(MismatchError, match="a static coupler without one"):
        pc.calibrate(prog, chip, "nullify", progress=False)
    start = error(prog, chip)["matrix_error"]
    ends = {m: error(pc.calibrate(prog, chip, m, progress=False), chip)["matrix_error"]
            for m in ("selfconfig", "insitu", "twin")}
    assert all(e <= start * (1 + 1e-9) for e in ends.values()), (start, ends)
    assert ends["insitu"] < start / 2 and ends["twin"] < start / 2, (start, ends)
