"""Black-box measurements, digital-twin fitting and twin calibration."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import photocomp as pc
from photocomp.calibration.twin import _prior_chip, fit_twin, twin_parameter_errors
from photocomp.hardware.dac import quantize_power
from photocomp.hardware.detector import _tile_matrix_jit, measure_matrix


def _true_matrix(chip, power):
    with jax.enable_x64(True):
        return np.asarray(_tile_matrix_jit(chip, jnp.asarray(power)))


def _prediction_error(twin, chip, seed=9, n=3):
    """Relative error of the twin's transfer matrices at fresh random drives."""
    rng = np.random.default_rng(seed)
    errs = []
    for _ in range(n):
        p = rng.uniform(0, 40, chip.n_heaters)
        a, b = _true_matrix(chip, p), _true_matrix(twin, p)
        errs.append(np.linalg.norm(a - b) / np.linalg.norm(a))
    return max(errs)


@pytest.fixture(scope="module")
def chip4():
    return pc.fabricate("clements-4", seed=3)


def test_phase_stepping_recovers_the_complex_matrix(chip4):
    box = pc.BlackBoxChip(chip4, seed=0, noise=False)
    p = np.random.default_rng(0).uniform(0, 30, box.n_heaters)
    m = measure_matrix(box, p)
    np.testing.assert_allclose(m, _true_matrix(chip4, p), atol=1e-12)
    assert box.measurements == 4 * 4  # four read-outs of each of the K unit inputs
    noisy = pc.BlackBoxChip(chip4, seed=0, shots=100)
    rel = np.abs(measure_matrix(noisy, p) - _true_matrix(chip4, p)).max()
    assert 1e-5 < rel < 2e-2  # noisy, but close


def test_reference_field_adds_before_detection(chip4):
    box = pc.BlackBoxChip(chip4, seed=0, noise=False)
    p = np.zeros(box.n_heaters)
    x = np.eye(4)[1]
    y = _true_matrix(chip4, p) @ x
    np.testing.assert_allclose(box.measure(p, x, reference=0.3j), np.abs(y + 0.3j) ** 2, atol=1e-14)
    with pytest.raises(pc.InvalidInputError, match="reference"):
        box.measure(p, x, reference=np.ones(3))
    with pytest.raises(pc.InvalidTypeError, match="reference"):
        box.measure(p, x, reference="a")
    with pytest.raises(pc.InvalidTypeError, match="noise"):
        pc.BlackBoxChip(chip4, noise="no")


def test_heater_characterisation_is_seeded_and_counted(chip4):
    a = pc.BlackBoxChip(chip4, seed=5).characterize_heaters(sigma_rad=0.02)
    b = pc.BlackBoxChip(chip4, seed=5).characterize_heaters(sigma_rad=0.02)
    np.testing.assert_array_equal(a[0], b[0])
    d = np.angle(np.exp(1j * (a[0] - np.asarray(chip4.offset))))
    assert 0.005 < np.sqrt(np.mean(d**2)) < 0.05
    box = pc.BlackBoxChip(chip4, seed=5)
    box.characterize_heaters(points_per_heater=8)
    assert box.measurements == 8 * chip4.n_heaters
    with pytest.raises(pc.InvalidInputError, match="points_per_heater"):
        box.characterize_heaters(points_per_heater=2)


@pytest.mark.slow  # test_frugal_fit_counts_characterisation_and_probe_readings fits a twin in the default suite
def test_twin_fit_improves_on_the_prior_quickly(chip4):
    box = pc.BlackBoxChip(chip4, seed=0, noise=False)
    fit = fit_twin(box, configs=12, steps=300, tol=1e-12, patience=100)
    prior = _prior_chip(chip4.target, *pc.BlackBoxChip(chip4, seed=0).characterize_heaters())
    assert fit.residual < fit.residual_start / 100
    assert _prediction_error(fit.chip, chip4) < _prediction_error(prior, chip4) / 20
    assert fit.measurements == 8 * chip4.n_heaters + 12 * 4 * 4  # characterisation + probes
    assert twin_parameter_errors(fit.chip, chip4)["efficiency"] < 1e-3


