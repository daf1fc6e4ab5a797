"""In-mesh monitors and calibration by nullification (photocomp/calibration/nullify.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import haar_unitary

import photocomp as pc
from photocomp.calibration.nullify import Nullify, _nulling_inputs
from photocomp.calibration.selfconfig import chip_error
from photocomp.hardware.chip import nominal_chip
from photocomp.hardware.chipsim import (
    chip_column_fields,
    chip_tile_matrices,
    nominal_drives,
    realized_phases,
    unflatten_heaters,
)
from photocomp.hardware.detector import drive_template
from photocomp.hardware.instrument import FaultyInstrument, MonitoredInstrument, read_robust


def _program(n: int, seed: int, target=None):
    return pc.compile(haar_unitary(n, np.random.default_rng(seed)), target or f"clements-{n}")


def _fields(chip, drives, x):
    with jax.enable_x64(True):
        s = unflatten_heaters(drive_template(chip.target, 1, chip.circuit),
                              realized_phases(chip, jnp.asarray(drives))[None], chip.target)
        return np.asarray(chip_column_fields(chip, s, jnp.asarray(x))), s


@pytest.mark.parametrize("circuit", ["unitary", "svd"])
def test_column_fields_end_in_the_chip_matrix(circuit):
    """The last column's fields, through the output shifters, are the chip's tile matrix (float64)."""
    chip = pc.fabricate("clements-6", seed=2, circuit=circuit)
    drives = np.random.default_rng(0).uniform(0, 50.0, chip.n_heaters)
    f, s = _fields(chip, drives, np.eye(6, dtype=complex))
    assert f.shape == ((6 if circuit == "unitary" else 12), 6, 6)
    with jax.enable_x64(True):
        m = np.asarray(chip_tile_matrices(chip, s, with_gain=False))[0]
    out = np.asarray(s.u_out)[0]
    np.testing.assert_allclose(np.exp(1j * out)[:, None] * f[-1], m, atol=1e-12, rtol=0)


def test_monitors_read_the_column_powers_and_are_counted():
    chip = pc.fabricate("clements-6", seed=2, circuit="unitary")
    exact = pc.BlackBoxChip(chip, noise=False, monitor_fraction=0.05)
    assert isinstance(exact, MonitoredInstrument) and exact.monitor_columns == 6
    drives = np.random.default_rng(1).uniform(0, 50.0, chip.n_heaters)
    x = np.random.default_rng(2).normal(size=(3, 6)) + 0j
    exact.set_drives(drives)
    got = exact.read_monitors(x)
    f, _ = _fields(chip, drives, x.T)
    np.testing.assert_allclose(got, np.moveaxis(np.abs(f) ** 2, 2, 0), atol=1e-12, rtol=0)
    assert exact.read_monitors(x[0]).shape == (6, 6)
    assert exact.ledger.readings == 3 + 1
    noisy = pc.BlackBoxChip(chip, seed=3, monitor_fraction=0.05)
    noisy.set_drives(drives)
    r = noisy.read_monitors(x, shots=100)
    assert noisy.ledger.readings == 300
    assert 0 < np.max(np.abs(r - got)) < 0.05 * np.max(got)  # noisy, but the same powers
    with pytest.raises(pc.MismatchError, match="read_monitors needs a chip with in-mesh monitors"):
        pc.BlackBoxChip(chip).read_monitors(x)
    assert pc.BlackBoxChip(chip).monitor_columns == 0
    with pytest.raises(pc.InvalidInputError, match="monitor_fraction must be > 0"):
        pc.BlackBoxChip(chip, monitor_fraction=0.0)
    with pytest.raises(pc.InvalidInputError, match="drives_mw must be set"):
        pc.BlackBoxChip(chip, monitor_fraction=0.1).read_monitors(x)
    assert pc.BlackBoxChip(pc.fabricate("clements-6", seed=2), monitor_fraction=0.1).monitor_columns == 12


def test_robust_monitor_reads_get_past_nan_and_dropped_bursts():
    chip = pc.fabricate("clements-4", seed=0, circuit="unitary")
    box = pc.BlackBoxChip(chip, noise=False, monitor_fraction=0.1)
    faulty = FaultyInstrument(box, nan_rate=0.3, burst_drop_rate=0.3, seed=3)
    assert faulty.monitor_columns == 4
    drives = np.full(chip.n_heaters, 10.0)
    faulty.set_drives(drives)
    x = np.eye(4, dtype=complex)
    got = read_robust(faulty, x, source="monitors", retries=20)
    box2 = pc.BlackBoxChip(chip, noise=False, monitor_fraction=0.1)
    box2.set_drives(drives)
    np.testing.assert_allclose(got, box2.read_monitors(x), atol=1e-12, rtol=0)
    faults = box.ledger.faults
    assert faults["nan"] + faults["dropped"] > 0 and box.ledger.retries > 0
    with pytest.raises(pc.InvalidInputError, match="reference must be None when source=.monitors."):
        read_robust(faulty, x, source="monitors", reference=1.0)


def test_nulling_inputs_null_every_lower_port_of_the_ideal_columns():
    prog = _program(6, 1)
    chip = nominal_chip(prog.target, "unitary")
    box = pc.BlackBoxChip(chip, noise=False, monitor_fraction=1.0)
    box.set_drives(nominal_drives(prog.phase_map, prog.target)[0])
    lay = prog.target.layout
    top, index, valid = lay.column_slots
    from photocomp.calibration.engine import ideal_settings
    from photocomp.hardware.chipsim import stage_coefficients
    s = ideal_settings(prog)
    with jax.enable_x64(True):
        coef = np.asarray(stage_coefficients(chip, lay, "u", np.asarray(s.u_int)[0], np.asarray(s.u_ext)[0],
                                             dtype=np.complex128))
    bottom = lay.column_bottoms
    x = _nulling_inputs(coef, top, bottom, index, valid, 6, np.random.default_rng(0))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-12)
    for c in range(lay.depth):
        powers = box.read_monitors(x[c])[c]
        assert np.max(powers[bottom[c][valid[c]]]) < 1e-25
        assert np.min(np.delete(powers, bottom[c][valid[c]])) > 1e-4  # the other ports carry light


def test_nulling_corrects_coupler_errors_to_what_a_model_reaches():
    """Without noise and without a spread of MZI losses, nulling compensates the couplers' errors."""
    target = dataclasses.replace(pc.get_target("clements-6"), mzi_loss_sigma_db=0.0)
    prog = _program(6, 3, target)
    chip = pc.fabricate(target, seed=2, circuit="unitary")
    res = Nullify().run(prog, pc.BlackBoxChip(chip, noise=False, monitor_fraction=1.0))
    model = pc.calibrate(prog, chip, "model", progress=False).report.summary["error_after"]
    start, end = chip_error(prog, chip, res.start_drives_mw), chip_error(prog, chip, res.drives_mw)
    assert res.kept == "configured" and end < 0.25 * start
    assert end <= 1.15 * model  # measured: 0.0238 against 0.0222
    assert res.error_measured == pytest.approx(end, rel=1e-6)  # phase stepping without noise is exact
    assert res.passes_run == 2 and len(res.history) == 2


