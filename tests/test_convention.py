"""The MZI convention (photocomp.core.convention): identities checked numerically in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import BOUND

from photocomp.core import convention

N_ANGLES = 4096


@pytest.fixture(scope="module")
def angles():
    """Random (theta, phi, alpha, beta) in [-pi, pi), float64, seed fixed."""
    r = np.random.default_rng(7)
    return tuple(r.uniform(-np.pi, np.pi, N_ANGLES) for _ in range(4))


def _x64(fn, *args):
    with jax.enable_x64(True):
        return np.asarray(fn(*args))


def _mzi_np(theta, phi):
    """T(theta, phi) of docs/design.md §3.1 written out with NumPy, batched: shape S + (2, 2)."""
    e, c, s = np.exp(1j * np.asarray(phi)), np.cos(theta), np.sin(theta)
    return np.stack([np.stack([e * c, -s + 0j], -1), np.stack([e * s, c + 0j], -1)], -2)


def test_tag_and_ranges():
    assert convention.CONVENTION_TAG == "clements2016-eq1"
    assert convention.THETA_RANGE == (0.0, np.pi / 2)
    assert convention.PHI_RANGE == (0.0, 2 * np.pi)


def test_mzi_matches_design_formula(angles):
    theta, phi, _, _ = angles
    t = _x64(convention.mzi, theta, phi)
    assert t.shape == (N_ANGLES, 2, 2) and t.dtype == np.complex128
    np.testing.assert_allclose(t, _mzi_np(theta, phi), rtol=0, atol=BOUND["unitary"])


def test_mzi_is_unitary(angles):
    theta, phi, _, _ = angles
    t = _x64(convention.mzi, theta, phi)
    eye = np.broadcast_to(np.eye(2), t.shape)
    np.testing.assert_allclose(t @ np.conj(np.swapaxes(t, -1, -2)), eye, rtol=0, atol=BOUND["unitary"])
    np.testing.assert_allclose(np.conj(np.swapaxes(t, -1, -2)) @ t, eye, rtol=0, atol=BOUND["unitary"])


def test_mzi_inverse_is_inverse(angles):
    theta, phi, _, _ = angles
    t = _x64(convention.mzi, theta, phi)
    ti = _x64(convention.mzi_inverse, theta, phi)
    eye = np.broadcast_to(np.eye(2), t.shape)
    np.testing.assert_allclose(ti @ t, eye, rtol=0, atol=BOUND["unitary"])
    np.testing.assert_allclose(t @ ti, eye, rtol=0, atol=BOUND["unitary"])


def test_cross_and_bar_power(angles):
    theta, phi, _, _ = angles
    t = _x64(convention.mzi, theta, phi)
    np.testing.assert_allclose(np.abs(t[:, 1, 0]) ** 2, np.sin(theta) ** 2, rtol=0, atol=BOUND["unitary"])
    np.testing.assert_allclose(np.abs(t[:, 0, 0]) ** 2, np.cos(theta) ** 2, rtol=0, atol=BOUND["unitary"])


def test_commuting_identity(angles):
    """T^-1(theta, phi) diag(e^{ia}, e^{ib}) = diag(e^{i a'}, e^{i b'}) T(theta, phi')."""
    theta, phi, alpha, beta = angles
    with jax.enable_x64(True):
        new_a, new_b, new_phi = (np.asarray(v) for v in convention.commute_through_inverse(theta, phi, alpha, beta))
        lhs = np.asarray(convention.mzi_inverse(theta, phi)) @ _diag(alpha, beta)
        rhs = _diag(new_a, new_b) @ np.asarray(convention.mzi(theta, new_phi))
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=BOUND["commute"])
    np.testing.assert_array_equal(new_b, beta)


def _diag(a, b):
    d = np.zeros(np.shape(a) + (2, 2), dtype=np.complex128)
    d[..., 0, 0] = np.exp(1j * np.asarray(a))
    d[..., 1, 1] = np.exp(1j * np.asarray(b))
    return d


def test_commuting_identity_pure_numpy(angles):
    """The same identity with only NumPy matrices and the formula of docs/design.md §3.5."""
    theta, phi, alpha, beta = angles
    t_inv = np.conj(np.swapaxes(_mzi_np(theta, phi), -1, -2))
    lhs = t_inv @ _diag(alpha, beta)
    rhs = _diag(beta - phi + np.pi, beta) @ _mzi_np(theta, alpha - beta + np.pi)
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=BOUND["commute"])


def test_physical_form_identity(angles):
    """physical_mzi(*to_physical(theta, phi)) == -e^{i theta} diag(1, -1) T(theta, phi)."""
    theta, phi, _, _ = angles
    with jax.enable_x64(True):
        internal, external = convention.to_physical(theta, phi)
        dev = np.asarray(convention.physical_mzi(internal, external))
        t = np.asarray(convention.mzi(theta, phi))
    z = np.diag([1.0, -1.0])
    expected = -np.exp(1j * theta)[:, None, None] * (z @ t)
    np.testing.assert_allclose(dev, expected, rtol=0, atol=BOUND["physical"])


