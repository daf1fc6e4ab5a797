"""Weights at the edges of float64 and of memory, odd dtypes, and the float64 rebuild of a mesh.

Every error of a compiled program here is checked against an exact reference:
sums of squares in rational arithmetic (``fractions.Fraction``), which neither
overflows nor underflows and shares no code with photocomp.
"""

import math
import time
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import photocomp as pc
from photocomp.compiler import driver
from photocomp.core.errors import InvalidInputError, InvalidTypeError, PhotocompError
from photocomp.core.metrics import np_matrix_error, np_norm

EXACT = "validate | tile | svd | clements | canonicalize | lower"
TARGET = "clements-4"
K = 4
BIG = float(np.finfo(np.float64).max)
EXACT_REL = 1e-10  # relative error of an unquantized compile (rounding: ~1e-15 K)
AGREE_REL = 1e-9  # a reported error against its exact recomputation from the same matrix


# ---- exact reference ---------------------------------------------------------------------------------


def _sq(z: complex) -> Fraction:
    return Fraction(z.real) ** 2 + Fraction(z.imag) ** 2


def exact_norm2(a) -> Fraction:
    """||a||_F^2, exactly."""
    return sum((_sq(complex(z)) for z in np.asarray(a, np.complex128).ravel()), Fraction(0))


def exact_sqrt(x: Fraction) -> float:
    """sqrt(x) rounded to float64 (inf beyond its range), for any non-negative rational x."""
    if x == 0:
        return 0.0
    k = (x.numerator.bit_length() - x.denominator.bit_length()) // 2
    r = math.sqrt(float(x / Fraction(4) ** k))
    try:
        return math.ldexp(r, k)
    except OverflowError:
        return math.inf


def exact_error(w, m) -> float:
    """||w - m||_F / ||w||_F (||m||_F when w = 0), from exact sums; inf if m is not finite."""
    w = np.asarray(w, np.complex128)
    m = np.asarray(m, np.complex128)
    if not np.all(np.isfinite(m)):
        return math.inf
    num2 = Fraction(0)
    for a, b in zip(m.ravel(), w.ravel()):
        num2 += (Fraction(a.real) - Fraction(b.real)) ** 2 + (Fraction(a.imag) - Fraction(b.imag)) ** 2
    den2 = exact_norm2(w)
    return exact_sqrt(num2 / den2 if den2 else num2)


def tile_norms2(w) -> list:
    """Exact squared Frobenius norms of the K x K tiles of w."""
    w = np.asarray(w, np.complex128)
    return [exact_norm2(w[r:r + K, c:c + K]) for r in range(0, w.shape[0], K) for c in range(0, w.shape[1], K)]


def assert_report_is_true(prog, w):
    """Every float in the report is finite, but validate's norm of weights whose norm exceeds the largest float64
    (documented: inf exactly then); the summary's matrix_error is the exact error of the program."""
    for rec in prog.report.records:
        for key, v in rec.metrics.items():
            if isinstance(v, float):
                if (rec.name, key) == ("validate", "norm") and math.isinf(v):
                    assert math.isinf(math.hypot(*np.abs(np.asarray(w)).ravel().tolist())), (rec.name, key, v)
                    continue
                assert math.isfinite(v), (rec.name, key, v)
    s = prog.report.summary
    assert all(math.isfinite(v) for v in s.values()), dict(s)
    want = exact_error(w, prog.dense)
    assert s["matrix_error"] == pytest.approx(want, rel=AGREE_REL, abs=1e-15)
    assert exact_error(w, prog.matrix()) == pytest.approx(want, rel=1e-6, abs=1e-14)


def _rng(*seed):
    return np.random.default_rng(list(seed))


# ---- 1. weights near the ends of float64 ---------------------------------------------------------------

SCALES = [2.0**1000, 1e200, 1e-160, 1e-250, 1e-290]


