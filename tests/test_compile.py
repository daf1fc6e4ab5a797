"""pc.compile end to end: exactness, tiling, forward functions, jit/vmap/grad, quantization,
canonicalization, detection, reports, targets, and bad input."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import BOUND, TOL, random_matrix, tol
from jax.test_util import check_grads

import photocomp as pc
from photocomp.compiler.state import CompileState
from photocomp.core.errors import InvalidInputError, InvalidTypeError, MismatchError, PipelineError, UnknownNameError
from photocomp.core.phases import MeshPhases

EXACT = "validate | tile | svd | {mesh} | canonicalize | lower"
EXACT_CLEMENTS = EXACT.format(mesh="clements")
EXACT_RECK = EXACT.format(mesh="reck")
ATOL = TOL["complex128"]


def _relative(a, b):
    """max |a - b| / max(1, max |b|): absolute for O(1) data, relative for large data."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


# ---- exactness without quantization ---------------------------------------------------------------

CASES = [
    # (target, shape, kind); shapes repeat on purpose: one jit compile per tile grid
    ("clements-8", (3, 5), "real"),
    ("clements-8", (3, 5), "complex"),
    ("clements-8", (3, 5), "lowrank_complex"),
    ("clements-8", (3, 5), "zero"),
    ("clements-8", (7, 2), "real"),
    ("clements-8", (7, 2), "complex"),
    ("clements-8", (1, 1), "real"),
    ("clements-8", (1, 1), "complex"),
    ("clements-8", (1, 8), "complex"),
    ("clements-8", (8, 1), "real"),
    ("clements-8", (8, 8), "complex"),
    ("clements-8", (8, 8), "lowrank_real"),
    ("reck-8", (5, 6), "complex"),
    ("reck-8", (5, 6), "lowrank_real"),
    ("reck-8", (5, 6), "zero"),
    ("reck-8", (8, 8), "real"),
    ("reck-8", (1, 1), "complex"),
]


@pytest.mark.parametrize("target, shape, kind", CASES, ids=[f"{t}-{s[0]}x{s[1]}-{k}" for t, s, k in CASES])
def test_compile_is_exact_without_quantization(target, shape, kind):
    w = random_matrix(np.random.default_rng([40, *shape]), shape, kind, rank=2)
    mesh = pc.get_target(target).mesh
    prog = pc.compile(w, target, EXACT.format(mesh=mesh))
    assert prog.shape == shape
    m = prog.matrix()
    assert m.shape == shape and m.dtype == np.complex128
    np.testing.assert_allclose(m, w, rtol=0, atol=ATOL)
    np.testing.assert_allclose(prog.dense, w, rtol=0, atol=ATOL)
    s = prog.report.summary
    assert s["max_abs_error"] < ATOL
    assert s["matrix_error"] < ATOL
    assert abs(s["min_mesh_fidelity"] - 1.0) < ATOL
    if kind.startswith("lowrank"):
        assert prog.report["validate"].metrics["rank"] == 2
    if kind == "zero":
        np.testing.assert_array_equal(prog.phase_map.gain, 0.0)
        assert prog.report["svd"].metrics["zero_tiles"] == prog.n_tiles
    assert prog.report["validate"].metrics["real"] == (kind in ("real", "lowrank_real", "zero"))


def test_list_input_and_target_object():
    t = pc.get_target("clements-4")
    w = [[1, 2, 0], [3, 4, 0], [5, 6, 0], [0, 0, 7], [1, 0, 1]]
    prog = pc.compile(w, target=t, pipeline=EXACT_CLEMENTS)
    np.testing.assert_allclose(prog.matrix(), w, rtol=0, atol=ATOL)
    assert prog.target is t


def test_compile_does_not_modify_weights():
    w = random_matrix(np.random.default_rng(41), (5, 3), "complex")
    before = w.copy()
    pc.compile(w, "clements-4", EXACT_CLEMENTS)
    np.testing.assert_array_equal(w, before)


