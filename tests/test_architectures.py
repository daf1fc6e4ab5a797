"""Mesh architectures as targets: ``mzi3-N`` (three-splitter MZI cells) and ``mzix-N`` (MZI + crossing cells)
through compile, chip model, reachability, local / model calibration, drift, cost and save/load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import assert_same_fabrication, lossless_nominal

import photocomp as pc
from photocomp.calibration.engine import (
    _bar,
    _cell_core,
    _cell_split,
    _split_angle,
    _theta_bounds,
    error,
    ideal_tiles,
    local_settings,
    reachability,
)
from photocomp.core.cell import MZI, MZI3
from photocomp.core.errors import InvalidInputError, UnknownNameError
from photocomp.hardware.chip import heater_slices
from photocomp.hardware.chipsim import chip_tile_matrices, settings_from_program, trim_settings
from photocomp.targets import mzi3, pace_64

FAMILIES = ("clements", "mzi3", "mzix")


def coupler_only(name: str, sigma: float = 0.06) -> pc.Target:
    """The target with coupler errors only (no losses): what per-cell correction can fully undo."""
    return dataclasses.replace(pc.get_target(name), coupler_sigma_rad=sigma, mzi_loss_db=0.0, mzi_loss_sigma_db=0.0,
                               crossing_loss_db=0.0)


def test_targets_resolve_with_their_cells():
    for fam, cell in (("mzi3", "mzi3"), ("mzix", "mzix"), ("clements", "mzi")):
        t = pc.get_target(f"{fam}-6")
        assert (t.mesh, t.size, t.cell, t.layout.cell.name) == ("clements", 6, cell, cell)
        assert t.depth == 6 and t.layout.n_mzi == 15
    # components: every cell's components in two meshes, 4 per attenuator MZI, one output shifter per mode
    assert pc.get_target("mzi3-6").components == 2 * 6 * 15 + 4 * 6 + 6
    assert pc.get_target("clements-6").components == 2 * 4 * 15 + 4 * 6 + 6
    assert "mzi3-<N>" in pc.available_targets() and "mzix-<N>" in pc.available_targets()


def test_target_cell_is_checked_and_serialised_only_when_not_the_mzi():
    with pytest.raises(UnknownNameError, match=r"Target.cell must be one of .*got 'mzi4'"):
        dataclasses.replace(pc.get_target("clements-4"), cell="mzi4")
    with pytest.raises(InvalidInputError, match="physics overrides"):
        mzi3(4, cell="mzi")
    assert "cell" not in pc.get_target("clements-4").to_dict()
    d = pc.get_target("mzi3-4").to_dict()
    assert d["cell"] == "mzi3" and pc.Target.from_dict(d) == pc.get_target("mzi3-4")


def test_chips_of_every_cell_share_the_mzi_chips_fabrication():
    a, b = pc.fabricate("clements-6", seed=4), pc.fabricate("mzi3-6", seed=4)
    assert_same_fabrication(a, b)
    assert set(b.cell_errors) == {"v", "u"} and set(b.cell_errors["u"]) == {"coupler_mid"}
    assert np.std(b.cell_errors["u"]["coupler_mid"]) > 0
    sl = heater_slices(b.target)
    assert list(sl)[-2:] == ["v_trim", "u_trim"] and b.n_heaters == a.n_heaters + 2 * 15
    u = pc.fabricate("mzi3-6", seed=4, circuit="unitary")
    assert u.n_heaters == 3 * 15 + 6 and set(u.cell_errors) == {"u"}
    np.testing.assert_array_equal(u.cell_errors["u"]["coupler_mid"], b.cell_errors["u"]["coupler_mid"])


def _shuffle_crossings(lay) -> np.ndarray:
    """Crossings ``(depth, N)`` of each mode on a planar chip, by brute force: the waveguides whose order
    against it the column's side-by-side arrangement of its pairs reverses."""
    n = lay.n_modes
    out = np.zeros((lay.depth, n), int)
    for c in range(lay.depth):
        order = np.ravel(np.column_stack([lay.pair_array[lay.column_array == c],
                                          lay.lower_array[lay.column_array == c]]))
        rest = [q for q in range(n) if q not in set(order.tolist())]
        place = np.empty(n, int)
        place[np.concatenate([order, rest]).astype(int)] = np.arange(n)
        for q in order:
            out[c, q] = sum((q < r) != (place[q] < place[r]) for r in order if r != q)
    return out