@pytest.mark.parametrize("shape", [(3, 3), (6, 5)], ids=["one-tile", "2x2-tiles"])
@pytest.mark.parametrize("scale", SCALES, ids=[f"{s:.0e}" for s in SCALES])
def test_extreme_scales_compile_exactly_and_report_the_truth(scale, shape):
    base = _rng(1, *shape).standard_normal(shape) + 1j * _rng(2, *shape).standard_normal(shape)
    w = base * scale
    before = w.copy()
    prog = pc.compile(w, TARGET, EXACT)
    np.testing.assert_array_equal(w, before)  # the scaling works on a copy
    assert exact_error(w, prog.matrix()) < EXACT_REL
    assert exact_error(w, prog.dense) < EXACT_REL
    assert_report_is_true(prog, w)
    assert np.all(prog.phase_map.gain > 0) and np.all(np.isfinite(prog.phase_map.gain))
    # metrics in the units of the weights are scaled back
    norm = prog.report["validate"].metrics["norm"]
    assert norm == pytest.approx(math.sqrt(float(exact_norm2(base))) * scale, rel=1e-12)
    assert prog.report["svd"].metrics["max_gain"] == pytest.approx(float(prog.phase_map.gain.max()), rel=1e-12)


@pytest.mark.parametrize("scale", [1e300, 1e-200])
def test_extreme_scales_with_the_default_quantized_pipeline(scale):
    w = _rng(3).standard_normal((6, 5)) * scale
    prog = pc.compile(w, TARGET)
    err = exact_error(w, prog.dense)
    assert 1e-6 < err < 0.05  # quantization error
    assert_report_is_true(prog, w)
    # the same program as for w times the power of two that brings it near 1 (no digit changed)
    e = int(np.frexp(np.max(np.abs(w)))[1])
    ref = pc.compile(np.ldexp(w, -e), TARGET)
    np.testing.assert_array_equal(prog.phase_map.gain, np.ldexp(ref.phase_map.gain, e))
    np.testing.assert_array_equal(prog.phase_map.u.phi, ref.phase_map.u.phi)
    for name in ("clements", "quantize", "lower"):
        assert prog.report[name].metrics["matrix_error"] == ref.report[name].metrics["matrix_error"]
    assert prog.report.summary["matrix_error"] == ref.report.summary["matrix_error"]
    assert prog.report.summary["max_abs_error"] == pytest.approx(ref.report.summary["max_abs_error"] * 2.0**e,
                                                                 rel=1e-12)


def test_entries_of_1e308_compile_when_the_gain_fits():
    w = np.array([[1e308, 0.0], [0.0, -1.2e308]])
    prog = pc.compile(w, TARGET, EXACT)
    assert exact_error(w, prog.matrix()) < EXACT_REL
    assert_report_is_true(prog, w)
    assert prog.phase_map.gain.max() == pytest.approx(1.2e308, rel=1e-12)
    assert prog.report["validate"].metrics["norm"] == pytest.approx(math.hypot(1e308, 1.2e308), rel=1e-12)


def test_a_norm_beyond_float64_is_reported_as_inf():
    """Each gain fits, the Frobenius norm does not: the validate pass says inf, not NaN or a wrapped value."""
    w = np.array([[1.5e308, 0.0], [0.0, -1.5e308]])
    prog = pc.compile(w, TARGET, EXACT)
    assert prog.report["validate"].metrics["norm"] == math.inf
    assert exact_error(w, prog.matrix()) < EXACT_REL
    assert prog.report.summary["matrix_error"] == pytest.approx(exact_error(w, prog.dense), rel=AGREE_REL, abs=1e-15)


@pytest.mark.parametrize("w", [
    np.full((2, 2), 1e308),
    np.array([[1.5e308 + 1.5e308j]]),  # |w| itself is beyond float64
    np.full((6, 5), -9e307),
], ids=["2x2-of-1e308", "complex-magnitude", "multi-tile"])
def test_gains_beyond_float64_are_refused(w):
    with pytest.raises(InvalidInputError, match=r"weights are too large to compile: tile \(\d+, \d+\) needs an "
                                                 r"electronic gain .* of \d(\.\d+)?e\+30[89]"):
        pc.compile(w, TARGET, EXACT)


