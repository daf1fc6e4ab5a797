"""Calibration of unitary programs (one mesh per tile) on unitary chips: every method, reachability, black box."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import photocomp as pc
from photocomp.calibration.engine import error, ideal_settings, local_correction, reachability
from photocomp.calibration.twin import _gauge, _prior_chip, fit_twin, twin_parameter_errors
from photocomp.compiler.program import Program
from photocomp.core.convention import physical_mzi
from photocomp.core.ir import PhaseMap
from photocomp.hardware.chipsim import Settings, chip_matrix, chip_tile_matrices, realized_phases
from photocomp.hardware.detector import measure_matrix

TARGET = "clements-8"
SEED = 3


@pytest.fixture(scope="module")
def prog():
    """A two-tile unitary program: a unitary above twice another."""
    rng = np.random.default_rng(1)
    w = np.vstack([pc.haar_unitary(8, rng), 2 * pc.haar_unitary(8, rng)])
    p = pc.compile(w, TARGET, pipeline="validate | tile | unitary | clements | lower")
    assert p.circuit == "unitary" and p.n_tiles == 2
    return p


@pytest.fixture(scope="module")
def chip():
    return pc.fabricate(TARGET, SEED, circuit="unitary")


@pytest.fixture(scope="module")
def svd_counterpart(prog):
    """The svd program whose V and U meshes are both the unitary program's mesh, and the svd chip of SEED."""
    pm = prog.phase_map
    svd_pm = PhaseMap(pm.grid, pm.u, np.zeros((pm.n_tiles, pm.grid.tile)), pm.u, pm.gain)
    svd = Program(prog.target, svd_pm, prog.report, "manual")
    return svd, pc.fabricate(TARGET, SEED)


# ---- every method improves the error --------------------------------------------------------------------------

@pytest.mark.slow  # the twin's fit (tens of seconds); run by .ci/run with the slow tests
def test_each_method_improves_the_error(prog, chip):
    before = error(prog, chip)["matrix_error"]
    assert before > 0.05
    methods = {"local": pc.Local(), "model": pc.Model(steps=10),
               "twin": pc.Twin(configs=3, fit_steps=60, rounds=1, steps=25, optimizer=optax.adam(1e-3))}
    after = {}
    for name, method in methods.items():
        cal = pc.calibrate(prog, chip, method, progress=False)
        s = cal.report.summary
        assert cal.calibrated and cal.circuit == "unitary" and cal.settings.circuit == "unitary", name
        assert cal.settings.v_int is None and cal.settings.att is None, name
        assert s["error_before"] == pytest.approx(before, rel=1e-12), name
        assert s["error_after"] < before / 2, name
        assert error(cal, chip)["matrix_error"] == pytest.approx(s["error_after"], rel=1e-9), name
        assert cal.drives().shape == (2, chip.n_heaters), name
        after[name] = s["error_after"]
    assert after["model"] <= after["local"]


def test_calibrated_forward_is_the_chip_matrix_in_float64(prog, chip):
    cal = pc.calibrate(prog, chip, "local", progress=False)
    x = np.random.default_rng(2).normal(size=8) + 1j * np.random.default_rng(3).normal(size=8)
    with jax.enable_x64(True):
        m = np.asarray(chip_matrix(chip, cal.settings))
    assert m.dtype == np.complex128 and m.shape == (16, 8)
    np.testing.assert_allclose(np.asarray(cal.forward(x)), m @ x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cal.matrix(), m, rtol=0, atol=1e-12)


# ---- local correction -------------------------------------------------------------------------------------------