# ---- tiling -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiled():
    """A complex 20 x 13 matrix on clements-8: 3 x 2 tiles, no quantization."""
    w = random_matrix(np.random.default_rng(42), (20, 13), "complex")
    return w, pc.compile(w, "clements-8", EXACT_CLEMENTS)


def test_tiling_grid_and_exactness(tiled):
    w, prog = tiled
    g = prog.phase_map.grid
    assert (g.rows, g.cols, g.tile, prog.n_tiles) == (3, 2, 8, 6)
    assert prog.report["tile"].metrics["grid"] == "3x2"
    np.testing.assert_allclose(prog.matrix(), w, rtol=0, atol=ATOL)
    assert prog.n_mzi == 6 * (28 + 28 + 8)
    assert prog.depth == 8 + 1 + 8
    assert prog.phase_map.v.theta.shape == (6, 28) and prog.phase_map.sigma.shape == (6, 8)
    assert "20x13 on clements-8" in repr(prog)


def test_tile_size_smaller_than_target():
    w = random_matrix(np.random.default_rng(43), (5, 3), "real")
    prog = pc.compile(w, "clements-8", "validate | tile(size=4) | svd | clements | lower")
    assert prog.phase_map.grid.tile == 4 and prog.n_tiles == 2
    assert prog.phase_map.v.layout == pc.layout("clements", 4)
    np.testing.assert_allclose(prog.matrix(), w, rtol=0, atol=ATOL)
    # The chip, its heaters and the file format describe full-size tiles: refused by name, not a broadcast error.
    with pytest.raises(MismatchError, match=r"calibrate needs a program tiled at target 'clements-8'.*tiles of 4x4"):
        pc.calibrate(prog, pc.fabricate("clements-8", seed=0), "local")
    with pytest.raises(MismatchError, match=r"cost needs a program tiled"):
        pc.cost(prog)


def test_tile_size_larger_than_target():
    w = np.ones((3, 3))
    with pytest.raises(InvalidInputError, match="tile size"):
        pc.compile(w, "clements-8", "validate | tile(size=16) | svd | clements | lower")


# ---- forward functions ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xs():
    r = np.random.default_rng(44)
    return r.standard_normal((5, 13)) + 1j * r.standard_normal((5, 13))


def test_forward_equals_matvec(tiled, xs):
    w, prog = tiled
    for x in list(xs) + [xs[0].real, np.arange(13)]:
        y = prog.forward(x)
        assert y.dtype == jnp.complex128 and y.shape == (20,)
        np.testing.assert_allclose(np.asarray(y), w @ x, rtol=0, atol=ATOL * max(1.0, np.abs(w @ x).max()))
        np.testing.assert_array_equal(np.asarray(prog(x)), np.asarray(y))


def test_forward_dense_equals_forward(tiled, xs):
    _, prog = tiled
    for x in xs:
        yd = prog.forward_dense(x)
        assert yd.dtype == jnp.complex128
        np.testing.assert_allclose(np.asarray(yd), np.asarray(prog.forward(x)), rtol=0, atol=ATOL)


def test_jit_equals_eager_x64(tiled, xs):
    _, prog = tiled
    with jax.enable_x64(True):
        fn = jax.jit(prog.forward_fn)
        for x in xs:
            y = fn(prog.params, jnp.asarray(x))
            assert y.dtype == jnp.complex128
            np.testing.assert_allclose(np.asarray(y), np.asarray(prog.forward(x)), rtol=0, atol=ATOL)


def test_jit_follows_caller_precision(tiled, xs):
    """Outside x64 the pure function computes in float32: complex64 out, float32 accuracy."""
    w, prog = tiled
    assert jax.config.jax_enable_x64 is False
    y = jax.jit(prog.forward_fn)(prog.params, xs[0])
    assert y.dtype == jnp.complex64
    ref = w @ xs[0]
    assert _relative(y, ref) < tol(np.complex64)


def test_vmap_equals_loop(tiled, xs):
    _, prog = tiled
    loop = np.stack([np.asarray(prog.forward(x)) for x in xs])
    with jax.enable_x64(True):
        batched = jax.vmap(prog.forward_fn, in_axes=(None, 0))(prog.params, jnp.asarray(xs))
        via_method = jax.vmap(prog.forward)(jnp.asarray(xs))
    assert batched.shape == (5, 20)
    np.testing.assert_allclose(np.asarray(batched), loop, rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(via_method), loop, rtol=0, atol=ATOL)