@pytest.mark.parametrize("w", [
    _rng(4).standard_normal((3, 3)) * 1e-308,
    _rng(5).standard_normal((6, 5)) * 1e-315,  # subnormal
    np.full((2, 2), 5e-324),  # the smallest subnormal
    np.diag([1e-300, 0.0]),
], ids=["1e-308", "subnormal", "smallest-subnormal", "1e-300"])
def test_gains_too_small_for_float64_are_refused(w):
    with pytest.raises(InvalidInputError, match=r"weights are too small to compile: .* below 1e-292 \(2\*\*-970\)"):
        pc.compile(w, TARGET, EXACT)


def test_huge_and_tiny_tiles_in_one_matrix():
    w = np.zeros((8, 8))
    w[:4, :4] = _rng(6).standard_normal((4, 4)) * 1e150
    w[4:, 4:] = _rng(7).standard_normal((4, 4)) * 1e-150
    w[:4, 4:] = _rng(8).standard_normal((4, 4))
    prog = pc.compile(w, TARGET, EXACT)
    assert exact_error(w, prog.matrix()) < EXACT_REL
    assert_report_is_true(prog, w)
    # every tile's gain is its largest singular value, the tiny one included
    want = [np.linalg.svd(w[r:r + 4, c:c + 4], compute_uv=False)[0] for r in (0, 4) for c in (0, 4)]
    np.testing.assert_allclose(prog.phase_map.gain, want, rtol=1e-12, atol=0)


def test_tiles_beyond_float64_range_of_the_largest_still_give_the_matrix():
    """A tile 1e600 times smaller than the largest entry is below what W * 2**-e can hold: it compiles to a
    zero tile, an error of 1e-600 relative to W, and the report says so truthfully."""
    w = np.zeros((4, 8))
    w[:, :4] = _rng(6).standard_normal((4, 4)) * 1e300
    w[:, 4:] = _rng(7).standard_normal((4, 4)) * 1e-300
    prog = pc.compile(w, TARGET, EXACT)
    assert exact_error(w, prog.matrix()) < EXACT_REL
    assert_report_is_true(prog, w)
    assert prog.phase_map.gain[1] == 0.0


def test_svd_pass_factors_subnormal_tiles():
    """A tile of subnormal entries next to entries near 1 keeps its gain (the SVD sees it scaled to ~1)."""
    w = np.zeros((4, 8))
    w[:, :4] = _rng(9).standard_normal((4, 4))
    w[:, 4:] = _rng(10).standard_normal((4, 4)) * 1e-310
    prog = pc.compile(w, TARGET, EXACT)
    tiny_tile = np.linalg.svd(w[:, 4:] * 2.0**100, compute_uv=False)[0] / 2.0**100
    assert prog.phase_map.gain[1] == pytest.approx(tiny_tile, rel=1e-9)
    assert prog.report["svd"].metrics["zero_tiles"] == 0
    assert exact_error(w, prog.matrix()) < EXACT_REL


def test_compile_in_strips_at_extreme_scale(monkeypatch):
    w = _rng(11).standard_normal((12, 6)) * 1e250  # 3 x 2 tiles of 4
    whole = pc.compile(w, TARGET, EXACT)
    monkeypatch.setattr(driver, "STRIP_BUDGET", 2 * driver.TILE_COPIES * 16 * K * K)  # one block row per strip
    assert len(driver.memory_plan(w.shape, K).strips) == 3
    parts = pc.compile(w, TARGET, EXACT)
    np.testing.assert_array_equal(parts.phase_map.gain, whole.phase_map.gain)
    assert exact_error(w, parts.dense) < EXACT_REL
    assert_report_is_true(parts, w)
    for key in ("matrix_error", "max_abs_error"):
        assert parts.report.summary[key] == pytest.approx(whole.report.summary[key], rel=1e-9)
    assert parts.report["svd"].metrics["max_gain"] == pytest.approx(whole.report["svd"].metrics["max_gain"])


