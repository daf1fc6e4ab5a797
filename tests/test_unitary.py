"""Unitary programs: one mesh per tile for scaled-unitary weights (compile side, simulation, chips, graph)."""

import dataclasses

import jax
import numpy as np
import pytest

import photocomp as pc
from photocomp.core.errors import InvalidInputError, MismatchError, PipelineError
from photocomp.core.graph import to_sax_netlist
from photocomp.core.metrics import UNITARY_TOL, unitary_deviation
from photocomp.hardware.chip import heater_groups, heater_slices
from photocomp.hardware.chipsim import chip_matrix, flatten_heaters, settings_from_program, unflatten_heaters

EXACT = "validate | tile | unitary | {mesh} | canonicalize | lower"  # unquantized: exact to rounding


def haar(n, seed):
    return pc.haar_unitary(n, np.random.default_rng(seed))


def f64(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


# ---- compile ---------------------------------------------------------------------------------------


def test_haar_unitary_compiles_to_one_mesh():
    u = haar(64, 0)
    prog = pc.compile(u, "clements-64")
    assert prog.circuit == "unitary" and prog.phase_map.v is None and prog.phase_map.sigma is None
    assert prog.n_mzi == 64 * 63 // 2 == 2016 and prog.depth == 64
    assert "| unitary |" in prog.pipeline
    svd = pc.compile(u, "clements-64", pc.get_target("clements-64").default_pipeline())
    assert svd.circuit == "svd" and svd.n_mzi == 2 * 2016 + 64 and svd.depth == 129
    # the same DAC quantization on half the phase shifters: no worse than the svd program
    assert prog.report.summary["matrix_error"] <= 1.05 * svd.report.summary["matrix_error"]


@pytest.mark.parametrize("mesh", ["clements", "reck"])
def test_unitary_program_is_exact_without_quantization(mesh):
    u = 2.5 * haar(8, 1)
    prog = pc.compile(u, f"{mesh}-8", EXACT.format(mesh=mesh))
    assert prog.circuit == "unitary"
    np.testing.assert_allclose(prog.matrix(), u, rtol=0, atol=1e-12)
    np.testing.assert_allclose(prog.phase_map.gain, [2.5], rtol=1e-14)
    x = np.random.default_rng(2).standard_normal(8)
    np.testing.assert_allclose(prog.forward(x), u @ x, rtol=0, atol=1e-12)
    assert prog.report["unitary"].metrics["max_unitarity_error"] < 1e-14


def test_smaller_unitary_is_padded_with_the_identity():
    u = haar(5, 3)
    prog = pc.compile(u, "clements-8", EXACT.format(mesh="clements"))
    assert prog.n_tiles == 1 and prog.n_mzi == 28
    np.testing.assert_allclose(prog.matrix(), u, rtol=0, atol=1e-12)
    # the padded modes pass straight through: the mesh's matrix is u (+) I
    mesh = prog.phase_map.u.unitary()[0]
    np.testing.assert_allclose(mesh[:5, :5], u, atol=1e-12)
    np.testing.assert_allclose(mesh[5:, 5:], np.eye(3), atol=1e-12)


def test_preset_chooses_the_circuit_from_the_weights():
    rng = np.random.default_rng(4)
    assert pc.compile(rng.standard_normal((4, 4)), "clements-4").circuit == "svd"
    assert pc.compile(np.eye(3), "clements-4").circuit == "unitary"
    assert pc.compile(-7e-3j * haar(4, 5), "clements-4").circuit == "unitary"
    # non-square, larger than the tile, or off by more than the tolerance: svd
    assert pc.compile(haar(6, 6)[:, :4], "clements-8").circuit == "svd"
    assert pc.compile(haar(8, 7), "clements-4").circuit == "svd"
    near = haar(4, 8) + 1e-6 * rng.standard_normal((4, 4))
    assert pc.compile(near, "clements-4").circuit == "svd"
    within = haar(4, 8) * (1 + 1e-13 * rng.standard_normal((4, 4)))
    assert pc.compile(within, "clements-4").circuit == "unitary"
    # an explicit pipeline is taken as given
    assert pc.compile(np.eye(4), "clements-4", "validate | tile | svd | clements").circuit == "svd"


@pytest.mark.parametrize("scale", [1e-250, 1e300])
def test_extreme_scales(scale):
    u = haar(4, 9)
    prog = pc.compile(scale * u, "clements-4", EXACT.format(mesh="clements"))
    assert prog.circuit == "unitary"
    np.testing.assert_allclose(prog.phase_map.gain, [scale], rtol=1e-13)
    np.testing.assert_allclose(prog.matrix() / scale, u, rtol=0, atol=1e-12)
    assert prog.report.summary["matrix_error"] < 1e-12


def test_block_unitary_on_several_tiles():
    a, b = haar(4, 10), 3.0 * haar(4, 11)
    w = np.zeros((8, 8), complex)
    w[:4, :4], w[4:, 4:] = a, b
    prog = pc.compile(w, "clements-4", EXACT.format(mesh="clements"))
    assert prog.n_tiles == 4 and prog.circuit == "unitary"
    np.testing.assert_allclose(prog.phase_map.gain, [1.0, 0.0, 0.0, 3.0], rtol=1e-13, atol=0)
    assert prog.report["unitary"].metrics["zero_tiles"] == 2
    np.testing.assert_allclose(prog.matrix(), w, rtol=0, atol=1e-12)


def test_unitary_pass_refuses_what_it_cannot_factor():
    rng = np.random.default_rng(12)
    with pytest.raises(PipelineError, match=r"tile 0 deviates by .*; use 'svd'"):
        pc.compile(rng.standard_normal((4, 4)), "clements-4", "tile | unitary | clements")
    with pytest.raises(PipelineError, match=r"needs square tiles: tile 0 holds 3x2 entries"):
        pc.compile(haar(3, 13)[:, :2], "clements-4", "tile | unitary | clements")
    for bad in ("0", "-1e-3", "2.0"):
        with pytest.raises(PipelineError, match=r"invalid parameters for pass 'unitary': tol must be"):
            pc.compile(np.eye(4), "clements-4", f"tile | unitary(tol={bad}) | clements")
    loose = pc.compile(haar(4, 14) + 1e-6 * rng.standard_normal((4, 4)), "clements-4",
                       "tile | unitary(tol=1e-4) | clements")
    assert loose.circuit == "unitary" and loose.report.summary["matrix_error"] < 1e-5


def test_unitary_deviation_is_scale_free():
    u = haar(6, 15)
    for s in (1.0, 2.0**-1000, 2.0**1000, 3e-7j):
        g, dev = unitary_deviation(s * u)
        np.testing.assert_allclose(g, abs(s), rtol=1e-14)
        assert dev < 1e-14
    g, dev = unitary_deviation(np.zeros((2, 3, 3)))
    assert np.all(g == 0) and np.all(dev == 0)
    g, dev = unitary_deviation(np.diag([1.0, 1.0, 1.0 + 10 * UNITARY_TOL]))
    assert dev > UNITARY_TOL


def test_jit_vmap_grad_through_a_unitary_program():
    u = haar(4, 16)
    prog = pc.compile(u, "clements-4", EXACT.format(mesh="clements"))
    xs = np.random.default_rng(17).standard_normal((3, 4))
    with jax.enable_x64(True):
        ys = jax.jit(jax.vmap(prog.forward_fn, in_axes=(None, 0)))(prog.params, xs)
        np.testing.assert_allclose(np.asarray(ys), xs @ u.T, atol=1e-12)
        grad = jax.grad(lambda pm: jax.numpy.sum(jax.numpy.abs(prog.forward_fn(pm, xs[0])) ** 2))(prog.params)
    assert grad.v is None and np.shape(grad.u.theta) == (1, 6)
    # a lossless mesh conserves power: the gradient of the output power is zero
    np.testing.assert_allclose(np.asarray(grad.u.theta), 0.0, atol=1e-12)


# ---- chips --------------------------------------------------------------------------------------------


def test_unitary_chip_keeps_the_svd_chips_u_mesh():
    svd = pc.fabricate("clements-8", seed=3)
    uni = pc.fabricate("clements-8", seed=3, circuit="unitary")
    assert uni.circuit == "unitary" and set(uni.coupler_in) == {"u"}
    for field in ("coupler_in", "coupler_out", "loss_db"):
        np.testing.assert_array_equal(getattr(uni, field)["u"], getattr(svd, field)["u"])
    sl_svd, sl_uni = heater_slices(svd.target), heater_slices(uni.target, "unitary")
    for g in heater_groups("unitary"):
        np.testing.assert_array_equal(uni.offset[sl_uni[g]], svd.offset[sl_svd[g]])
        np.testing.assert_array_equal(uni.efficiency[sl_uni[g]], svd.efficiency[sl_svd[g]])
    assert uni.n_heaters == 2 * 28 + 8 and svd.n_heaters == 4 * 28 + 3 * 8
    assert "circuit=unitary" in repr(uni) and "circuit" not in repr(svd)
    with pytest.raises(InvalidInputError, match="circuit must be one of"):
        pc.fabricate("clements-8", seed=3, circuit="crossbar")


def test_ideal_unitary_chip_implements_the_program():
    u = haar(8, 18)
    prog = pc.compile(u, "clements-8", EXACT.format(mesh="clements"))
    chip = pc.fabricate("clements-8", seed=0, circuit="unitary")
    zero = {k: np.zeros_like(v) for k, v in chip.coupler_in.items()}
    ideal = dataclasses.replace(chip, coupler_in=zero, coupler_out=zero, loss_db=zero)
    with jax.enable_x64(True):
        s = f64(settings_from_program(prog.phase_map))
        assert s.circuit == "unitary" and s.v_int is None and s.groups == heater_groups("unitary")
        np.testing.assert_allclose(np.asarray(chip_matrix(ideal, s)), u, atol=1e-12)
        flat = flatten_heaters(s)
        assert flat.shape == (1, ideal.n_heaters)
        back = unflatten_heaters(s, flat, ideal.target)
        np.testing.assert_array_equal(np.asarray(back.u_int), s.u_int)
        # the fabricated chip differs, as calibration will have to correct
        assert np.abs(np.asarray(chip_matrix(chip, s)) - u).max() > 1e-3
    cal = prog.with_chip(ideal, s)
    np.testing.assert_allclose(cal.matrix(), u, atol=1e-12)


def test_program_and_chip_circuits_must_agree():
    prog = pc.compile(haar(4, 19), "clements-4")
    svd_chip = pc.fabricate("clements-4", seed=1)
    with jax.enable_x64(True):
        s = f64(settings_from_program(prog.phase_map))
    with pytest.raises(MismatchError, match=r"unitary circuit.*circuit='unitary'.*got a chip of the svd circuit"):
        prog.with_chip(svd_chip, s)
    with pytest.raises(MismatchError, match="unitary circuit"):
        pc.calibrate(prog, svd_chip, "local")


# ---- graph and netlist ----------------------------------------------------------------------------------


def test_graph_of_a_unitary_program_is_one_mesh():
    prog = pc.compile(haar(4, 20), "clements-4")
    g = pc.circuit_graph(prog)
    kinds = [d["kind"] for _, d in g.nodes(data=True)]
    assert kinds.count("mzi") == 6 and kinds.count("attenuator") == 0
    assert not any(n.startswith("V") for n in g.nodes) and g.graph["circuit"] == "unitary"
    net = to_sax_netlist(prog)
    assert net["info"]["circuit"] == "unitary"
    assert sum(i["component"] == "mzi" for i in net["instances"].values()) == 6
