"""Cost model (photocomp.analysis.cost, Program.cost) against hand computations, and the report CLI."""

import dataclasses
import functools
import json
import math
import types

import jax
import numpy as np
import pytest
from conftest import BOUND, random_matrix
from conftest import run_cli as _run

import photocomp as pc
from photocomp.analysis.cost import GROUP_INDEX, SPEED_OF_LIGHT_M_S, Cost
from photocomp.core.ir import CompileReport, PhaseMap, TileGrid
from photocomp.core.phases import MeshPhases

EXACT = "tile | svd | {mesh} | canonicalize | lower"
REL = BOUND["recomputed"]


@functools.cache
def _compile(shape, target, pipeline=None, seed=5):
    w = random_matrix(np.random.default_rng(seed), shape, "real")
    return pc.compile(w, target=target, pipeline=pipeline)


@functools.cache
def _calibrated():
    prog = _compile((4, 4), "clements-4")
    chip = pc.fabricate("clements-4", seed=3)
    return pc.calibrate(prog, chip, method="local", progress=False), chip


def _hand_program(target, matrix_error=0.01):
    """One tile of all-zero angles and phases, unit gain, on ``target``."""
    k = target.size
    lay = pc.layout(target.mesh, k)
    zeros = MeshPhases(lay, np.zeros((1, lay.n_mzi)), np.zeros((1, lay.n_mzi)), np.zeros((1, k)))
    pm = PhaseMap(TileGrid(k, k, k), zeros, np.zeros((1, k)), zeros, np.ones(1))
    report = CompileReport((), types.MappingProxyType({"matrix_error": matrix_error}))
    return pc.Program(target, pm, report, "hand")


def _worst_loss_dp(layout, t) -> float:
    """Independent worst-path loss: dynamic programming over columns on the layout alone.

    Entering an MZI at its upper input passes its external and internal
    heaters, at its lower input only the internal one (photocomp.analysis.cost).
    """
    mzi, ps = t.mzi_loss_db, t.phase_shifter_loss_db

    def mesh(best):
        best = best.copy()
        pairs, cols = np.asarray(layout.pairs), np.asarray(layout.columns)
        for c in range(layout.depth):
            new = best.copy()
            for n in pairs[cols == c]:
                v = max(best[n] + mzi + 2 * ps, best[n + 1] + mzi + ps)
                new[n] = new[n + 1] = v
            best = new
        return best + ps  # output phase screen

    best = mesh(np.zeros(layout.n_modes))
    best = best + mzi + ps  # attenuator column
    return float(mesh(best).max())


# ---- counts and depth -----------------------------------------------------------------------------


