"""The butterfly mesh (``butterfly-N``): layout, fitting, and the whole flow from compile to save/load."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import photocomp as pc
from photocomp.calibration.engine import error, reachability
from photocomp.compiler.fit import butterfly_factor, fit_meshes, fit_svd_tiles
from photocomp.core.convention import mzi
from photocomp.core.errors import InvalidInputError, InvalidTypeError, PipelineError
from photocomp.core.graph import to_sax_netlist
from photocomp.core.layout import butterfly_pairs, layout, mesh_unitary, planar_crossings
from photocomp.hardware.chipsim import routing_amplitudes
from photocomp.sim.physical import mesh_to_physical, physical_mesh_unitary

sys.path.insert(0, str(Path(__file__).parent))
from conftest import lossless_nominal  # noqa: E402
from test_netlist import simulate_json_netlist  # noqa: E402


def _family_member(n: int, rng) -> np.ndarray:
    """A unitary the n-mode butterfly realises exactly: its own mesh at random phases."""
    lay = layout("butterfly", n)
    with jax.enable_x64(True):
        return np.asarray(mesh_unitary(lay, rng.uniform(0, np.pi / 2, lay.n_mzi), rng.uniform(0, 2 * np.pi, lay.n_mzi),
                                       rng.uniform(0, 2 * np.pi, n)))


def _loop_reference(lay, theta, phi, out) -> np.ndarray:
    """Float64 reference: the product of every MZI's 2 x 2 matrix on its two modes, in layout order."""
    n = lay.n_modes
    m = np.eye(n, dtype=complex)
    for j, (a, b) in enumerate(zip(lay.pairs, lay.lower_array)):
        # the MZI's matrix (identity off its two modes) times m: its 2 x 2 block times m's rows a and b
        m[[a, b], :] = np.asarray(mzi(theta[j], phi[j], xp=np)) @ m[[a, b], :]
    return np.diag(np.exp(1j * np.asarray(out))) @ m


@pytest.mark.parametrize("n", [2, 4, 8, 16, 64])
def test_layout_counts_and_pairs(n):
    lay = layout("butterfly", n)
    m = n.bit_length() - 1
    assert (lay.n_mzi, lay.depth, lay.adjacent) == (n // 2 * m, m, False)
    upper, lower, cols = butterfly_pairs(n)
    np.testing.assert_array_equal(lower - upper, 1 << cols)  # column s pairs n with n + 2^s
    for c in range(m):  # every mode exactly once per column
        assert sorted(np.concatenate([upper[cols == c], lower[cols == c]]).tolist()) == list(range(n))
    t = pc.get_target(f"butterfly-{n}")
    assert (t.mesh, t.n_mzi, t.depth) == ("butterfly", lay.n_mzi, m)
    assert t.components == 2 * 4 * lay.n_mzi + 4 * n + n


def test_sizes_that_are_not_powers_of_two_are_refused():
    with pytest.raises(InvalidInputError, match="power of two"):
        pc.get_target("butterfly-12")
    with pytest.raises(InvalidInputError, match="power of two"):
        layout("butterfly", 6)
    with pytest.raises(InvalidInputError, match="Target.size must be a power of two"):
        dataclasses.replace(pc.get_target("butterfly-8"), size=6)


def test_ideal_and_physical_simulations_match_a_float64_loop():
    lay = layout("butterfly", 16)
    rng = np.random.default_rng(0)
    theta, phi, out = rng.uniform(0, 2 * np.pi, lay.n_mzi), rng.uniform(0, 2 * np.pi, lay.n_mzi), rng.uniform(0, 6, 16)
    ref = _loop_reference(lay, theta, phi, out)
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(mesh_unitary(lay, theta, phi, out)), ref, atol=1e-13)
        internal, external, out_phys = mesh_to_physical(lay, theta, phi, out)
        np.testing.assert_allclose(np.asarray(physical_mesh_unitary(lay, internal, external, out_phys)), ref,
                                   atol=1e-13)


