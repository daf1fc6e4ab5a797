"""Self-configuration by measurement (photocomp/calibration/selfconfig.py), through the Instrument interface only."""

import numpy as np
import pytest
from conftest import haar_unitary

import photocomp as pc
from photocomp.calibration.engine import ideal_tiles
from photocomp.calibration.selfconfig import SelfConfig, chip_error, measured_error
from photocomp.hardware.dac import quantize_power
from photocomp.hardware.instrument import FaultyInstrument


def _case(n: int, seed: int):
    u = haar_unitary(n, np.random.default_rng(seed))
    return pc.compile(u, f"clements-{n}"), pc.fabricate(f"clements-{n}", seed, circuit="unitary")


@pytest.fixture(scope="module")
def case4():
    return _case(4, 0)


@pytest.fixture(scope="module")
def clean_run(case4):
    prog, chip = case4
    return SelfConfig().run(prog, pc.BlackBoxChip(chip, seed=0))


def test_self_configuration_lowers_the_true_error(case4, clean_run):
    prog, chip = case4
    res = clean_run
    before = chip_error(prog, chip, res.start_drives_mw)
    after = chip_error(prog, chip, res.drives_mw)
    # measured on this case (clements-4, unitary chip seed 0, noise seed 0): 0.087 -> about 0.03
    assert before > 0.07
    assert after < 0.5 * before
    assert res.kept == "configured" and res.error_measured < res.error_start_measured
    assert abs(res.error_measured - after) < 0.01  # the phase-stepped estimate tracks the truth
    # cost: a few thousand readings, well under a millisecond of chip time at 1 GHz and 3 us settling
    assert 500 < res.readings < 5000
    assert res.chip_time_s == pytest.approx(res.configurations * 3e-6 + res.readings * 1e-9)
    assert [h[0] for h in res.history] == sorted(h[0] for h in res.history)


def test_a_mesh_with_trim_heaters_is_configured_its_trims_held():
    """A three-splitter cell's trim heater has no virtual phase: it stays where the start put it."""
    prog = pc.compile(haar_unitary(4, np.random.default_rng(3)), "mzi3-4")
    chip = pc.fabricate("mzi3-4", seed=1, circuit="unitary")
    res = SelfConfig(shots=100).run(prog, pc.BlackBoxChip(chip, seed=0, shots=100))
    trims = pc.hardware.chip.heater_slices(prog.target, "unitary")["u_trim"]
    np.testing.assert_array_equal(res.drives_mw[trims], res.start_drives_mw[trims])
    assert chip_error(prog, chip, res.drives_mw) < 0.5 * chip_error(prog, chip, res.start_drives_mw)  # 0.100 -> 0.037


def test_same_seeds_give_the_same_configuration(case4, clean_run):
    prog, chip = case4
    again = SelfConfig().run(prog, pc.BlackBoxChip(chip, seed=0))
    np.testing.assert_array_equal(again.drives_mw, clean_run.drives_mw)
    assert again.readings == clean_run.readings and again.history == clean_run.history


def test_faults_are_survived_counted_and_never_make_it_worse(case4):
    prog, chip = case4
    box = pc.BlackBoxChip(chip, seed=0)
    faulty = FaultyInstrument(box, saturate_at=0.6, nan_rate=0.05, burst_drop_rate=0.05, heater_limit_mw=52.0,
                              seed=3)
    res = SelfConfig().run(prog, faulty)
    assert res.faults["saturated"] > 0 and res.faults["nan"] > 0 and res.faults["dropped"] > 0
    assert res.retries > 0
    assert np.all(res.drives_mw <= 52.0)
    before = chip_error(prog, chip, res.start_drives_mw)
    after = chip_error(prog, chip, res.drives_mw)
    # measured: 0.087 -> about 0.05 with every fault injected at once
    assert after <= before and after < 0.75 * before
    assert res.error_measured <= res.error_start_measured


def test_refused_drives_are_learned_and_counted(case4):
    prog, chip = case4
    box = pc.BlackBoxChip(chip, seed=0)
    start = SelfConfig(sweeps=1).run(prog, pc.BlackBoxChip(chip, seed=0)).start_drives_mw
    hottest = int(np.argmax(start))
    faulty = FaultyInstrument(box, heater_limit_mw=float(start[hottest]) - 1.0, weak_heaters=np.array([hottest]),
                              seed=0)
    res = SelfConfig(sweeps=1).run(prog, faulty, start_drives=start)
    assert res.faults["refused"] >= 1 and res.retries >= 1  # refused, then driven on another branch
    assert res.drives_mw[hottest] <= float(start[hottest]) - 1.0
    assert res.error_measured <= res.error_start_measured


def test_result_becomes_a_calibrated_program(case4, clean_run):
    prog, chip = case4
    cal = clean_run.to_program(prog, chip)
    assert cal.calibrated and cal.report.summary["method"] == "selfconfig"
    assert cal.report.summary["error_after"] == pytest.approx(chip_error(prog, chip, clean_run.drives_mw), rel=1e-9)
    assert cal.report.summary["error_after"] < cal.report.summary["error_before"]
    np.testing.assert_allclose(cal.drives()[0], clean_run.drives_mw, atol=1e-6)


def test_measured_error_matches_the_truth_without_noise(case4):
    prog, chip = case4
    box = pc.BlackBoxChip(chip, seed=0, noise=False)
    p = np.full(box.n_heaters, 12.0)
    u = np.asarray(ideal_tiles(prog)[0])
    assert measured_error(box, p, u) == pytest.approx(chip_error(prog, chip, p), rel=1e-9)
    with pytest.raises(pc.InvalidInputError, match=r"target must have shape \(4, 4\); got shape \(3, 3\)"):
        measured_error(box, p, np.eye(3))


