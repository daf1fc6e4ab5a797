"""The compile's fast paths, each held to a float64 reference computed independently.

* norms and matrix errors without BLAS (``metrics._frobenius``);
* one BLAS thread per pass, the thread pools looked up once (``single_threaded_blas``);
* the unitarity check done once per compile (``remembered_unitary_deviations``),
  and validate's rank of a scaled unitary without an SVD;
* the decomposition check (``check_tiles``): meshes rebuilt on the device, tiles,
  errors and fidelities on the host; it catches a corrupted decomposition;
* a unitary program of whole tiles checked by what the nulling measured (no rebuild in the pass);
* U and V^H decomposed in one call (``decompose_pair``);
* a unitary program's summary fidelity read off the mesh matrices the passes simulated;
* one tile program (``sim.ideal.tiles_and_meshes_np``: tiles and mesh matrices) for the
  decomposition's check, every later pass and a loaded program.

No timings are asserted here; ``benchmarks/end_to_end.py`` measures them.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from conftest import haar_unitary, mesh_matrix_np

import photocomp as pc
from photocomp.compiler import driver
from photocomp.compiler.decompose import (
    ACCELERATOR_MIN_BATCH,
    check_tiles,
    decompose_many,
    decompose_pair,
    kernel_devices,
)
from photocomp.core import metrics
from photocomp.core.ir import PhaseMap
from photocomp.core.phases import MeshPhases
from photocomp.sim.devices import single_threaded_blas

EXACT = "validate | tile | {first} | clements | canonicalize | lower"


def _fsum_norm(a) -> float:
    """Frobenius norm by exactly rounded summation (math.fsum) of the squared parts."""
    a = np.asarray(a, dtype=np.complex128)
    return math.sqrt(math.fsum(np.concatenate([a.real.ravel() ** 2, a.imag.ravel() ** 2])))


# ---- norms without BLAS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["real", "complex", "strided", "int", "longdouble", "empty-ish"])
def test_norms_match_an_exactly_summed_reference(kind):
    r = np.random.default_rng(70)
    a = {
        "real": r.standard_normal((37, 53)),
        "complex": r.standard_normal((64, 64)) + 1j * r.standard_normal((64, 64)),
        "strided": (r.standard_normal((40, 60)) + 1j * r.standard_normal((40, 60)))[::3, 1::2],
        "int": np.arange(-12, 12).reshape(4, 6),
        "longdouble": r.standard_normal((5, 7)).astype(np.longdouble),
        "empty-ish": np.zeros((3, 4)),
    }[kind]
    ref = _fsum_norm(np.asarray(a, dtype=np.float64) if kind == "longdouble" else a)
    assert metrics.np_norm(a) == pytest.approx(ref, rel=1e-14, abs=0.0)
    b = a + 1e-3 * np.ones(np.shape(a))
    err = metrics.np_matrix_error(a, b)
    want = _fsum_norm(np.asarray(b, np.complex128) - np.asarray(a, np.complex128)) / ref if ref > 0 else \
        _fsum_norm(np.asarray(b, np.complex128))
    assert err == pytest.approx(want, rel=1e-12, abs=0.0)


def test_norms_stay_free_of_overflow_and_underflow():
    for scale in (1e300, 1e-300):
        a = scale * np.array([[3.0, 4.0], [0.0, 0.0]])
        assert metrics.np_norm(a) == pytest.approx(5 * scale, rel=1e-15)
        assert metrics.np_matrix_error(a, 2 * a) == pytest.approx(1.0, rel=1e-15)


# ---- BLAS threads -------------------------------------------------------------------------------------------


def test_single_threaded_blas_limits_nests_and_restores():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    pytest.importorskip("scipy.linalg.cython_lapack")  # loaded, so that both BLAS libraries are seen before

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    with single_threaded_blas():
        assert all(n == 1 for n in blas_threads())
        with single_threaded_blas():  # nested: nothing to do, still one thread
            assert all(n == 1 for n in blas_threads())
        assert all(n == 1 for n in blas_threads())
    assert blas_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with single_threaded_blas():
            raise RuntimeError("inside")
    assert blas_threads() == before

    # overlapping blocks in two threads (a compile's strips in flight): the first to end leaves the limit
    # on while the other runs, the last restores; in either order of ending
    for first_to_end in (0, 1):
        entered = [threading.Event(), threading.Event()]
        leave = [threading.Event(), threading.Event()]
        seen = [None, None]

        def worker(i, entered=entered, leave=leave, seen=seen):
            with single_threaded_blas():
                entered[i].set()
                leave[i].wait(10)
                seen[i] = blas_threads()

        threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for ev in entered:
            assert ev.wait(10)
        leave[first_to_end].set()
        threads[first_to_end].join(10)
        other = 1 - first_to_end
        leave[other].set()
        threads[other].join(10)
        assert all(n == 1 for n in seen[other])  # still limited after the first block ended
        assert blas_threads() == before


# ---- the unitarity check, once -----------------------------------------------------------------------------


def test_unitary_deviation_is_remembered_by_content_within_a_block(monkeypatch):
    calls = []
    real = metrics._unitary_deviation
    monkeypatch.setattr(metrics, "_unitary_deviation", lambda a: calls.append(a.shape) or real(a))
    u = 3.0 * haar_unitary(6, np.random.default_rng(71))
    assert metrics.known_unitary_deviation(u) is None  # no block: nothing remembered
    with metrics.remembered_unitary_deviations():
        assert metrics.known_unitary_deviation(u) is None
        g, dev = metrics.unitary_deviation(u)
        assert len(calls) == 1
        g2, dev2 = metrics.unitary_deviation(u.copy())  # equal entries, another array
        g3, dev3 = metrics.unitary_deviation(u[None])  # the stack of one matrix
        assert len(calls) == 1
        assert (g2, dev2) == (g, dev) and g3.shape == (1,) and (g3[0], dev3[0]) == (g, dev)
        kg, kdev = metrics.known_unitary_deviation(u)
        assert (kg, kdev) == (g, dev)
        v = u.copy()
        v[2, 3] += 1e-12  # one entry differs: computed again
        _, dev_v = metrics.unitary_deviation(v)
        assert len(calls) == 2 and dev_v > dev
        metrics.unitary_deviation(np.stack([u, u]))  # stacks of several matrices are not remembered
        metrics.unitary_deviation(np.stack([u, u]))
        assert len(calls) == 4
    metrics.unitary_deviation(u)  # the block has ended
    assert len(calls) == 5
    # the remembered values are the computed ones: float64 reference
    gram = np.conj(u.T) @ u / 9.0
    assert g == pytest.approx(3.0, rel=1e-14)
    assert dev == pytest.approx(np.max(np.abs(gram - np.eye(6))), rel=0.5, abs=1e-15)


@pytest.mark.parametrize("n, scale", [(8, 1.0), (8, 1e-200), (8, 1e250), (5, 2.0)])
def test_a_unitary_compile_checks_unitarity_once(monkeypatch, n, scale):
    """The driver's check and the unitary pass's are one computation; the reported deviation and the rank
    equal float64 recomputations."""
    calls = []
    real = metrics._unitary_deviation
    monkeypatch.setattr(metrics, "_unitary_deviation", lambda a: calls.append(a.shape) or real(a))
    h = haar_unitary(n, np.random.default_rng([72, n]))
    prog = pc.compile(scale * h, f"clements-{n}")
    assert prog.circuit == "unitary"
    assert len(calls) == 1
    rec = prog.report
    assert rec["validate"].metrics["rank"] == n == np.linalg.matrix_rank(h)
    a = h / np.linalg.norm(h) * math.sqrt(n)
    ref = np.max(np.abs(np.conj(a.T) @ a - np.eye(n)))  # scale-free, to rounding
    assert rec["unitary"].metrics["max_unitarity_error"] == pytest.approx(ref, rel=0.5, abs=2e-15)
    assert rec["unitary"].metrics["max_unitarity_error"] <= metrics.UNITARY_TOL


def test_validate_rank_without_a_compile_decision_uses_the_svd():
    """A pipeline given by the user: no unitarity check before validate, which then computes the rank."""
    u = haar_unitary(6, np.random.default_rng(73))
    low = u[:, :2] @ np.conj(u[:, :2].T)  # rank 2, equal column norms
    for w, rank in ((u, 6), (low, 2)):
        prog = pc.compile(w, "clements-6", "validate | tile | svd | clements | lower")
        assert prog.report["validate"].metrics["rank"] == rank == np.linalg.matrix_rank(w)
    prog = pc.compile(low, "clements-6")  # preset: not a scaled unitary, an svd program, the SVD's rank
    assert prog.circuit == "svd" and prog.report["validate"].metrics["rank"] == 2


# ---- the decomposition check -----------------------------------------------------------------------------


def _rebuilt(pm):
    """Independent float64 tile matrices and mesh matrices of a phase map (conftest.mesh_matrix_np)."""
    def meshes(mp):
        return np.stack([mesh_matrix_np(mp.layout, mp.theta[t], mp.phi[t], mp.out_phase[t])
                         for t in range(len(mp.theta))])

    u_hat = meshes(pm.u)
    if pm.v is None:
        return None, u_hat, np.asarray(pm.gain)[:, None, None] * u_hat
    v_hat = meshes(pm.v)
    tiles = np.asarray(pm.gain)[:, None, None] * (u_hat * np.cos(pm.sigma)[:, None, :]) @ v_hat
    return v_hat, u_hat, tiles


def _fid(a, b):
    k = a.shape[-1]
    return np.abs(np.einsum("tij,tij->t", np.conj(a), b)) ** 2 / k**2


def _compiled_with_states(first: str, shape, seed: int):
    """An exact compile of a random matrix (``first``: svd or unitary program) with every pass's record and
    state kept: ``(w, program, {pass name: (record, state)})``."""
    r = np.random.default_rng(seed)
    w = r.standard_normal(shape) if first == "svd" else 2.0 * haar_unitary(shape[0], r)
    seen = {}
    prog = pc.compile(w, "clements-4" if first == "svd" else "clements-8", EXACT.format(first=first),
                      callback=lambda p, rec, st: seen.setdefault(p.name, (rec, st)))
    return w, prog, seen


# a unitary program on padded tiles (6 x 6 on 8 modes) is rebuilt in the pass; on whole tiles it is not (below)
@pytest.mark.parametrize("first, shape", [("svd", (11, 13)), ("unitary", (6, 6))])
def test_check_tiles_matches_an_independent_rebuild(first, shape):
    w, prog, seen = _compiled_with_states(first, shape, 74)
    rec, st = seen["clements"]
    u, _, vh, _ = st.svd
    pm = st.phase_map
    blocks = seen["tile"][1].blocks
    fid_v, fid_u, err2, tiles = check_tiles(pm, vh, u, blocks)
    v_hat, u_hat, ref_tiles = _rebuilt(pm)
    np.testing.assert_allclose(tiles, ref_tiles, rtol=0, atol=1e-13)
    np.testing.assert_allclose(fid_u, _fid(np.asarray(u), u_hat), rtol=0, atol=1e-13)
    if first == "svd":
        np.testing.assert_allclose(fid_v, _fid(np.asarray(vh), v_hat), rtol=0, atol=1e-13)
    else:
        assert fid_v is None
    # the pass's matrix error is the error of the rebuilt tiles, over the unpadded part
    ref_matrix = pm.grid.join(ref_tiles)
    assert rec.metrics["matrix_error"] == pytest.approx(
        _fsum_norm(ref_matrix - w) / _fsum_norm(w), rel=1e-6, abs=1e-15)
    assert math.sqrt(err2.sum()) == pytest.approx(_fsum_norm(ref_matrix - w), rel=1e-6, abs=1e-14)
    np.testing.assert_allclose(st.matrix, ref_matrix, rtol=0, atol=1e-13)
    assert prog.report.summary["matrix_error"] < 1e-12


@pytest.mark.parametrize("first, shape", [("svd", (11, 13)), ("unitary", (6, 6))])
def test_one_tile_program_checks_the_decomposition(first, shape):
    """The decomposition pass checks its meshes with sim.ideal.tiles_and_meshes_np: tiles, mesh matrices,
    fidelities and errors as an independent float64 rebuild gives them; the meshes are kept for the summary."""
    from photocomp.sim import ideal

    w, prog, seen = _compiled_with_states(first, shape, 79)
    rec, st = seen["clements"]
    u, _, vh, _ = st.svd
    pm = st.phase_map
    tiles, v_hat, u_hat = ideal.tiles_and_meshes_np(pm)
    ref_v, ref_u, ref_tiles = _rebuilt(pm)
    np.testing.assert_allclose(tiles, ref_tiles, rtol=0, atol=1e-13)
    np.testing.assert_allclose(u_hat, ref_u, rtol=0, atol=1e-13)
    fids = [_fid(np.asarray(u), ref_u)]
    if first == "svd":
        np.testing.assert_allclose(v_hat, ref_v, rtol=0, atol=1e-13)
        fids.append(_fid(np.asarray(vh), ref_v))
    else:
        assert v_hat is None
    want = min(float(f.min()) for f in fids)
    assert rec.metrics["min_mesh_fidelity"] == pytest.approx(want, rel=0, abs=1e-13)
    assert prog.report.summary["min_mesh_fidelity"] == pytest.approx(want, rel=0, abs=1e-13)
    kept_v, kept_u = st.meshes
    np.testing.assert_array_equal(kept_u, u_hat)
    assert (kept_v is None) == (first == "unitary")
    np.testing.assert_array_equal(st.matrix, pm.grid.join(tiles))
    np.testing.assert_array_equal(ideal.tile_matrices_np(pm), tiles)
    assert rec.metrics["matrix_error"] == pytest.approx(
        _fsum_norm(pm.grid.join(ref_tiles) - w) / _fsum_norm(w), rel=1e-6, abs=1e-15)


@pytest.mark.parametrize("kind, target, n", [("clements", "clements-8", 8), ("reck", "clements-8", 8),
                                             ("clements", "clements-4", 8)])
def test_whole_unitary_tiles_are_checked_by_the_nulling(kind, target, n, monkeypatch):
    """A unitary program of whole tiles: the pass reports the error and fidelity the nulling measured, which
    equal an independent float64 rebuild's to rounding, and simulates nothing; the compile simulates the
    program once (lower, here), and its summary is that simulation's. One or several tiles (8 x 8 on 4 modes:
    four tiles, each a scaled unitary), an off-unitary input and both kernels."""
    from photocomp.sim import ideal

    r = np.random.default_rng(83)
    if target == "clements-4":  # four 4 x 4 blocks, each a scaled unitary with its own gain
        w = np.zeros((n, n), complex)
        for i, j in ((0, 0), (0, 4), (4, 0), (4, 4)):
            w[i:i + 4, j:j + 4] = r.uniform(0.5, 2.0) * haar_unitary(4, r)
    else:
        w = 1.5 * haar_unitary(n, r) * (1 + 1e-10 * r.standard_normal((n, n)))  # within UNITARY_TOL, not exact
    pipe = f"validate | tile | unitary | {kind} | canonicalize | lower"
    if kind == "reck":
        target = "reck-8"
    pc.compile(w, target, pipe)  # the programs compiled ahead of a first compile run placeholder simulations
    seen, calls = {}, []
    real = ideal.tiles_and_meshes_np
    monkeypatch.setattr(ideal, "tiles_and_meshes_np", lambda pm, tiles=None: calls.append(1) or real(pm, tiles))
    prog = pc.compile(w, target, pipe, callback=lambda p, rec, st: seen.setdefault(p.name, (rec, st)))
    rec, st = seen[kind]
    assert st.matrix is None and st.meshes is None and calls == [1]  # lower's simulation alone
    u = np.asarray(st.svd[0])
    _, ref_u, ref_tiles = _rebuilt(st.phase_map)
    assert rec.metrics["min_mesh_fidelity"] == pytest.approx(float(_fid(u, ref_u).min()), rel=0, abs=1e-13)
    err = _fsum_norm(st.phase_map.grid.join(ref_tiles) - w) / _fsum_norm(w)
    assert rec.metrics["matrix_error"] == pytest.approx(err, rel=0, abs=1e-14)
    assert st.matrix_error == rec.metrics["matrix_error"]
    if target != "clements-4":  # the input's 1e-10 departure from a unitary is what both measure
        assert err > 1e-12 and rec.metrics["matrix_error"] == pytest.approx(err, rel=1e-3)
    np.testing.assert_array_equal(prog.dense, ideal.program_matrix_np(prog.phase_map))
    assert prog.report.summary["matrix_error"] == pytest.approx(err, rel=0, abs=1e-14)


def test_quantize_after_a_measured_decomposition_simulates_once(monkeypatch):
    """The default preset on one whole unitary tile: quantize's "before" is the error the decomposition
    measured, its one simulation (of the quantized program) serves lower and the summary."""
    from photocomp.sim import ideal

    w = haar_unitary(8, np.random.default_rng(84))
    pc.compile(w, "clements-8")  # the programs compiled ahead of a first compile run placeholder simulations
    calls = []
    real = ideal.tiles_and_meshes_np
    monkeypatch.setattr(ideal, "tiles_and_meshes_np", lambda pm, tiles=None: calls.append(1) or real(pm, tiles))
    prog = pc.compile(w, "clements-8")
    assert prog.circuit == "unitary" and calls == [1]
    rec = {r.name: dict(r.metrics) for r in prog.report.records}
    assert rec["quantize"]["matrix_error_before"] == rec["clements"]["matrix_error"] < 1e-13
    _, u_hat, tiles = _rebuilt(prog.phase_map)
    assert rec["quantize"]["matrix_error"] == pytest.approx(_fsum_norm(tiles[0] - w) / _fsum_norm(w), rel=1e-9)
    assert prog.report.summary["min_mesh_fidelity"] == pytest.approx(float(_fid(w[None], u_hat).min()), abs=1e-13)


@pytest.mark.parametrize("shape, programs", [((10, 7), 1), ((20, 17), 2)])
def test_a_compile_and_its_reload_build_few_tile_programs(tmp_path, shape, programs):
    """The tile programs a compile asks for (photocomp.sim.devices.run_tiles): the one that simulates tiles
    and meshes for the check, quantize and the summary, and the svd pass's above its HOST_MAX_TILES tiles
    (6 and 25 tiles here); reloading the program and reading its matrix asks for no new one, and the
    reloaded matrix is the compiled one to the last bit."""
    from photocomp.passes.svd import HOST_MAX_TILES
    from photocomp.sim import devices

    w = np.random.default_rng(80).standard_normal(shape)
    assert (math.ceil(shape[0] / 4) * math.ceil(shape[1] / 4) > HOST_MAX_TILES) == (programs == 2)
    pc.compile(w, "clements-4")  # other shapes compiled by earlier tests do not count
    devices._tile_program.cache_clear()
    prog = pc.compile(w, "clements-4")
    assert devices._tile_program.cache_info().misses == programs
    prog.save(tmp_path / "w.phases.npz")
    again = pc.load(tmp_path / "w.phases.npz")
    np.testing.assert_array_equal(again.dense, prog.dense)
    np.testing.assert_array_equal(again.matrix(), prog.dense)
    assert devices._tile_program.cache_info().misses == programs


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_host_and_device_svd_agree(dtype):
    """The svd pass's two paths (NumPy on the host for few tiles, the sharded JAX program for many) give the
    same factorisation to rounding: singular values, gains, reconstruction, and identity factors for an
    all-zero tile. Singular vectors are compared through what is unique about them (u s v^H)."""
    from photocomp.passes.svd import _factors, _svd_chunk
    from photocomp.sim.devices import run_tiles

    r = np.random.default_rng(81)
    x = r.standard_normal((5, 8, 8)).astype(dtype)
    if dtype == np.complex128:
        x = x + 1j * r.standard_normal((5, 8, 8))
    x[3] = 0
    host = _factors(np, x, *np.linalg.svd(x))
    dev = run_tiles(_svd_chunk, [x], chunk=8)
    for i in (1, 3, 4):  # normalised s, gain, reconstruction error (u and vh: through the rebuild below)
        np.testing.assert_allclose(dev[i], host[i], rtol=0, atol=1e-13)
    for u, s_norm, vh, gain, _ in (host, dev):
        rebuilt = (u * (s_norm * gain[:, None])[:, None, :]) @ vh
        np.testing.assert_allclose(rebuilt, x, rtol=0, atol=1e-13)
        np.testing.assert_array_equal(u[3], np.eye(8))
        np.testing.assert_array_equal(vh[3], np.eye(8))


@pytest.mark.parametrize("where", ["theta", "phi", "out_phase", "sigma"])
def test_check_tiles_catches_a_corrupted_decomposition(where):
    """One phase off by 1e-3 rad: the fidelities or the tile error show it, as a float64 rebuild does."""
    w = np.random.default_rng(75).standard_normal((8, 8))
    seen = {}
    pc.compile(w, "clements-4", EXACT.format(first="svd"), callback=lambda p, rec, st: seen.setdefault(p.name, st))
    st = seen["clements"]
    u, _, vh, _ = st.svd
    pm = st.phase_map
    _, _, err_ok, _ = check_tiles(pm, vh, u, seen["tile"].blocks)
    if where == "sigma":
        sigma = np.array(pm.sigma)
        sigma[2, 1] += 1e-3
        bad = pm.replace(sigma=sigma)
    else:
        arr = np.array(getattr(pm.u, where))
        arr[2, 1] += 1e-3
        bad = pm.replace(u=MeshPhases(pm.u.layout, **{f: (arr if f == where else getattr(pm.u, f))
                                                      for f in ("theta", "phi", "out_phase")}))
    fid_v, fid_u, err2, tiles = check_tiles(bad, vh, u, seen["tile"].blocks)
    _, u_hat, ref_tiles = _rebuilt(bad)
    assert err2[2] > 1e-10 and err2[2] > 1e6 * max(err_ok[2], 1e-30)
    np.testing.assert_array_less(err_ok, 1e-24)
    np.testing.assert_allclose(tiles, ref_tiles, rtol=0, atol=1e-13)
    np.testing.assert_allclose(fid_u, _fid(np.asarray(u), u_hat), rtol=0, atol=1e-13)
    if where != "sigma":
        assert fid_u[2] < 1 - 1e-8
        assert np.all(np.delete(fid_u, 2) > 1 - 1e-12)


# ---- U and V^H in one call ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tiles, n", [(1, 8), (3, 8), (1, 200)])
def test_decompose_pair_equals_two_calls(tiles, n):
    r = np.random.default_rng([76, tiles, n])
    u = haar_unitary(n, r, size=tiles)
    vh = haar_unitary(n, r, size=tiles)
    got_u, got_v = decompose_pair(u, vh, "clements")
    for got, want in ((got_u, decompose_many(u, "clements")), (got_v, decompose_many(vh, "clements"))):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


class _Accelerator:
    """Stands in for an accelerator device: all :func:`kernel_devices` reads of one is its platform."""

    platform = "gpu"


def test_small_batches_leave_an_accelerator_for_the_host():
    import jax

    gpu = (_Accelerator(),)
    host = tuple(jax.devices("cpu"))
    assert kernel_devices(1, default=gpu) == host
    assert kernel_devices(ACCELERATOR_MIN_BATCH - 1, default=gpu) == host
    assert kernel_devices(ACCELERATOR_MIN_BATCH, default=gpu) == gpu
    assert kernel_devices(1, devices=gpu) == gpu  # devices asked for are kept
    assert kernel_devices(1, default=host) == host
    # what decompose_many runs on here: the default devices, this machine's CPU
    assert kernel_devices(1) == tuple(jax.devices())


# ---- a unitary program's summary fidelity -------------------------------------------------------------------


@pytest.mark.parametrize("case", ["whole", "padded", "zero-tile"])
def test_unitary_summary_fidelity_equals_a_rebuild(case, monkeypatch):
    r = np.random.default_rng(77)
    if case == "whole":
        w, target, pipe = 1.5 * haar_unitary(8, r), "clements-8", None
    elif case == "padded":  # 6 x 6 on 8-mode meshes: cropped tiles, U_hat is not in the matrix
        w, target, pipe = 1.5 * haar_unitary(6, r), "clements-8", None
    else:  # two tiles, one of them zero: no U_hat in the matrix for it
        w = np.zeros((4, 8), complex)
        w[:, :4] = haar_unitary(4, r)
        target, pipe = "clements-4", "validate | tile | unitary | clements | canonicalize | quantize(bits=8) | lower"
    seen = {}
    rebuilt = []
    real_check = driver.check_tiles
    monkeypatch.setattr(driver, "check_tiles", lambda *a, **k: rebuilt.append(1) or real_check(*a, **k))
    prog = pc.compile(w, target, pipe, callback=lambda p, rec, st: seen.__setitem__(p.name, st))
    assert prog.circuit == "unitary"
    assert rebuilt == []  # the mesh matrices quantize simulated with the program's matrix serve the summary
    u = np.asarray(seen["lower"].svd[0])
    _, u_hat, tiles = _rebuilt(prog.phase_map)
    ref = float(_fid(u, u_hat).min())
    assert prog.report.summary["min_mesh_fidelity"] == pytest.approx(ref, rel=0, abs=1e-13)
    assert prog.report.summary["matrix_error"] == pytest.approx(
        _fsum_norm(prog.phase_map.grid.join(tiles) - w) / _fsum_norm(w), rel=1e-6)
    if case == "whole":  # quantized phases: a fidelity visibly below 1, still read exactly
        assert ref < 1 - 1e-9


def test_unitary_fidelities_refuse_what_the_matrix_does_not_hold():
    u = haar_unitary(4, np.random.default_rng(78))
    ph = pc.decompose(u)
    grid = pc.compile(u, "clements-4").phase_map.grid
    mesh = MeshPhases(ph.layout, ph.theta[None], ph.phi[None], ph.out_phase[None])
    pm = PhaseMap.unitary(grid, mesh, np.array([2.0]))
    fid = driver._unitary_fidelities(pm, u[None], 2.0 * ph.unitary())
    assert fid is not None and fid[0] == pytest.approx(1.0, abs=1e-14)
    assert driver._unitary_fidelities(pm.replace(gain=np.array([0.0])), u[None], 0.0 * u) is None
    assert driver._unitary_fidelities(pm.replace(gain=np.array([np.inf])), u[None], u) is None


# ---- ahead-of-time compilation of later passes' programs ---------------------------------------------------


def test_ahead_of_time_functions_start_once_per_grid(monkeypatch):
    from photocomp.core.ir import TileGrid

    monkeypatch.setattr(driver, "_ahead_seen", set())
    tgt = pc.get_target("clements-8")
    pipe = driver._resolve_pipeline(None, tgt)
    grid = TileGrid(out_dim=12, in_dim=9, tile=8)
    first = driver._start_ahead(pipe, tgt, grid)
    mesh = [i for i, p in enumerate(pipe.passes) if p.name == "clements"]
    assert list(first) == mesh and len(first[mesh[0]]) == 2  # the kernel and the tile program
    for f in first[mesh[0]]:
        assert f.result() is not None  # ran on placeholders without an error
    assert driver._start_ahead(pipe, tgt, grid) == {}  # once per process and grid shape
    monkeypatch.setattr(driver, "_ahead_seen", set())
    monkeypatch.setattr(driver, "AHEAD_MAX_WORK", grid.n_tiles * 8**3 - 1)
    assert driver._start_ahead(pipe, tgt, grid) == {}  # too much placeholder work for what it saves
    assert pc.Pass.ahead(pipe.passes[0], tgt, grid, "svd") == ()


@pytest.mark.parametrize("circuit", ["svd", "unitary"])
def test_a_fitted_mesh_pass_compiles_its_fit_ahead(monkeypatch, circuit):
    """A butterfly's (or Fldzhyan's) ahead-of-time functions compile the fit's programs from shapes alone, without
    running them; the pass then compiles none of them, with any step count (the limit is an argument)."""
    import jax
    from conftest import compilations

    from photocomp.core.ir import TileGrid

    jax.clear_caches()  # every program is compiled anew below (none is left from another test)
    tgt = pc.get_target("butterfly-4")
    fitted = {"Compiling jit(_fit_all)", "Compiling jit(_refine_tiles)", "Compiling jit(_meshes)"}
    pipe = "validate | tile | {} | butterfly(steps={}) | canonicalize | lower"
    (p,) = [q for q in driver._resolve_pipeline(pipe.format(circuit, 3), tgt).passes if q.name == "butterfly"]
    w = (np.random.default_rng(1).normal(size=(6, 3)) if circuit == "svd"
         else np.vstack([haar_unitary(4, np.random.default_rng(s)) for s in (1, 2)]))
    fns = p.ahead(tgt, TileGrid(out_dim=w.shape[0], in_dim=w.shape[1], tile=4), circuit)
    assert len(fns) == (2 if circuit == "svd" else 1)  # an SVD program's tile refinement in the other thread
    with compilations() as ahead:
        for fn in fns:
            assert fn() is None
    assert {"Compiling jit(_fit_all)", "Compiling jit(_meshes)"} <= set(ahead)
    assert ("Compiling jit(_refine_tiles)" in ahead) == (circuit == "svd")
    monkeypatch.setattr(driver, "_start_ahead", lambda *args: {})  # the pass's own calls only
    with compilations() as names:
        progs = [pc.compile(w, tgt, pipe.format(circuit, steps)) for steps in (3, 7)]
    assert not fitted & set(names), names
    assert all(q.report["butterfly"].metrics["matrix_error"] >= 0 for q in progs)
    assert p.ahead(pc.get_target("clements-4"), TileGrid(out_dim=4, in_dim=4, tile=4), circuit) == ()


def test_the_fit_compile_functions_reject_bad_arguments():
    from photocomp.compiler.fit import compile_mesh_fit, compile_tile_fit
    from photocomp.core.layout import layout

    lay = layout("butterfly", 4)
    with pytest.raises(pc.InvalidTypeError, match="lay must be a MeshLayout; got str"):
        compile_mesh_fit("butterfly-4", 2)
    with pytest.raises(pc.InvalidInputError, match="meshes"):
        compile_mesh_fit(lay, 0)
    with pytest.raises(pc.InvalidInputError, match="restarts"):
        compile_mesh_fit(lay, 2, restarts=0)
    with pytest.raises(pc.InvalidTypeError, match="lay must be a MeshLayout; got NoneType"):
        compile_tile_fit(None, 1)
    with pytest.raises((pc.InvalidInputError, pc.InvalidTypeError), match="tiles"):
        compile_tile_fit(lay, 1.5)


def test_the_fits_step_limit_is_an_argument_that_stops_it():
    """One fit program serves every step count, and the count still bounds the L-BFGS steps: from the same random
    start, one step stays far from where sixty go."""
    import jax

    from photocomp.compiler.fit import fit_meshes
    from photocomp.core.layout import layout

    lay = layout("fldzhyan", 4, cell="fldzhyan")
    u = haar_unitary(4, np.random.default_rng(4))
    errs = [fit_meshes(lay, u, key=jax.random.key(1), restarts=1, steps=s)[3] for s in (1, 60)]
    assert errs[1] < 1e-6 < 0.1 < errs[0]


def test_blas_libraries_are_looked_up_before_ahead_of_time_threads_start(monkeypatch):
    """The BLAS lookup of single_threaded_blas walks the loaded libraries under the dynamic loader's lock and
    deadlocks against a thread importing an extension module: it is done before any ahead-of-time function
    is submitted, not by the compile's first pass while those threads lower their programs."""
    import concurrent.futures

    from photocomp.core.ir import TileGrid
    from photocomp.sim import devices

    class Pool:  # runs nothing; records whether the lookup was done when each function was submitted
        looked_up: list = []

        def submit(self, fn):
            self.looked_up.append(devices._blas_controller.cache_info().currsize == 1)
            return concurrent.futures.Future()

    monkeypatch.setattr(driver, "_ahead_seen", set())
    monkeypatch.setattr(driver, "_ahead_pool", Pool)
    devices._blas_controller.cache_clear()
    tgt = pc.get_target("clements-8")
    driver._start_ahead(driver._resolve_pipeline(None, tgt), tgt, TileGrid(out_dim=12, in_dim=9, tile=8))
    assert Pool.looked_up == [True, True]