def test_callback_sees_records_in_the_units_of_the_weights():
    w = _rng(12).standard_normal((3, 3)) * 1e-200
    seen = {}
    pc.compile(w, TARGET, EXACT, callback=lambda p, rec, st: seen.setdefault(p.name, dict(rec.metrics)))
    assert seen["validate"]["norm"] == pytest.approx(float(np.linalg.norm(w * 1e200)) * 1e-200, rel=1e-12)
    assert seen["svd"]["max_gain"] < 1e-190


def test_norm_and_error_helpers_do_not_overflow_or_underflow():
    w = _rng(13).standard_normal((5, 4)) + 1j * _rng(14).standard_normal((5, 4))
    for scale in (1e300, 1e-300, 2.0**-1060):
        ws = w * scale
        assert np_norm(ws) == pytest.approx(exact_sqrt(exact_norm2(ws)), rel=1e-12)
        want = exact_error(ws, 1.01 * ws)  # 0.01 up to the rounding of 1.01 ws (subnormal for 2**-1060)
        assert want == pytest.approx(0.01, rel=1e-2)
        assert np_matrix_error(ws, 1.01 * ws) == pytest.approx(want, rel=1e-9)
        assert float(pc.matrix_error(ws, 1.01 * ws)) == pytest.approx(want, rel=1e-9)
    assert np_norm(np.full((2, 2), 1e308)) == math.inf  # the true norm, 2e308, is not a float64
    assert np_matrix_error(np.zeros((2, 2)), np.full((2, 2), 1e-300)) == pytest.approx(2e-300, rel=1e-12)
    batch = np.stack([w * 1e300, w * 1e-300])
    np.testing.assert_allclose(pc.matrix_error(batch, 1.01 * batch), [0.01, 0.01], rtol=1e-9)


# ---- 2. dtypes ------------------------------------------------------------------------------------------


def test_masked_arrays_are_refused():
    w = np.ma.masked_array(np.ones((2, 2)), mask=[[False, True], [False, False]])
    with pytest.raises(InvalidTypeError, match=r"weights must be a plain numeric array, not a masked array.*"
                                               r"weights\.filled\(0\)"):
        pc.compile(w, TARGET, EXACT)
    prog = pc.compile(w.filled(0), TARGET, EXACT)  # the advice works
    np.testing.assert_allclose(prog.matrix(), [[1, 0], [1, 1]], rtol=0, atol=1e-12)


NON_NUMERIC = [
    np.zeros((2, 2), dtype="m8[s]"),
    np.zeros((2, 2), dtype="M8[D]"),
    np.zeros((2, 2), dtype=object),
    np.array([["1", "2"]]),
    np.array([[b"1", b"2"]]),
    np.zeros((2, 2), dtype=[("a", "f8"), ("b", "f8")]),
    np.zeros((2, 2), dtype="V8"),
]


@pytest.mark.parametrize("w", NON_NUMERIC, ids=["timedelta64", "datetime64", "object", "str", "bytes", "structured",
                                                "void"])
def test_non_numeric_dtypes_are_refused(w):
    with pytest.raises(InvalidTypeError, match=r"weights must be a numeric \(bool, integer, real or complex\) array; "
                                               r"got array of shape \(\d, 2\) and dtype"):
        pc.compile(w, TARGET, EXACT)


def test_decompose_refuses_timedelta_too():
    with pytest.raises(InvalidTypeError, match=r"unitary must be a numeric .* dtype timedelta64"):
        pc.decompose(np.zeros((2, 2), dtype="m8[s]"), "clements")


@pytest.mark.skipif(np.finfo(np.longdouble).max <= BIG, reason="longdouble is float64 here")
def test_longdouble_beyond_float64_is_refused():
    w = np.array([[np.longdouble(10) ** 400, 1]], dtype=np.longdouble)
    with pytest.raises(InvalidInputError, match="weights must be finite in float64; got 1 entries of dtype"):
        pc.compile(w, TARGET, EXACT)


# ---- 3. memory, before any copy ---------------------------------------------------------------------------