@pytest.mark.slow
def test_twin_recovers_the_chip_from_noise_free_measurements(chip4):
    box = pc.BlackBoxChip(chip4, seed=0, noise=False)
    fit = fit_twin(box, configs=12, steps=4000, tol=1e-12, patience=200)
    twin = fit.chip
    # identifiable parameters are recovered exactly ...
    for name in ("coupler_in", "coupler_out"):
        for stage in ("v", "u"):
            np.testing.assert_allclose(getattr(twin, name)[stage], getattr(chip4, name)[stage], atol=1e-6)
    np.testing.assert_allclose(twin.efficiency, chip4.efficiency, atol=1e-6)
    # ... and the rest up to the model's symmetries: the twin predicts the chip at drives it never saw
    assert _prediction_error(twin, chip4) < 1e-6


@pytest.mark.slow
def test_twin_calibration_beats_uncalibrated_and_counts_measurements():
    from scipy.stats import unitary_group

    u = unitary_group.rvs(4, random_state=2)
    prog = pc.compile(u, target="clements-4")
    chip = pc.fabricate("clements-4", seed=4, circuit="unitary")  # u compiles to one mesh
    kw = dict(twin_configs=8, twin_steps=150, steps=60, shots=10, seed=1, progress=False)
    cal = pc.calibrate(prog, chip, method="twin", **kw)
    s = cal.report.summary
    assert s["error_after"] < s["error_before"] / 2
    assert s["error_after"] == pytest.approx(pc.error(cal, chip)["matrix_error"], rel=1e-9)
    assert s["error_after_measured"] == pytest.approx(s["error_after"], rel=0.3)  # measured estimate of the truth
    n_heaters = chip.n_heaters
    probes = (8 + 1) * 4 * 4 * 10  # 8 probe configurations, then one more at the first calibration
    verify = 2 * 4 * 4 * 10  # measured error of the result and of the fallback
    assert s["measurements"] == 8 * n_heaters + probes + verify
    again = pc.calibrate(prog, chip, method="twin", **kw)
    assert again.report.summary["error_after"] == s["error_after"]  # deterministic by seed
    # a black box can be passed directly, and only with method="twin"
    box = pc.BlackBoxChip(chip, seed=1, shots=10)
    with pytest.raises(pc.InvalidInputError, match="twin"):
        pc.calibrate(prog, box, method="model", progress=False)


def test_dac_quantization_of_drives():
    t = pc.get_target("clements-4")
    p = np.linspace(0, t.drive_limit_p_pi * t.heater_p_pi_mw, 101)
    q = quantize_power(p, t, 12)
    v_step = t.v_pi * np.sqrt(t.drive_limit_p_pi) / (2**12 - 1)
    v = t.v_pi * np.sqrt(p / t.heater_p_pi_mw)
    vq = t.v_pi * np.sqrt(q / t.heater_p_pi_mw)
    assert np.max(np.abs(v - vq)) <= v_step / 2 + 1e-12
    assert np.all(q >= 0) and q.max() <= p.max() + 1e-9
    coarse = quantize_power(p, t, 3)
    assert len(np.unique(coarse)) <= 8


def test_calibration_reports_the_error_after_dac_quantization():
    w = np.random.default_rng(3).normal(size=(6, 6))
    prog = pc.compile(w, target="clements-6", pipeline="tile | svd | clements | lower")
    chip = pc.fabricate("clements-6", seed=11)
    fine = pc.calibrate(prog, chip, method="local", dac_bits=16, progress=False).report.summary
    coarse = pc.calibrate(prog, chip, method="local", dac_bits=4, progress=False).report.summary
    assert fine["error_after"] == pytest.approx(fine["error_unquantized"], rel=1e-2)
    assert coarse["error_after"] > 2 * coarse["error_unquantized"]
    with pytest.raises(pc.InvalidInputError, match="dac_bits"):
        pc.calibrate(prog, chip, method="local", dac_bits=0, progress=False)