def _reference_tile(chip, s, tile: int = 0) -> np.ndarray:
    """Float64 reference: multiply every cell's Cell.transfer (chip errors, the settings' heaters) in layout
    order, mesh by mesh, with the attenuators and output screens (no gain). Every waveguide crossing loses
    the target's ``crossing_loss_db``: a cell's own crossings, and on a layout of non-adjacent pairs those
    a mode passes on its way into its column's cell and back (counted by :func:`_shuffle_crossings`)."""
    lay = s.layout
    k = lay.n_modes
    cell = lay.cell
    loss = chip.target.crossing_loss_db
    own = 10.0 ** (-loss * sum(type(c).__name__ == "Crossing" for c in cell.components) / 20.0)
    routing = 10.0 ** (-loss * _shuffle_crossings(lay) / 20.0)

    def mesh(stage: str, internal, external, trims):
        m = np.eye(k, dtype=complex)
        errs = {"coupler_in": chip.coupler_in[stage], "coupler_out": chip.coupler_out[stage],
                "loss_db": chip.loss_db[stage], **chip.cell_errors.get(stage, {})}
        for c in range(lay.depth):
            m = np.diag(routing[c]) @ m
            for i in np.flatnonzero(lay.column_array == c):
                a, b = lay.pair_array[i], lay.lower_array[i]
                phases = {"internal": internal, "external": external, **(trims or {})}
                settings = {h: phases[h][i] for h in cell.heaters}
                t = own * cell.transfer(settings, {e: np.asarray(v)[i] for e, v in errs.items() if e in cell.errors})
                step = np.eye(k, dtype=complex)
                step[np.ix_([a, b], [a, b])] = t
                m = step @ m
            m = np.diag(routing[c]) @ m
        return m

    f = lambda a: np.asarray(a, dtype=np.float64)[tile]  # noqa: E731
    u = mesh("u", f(s.u_int), f(s.u_ext), trim_settings(lay, None if s.u_trim is None else f(s.u_trim)))
    out = np.diag(np.exp(1j * f(s.u_out)))
    if s.v_int is None:
        return out @ u
    v = mesh("v", f(s.v_int), f(s.v_ext), trim_settings(lay, None if s.v_trim is None else f(s.v_trim)))
    att = []
    for q in range(k):
        settings = {"internal": f(s.att)[q], "external": 0.0}
        errs = {"coupler_in": chip.coupler_in["att"][q], "coupler_out": chip.coupler_out["att"][q],
                "loss_db": chip.loss_db["att"][q]}
        att.append(MZI.transfer(settings, errs)[0, 0] * np.exp(1j * f(s.v_out)[q]))
    return out @ u @ np.diag(att) @ v


# fitted meshes fitted briefly where a test checks what a chip does with the program, not how close the fit came
BRIEF_FIT = {"butterfly": "butterfly(steps=40)", "fldzhyan": "fldzhyan(restarts=1, steps=40)"}


def _compile(w, name: str, circuit: str):
    """``pc.compile(w, name)`` with the target's default ``circuit`` pipeline, a fitted mesh fitted briefly."""
    t = pc.get_target(name)
    return pc.compile(w, name, t.default_pipeline(circuit).replace(f"| {t.mesh} |", f"| {BRIEF_FIT.get(t.mesh, t.mesh)} |"))


@pytest.mark.parametrize("name", ["mzi3-5", "mzix-4", "butterfly-8", "fldzhyan-4"])
@pytest.mark.parametrize("circuit", ["svd", "unitary"])
def test_chip_simulation_matches_a_float64_loop_over_cell_transfers(name, circuit):
    n = int(name.split("-")[1])
    w = pc.haar_unitary(n, np.random.default_rng(1)) if circuit == "unitary" else np.random.default_rng(2).normal(size=(4, 4))
    prog = _compile(w, name, circuit)
    assert prog.circuit == circuit
    chip = pc.fabricate(name, seed=6, circuit=circuit)
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        s = settings_from_program(prog.ideal_phase_map)
        # random heater phases everywhere (trims included), so every term of the product matters
        s = jax.tree_util.tree_map(lambda a: rng.uniform(0, 2 * np.pi, np.shape(a)), s)
        got = np.asarray(chip_tile_matrices(chip, s, with_gain=False))
    np.testing.assert_allclose(got[0], _reference_tile(chip, s), atol=1e-12)


