"""The fast simulation paths against float64 references, values and gradients.

The references are deliberately plain: every MZI's 2 x 2 matrix from
:func:`photocomp.core.convention.physical_mzi` (or :func:`~photocomp.core.convention.mzi`)
embedded in an N x N identity and multiplied in layout order, one MZI at a
time. The fast paths (pair-scheduled scan, coefficients in closed form,
diagonals folded into the next mesh, batches through the tile matrices,
``Program.forward`` through the folded dense matrix) must agree with them to
the tolerances below.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import photocomp as pc
from photocomp.calibration.engine import relative_error as _relative_error
from photocomp.core import convention
from photocomp.core.layout import layout
from photocomp.hardware.chip import fabricate
from photocomp.hardware.chipsim import (
    attenuator_amplitude,
    chip_forward,
    chip_tile_matrices,
    settings_from_program,
)
from photocomp.sim import ideal as simulate
from photocomp.sim.physical import (
    apply_physical_mesh,
    ideal_coefficients,
    pair_schedule,
    physical_coefficients,
    physical_mesh_unitary,
)

# one tolerance table (float64): absolute, on quantities of order one
TOL = {
    "coefficient": 1e-15,  # closed-form 2 x 2 coefficients vs matrix products
    "field": 1e-13,  # fields / transfer matrices after a whole mesh or chip
    "grad": 1e-11,  # gradients vs the reference's autodiff gradient
    "fd_atol": 1e-6,  # check_grads against finite differences
    "fd_rtol": 1e-6,
    "float32": 1e-4,  # the same paths in float32
}

KINDS = ["clements", "reck"]


# ---- references ---------------------------------------------------------------------------

def _embed(n, top, m, xp):
    e = xp.eye(n, dtype=m.dtype)
    if xp is np:
        e[top:top + 2, top:top + 2] = m
        return e
    return e.at[top:top + 2, top:top + 2].set(m)


def ref_mesh_matrix(lay, mats, out_phase, xp=np):
    """N x N product of per-MZI matrices ``mats`` (n_mzi, 2, 2) in layout order, then the output screen."""
    n = lay.n_modes
    u = xp.eye(n, dtype=mats.dtype)
    for k, top in enumerate(lay.pairs):
        u = _embed(n, top, mats[k], xp) @ u
    return xp.exp(1j * xp.asarray(out_phase))[:, None] * u


def ref_physical_mats(internal, external, c_in, c_out, loss_db, xp=np):
    mats = convention.physical_mzi(internal, external, c_in, c_out, xp=xp)
    return mats * (10.0 ** (-xp.asarray(loss_db) / 20.0))[..., None, None]


def ref_chip_tiles(chip, s, xp=np):
    """(T, K, K) per-tile matrices of a chip, no gain: U-mesh . attenuators . V-mesh, MZI by MZI."""
    lay = s.layout
    out = []
    for t in range(np.shape(s.v_int)[0]):
        def mesh(g, i, e, o):
            mats = ref_physical_mats(i[t], e[t], chip.coupler_in[g], chip.coupler_out[g], chip.loss_db[g], xp)
            return ref_mesh_matrix(lay, mats, o[t], xp)
        a, b = np.pi / 4 + chip.coupler_in["att"], np.pi / 4 + chip.coupler_out["att"]
        amp = (np.cos(a) * np.cos(b) * xp.exp(1j * xp.asarray(s.att[t])) - np.sin(a) * np.sin(b)) \
            * 10.0 ** (-np.asarray(chip.loss_db["att"]) / 20.0)
        v = mesh("v", s.v_int, s.v_ext, s.v_out)
        u = mesh("u", s.u_int, s.u_ext, s.u_out)
        out.append(u @ (amp[:, None] * v))
    return xp.stack(out)


def ref_ideal_tiles(pm):
    lay = pm.v.layout
    out = []
    for t in range(pm.n_tiles):
        v = ref_mesh_matrix(lay, convention.mzi(pm.v.theta[t], pm.v.phi[t], xp=np), pm.v.out_phase[t])
        u = ref_mesh_matrix(lay, convention.mzi(pm.u.theta[t], pm.u.phi[t], xp=np), pm.u.out_phase[t])
        out.append(pm.gain[t] * (u @ (np.cos(pm.sigma[t])[:, None] * v)))
    return np.stack(out)


# ---- fixtures -------------------------------------------------------------------------------

def _random_mesh(kind, n, seed):
    lay = layout(kind, n)
    rng = np.random.default_rng(seed)
    m = lay.n_mzi
    return lay, {
        "internal": rng.uniform(0, 2 * np.pi, m),
        "external": rng.uniform(0, 2 * np.pi, m),
        "out_phase": rng.uniform(0, 2 * np.pi, n),
        "coupler_in": rng.normal(0, 0.05, m),
        "coupler_out": rng.normal(0, 0.05, m),
        "loss_db": rng.uniform(0, 0.5, m),
    }


@pytest.fixture(scope="module")
def tiled_chip():
    """A 12 x 10 program tiled onto clements-6 (4 tiles) and a fabricated chip with visible errors."""
    t = dataclasses.replace(pc.get_target("clements-6"), coupler_sigma_rad=0.05, mzi_loss_sigma_db=0.1)
    rng = np.random.default_rng(7)
    w = rng.normal(size=(12, 10)) + 1j * rng.normal(size=(12, 10))
    prog = pc.compile(w, target=t, pipeline="tile | svd | clements | lower")
    with jax.enable_x64(True):
        s = jax.tree_util.tree_map(np.asarray, settings_from_program(prog.phase_map))
    return prog, fabricate(t, seed=3), s


# ---- schedule and coefficients ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 12])
def test_pair_schedule_places_every_mzi_once_in_light_order(kind, n):
    lay = layout(kind, n)
    even, odd = pair_schedule(lay)
    m = lay.n_mzi
    # light order: even half of step s, odd half of step s, even half of step s + 1, ...
    order = [(s, half, p) for s in range(even.shape[0]) for half, tab in ((0, even), (1, odd))
             for p in range(tab.shape[1])]
    seen = []
    for s, half, p in order:
        k = (even if half == 0 else odd)[s, p]
        if k < m:
            assert lay.pairs[k] == 2 * p + half  # the slot is the MZI's mode pair
            seen.append(k)
    assert sorted(seen) == list(range(m))
    # MZIs sharing a mode keep their layout (column) order
    pos = {k: i for i, k in enumerate(seen)}
    for i in range(m):
        for j in range(i + 1, m):
            if abs(lay.pairs[i] - lay.pairs[j]) <= 1 and lay.columns[i] < lay.columns[j]:
                assert pos[i] < pos[j]


def test_coefficients_equal_the_convention_products():
    lay, p = _random_mesh("clements", 9, seed=0)
    with jax.enable_x64(True):
        got = np.asarray(physical_coefficients(lay, p["internal"], p["external"], p["coupler_in"],
                                               p["coupler_out"], p["loss_db"]))
        want = ref_physical_mats(p["internal"], p["external"], p["coupler_in"], p["coupler_out"], p["loss_db"])
        np.testing.assert_allclose(got, want.reshape(-1, 4).T, rtol=0, atol=TOL["coefficient"])
        got = np.asarray(ideal_coefficients(p["internal"], p["external"]))
        want = convention.mzi(p["internal"], p["external"], xp=np)
        np.testing.assert_allclose(got, want.reshape(-1, 4).T, rtol=0, atol=TOL["coefficient"])
        amp = np.asarray(attenuator_amplitude(p["internal"], p["coupler_in"], p["coupler_out"], p["loss_db"]))
    # the attenuator is the upper-left entry of an MZI with external phase 0
    want = ref_physical_mats(p["internal"], 0.0, p["coupler_in"], p["coupler_out"], p["loss_db"])[:, 0, 0]
    np.testing.assert_allclose(amp, want, rtol=0, atol=TOL["coefficient"])


# ---- one physical mesh ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 11])
def test_physical_mesh_matches_the_mzi_by_mzi_product(kind, n):
    lay, p = _random_mesh(kind, n, seed=n)
    want = ref_mesh_matrix(lay, ref_physical_mats(p["internal"], p["external"], p["coupler_in"],
                                                  p["coupler_out"], p["loss_db"]), p["out_phase"])
    errs = {k: p[k] for k in ("coupler_in", "coupler_out", "loss_db")}
    rng = np.random.default_rng(1)
    x = rng.normal(size=n) + 1j * rng.normal(size=n)
    xb = rng.normal(size=(n, 5)) + 1j * rng.normal(size=(n, 5))
    with jax.enable_x64(True):
        u = np.asarray(physical_mesh_unitary(lay, p["internal"], p["external"], p["out_phase"], **errs))
        y = np.asarray(apply_physical_mesh(lay, p["internal"], p["external"], p["out_phase"], x, **errs))
        yb = np.asarray(jax.jit(lambda x: apply_physical_mesh(lay, p["internal"], p["external"], p["out_phase"],
                                                              x, **errs))(xb))
    assert u.dtype == np.complex128 and y.shape == (n,) and yb.shape == (n, 5)
    np.testing.assert_allclose(u, want, rtol=0, atol=TOL["field"])
    np.testing.assert_allclose(y, want @ x, rtol=0, atol=TOL["field"])
    np.testing.assert_allclose(yb, want @ xb, rtol=0, atol=TOL["field"])


@pytest.mark.parametrize("reverse_only", [False, True])
def test_physical_mesh_gradients_match_the_reference_gradient(reverse_only):
    lay, p = _random_mesh("clements", 6, seed=2)
    target = np.random.default_rng(3).normal(size=(6, 6))

    def loss(fn):
        def f(i, e, c, l):
            return jnp.sum(jnp.abs(fn(i, e, c, l) - target) ** 2)
        return f

    eye = np.eye(6)
    fast = loss(lambda i, e, c, l: apply_physical_mesh(lay, i, e, p["out_phase"], eye, coupler_in=c,
                                                       coupler_out=p["coupler_out"], loss_db=l,
                                                       reverse_only=reverse_only))
    ref = loss(lambda i, e, c, l: ref_mesh_matrix(lay, ref_physical_mats(i, e, c, p["coupler_out"], l, xp=jnp),
                                                  p["out_phase"], xp=jnp))
    with jax.enable_x64(True):
        args = tuple(jnp.asarray(p[k]) for k in ("internal", "external", "coupler_in", "loss_db"))
        got = jax.jit(jax.grad(fast, argnums=(0, 1, 2, 3)))(*args)
        # the reference traced into one program: the same MZI-by-MZI product, without an eager dispatch per op
        want = jax.jit(jax.grad(ref, argnums=(0, 1, 2, 3)))(*args)
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=TOL["grad"])
        modes = ("rev",) if reverse_only else ("fwd", "rev")
        # finite differences of the jitted fast path (its eager run is test_physical_mesh_matches_the_mzi_by_mzi_product)
        check_grads(jax.jit(fast), args, order=1, modes=modes, atol=TOL["fd_atol"], rtol=TOL["fd_rtol"])


@pytest.mark.parametrize("kind,n,b", [("clements", 7, 7), ("reck", 6, 4), ("clements", 8, 3), ("clements", 5, 9)])
def test_reverse_only_gradients_equal_the_default(kind, n, b):
    """Meshes and diagonals (one of them singular: an attenuator fully closed) with reverse_only: the same
    values and gradients (coefficients, diagonals, input fields) as the default path; fewer than N / 2 fields
    take the default path; forward mode is refused."""
    from photocomp.sim.physical import propagate_meshes

    lay = layout(kind, n)
    r = np.random.default_rng(n * 10 + b)
    with jax.enable_x64(True):
        coefs = [physical_coefficients(lay, *(jnp.asarray(r.uniform(0, 2 * np.pi, lay.n_mzi)) for _ in range(2)),
                                       jnp.asarray(r.normal(0, 0.05, lay.n_mzi)), 0.02, 0.2) for _ in range(3)]
        d1 = jnp.asarray(r.normal(size=n) + 1j * r.normal(size=n)).at[1].set(0.0)  # singular
        d2 = jnp.asarray(np.exp(1j * r.uniform(0, 2 * np.pi, n)))
        x = jnp.asarray(r.normal(size=(n, b)) + 1j * r.normal(size=(n, b)))
        target = jnp.asarray(r.normal(size=(n, b)) + 1j * r.normal(size=(n, b)))

        def loss(rev):
            def f(coefs, d1, d2, x):
                y = propagate_meshes(lay, coefs, [d1, d2], x, reverse_only=rev)
                return jnp.sum(jnp.abs(y - target) ** 2)
            return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))

        args = (coefs, d1, d2, x)
        (v0, g0), (v1, g1) = loss(False)(*args), loss(True)(*args)
        assert float(v1) == pytest.approx(float(v0), rel=1e-14)
        for g, w in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g0)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=TOL["grad"] * max(1.0, float(v0)))
        if 2 * b >= n:
            with pytest.raises(TypeError, match="forward-mode"):
                jax.jvp(lambda x: propagate_meshes(lay, coefs, [d1, d2], x, reverse_only=True), (x,), (x,))


def test_reverse_only_follows_float32_and_vmap():
    """Batched over meshes with jax.vmap, in float32: the same gradients as the default path."""
    lay = layout("clements", 8)
    r = np.random.default_rng(11)
    internal = jnp.asarray(r.uniform(0, 2 * np.pi, (3, lay.n_mzi)), dtype=jnp.float32)
    external = jnp.asarray(r.uniform(0, 2 * np.pi, (3, lay.n_mzi)), dtype=jnp.float32)
    out = jnp.zeros(8, jnp.float32)
    target = jnp.asarray(r.normal(size=(8, 8)), dtype=jnp.complex64)

    def loss(rev):
        def one(i, e):
            m = apply_physical_mesh(lay, i, e, out, jnp.eye(8, dtype=jnp.complex64), coupler_in=0.03,
                                    loss_db=0.2, reverse_only=rev)
            return jnp.sum(jnp.abs(m - target) ** 2)
        return jax.jit(jax.grad(lambda i, e: jnp.sum(jax.vmap(one)(i, e)), argnums=(0, 1)))

    got, want = loss(True)(internal, external), loss(False)(internal, external)
    for g, w in zip(got, want):
        assert g.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=TOL["float32"])


def test_physical_mesh_follows_float32():
    lay, p = _random_mesh("clements", 8, seed=4)
    want = ref_mesh_matrix(lay, ref_physical_mats(p["internal"], p["external"], 0.0, 0.0, 0.0), p["out_phase"])
    got = physical_mesh_unitary(lay, p["internal"].astype(np.float32), p["external"].astype(np.float32),
                                p["out_phase"].astype(np.float32))
    assert got.dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=TOL["float32"])


# ---- chips: the fused V mesh + attenuators + U mesh -----------------------------------------------------

def test_chip_tile_matrices_match_the_reference(tiled_chip):
    prog, chip, s = tiled_chip
    want = ref_chip_tiles(chip, s)
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(lambda s: chip_tile_matrices(chip, s, with_gain=False))(s))
        with_gain = np.asarray(chip_tile_matrices(chip, s))
    assert got.shape == (prog.n_tiles, 6, 6) and got.dtype == np.complex128
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL["field"])
    np.testing.assert_allclose(with_gain, want * np.asarray(s.gain)[:, None, None], rtol=0, atol=TOL["field"])


@pytest.mark.parametrize("reverse_only", [pytest.param(False, marks=pytest.mark.slow), True])
def test_matrix_error_gradient_matches_the_reference_gradient(tiled_chip, reverse_only):
    """value_and_grad of the calibration loss: fast path vs the MZI-by-MZI product's autodiff."""
    prog, chip, s = tiled_chip
    with jax.enable_x64(True):
        target = np.asarray(simulate.tile_matrices(prog.phase_map))

    def loss(tiles_fn):
        def f(v_int, u_ext, att):
            t = tiles_fn(s.replace(v_int=v_int, u_ext=u_ext, att=att))
            err, _ = _relative_error(jnp.asarray(target), t)
            return err ** 2
        return f

    fast = loss(lambda s: chip_tile_matrices(chip, s, with_gain=False, reverse_only=reverse_only))
    ref = loss(lambda s: ref_chip_tiles(chip, s, xp=jnp))
    with jax.enable_x64(True):
        args = (jnp.asarray(s.v_int), jnp.asarray(s.u_ext), jnp.asarray(s.att))
        v_fast, g_fast = jax.jit(jax.value_and_grad(fast, argnums=(0, 1, 2)))(*args)
        # the reference traced into one program: the same MZI-by-MZI product, without an eager dispatch per op
        v_ref, g_ref = jax.jit(jax.value_and_grad(ref, argnums=(0, 1, 2)))(*args)
        assert float(v_fast) == pytest.approx(float(v_ref), rel=1e-12)
        assert float(v_fast) > 1e-4  # the chip's errors are visible
        for g, w in zip(g_fast, g_ref):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=TOL["grad"])
        modes = ("rev",) if reverse_only else ("fwd", "rev")
        # finite differences of the jitted fast path (its eager run is test_chip_tile_matrices_match_the_reference)
        check_grads(jax.jit(fast), args, order=1, modes=modes, atol=TOL["fd_atol"], rtol=TOL["fd_rtol"])