def test_forward_fn_accepts_field_batches(tiled, xs):
    """simulate.forward also takes (N, B) fields (modes first)."""
    w, prog = tiled
    with jax.enable_x64(True):
        y = prog.forward_fn(prog.params, jnp.asarray(xs.T))
    ref = w @ xs.T
    np.testing.assert_allclose(np.asarray(y), ref, rtol=0, atol=ATOL * max(1.0, np.abs(ref).max()))


# ---- gradients ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    w = random_matrix(np.random.default_rng(45), (5, 3), "complex")
    return w, pc.compile(w, "clements-4", EXACT_CLEMENTS)


def test_grads_wrt_input_and_phases(small):
    """check_grads (fwd and rev, order 1) of a real function of the output w.r.t. x and phases."""
    w, prog = small
    r = np.random.default_rng(46)
    pm = prog.params
    with jax.enable_x64(True):

        def contrast(x, u_theta, v_phi, sigma):
            p = pm.replace(
                u=MeshPhases(pm.u.layout, u_theta, pm.u.phi, pm.u.out_phase),
                v=MeshPhases(pm.v.layout, pm.v.theta, v_phi, pm.v.out_phase),
                sigma=sigma,
            )
            y = prog.forward_fn(p, x)
            return jnp.sum(jnp.abs(y[:2]) ** 2) - jnp.sum(jnp.abs(y[2:]) ** 2)

        x0 = jnp.asarray(r.standard_normal(3))
        args = (x0,) + tuple(jnp.asarray(a) for a in (pm.u.theta, pm.v.phi, pm.sigma))
        fn = jax.jit(contrast)
        check_grads(fn, args, order=1, modes=("fwd", "rev"),
                    atol=BOUND["grad_atol"], rtol=BOUND["grad_rtol"], eps=BOUND["grad_eps"])
        grads = jax.jit(jax.grad(contrast, argnums=(0, 1, 2, 3)))(*args)
    gx, g_theta = np.asarray(grads[0]), np.asarray(grads[1])
    assert gx.dtype == np.float64 and g_theta.shape == pm.u.theta.shape
    assert np.max(np.abs(g_theta)) > 1e-3  # the phases matter
    # reference: y^H S y with S = diag(+1, +1, -1, ...) has gradient 2 Re(W^H S W) x for real x
    sign = np.where(np.arange(5) < 2, 1.0, -1.0)
    expected = 2 * np.real(w.conj().T @ (sign[:, None] * w)) @ np.asarray(x0)
    np.testing.assert_allclose(gx, expected, rtol=0, atol=BOUND["grad_reference"])


def test_grad_through_program_matrix(small):
    from photocomp.sim import ideal as simulate

    w, prog = small
    pm = prog.params
    with jax.enable_x64(True):

        def loss(theta):
            p = pm.replace(u=MeshPhases(pm.u.layout, theta, pm.u.phi, pm.u.out_phase))
            return jnp.sum(jnp.abs(simulate.program_matrix(p) - w) ** 2)

        g = np.asarray(jax.grad(loss)(jnp.asarray(pm.u.theta)))
    # the compiled phases are an exact solution: a minimum, zero gradient
    np.testing.assert_allclose(g, 0.0, rtol=0, atol=BOUND["grad_reference"])


# ---- quantization -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized():
    w = random_matrix(np.random.default_rng(48), (3, 5), "real")
    out = {}
    for bits in (4, 8, 16):
        out[bits] = pc.compile(w, "clements-8", f"validate | tile | svd | clements | canonicalize | quantize(bits={bits}) | lower")
    return w, out