@pytest.mark.parametrize("name", ["mzi3-6", "mzix-6", "fldzhyan-6"])
def test_ideal_chip_runs_the_program_exactly(name):
    for w, circuit in ((np.random.default_rng(0).normal(size=(6, 5)), "svd"),
                       (pc.haar_unitary(6, np.random.default_rng(2)), "unitary")):
        prog = _compile(w, name, circuit)
        assert error(*lossless_nominal(prog))["matrix_error"] < 1e-12


def test_local_correction_of_three_splitter_cells_undoes_coupler_errors_the_mzi_cannot():
    """Hamerly et al. 2022: with coupler errors only, every three-splitter MZI reaches its setting, so the
    per-cell correction is exact; the MZI mesh of the same fabrication keeps an error."""
    u = pc.haar_unitary(12, np.random.default_rng(0))
    out = {}
    for fam in FAMILIES:
        t = coupler_only(f"{fam}-12")
        prog = pc.compile(u, t)
        chip = pc.fabricate(t, seed=1, circuit="unitary")
        reach = reachability(prog, chip)
        out[fam] = (error(pc.calibrate(prog, chip, "local", progress=False), chip)["matrix_error"], reach)
    assert out["mzi3"][1].fraction == 0.0 and out["mzi3"][1].clip_error < 1e-12
    assert out["mzi3"][0] < 1e-12
    assert out["clements"][1].fraction > 0 and out["clements"][0] > 1e-3
    assert out["mzix"][1].fraction > 0 and out["mzix"][0] > 1e-3


def test_generic_reachability_agrees_with_the_mzi_closed_form():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 0.08, 40), rng.normal(0, 0.08, 40)
    mzi_copy = dataclasses.replace(MZI, name="mzi_copy")  # same device, searched instead of the closed form
    lo, hi = _theta_bounds(a, b)
    lo2, hi2 = _theta_bounds(a, b, mzi_copy)
    np.testing.assert_allclose(lo2, lo, atol=2e-6)
    np.testing.assert_allclose(hi2, hi, atol=2e-6)
    # the trim widens the range: a three-splitter MZI with the same couplers reaches at least as far
    lo3, hi3 = _theta_bounds(a, b, MZI3, {"coupler_mid": rng.normal(0, 0.08, 40)})
    assert np.all(lo3 <= lo + 1e-9) and np.all(hi3 >= hi - 1e-9)


def test_three_splitter_range_and_search_agree_with_brute_force():
    """At sigma = 0.1 rad the searches for a three-splitter cell's splitting range and for a wanted splitting
    once stopped short: the range's ends about 1e-4 of bar power inside the true ones (cells near full cross
    called unreachable that local correction reached), and a few splittings in range missed by 1e-3 rad."""
    rng = np.random.default_rng(11)
    n = 400
    errs = {k: rng.normal(0, 0.1, n) for k in ("coupler_in", "coupler_out", "coupler_mid")}
    lo, hi = _theta_bounds(errs["coupler_in"], errs["coupler_out"], MZI3, {"coupler_mid": errs["coupler_mid"]})
    # brute force on a fine grid of the internal and trim phases, for the first 40 cells
    grid = np.linspace(0, 2 * np.pi, 241, endpoint=False)
    internal, trim = (a.ravel()[None, :] for a in np.meshgrid(grid, grid, indexing="ij"))
    few = {k: v[:40, None] for k, v in errs.items()}
    bar = _bar(_cell_core(MZI3, internal, {"trim": trim}, few))
    assert np.all(np.cos(hi[:40]) ** 2 <= bar.min(axis=1) + 1e-12)  # the range is at least as wide
    assert np.all(np.cos(lo[:40]) ** 2 >= bar.max(axis=1) - 1e-12)
    # wanted splittings anywhere in range, 1e-5 rad from its ends included, are reached to rounding
    theta = np.concatenate([rng.uniform(lo, hi), lo + 1e-5, hi - 1e-5])
    cells = {k: np.tile(v, 3) for k, v in errs.items()}
    split = _cell_split(MZI3, np.cos(theta)[None, :] ** 2, cells)
    got = _split_angle(_cell_core(MZI3, split["internal"], {"trim": split["trim"]}, {k: v[None] for k, v in cells.items()}))
    np.testing.assert_allclose(got[0], theta, atol=1e-10)