def test_ahead_of_time_on_a_large_grid_runs_only_small_placeholders(monkeypatch):
    """Above AHEAD_MAX_WORK a decomposition pass skips the tile program's placeholder (the whole grid) and
    runs its kernel on one group of meshes, whose program every full group of the real run uses."""
    import photocomp.passes.decompose as decompose_pass
    from photocomp.compiler.decompose import group_meshes
    from photocomp.core.ir import TileGrid

    tgt = pc.get_target("clements-8")
    clements = next(p for p in driver._resolve_pipeline(None, tgt).passes if p.name == "clements")
    grid = TileGrid(out_dim=8 * 8, in_dim=5 * 8, tile=8)  # 40 tiles: 80 meshes, more than a group
    half = group_meshes() // 2  # tiles of one group of V and U meshes
    assert grid.n_tiles > half
    monkeypatch.setattr(driver, "AHEAD_MAX_WORK", half * 8**3)  # one group's work, not the grid's
    seen = []
    real = decompose_pass.decompose_pair
    monkeypatch.setattr(decompose_pass, "decompose_pair", lambda u, vh, kind: seen.append(len(u)) or real(u, vh, kind))
    (kernel,) = clements.ahead(tgt, grid, "svd")
    kernel()
    assert seen == [half]
    monkeypatch.setattr(driver, "AHEAD_MAX_WORK", half * 8**3 - 1)  # not even one group
    assert clements.ahead(tgt, grid, "svd") == ()
    monkeypatch.setattr(driver, "AHEAD_MAX_WORK", grid.n_tiles * 8**3)  # the whole grid: both placeholders
    assert len(clements.ahead(tgt, grid, "svd")) == 2


