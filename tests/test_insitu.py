"""InSitu: measured parameter-shift gradients, calibration through the Instrument interface, faults, arguments."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import photocomp as pc
from photocomp.calibration.engine import error, ideal_settings, ideal_tiles, relative_error
from photocomp.calibration.insitu import InSitu, measured_gradient
from photocomp.core.errors import InvalidInputError, InvalidTypeError, MismatchError, UnknownNameError
from photocomp.hardware.chipsim import chip_tile_matrices, flatten_heaters, unflatten_heaters
from photocomp.hardware.instrument import FaultyInstrument


def _unitary(n: int, seed: int):
    prog = pc.compile(pc.haar_unitary(n, np.random.default_rng(seed)), f"clements-{n}")
    return prog, pc.fabricate(f"clements-{n}", seed=seed, circuit="unitary")


@pytest.mark.parametrize("circuit", ["unitary", pytest.param("svd", marks=pytest.mark.slow)])
def test_parameter_shift_gradient_equals_autodiff(circuit):
    # noiseless read-outs and exact heater estimates: phase stepping recovers M exactly and M is affine in
    # e^{i phi} of every heater, so the shift rule is exact; what remains is float64 rounding of sums of
    # O(K^2 H) terms of size O(1), far below 1e-9 of the gradient's scale
    t = pc.get_target("clements-4")
    chip = pc.fabricate(t, seed=3, circuit=circuit)
    rng = np.random.default_rng(0)
    w = pc.haar_unitary(4, rng) if circuit == "unitary" else rng.normal(size=(4, 4))
    prog = pc.compile(w, "clements-4")
    box = pc.BlackBoxChip(chip, seed=0, noise=False)
    heaters = box.characterize_heaters(sigma_rad=0.0, sigma_efficiency=0.0)
    tile = ideal_tiles(prog)[0]
    template = ideal_settings(prog)
    with jax.enable_x64(True):
        phi = np.asarray(flatten_heaters(template))[0] + 0.1 * rng.normal(size=chip.n_heaters)

        def loss(p):
            m = chip_tile_matrices(chip.unseeded(), unflatten_heaters(template, p[None], t), with_gain=False)
            return relative_error(jnp.asarray(tile)[None], m)[0] ** 2

        expected = np.asarray(jax.grad(loss)(jnp.asarray(phi)))
        expected_err = float(jnp.sqrt(loss(jnp.asarray(phi))))
    err, grad = measured_gradient(box, phi, tile, heaters)
    assert err == pytest.approx(expected_err, rel=1e-9)
    np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-9 * np.max(np.abs(expected)))


@pytest.mark.slow
@pytest.mark.parametrize("n", [4, 6])
def test_calibration_reduces_true_error_and_ledger_counts(n):
    prog, chip = _unitary(n, n)
    box = pc.BlackBoxChip(chip, seed=1, shots=100)
    r = InSitu(shots=100).run(prog, box)
    cal = r.to_program(prog, chip)
    before = error(prog, chip)["matrix_error"]
    after = error(cal, chip)["matrix_error"]
    assert after < 0.6 * before
    assert cal.report.summary["error_after"] == pytest.approx(after)
    # the ledger counts what the method asked for: readings and configurations, and nothing else happened
    assert r.readings == box.ledger.readings and r.configurations == box.ledger.configurations
    assert r.chip_time_s == pytest.approx(box.ledger.chip_time_s)
    assert r.history[-1][0] <= r.readings and r.history[-1][2] <= r.history[0][2]


def test_ledger_matches_protocol_calls():
    prog, chip = _unitary(4, 2)
    box = pc.BlackBoxChip(chip, seed=0, shots=10)
    calls = {"set": 0, "read": 0, "vectors": 0}

    class Counting:  # an Instrument that counts the protocol calls it forwards
        target, n_heaters, circuit = box.target, box.n_heaters, box.circuit
        drive_limit_mw, saturation, ledger = box.drive_limit_mw, box.saturation, box.ledger

        @property
        def drives_mw(self):
            return box.drives_mw

        def set_drives(self, p):
            calls["set"] += 1
            box.set_drives(p)

        def read(self, x, *, shots=None, reference=None):
            calls["read"] += 1
            calls["vectors"] += np.atleast_2d(x).shape[0] * (shots or box.shots)
            return box.read(x, shots=shots, reference=reference)

        def read_temperatures(self):
            return box.read_temperatures()

    heaters = box.characterize_heaters()
    start = box.ledger.snapshot()
    r = InSitu(shots=10, steps=3).run(prog, Counting(), heaters=heaters)
    spent = box.ledger.since(start)
    assert spent["readings"] == calls["vectors"] == r.readings
    assert 0 < spent["configurations"] <= calls["set"]


@pytest.mark.slow
def test_faults_are_survived_counted_and_never_worse():
    prog, chip = _unitary(4, 5)
    inner = pc.BlackBoxChip(chip, seed=2, shots=100)
    heaters = inner.characterize_heaters()
    weak = np.array([1, 5])
    faulty = FaultyInstrument(inner, saturate_at=0.9, nan_rate=0.05, burst_drop_rate=0.05,
                              heater_limit_mw=30.0, weak_heaters=weak, seed=4)
    r = InSitu(shots=100, steps=6).run(prog, faulty, heaters=heaters)
    assert r.faults["nan"] > 0 and r.faults["dropped"] > 0 and r.faults["saturated"] > 0
    assert r.retries > 0
    assert r.error_measured <= r.error_start_measured
    assert np.all(r.drives_mw[:, weak] <= 30.0 + 1e-9)
    cal = r.to_program(prog, chip)
    start = pc.calibrate(prog, chip, "model", steps=0, progress=False)  # the program's start, for reference
    assert cal.report.summary["error_after"] < cal.report.summary["error_before"]
    assert start.report.summary["error_before"] == pytest.approx(cal.report.summary["error_before"])


@pytest.mark.slow
def test_calibrate_insitu_by_name_and_object_save_load(tmp_path):
    prog, chip = _unitary(4, 1)
    cal = pc.calibrate(prog, chip, "insitu", shots=100, progress=False)
    s = cal.report.summary
    assert s["method"] == "insitu" and s["error_after"] < s["error_before"] and s["measurements"] > 0
    path = tmp_path / "c.npz"
    cal.save(str(path))
    assert pc.error(pc.load(str(path)), chip)["matrix_error"] == pytest.approx(s["error_after"])
    box = pc.BlackBoxChip(chip, seed=3, shots=100)
    cal2 = pc.calibrate(prog, box, pc.InSitu(shots=100, steps=2), progress=False)
    assert cal2.report.summary["measurements"] == box.ledger.readings


@pytest.mark.parametrize("field, value, err, words", [
    ("steps", -1, InvalidInputError, "InSitu.steps"),
    ("shots", 0, InvalidInputError, "InSitu.shots"),
    ("learning_rate", 0.0, InvalidInputError, "InSitu.learning_rate"),
    ("gradient", "fd", UnknownNameError, "InSitu.gradient"),
    ("solver", "newton", UnknownNameError, "InSitu.solver"),
    ("optimizer", "adam", InvalidTypeError, "InSitu.optimizer"),
    ("spsa_step", 2.0, InvalidInputError, "InSitu.spsa_step"),
])
def test_bad_arguments_name_the_argument(field, value, err, words):
    with pytest.raises(err, match=words) as info:
        InSitu(**{field: value})
    assert repr(value)[:4] in str(info.value) or str(value) in str(info.value)


def test_bad_run_arguments():
    prog, chip = _unitary(4, 1)
    box = pc.BlackBoxChip(chip, seed=0)
    with pytest.raises(InvalidInputError, match="gradient must be 'shift'.*got 'spsa'"):
        InSitu(gradient="spsa")
    with pytest.raises(InvalidTypeError, match="instrument must implement"):
        InSitu().run(prog, object())
    other = pc.BlackBoxChip(pc.fabricate("clements-4", seed=1), seed=0)
    with pytest.raises(MismatchError, match="unitary circuit; got one of the svd"):
        InSitu().run(prog, other)
    with pytest.raises(InvalidInputError, match=r"start_drives must be finite with shape \(1, 16\); got shape \(3,\)"):
        InSitu().run(prog, box, start_drives=[1.0, 2.0, 3.0])
    with pytest.raises(InvalidTypeError, match="heaters must be a tuple"):
        InSitu().run(prog, box, heaters=[1, 2])


@pytest.mark.slow  # a compile and an in-situ calibration through the command (about 15 s)
def test_cli_calibrate_insitu_takes_the_methods_own_step_limit(capsys, tmp_path):
    """``photocomp calibrate --method insitu`` without ``--steps`` runs at most InSitu's own step limit (the
    command's model/twin limit of 300 would ask for 300 measured Jacobians)."""
    from conftest import run_cli

    np.save(tmp_path / "u.npy", pc.haar_unitary(4, np.random.default_rng(5)))
    code, _, err = run_cli(capsys, "compile", str(tmp_path / "u.npy"), "--target", "clements-4",
                           "-o", str(tmp_path / "u.npz"), "-q")
    assert code == 0, err
    code, out, err = run_cli(capsys, "calibrate", str(tmp_path / "u.npz"), "--chip-seed", "3", "--method",
                             "insitu", "--shots", "100", "-q", "-o", str(tmp_path / "u.cal.npz"))
    assert code == 0, err
    steps = int(re.search(r"^steps: (\d+)", out, re.M).group(1))
    assert 1 <= steps <= InSitu().steps
    assert (tmp_path / "u.cal.npz").is_file()