@pytest.mark.slow  # run by .ci/run after the fast suite
def test_chip_forward_batches_equal_single_fields(tiled_chip):
    """A batch of >= K fields goes through the tile matrices; single fields are propagated."""
    prog, chip, s = tiled_chip
    want = prog.phase_map.grid.join(ref_chip_tiles(chip, s) * np.asarray(s.gain)[:, None, None])
    rng = np.random.default_rng(5)
    xb = rng.normal(size=(10, 9)) + 1j * rng.normal(size=(10, 9))
    with jax.enable_x64(True):
        batch = np.asarray(chip_forward(chip, s, xb))
        small = np.asarray(chip_forward(chip, s, xb[:, :3]))
        one = np.stack([np.asarray(chip_forward(chip, s, xb[:, j])) for j in range(9)], 1)
        inten = np.asarray(chip_forward(chip, s, xb, detection="intensity"))
    for got in (batch, one):
        np.testing.assert_allclose(got, want @ xb, rtol=0, atol=TOL["field"] * 10)
    np.testing.assert_allclose(small, want @ xb[:, :3], rtol=0, atol=TOL["field"] * 10)
    np.testing.assert_allclose(inten, np.abs(want @ xb) ** 2, rtol=0, atol=TOL["field"] * 100)


# ---- ideal programs ---------------------------------------------------------------------------------------

