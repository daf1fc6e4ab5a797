"""Self-configuration of a triangular mesh from its output powers (photocomp/calibration/diagonalize.py)."""

import dataclasses

import numpy as np
import pytest
from conftest import haar_unitary

import photocomp as pc
from photocomp.calibration.diagonalize import Diagonalize, chain_inputs
from photocomp.calibration.selfconfig import chip_error
from photocomp.hardware.chip import nominal_chip
from photocomp.hardware.chipsim import nominal_drives
from photocomp.hardware.instrument import FaultyInstrument


def _program(n: int, seed: int, target=None):
    return pc.compile(haar_unitary(n, np.random.default_rng(seed)), target or f"reck-{n}")


def test_chain_inputs_light_the_chain_ports_they_name():
    """Row j of a chain's inputs reaches the chain's inputs 0..j alone; its last row reaches output r alone."""
    prog = _program(6, 1)
    lay = prog.phase_map.u.layout
    rng = np.random.default_rng(0)
    coef = (rng.normal(size=(4, lay.n_mzi)) + 1j * rng.normal(size=(4, lay.n_mzi)))  # any invertible 2 x 2s
    chains = chain_inputs(coef, "reck", 6)
    assert [r for r, _, _ in chains] == [5, 4, 3, 2, 1]

    def apply(mzis, x):
        y = x.copy()
        for m in mzis:
            k = lay.pairs[m]
            y[[k, k + 1]] = coef[:, m].reshape(2, 2) @ y[[k, k + 1]]
        return y

    done: list[int] = []  # the MZIs light meets before the chain, in light order
    every = [m for _, mzis, _ in chains for m in mzis]
    for r, mzis, inputs in chains:
        assert [lay.pairs[m] for m in mzis] == list(range(r))  # modes (0, 1), ..., (r - 1, r)
        np.testing.assert_allclose(np.linalg.norm(inputs, axis=1), 1.0, atol=1e-12)
        for j in range(r + 1):
            at_chain = apply(done, inputs[j].astype(complex))
            if j + 1 < len(at_chain):  # nothing above input j
                assert np.max(np.abs(at_chain[j + 1:])) < 1e-10 * np.max(np.abs(at_chain))
        out = apply(every, inputs[r].astype(complex))
        others = np.delete(out, r)
        assert np.max(np.abs(others)) < 1e-10 * abs(out[r])  # all of it to output r
        done += list(mzis)


def test_on_an_ideal_chip_it_finds_the_program_from_far_away():
    prog = _program(6, 3)
    chip = nominal_chip(prog.target, "unitary")
    p0 = nominal_drives(prog.phase_map, prog.target)[0]
    box = pc.BlackBoxChip(chip, noise=False)
    start = np.clip(p0 + np.random.default_rng(3).normal(size=p0.shape) * 2.0, 0, box.drive_limit_mw)
    res = Diagonalize().run(prog, box, start_drives=start, heaters=(np.asarray(chip.offset), np.asarray(chip.efficiency)))
    floor = chip_error(prog, chip, p0)  # the ideal settings: what the uneven path losses of a Reck mesh leave
    assert chip_error(prog, chip, start) > 0.4
    assert chip_error(prog, chip, res.drives_mw) <= 1.25 * floor  # measured: 0.0407 against 0.0359


def test_it_corrects_coupler_errors():
    """Without noise and without MZI losses, the chains' nulls take the couplers' errors out."""
    target = dataclasses.replace(pc.get_target("reck-6"), mzi_loss_sigma_db=0.0, mzi_loss_db=0.0)
    prog = _program(6, 3, target)
    chip = pc.fabricate(target, seed=2, circuit="unitary")
    res = Diagonalize(rounds=4).run(prog, pc.BlackBoxChip(chip, noise=False))  # noise-free, more rounds refine
    start, end = chip_error(prog, chip, res.start_drives_mw), chip_error(prog, chip, res.drives_mw)
    assert res.kept == "configured" and start > 0.1
    assert end < 2e-3  # measured: 5.4e-4 with four rounds, 1.8e-3 with the default two (model calibration: rounding)
    assert res.error_measured == pytest.approx(end, rel=1e-6)  # phase stepping without noise is exact
    assert res.passes_run == 1 and len(res.history) == 2 and res.history[1][2] < 0.1 * res.history[0][2]