@pytest.mark.slow  # run by .ci/run after the fast suite
def test_ctrl_c_and_callback_keep_the_best_settings_so_far():
    w = np.random.default_rng(3).normal(size=(6, 6))
    prog = pc.compile(w, target="clements-6", pipeline="tile | svd | clements | lower")
    chip = pc.fabricate("clements-6", seed=11)
    seen = []

    def interrupt(step, err):
        seen.append(err)
        if step == 5:
            raise KeyboardInterrupt

    cal = pc.calibrate(prog, chip, method="model", callback=interrupt, progress=False)
    s = cal.report.summary
    assert s["stopped"].startswith("interrupted") and s["steps_run"] == 5
    assert s["error_after"] <= s["error_start"] and s["error_after"] == pytest.approx(min(seen), rel=1e-6)
    assert pc.error(cal, chip)["matrix_error"] == pytest.approx(s["error_after"], rel=1e-9)
    stop = pc.calibrate(prog, chip, method="model", callback=lambda step, err: step >= 3, progress=False)
    assert stop.report.summary["steps_run"] == 3 and "callback" in stop.report.summary["stopped"]
    with pytest.raises(pc.InvalidTypeError, match="callback"):
        pc.calibrate(prog, chip, method="model", callback=3, progress=False)
    with pytest.raises(pc.InvalidTypeError, match="optimizer"):
        pc.calibrate(prog, chip, method="model", optimizer=optax.adam, progress=False)


@pytest.mark.slow  # run by .ci/run after the fast suite
def test_cli_calibrate_twin(tmp_path, capsys):
    from scipy.stats import unitary_group

    from photocomp.cli import main

    prog = pc.compile(unitary_group.rvs(4, random_state=5), target="clements-4")
    f = str(tmp_path / "u.phases.npz")
    prog.save(f)
    out = str(tmp_path / "u.cal.npz")
    code = main(["calibrate", f, "--chip-seed", "2", "--method", "twin", "--shots", "10", "--steps", "20",
                 "--twin-configs", "4", "--twin-steps", "30", "--twin-rounds", "1", "--twin-points-per-heater", "3",
                 "--twin-probe-shots", "5", "--twin-check-shots", "2", "--dac-bits", "12", "-o", out, "-q"])
    text = capsys.readouterr().out
    assert code == 0
    assert "measurements used:" in text and "as measured" in text and "DAC quantization (12 bits)" in text
    cal = pc.load(out)
    assert cal.calibrated and cal.chip.seed == 2
    used = int(text.split("measurements used:")[1].split()[0])
    # every twin flag reached the method: the readings are those of its settings (one tile of K = 4 modes)
    split = {"readings_characterization": 3 * cal.chip.n_heaters, "readings_probes": 4 * 4 * 4 * 5,
             "readings_refinement": 0, "readings_check": 2 * 4 * 4 * 2}
    assert {name: cal.report.summary[name] for name in split} == split
    assert used == sum(split.values())
    assert main(["calibrate", f, "--chip-seed", "2", "--method", "twin", "--shots", "0", "-q"]) == 2


@pytest.mark.parametrize("flag", ["--twin-configs", "--twin-points-per-heater", "--twin-probe-shots"])
def test_cli_refuses_a_twin_flag_with_another_method(flag, tmp_path, capsys):
    from photocomp.cli import main

    f = str(tmp_path / "u.phases.npz")
    pc.compile(pc.haar_unitary(4, np.random.default_rng(5)), target="clements-4").save(f)
    out = tmp_path / "never.npz"
    assert main(["calibrate", f, "--chip-seed", "2", "--method", "local", flag, "5", "-q", "-o", str(out)]) == 2
    assert f"{flag} applies to --method twin only; got --method local" in capsys.readouterr().err
    assert not out.exists()


