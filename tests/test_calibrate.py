"""Calibration: local correction, optax model calibration, reachability, errors and bad input."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import photocomp as pc
from photocomp.calibration.calibrate import calibrate
from photocomp.calibration.engine import error, local_correction, reachability
from photocomp.compiler.program import Program
from photocomp.core.ir import CompileReport, PhaseMap, TileGrid
from photocomp.core.phases import MeshPhases
from photocomp.hardware.chip import fabricate


def _reachable_program(target, seed=0):
    """A program whose every MZI sits well inside the reachable range (theta in [0.3, 1.2])."""
    lay = pc.layout(target.mesh, target.size)
    rng = np.random.default_rng(seed)
    k = target.size

    def mesh():
        return MeshPhases(lay, rng.uniform(0.3, 1.2, (1, lay.n_mzi)), rng.uniform(0, 2 * np.pi, (1, lay.n_mzi)),
                          rng.uniform(0, 2 * np.pi, (1, k)))

    pm = PhaseMap(TileGrid(k, k, k), mesh(), rng.uniform(0.3, 1.2, (1, k)), mesh(), np.ones(1))
    return Program(target, pm, CompileReport((), types.MappingProxyType({})), "manual")


@pytest.fixture(scope="module")
def lossless_target():
    return dataclasses.replace(pc.get_target("clements-5"), mzi_loss_db=0.0, mzi_loss_sigma_db=0.0)


@pytest.fixture(scope="module")
def small():
    w = np.random.default_rng(3).normal(size=(6, 6))
    prog = pc.compile(w, target="clements-6", pipeline="tile | svd | clements | lower")
    return prog, fabricate("clements-6", seed=11)


def test_local_correction_is_exact_when_everything_is_reachable(lossless_target):
    prog = _reachable_program(lossless_target)
    chip = fabricate(lossless_target, seed=3)
    assert reachability(prog, chip).count == 0
    assert error(prog, chip)["matrix_error"] > 1e-2
    cal = calibrate(prog, chip, method="local", progress=False)
    assert cal.report.summary["error_after"] < 1e-12
    assert error(cal, chip)["matrix_error"] < 1e-12


def test_model_calibration_recovers_a_known_perturbation(lossless_target):
    prog = _reachable_program(lossless_target, seed=1)
    chip = fabricate(lossless_target, seed=4)
    cal = calibrate(prog, chip, method="model", warm_start="ideal", progress=False)
    s = cal.report.summary
    assert s["error_after"] < s["error_before"] / 100


@pytest.mark.slow  # ~30 s; model calibration's improvement is also checked fast by the known-perturbation test
def test_calibration_never_increases_the_error_and_model_beats_local(small):
    prog, chip = small
    before = error(prog, chip)["matrix_error"]
    local = calibrate(prog, chip, method="local", progress=False)
    model = calibrate(prog, chip, method="model", progress=False)
    assert local.report.summary["error_after"] <= before
    assert model.report.summary["error_after"] <= local.report.summary["error_after"]
    # a useless optimizer (zero learning rate) must return the start, not something worse
    stuck = calibrate(prog, chip, method="model", optimizer=optax.sgd(0.0), steps=5, progress=False)
    assert stuck.report.summary["error_after"] == pytest.approx(local.report.summary["error_after"], rel=1e-12)
    # a diverging optimizer is caught and the best settings so far are kept
    wild = calibrate(prog, chip, method="model", optimizer=optax.sgd(1e6), steps=20, progress=False)
    assert wild.report.summary["error_after"] <= local.report.summary["error_after"] * (1 + 1e-12)


def test_calibrated_program_runs_on_its_chip(small):
    prog, chip = small
    cal = calibrate(prog, chip, method="local", progress=False)
    assert cal.calibrated and not prog.calibrated
    x = np.random.default_rng(0).normal(size=6)
    np.testing.assert_allclose(np.asarray(cal.forward(x)), cal.matrix() @ x, atol=1e-12)
    ideal = prog.matrix()
    assert np.linalg.norm(cal.matrix() - ideal) / np.linalg.norm(ideal) == pytest.approx(
        cal.report.summary["error_after"], rel=1e-9
    )
    power = cal.drives()
    assert power.shape == (1, chip.n_heaters) and power.min() >= 0


@pytest.mark.slow  # run by .ci/run after the fast suite
def test_deterministic(small):
    prog, chip = small
    a = calibrate(prog, chip, method="model", steps=20, progress=False)
    b = calibrate(prog, chip, method="model", steps=20, progress=False)
    for x, y in zip(jax.tree_util.tree_leaves(a.settings), jax.tree_util.tree_leaves(b.settings)):
        np.testing.assert_array_equal(x, y)


def test_local_correction_with_perfect_couplers_is_the_ideal_setting():
    t = dataclasses.replace(pc.get_target("clements-4"), coupler_sigma_rad=0.0, mzi_loss_db=0.0, mzi_loss_sigma_db=0.0)
    prog = pc.compile(np.random.default_rng(5).normal(size=(4, 4)), target=t, pipeline="tile | svd | clements | lower")
    chip = fabricate(t, seed=0)
    s = local_correction(prog, chip)
    assert error(prog.with_chip(chip, s), chip)["matrix_error"] < 1e-12


def test_reachability_floor_and_counts(small):
    prog, chip = small
    r = reachability(prog, chip)
    assert r.v.shape == (1, prog.phase_map.v.layout.n_mzi) and r.att.shape == (1, 6)
    assert 0 <= r.fraction <= 1 and r.clip_error >= 0 and r.floor == r.clip_error  # floor: the former name
    assert r.count == int(r.v.sum() + r.u.sum() + r.att.sum())


def test_calibration_bad_input(small):
    prog, chip = small
    with pytest.raises(pc.MismatchError, match="chip"):
        calibrate(prog, fabricate("clements-4", seed=0), progress=False)
    with pytest.raises(pc.InvalidTypeError, match="optimizer"):
        calibrate(prog, chip, optimizer="adam", progress=False)
    with pytest.raises(pc.UnknownNameError, match="method"):
        calibrate(prog, chip, method="magic", progress=False)
    with pytest.raises(pc.InvalidInputError, match="steps"):
        calibrate(prog, chip, steps=-1, progress=False)
    with pytest.raises(pc.InvalidTypeError, match="chip"):
        calibrate(prog, "chip", progress=False)
    with pytest.raises(pc.InvalidTypeError, match="prog"):
        error(np.eye(3), chip)


def test_calibrated_program_save_load_round_trip(small, tmp_path):
    prog, chip = small
    cal = calibrate(prog, chip, method="local", progress=False)
    path = cal.save(tmp_path / "p.cal.npz")
    back = pc.load(path)
    assert back.calibrated and back.chip.seed == chip.seed
    x = np.random.default_rng(1).normal(size=6)
    np.testing.assert_array_equal(back.forward(x), cal.forward(x))
    np.testing.assert_array_equal(back.drives(), cal.drives())
    assert back.report.summary["error_after"] == cal.report.summary["error_after"]


def test_cli_calibrate(small, tmp_path, capsys):
    from photocomp.cli import main

    prog, _ = small
    src = prog.save(tmp_path / "w.phases.npz")
    assert main(["calibrate", str(src), "--chip-seed", "11", "--method", "local", "-q"]) == 0
    out = capsys.readouterr().out
    assert "matrix error before" in out and "matrix error after" in out and "measurements used" in out
    assert (tmp_path / "w.cal.npz").exists()
    assert main(["inspect", str(tmp_path / "w.cal.npz")]) == 0
    assert "chip seed 11" in capsys.readouterr().out
    assert main(["calibrate", str(tmp_path / "w.cal.npz"), "--chip-seed", "1", "-q"]) == 2
    assert "uncalibrated" in capsys.readouterr().err


# ---- the optimisation loop ----------------------------------------------------------------------

def _rosenbrock_counted():
    traces = []

    def loss(p):
        traces.append(1)  # runs once per trace, not per call
        return jnp.sum(100.0 * (p[1:] - p[:-1] ** 2) ** 2 + (1.0 - p[:-1]) ** 2)

    return loss, traces


def test_minimize_compiles_its_step_once():
    """optax's weakly typed initial state must not make the second step compile again."""
    from photocomp.calibration.engine import minimize as _minimize

    with jax.enable_x64(True):
        p0 = jnp.zeros(6)
        opt = optax.with_extra_args_support(optax.lbfgs())
        counts = []
        for steps in (0, 7):
            loss, traces = _rosenbrock_counted()
            _minimize(loss, p0, opt, steps, 0.0, 100, False, "")
            counts.append(len(traces))
    assert counts[0] > 0 and counts[1] == counts[0]


