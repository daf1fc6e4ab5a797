"""Black-box calibration of a crossbar, every cell read at once (photocomp/calibration/cells.py).

The cell models themselves are tested in tests/test_cells.py."""

import numpy as np
import pytest
from conftest import haar_unitary

import photocomp as pc
from photocomp.calibration.cells import Cells, cell_moves, cell_responses
from photocomp.hardware.instrument import FaultyInstrument


@pytest.fixture(scope="module")
def case():
    prog = pc.compile(np.random.default_rng(2).normal(size=(8, 8)), "crossbar-8")
    chip = pc.fabricate("crossbar-8", seed=3)
    local = pc.calibrate(prog, chip, "local", progress=False).report.summary
    return prog, chip, local


def test_responses_are_recovered_from_any_number_of_probes():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
    b = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
    for probes in (3, 5):
        steps = 2 * np.pi * np.arange(probes) / probes + 0.3
        reads = a[None] + b[None] * np.exp(1j * steps)[:, None, None]
        got_a, got_b = cell_responses(steps, reads)
        np.testing.assert_allclose(got_a, a, atol=1e-12, rtol=0)
        np.testing.assert_allclose(got_b, b, atol=1e-12, rtol=0)


def test_moves_give_every_reachable_cell_the_programs_entry_at_one_real_scale():
    rng = np.random.default_rng(1)
    b = (1.0 + rng.random((5, 5))) * np.exp(2j * np.pi * rng.random((5, 5)))
    # |A| near |B|: the amplitude spans [||B| - |A||, |B| + |A|], its floor the couplers' extinction
    a = -b * (0.95 + 0.05 * rng.random((5, 5))) * np.exp(0.1j * rng.normal(size=(5, 5)))
    want = rng.normal(size=(5, 5)) + 1j * rng.normal(size=(5, 5))
    want[0, 0] = 1e-4  # below every cell's floor: clipped
    d, e, clipped = cell_moves(a, b, want)
    m = np.exp(1j * e) * (a + b * np.exp(1j * d))
    ratio = (m / want)[~clipped]
    assert clipped[0, 0] and clipped.sum() == 1
    np.testing.assert_allclose(ratio.imag, 0.0, atol=1e-12)
    np.testing.assert_allclose(ratio.real, ratio.real[0], rtol=1e-12)  # one scale c for the tile
    assert ratio.real[0] > 0
    other = np.mod(-2 * (np.angle(b) - np.angle(a)) - d + np.pi, 2 * np.pi) - np.pi  # the other root
    assert np.all(np.abs(d) <= np.abs(other) + 1e-12)  # the root nearest the present phase


def test_with_exact_heater_estimates_it_is_the_known_chip_correction(case):
    """Without noise, and with the chip's own heater offsets and efficiencies, the measured responses are the
    chip's, so the cells land where the closed-form local correction (the chip's errors known) puts them."""
    prog, chip, local = case
    heaters = (np.asarray(chip.offset), np.asarray(chip.efficiency))
    res = Cells().run(prog, pc.BlackBoxChip(chip, noise=False), heaters=heaters)
    err = pc.error(res.to_program(prog, chip), chip)["matrix_error"]
    assert err == pytest.approx(local["error_after"], rel=1e-6)  # measured: 0.0077475 both
    assert res.error_measured == pytest.approx(err, rel=1e-6)  # noise-free phase stepping is exact


def test_through_a_noisy_black_box_it_comes_near_the_known_chip_correction(case):
    prog, chip, local = case
    res = Cells(shots=100).run(prog, pc.BlackBoxChip(chip, seed=4, shots=100))
    err = pc.error(res.to_program(prog, chip), chip)["matrix_error"]
    assert local["error_before"] > 0.1
    assert err <= 2.5 * local["error_after"]  # measured: 0.0165 against 0.0077 (the characterised heaters' errors)
    assert res.kept == "calibrated" and res.rounds_run == 1 and len(res.history) == 1
    assert res.readings < 20_000 and res.configurations < 1_200  # measured: 16,288 and 1,092 (characterisation 1,088)
    assert res.chip_time_s == pytest.approx(res.configurations * chip.target.heater_tau_us * 1e-6
                                            + res.readings / (chip.target.clock_ghz * 1e9), rel=1e-9)
    again = Cells(shots=100).run(prog, pc.BlackBoxChip(chip, seed=4, shots=100))
    np.testing.assert_array_equal(res.drives_mw, again.drives_mw)