def test_nulling_finds_the_program_on_an_ideal_chip_from_far_away():
    prog = _program(4, 3)
    chip = nominal_chip(prog.target, "unitary")
    p0 = nominal_drives(prog.phase_map, prog.target)[0]
    box = pc.BlackBoxChip(chip, noise=False, monitor_fraction=1.0)
    start = np.clip(p0 + np.random.default_rng(3).normal(size=p0.shape) * 2.0, 0, box.drive_limit_mw)
    res = Nullify().run(prog, box, start_drives=start,
                        heaters=(np.asarray(chip.offset), np.asarray(chip.efficiency)))
    floor = chip_error(prog, chip, p0)  # the ideal settings: what the chip's uneven edge losses leave
    assert chip_error(prog, chip, start) > 0.3
    assert chip_error(prog, chip, res.drives_mw) <= 1.1 * floor  # measured: 0.0203 against 0.0194


def test_schedules_cost_and_reproducibility():
    prog = _program(4, 5)
    chip = pc.fabricate("clements-4", seed=1, circuit="unitary")
    a = Nullify(passes=1).run(prog, pc.BlackBoxChip(chip, seed=7, monitor_fraction=0.1))
    b = Nullify(passes=1).run(prog, pc.BlackBoxChip(chip, seed=7, monitor_fraction=0.1))
    np.testing.assert_array_equal(a.drives_mw, b.drives_mw)
    seq = Nullify(passes=1, schedule="sequential").run(prog, pc.BlackBoxChip(chip, seed=7, monitor_fraction=0.1))
    assert seq.configurations > a.configurations  # a column's MZIs one at a time
    for r in (a, seq):
        assert r.error_measured <= r.error_start_measured
        assert r.chip_time_s == pytest.approx(r.configurations * chip.target.heater_tau_us * 1e-6
                                              + r.readings / (chip.target.clock_ghz * 1e9), rel=1e-9)