def test_quantization_error_is_monotone_in_bits(quantized):
    w, progs = quantized
    with jax.enable_x64(True):
        errs = {b: float(pc.matrix_error(w, p.matrix())) for b, p in progs.items()}
    assert errs[16] < errs[8] < errs[4]
    assert errs[16] < BOUND["quantized_16bit_error"]
    for b, p in progs.items():
        m = p.report["quantize"].metrics
        assert m["bits"] == b
        assert m["matrix_error_before"] < ATOL
        assert m["matrix_error"] == pytest.approx(errs[b], rel=BOUND["recomputed"], abs=0.0)
        assert p.report.summary["matrix_error"] == pytest.approx(m["matrix_error"], rel=BOUND["recomputed"], abs=0.0)
        assert m["max_phase_error"] > 0


def test_quantized_phases_lie_on_dac_levels(quantized):
    from photocomp.hardware import dac

    _, progs = quantized
    pm = progs[8].phase_map
    for a in (pm.v.phi, pm.u.phi, pm.u.out_phase):
        np.testing.assert_allclose(dac.quantize_phase(a, 8), a, rtol=0, atol=BOUND["dac_level"])


@pytest.mark.parametrize("scheme", ["voltage", "linear"])
def test_quantize_phase_is_the_nearest_level_on_the_circle(scheme):
    """Against a brute-force search over every level (circular distance, 2 pi == 0), in and out of [0, 2 pi)."""
    from photocomp.hardware import dac

    bits = 5
    codes = np.arange(2**bits) if scheme == "linear" else np.arange(2**bits - 1 + 1)
    levels = (2 * np.pi * codes / 2**bits) if scheme == "linear" else 2 * np.pi * (codes / (2**bits - 1)) ** 2
    r = np.random.default_rng(50)
    for phases in (r.uniform(0, 2 * np.pi, 4000), r.uniform(-40, 40, 4000),
                   np.array([0.0, 2 * np.pi - 1e-9, np.nextafter(2 * np.pi, 0), 2 * np.pi, -1e-9])):
        got = dac.quantize_phase(phases, bits, scheme)
        assert got.min() >= 0 and got.max() < 2 * np.pi
        gap = np.abs(phases[:, None] - levels[None, :]) % (2 * np.pi)
        nearest = np.minimum(gap, 2 * np.pi - gap).min(axis=1)
        off = np.abs(phases - got) % (2 * np.pi)
        np.testing.assert_allclose(np.minimum(off, 2 * np.pi - off), nearest, rtol=0, atol=1e-9)


def test_quantizing_again_keeps_every_tile(quantized, monkeypatch):
    """Phases on DAC levels already: a second quantize pass changes no phase and simulates no tile."""
    from photocomp.passes import Quantize
    from photocomp.sim import ideal as simulate

    w, progs = quantized
    prog = progs[8]
    m = prog.matrix()
    seen = []
    real = simulate.tiles_and_meshes_np
    monkeypatch.setattr(simulate, "tiles_and_meshes_np",
                        lambda p, tiles=None: seen.append(p.n_tiles if tiles is None else len(tiles)) or real(p, tiles))
    state = CompileState(weights=m, target=prog.target, provided=frozenset({"weights", "phases", "canonical"}),
                         grid=prog.phase_map.grid, phase_map=prog.phase_map, matrix=m)
    again, metrics = Quantize(bits=8)(state)
    assert seen == [] and metrics["max_phase_error"] == 0.0
    assert not simulate.changed_tiles(prog.phase_map, again.phase_map).any()
    assert again.matrix is state.matrix


def test_quantize_defaults_to_target_bits():
    prog = pc.compile(np.ones((5, 3)), "clements-4", "tile | svd | clements | quantize | lower")
    assert prog.report["quantize"].metrics["bits"] == pc.get_target("clements-4").dac_bits == 12


# ---- canonicalization ------------------------------------------------------------------------------------