MEMORY = r"weights of shape {} .*need about [\d.]+ GiB to compile .*; [\d.]+ GiB is available"


@pytest.mark.parametrize("shape, dtype", [((10**6, 10**6), np.float64), ((40000, 40000), np.bool_),
                                          ((10**7, 3), np.complex128)])
def test_huge_broadcast_views_are_refused_before_any_copy(monkeypatch, shape, dtype):
    monkeypatch.setattr(driver, "available_memory", lambda: 1 << 30)
    w = np.broadcast_to(np.ones((), dtype), shape)  # no memory behind it
    t0 = time.perf_counter()
    with pytest.raises(InvalidInputError, match=MEMORY.format(f"{shape[0]}x{shape[1]}")):
        pc.compile(w, TARGET)
    assert time.perf_counter() - t0 < 2.0


def test_memory_is_read_before_the_weights_are_touched(monkeypatch):
    """The available memory is read first; array-likes with a shape are sized without being converted."""
    calls = []

    class Huge:
        shape = (10**6, 10**6)
        dtype = np.dtype(np.float32)

        def __array__(self, *args, **kwargs):
            calls.append("converted")
            raise AssertionError("converted before the memory check")

    monkeypatch.setattr(driver, "available_memory", lambda: calls.append("memory") or 8 << 30)
    with pytest.raises(InvalidInputError, match=MEMORY.format("1000000x1000000") + r"\. Compile a smaller"):
        pc.compile(Huge(), TARGET)
    assert calls == ["memory"]


def test_memory_check_without_a_tiling_pass(monkeypatch):
    monkeypatch.setattr(driver, "available_memory", lambda: 1 << 20)
    with pytest.raises(InvalidInputError, match=r"weights of shape 1000x1000 need about [\d.]+ GiB"):
        driver._check_memory((1000, 1000), None, 1 << 20)


def test_a_small_broadcast_view_compiles():
    w = np.broadcast_to(np.arange(3.0), (5, 3))
    prog = pc.compile(w, TARGET, EXACT)
    np.testing.assert_allclose(prog.matrix(), w, rtol=0, atol=1e-12)


# ---- 4. MeshPhases.unitary in float64 -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["clements", "reck"])
@pytest.mark.parametrize("n", [2, 5, 16])
def test_mesh_unitary_rebuilds_in_float64(kind, n):
    x64 = jax.config.jax_enable_x64
    u = pc.haar_unitary(n, np.random.default_rng(n))
    rebuilt = pc.decompose(u, kind).unitary()
    assert isinstance(rebuilt, np.ndarray) and rebuilt.dtype == np.complex128
    np.testing.assert_allclose(rebuilt, u, rtol=0, atol=1e-12)
    assert jax.config.jax_enable_x64 == x64  # the global setting is left alone


def test_mesh_unitary_of_a_stack_and_under_jit():
    us = np.stack([pc.haar_unitary(4, np.random.default_rng(s)) for s in (1, 2)])
    ph = pc.decompose(us, "clements")
    np.testing.assert_allclose(ph.unitary(), us, rtol=0, atol=1e-12)
    # traced phases follow the caller's precision; concrete ones are a constant of the trace
    traced = jax.jit(lambda t: pc.MeshPhases(ph.layout, t, ph.phi, ph.out_phase).unitary())(jnp.asarray(ph.theta))
    assert isinstance(traced, jax.Array)
    np.testing.assert_allclose(np.asarray(traced), us, rtol=0, atol=1e-5)
    const = jax.jit(lambda s: s * jnp.sum(jnp.abs(ph.unitary()) ** 2))(1.0)
    assert float(const) == pytest.approx(8.0, rel=1e-5)


# ---- property tests --------------------------------------------------------------------------------------

DTYPES = ["bool", "int8", "int32", "int64", "uint8", "uint64", "float16", "float32", "float64", "complex64",
          "complex128"]
SMALLEST_GAIN = Fraction(driver.SMALLEST_GAIN)


