"""Mesh layouts and the Clements/Reck decompositions: structure, accuracy, jit, statistics."""

import importlib
import types

import jax
import numpy as np
import pytest
import scipy.stats
from conftest import BOUND, TOL, haar_unitary, mesh_matrix_np

import photocomp as pc
from photocomp.core import reference
from photocomp.core.errors import InvalidInputError, InvalidTypeError, UnknownNameError
from photocomp.core.layout import nulling_levels, nulling_schedule

# photocomp.compiler.decompose is the function (re-exported); the module holds the jitted core.
decompose_module = importlib.import_module("photocomp.compiler.decompose")

KINDS = ("clements", "reck")

# Twelve sizes in 1..64: the edge cases plus eight drawn with a fixed seed.
RECON_SIZES = sorted(
    {1, 2, 3, 64} | {int(n) for n in np.random.default_rng(64).choice(np.arange(4, 64), 8, replace=False)}
)


# ---- layouts --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_mzi_counts(kind):
    for n in range(1, 21):
        lay = pc.layout(kind, n)
        assert lay.n_mzi == n * (n - 1) // 2, n
        assert len(lay.columns) == lay.n_mzi
        assert lay.n_modes == n and lay.kind == kind


def test_clements_depth():
    assert pc.layout("clements", 1).depth == 0
    assert pc.layout("clements", 2).depth == 1  # a single MZI
    for n in range(3, 21):
        assert pc.layout("clements", n).depth == n, n


def test_reck_depth():
    assert pc.layout("reck", 1).depth == 0
    for n in range(2, 21):
        assert pc.layout("reck", n).depth == 2 * n - 3, n


def test_clements_column_parity_rule():
    """Column c holds exactly the pairs n = c (mod 2), n = 0 .. N-2 (N >= 3)."""
    for n in range(3, 21):
        lay = pc.layout("clements", n)
        for c in range(lay.depth):
            got = sorted(p for p, col in zip(lay.pairs, lay.columns) if col == c)
            assert got == list(range(c % 2, n - 1, 2)), (n, c)


@pytest.mark.parametrize("kind", KINDS)
def test_no_two_mzis_in_a_column_share_a_mode(kind):
    for n in range(2, 21):
        lay = pc.layout(kind, n)
        for c in range(lay.depth):
            modes = [m for p, col in zip(lay.pairs, lay.columns) if col == c for m in (p, p + 1)]
            assert len(modes) == len(set(modes)), (n, c)
            assert all(0 <= m < n for m in modes)


@pytest.mark.parametrize("kind", KINDS)
def test_layout_order_is_column_major_and_every_pair_is_used(kind):
    for n in range(2, 13):
        lay = pc.layout(kind, n)
        keys = list(zip(lay.columns, lay.pairs))
        assert keys == sorted(keys)
        assert set(lay.pairs) == set(range(n - 1))


def test_reck_mzis_per_pair():
    """Reck: pair k carries N - 1 - k MZIs (the triangle)."""
    for n in range(2, 13):
        lay = pc.layout("reck", n)
        counts = np.bincount(lay.pairs, minlength=n - 1)
        np.testing.assert_array_equal(counts, np.arange(n - 1, 0, -1))


def test_layout_is_hashable_static_and_cached():
    a, b = pc.layout("clements", 6), pc.layout("clements", 6)
    assert a == b and hash(a) == hash(b)
    assert a != pc.layout("reck", 6)
    assert len({a, b, pc.layout("reck", 6)}) == 2


@pytest.mark.parametrize("bad", [0, -1, 2.0, "4", None, True])
def test_layout_rejects_bad_sizes(bad):
    with pytest.raises(InvalidInputError, match="n_modes"):
        pc.layout("clements", bad)


def test_layout_rejects_unknown_kind():
    with pytest.raises(UnknownNameError, match="mesh kind"):
        pc.layout("triangle", 4)


