"""Mesh-level mathematical <-> physical conversion and the physical mesh simulator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.stats import unitary_group

import photocomp as pc
from photocomp.sim.physical import (
    apply_physical_mesh,
    mesh_from_physical,
    mesh_to_physical,
    physical_mesh_unitary,
)

ATOL = 1e-12


def _phases(kind, n, seed):
    return pc.decompose(unitary_group.rvs(n, random_state=seed), kind)


@pytest.mark.parametrize("kind", ["clements", "reck"])
@pytest.mark.parametrize("n", [2, 3, 6, 11])
def test_ideal_physical_mesh_is_exactly_the_mathematical_mesh(kind, n):
    ph = _phases(kind, n, seed=n)
    with jax.enable_x64(True):
        phys = mesh_to_physical(ph.layout, ph.theta, ph.phi, ph.out_phase)
        got = np.asarray(physical_mesh_unitary(ph.layout, *phys))
        want = np.asarray(ph.unitary())
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    internal = np.asarray(phys[0])
    np.testing.assert_allclose(internal, np.mod(2 * ph.theta + np.pi, 2 * np.pi), atol=ATOL)


@pytest.mark.parametrize("kind", ["clements", "reck"])
def test_physical_round_trip(kind):
    ph = _phases(kind, 7, seed=1)
    with jax.enable_x64(True):
        back = mesh_from_physical(ph.layout, *mesh_to_physical(ph.layout, ph.theta, ph.phi, ph.out_phase))
    theta, phi, out = (np.asarray(a) for a in back)
    np.testing.assert_allclose(theta, ph.theta, atol=ATOL)
    # phases compare on the circle
    np.testing.assert_allclose(np.exp(1j * phi), np.exp(1j * ph.phi), atol=ATOL)
    np.testing.assert_allclose(np.exp(1j * out), np.exp(1j * ph.out_phase), atol=ATOL)


def test_batched_conversion_matches_loop():
    u = unitary_group.rvs(5, size=3, random_state=2)
    ph = pc.decompose(u)
    with jax.enable_x64(True):
        batch = mesh_to_physical(ph.layout, ph.theta, ph.phi, ph.out_phase)
        for b in range(3):
            one = mesh_to_physical(ph.layout, ph.theta[b], ph.phi[b], ph.out_phase[b])
            for x, y in zip(batch, one):
                np.testing.assert_array_equal(np.asarray(x)[b], np.asarray(y))


@pytest.mark.slow  # run by .ci/run after the fast suite
def test_uncorrected_coupler_errors_follow_sqrt_2n_sigma():
    """docs/design.md §5 oracle: ||dU||_F / sqrt(N) ~ sqrt(2N) sigma for uncorrected coupler errors."""
    n, sigma = 24, 0.01
    rng = np.random.default_rng(0)
    vals = []
    with jax.enable_x64(True):
        for seed in range(6):
            ph = _phases("clements", n, seed)
            phys = mesh_to_physical(ph.layout, ph.theta, ph.phi, ph.out_phase)
            m = ph.layout.n_mzi
            got = physical_mesh_unitary(
                ph.layout, *phys,
                coupler_in=rng.normal(0, sigma, m), coupler_out=rng.normal(0, sigma, m),
            )
            vals.append(np.linalg.norm(np.asarray(got) - np.asarray(ph.unitary())) / np.sqrt(n))
    assert np.mean(vals) == pytest.approx(np.sqrt(2 * n) * sigma, rel=0.15)


def test_loss_only_scales_amplitudes():
    ph = _phases("clements", 4, seed=3)
    with jax.enable_x64(True):
        phys = mesh_to_physical(ph.layout, ph.theta, ph.phi, ph.out_phase)
        lossless = np.asarray(physical_mesh_unitary(ph.layout, *phys))
        lossy = np.asarray(physical_mesh_unitary(ph.layout, *phys, loss_db=0.5))
    # every singular value is shrunk, none grows: passive
    s = np.linalg.svd(lossy, compute_uv=False)
    assert s.max() < 1.0
    np.testing.assert_allclose(np.linalg.svd(lossless, compute_uv=False), 1.0, atol=ATOL)


@pytest.mark.slow  # run by .ci/run after the fast suite
def test_physical_mesh_gradients():
    ph = _phases("clements", 4, seed=4)
    with jax.enable_x64(True):
        internal, external, out = (jnp.asarray(a) for a in mesh_to_physical(ph.layout, ph.theta, ph.phi, ph.out_phase))
        x = jnp.asarray(np.random.default_rng(5).normal(size=4) + 0j)
        errs = jnp.asarray(np.random.default_rng(6).normal(0, 0.03, ph.layout.n_mzi))

        def power(i, e, c):
            y = apply_physical_mesh(ph.layout, i, e, out, x, coupler_in=c, coupler_out=c)
            return jnp.sum(jnp.abs(y[:2]) ** 2)

        check_grads(power, (internal, external, errs), order=1, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6)