def test_frugal_twin_arguments_are_validated(chip4):
    for kw, err, name in ((dict(points_per_heater=2), pc.InvalidInputError, "Twin.points_per_heater"),
                          (dict(points_per_heater=3.5), pc.InvalidTypeError, "Twin.points_per_heater"),
                          (dict(probe_shots=0), pc.InvalidInputError, "Twin.probe_shots"),
                          (dict(check_shots="10"), pc.InvalidTypeError, "Twin.check_shots")):
        with pytest.raises(err, match=name):
            pc.Twin(**kw)
    t = pc.Twin(points_per_heater=3, probe_shots=10, check_shots=5)
    assert (t.points_per_heater, t.probe_shots, t.check_shots) == (3, 10, 5)
    assert (pc.Twin().points_per_heater, pc.Twin().probe_shots, pc.Twin().check_shots) == (8, None, None)
    box = pc.BlackBoxChip(chip4, seed=0)
    with pytest.raises(pc.InvalidInputError, match="points_per_heater"):
        fit_twin(box, points_per_heater=2, steps=0)
    with pytest.raises(pc.InvalidInputError, match="points_per_heater given twice"):
        fit_twin(box, points_per_heater=3, characterization={"points_per_heater": 4}, steps=0)
    with pytest.raises(pc.InvalidTypeError, match="characterization"):
        fit_twin(box, characterization=[("points_per_heater", 3)], steps=0)
    with pytest.raises(pc.InvalidInputError, match="shots"):
        fit_twin(box, shots=0, steps=0)
    assert box.measurements == 0  # every check comes before the first measurement


def test_frugal_fit_counts_characterisation_and_probe_readings():
    chip = pc.fabricate("clements-4", seed=1, circuit="unitary")
    box = pc.BlackBoxChip(chip, seed=0, shots=1000)  # probe shots given: the box's are not used
    fit = fit_twin(box, configs=2, shots=20, points_per_heater=3, steps=20)
    assert fit.characterization_measurements == 3 * chip.n_heaters
    assert fit.measurements == box.ledger.readings == 3 * chip.n_heaters + 2 * 4 * 4 * 20  # 4 phase steps x K inputs
    assert fit.residual < fit.residual_start / 2  # the rougher prior is still corrected


@pytest.mark.slow  # about 25 s on two shared cores, most of it compiling
def test_frugal_twin_spends_the_counted_readings_and_still_calibrates():
    k, configs, points, probe_shots, check_shots, rounds = 4, 3, 3, 20, 5, 2
    prog = pc.compile(pc.haar_unitary(k, np.random.default_rng(4)), "clements-4")
    chip = pc.fabricate("clements-4", seed=1, circuit="unitary")
    box = pc.BlackBoxChip(chip, seed=0, shots=1000)  # the box's own shots are not used: every knob is set
    method = pc.Twin(configs=configs, rounds=rounds, fit_steps=40, steps=30, shots=1000, points_per_heater=points,
                     probe_shots=probe_shots, check_shots=check_shots)
    cal = pc.calibrate(prog, box, method, progress=False)
    s = cal.report.summary
    tiles = 1  # a 4 x 4 unitary is one tile of a clements-4 mesh
    split = {"readings_characterization": points * chip.n_heaters,
             "readings_probes": configs * 4 * k * probe_shots,  # 4 phase steps of the K unit inputs
             "readings_refinement": (rounds - 1) * tiles * 4 * k * probe_shots,
             "readings_check": 2 * tiles * 4 * k * check_shots}  # the calibrated and the uncalibrated drives
    assert {name: s[name] for name in split} == split
    assert s["measurements"] == box.ledger.readings == sum(split.values())
    # one configuration change per characterisation point and per probed or checked drive setting
    assert box.ledger.configurations == points * chip.n_heaters + configs + (rounds - 1) * tiles + 2 * tiles
    assert s["error_after"] == pytest.approx(pc.error(cal, chip)["matrix_error"], rel=1e-9)
    assert s["error_after"] < s["error_before"] / 2