@pytest.mark.parametrize("optimizer", [pytest.param(optax.lbfgs(), marks=pytest.mark.slow), optax.adam(0.1)],
                         ids=["lbfgs", "adam"])
def test_minimize_matches_a_plain_optax_loop(optimizer):
    """Reusing the line search's value and gradient (L-BFGS) changes nothing: same iterates as optax's own loop."""
    from photocomp.calibration.engine import minimize as _minimize

    with jax.enable_x64(True):
        loss, _ = _rosenbrock_counted()
        p0 = jnp.asarray(np.random.default_rng(3).normal(size=5))
        opt = optax.with_extra_args_support(optimizer)
        steps = 25
        best, history, info = _minimize(loss, p0, opt, steps, 0.0, steps + 1, False, "")
        p, state, want = p0, opt.init(p0), [float(loss(p0))]
        for _ in range(steps):
            value, grad = jax.value_and_grad(loss)(p)
            updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
            p = optax.apply_updates(p, updates)
            want.append(float(loss(p)))
        best_loss = float(loss(best))
    assert info["steps_run"] == steps and len(history) == steps + 1
    np.testing.assert_allclose(history**2, want, rtol=1e-10, atol=1e-300)
    assert best_loss == pytest.approx(min(want), rel=1e-9)
    assert want[-1] < want[0] / 5  # the loop really optimises