def test_faults_are_survived_and_never_make_it_worse():
    prog = _program(4, 5)
    chip = pc.fabricate("clements-4", seed=1, circuit="unitary")
    box = pc.BlackBoxChip(chip, seed=0, monitor_fraction=0.1)
    faulty = FaultyInstrument(box, nan_rate=0.2, burst_drop_rate=0.1, seed=1)
    res = Nullify(passes=1).run(prog, faulty)
    assert res.faults["nan"] > 0 and res.faults["dropped"] > 0 and res.retries > 0
    assert res.error_measured <= res.error_start_measured
    assert chip_error(prog, chip, res.drives_mw) <= chip_error(prog, chip, res.start_drives_mw) + 1e-12 or \
        res.kept == "configured"


@pytest.mark.parametrize("kwargs, err, match", [
    ({"schedule": "random"}, pc.UnknownNameError, r"Nullify.schedule must be one of \('parallel', 'sequential'\)"),
    ({"schedule": 1}, pc.InvalidTypeError, "Nullify.schedule must be a str"),
    ({"passes": 0}, pc.InvalidInputError, r"Nullify.passes must be an integer in \[1, inf\]; got 0"),
    ({"vectors": 0}, pc.InvalidInputError, r"Nullify.vectors must be an integer in \[1, inf\]; got 0"),
    ({"tol": -1.0}, pc.InvalidInputError, "Nullify.tol must be >= 0.0"),
    ({"monitor_fraction": 0.0}, pc.InvalidInputError, "Nullify.monitor_fraction must be > 0"),
    ({"shots": 2.5}, pc.InvalidTypeError, "Nullify.shots must be an integer; got float"),
])
def test_settings_are_checked(kwargs, err, match):
    with pytest.raises(err, match=match):
        Nullify(**kwargs)


def test_run_refuses_what_it_cannot_do():
    prog = _program(4, 5)
    chip = pc.fabricate("clements-4", seed=1, circuit="unitary")
    plain = pc.BlackBoxChip(chip)
    with pytest.raises(pc.MismatchError, match="in-mesh monitors after each of the mesh's 4 columns.*got 0"):
        Nullify().run(prog, plain)
    svd = pc.compile(np.arange(16.0).reshape(4, 4), "clements-4")
    with pytest.raises(pc.MismatchError, match="unitary circuit"):
        Nullify().run(svd, pc.BlackBoxChip(pc.fabricate("clements-4", 1), monitor_fraction=0.1))
    bell = pc.compile(haar_unitary(4, np.random.default_rng(0)), "bell-4")
    with pytest.raises(pc.MismatchError, match="Nullify needs MZIs with an external heater.*'bell' cell"):
        Nullify().run(bell, pc.BlackBoxChip(pc.fabricate("bell-4", 0, circuit="unitary"), monitor_fraction=0.1))
    with pytest.raises(pc.InvalidTypeError, match="prog must be a photocomp.Program"):
        Nullify().run(np.eye(4), plain)
    assert plain.measurements == 0


def test_calibrate_runs_nullify_by_name_and_object():
    prog = _program(4, 5)
    chip = pc.fabricate("clements-4", seed=1, circuit="unitary")
    by_name = pc.calibrate(prog, chip, "nullify", progress=False)
    by_object = pc.calibrate(prog, chip, pc.Nullify(), progress=False)
    np.testing.assert_allclose(by_name.matrix(), by_object.matrix(), atol=1e-12, rtol=0)
    s = by_name.report.summary
    assert s["method"] == "nullify" and s["schedule"] == "parallel" and s["passes_run"] == 2
    assert s["error_after"] < 0.5 * s["error_before"]
    assert s["measurements"] > 0 and s["chip_time_s"] > 0  # fewer shots: the command-line test below


def test_cli_calibrate_nullify_takes_the_methods_own_shots(capsys, tmp_path):
    """``photocomp calibrate --method nullify`` reads its monitors at Nullify's own shots unless --shots is given."""
    from conftest import run_cli

    np.save(tmp_path / "u.npy", pc.haar_unitary(4, np.random.default_rng(5)))
    code, _, err = run_cli(capsys, "compile", str(tmp_path / "u.npy"), "--target", "clements-4",
                           "-o", str(tmp_path / "u.npz"), "-q")
    assert code == 0, err
    readings = {}
    for extra in ((), ("--shots", "10")):
        out_file = tmp_path / f"u{len(extra)}.cal.npz"
        code, out, err = run_cli(capsys, "calibrate", str(tmp_path / "u.npz"), "--chip-seed", "1", "--method",
                                 "nullify", *extra, "-q", "-o", str(out_file))
        assert code == 0, err
        readings[extra] = pc.load(out_file).report.summary["measurements"]
        assert pc.load(out_file).report.summary["method"] == "nullify"
    api = pc.calibrate(pc.load(tmp_path / "u.npz"), pc.fabricate("clements-4", 1, circuit="unitary"), "nullify",
                       progress=False)
    assert readings[()] == api.report.summary["measurements"]  # the command's default is Nullify's
    assert readings[("--shots", "10")] < readings[()]