def test_local_correction_on_an_error_free_chip_is_exact(prog, chip):
    perfect = dataclasses.replace(
        chip, coupler_in={"u": np.zeros_like(chip.coupler_in["u"])},
        coupler_out={"u": np.zeros_like(chip.coupler_out["u"])}, loss_db={"u": np.zeros_like(chip.loss_db["u"])})
    s = local_correction(prog, perfect)
    assert s.circuit == "unitary" and s.v_int is None and s.v_ext is None and s.v_out is None and s.att is None
    assert error(prog.with_chip(perfect, s), perfect)["matrix_error"] < 1e-12
    with jax.enable_x64(True):
        got = np.asarray(chip_matrix(perfect, s))
    np.testing.assert_allclose(got, prog.matrix(), rtol=0, atol=1e-12)
    # with perfect couplers the correction is the ideal setting, phase for phase
    ideal = ideal_settings(prog)
    for g in ("u_int", "u_ext", "u_out"):
        np.testing.assert_allclose(np.angle(np.exp(1j * (getattr(s, g) - getattr(ideal, g)))), 0, atol=1e-12)


def test_local_correction_of_the_mesh_is_the_svd_chips_u_mesh_correction(prog, chip, svd_counterpart):
    # the unitary chip of a seed has the svd chip's U mesh: the same ideal U phases get the same U settings
    svd, svd_chip = svd_counterpart
    for name in ("coupler_in", "coupler_out", "loss_db"):
        np.testing.assert_array_equal(getattr(chip, name)["u"], getattr(svd_chip, name)["u"])
    uni, ref = local_correction(prog, chip), local_correction(svd, svd_chip)
    for g in ("u_int", "u_ext", "u_out"):
        np.testing.assert_array_equal(getattr(uni, g), getattr(ref, g))


# ---- reachability -----------------------------------------------------------------------------------------------

def test_reachability_shapes_and_counts(prog, chip, svd_counterpart):
    r = reachability(prog, chip)
    n = prog.phase_map.layout.n_mzi
    assert r.v.shape == (2, 0) and r.att.shape == (2, 0) and r.u.shape == (2, n)
    assert r.v.dtype == r.att.dtype == r.u.dtype == bool
    assert r.count == int(r.u.sum()) > 0
    assert r.fraction == pytest.approx(r.u.sum() / r.u.size, rel=1e-15)
    assert r.v.size + r.u.size + r.att.size == prog.n_mzi
    assert 0 < r.clip_error < error(prog, chip)["matrix_error"]
    # the same mesh on the svd chip's U mesh is unreachable at the same MZIs
    svd, svd_chip = svd_counterpart
    np.testing.assert_array_equal(reachability(svd, svd_chip).u, r.u)


def test_reachability_against_the_sampled_splitting_range(prog, chip):
    # independent reference: the bar power each MZI reaches over a fine sweep of its internal phase
    a, b = np.asarray(chip.coupler_in["u"]), np.asarray(chip.coupler_out["u"])
    psi = np.linspace(0, 2 * np.pi, 4001)
    bar = np.abs(physical_mzi(psi[:, None], 0.0, a[None], b[None], xp=np)[..., 0, 0]) ** 2
    lo, hi = bar.min(0), bar.max(0)
    want = np.cos(np.asarray(prog.phase_map.u.theta)) ** 2
    margin = 1e-5  # sampling error of the sweep's extremes
    clear = (want < lo - margin) | (want > hi + margin)
    inside = (want > lo + margin) & (want < hi - margin)
    r = reachability(prog, chip)
    assert clear.any() and np.all(r.u[clear]) and not np.any(r.u[inside])


def test_an_error_free_chip_reaches_everything(prog, chip):
    perfect = dataclasses.replace(chip, coupler_in={"u": np.zeros_like(chip.coupler_in["u"])},
                                  coupler_out={"u": np.zeros_like(chip.coupler_out["u"])})
    r = reachability(prog, perfect)
    assert r.count == 0 and r.fraction == 0.0 and r.clip_error < 1e-12


# ---- the chip's circuit ------------------------------------------------------------------------------------------