def test_reck_nulling_levels():
    """Reck: 2N - 3 levels, step (r, c) at level c + 2 (N-1-r)."""
    for n in range(2, 30):
        sched = nulling_schedule("reck", n)
        levels = nulling_levels("reck", n)
        assert levels.max() + 1 == 2 * n - 3 if n > 2 else levels.max() + 1 == 1
        np.testing.assert_array_equal(levels, sched["k"] + 2 * (n - 1 - sched["target"]))


def test_clements_nulling_levels_are_a_chain():
    """Every Clements step reads an entry the step before it changed: N(N-1)/2 levels."""
    for n in range(2, 30):
        np.testing.assert_array_equal(nulling_levels("clements", n), np.arange(n * (n - 1) // 2))


def _null_by_levels(u, kind):
    """Run the reference's nulling steps level by level: all angles of a level from the same matrix, then
    all its multiplications; returns theta, phi in nulling order and the final diagonal."""
    u = np.array(u, dtype=np.complex128)
    sched = nulling_schedule(kind, u.shape[0])
    levels = nulling_levels(kind, u.shape[0])
    theta, phi = np.zeros(len(levels)), np.zeros(len(levels))
    for lv in range(levels.max() + 1):
        steps = np.flatnonzero(levels == lv)
        for s in steps:  # angles first, from the matrix as the previous level left it
            k, t = sched["k"][s], sched["target"][s]
            if sched["left"][s]:
                theta[s], phi[s] = reference._angles_to_null_left(u[k, t], u[k + 1, t])
            else:
                theta[s], phi[s] = reference._angles_to_null_right(u[t, k], u[t, k + 1])
        for s in steps[::-1]:  # then the multiplications, in reverse order on purpose
            k = sched["k"][s]
            if sched["left"][s]:
                reference._multiply_left(u, k, theta[s], phi[s])
            else:
                reference._multiply_right_by_inverse(u, k, theta[s], phi[s])
    return theta, phi, np.diag(u)


@pytest.mark.parametrize("kind", KINDS)
def test_level_schedule_gives_the_sequential_phases(kind):
    """Steps of one level are independent: running them at once reproduces the sequential nulling."""
    for n in (2, 3, 6, 9):
        u = haar_unitary(n, np.random.default_rng([30, n]))
        theta, phi, diag = _null_by_levels(u, kind)
        sched = nulling_schedule(kind, n)
        ops, _ = (reference.clements_reference if kind == "clements" else reference.reck_reference)(u)
        # the reference lists right steps in nulling order, then left steps reversed (moved phases)
        order = np.concatenate([np.flatnonzero(~sched["left"]), np.flatnonzero(sched["left"])[::-1]])
        ref_theta = np.array([op[1] for op in ops])
        np.testing.assert_allclose(theta[order], ref_theta, rtol=0, atol=BOUND["reconstruction"])
        right = ~sched["left"][order]
        ref_phi = np.array([op[2] for op in ops])
        np.testing.assert_allclose(np.exp(1j * phi[order][right]), np.exp(1j * ref_phi[right]), rtol=0,
                                   atol=BOUND["reconstruction"])
        np.testing.assert_allclose(np.abs(diag), 1.0, rtol=0, atol=BOUND["reconstruction"])


# ---- reconstruction --------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", RECON_SIZES)
def test_reconstruction_haar(kind, n):
    us = haar_unitary(n, np.random.default_rng([1, n]), size=3)
    ph = pc.decompose(us, kind)
    assert ph.theta.shape == (3, n * (n - 1) // 2) and ph.out_phase.shape == (3, n)
    for i in range(3):
        rebuilt = mesh_matrix_np(ph.layout, ph.theta[i], ph.phi[i], ph.out_phase[i])
        np.testing.assert_allclose(rebuilt, us[i], rtol=0, atol=BOUND["reconstruction"])


@pytest.mark.parametrize("n", [128, 256])
def test_reconstruction_haar_large_clements(n):
    u = haar_unitary(n, np.random.default_rng([2, n]))
    ph = pc.clements(u)
    rebuilt = mesh_matrix_np(ph.layout, ph.theta, ph.phi, ph.out_phase)
    np.testing.assert_allclose(rebuilt, u, rtol=0, atol=BOUND["reconstruction"])


def _reference_phases(u, kind):
    """The NumPy reference's theta, phi in layout order and its output phases."""
    n = u.shape[0]
    sched = nulling_schedule(kind, n)
    ops, out = (reference.clements_reference if kind == "clements" else reference.reck_reference)(u)
    order = np.concatenate([np.flatnonzero(~sched["left"]), np.flatnonzero(sched["left"])[::-1]])
    slots = sched["slot"][order]  # layout position of the reference's m-th MZI
    theta, phi = np.zeros(len(ops)), np.zeros(len(ops))
    theta[slots] = [op[1] for op in ops]
    phi[slots] = [op[2] for op in ops]
    assert [int(sched["layout"].pairs[s]) for s in slots] == [int(op[0]) for op in ops]
    return theta, phi, out


def _assert_same_phases(ph, theta, phi, out):
    """theta and output phases to ~1e-12; phi on the circle, weighted by sin(theta) (phi of a bar-state
    MZI is ill-conditioned: it multiplies only the nulled, ~0 entry). The moved phases sum rounding along
    chains of up to N/2 MZIs, so the bound grows as N x 4e-14 past N = 25. At N = 256 the largest
    difference depends on the rounding of the random unitary's QR and of the kernel, which differ between
    NumPy's bundled LAPACK builds, JAX releases and the CPUs they dispatch for: 3.1e-12 with NumPy 2.0-2.2,
    2.7e-12 with NumPy 2.4 on an AMD EPYC, below 2.6e-12 on another x86 machine, 5.25e-12 (one entry of
    32,640) with NumPy 2.0 and JAX 0.8 on a third (bound: 1.02e-11; a wrong phase is off by far more)."""
    tol = max(BOUND["reconstruction"], 4e-14 * ph.layout.n_modes)
    np.testing.assert_allclose(ph.theta, theta, rtol=0, atol=tol)
    np.testing.assert_allclose(np.sin(ph.theta) * np.exp(1j * ph.phi), np.sin(theta) * np.exp(1j * phi),
                               rtol=0, atol=tol)
    np.testing.assert_allclose(np.exp(1j * ph.out_phase), np.exp(1j * out), rtol=0, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [2, 3, 7, 16, 64])
def test_phases_equal_numpy_reference(kind, n):
    """The same nulling gives the same phases as the float64 NumPy reference."""
    u = haar_unitary(n, np.random.default_rng([31, n]))
    _assert_same_phases(pc.decompose(u, kind), *_reference_phases(u, kind))


@pytest.mark.parametrize("kind", KINDS)
def test_phases_equal_numpy_reference_n256(kind):
    u = haar_unitary(256, np.random.default_rng(32))
    _assert_same_phases(pc.decompose(u, kind), *_reference_phases(u, kind))


@pytest.mark.parametrize("kind", KINDS)
def test_phases_of_structured_unitaries_equal_reference(kind):
    """Exact zeros and signed zeros in the input: the reference's conventions (phi = 0 where the nulled
    entry is 0, arg of -0 is pi). (Where an entry the reference nulls exactly is a rounding residue
    instead, its phase is arbitrary; the permutation test below checks those by reconstruction only.)"""
    n = 5
    r = np.random.default_rng(33)
    block = np.eye(n, dtype=complex)
    block[:2, :2] = haar_unitary(2, r)
    for u in (np.eye(n), -np.eye(n), np.diag(np.exp(1j * r.uniform(0, 2 * np.pi, n))), block):
        _assert_same_phases(pc.decompose(u, kind), *_reference_phases(u, kind))


def _item(ph, i):
    """Batch item ``i`` of a decomposition, in the form :func:`_assert_same_phases` takes."""
    return types.SimpleNamespace(layout=ph.layout, theta=ph.theta[i], phi=ph.phi[i], out_phase=ph.out_phase[i])


@pytest.mark.parametrize("kind", KINDS)
def test_batched_phases_at_small_and_odd_sizes_equal_reference(kind):
    """Every unitary of a batch (decomposed together, on the kernel's batch path) has the float64
    reference's phases, at N = 1 (no MZI: only the output phase), N = 2 (one MZI) and odd N (Clements
    then ends on a left sweep)."""
    for n in (1, 2, 5, 9):
        us = haar_unitary(n, np.random.default_rng([38, n]), size=4)
        ph = pc.decompose(us, kind)
        assert ph.theta.shape == ph.phi.shape == (4, n * (n - 1) // 2) and ph.out_phase.shape == (4, n)
        for i in range(4):
            _assert_same_phases(_item(ph, i), *_reference_phases(us[i], kind))


@pytest.mark.parametrize("kind", KINDS)
def test_diagonal_unitaries_equal_reference(kind):
    """Diagonal unitaries (every entry the kernel nulls is an exact zero, so each rotation takes the
    guarded r = 0 path: theta = 0) at several N, as a batch and alone: the reference's theta, phi and
    output phases (Clements' left MZIs, moved through the middle screen, take part of its phases as
    phi), and the rebuilt mesh is the input."""
    r = np.random.default_rng(39)
    for n in (1, 3, 6):
        ds = np.stack([np.diag(np.exp(1j * r.uniform(-np.pi, np.pi, n))) for _ in range(3)])
        ph = pc.decompose(ds, kind)
        np.testing.assert_array_equal(ph.theta, 0.0)
        for i in range(3):
            _assert_same_phases(_item(ph, i), *_reference_phases(ds[i], kind))
            rebuilt = mesh_matrix_np(ph.layout, ph.theta[i], ph.phi[i], ph.out_phase[i])
            np.testing.assert_allclose(rebuilt, ds[i], rtol=0, atol=BOUND["reconstruction"])
        single = pc.decompose(ds[0], kind)
        np.testing.assert_array_equal(single.phi, ph.phi[0])
        np.testing.assert_array_equal(single.out_phase, ph.out_phase[0])


@pytest.mark.parametrize("kind", KINDS)
def test_permutation_thetas_equal_reference(kind):
    """Permutations times phase screens (N = 2..5): every nulled pair holds an exact zero, so the
    rotations are exact swaps or identities (theta in {0, pi/2}) and the divisions by |a|, |b| meet
    zeros. theta equals the reference's exactly; phi is the phase of an exactly zero entry where theta =
    pi/2 (its sign convention differs between the reference's matrix products and the kernel's
    rotations), so the phases are checked by rebuilding the mesh."""
    r = np.random.default_rng(40)
    for n in (2, 3, 5):
        perms = [np.roll(np.arange(n), s) for s in range(n)] + [np.arange(n)[::-1]]
        mats = np.stack([np.diag(np.exp(1j * r.uniform(0, 2 * np.pi, n))) @ np.eye(n)[p] for p in perms])
        ph = pc.decompose(mats, kind)
        for i, m in enumerate(mats):
            theta, _, _ = _reference_phases(m, kind)
            np.testing.assert_allclose(ph.theta[i], theta, rtol=0, atol=1e-15)
            assert set(np.round(ph.theta[i] / (np.pi / 2), 12)) <= {0.0, 1.0}
            rebuilt = mesh_matrix_np(ph.layout, ph.theta[i], ph.phi[i], ph.out_phase[i])
            np.testing.assert_allclose(rebuilt, m, rtol=0, atol=BOUND["reconstruction"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("b", [33, 300])
def test_chunked_batches_equal_loop_exactly(kind, b):
    """Batches cut into several chunks and dispatched groups (and padded) give bitwise the results of
    one-by-one calls."""
    us = haar_unitary(8, np.random.default_rng([34, b]), size=b)
    batch = pc.decompose(us, kind)
    for i in (0, 17, 32, b - 1):  # 32: the first unitary of the second group on a CPU
        one = pc.decompose(us[i], kind)
        np.testing.assert_array_equal(one.theta, batch.theta[i])
        np.testing.assert_array_equal(one.phi, batch.phi[i])
        np.testing.assert_array_equal(one.out_phase, batch.out_phase[i])


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_reconstruction_haar_n1024(kind):
    u = haar_unitary(1024, np.random.default_rng(35))
    ph = pc.decompose(u, kind)
    rebuilt = mesh_matrix_np(ph.layout, ph.theta, ph.phi, ph.out_phase)
    np.testing.assert_allclose(rebuilt, u, rtol=0, atol=BOUND["reconstruction"])


@pytest.mark.parametrize("kind", KINDS)
def test_library_simulator_agrees_with_rebuild(kind):
    us = haar_unitary(7, np.random.default_rng(3), size=2)
    ph = pc.decompose(us, kind)
    with jax.enable_x64(True):
        sim = np.asarray(ph.unitary())
    assert sim.dtype == np.complex128
    np.testing.assert_allclose(sim, us, rtol=0, atol=BOUND["reconstruction"])


@pytest.mark.parametrize("kind", KINDS)
def test_reconstruction_of_permutations_and_phase_screens(kind):
    """Unitaries full of exact zeros: every permutation of 4 modes times random phases."""
    import itertools

    n = 4
    r = np.random.default_rng(4)
    mats = []
    for perm in itertools.permutations(range(n)):
        p = np.eye(n)[list(perm)]
        mats.append(np.diag(np.exp(1j * r.uniform(0, 2 * np.pi, n))) @ p)
    mats = np.array(mats)
    ph = pc.decompose(mats, kind)
    for i in range(len(mats)):
        rebuilt = mesh_matrix_np(ph.layout, ph.theta[i], ph.phi[i], ph.out_phase[i])
        np.testing.assert_allclose(rebuilt, mats[i], rtol=0, atol=BOUND["reconstruction"])
    assert np.all(np.isfinite(ph.theta)) and np.all(np.isfinite(ph.phi))


@pytest.mark.parametrize("kind", KINDS)
def test_identity_needs_no_crossing(kind):
    ph = pc.decompose(np.eye(6), kind)
    np.testing.assert_allclose(np.sin(ph.theta), 0.0, rtol=0, atol=BOUND["reconstruction"])


@pytest.mark.parametrize("kind", KINDS)
def test_batch_equals_loop_exactly(kind):
    us = haar_unitary(6, np.random.default_rng(5), size=5)
    batch = pc.decompose(us, kind)
    for i in range(5):
        one = pc.decompose(us[i], kind)
        np.testing.assert_array_equal(one.theta, batch.theta[i])
        np.testing.assert_array_equal(one.phi, batch.phi[i])
        np.testing.assert_array_equal(one.out_phase, batch.out_phase[i])


@pytest.mark.parametrize("kind", KINDS)
def test_output_ranges(kind):
    us = haar_unitary(9, np.random.default_rng(6), size=16)
    ph = pc.decompose(us, kind)
    assert ph.theta.min() >= 0.0 and ph.theta.max() <= np.pi / 2
    for a in (ph.phi, ph.out_phase):
        assert a.min() >= 0.0 and a.max() < 2 * np.pi


def test_clements_and_reck_helpers_match_decompose():
    u = haar_unitary(5, np.random.default_rng(8))
    for fn, kind in ((pc.clements, "clements"), (pc.reck, "reck")):
        a, b = fn(u), pc.decompose(u, kind)
        assert a.layout == b.layout
        np.testing.assert_array_equal(a.theta, b.theta)
        np.testing.assert_array_equal(a.phi, b.phi)


def test_input_not_modified():
    u = haar_unitary(5, np.random.default_rng(9))
    before = u.copy()
    pc.decompose(u, "clements")
    np.testing.assert_array_equal(u, before)


# ---- bad input --------------------------------------------------------------------


def test_rejects_non_unitary():
    w = np.random.default_rng(10).standard_normal((4, 4))
    with pytest.raises(InvalidInputError, match="unitary"):
        pc.decompose(w, "clements")
    # unless the check is switched off (garbage in, finite garbage out)
    ph = pc.decompose(w, "clements", check=False)
    assert np.all(np.isfinite(ph.theta))


def test_unitarity_tolerance_is_respected():
    u = haar_unitary(4, np.random.default_rng(11))
    pc.decompose(u * (1 + 1e-10), "reck")  # within the default atol=1e-8
    with pytest.raises(InvalidInputError, match="unitary"):
        pc.decompose(u * (1 + 1e-10), "reck", atol=1e-12)


def test_unitarity_check_reports_the_deviation():
    """For U = (1 + e) V the check measures e (= max |U U^H - I| / 2 to first order)."""
    u = haar_unitary(6, np.random.default_rng(36)) * (1 + 3e-9)
    with pytest.raises(InvalidInputError, match=r"unitary must be unitary to atol=1e-09; got a deviation of 3e-09"):
        pc.decompose(u, "clements", atol=1e-9)
    batch = np.stack([haar_unitary(6, np.random.default_rng(37)), u])
    with pytest.raises(InvalidInputError, match=r"batch item 1"):
        pc.decompose(batch, "reck", atol=1e-9)


@pytest.mark.parametrize(
    "bad",
    [np.ones((3, 4)), np.ones(4), np.ones((2, 3, 4)), np.ones((2, 2, 2, 2)), np.zeros((0, 0))],
    ids=["3x4", "1-D", "batch-non-square", "4-D", "empty"],
)
def test_rejects_non_square(bad):
    with pytest.raises(InvalidInputError, match="unitary must be a square"):
        pc.decompose(bad, "clements")


def test_rejects_nan_and_inf():
    for v in (np.nan, np.inf):
        u = np.eye(3, dtype=complex)
        u[1, 2] = v
        with pytest.raises(InvalidInputError, match="unitary must be finite"):
            pc.decompose(u, "clements", check=False)


@pytest.mark.parametrize("bad", ["eye", b"eye", None, np.array([["a", "b"], ["c", "d"]]), np.eye(2, dtype=object)])
def test_rejects_non_numeric(bad):
    with pytest.raises(InvalidTypeError, match="unitary must be a numeric"):
        pc.decompose(bad, "clements")


def test_rejects_unknown_kind():
    with pytest.raises(UnknownNameError, match="kind"):
        pc.decompose(np.eye(3), "triangle")


# ---- jit and precision --------------------------------------------------------------


def test_second_call_does_not_retrace():
    cache = decompose_module._decompose_jit
    us = haar_unitary(11, np.random.default_rng(12), size=2)
    pc.decompose(us[0], "clements")
    size = cache._cache_size()
    pc.decompose(us[1], "clements")
    pc.decompose(us[0] * np.exp(0.3j), "clements")
    assert cache._cache_size() == size
    # batches are padded to powers of two: sizes 3 and 4 share one compiled program
    b3 = haar_unitary(11, np.random.default_rng(13), size=3)
    pc.decompose(b3, "clements")
    size = cache._cache_size()
    pc.decompose(np.concatenate([b3, us[:1]]), "clements")
    assert cache._cache_size() == size


def test_float64_results_with_x64_off():
    assert jax.config.jax_enable_x64 is False
    u = haar_unitary(10, np.random.default_rng(14))
    ph = pc.decompose(u, "clements")
    assert jax.config.jax_enable_x64 is False
    for a in (ph.theta, ph.phi, ph.out_phase):
        assert isinstance(a, np.ndarray) and a.dtype == np.float64
    # float64 accuracy (float32 arithmetic would leave ~1e-6)
    rebuilt = mesh_matrix_np(ph.layout, ph.theta, ph.phi, ph.out_phase)
    np.testing.assert_allclose(rebuilt, u, rtol=0, atol=BOUND["reconstruction"])


def test_float64_results_from_complex64_input():
    u = haar_unitary(10, np.random.default_rng(15)).astype(np.complex64)
    ph = pc.decompose(u, "reck", atol=1e-5)
    assert jax.config.jax_enable_x64 is False
    assert ph.theta.dtype == np.float64 and ph.out_phase.dtype == np.float64
    rebuilt = mesh_matrix_np(ph.layout, ph.theta, ph.phi, ph.out_phase)
    np.testing.assert_allclose(rebuilt, u.astype(np.complex128), rtol=0, atol=TOL["complex64"])


# ---- Haar statistics oracle (Russell et al. 2017; Pai et al. 2019) --------------------

HAAR_N = 8
HAAR_B = 400


def clements_alpha(n_modes, pair, column):
    return min(2 * min(pair, n_modes - 2 - pair) + 2, 2 * min(column, n_modes - 1 - column) + 1)


def reck_alpha(pair):
    """Reck: counting pairs k = 1, 2, ... from the side with the most MZIs (mode pair 0), alpha = k."""
    return pair + 1


@pytest.fixture(scope="module")
def haar_batch():
    return haar_unitary(HAAR_N, np.random.default_rng(2019), size=HAAR_B)


@pytest.fixture(scope="module")
def haar_phases(haar_batch):
    return {kind: pc.decompose(haar_batch, kind) for kind in KINDS}


def test_alpha_sums():
    n = HAAR_N
    lay = pc.layout("clements", n)
    assert sum(clements_alpha(n, p, c) for p, c in zip(lay.pairs, lay.columns)) == n * (n * n - 1) // 6
    lay = pc.layout("reck", n)
    assert sum(reck_alpha(p) for p in lay.pairs) == n * (n * n - 1) // 6
    for m in range(2, 21):
        lay = pc.layout("clements", m)
        assert sum(clements_alpha(m, p, c) for p, c in zip(lay.pairs, lay.columns)) == m * (m * m - 1) // 6


def _ks_pvalues(theta, alphas):
    cross = np.sin(theta) ** 2
    return np.array([scipy.stats.kstest(cross[:, i], scipy.stats.beta(a, 1).cdf).pvalue for i, a in enumerate(alphas)])


def test_clements_cross_power_is_beta(haar_phases):
    ph = haar_phases["clements"]
    lay = ph.layout
    alphas = [clements_alpha(HAAR_N, p, c) for p, c in zip(lay.pairs, lay.columns)]
    p = _ks_pvalues(ph.theta, alphas)
    bad = [(lay.pairs[i], lay.columns[i], alphas[i], p[i]) for i in np.flatnonzero(p <= BOUND["ks_pvalue"])]
    assert not bad, f"(pair, column, alpha, p) failing the KS test: {bad}"


def test_clements_bar_power_is_not_beta(haar_phases):
    """Sanity of the oracle: the wrong variable (cos^2) fails where alpha != 1."""
    ph = haar_phases["clements"]
    lay = ph.layout
    alphas = np.array([clements_alpha(HAAR_N, p, c) for p, c in zip(lay.pairs, lay.columns)])
    p = _ks_pvalues(np.pi / 2 - ph.theta, alphas)
    assert np.all(p[alphas > 1] < BOUND["ks_reject"])


def test_reck_cross_power_is_beta(haar_phases):
    ph = haar_phases["reck"]
    lay = ph.layout
    alphas = [reck_alpha(p) for p in lay.pairs]
    p = _ks_pvalues(ph.theta, alphas)
    bad = [(lay.pairs[i], lay.columns[i], alphas[i], p[i]) for i in np.flatnonzero(p <= BOUND["ks_pvalue"])]
    assert not bad, f"(pair, column, alpha, p) failing the KS test: {bad}"


def test_reck_alpha_counts_from_the_long_side(haar_phases):
    """The other counting (alpha = N - 1 - pair, from the short side) is rejected."""
    ph = haar_phases["reck"]
    lay = ph.layout
    wrong = [HAAR_N - 1 - p for p in lay.pairs]
    p = _ks_pvalues(ph.theta, wrong)
    differs = np.array([w != reck_alpha(q) for w, q in zip(wrong, lay.pairs)])
    assert np.all(p[differs] < BOUND["ks_reject"])


@pytest.mark.parametrize("kind", KINDS)
def test_external_and_output_phases_are_uniform(haar_phases, kind):
    ph = haar_phases[kind]
    uniform = scipy.stats.uniform(0, 2 * np.pi).cdf
    p_phi = np.array([scipy.stats.kstest(ph.phi[:, i], uniform).pvalue for i in range(ph.phi.shape[1])])
    p_out = np.array([scipy.stats.kstest(ph.out_phase[:, i], uniform).pvalue for i in range(HAAR_N)])
    assert p_phi.min() > BOUND["ks_pvalue"], np.flatnonzero(p_phi <= BOUND["ks_pvalue"])
    assert p_out.min() > BOUND["ks_pvalue"], np.flatnonzero(p_out <= BOUND["ks_pvalue"])


@pytest.mark.parametrize("kind", KINDS)
def test_haar_sampled_phases_give_haar_unitaries(kind):
    """The inverse direction: phases drawn from the oracle's laws give Haar unitaries.

    E|Tr U|^2 = 1 and E|U_ij|^2 = 1/N (docs/design.md §5); |U_00|^2 ~ Beta(1, N - 1).
    """
    n, b = 6, 4000
    lay = pc.layout(kind, n)
    r = np.random.default_rng(2017)
    if kind == "clements":
        alphas = np.array([clements_alpha(n, p, c) for p, c in zip(lay.pairs, lay.columns)])
    else:
        alphas = np.array([reck_alpha(p) for p in lay.pairs])
    cross = r.uniform(size=(b, lay.n_mzi)) ** (1.0 / alphas)  # Beta(alpha, 1) by inversion
    theta = np.arcsin(np.sqrt(cross))
    phi = r.uniform(0, 2 * np.pi, (b, lay.n_mzi))
    out = r.uniform(0, 2 * np.pi, (b, n))
    with jax.enable_x64(True):
        u = np.asarray(pc.MeshPhases(lay, theta, phi, out).unitary())
    tr2 = np.abs(np.trace(u, axis1=1, axis2=2)) ** 2
    # Var |Tr U|^2 = 1 for Haar U (N >= 2): five standard errors
    assert abs(tr2.mean() - 1.0) < 5 / np.sqrt(b)
    p2 = np.abs(u) ** 2
    se = np.sqrt((n - 1) / (n * n * (n + 1)) / b)  # std of Beta(1, N-1) / sqrt(b)
    np.testing.assert_allclose(p2.mean(axis=0), np.full((n, n), 1 / n), rtol=0, atol=5 * se)
    assert scipy.stats.kstest(p2[:, 0, 0], scipy.stats.beta(1, n - 1).cdf).pvalue > BOUND["ks_pvalue"]


@pytest.mark.parametrize("kind", ["clements", "reck"])
@pytest.mark.parametrize("n", [2, 5, 64, 128, 256, 300])
def test_line_updates_counts_the_stripes_the_kernel_rotates(kind, n):
    """Every step rotates at least the lines it must (a Clements step j of a sweep touches n - j lines, a
    Reck step on row r the rows 0..r) and at most n; meshes small enough for one stripe length rotate n."""
    from photocomp.compiler.decompose import line_updates

    steps = n * (n - 1) // 2
    if kind == "clements":
        needed = sum(n - j for i in range(n - 1) for j in range(i + 1))
    else:
        needed = sum(r * (r + 1) for r in range(1, n))
    got = line_updates(kind, n)
    assert needed <= got <= steps * n
    if n <= 128:  # one stripe length: every step rotates whole lines
        assert got == steps * n
    else:  # the stripes save work
        assert got < steps * n
    with pytest.raises(UnknownNameError, match="kind"):
        line_updates("butterfly", n)
    with pytest.raises(InvalidInputError, match="n must be"):
        line_updates(kind, 0)
    with pytest.raises(InvalidTypeError, match="batch must be"):
        line_updates(kind, n, batch=1.5)