@pytest.mark.parametrize("n", [2, 4, 16, 64, 256])
def test_recursive_factorization_is_exact_on_the_family(n):
    rng = np.random.default_rng(n)
    u = np.stack([_family_member(n, rng) for _ in range(2)])
    theta, phi, out = butterfly_factor(u)
    lay = layout("butterfly", n)
    assert theta.shape == (2, lay.n_mzi) and out.shape == (2, n)
    assert np.all((theta >= 0) & (theta <= np.pi / 2))
    for j in range(2):
        assert np.linalg.norm(_loop_reference(lay, theta[j], phi[j], out[j]) - u[j]) / np.sqrt(n) < 1e-12


def test_recursive_factorization_of_a_generic_unitary_is_a_unitary_mesh_not_an_exact_one():
    u = pc.haar_unitary(16, np.random.default_rng(7))[None]
    theta, phi, out = butterfly_factor(u)
    err = np.linalg.norm(_loop_reference(layout("butterfly", 16), theta[0], phi[0], out[0]) - u[0]) / 4
    assert 0.1 < err < np.sqrt(2)


@pytest.mark.parametrize("n", [4, 16])
def test_fit_reaches_a_unitary_of_its_own_family_exactly(n):
    rng = np.random.default_rng(n)
    u = np.stack([_family_member(n, rng) for _ in range(3)])
    lay = layout("butterfly", n)
    theta, phi, out, err = fit_meshes(lay, u, key=jax.random.key(0))
    assert np.all(err < 1e-10)
    # the reported error is the error of the returned phases
    for j in range(3):
        assert np.linalg.norm(_loop_reference(lay, theta[j], phi[j], out[j]) - u[j]) / np.sqrt(n) == pytest.approx(
            err[j], abs=1e-12)


def test_fit_of_a_generic_unitary_reports_its_error_and_is_reproducible():
    u = pc.haar_unitary(8, np.random.default_rng(3))
    lay = layout("butterfly", 8)
    a = fit_meshes(lay, u, key=jax.random.key(5), restarts=2, steps=100)
    b = fit_meshes(lay, u, key=jax.random.key(5), restarts=2, steps=100)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    theta, phi, out, err = a
    # 12 MZIs cannot reach a Haar unitary of 8 modes (64 real parameters): the error says so, and is honest
    assert 0.05 < err < np.sqrt(2)
    assert np.linalg.norm(_loop_reference(lay, theta, phi, out) - u) / np.sqrt(8) == pytest.approx(err, abs=1e-12)


def test_fit_rejects_bad_input():
    lay = layout("butterfly", 4)
    with pytest.raises(InvalidInputError, match=r"u must have shape \(B, 4, 4\)"):
        fit_meshes(lay, np.eye(3), key=jax.random.key(0))
    with pytest.raises(InvalidInputError, match=r"restarts must be an integer in \[1, inf\]; got 0"):
        fit_meshes(lay, np.eye(4), key=jax.random.key(0), restarts=0)
    with pytest.raises(InvalidTypeError, match="lay must be a MeshLayout"):
        fit_meshes("butterfly", np.eye(4), key=jax.random.key(0))
    with pytest.raises(InvalidInputError, match="at least one unitary"):
        fit_meshes(lay, np.zeros((0, 4, 4)), key=jax.random.key(0))
    z = np.zeros((1, 4))
    with pytest.raises(InvalidInputError, match=r"mask must have shape \(1, 4, 4\)"):
        fit_svd_tiles(lay, np.eye(4)[None], np.ones((4, 4)), (z, z), (z, z), z, z)
    with pytest.raises(InvalidInputError, match=r"w must have shape \(B, 4, 4\)"):
        fit_svd_tiles(lay, np.eye(3)[None], np.ones((1, 3, 3)), (z, z), (z, z), z, z)
    with pytest.raises(PipelineError, match="butterfly restarts must be an integer in"):
        pc.Pipeline.parse("validate | tile | svd | butterfly(restarts=0)")
    with pytest.raises(PipelineError, match="builds a butterfly mesh but target 'clements-8'"):
        pc.compile(np.eye(8), "clements-8", pipeline="validate | tile | svd | butterfly | canonicalize | lower")


