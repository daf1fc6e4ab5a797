"""In-situ backpropagation: fields at the heaters, backward reads, the measured gradient, calibration, refusals."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import photocomp as pc
from photocomp.calibration.backprop import backprop_gradient, backprop_jacobian
from photocomp.calibration.engine import error, ideal_settings, ideal_tiles
from photocomp.calibration.insitu import HeaterModel, InSitu, PhaseSession, gain_residual, measured_gradient
from photocomp.core.errors import InvalidInputError, InvalidTypeError, MismatchError
from photocomp.hardware.chipsim import chip_heater_fields, chip_tile_matrices, flatten_heaters, unflatten_heaters
from photocomp.hardware.instrument import FaultyInstrument, read_robust


def _lossless(name: str) -> pc.Target:
    return dataclasses.replace(pc.get_target(name), mzi_loss_db=0.0, mzi_loss_sigma_db=0.0, crossing_loss_db=0.0)


def _point(target, seed: int = 0):
    """A chip, its program, and phases near the program's ideal ones (float64)."""
    chip = pc.fabricate(target, seed=3, circuit="unitary")
    rng = np.random.default_rng(seed)
    prog = pc.compile(pc.haar_unitary(target.size, rng), target)
    with jax.enable_x64(True):
        phi = np.asarray(flatten_heaters(ideal_settings(prog)))[0] + 0.1 * rng.normal(size=chip.n_heaters)
    return chip, prog, phi


@pytest.mark.parametrize("name", ["clements-5", "reck-4", "mzi3-4", "mzix-4", "butterfly-4", "fldzhyan-4"])
def test_heater_fields_are_the_jacobians_column_norms_on_a_lossless_chip(name):
    # dM[:, k]/dphi_h = i G_h a_hk with G_h the transfer from heater h's arm to the outputs, a unit vector on a
    # lossless chip (the rest of the mesh is unitary): so |a_hk| = ||dM[:, k]/dphi_h||, from autodiff alone
    t = _lossless(name)
    chip, prog, phi = _point(t)
    tpl = ideal_settings(prog)
    with jax.enable_x64(True):
        settings = lambda p: unflatten_heaters(tpl, p[None], t)  # noqa: E731
        jac = np.asarray(jax.jacfwd(lambda p: chip_tile_matrices(chip.unseeded(), settings(p), with_gain=False)[0])(
            jnp.asarray(phi)))
        fields = np.asarray(chip_heater_fields(chip.unseeded(), settings(jnp.asarray(phi)), jnp.eye(t.size)))
    assert fields.shape == (chip.n_heaters, t.size)
    np.testing.assert_allclose(np.abs(fields), np.linalg.norm(jac, axis=0).T, rtol=0, atol=1e-12)


def _session(box, t, heaters, phi):
    s = PhaseSession(box, HeaterModel.build(t, "unitary", *heaters), None, 4)
    s.amplitude = 0.5
    return s


def _gradients(t: pc.Target, chip, prog, phi):
    """``(backprop gradient, parameter-shift gradient, box, readings and configurations backprop spent)`` at
    ``phi`` on a noiseless box with exact heater estimates."""
    box = pc.BlackBoxChip(chip, seed=0, noise=False, monitor_fraction=0.1, heater_monitors=True)
    heaters = box.characterize_heaters(sigma_rad=0.0, sigma_efficiency=0.0)
    tile = ideal_tiles(prog)[0]
    _, expected = measured_gradient(box, phi, tile, heaters)
    s = _session(box, t, heaters, phi)
    _, g, r = gain_residual(tile, s.matrix(phi))
    before = box.ledger.snapshot()
    got = backprop_gradient(box, r, g, float(np.sum(np.abs(tile) ** 2)), s.amplitude)
    spent = box.ledger.since(before)
    return got, expected, box, (spent["readings"], spent["configurations"])


@pytest.mark.parametrize("name", ["clements-4", "mzi3-4"])
def test_backprop_gradient_equals_the_parameter_shift_gradient_on_a_lossless_chip(name):
    # time reversal retraces the backward light exactly on a lossless chip, and noiseless phase stepping and
    # monitors read the fields exactly: the three interference frames give every heater's exact gradient
    t = _lossless(name)
    got, expected, _, spent = _gradients(t, *_point(t))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * np.max(np.abs(expected)))
    assert spent == (6 * t.size, 0)  # 3K backward and 3K monitor vectors, at the drives already set