@pytest.mark.parametrize("target, shape", [("clements-16", (16, 5)), ("pace-64", (100, 80))])
def test_local_correction_improves_zero_padded_tiles(monkeypatch, target, shape):
    """Zero-padded tiles' meshes are mostly MZIs that want no coupling, which their couplers cannot give;
    quantization leaves them a tiny cross term. Fitting each leak's external phase to that term
    (``_PHASE_FIT_MIN_RATIO = 0``, the old rule) made local correction worse than none on the padded
    tiles; leaving it at 0 makes every tile better than uncorrected, and full tiles stay as they were."""
    from photocomp.calibration import engine

    w = np.random.default_rng(0).normal(size=shape)
    prog = pc.compile(w, target)  # the default pipeline: quantized to the target's DAC bits
    chip = pc.fabricate(target, 0)
    tiles = engine.ideal_tiles(prog)
    _, _, per_ideal = engine.settings_error(chip, engine.ideal_settings(prog), tiles)
    per_local = engine.settings_error(chip, engine.local_settings(prog, chip, tiles)[0], tiles)[2]
    monkeypatch.setattr(engine, "_PHASE_FIT_MIN_RATIO", 0.0)
    per_old = engine.settings_error(chip, engine.local_settings(prog, chip, tiles)[0], tiles)[2]
    grid = prog.ideal_phase_map.grid
    rows, cols = grid.extent()
    full = (rows == grid.tile) & (cols == grid.tile)  # tiles without padding
    assert np.all(per_local < 0.9 * per_ideal)  # every tile gains from local correction now
    assert np.any(per_old[~full] > per_ideal[~full])  # the old rule lost to no correction on a padded tile
    np.testing.assert_allclose(per_local[full], per_old[full], rtol=0.02)  # full tiles: as before


def test_local_correction_is_never_worse_on_any_tile_of_a_padded_program():
    """A non-square, zero-padded program (2 x 2 tiles, three of them padded): calibration keeps, tile by
    tile, the better of the ideal settings and the local correction, so local lowers the matrix error
    where it can (it used to be all-or-nothing, and lost to the padded tiles)."""
    from photocomp.calibration.engine import ideal_settings, ideal_tiles, local_settings, settings_error

    w = np.random.default_rng(0).normal(size=(13, 10))
    prog = pc.compile(w, "clements-8")
    chip = pc.fabricate("clements-8", 3)
    tiles = ideal_tiles(prog)
    _, _, per_ideal = settings_error(chip, ideal_settings(prog), tiles)
    s_local, _ = local_settings(prog, chip, tiles)
    _, _, per_local = settings_error(chip, s_local, tiles)
    cal = pc.calibrate(prog, chip, "local", progress=False)
    per_cal = np.asarray(pc.error(cal, chip)["tile_errors"])
    np.testing.assert_allclose(per_cal, np.minimum(per_ideal, per_local), rtol=1e-9, atol=1e-12)
    summary = cal.report.summary
    assert summary["error_after"] < summary["error_before"]
    assert summary["error_after"] == pytest.approx(pc.error(cal, chip)["matrix_error"], rel=1e-9)