def test_on_a_default_chip_it_comes_near_the_model():
    prog = _program(6, 3)
    chip = pc.fabricate("reck-6", seed=2, circuit="unitary")
    model = pc.calibrate(prog, chip, "model", progress=False).report.summary["error_after"]
    res = Diagonalize(shots=100).run(prog, pc.BlackBoxChip(chip, seed=4))
    end = chip_error(prog, chip, res.drives_mw)
    assert end <= 1.3 * model  # measured without noise: 0.0491 against 0.0415
    assert end < 0.5 * chip_error(prog, chip, res.start_drives_mw)
    assert res.chip_time_s == pytest.approx(res.configurations * chip.target.heater_tau_us * 1e-6
                                            + res.readings / (chip.target.clock_ghz * 1e9), rel=1e-9)
    again = Diagonalize(shots=100).run(prog, pc.BlackBoxChip(chip, seed=4))
    np.testing.assert_array_equal(res.drives_mw, again.drives_mw)


def test_faults_are_survived_and_never_make_it_worse():
    prog = _program(4, 5)
    chip = pc.fabricate("reck-4", seed=1, circuit="unitary")
    faulty = FaultyInstrument(pc.BlackBoxChip(chip, seed=0), nan_rate=0.2, burst_drop_rate=0.1, seed=1)
    res = Diagonalize(shots=100).run(prog, faulty)
    assert res.faults["nan"] > 0 and res.faults["dropped"] > 0 and res.retries > 0
    assert res.error_measured <= res.error_start_measured
    assert res.kept in ("configured", "start")


@pytest.mark.parametrize("kwargs, err, match", [
    ({"passes": 0}, pc.InvalidInputError, r"Diagonalize.passes must be an integer in \[1, inf\]; got 0"),
    ({"rounds": 0}, pc.InvalidInputError, r"Diagonalize.rounds must be an integer in \[1, inf\]; got 0"),
    ({"tol": -1.0}, pc.InvalidInputError, "Diagonalize.tol must be >= 0.0"),
    ({"shots": 2.5}, pc.InvalidTypeError, "Diagonalize.shots must be an integer; got float"),
    ({"retries": -1}, pc.InvalidInputError, r"Diagonalize.retries must be an integer in \[0, inf\]; got -1"),
])
def test_settings_are_checked(kwargs, err, match):
    with pytest.raises(err, match=match):
        Diagonalize(**kwargs)


def test_run_refuses_what_it_cannot_do():
    clements = pc.compile(haar_unitary(4, np.random.default_rng(0)), "clements-4")
    box = pc.BlackBoxChip(pc.fabricate("clements-4", 1, circuit="unitary"))
    with pytest.raises(pc.MismatchError, match="triangular \\(Reck\\) mesh.*'clements-4' is a clements mesh.*'nullify'"):
        Diagonalize().run(clements, box)
    crossbar = pc.compile(np.eye(4), "crossbar-4")
    with pytest.raises(pc.MismatchError, match="'crossbar-4' is a crossbar mesh.*'cells', 'insitu' or 'twin'"):
        Diagonalize().run(crossbar, pc.BlackBoxChip(pc.fabricate("crossbar-4", 1)))
    svd = pc.compile(np.arange(16.0).reshape(4, 4), "reck-4")
    with pytest.raises(pc.MismatchError, match="unitary circuit"):
        Diagonalize().run(svd, pc.BlackBoxChip(pc.fabricate("reck-4", 1)))
    with pytest.raises(pc.InvalidTypeError, match="prog must be a photocomp.Program"):
        Diagonalize().run(np.eye(4), box)
    assert box.measurements == 0


def test_calibrate_runs_it_by_name_and_object():
    prog = _program(4, 5)
    chip = pc.fabricate("reck-4", seed=1, circuit="unitary")
    by_name = pc.calibrate(prog, chip, "diagonalize", shots=100, progress=False)
    by_object = pc.calibrate(prog, chip, pc.Diagonalize(shots=100), progress=False)
    np.testing.assert_allclose(by_name.matrix(), by_object.matrix(), atol=1e-12, rtol=0)
    s = by_name.report.summary
    assert s["method"] == "diagonalize" and s["passes_run"] == 1
    assert s["error_after"] < 0.6 * s["error_before"]
    assert s["measurements"] > 0 and s["chip_time_s"] > 0