@st.composite
def weights(draw, wide=False):
    """W of random shape 1..9 x 1..9 and dtype: random rank (0 to full), a random scale 10**x with x in
    [-300, 300] or near the ends of float64 (or, ``wide``, one per entry), some zero rows and columns."""
    m, n = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rank = draw(st.integers(1, min(m, n))) if draw(st.integers(0, 9)) else 0  # rank 0: the zero matrix
    if dtype.kind in "iub":
        if dtype.kind == "b":
            w = rng.integers(0, 2, (m, n)).astype(bool)
        else:
            info = np.iinfo(dtype)
            w = rng.integers(int(info.min), int(info.max), (m, n), dtype=dtype, endpoint=True)
    else:
        a = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
        if dtype.kind == "c":
            a = a + 1j * (rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n)))
        if wide:  # every entry its own exponent
            scale = 10.0 ** rng.uniform(-300, 300, (m, n))
        else:  # the whole range, and more often its ends, where gains stop fitting in float64
            scale = 10.0 ** draw(st.one_of(st.floats(-300, 300), st.floats(-312, -285), st.floats(295, 308.25)))
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            w = (a * scale).astype(dtype)  # may overflow to inf: then it must be refused as not finite
    zero_rows = draw(st.lists(st.integers(0, m - 1), max_size=2))
    zero_cols = draw(st.lists(st.integers(0, n - 1), max_size=2))
    w[zero_rows, :] = 0
    w[:, zero_cols] = 0
    return w


def _check_property(w, pipeline, err_bound):
    wc = np.asarray(w).astype(np.complex128)
    entries2 = [_sq(complex(z)) for z in wc.ravel()] if np.all(np.isfinite(wc)) else None
    try:
        prog = pc.compile(w, TARGET, pipeline)
    except PhotocompError as exc:
        # refused: only for what float64 cannot compile
        msg = str(exc)
        assert isinstance(exc, InvalidInputError), msg
        if entries2 is None:
            assert "weights must be finite" in msg, msg
            return "refused"
        assert max(entries2) > 0, msg
        max_tile2 = max(tile_norms2(wc))
        if "too small" in msg:
            assert max(entries2) < SMALLEST_GAIN**2, msg  # the largest gain is at least the largest |entry|
        else:
            assert "too large" in msg and max_tile2 > Fraction(BIG / 2) ** 2, msg  # at most a tile's norm
        return "refused"
    assert entries2 is not None
    gain = prog.phase_map.gain
    assert np.all(np.isfinite(gain)) and np.all(gain >= 0)
    if max(entries2, default=0) > 0 and max(tile_norms2(wc)) < SMALLEST_GAIN**2:
        pytest.fail("weights too small for float64 gains were compiled")
    assert exact_error(wc, prog.matrix()) < err_bound
    assert_report_is_true(prog, wc)
    return "compiled"


# Every example of a new shape compiles new programs, so the default run draws a few examples of each
# property and the slow-marked variants (run by .ci/run after the fast suite) the full number.
def _examples(n: int):
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_examples(12)
@given(weights())
def test_property_any_weights_compile_exactly_or_are_refused(w):
    event(_check_property(w, EXACT, EXACT_REL))


@pytest.mark.slow
@_examples(40)
@given(weights())
def test_property_any_weights_compile_exactly_or_are_refused_many(w):
    event(_check_property(w, EXACT, EXACT_REL))


@_examples(8)
@given(weights(wide=True))
def test_property_entries_of_every_magnitude(w):
    event(_check_property(w, EXACT, EXACT_REL))


@pytest.mark.slow
@_examples(25)
@given(weights(wide=True))
def test_property_entries_of_every_magnitude_many(w):
    event(_check_property(w, EXACT, EXACT_REL))


@_examples(8)
@given(weights())
def test_property_quantized_reports_are_true(w):
    event(_check_property(w, None, 0.1))


@pytest.mark.slow
@_examples(25)
@given(weights())
def test_property_quantized_reports_are_true_many(w):
    event(_check_property(w, None, 0.1))