def test_a_pass_waits_for_its_ahead_of_time_functions(monkeypatch):
    """Pipeline.run waits for a pass's futures before it runs the pass; their errors are the pass's to raise."""
    import concurrent.futures
    import dataclasses
    import threading

    from photocomp.compiler.pipeline import Pipeline

    release = threading.Event()
    events = []

    def slow():
        release.wait(5)
        events.append("ahead")

    def broken():
        raise RuntimeError("placeholder run failed")

    @dataclasses.dataclass(frozen=True)
    class Probe(pc.Pass):
        name = "probe"
        provides = frozenset({"probed"})

        def __call__(self, state):
            events.append("pass")
            return state, {}

    pool = concurrent.futures.ThreadPoolExecutor(2)
    futures = [pool.submit(slow), pool.submit(broken)]
    threading.Timer(0.2, release.set).start()
    state = pc.CompileState(weights=np.eye(2, dtype=complex), target=pc.get_target("clements-4"))
    out = Pipeline((Probe(),)).run(state, ahead={0: futures})
    assert events == ["ahead", "pass"] and out.records[0].name == "probe"
    pool.shutdown()


@pytest.mark.slow
def test_ahead_of_time_compilation_changes_no_result(tmp_path):
    """A fresh process's first compile with the programs compiled ahead of time and one without: the same
    program to the last bit (the placeholders only compile; every number comes from the passes' own calls)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, photocomp as pc\n"
            "from photocomp.compiler import driver\n"
            "driver.AHEAD_MAX_WORK = int(sys.argv[1])\n"
            "w = np.random.default_rng(81).standard_normal((20, 13))\n"
            "p = pc.compile(w, 'clements-8')\n"
            "np.save(sys.argv[2], p.dense)\n")
    outs = []
    for work in (driver.AHEAD_MAX_WORK, -1):
        out = tmp_path / f"dense{work}.npy"
        r = subprocess.run([sys.executable, "-c", code, str(work), str(out)], capture_output=True, text=True,
                           timeout=600, env={**__import__("os").environ, "PHOTOCOMP_CACHE_DIR": ""})
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(np.load(out))
    np.testing.assert_array_equal(outs[0], outs[1])