def test_ideal_tile_matrices_and_forward_paths_match_the_reference(tiled_chip):
    prog, _, _ = tiled_chip
    pm = prog.phase_map
    want_tiles = ref_ideal_tiles(pm)
    want = pm.grid.join(want_tiles)
    rng = np.random.default_rng(6)
    xb = rng.normal(size=(10, 20)) + 1j * rng.normal(size=(10, 20))
    with jax.enable_x64(True):
        tiles = np.asarray(simulate.tile_matrices(pm))
        batch = np.asarray(simulate.forward(pm, xb))  # 20 >= K: through the tile matrices
        small = np.asarray(simulate.forward(pm, xb[:, :2]))  # propagated
        one = np.asarray(jax.jit(simulate.forward)(pm, xb[:, 0]))
    np.testing.assert_allclose(tiles, want_tiles, rtol=0, atol=TOL["field"] * 10)
    np.testing.assert_allclose(batch, want @ xb, rtol=0, atol=TOL["field"] * 10)
    np.testing.assert_allclose(small, want @ xb[:, :2], rtol=0, atol=TOL["field"] * 10)
    np.testing.assert_allclose(one, want @ xb[:, 0], rtol=0, atol=TOL["field"] * 10)


def test_apply_meshes_matches_the_reference(tiled_chip):
    prog, _, _ = tiled_chip
    mp = prog.phase_map.u
    x = np.random.default_rng(8).normal(size=(prog.n_tiles, 6, 3)) + 0j
    with jax.enable_x64(True):
        got = np.asarray(simulate.apply_meshes(mp, x))
    for t in range(prog.n_tiles):
        u = ref_mesh_matrix(mp.layout, convention.mzi(mp.theta[t], mp.phi[t], xp=np), mp.out_phase[t])
        np.testing.assert_allclose(got[t], u @ x[t], rtol=0, atol=TOL["field"])