@pytest.mark.parametrize("target, k, mesh_depth", [("clements-4", 4, 4), ("reck-4", 4, 5), ("clements-5", 5, 5)])
def test_counts_and_depth(target, k, mesh_depth):
    mesh = target.split("-")[0]
    prog = _compile((k, k), target, EXACT.format(mesh=mesh))
    c = pc.cost(prog)
    assert c.mzis_per_mesh == k * (k - 1) // 2
    assert c.mzis == 2 * (k * (k - 1) // 2) + k
    assert c.phase_shifters == 4 * (k * (k - 1) // 2) + 3 * k
    assert c.phase_shifters == pc.fabricate(target, seed=0).n_heaters  # the chip model's heater count
    assert c.depth == 2 * mesh_depth + 1
    assert (c.mzi_settings, c.phase_settings) == (c.mzis * c.n_tiles, c.phase_shifters * c.n_tiles)


def test_counts_multiply_with_tiles():
    prog = _compile((6, 5), "clements-4", EXACT.format(mesh="clements"))
    c = pc.cost(prog)
    assert c.n_tiles == 4 and c.shape == (6, 5)
    assert c.mzi_settings == 4 * 16 == prog.n_mzi
    assert c.phase_settings == 4 * 36


# ---- insertion loss ----------------------------------------------------------------------------------


def test_loss_two_modes_by_hand():
    # in0 -> V MZI (upper input: MZI + 2 shifters) -> V output shifter -> attenuator (MZI + 1 shifter)
    # -> U MZI (upper input) -> U output shifter: 3 MZIs, 7 shifters
    t = pc.get_target("clements-2")
    c = pc.cost(_hand_program(t))
    assert (c.path_mzis, c.path_phase_shifters) == (3, 7)
    assert c.insertion_loss_db == pytest.approx(3 * 0.2 + 7 * 0.23, rel=1e-12)


@pytest.mark.parametrize("target", ["clements-4", "clements-5", "reck-4", "reck-5"])
def test_loss_matches_independent_dynamic_programming(target):
    t = pc.get_target(target)
    c = pc.cost(_hand_program(t))
    assert c.insertion_loss_db == pytest.approx(_worst_loss_dp(pc.layout(t.mesh, t.size), t), rel=1e-12)
    assert c.insertion_loss_db == pytest.approx(c.path_mzis * t.mzi_loss_db + c.path_phase_shifters * t.phase_shifter_loss_db,
                                                rel=1e-12)
    # bounds: every path meets at most one MZI per column; at least one shifter per MZI entered plus the screens
    assert c.path_mzis <= c.depth
    assert c.path_mzis + 2 <= c.path_phase_shifters <= 2 * c.path_mzis + 2


def test_loss_counts_only_mzis_or_only_shifters():
    base = pc.get_target("clements-4")
    mzi_only = dataclasses.replace(base, name="m-4", mzi_loss_db=1.0, phase_shifter_loss_db=0.0)
    # a Clements mesh has a path through every column: 4 + 1 + 4 MZIs
    assert pc.cost(_hand_program(mzi_only)).insertion_loss_db == pytest.approx(9.0, rel=1e-12)
    shifter_only = dataclasses.replace(base, name="s-4", mzi_loss_db=0.0, phase_shifter_loss_db=1.0)
    c = pc.cost(_hand_program(shifter_only))
    assert c.insertion_loss_db == pytest.approx(_worst_loss_dp(pc.layout("clements", 4), shifter_only), rel=1e-12)


# ---- heater power --------------------------------------------------------------------------------------


def test_power_two_modes_by_hand():
    # zero angles: internal heaters at 2*0 + pi, the pushed screens put pi on one output of each mesh
    # and on the attenuators; V's outputs take the attenuator phase sigma + pi off again:
    # heaters [V int, V ext, V out 0/1, att 0/1, U int, U ext, U out 0/1] = [pi, 0, 0, pi, pi, pi, pi, 0, pi, 0]
    t = pc.Target(name="flat-2", mesh="clements", size=2, crosstalk=0.0)
    c = pc.cost(_hand_program(t))
    assert c.heater_power_mw == pytest.approx(6 * t.heater_p_pi_mw, rel=1e-12)
    assert c.heater_power_max_mw == c.heater_power_mw
    assert "nominal chip" in c.power_source


def test_power_without_crosstalk_is_phase_times_p_pi_over_pi():
    t = pc.Target(name="flat-4", mesh="clements", size=4, crosstalk=0.0)
    prog = pc.compile(random_matrix(np.random.default_rng(8), (6, 7), "real"), target=t)
    from photocomp.hardware.chipsim import flatten_heaters, settings_from_program

    with jax.enable_x64(True):
        phases = np.mod(np.asarray(flatten_heaters(settings_from_program(prog.phase_map))), 2 * np.pi)
    per_tile = phases.sum(axis=1) * t.heater_p_pi_mw / np.pi
    c = pc.cost(prog)
    assert c.heater_power_mw == pytest.approx(per_tile.mean(), rel=REL)
    assert c.heater_power_max_mw == pytest.approx(per_tile.max(), rel=REL)


def test_power_with_crosstalk_realizes_the_settings():
    prog = _compile((4, 4), "clements-4")
    from photocomp.analysis.cost import heater_powers
    from photocomp.hardware.chip import nominal_chip
    from photocomp.hardware.chipsim import flatten_heaters, realized_phases, settings_from_program

    power, _ = heater_powers(prog)
    chip = nominal_chip(prog.target)
    assert len(np.asarray(chip.xt_rows)) > 0
    with jax.enable_x64(True):
        want = np.asarray(flatten_heaters(settings_from_program(prog.phase_map)))
        got = np.asarray(realized_phases(chip, power))
    np.testing.assert_allclose(np.angle(np.exp(1j * (got - want))), 0.0, atol=1e-9, rtol=0)
    assert pc.cost(prog).heater_power_mw == pytest.approx(power.sum(axis=1).mean(), rel=REL)


def test_power_of_calibrated_program_is_its_drive_map():
    cal, _ = _calibrated()
    drives = cal.drives()
    c = pc.cost(cal)
    assert c.heater_power_mw == pytest.approx(drives.sum(axis=1).mean(), rel=REL)
    assert c.heater_power_max_mw == pytest.approx(drives.sum(axis=1).max(), rel=REL)
    assert c.power_source == "drive map of chip seed 3"


# ---- timing and throughput ----------------------------------------------------------------------------


def test_latency_by_hand():
    # clements-4: ports at x = -1 and x = 11 (4 + 1 + 1 + 4 + 1 columns): 12 column pitches of 300 um
    t = pc.get_target("clements-4")
    c = pc.cost(_compile((6, 5), "clements-4"), batch=7)
    assert c.optical_path_mm == pytest.approx(12 * 0.3, rel=1e-12)
    optical_ns = 3.6e-3 * GROUP_INDEX / SPEED_OF_LIGHT_M_S * 1e9
    assert c.optical_latency_ns == pytest.approx(optical_ns, rel=1e-12)
    assert c.optical_latency_cycles == 1  # 0.05 ns at 1 GHz
    settle_ns = 3.0e3 * 13 * math.log(2)  # tau = 3 us, 12-bit DAC: half a step is 2^-13
    assert c.settle_ns == pytest.approx(settle_ns, rel=1e-12)
    assert c.settle_cycles == math.ceil(settle_ns)
    assert c.latency_cycles == 4 * (math.ceil(settle_ns) + 7 + 1)
    assert c.latency_ns == pytest.approx(c.latency_cycles / t.clock_ghz, rel=1e-12)
    assert c.throughput_macs == pytest.approx(6 * 5 * 7 / (c.latency_ns * 1e-9), rel=1e-12)
    assert c.peak_macs == pytest.approx(16 * 1e9, rel=1e-12)
    assert c.compute_duty == pytest.approx(4 * 7 / c.latency_cycles, rel=1e-12)
    assert c.weight_refresh_hz == pytest.approx(4 / (c.latency_ns * 1e-9), rel=1e-12)
    assert c.heater_energy_per_mac_pj == pytest.approx(c.heater_power_mw * 1e-3 / c.throughput_macs * 1e12, rel=1e-12)


def test_fast_clock_needs_several_optical_cycles():
    t = dataclasses.replace(pc.get_target("clements-4"), name="fast-4", clock_ghz=100.0, heater_tau_us=0.001)
    c = pc.cost(_hand_program(t), group_index=4.0)
    optical_ns = 3.6e-3 * 4.0 / SPEED_OF_LIGHT_M_S * 1e9  # 0.048 ns -> 4.8 cycles at 100 GHz
    assert c.optical_latency_cycles == math.ceil(optical_ns * 100.0) == 5
    assert c.settle_cycles == math.ceil(1.0 * 13 * math.log(2) * 100.0)
    assert c.latency_cycles == c.settle_cycles + 1 + 5


def test_more_batch_more_throughput_same_hardware():
    prog = _compile((6, 5), "clements-4")
    a, b = pc.cost(prog, batch=1), pc.cost(prog, batch=1000)
    assert b.throughput_macs > a.throughput_macs and b.compute_duty > a.compute_duty
    assert b.equivalent_ops > a.equivalent_ops
    assert (a.mzis, a.insertion_loss_db, a.heater_power_mw) == (b.mzis, b.insertion_loss_db, b.heater_power_mw)


# ---- precision and equivalent compute ------------------------------------------------------------------


def test_effective_bits_from_the_compile_report():
    prog = _compile((6, 5), "clements-4")  # the preset pipeline quantizes to the target's 12-bit DACs
    c = pc.cost(prog)
    err = prog.report.summary["matrix_error"]
    assert c.matrix_error == err and "compile report" in c.error_source
    assert c.effective_bits == pytest.approx(math.log2(1 / err), rel=1e-12)
    assert c.output_bits == pytest.approx(min(c.effective_bits, 10), rel=1e-12)
    assert c.equivalent_ops == pytest.approx(2 * c.peak_macs * c.compute_duty * c.output_bits / 8, rel=1e-12)


def test_exact_program_is_capped_by_float64_and_the_adc():
    c = pc.cost(_compile((4, 4), "clements-4", EXACT.format(mesh="clements")))
    assert 40 < c.effective_bits <= 52
    assert c.output_bits == 10 == c.adc_bits


def test_effective_bits_of_a_calibrated_program_come_from_its_chip():
    cal, chip = _calibrated()
    c = pc.cost(cal)
    err = pc.error(cal, chip)["matrix_error"]
    assert c.matrix_error == pytest.approx(err, rel=REL)
    assert c.effective_bits == pytest.approx(math.log2(1 / err), rel=REL)
    assert c.error_source == "calibrated, on chip seed 3"


def test_large_error_reads_out_zero_bits():
    c = pc.cost(_hand_program(pc.get_target("clements-2"), matrix_error=2.0))
    assert c.effective_bits == pytest.approx(-1.0) and c.output_bits == 0.0 and c.equivalent_ops == 0.0


# ---- record, table, errors ----------------------------------------------------------------------------


def test_record_dict_and_table():
    c = pc.cost(_compile((6, 5), "clements-4"))
    assert isinstance(c, Cost)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.mzis = 3
    d = c.as_dict()
    assert list(d) == [f.name for f in dataclasses.fields(Cost)]
    assert d["shape"] == [6, 5] and json.loads(json.dumps(d)) == d
    text = c.table()
    for unit in (" dB worst path", "W mean per tile", " ns = ", " cycles", "MAC/s", " bits", "OPS"):
        assert unit in text, unit
    assert f"{c.insertion_loss_db:.2f} dB" in text and f"{c.latency_cycles} cycles" in text
    assert str(c) == text


def test_bad_input():
    prog = _compile((6, 5), "clements-4")
    with pytest.raises(pc.InvalidInputError, match=r"batch must be an integer in \[1, inf\]; got 0"):
        pc.cost(prog, batch=0)
    with pytest.raises(pc.InvalidTypeError, match="batch must be an integer; got float 1.5"):
        pc.cost(prog, batch=1.5)
    with pytest.raises(pc.InvalidInputError, match="group_index must be > 0.0; got -1.0"):
        pc.cost(prog, group_index=-1.0)
    with pytest.raises(pc.InvalidTypeError, match="prog must be a photocomp.Program"):
        pc.cost(np.eye(2))
    hand = _hand_program(pc.get_target("clements-2"))
    bare = pc.Program(hand.target, hand.phase_map, CompileReport((), types.MappingProxyType({})), "hand")
    with pytest.raises(pc.InvalidInputError, match="matrix_error"):
        pc.cost(bare)


# ---- CLI -------------------------------------------------------------------------------------------------




def test_cli_report(capsys, tmp_path):
    prog = _compile((6, 5), "clements-4")
    f = prog.save(tmp_path / "w.phases.npz")
    code, out, err = _run(capsys, "report", str(f))
    assert code == 0 and err == ""
    assert out.strip() == pc.cost(prog).table()
    code, out, _ = _run(capsys, "report", str(f), "--batch", "64", "--json")
    assert code == 0
    assert json.loads(out) == pc.cost(prog, batch=64).as_dict()


def test_cli_report_calibrated(capsys, tmp_path):
    cal, _ = _calibrated()
    f = cal.save(tmp_path / "w.cal.npz")
    code, out, _ = _run(capsys, "report", str(f))
    assert code == 0 and "drive map of chip seed 3" in out and "calibrated, on chip seed 3" in out


@pytest.mark.parametrize("argv, match", [
    (["report", "{t}/missing.npz"], "must be an existing file"),
    (["report", "{f}", "--batch", "0"], "argument --batch: expected an integer >= 1; got 0"),
    (["report", "{f}", "--group-index", "0"], "argument --group-index: expected a finite number > 0; got '0'"),
])
def test_cli_report_bad_input(capsys, tmp_path, argv, match):
    f = _compile((2, 2), "clements-2").save(tmp_path / "p.phases.npz")
    code, out, err = _run(capsys, *[a.format(t=tmp_path, f=f) for a in argv])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("photocomp: error: ") and match in err