def test_a_program_of_several_tiles(case):
    _, chip, _ = case
    prog = pc.compile(np.random.default_rng(5).normal(size=(12, 12)), "crossbar-8")
    assert prog.n_tiles == 4
    local = pc.calibrate(prog, chip, "local", progress=False).report.summary
    res = Cells(shots=1000).run(prog, pc.BlackBoxChip(chip, seed=4, shots=1000))
    assert res.drives_mw.shape == (4, chip.n_heaters)
    err = pc.error(res.to_program(prog, chip), chip)["matrix_error"]
    assert err <= 1.2 * local["error_after"]  # measured: 0.0939 against 0.0923 (three zero-padded tiles)


def test_faults_are_survived_and_never_make_it_worse(case):
    prog, chip, _ = case
    faulty = FaultyInstrument(pc.BlackBoxChip(chip, seed=0, shots=100), nan_rate=0.2, burst_drop_rate=0.1, seed=1)
    res = Cells(shots=100).run(prog, faulty)
    assert res.faults["nan"] > 0 and res.faults["dropped"] > 0 and res.retries > 0
    assert res.error_measured <= res.error_start_measured


@pytest.mark.parametrize("kwargs, err, match", [
    ({"rounds": 0}, pc.InvalidInputError, r"Cells.rounds must be an integer in \[1, inf\]; got 0"),
    ({"probes": 2}, pc.InvalidInputError, r"Cells.probes must be an integer in \[3, inf\]; got 2"),
    ({"shots": 2.5}, pc.InvalidTypeError, "Cells.shots must be an integer; got float"),
    ({"retries": -1}, pc.InvalidInputError, r"Cells.retries must be an integer in \[0, inf\]; got -1"),
])
def test_settings_are_checked(kwargs, err, match):
    with pytest.raises(err, match=match):
        Cells(**kwargs)


def test_run_refuses_what_it_cannot_do(case):
    prog, chip, _ = case
    mesh = pc.compile(haar_unitary(4, np.random.default_rng(0)), "clements-4")
    box = pc.BlackBoxChip(pc.fabricate("clements-4", 1, circuit="unitary"))
    with pytest.raises(pc.MismatchError, match="Cells reads a crossbar's cells.*unitary program on 'clements-4'.*"
                                               "'nullify', 'selfconfig', 'insitu' or 'twin'"):
        Cells().run(mesh, box)
    with pytest.raises(pc.InvalidTypeError, match="prog must be a photocomp.Program"):
        Cells().run(np.eye(8), pc.BlackBoxChip(chip))
    with pytest.raises(pc.MismatchError):
        Cells().run(prog, box)  # an instrument of another target
    assert box.measurements == 0


def test_calibrate_runs_it_by_name_and_object(case):
    prog, chip, _ = case
    by_name = pc.calibrate(prog, chip, "cells", shots=100, progress=False)
    by_object = pc.calibrate(prog, chip, pc.Cells(shots=100), progress=False)
    np.testing.assert_allclose(by_name.matrix(), by_object.matrix(), atol=1e-12, rtol=0)
    s = by_name.report.summary
    assert s["method"] == "cells" and s["rounds_run"] == 1
    assert s["error_after"] < 0.25 * s["error_before"]
    mesh = pc.compile(haar_unitary(4, np.random.default_rng(0)), "clements-4")
    with pytest.raises(pc.MismatchError, match="'selfconfig', 'insitu' or 'twin'"):
        pc.calibrate(mesh, pc.fabricate("clements-4", 1, circuit="unitary"), "cells", progress=False)
    reck = pc.compile(haar_unitary(4, np.random.default_rng(0)), "reck-4")
    with pytest.raises(pc.MismatchError, match="'selfconfig', 'diagonalize', 'insitu' or 'twin'"):
        pc.calibrate(reck, pc.fabricate("reck-4", 1, circuit="unitary"), "cells", progress=False)