# ---- Program.forward through the folded matrix -----------------------------------------------------------------

@pytest.mark.parametrize("calibrated", [False, True])
def test_program_forward_equals_the_simulation(tiled_chip, calibrated):
    prog, chip, _ = tiled_chip
    if calibrated:
        prog = pc.calibrate(prog, chip, method="local", progress=False)
    rng = np.random.default_rng(9)
    xs = rng.normal(size=(70, 10)) + 1j * rng.normal(size=(70, 10))
    with jax.enable_x64(True):
        sim = np.asarray(jax.jit(jax.vmap(prog.forward_fn, in_axes=(None, 0)))(prog.params, jnp.asarray(xs)))
        batched = np.asarray(jax.vmap(prog.forward)(jnp.asarray(xs)))
        jitted = np.asarray(jax.jit(jax.vmap(prog.forward))(jnp.asarray(xs)))
    one = np.stack([prog.forward(x) for x in xs[:3]])
    assert batched.dtype == np.complex128 and one.dtype == np.complex128
    np.testing.assert_allclose(batched, sim, rtol=0, atol=TOL["field"] * 10)
    np.testing.assert_allclose(jitted, sim, rtol=0, atol=TOL["field"] * 10)
    np.testing.assert_allclose(one, sim[:3], rtol=0, atol=TOL["field"] * 10)
    # float32 callers get float32 results of the same matrix
    y32 = jax.vmap(prog.forward)(jnp.asarray(xs, dtype=jnp.complex64))
    assert y32.dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(y32), sim, rtol=0, atol=TOL["float32"] * np.abs(sim).max())