@pytest.mark.parametrize("kwargs, err, match", [
    ({"sweeps": 0}, pc.InvalidInputError, r"SelfConfig.sweeps must be an integer in \[1, inf\]; got 0"),
    ({"tol": 2.0}, pc.InvalidInputError, "SelfConfig.tol must be <= 1.0; got 2.0"),
    ({"shots": 1.5}, pc.InvalidTypeError, "SelfConfig.shots must be an integer; got float"),
    ({"retries": -1}, pc.InvalidInputError, r"SelfConfig.retries must be an integer in \[0, inf\]"),
    ({"pattern": 1}, pc.InvalidTypeError, "SelfConfig.pattern must be a bool; got int"),
])
def test_settings_are_checked(kwargs, err, match):
    with pytest.raises(err, match=match):
        SelfConfig(**kwargs)


def test_run_rejects_bad_programs_instruments_and_starts(case4):
    prog, chip = case4
    box = pc.BlackBoxChip(chip, seed=0)
    sc = SelfConfig(sweeps=1)
    with pytest.raises(pc.InvalidTypeError, match="prog must be a photocomp.Program .*got ndarray"):
        sc.run(np.eye(4), box)
    with pytest.raises(pc.InvalidTypeError, match="instrument must implement .*Instrument.*got Chip"):
        sc.run(prog, chip)
    svd_prog = pc.compile(np.arange(16.0).reshape(4, 4), "clements-4")
    with pytest.raises(pc.MismatchError, match="program and instrument must both be of the unitary circuit.*svd"):
        sc.run(svd_prog, box)
    other = pc.BlackBoxChip(pc.fabricate("clements-5", 0, circuit="unitary"))
    with pytest.raises(pc.MismatchError, match="instrument must be a chip of the program's target 'clements-4'"):
        sc.run(prog, other)
    with pytest.raises(pc.InvalidInputError, match=r"start_drives must be finite with shape \(16,\); got shape \(3,\)"):
        sc.run(prog, box, start_drives=np.zeros(3))
    with pytest.raises(pc.InvalidTypeError, match="heaters must be a tuple"):
        sc.run(prog, box, heaters=np.zeros(16))
    with pytest.raises(pc.InvalidInputError, match=r"heaters efficiencies must be finite with shape \(16,\)"):
        sc.run(prog, box, heaters=(np.zeros(16), np.ones(3)))
    with pytest.raises(pc.InvalidInputError, match="start_drives or heaters must be given .*got neither"):
        sc.run(prog, _Bare(box))
    assert box.measurements == 0  # nothing was read for any of these


class _Bare:
    """A lab driver with the Instrument methods only (no heater characterisation)."""

    def __init__(self, box):
        self._box = box
        self.target, self.n_heaters, self.circuit = box.target, box.n_heaters, box.circuit
        self.drive_limit_mw, self.saturation, self.ledger = box.drive_limit_mw, box.saturation, box.ledger

    @property
    def drives_mw(self):
        return self._box.drives_mw

    def set_drives(self, drives_mw):
        self._box.set_drives(drives_mw)

    def read(self, inputs, *, shots=None, reference=None):
        return self._box.read(inputs, shots=shots, reference=reference)

    def read_temperatures(self):
        return self._box.read_temperatures()


def test_calibrate_runs_selfconfig_by_name_object_and_black_box(case4, clean_run):
    """pc.calibrate(..., "selfconfig") is SelfConfig().run on a BlackBoxChip of the chip, then to_program."""
    prog, chip = case4
    by_name = pc.calibrate(prog, chip, "selfconfig", progress=False)
    by_object = pc.calibrate(prog, chip, pc.SelfConfig(), progress=False)
    by_box = pc.calibrate(prog, pc.BlackBoxChip(chip, seed=0), pc.SelfConfig(), progress=False)
    want = clean_run.to_program(prog, chip)
    for cal in (by_name, by_object, by_box):
        np.testing.assert_allclose(cal.matrix(), want.matrix(), atol=1e-12, rtol=0)
        assert cal.report.summary["error_after"] == pytest.approx(want.report.summary["error_after"], abs=1e-12)
    summary = by_name.report.summary
    assert summary["error_after"] < 0.5 * summary["error_before"]
    # dac_bits: the drives are quantized, and the reported error is the quantized chip's
    coarse = pc.calibrate(prog, chip, "selfconfig", dac_bits=4, progress=False)
    assert coarse.report.summary["error_after"] != pytest.approx(summary["error_after"], abs=1e-6)
    assert coarse.report.summary["error_after"] == pytest.approx(
        chip_error(prog, chip, quantize_power(clean_run.drives_mw, chip.target, 4)), abs=1e-9)


def test_calibrate_selfconfig_refuses_what_it_cannot_do(case4):
    prog, chip = case4
    with pytest.raises(pc.InvalidInputError, match="'twin', 'selfconfig', 'nullify', 'diagonalize', 'cells' or 'insitu'"):
        pc.calibrate(prog, pc.BlackBoxChip(chip, seed=0), "model", progress=False)
    with pytest.raises(pc.InvalidInputError, match="SelfConfig|method object"):
        pc.calibrate(prog, chip, pc.SelfConfig(), shots=4, progress=False)