def test_canonicalize_keeps_the_matrix(tiled):
    from photocomp.passes import Canonicalize

    _, prog = tiled
    pm = prog.params
    r = np.random.default_rng(49)

    def scramble(mp):
        shift = lambda a: a + 2 * np.pi * r.integers(-3, 4, np.shape(a))  # noqa: E731
        th = r.choice([-1.0, 1.0], np.shape(mp.theta)) * mp.theta + np.pi * r.integers(-3, 4, np.shape(mp.theta))
        return MeshPhases(mp.layout, th, shift(mp.phi) + r.uniform(-9, 9, np.shape(mp.phi)), shift(mp.out_phase))

    wild = pm.replace(v=scramble(pm.v), u=scramble(pm.u),
                      sigma=r.choice([-1.0, 1.0], pm.sigma.shape) * pm.sigma + np.pi * r.integers(-2, 3, pm.sigma.shape))
    before = prog.matrix(wild)
    state = CompileState(weights=before, target=prog.target, provided=frozenset({"weights", "phases"}),
                         grid=wild.grid, phase_map=wild)
    new_state, metrics = Canonicalize()(state)
    out = new_state.phase_map
    np.testing.assert_allclose(prog.matrix(out), before, rtol=0, atol=BOUND["canonical"] * np.abs(before).max())
    assert metrics["max_matrix_change"] < BOUND["canonical"] * np.abs(before).max()
    for mp in (out.v, out.u):
        assert mp.theta.min() >= 0 and mp.theta.max() <= np.pi / 2
        for a in (mp.phi, mp.out_phase):
            assert a.min() >= 0 and a.max() < 2 * np.pi
    assert out.sigma.min() >= 0 and out.sigma.max() <= np.pi / 2
    np.testing.assert_array_equal(out.gain, pm.gain)
    assert metrics["tiles_changed"] == pm.n_tiles


def test_canonicalize_simulates_only_the_tiles_it_changes(tiled, monkeypatch):
    """Canonical tiles keep their phases and their blocks of the kept matrix; only the others are simulated."""
    from photocomp.passes import Canonicalize
    from photocomp.sim import ideal as simulate

    _, prog = tiled
    pm = prog.params
    moved = [1, 4]  # tiles pushed out of range: theta + pi and phi + 2 pi on one MZI, sigma -> -sigma
    theta, phi, sigma = (np.array(a, dtype=np.float64) for a in (pm.v.theta, pm.u.phi, pm.sigma))
    theta[moved, 3] += np.pi
    phi[moved, 0] += 2 * np.pi
    sigma[4, 2] *= -1
    wild = pm.replace(v=MeshPhases(pm.v.layout, theta, pm.v.phi, pm.v.out_phase),
                      u=MeshPhases(pm.u.layout, pm.u.theta, phi, pm.u.out_phase), sigma=sigma)
    kept = simulate.program_matrix_np(wild)
    seen = []
    real = simulate.tiles_and_meshes_np
    monkeypatch.setattr(simulate, "tiles_and_meshes_np",
                        lambda p, tiles=None: seen.append(p.n_tiles if tiles is None else len(tiles)) or real(p, tiles))
    state = CompileState(weights=kept, target=prog.target, provided=frozenset({"weights", "phases"}),
                         grid=wild.grid, phase_map=wild, matrix=kept)
    new_state, metrics = Canonicalize()(state)
    out = new_state.phase_map
    assert seen == [len(moved)] and metrics["tiles_changed"] == len(moved)
    changed = simulate.changed_tiles(wild, out)
    np.testing.assert_array_equal(np.flatnonzero(changed), moved)
    for t in set(range(pm.n_tiles)) - set(moved):  # untouched tiles: the very same settings
        for a, b in zip(simulate._tile_settings(wild), simulate._tile_settings(out)):
            np.testing.assert_array_equal(a[t], b[t])
    full = real(out)[0]
    np.testing.assert_allclose(new_state.matrix, out.grid.join(full), rtol=0, atol=1e-13)
    assert metrics["max_matrix_change"] < BOUND["canonical"] * np.abs(kept).max()
    assert metrics["max_matrix_change"] == float(np.max(np.abs(new_state.matrix - kept)))