def test_second_call_does_not_recompile(tiled_chip):
    _, chip, s = tiled_chip
    with jax.enable_x64(True):
        f = jax.jit(lambda s: chip_tile_matrices(chip, s))
        f(s)
        f(s.replace(v_int=np.asarray(s.v_int) + 0.1))
        assert f._cache_size() == 1


# ---- the vectorised sin/cos ------------------------------------------------------------------------------

def test_sincos_is_within_one_ulp_of_numpy():
    from photocomp.sim.physical import sincos

    rng = np.random.default_rng(10)
    x = np.concatenate([rng.uniform(-7, 7, 20000), rng.uniform(-1e6, 1e6, 20000),
                        np.arange(-8, 9) * np.pi / 4, [0.0, -0.0, 1e-300, 5e-324, np.nextafter(np.pi / 4, 1)]])
    with jax.enable_x64(True):
        s, c = (np.asarray(v) for v in jax.jit(sincos)(x))
        ds = np.asarray(jax.vmap(jax.grad(lambda t: sincos(t)[0] + 2 * sincos(t)[1]))(x[:100]))
        dc = np.asarray(jax.jvp(lambda t: sincos(t)[1], (x[:100],), (np.ones(100),))[1])
        nan = np.asarray(jax.jit(sincos)(np.array([np.nan, np.inf, -np.inf]))[0])
        const = sincos(x[:100])  # a constant goes through numpy at trace time
    np.testing.assert_array_equal(np.asarray(const[0]), np.sin(x[:100]))
    np.testing.assert_allclose(s, np.sin(x), rtol=0, atol=1.2e-16)
    np.testing.assert_allclose(c, np.cos(x), rtol=0, atol=1.2e-16)
    np.testing.assert_allclose(ds, np.cos(x[:100]) - 2 * np.sin(x[:100]), rtol=0, atol=1e-15)
    np.testing.assert_allclose(dc, -np.sin(x[:100]), rtol=0, atol=1e-15)
    assert np.isnan(nan).all()
    s32, c32 = sincos(x[:100].astype(np.float32))
    assert s32.dtype == jnp.float32 and c32.dtype == jnp.float32


