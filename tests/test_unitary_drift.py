"""Thermal drift of unitary programs: the one-mesh die, studies and compensators on clements-8."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import photocomp as pc
from photocomp.analysis.plot import figure
from photocomp.core.ir import TileGrid
from photocomp.drift import thermal
from photocomp.hardware.chip import heater_positions
from photocomp.hardware.chipsim import Settings, chip_tile_matrices, flatten_heaters, unflatten_heaters

LAMBDA_M = 1550e-9
DN_DT = 1.8e-4
STRESS = pc.drift.ThermalProcess(ambient_k_per_hour=4.0, gradient_k=0.3, arm_imbalance_um=100.0)


def si_phase(length_m, delta_t):
    return 2 * np.pi * length_m * DN_DT * delta_t / LAMBDA_M


@pytest.fixture(scope="module")
def small():
    """A unitary clements-8 chip, a Haar unitary program and its local calibration."""
    chip = pc.fabricate("clements-8", seed=11, circuit="unitary")
    prog = pc.compile(pc.haar_unitary(8, np.random.default_rng(5)), target="clements-8", progress=False)
    assert prog.circuit == "unitary"
    cal = pc.calibrate(prog, chip, method="local", progress=False)
    return chip, prog, cal


def zero_imbalance(chip):
    return {k: np.zeros_like(v) for k, v in thermal.sample_imbalance(chip, 1.0).items()}


_tile_matrices = jax.jit(chip_tile_matrices)


def tile_matrix(chip, settings, shift):
    with jax.enable_x64(True):
        flat = np.asarray(flatten_heaters(settings)) + shift
        return np.asarray(_tile_matrices(chip, unflatten_heaters(settings, flat, chip.target)))[0]


# ---- the die --------------------------------------------------------------------------------------------


def test_unitary_die_is_the_one_mesh():
    chip = pc.fabricate("clements-8", seed=4, circuit="unitary")
    die = pc.drift.thermal_die(chip, pc.drift.ThermalProcess())
    assert die.circuit == "unitary"
    assert die.phase_per_k.shape == (chip.n_heaters, 3) == (64, 3)
    np.testing.assert_array_equal(die.heater_xy, heater_positions(chip.target, "unitary"))
    # the one mesh has the imbalance of the svd chip's U mesh of the same seed, as it has its components
    svd = thermal.sample_imbalance(pc.fabricate("clements-8", seed=4), 30.0)
    assert set(die.imbalance_um) == {"u"} and np.array_equal(die.imbalance_um["u"], svd["u"])
    # the die is the mesh's: about half as long as the svd die, as tall
    svd_die = pc.drift.thermal_die(pc.fabricate("clements-8", seed=4), pc.drift.ThermalProcess())
    assert die.extent[0] < 0.6 * svd_die.extent[0] and die.extent[1] == svd_die.extent[1]


def test_imbalance_phase_of_one_mzi_under_uniform_heating():
    chip = pc.fabricate("clements-8", seed=11, circuit="unitary")
    t = chip.target
    imb = zero_imbalance(chip)
    imb["u"][2] = 10.0  # um
    phi = thermal.thermal_phase_map(t, imb, lambda xy: np.ones((len(xy), 1)), "unitary")[:, 0]
    sl = chip.group_slices()
    assert set(sl) == {"u_int", "u_ext", "u_out"}
    u_int = phi[sl["u_int"]]
    assert u_int[2] == pytest.approx(si_phase(10e-6, 1.0), rel=1e-12)
    assert np.allclose(np.delete(u_int, 2), 0.0, atol=1e-15)
    assert np.allclose(phi[sl["u_ext"]], 0.0, atol=1e-12)
    # every mode runs one column pitch of waveguide per column, and one more through its output shifter
    per_column = si_phase(t.column_pitch_um * 1e-6, 1.0)
    assert np.allclose(phi[sl["u_out"]], (chip.layout.depth + 1) * per_column, rtol=1e-12, atol=0)


def test_uniform_heating_moves_the_one_mesh_like_the_svd_chips_u_mesh():
    t = pc.get_target("clements-8")
    svd, uni = pc.fabricate(t, seed=2), pc.fabricate(t, seed=2, circuit="unitary")
    ones = lambda xy: np.ones((len(xy), 1))  # noqa: E731
    imb_svd = thermal.sample_imbalance(svd, 30.0)
    a = thermal.thermal_phase_map(t, imb_svd, ones)[:, 0]
    b = thermal.thermal_phase_map(t, {"u": imb_svd["u"]}, ones, "unitary")[:, 0]
    s_svd, s_uni = svd.group_slices(), uni.group_slices()
    for g in ("u_int", "u_ext"):
        np.testing.assert_allclose(b[s_uni[g]], a[s_svd[g]], rtol=1e-12, atol=1e-15)
    # the outputs differ by the common phase of the V mesh and the attenuators only
    d = a[s_svd["u_out"]] - b[s_uni["u_out"]]
    assert np.allclose(d, d[0], rtol=0, atol=1e-12) and d[0] > 0


def test_balanced_one_mesh_under_uniform_heating_sees_only_a_global_phase():
    chip = pc.fabricate("clements-8", seed=3, circuit="unitary")
    k, m = chip.target.size, chip.layout.n_mzi
    rng = np.random.default_rng(0)
    cal = Settings.unitary(TileGrid(k, k, k), chip.layout, rng.uniform(0, 2 * np.pi, (1, m)),
                           rng.uniform(0, 2 * np.pi, (1, m)), rng.uniform(0, 2 * np.pi, (1, k)), np.ones(1))
    balanced = pc.drift.thermal_die(chip, pc.drift.ThermalProcess(), imbalance_um=zero_imbalance(chip))
    m0 = tile_matrix(chip, cal, 0.0)
    for temps in ([0.7, 0.0, 0.0], [0.0, 0.3, 0.0]):
        ratio = tile_matrix(chip, cal, balanced.phase_per_k @ np.array(temps)) / m0
        assert np.allclose(ratio, ratio[0, 0], atol=1e-12), temps
        assert abs(np.angle(ratio[0, 0])) > 1e-3
    m1 = tile_matrix(chip, cal, balanced.phase_per_k @ np.array([0.0, 0.0, 0.3]))  # across the modes
    g = np.vdot(m1, m0) / np.vdot(m1, m1)
    assert np.linalg.norm(m0 - g * m1) / np.linalg.norm(m0) > 1e-3


def test_unitary_die_checks_the_imbalance_keys():
    chip = pc.fabricate("clements-8", seed=3, circuit="unitary")
    proc = pc.drift.ThermalProcess()
    good = thermal.sample_imbalance(chip, 1.0)
    with pytest.raises(pc.InvalidInputError, match=r"imbalance_um must be a dict with keys \['u'\]"):
        pc.drift.thermal_die(chip, proc, imbalance_um={**good, "v": good["u"]})
    with pytest.raises(pc.InvalidInputError, match=r"imbalance_um\['u'\] must be finite with shape \(28,\)"):
        pc.drift.thermal_die(chip, proc, imbalance_um={"u": np.ones(3)})
    ones = lambda xy: np.ones((len(xy), 1))  # noqa: E731
    with pytest.raises(pc.InvalidInputError, match=r"imbalance_um must be a dict with keys \['u'\] for the unitary "
                                                   r"circuit; got \['att', 'u', 'v'\]"):
        thermal.thermal_phase_map(chip.target, thermal.sample_imbalance(pc.fabricate("clements-8"), 1.0), ones,
                                  "unitary")
    with pytest.raises(pc.InvalidInputError, match=r"imbalance_um must be a dict with keys \['att', 'u', 'v'\] for "
                                                   r"the svd circuit; got \['u'\]"):
        thermal.thermal_phase_map(chip.target, good, ones)
    with pytest.raises(pc.InvalidInputError, match="circuit must be one of"):
        thermal.thermal_phase_map(chip.target, good, ones, "mzi")


def test_drifted_unitary_chip(small):
    chip, _, _ = small
    shift = np.linspace(0.0, 1.0, chip.n_heaters)
    d = pc.drift.drifted_chip(chip, shift)
    assert d.circuit == "unitary"
    np.testing.assert_allclose(d.offset, np.asarray(chip.offset) + shift, rtol=0, atol=1e-15)
    with pytest.raises(pc.InvalidInputError, match=r"phase_shift must be finite with shape \(64,\)"):
        pc.drift.drifted_chip(chip, np.zeros(136))


# ---- studies ----------------------------------------------------------------------------------------------


def test_study_runs_with_finite_errors(small, tmp_path):
    chip, _, cal = small
    a = pc.drift.study(cal, chip, STRESS, seed=1, hours=0.02, dt_s=4.0, compensators=["none", "feedforward"],
                       progress=False, runs=2)
    assert a.times_s.shape == (19,) and a.temperature.shape == (2, 19, 3)
    assert a.die.circuit == "unitary" and a.die.phase_per_k.shape == (64, 3)
    for name in ("none", "feedforward"):
        assert a.errors[name].shape == (2, 19)
        assert np.all(np.isfinite(a.errors[name]))
        assert np.all(a.errors[name][:, 0] == a.fresh_error)
    assert not np.array_equal(a.errors["none"][0], a.errors["none"][1])  # runs differ
    assert a.fresh_error <= pc.error(cal, chip)["matrix_error"] + 1e-12
    assert a.info["circuit"] == "unitary" and "clements-8 chip seed 11 (unitary circuit), 2 run(s)" in a.table()
    # the figure, with the one mesh's die field
    fig = pc.plot(a, tmp_path / "drift.png", what="drift")
    assert open(fig, "rb").read().startswith(b"\x89PNG")
    assert "(unitary circuit)" in figure(a, "drift").get_suptitle()


@pytest.mark.slow  # tests/test_drift.py checks the same compensators on an svd chip in the default suite
def test_compensators_reduce_the_error(small):
    chip, _, cal = small
    comps = ["none", "feedforward", pc.drift.ClosedLoop(interval_s=10.0),
             pc.drift.Recalibrate(interval_s=60.0, method="local")]
    s = pc.drift.study(cal, chip, STRESS, hours=0.05, dt_s=2.0, compensators=comps, seed=0, progress=False)
    summ = s.summary()
    excess = {name: v["mean_error"] - s.fresh_error for name, v in summ.items()}
    assert all(np.all(np.isfinite(e)) for e in s.errors.values())
    assert excess["none"] > 0.5 * s.fresh_error  # the drift is visible
    assert excess["feedforward"] < 0.2 * excess["none"]
    assert excess["closed-loop"] < 0.2 * excess["none"]
    assert excess["recalibrate"] < 0.5 * excess["none"]
    updates = len(range(5, s.times_s.size - 1, 5))
    assert summ["closed-loop"]["measurements"] == updates * 2 * 8 * pc.drift.ClosedLoop().shots
    assert summ["feedforward"]["sensor_reads"] == 4 * (s.times_s.size - 1)
    assert summ["recalibrate"]["measurements"] == 2 * 8 * chip.n_heaters  # the one mesh's 64 heaters
    assert s.events == ()


def test_feedforward_with_perfect_knowledge_cancels_the_drift(small):
    chip, _, cal = small
    ff = pc.drift.FeedForward(sensors=4, sensor_noise_k=0.0, model_error=0.0)
    s = pc.drift.study(cal, chip, STRESS, hours=0.05, dt_s=1.0, compensators=["none", ff], progress=False)
    assert np.max(s.errors["feedforward"]) < s.fresh_error + 0.02 * (np.max(s.errors["none"]) - s.fresh_error)


def test_study_refuses_a_chip_of_another_circuit(small):
    chip, prog, cal = small
    with pytest.raises(pc.MismatchError, match="chip must be fabricated for the calibrated program's unitary circuit"):
        pc.drift.study(cal, pc.fabricate("clements-8", seed=11), hours=0.01, progress=False)
    with pytest.raises(pc.MismatchError, match="calibrated for"):
        pc.drift.study(cal, pc.fabricate("clements-8", seed=12, circuit="unitary"), hours=0.01, progress=False)