def test_local_correction_sets_trims_that_a_loaded_program_keeps(tmp_path):
    w = np.random.default_rng(1).normal(size=(5, 6))
    prog = pc.compile(w, "mzi3-6")
    chip = pc.fabricate("mzi3-6", seed=2)
    s, _ = local_settings(prog, chip, ideal_tiles(prog))
    ideal = np.pi / 2
    assert s.u_trim.shape == (1, 15) and not np.allclose(s.u_trim, ideal)  # the trims were used
    cal = pc.calibrate(prog, chip, "local", progress=False)
    assert error(cal, chip)["matrix_error"] < error(prog, chip)["matrix_error"]
    path = cal.save(tmp_path / "cal.npz")
    back = pc.load(path)
    np.testing.assert_array_equal(np.asarray(back.settings.u_trim), np.asarray(cal.settings.u_trim))
    np.testing.assert_array_equal(np.asarray(back.matrix()), np.asarray(cal.matrix()))
    assert back.target.cell == "mzi3"


@pytest.mark.slow  # ~50 s, mostly compiling three model calibrations; notebook 06 also model-calibrates every cell
def test_model_calibration_drift_and_cost_run_on_every_cell():
    w = np.random.default_rng(4).normal(size=(4, 4))
    errors = {}
    for fam in FAMILIES:
        name = f"{fam}-4"
        prog = pc.compile(w, name)
        chip = pc.fabricate(name, seed=3)
        cal = pc.calibrate(prog, chip, "model", progress=False, steps=150)
        errors[fam] = (error(prog, chip)["matrix_error"], error(cal, chip)["matrix_error"])
        assert errors[fam][1] < errors[fam][0] / 5
        assert "heater energy" in str(pc.cost(cal))
        study = pc.drift.study(cal, chip, hours=0.01, dt_s=6.0, compensators=("none",), progress=False)
        assert study.errors["none"].shape == (1, 7) and np.all(np.isfinite(study.errors["none"]))
        assert study.errors["none"][0, 0] == pytest.approx(errors[fam][1], rel=0.2, abs=1e-4)
        assert cal.graph().number_of_nodes() > 0
    # the trims give the model-based calibration more to work with on the same fabrication
    assert errors["mzi3"][1] < errors["clements"][1]


def test_pace_64_docstring_arithmetic():
    """The component counts pace-64's docstring quotes are the ones its model and a crossbar give."""
    doc = " ".join(pace_64.__doc__.split())
    k = 64
    mzis = 2 * (k * (k - 1) // 2) + k
    assert pc.get_target("pace-64").components == 16_000 and f"{mzis:,} MZIs" in doc
    assert f"{4 * mzis + k:,} components" in doc
    trees = 2 * k * (k - 1)
    for cell_parts in (1, 4):
        low, high = k + cell_parts * k * k + trees + k, k + cell_parts * k * k + trees + 2 * k
        assert f"{low:,} to {high:,}" in doc


def test_pace_64_docstring_compares_the_crossbar_target():
    """The crossbar-64 count pace-64's docstring quotes is the crossbar target's, and the Clements core is nearer
    PACE's published "more than 16,000 components"."""
    from photocomp.targets.physics import crossbar_components

    doc = " ".join(pace_64.__doc__.split())
    crossbar = pc.get_target("crossbar-64").components
    assert crossbar == crossbar_components(64) and f"crossbar-64`` target models the MZI-cell crossbar, {crossbar:,}" in doc
    core = 4 * (2 * (64 * 63 // 2) + 64) + 64
    assert f"{crossbar - 16_000:,} more than the published count against this core's {core - 16_000:,}" in doc
    assert abs(core - 16_000) < abs(crossbar - 16_000)
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert f"`crossbar-64` has {crossbar:,} components against the Clements core's {core:,}" in readme