def test_compiled_phases_are_in_documented_ranges(tiled, quantized):
    _, exact = tiled
    _, progs = quantized
    for prog in [exact, *progs.values()]:
        pm = prog.phase_map
        for mp in (pm.v, pm.u):
            assert mp.phi.min() >= 0 and mp.phi.max() < 2 * np.pi
            assert mp.out_phase.min() >= 0 and mp.out_phase.max() < 2 * np.pi
    pm = exact.phase_map
    for a in (pm.v.theta, pm.u.theta, pm.sigma):
        assert a.min() >= 0 and a.max() <= np.pi / 2


def test_quantized_theta_stays_in_documented_range(quantized):
    _, progs = quantized
    pm = progs[8].phase_map
    for a in (pm.v.theta, pm.u.theta, pm.sigma):
        assert a.min() >= 0 and a.max() <= np.pi / 2


# ---- mesh / target mismatch, detection, report ----------------------------------------------------------------


def test_mesh_pass_must_match_target():
    with pytest.raises(PipelineError, match="'clements'"):
        pc.compile(np.eye(3), "clements-8", "tile | svd | reck | lower")
    with pytest.raises(PipelineError, match="'reck'"):
        pc.compile(np.eye(3), "reck-8", "tile | svd | clements | lower")


def test_intensity_detection(tiled, xs):
    w, _ = tiled
    prog = pc.compile(w, "clements-8", EXACT_CLEMENTS + "(detection=intensity)")
    assert prog.detection == "intensity"
    assert prog.report["lower"].metrics["detection"] == "intensity"
    for x in xs[:2]:
        expected = np.abs(w @ x) ** 2
        y = prog.forward(x)
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(y), expected, rtol=0, atol=ATOL * expected.max())
        np.testing.assert_allclose(np.asarray(prog.forward_dense(x)), expected, rtol=0, atol=ATOL * expected.max())


def test_report_summary(tiled):
    _, prog = tiled
    s = prog.report.summary
    assert {"matrix_error", "min_mesh_fidelity", "max_abs_error"} <= set(s)
    assert [r.name for r in prog.report.records] == ["validate", "tile", "svd", "clements", "canonicalize", "lower"]
    summary = prog.summary()
    assert summary["target"] == "clements-8" and summary["shape"] == "20x13" and summary["tiles"] == 6
    assert summary["mzis"] == prog.n_mzi and summary["depth"] == prog.depth


def test_metrics_helpers():
    w = random_matrix(np.random.default_rng(50), (4, 4), "complex")
    assert float(pc.matrix_error(w, w)) == 0.0
    # outside x64 the jnp metrics compute in float32
    f32 = TOL["float32"]
    np.testing.assert_allclose(float(pc.matrix_error(w, 1.1 * w)), 0.1, rtol=0, atol=f32)
    assert float(pc.matrix_error(np.zeros((2, 2)), np.eye(2))) == pytest.approx(np.sqrt(2), rel=0, abs=f32)
    u = np.linalg.qr(w)[0]
    assert float(pc.fidelity(u, np.exp(0.7j) * u)) == pytest.approx(1.0, rel=0, abs=f32)
    with jax.enable_x64(True):
        assert float(pc.fidelity(u, np.exp(0.7j) * u)) == pytest.approx(1.0, rel=0, abs=TOL["float64"])


# ---- import hygiene and targets ---------------------------------------------------------------------------------