def test_backprop_jacobian_equals_the_parameter_shift_jacobian_on_a_lossless_chip():
    t = _lossless("clements-4")
    chip, prog, phi = _point(t, seed=1)
    box = pc.BlackBoxChip(chip, seed=0, noise=False, monitor_fraction=0.1, heater_monitors=True)
    heaters = box.characterize_heaters(sigma_rad=0.0, sigma_efficiency=0.0)
    s = _session(box, t, heaters, phi)
    expected = np.stack([0.5 * (s.matrix(phi + e) - s.matrix(phi - e)) for e in np.eye(chip.n_heaters) * np.pi / 2])
    m = s.matrix(phi)
    before = box.ledger.snapshot()
    got = backprop_jacobian(box, m)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * np.max(np.abs(expected)))
    spent = box.ledger.since(before)  # 2K^2 + 2K monitor frames at one configuration
    assert spent["readings"] == 2 * 16 + 2 * 4 and spent["configurations"] == 0


def test_backprop_gradient_on_a_lossy_chip_points_the_same_way():
    # losses make the time reverse come back weaker (by the loss before the heater, twice); dividing by each
    # heater's measured reach takes the common part out and leaves the spread of the losses between paths
    t = pc.get_target("clements-8")
    got, expected, box, _ = _gradients(t, *_point(t))
    cosine = got @ expected / np.linalg.norm(got) / np.linalg.norm(expected)
    assert cosine > 0.999
    assert 1e-4 < np.linalg.norm(got - expected) / np.linalg.norm(expected) < 0.05  # a small bias, not rounding
    # without the division by each heater's reach the bias is about a tenth of the gradient (docs/design.md)
    reach = box.read_heater_monitors(np.eye(t.size)).sum(axis=0)
    assert 0.05 < np.linalg.norm(got * reach - expected) / np.linalg.norm(expected) < 0.2


def test_read_backward_is_the_transpose():
    t = pc.get_target("clements-4")
    chip, prog, phi = _point(t)
    box = pc.BlackBoxChip(chip, seed=0, noise=False)
    drives = pc.calibrate(prog, chip, "local").drives()[0]
    box.set_drives(drives)
    with jax.enable_x64(True):
        from photocomp.hardware.chipsim import realized_phases

        m = np.asarray(chip_tile_matrices(chip.unseeded(), unflatten_heaters(
            ideal_settings(prog), realized_phases(chip.unseeded(), jnp.asarray(drives))[None], t),
            with_gain=False)[0])
    f = np.random.default_rng(1).normal(size=(3, 4)) + 1j * np.random.default_rng(2).normal(size=(3, 4))
    np.testing.assert_allclose(box.read_backward(f), np.abs(f @ m) ** 2, rtol=1e-12)
    np.testing.assert_allclose(box.read(f), np.abs(f @ m.T) ** 2, rtol=1e-12)
    assert box.ledger.readings == 6


def test_faulty_monitor_and_backward_reads_are_recovered():
    t = pc.get_target("clements-4")
    chip, _, _ = _point(t)
    inner = pc.BlackBoxChip(chip, seed=0, noise=False, monitor_fraction=0.1, heater_monitors=True)
    inner.set_drives(np.full(inner.n_heaters, 5.0))
    faulty = FaultyInstrument(inner, nan_rate=0.3, burst_drop_rate=0.2, seed=2)
    x = np.eye(4)
    got = read_robust(faulty, x, source="heaters", retries=30)
    np.testing.assert_allclose(got, inner.read_heater_monitors(x), rtol=1e-12)
    back = read_robust(faulty, x, source="backward", retries=30)
    np.testing.assert_allclose(back, inner.read_backward(x), rtol=1e-12)
    assert inner.ledger.faults["nan"] > 0 and inner.ledger.faults["dropped"] > 0 and inner.ledger.retries > 0
    with pytest.raises(InvalidInputError, match="source must be one of"):
        read_robust(faulty, x, source="camera")
    with pytest.raises(InvalidInputError, match="reference must be None when source='heaters'"):
        read_robust(faulty, x, source="heaters", reference=1.0)


def test_calibration_by_name_reduces_the_true_error():
    t = pc.get_target("clements-6")
    chip = pc.fabricate(t, seed=1, circuit="unitary")
    prog = pc.compile(pc.haar_unitary(6, np.random.default_rng(0)), t)
    cal = pc.calibrate(prog, chip, "backprop", steps=120, progress=False)
    before, after = error(prog, chip)["matrix_error"], error(cal, chip)["matrix_error"]
    model = error(pc.calibrate(prog, chip, "model", progress=False), chip)["matrix_error"]
    assert after < 0.5 * before
    assert after < 1.6 * model
    summary = cal.report.summary
    assert summary["error_after"] == pytest.approx(after)