# ---- batches folded into the tile matrices under jax.vmap ---------------------------------------------------

@pytest.mark.slow  # run by .ci/run after the fast suite
def test_vmapped_forward_folds_and_keeps_every_transformation(tiled_chip):
    """vmap over x with shared phases goes through the tile matrices; vmap over phases, grad, jvp still work."""
    prog, chip, s = tiled_chip
    pm = prog.phase_map
    rng = np.random.default_rng(11)
    xs = jnp.asarray(rng.normal(size=(9, 10)) + 1j * rng.normal(size=(9, 10)))
    want = pm.grid.join(ref_ideal_tiles(pm))
    with jax.enable_x64(True):
        folded = np.asarray(jax.jit(jax.vmap(simulate.forward, in_axes=(None, 0)))(pm, xs))
        few = np.asarray(jax.vmap(simulate.forward, in_axes=(None, 0))(pm, xs[:3]))  # fewer than K: propagated
        chip_folded = np.asarray(jax.vmap(lambda x: chip_forward(chip, s, x))(xs))
        # per-example phases: propagated, one program per example
        pms = jax.tree_util.tree_map(lambda a: np.stack([a, a + 0.01]), pm)
        per_example = np.asarray(jax.vmap(simulate.forward)(pms, xs[:2]))
        second = np.asarray(simulate.forward(jax.tree_util.tree_map(lambda a: a[1], pms), xs[1]))

        def loss(theta, batch):
            p = pm.replace(u=dataclasses.replace(pm.u, theta=theta))
            return jnp.sum(jnp.abs(batch(p)) ** 2)

        theta = jnp.asarray(pm.u.theta)
        vmapped = lambda t: loss(t, lambda p: jax.vmap(simulate.forward, in_axes=(None, 0))(p, xs))  # noqa: E731
        looped = lambda t: loss(t, lambda p: jnp.stack([simulate.forward(p, x) for x in xs]))  # noqa: E731
        g_v, g_l = jax.grad(vmapped)(theta), jax.grad(looped)(theta)
        check_grads(vmapped, (theta,), order=1, modes=("fwd", "rev"), atol=TOL["fd_atol"], rtol=TOL["fd_rtol"])
    np.testing.assert_allclose(folded, np.asarray(xs) @ want.T, rtol=0, atol=TOL["field"] * 100)
    np.testing.assert_allclose(few, np.asarray(xs[:3]) @ want.T, rtol=0, atol=TOL["field"] * 100)
    want_chip = pm.grid.join(ref_chip_tiles(chip, s) * np.asarray(s.gain)[:, None, None])
    np.testing.assert_allclose(chip_folded, np.asarray(xs) @ want_chip.T, rtol=0, atol=TOL["field"] * 100)
    np.testing.assert_allclose(per_example[1], second, rtol=0, atol=TOL["field"])
    np.testing.assert_allclose(np.asarray(g_v), np.asarray(g_l), rtol=0, atol=TOL["grad"] * 100)