def test_import_leaves_passes_and_targets_unloaded():
    code = (
        "import sys, photocomp\n"
        "bad = [m for m in ('passes', 'targets') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_targets_listing():
    names = pc.available_targets()
    assert {"pace-64", "tianshu-128", "clements-<N>", "reck-<N>"} <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name, mesh, size", [("clements-5", "clements", 5), ("reck-7", "reck", 7), ("clements-2", "clements", 2)])
def test_family_targets(name, mesh, size):
    t = pc.get_target(name)
    assert isinstance(t, pc.Target) and (t.name, t.mesh, t.size) == (name, mesh, size)
    assert t.n_mzi == size * (size - 1) // 2
    assert pc.get_target(t) is t


def test_chip_targets():
    pace = pc.get_target("pace-64")
    assert (pace.size, pace.mesh, pace.dac_bits, pace.clock_ghz) == (64, "clements", 12, 1.0)
    assert 15_000 <= pace.components <= 17_000
    tianshu = pc.get_target("tianshu-128")
    assert (tianshu.size, tianshu.dac_bits) == (128, 8)


def test_target_physics_defaults():
    t = pc.get_target("clements-8")
    assert t.wavelength_nm == 1550.0 and t.dn_dt_per_k == 1.8e-4 and t.heater_p_pi_mw == 25.0
    assert t.heater_tau_us == 3.0 and t.v_pi == 4.4 and t.crosstalk == 0.01
    assert t.phase_shifter_loss_db == 0.23 and t.mzi_loss_db == 0.2 and t.coupler_sigma_rad == 0.03
    assert t.dac_bits == 12 and t.detection == "coherent"
    assert pc.Target.from_dict(t.to_dict()) == t


@pytest.mark.parametrize("name", ["pace-65", "foo", "foo-3", "clements-x", "-4", ""])
def test_unknown_targets(name):
    with pytest.raises(UnknownNameError, match="target must be one of"):
        pc.get_target(name)


@pytest.mark.parametrize("name", ["clements", "reck"])
def test_bare_family_name_is_unknown_target(name):
    with pytest.raises(UnknownNameError, match="target must be one of"):
        pc.get_target(name)


@pytest.mark.parametrize("name", ["clements-1", "clements-0", "reck-5000"])
def test_family_target_size_out_of_range(name):
    with pytest.raises(InvalidInputError, match="size"):
        pc.get_target(name)


@pytest.mark.parametrize("bad", [None, 3, ["pace-64"]])
def test_target_argument_type(bad):
    with pytest.raises(InvalidTypeError, match="target must be"):
        pc.get_target(bad)


@pytest.mark.parametrize(
    "field, value",
    [
        ("heater_p_pi_mw", -1.0), ("heater_tau_us", -3.0), ("v_pi", 0.0), ("clock_ghz", -1.0),
        ("wavelength_nm", -1550.0), ("dn_dt_per_k", -1e-4), ("crosstalk", -0.01),
        ("phase_shifter_loss_db", -0.2), ("mzi_loss_db", -0.2), ("mzi_loss_sigma_db", -0.1),
        ("crossing_loss_db", -0.1), ("coupler_sigma_rad", -0.03), ("crosstalk", 0.5), ("coupler_sigma_rad", 1.0),
        ("dac_bits", 0), ("dac_bits", 33), ("size", 1), ("size", 5000),
        ("mode_pitch_um", -50.0), ("photons_per_shot", 0.0), ("dark_noise", -1e-4), ("adc_bits", 0),
    ],
)
def test_target_rejects_bad_physics(field, value):
    kwargs = {"name": "lab", "mesh": "clements", "size": 4, field: value}
    with pytest.raises(InvalidInputError, match=f"Target.{field}"):
        pc.Target(**kwargs)


def test_target_rejects_bad_names_and_types():
    with pytest.raises(UnknownNameError, match="Target.mesh"):
        pc.Target(name="lab", mesh="triangle", size=4)
    with pytest.raises(UnknownNameError, match="Target.detection"):
        pc.Target(name="lab", mesh="clements", size=4, detection="phase")
    with pytest.raises(InvalidTypeError, match="Target.v_pi"):
        pc.Target(name="lab", mesh="clements", size=4, v_pi="4.4")
    with pytest.raises(InvalidInputError, match="Target.name"):
        pc.Target(name="", mesh="clements", size=4)
    with pytest.raises(InvalidInputError, match="unknown fields"):
        pc.Target.from_dict({"name": "lab", "mesh": "clements", "size": 4, "colour": "red"})


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_target_non_finite_is_invalid_input(value):
    with pytest.raises(InvalidInputError, match="Target.wavelength_nm"):
        pc.Target(name="lab", mesh="clements", size=4, wavelength_nm=value)


@pytest.mark.parametrize("name", ["clements-3", "clements-4", "clements-16", "reck-3", "reck-4", "reck-16", "reck-2"])
def test_target_depth_matches_layout(name):
    t = pc.get_target(name)
    assert t.depth == pc.layout(t.mesh, t.size).depth


def test_target_depth_matches_layout_clements_2():
    t = pc.get_target("clements-2")
    assert t.depth == pc.layout(t.mesh, t.size).depth


# ---- bad input ------------------------------------------------------------------------------------------------------

BAD_WEIGHTS = [
    (np.array([[1.0, np.nan]]), InvalidInputError, "weights must be finite"),
    (np.array([[np.inf, 1.0]]), InvalidInputError, "weights must be finite"),
    (np.array([[1.0, 1j * np.inf]]), InvalidInputError, "weights must be finite"),
    ("abc", InvalidTypeError, "weights must be a numeric"),
    (b"abc", InvalidTypeError, "weights must be a numeric"),
    (np.array([["a", "b"]]), InvalidTypeError, "weights must be a numeric"),
    (np.array([[1, None]], dtype=object), InvalidTypeError, "weights must be a numeric"),
    (np.array([[1.0, 2.0]], dtype=object), InvalidTypeError, "weights must be a numeric"),
    (np.array(1.0), InvalidInputError, "weights must be a finite 2-D array.*0-D"),
    (3.0, InvalidInputError, "weights must be a finite 2-D array.*0-D"),
    (np.ones(3), InvalidInputError, "weights must be a finite 2-D array.*1-D"),
    (np.ones((2, 2, 2)), InvalidInputError, "weights must be a finite 2-D array.*3-D"),
    (np.zeros((0, 3)), InvalidInputError, r"weights must be non-empty.*\(0, 3\)"),
    (np.zeros((3, 0)), InvalidInputError, "weights must be non-empty"),
    (None, InvalidTypeError, "weights must be a numeric"),
    ([[1, 2], [3]], InvalidTypeError, "weights must be a numeric"),
    ({"a": 1}, InvalidTypeError, "weights must be a numeric"),
]


@pytest.mark.parametrize("bad, error, match", BAD_WEIGHTS, ids=[
    "nan", "inf", "complex-inf", "str", "bytes", "str-array", "object-None", "object-float", "0-d", "scalar",
    "1-d", "3-d", "0x3", "3x0", "None", "ragged", "dict"])
def test_compile_rejects_bad_weights(bad, error, match):
    with pytest.raises(error, match=match):
        pc.compile(bad, "clements-4", EXACT_CLEMENTS)


def test_compile_rejects_bad_target():
    with pytest.raises(UnknownNameError, match="target must be one of"):
        pc.compile(np.eye(2), "nope-chip")


def test_forward_rejects_bad_x(small):
    _, prog = small
    with pytest.raises(InvalidInputError, match=r"x must have shape \(3,\).*got shape \(4,\)"):
        prog.forward(np.ones(4))
    with pytest.raises(InvalidInputError, match=r"x must have shape \(3,\).*vmap.*\(2, 3\)"):
        prog.forward(np.ones((2, 3)))
    with pytest.raises(InvalidInputError, match=r"vmap.*\(3, 2\)"):
        prog.forward(np.ones((3, 2)))
    with pytest.raises(InvalidInputError, match=r"x must have shape.*got shape \(\)"):
        prog.forward(1.0)
    with pytest.raises(InvalidInputError, match="x must be finite"):
        prog.forward(np.array([1.0, np.nan, 0.0]))
    with pytest.raises(InvalidInputError, match="x must be finite"):
        prog.forward_dense(np.array([1.0, np.inf, 0.0]))
    with pytest.raises(InvalidTypeError, match="x must be a numeric"):
        prog.forward("abc")
    with pytest.raises(InvalidTypeError, match="x must be a numeric"):
        prog.forward(None)
    with pytest.raises(InvalidTypeError, match="x must be a numeric"):
        prog.forward(np.array([1, None, 2], dtype=object))
    with pytest.raises(InvalidInputError, match=r"x must have shape"):
        prog.forward(jnp.ones(4))


def test_forward_rejects_nan_in_concrete_jax_array(small):
    _, prog = small
    with pytest.raises(InvalidInputError, match="x must be finite"):
        prog.forward(jnp.array([1.0, jnp.nan, 0.0]))