def test_physical_internal_phase_is_two_theta_plus_pi():
    theta = np.array([0.0, 0.3, np.pi / 2])
    internal, external = convention.to_physical(theta, np.array([0.1, 0.2, 0.3]))
    np.testing.assert_allclose(internal, 2 * theta + np.pi, rtol=0, atol=BOUND["physical"])
    np.testing.assert_array_equal(external, [0.1, 0.2, 0.3])


def test_from_physical_inverts_to_physical(angles):
    theta, phi, _, _ = angles
    th2, ph2 = convention.from_physical(*convention.to_physical(theta, phi))
    np.testing.assert_allclose(th2, theta, rtol=0, atol=BOUND["physical"])
    np.testing.assert_array_equal(ph2, phi)
    # and the other way round
    internal, external = convention.to_physical(theta, phi)
    i2, e2 = convention.to_physical(*convention.from_physical(internal, external))
    np.testing.assert_allclose(i2, internal, rtol=0, atol=BOUND["physical"])


def test_to_physical_keeps_array_kind():
    theta = np.array([0.1, 0.2], dtype=np.float32)
    internal, _ = convention.to_physical(theta, theta)
    assert isinstance(internal, np.ndarray) and internal.dtype == np.float32
    internal_j, _ = convention.to_physical(jnp.asarray(theta), jnp.asarray(theta))
    assert isinstance(internal_j, jax.Array)


def test_coupler_zero_is_50_50():
    c = _x64(convention.coupler, 0.0)
    np.testing.assert_allclose(np.abs(c) ** 2, np.full((2, 2), 0.5), rtol=0, atol=BOUND["unitary"])
    np.testing.assert_allclose(c, np.array([[1, 1j], [1j, 1]]) / np.sqrt(2), rtol=0, atol=BOUND["unitary"])


@pytest.mark.parametrize("error", [-0.1, -0.03, 0.03, 0.1, 0.5])
def test_coupler_with_error_is_unitary_and_unbalanced(error):
    c = _x64(convention.coupler, error)
    np.testing.assert_allclose(c @ np.conj(c.T), np.eye(2), rtol=0, atol=BOUND["unitary"])
    np.testing.assert_allclose(abs(c[0, 0]) ** 2, np.cos(np.pi / 4 + error) ** 2, rtol=0, atol=BOUND["unitary"])
    assert abs(abs(c[0, 0]) ** 2 - 0.5) > 1e-3


def test_physical_mzi_with_errors_is_unitary(angles):
    theta, phi, alpha, beta = angles
    errs = 0.05 * np.tanh(alpha), 0.05 * np.tanh(beta)
    d = _x64(convention.physical_mzi, theta, phi, *errs)
    eye = np.broadcast_to(np.eye(2), d.shape)
    np.testing.assert_allclose(d @ np.conj(np.swapaxes(d, -1, -2)), eye, rtol=0, atol=BOUND["unitary"])


def test_physical_bar_power_range_with_coupler_errors():
    """docs/design.md §4.3: with coupler errors a, b the bar power lies in [sin^2(a+b), cos^2(a-b)]."""
    a, b = 0.04, -0.07
    internal = np.linspace(0.0, 2 * np.pi, 2001)
    d = _x64(convention.physical_mzi, internal, np.zeros_like(internal), a, b)
    bar = np.abs(d[:, 0, 0]) ** 2
    lo, hi = np.sin(a + b) ** 2, np.cos(a - b) ** 2
    assert bar.min() >= lo - BOUND["unitary"] and bar.max() <= hi + BOUND["unitary"]
    np.testing.assert_allclose([bar.min(), bar.max()], [lo, hi], rtol=0, atol=BOUND["sampled_extremum"])


def test_wrap_phase_range():
    r = np.random.default_rng(11)
    x = np.concatenate([
        r.uniform(-100, 100, 1000),
        2 * np.pi * np.arange(-5, 6),
        [0.0, -0.0, 2 * np.pi - 1e-16, -1e-300, -1e-17, np.nextafter(2 * np.pi, 0), -np.nextafter(2 * np.pi, 0)],
    ])
    with jax.enable_x64(True):
        w = np.asarray(convention.wrap_phase(jnp.asarray(x)))
    assert w.dtype == np.float64
    assert np.all(w >= 0.0) and np.all(w < 2 * np.pi)
    # same point on the circle
    np.testing.assert_allclose(np.exp(1j * w), np.exp(1j * x), rtol=0, atol=BOUND["wrap_circle"])


def test_wrap_phase_float32_range():
    x = np.float32(np.linspace(-20, 20, 4001))
    w = np.asarray(convention.wrap_phase(jnp.asarray(x)))
    assert w.dtype == np.float32
    assert np.all(w >= 0.0) and np.all(w < np.float32(2 * np.pi))


def test_wrap_phase_negative_subnormal():
    x = -np.nextafter(0.0, 1.0)  # -4.9e-324
    with jax.enable_x64(True):
        w = float(convention.wrap_phase(jnp.asarray([x]))[0])
    assert 0.0 <= w < 2 * np.pi