def test_compile_of_a_family_member_is_exact_and_its_netlist_agrees():
    u = _family_member(8, np.random.default_rng(1))
    prog = pc.compile(u, "butterfly-8", pipeline="validate | tile | unitary | butterfly | canonicalize | lower")
    assert prog.circuit == "unitary"
    m = prog.report["butterfly"].metrics
    assert m["matrix_error"] < 1e-10 and m["mzis"] == 12 and m["depth"] == 3
    np.testing.assert_allclose(np.asarray(prog.matrix()), u, atol=1e-9)
    np.testing.assert_allclose(simulate_json_netlist(to_sax_netlist(prog)), np.asarray(prog.matrix()), atol=1e-12)


def test_whole_flow_on_a_butterfly_chip(tmp_path):
    """compile -> chip model -> reachability -> local / model calibration -> drift -> cost -> plot -> save/load."""
    w = np.random.default_rng(0).normal(size=(8, 6))
    prog = pc.compile(w, "butterfly-8")
    assert prog.report["butterfly"].metrics["matrix_error"] > 0.05  # a generic matrix is beyond a butterfly's reach
    assert error(*lossless_nominal(prog))["matrix_error"] < 1e-12  # an ideal chip runs the fitted program exactly
    chip = pc.fabricate("butterfly-8", seed=3)
    before = error(prog, chip)["matrix_error"]
    reach = reachability(prog, chip)
    assert 0.0 <= reach.fraction <= 1.0
    local = pc.calibrate(prog, chip, "local", progress=False)
    model = pc.calibrate(prog, chip, "model", progress=False, steps=60)
    assert error(local, chip)["matrix_error"] < before and error(model, chip)["matrix_error"] < before
    study = pc.drift.study(local, chip, hours=0.01, dt_s=6.0, compensators=("none",), progress=False)
    assert np.all(np.isfinite(study.errors["none"]))
    assert "heater energy" in str(pc.cost(local))
    assert Path(pc.plot(local, tmp_path / "mesh.png", "mesh")).stat().st_size > 0
    back = pc.load(local.save(tmp_path / "local.npz"))
    assert back.target == prog.target
    np.testing.assert_array_equal(np.asarray(back.matrix()), np.asarray(local.matrix()))


def test_measurement_calibrations_run_on_a_butterfly_chip():
    """Nullification and in-situ gradients talk to the chip through the instrument interface only; both
    reach each MZI's two (non-adjacent) modes from the layout. The routing crossings' uneven loss is an
    error no phase undoes: both end near model-based calibration, which knows the chip, and far below the
    start; with lossless crossings all three go much lower."""
    prog = pc.compile(pc.haar_unitary(8, np.random.default_rng(2)), "butterfly-8")
    chip = pc.fabricate("butterfly-8", seed=3, circuit="unitary")
    lossless, _ = lossless_nominal(prog)
    lossless_chip = pc.fabricate(lossless.target, seed=3, circuit="unitary")
    models = []
    for p, c in ((prog, chip), (lossless, lossless_chip)):
        before = error(p, c)["matrix_error"]
        model = error(pc.calibrate(p, c, "model", progress=False), c)["matrix_error"]
        models.append(model)
        for method in ("nullify", "insitu"):
            got = error(pc.calibrate(p, c, method, progress=False), c)["matrix_error"]
            assert got < 1.3 * model and got < before / 1.5, (method, p.target.crossing_loss_db)
    assert models[1] < 0.4 * models[0]  # lossless crossings: model calibration goes much lower