def test_one_configuration_per_step_and_faults_survived():
    t = pc.get_target("clements-4")
    chip = pc.fabricate(t, seed=2, circuit="unitary")
    prog = pc.compile(pc.haar_unitary(4, np.random.default_rng(2)), t)
    inner = pc.BlackBoxChip(chip, seed=2, shots=10, monitor_fraction=0.1, heater_monitors=True)
    heaters = inner.characterize_heaters()
    before = inner.ledger.snapshot()
    r = InSitu.backprop(steps=5, patience=5).run(prog, inner, heaters=heaters)
    # the start, one configuration per step, the best iterate's check (a start read at the start's drives is free)
    assert r.steps_run == 5 and r.gradient == "backprop"
    assert inner.ledger.since(before)["configurations"] <= 5 + 3
    faulty = FaultyInstrument(pc.BlackBoxChip(chip, seed=3, shots=10, monitor_fraction=0.1, heater_monitors=True),
                              nan_rate=0.05, burst_drop_rate=0.05, seed=4)
    r = InSitu.backprop(steps=20).run(prog, faulty, heaters=heaters)
    assert r.faults["nan"] > 0 and r.faults["dropped"] > 0 and r.retries > 0
    assert r.error_measured <= r.error_start_measured


def test_refusals_name_what_works():
    t = pc.get_target("clements-4")
    chip = pc.fabricate(t, seed=0, circuit="unitary")
    prog = pc.compile(pc.haar_unitary(4, np.random.default_rng(0)), t)
    plain = pc.BlackBoxChip(chip, seed=0)
    with pytest.raises(MismatchError, match="monitor at every phase shifter.*gradient='shift'"):
        InSitu.backprop().run(prog, plain)
    assert plain.ledger.readings == 0
    svd_prog = pc.compile(np.random.default_rng(0).normal(size=(4, 4)), t)
    svd_box = pc.BlackBoxChip(pc.fabricate(t, seed=0), seed=0, monitor_fraction=0.1)
    with pytest.raises(MismatchError, match="unitary program.*svd circuit"):
        InSitu.backprop().run(svd_prog, svd_box)
    with pytest.raises(MismatchError, match="heater_monitors needs a unitary mesh chip"):
        pc.BlackBoxChip(pc.fabricate(t, seed=0), monitor_fraction=0.1, heater_monitors=True)
    with pytest.raises(InvalidInputError, match="heater_monitors=True needs monitor_fraction"):
        pc.BlackBoxChip(chip, heater_monitors=True)
    with pytest.raises(InvalidTypeError, match="heater_monitors must be a bool"):
        pc.BlackBoxChip(chip, monitor_fraction=0.1, heater_monitors=1)
    with pytest.raises(MismatchError, match="read_heater_monitors needs a chip with a monitor"):
        plain.read_heater_monitors(np.eye(4))
    with pytest.raises(InvalidInputError, match="gradient must be 'shift' or 'backprop' with solver='gauss-newton'"):
        InSitu(gradient="spsa")
    with pytest.raises(InvalidInputError, match="monitor_fraction"):
        InSitu.backprop(monitor_fraction=0.0)


def test_cli_calibrate_backprop(capsys, tmp_path):
    from conftest import run_cli

    np.save(tmp_path / "u.npy", pc.haar_unitary(4, np.random.default_rng(5)))
    code, _, err = run_cli(capsys, "compile", str(tmp_path / "u.npy"), "--target", "clements-4",
                           "-o", str(tmp_path / "u.npz"), "-q")
    assert code == 0, err
    code, out, err = run_cli(capsys, "calibrate", str(tmp_path / "u.npz"), "--chip-seed", "3", "--method",
                             "backprop", "-q", "-o", str(tmp_path / "u.cal.npz"))
    assert code == 0, err
    steps = int(re.search(r"^steps: (\d+)", out, re.M).group(1))
    assert 1 <= steps <= InSitu.backprop().steps
    cal = pc.load(tmp_path / "u.cal.npz")
    chip = pc.fabricate("clements-4", seed=3, circuit="unitary")
    assert error(cal, chip)["matrix_error"] < error(pc.load(tmp_path / "u.npz"), chip)["matrix_error"]
