"""photocomp.nn: the matrix a chip applies to real weights, its gradients, and the Equinox / Flax NNX layers.

References: the digital product ``W @ x`` (ideal chip), :func:`photocomp.error` and the calibration
report (the complex-matrix errors the real read-out can only be at or below), central finite
differences in float64 (gradients), and the straight-through rule the module documents (gradients that
are not the true derivative).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import BOUND

import photocomp as pc
from photocomp.core.errors import InvalidInputError, InvalidTypeError, UnknownNameError
from photocomp.nn import ChipState, chip_matrix, linear, read_out

# no tests.conftest import of photocomp; the compile pipeline without quantization reconstructs every tile to
# BOUND["reconstruction"] (max entry error of a rebuilt unitary): the ideal chip's matrix is W to that, relative
IDEAL_RTOL = BOUND["reconstruction"]


def _err(m, w) -> float:
    return float(np.linalg.norm(np.asarray(m) - w) / np.linalg.norm(w))


def _w(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


# ---- the functional core -------------------------------------------------------------------------------


def test_ideal_chip_applies_the_weights_of_any_shape():
    w = _w((12, 20))  # 2 x 3 tiles of clements-8, zero padded
    b = _w((12,), 1)
    x = _w((3, 4, 20), 2)
    cs = ChipState("clements-8")
    with jax.enable_x64(True):
        m = np.asarray(chip_matrix(w, cs))
        y = np.asarray(linear(w, b, x, cs))
    assert m.shape == w.shape and m.dtype == np.float64
    assert _err(m, w) < IDEAL_RTOL
    ref = x @ w.T + b
    assert y.shape == (3, 4, 12)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < IDEAL_RTOL
    # under jit and vmap the same matrix comes back
    with jax.enable_x64(True):
        jitted = np.asarray(jax.jit(chip_matrix, static_argnums=1)(w, cs))
        batched = np.asarray(jax.vmap(chip_matrix, in_axes=(0, None))(np.stack([w, 2 * w]), cs))
    np.testing.assert_allclose(jitted, m, rtol=0, atol=1e-12)
    np.testing.assert_allclose(batched[1], 2 * m, rtol=0, atol=1e-12)


@pytest.mark.slow  # ~15 s of compiling and calibrating; the drifting and gradient tests run both chip states fast
def test_error_ordering_fabricated_calibrated_ideal():
    w = _w((12, 20))
    errors = {}
    with jax.enable_x64(True):
        for state in ("ideal", "fabricated", "calibrated"):
            errors[state] = _err(chip_matrix(w, ChipState("clements-8", state, seed=1)), w)
    assert errors["fabricated"] > errors["calibrated"] > errors["ideal"]
    # the read-out keeps the real part of the chip's complex matrix, so its error is at most the complex one
    prog = pc.compile(w, target="clements-8", pipeline="tile | svd | clements | canonicalize | lower")
    chip = pc.fabricate("clements-8", seed=1)
    assert errors["fabricated"] <= pc.error(prog, chip)["matrix_error"] + 1e-12
    cal = pc.calibrate(prog, chip, method="local", progress=False)
    assert errors["calibrated"] <= cal.report.summary["error_after"] + 1e-12


def test_drifting_chip_is_the_calibrated_one_at_zero_kelvin_and_drifts_away():
    w = _w((8, 8))
    with jax.enable_x64(True):
        cal = np.asarray(chip_matrix(w, ChipState("clements-8", "calibrated", seed=1)))
        still = np.asarray(chip_matrix(w, ChipState("clements-8", "drifting", seed=1, temperature_k=0.0)))
        warm = np.asarray(chip_matrix(w, ChipState("clements-8", "drifting", seed=1, temperature_k=(1.0, 0.5, 0.5))))
    # the drives reproduce the calibrated phases; only the gain differs (best complex instead of best real)
    assert abs(_err(still, w) - _err(cal, w)) < 0.1 * _err(cal, w)
    assert _err(warm, w) > 1.5 * _err(cal, w)


def test_drifting_states_reuse_the_calibration_of_the_calibrated_state(monkeypatch):
    """One calibration per weights and chip: the calibrated state and two temperatures call calibrate once,
    and the drifting matrices equal those computed with a fresh calibration (to 1e-12)."""
    import photocomp.nn.functional as functional

    w = _w((8, 8), 5)
    states = [ChipState("clements-8", "calibrated", seed=2)] + [
        ChipState("clements-8", "drifting", seed=2, temperature_k=t) for t in (0.5, 1.0)]
    calls = []
    real = functional.calibrate
    monkeypatch.setattr(functional, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    pc.nn.clear_cache()
    with jax.enable_x64(True):
        shared = [np.asarray(chip_matrix(w, cs)) for cs in states]
        assert len(calls) == 1
        fresh = []
        for cs in states:
            pc.nn.clear_cache()
            fresh.append(np.asarray(chip_matrix(w, cs)))
    assert len(calls) == 4
    for a, b in zip(shared, fresh):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_phase_quantization_costs_error_and_gradients_pass_straight_through():
    w = _w((8, 8))
    cs = ChipState("clements-8", dac_bits=4)
    with jax.enable_x64(True):
        m = np.asarray(chip_matrix(w, cs))
        m8 = np.asarray(chip_matrix(w, cs.replace(dac_bits=8)))
        prog = pc.compile(w, target="clements-8", pipeline="tile | svd | clements | canonicalize | quantize(bits=4)")
        c = jnp.asarray(_w((8, 8), 3))
        g = jax.grad(lambda a: jnp.sum(jnp.sin(chip_matrix(a, cs)) * c))(jnp.asarray(w))
    assert _err(m, w) > _err(m8, w) > IDEAL_RTOL
    np.testing.assert_allclose(m, np.real(prog.matrix()), rtol=0, atol=1e-12)  # the compiler's quantized program
    np.testing.assert_allclose(np.asarray(g), np.cos(m) * np.asarray(c), rtol=0, atol=1e-12)  # dL/dM at M = chip


def test_gradient_of_the_ideal_chip_matches_finite_differences():
    """In the ideal state without DACs the chip applies W, so the straight-through gradient is exact."""
    w = _w((6, 10))  # 1 x 2 tiles of clements-8
    x = _w((4, 10), 1)
    cs = ChipState("clements-8")

    def loss(a):
        return jnp.sum(jnp.tanh(linear(a, None, x, cs)) ** 2)

    eps = BOUND["grad_eps"]
    with jax.enable_x64(True):
        g = np.asarray(jax.grad(loss)(jnp.asarray(w)))
        for seed in range(3):
            d = _w(w.shape, 10 + seed)
            fd = (float(loss(jnp.asarray(w + eps * d))) - float(loss(jnp.asarray(w - eps * d)))) / (2 * eps)
            assert abs(np.sum(g * d) - fd) <= BOUND["grad_atol"] + BOUND["grad_rtol"] * abs(fd)


@pytest.mark.parametrize("state", ["fabricated", "calibrated"])
def test_gradients_in_inputs_and_bias_are_exact_and_in_weights_straight_through(state):
    w, b, x = _w((8, 8)), _w((8,), 1), _w((3, 8), 2)
    cs = ChipState("clements-8", state, seed=2)

    def loss(a, bias, inp):
        return jnp.sum(jnp.tanh(linear(a, bias, inp, cs)) ** 2)

    eps = BOUND["grad_eps"]
    with jax.enable_x64(True):
        gw, gb, gx = (np.asarray(v) for v in jax.grad(loss, argnums=(0, 1, 2))(jnp.asarray(w), jnp.asarray(b),
                                                                                jnp.asarray(x)))
        for arg, (value, grad) in enumerate([(b, gb), (x, gx)]):
            d = _w(value.shape, 20 + arg)
            args_p, args_m = [w, b, x], [w, b, x]
            args_p[arg + 1], args_m[arg + 1] = value + eps * d, value - eps * d
            fd = (float(loss(*args_p)) - float(loss(*args_m))) / (2 * eps)
            assert abs(np.sum(grad * d) - fd) <= BOUND["grad_atol"] + BOUND["grad_rtol"] * abs(fd)
        # the weights' gradient is dL/dM at the chip's matrix M, taken as if M were W (straight through)
        m = chip_matrix(w, cs)
        g_m = np.asarray(jax.grad(lambda mm: jnp.sum(jnp.tanh(x @ mm.T + b) ** 2))(m))
    np.testing.assert_allclose(gw, g_m, rtol=0, atol=1e-12)
    assert _err(m, w) > 1e-3  # and M is not W: the chip's errors are in the forward pass


def test_read_out_adc_levels_and_detector_noise():
    with jax.enable_x64(True):
        y = jnp.asarray(_w((5, 6)))
        q = np.asarray(read_out(y, ChipState("clements-8", adc_bits=3)))
        scale = np.max(np.abs(np.asarray(y)), axis=-1, keepdims=True)
        code = (q / scale + 1) / 2 * 7  # 2^3 levels on [-1, 1]
        noisy = [np.asarray(read_out(y, ChipState("clements-8", shots=s), jax.random.key(0))) for s in (1, 1000)]
        again = np.asarray(read_out(y, ChipState("clements-8", shots=1), jax.random.key(0)))
        other = np.asarray(read_out(y, ChipState("clements-8", shots=1), jax.random.key(1)))
        g = jax.grad(lambda v: jnp.sum(read_out(v, ChipState("clements-8", adc_bits=3), None) * v))(y)
    np.testing.assert_allclose(code, np.round(code), rtol=0, atol=1e-9)
    assert np.max(np.abs(q - np.asarray(y))) <= scale.max() / 7 + 1e-12  # half a step of 2 / 7 of the scale
    np.testing.assert_array_equal(noisy[0], again)  # the key decides the noise
    assert not np.array_equal(noisy[0], other)
    err = [np.linalg.norm(n - np.asarray(y)) for n in noisy]
    assert 0 < err[1] < err[0]  # averaging shots lowers the noise
    np.testing.assert_allclose(np.asarray(g), q + np.asarray(y), rtol=0, atol=1e-12)  # straight through


def test_fine_tuning_through_a_fabricated_chip_lowers_the_loss():
    """A teacher's weights, run on a fabricated chip, fit the teacher's data worse; training through the chip
    (straight-through gradients) brings the loss down."""
    teacher = _w((8, 8))
    x = jnp.asarray(_w((64, 8), 1), jnp.float32)
    y = x @ jnp.asarray(teacher, jnp.float32).T
    cs = ChipState("clements-8", "fabricated", seed=1)

    def loss(w):
        return jnp.mean((linear(w, None, x, cs) - y) ** 2)

    opt = optax.adam(1e-2)

    @jax.jit
    def step(w, state):
        value, g = jax.value_and_grad(loss)(w)
        updates, state = opt.update(g, state, w)
        return optax.apply_updates(w, updates), state, value

    w = jnp.asarray(teacher, jnp.float32)
    state = opt.init(w)
    start = float(loss(w))
    for _ in range(40):
        w, state, _ = step(w, state)
    assert start > 0
    assert float(loss(w)) < 0.5 * start


# ---- Equinox -------------------------------------------------------------------------------------------


class _Net(eqx.Module):
    conv: eqx.nn.Conv1d
    layers: list
    head: dict

    def __init__(self, key):
        k = jax.random.split(key, 4)
        self.conv = eqx.nn.Conv1d(1, 2, 3, key=k[0])
        self.layers = [eqx.nn.Linear(12, 9, key=k[1]), jax.nn.relu, eqx.nn.Linear(9, 7, use_bias=False, key=k[2])]
        self.head = {"out": eqx.nn.Linear(7, 3, key=k[3])}

    def __call__(self, x):
        h = self.conv(x[None]).ravel()  # (2, 6) -> 12
        for layer in self.layers:
            h = layer(h)
        return self.head["out"](h)


def test_from_model_swaps_exactly_the_linear_layers_and_keeps_outputs():
    with jax.enable_x64(True):
        net = _Net(jax.random.key(0))
        x = jnp.asarray(_w((8,)))
        chip_net = pc.nn.from_model(net, "clements-8")
        kinds = [type(n).__name__ for n in jax.tree_util.tree_leaves(
            chip_net, is_leaf=lambda n: isinstance(n, (eqx.nn.Linear, pc.nn.PhotonicLinear, eqx.nn.Conv1d)))
                 if isinstance(n, eqx.Module)]
        assert kinds == ["Conv1d", "PhotonicLinear", "PhotonicLinear", "PhotonicLinear"]
        assert eqx.tree_equal(chip_net.conv, net.conv) and chip_net.layers[1] is jax.nn.relu
        assert chip_net.layers[2].bias is None
        np.testing.assert_array_equal(np.asarray(chip_net.head["out"].weight), np.asarray(net.head["out"].weight))
        ref, out = np.asarray(net(x)), np.asarray(chip_net(x))
        assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < IDEAL_RTOL
        # the swapped model trains: gradients reach every photonic layer's weights
        grads = eqx.filter_grad(lambda m: jnp.sum(m(x) ** 2))(chip_net)
        assert all(np.any(np.asarray(layer.weight) != 0) for layer in (grads.layers[0], grads.layers[2], grads.head["out"]))


def test_photonic_linear_layer_batches_and_reports_its_matrix():
    cs = ChipState("clements-8", "fabricated", seed=1)
    with jax.enable_x64(True):
        layer = pc.nn.PhotonicLinear(10, 5, cs, key=jax.random.key(0))
        x = jnp.asarray(_w((2, 3, 10)))
        y = np.asarray(eqx.filter_jit(lambda m, v: m(v))(layer, x))
        m = np.asarray(layer.matrix())
        expect = np.asarray(x) @ m.T + np.asarray(layer.bias)
    assert layer.weight.shape == (5, 10) and y.shape == (2, 3, 5)
    np.testing.assert_allclose(y, expect, rtol=0, atol=1e-12)
    assert _err(m, np.asarray(layer.weight)) > 1e-3
    same = pc.nn.PhotonicLinear(10, 5, "clements-8", "fabricated", seed=1, key=jax.random.key(0))
    assert same.chip == cs


# ---- Flax NNX ------------------------------------------------------------------------------------------


def test_nnx_from_model_swaps_linear_layers_and_keeps_outputs():
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            f64 = {"param_dtype": jnp.float64, "dtype": jnp.float64, "rngs": rngs}
            self.first = nnx.Linear(6, 9, **f64)
            self.norm = nnx.LayerNorm(9, **f64)
            self.rest = nnx.List([nnx.Linear(9, 4, **f64), nnx.Linear(4, 2, use_bias=False, **f64)])

        def __call__(self, x):
            h = jax.nn.relu(self.norm(self.first(x)))
            for layer in self.rest:
                h = layer(h)
            return h

    with jax.enable_x64(True):
        net = Net(nnx.Rngs(0))
        chip_net = pc.nn.nnx.from_model(net, "clements-8")
        photonic = pc.nn.nnx.PhotonicLinear
        assert isinstance(chip_net.first, photonic) and all(isinstance(layer, photonic) for layer in chip_net.rest)
        assert isinstance(chip_net.norm, nnx.LayerNorm) and isinstance(net.first, nnx.Linear)  # original untouched
        assert chip_net.rest[1].bias is None
        x = jnp.asarray(_w((5, 6)))
        ref, out = np.asarray(net(x)), np.asarray(chip_net(x))
        assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < IDEAL_RTOL
        grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(chip_net)
        assert np.any(np.asarray(grads["first"]["kernel"][...]) != 0)


# ---- bad inputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, error, argument", [
    (lambda: ChipState("clements-8", "broken"), UnknownNameError, "state"),
    (lambda: ChipState("clements-8", "fabricated", seed=-1), InvalidInputError, "seed"),
    (lambda: ChipState("clements-8", "ideal", temperature_k=1.0), InvalidInputError, "temperature_k"),
    (lambda: ChipState("clements-8", "drifting", temperature_k=(1.0, 2.0)), InvalidInputError, "temperature_k"),
    (lambda: ChipState("clements-8", "fabricated", calibration="local"), InvalidInputError, "calibration"),
    (lambda: ChipState("clements-8", "calibrated", calibration="twin"), UnknownNameError, "calibration"),
    (lambda: ChipState("clements-8", dac_bits=0), InvalidInputError, "dac_bits"),
    (lambda: ChipState("clements-8", adc_bits=2.5), InvalidTypeError, "adc_bits"),
    (lambda: ChipState(3), InvalidTypeError, "target"),
    (lambda: chip_matrix(np.ones((3, 3)), "clements-8"), InvalidTypeError, "chip"),
    (lambda: chip_matrix(np.ones((3, 3), complex), ChipState("clements-8")), InvalidTypeError, "weights"),
    (lambda: chip_matrix(np.ones((2, 3, 3)), ChipState("clements-8")), InvalidInputError, "weights"),
    (lambda: chip_matrix(np.full((3, 3), np.nan), ChipState("clements-8")), InvalidInputError, "weights"),
    (lambda: chip_matrix("W", ChipState("clements-8")), InvalidTypeError, "weights"),
    (lambda: linear(np.ones((3, 4)), None, np.ones(3), ChipState("clements-8")), InvalidInputError, "x"),
    (lambda: linear(np.ones((3, 4)), np.ones(4), np.ones(4), ChipState("clements-8")), InvalidInputError, "bias"),
    (lambda: linear(np.ones((3, 4)), None, np.ones(4), ChipState("clements-8"), key=0), InvalidTypeError, "key"),
    (lambda: pc.nn.as_chip_state(ChipState("clements-8"), "fabricated"), InvalidInputError, "target"),
    (lambda: pc.nn.PhotonicLinear(0, 3, "clements-8", key=jax.random.key(0)), InvalidInputError, "in_features"),
    (lambda: pc.nn.PhotonicLinear(3, 3, "clements-8", key=0), InvalidTypeError, "key"),
    (lambda: pc.nn.PhotonicLinear.from_linear(eqx.nn.Identity(), "clements-8"), InvalidTypeError, "layer"),
    (lambda: pc.nn.from_model(eqx.nn.Identity(), "clements-8"), InvalidInputError, "model"),
    (lambda: pc.nn.from_model(eqx.nn.Linear(3, 3, key=jax.random.key(0)), 8), InvalidTypeError, "target"),
])
def test_bad_inputs_raise_typed_errors_naming_the_argument(make, error, argument):
    with pytest.raises(error) as info:
        make()
    assert str(info.value).startswith(argument)
    assert " must " in str(info.value) and "got" in str(info.value)