def test_svd_tiles_are_fitted_as_a_whole_not_factor_by_factor():
    """Two separately fitted factors multiply to a poor tile; the joint refinement starts there and fits the
    tile itself, and the compiled program's error is the one it reports."""
    w = np.random.default_rng(0).normal(size=(16, 16))
    u, s, vh = np.linalg.svd(w)
    lay = layout("butterfly", 16)
    tu, pu, ou, _ = fit_meshes(lay, u, key=jax.random.key(0))
    tv, pv, ov, _ = fit_meshes(lay, vh, key=jax.random.key(0))
    separate = _loop_reference(lay, tu, pu, ou) @ np.diag(s) @ _loop_reference(lay, tv, pv, ov)
    sep_err = np.linalg.norm(w - separate) / np.linalg.norm(w)
    mask = np.ones((1, 16, 16))
    fit = fit_svd_tiles(lay, w[None], mask, (tu[None], pu[None]), (tv[None], pv[None]), s[None], ov[None])
    joint = (_loop_reference(lay, *(x[0] for x in fit["u"])) @ np.diag(fit["s"][0])
             @ _loop_reference(lay, *(x[0] for x in fit["v"])))
    joint_err = np.linalg.norm(w - joint) / np.linalg.norm(w)
    assert fit["error"][0] == pytest.approx(np.linalg.norm(w - joint), rel=1e-9)
    assert np.all(fit["s"] >= 0)
    assert joint_err < 0.75 * sep_err
    prog = pc.compile(w, "butterfly-16", pipeline="validate | tile | svd | butterfly | canonicalize | lower")
    err = prog.report["butterfly"].metrics["matrix_error"]
    assert err == pytest.approx(np.linalg.norm(np.asarray(prog.matrix()) - w) / np.linalg.norm(w), rel=1e-9)
    assert err < 0.75 * sep_err  # the pass fits the tile scaled to unit gain: another run, a like result


@pytest.mark.parametrize("n", [2, 8, 32])
def test_planar_crossings_are_the_inversions_of_each_columns_shuffle(n):
    """Bringing every pair of a column side by side on a planar chip: the crossings of a waveguide are the
    waveguides whose order against it the interleaving reverses (counted here by brute force)."""
    lay = layout("butterfly", n)
    got = planar_crossings(lay)
    assert got.shape == (lay.depth, n) and not planar_crossings(layout("clements", n)).any()
    for c in range(lay.depth):
        up, low = lay.pair_array[lay.column_array == c], lay.lower_array[lay.column_array == c]
        order = np.ravel(np.column_stack([up, low]))  # the waveguides side by side, pair after pair
        place = np.empty(n, int)
        place[order] = np.arange(n)
        for q in range(n):
            inversions = sum((q < r) != (place[q] < place[r]) for r in range(n) if r != q)
            assert got[c, q] == inversions, (c, q)


def test_cost_budgets_the_butterflys_routing_crossings():
    prog = pc.compile(_family_member(8, np.random.default_rng(4)), "butterfly-8",
                      pipeline="validate | tile | unitary | butterfly | canonicalize | lower")
    c = pc.cost(prog)
    t = prog.target
    routing = planar_crossings(t.layout)
    assert c.path_crossings > 0 and c.path_crossings <= 2 * routing.max(axis=1).sum()
    assert c.insertion_loss_db == pytest.approx(c.path_mzis * t.mzi_loss_db + c.path_phase_shifters
                                                * t.phase_shifter_loss_db + c.path_crossings * t.crossing_loss_db)


def test_the_routing_crossings_lose_light_unevenly_on_the_chip():
    """An ideal butterfly chip runs its program exactly only with lossless crossings: with lossy ones the modes
    of a column cross unequal numbers of waveguides, and no phase undoes the uneven loss. Adjacent layouts and
    lossless crossings have no routing."""
    prog = pc.compile(_family_member(8, np.random.default_rng(5)), "butterfly-8",
                      pipeline="validate | tile | unitary | butterfly | canonicalize | lower")
    lossless, chip = lossless_nominal(prog)
    assert error(lossless, chip)["matrix_error"] < 1e-12
    lossy_target = dataclasses.replace(lossless.target, crossing_loss_db=prog.target.crossing_loss_db)
    lossy = pc.Program(lossy_target, prog.phase_map, prog.report, prog.pipeline, prog.detection)
    lossy_chip = dataclasses.replace(chip, target=lossy_target)
    assert error(lossy, lossy_chip)["matrix_error"] > 0.01
    top, bottom = routing_amplitudes(prog.target.layout, prog.target.crossing_loss_db)
    assert top.shape == bottom.shape == (prog.target.n_mzi,) and np.all((top <= 1) & (bottom <= 1))
    assert np.ptp(np.concatenate([top, bottom])) > 0  # uneven
    assert routing_amplitudes(prog.target.layout, 0.0) is None
    assert routing_amplitudes(layout("clements", 8), 0.18) is None