def test_a_chip_of_the_other_circuit_is_refused(prog, chip, svd_counterpart):
    svd, svd_chip = svd_counterpart
    for fn in (error, local_correction, reachability):
        with pytest.raises(pc.MismatchError, match=r"program's unitary circuit .*got a chip of the svd circuit"):
            fn(prog, svd_chip)
        with pytest.raises(pc.MismatchError, match=r"program's svd circuit .*got a chip of the unitary circuit"):
            fn(svd, chip)
    for method in ("local", "model", "twin"):
        with pytest.raises(pc.MismatchError, match=r"circuit='unitary'.*got a chip of the svd circuit"):
            pc.calibrate(prog, svd_chip, method, progress=False)
    with pytest.raises(pc.MismatchError, match="unitary circuit"):
        pc.calibrate(prog, pc.BlackBoxChip(svd_chip), "twin", progress=False)
    with pytest.raises(pc.MismatchError, match="chip's unitary circuit"):
        twin_parameter_errors(svd_chip, chip)


# ---- the black box -----------------------------------------------------------------------------------------------

def test_black_box_measures_a_unitary_chip(chip):
    box = pc.BlackBoxChip(chip, seed=0, noise=False)
    assert box.circuit == "unitary" and box.n_heaters == chip.n_heaters == 2 * 28 + 8
    rng = np.random.default_rng(4)
    power = rng.uniform(0, 2 * chip.target.heater_p_pi_mw, chip.n_heaters)
    x = rng.normal(size=(3, 8)) + 1j * rng.normal(size=(3, 8))
    with jax.enable_x64(True):  # the reference: the chip's matrix with the phases these drives realise
        phases = np.asarray(realized_phases(chip, jnp.asarray(power)))[None]
        lay, k = chip.layout, 8
        s = Settings.unitary(pc.TileGrid(k, k, k), lay, phases[:, :28], phases[:, 28:56], phases[:, 56:], np.ones(1))
        m = np.asarray(chip_tile_matrices(chip, s, with_gain=False))[0]
    np.testing.assert_allclose(box.measure(power, x), np.abs(x @ m.T) ** 2, rtol=0, atol=1e-12)
    assert box.measurements == 3
    # (n_tiles, n_heaters) drives and the phase-stepped matrix read-out
    assert box.measure(np.stack([power, power]), np.eye(8)).shape == (2, 8, 8)
    np.testing.assert_allclose(measure_matrix(box, power), m, rtol=0, atol=1e-12)
    with pytest.raises(pc.InvalidInputError, match=r"drives_mw must have shape \(n_tiles, 64\)"):
        box.measure(np.zeros(pc.fabricate(TARGET, SEED).n_heaters), np.eye(8))


@pytest.mark.slow  # the twin's fit (tens of seconds); tests/test_twin.py fits one in the default suite
def test_twin_of_a_unitary_chip_is_a_unitary_chip_and_learns_its_couplers(chip):
    gauge = _gauge(chip.target, "unitary")  # one mesh between the inputs and the reference: nothing is held
    assert {k: set(v) for k, v in gauge.items() if isinstance(v, dict)} == {
        "coupler_in": {"u"}, "coupler_out": {"u"}, "loss_db": {"u"}, "cell_errors": {"u"}}
    assert gauge["cell_errors"]["u"] == {}  # an MZI has no couplers beyond its two
    assert all(np.all(np.asarray(v) == 1) for v in jax.tree_util.tree_leaves(gauge))
    assert gauge["offset"].shape == gauge["efficiency"].shape == (chip.n_heaters,)
    fit = fit_twin(pc.BlackBoxChip(chip, seed=0, noise=False), configs=2, steps=40)
    assert fit.chip.circuit == "unitary" and fit.chip.n_heaters == chip.n_heaters
    assert set(fit.chip.coupler_in) == set(fit.chip.loss_db) == {"u"}
    np.testing.assert_array_equal(fit.chip.xt_rows, chip.xt_rows)  # the unitary die's nominal crosstalk
    np.testing.assert_allclose(fit.chip.xt_weight, chip.xt_weight, rtol=1e-15)
    assert fit.residual < fit.residual_start / 3
    prior = _prior_chip(chip.target, *pc.BlackBoxChip(chip, seed=0).characterize_heaters(), "unitary")
    assert twin_parameter_errors(fit.chip, chip)["coupler_in"] < twin_parameter_errors(prior, chip)["coupler_in"]
