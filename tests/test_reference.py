"""The float64 NumPy reference decompositions, and photocomp's agreement with them.

photocomp.core.reference is written independently of photocomp.compiler.decompose (plain
loops and 2 x 2 products), so it serves as the oracle: it must rebuild U on
its own, and photocomp must produce the same MZIs (same theta and phi, in
the same order along every mode pair) and the same output screen.
"""

import numpy as np
import pytest

from photocomp.compiler.decompose import decompose
from photocomp.core import reference

# Tolerances (float64), in one place.
ATOL_REFERENCE = 1e-12  # reference rebuild vs U
ATOL_PHOTOCOMP = 1e-11  # photocomp phases rebuilt by the reference mesh_product vs U
ATOL_THETA = 1e-10  # photocomp vs reference, rad
ATOL_PHASOR = 1e-9  # |exp(i phi_a) - exp(i phi_b)|

REFERENCE = {"clements": reference.clements_reference, "reck": reference.reck_reference}
MESHES = sorted(REFERENCE)


def _haar(n, seed):
    return reference.haar_unitary(n, np.random.default_rng([seed, n]))


def _by_pair(ops, n):
    """Group ``(k, theta, phi)`` by pair k, keeping the order light meets them."""
    groups = {k: [] for k in range(n - 1)}
    for k, theta, phi in ops:
        groups[int(k)].append((float(theta), float(phi)))
    return groups


def test_haar_unitary_is_unitary_and_seeded():
    a = reference.haar_unitary(6, np.random.default_rng(3))
    b = reference.haar_unitary(6, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a @ a.conj().T, np.eye(6), rtol=0, atol=1e-13)
    c = reference.haar_unitary(6, np.random.default_rng(4))
    assert np.max(np.abs(a - c)) > 1e-3


def test_mesh_product_single_mzi_and_screen():
    theta, phi = 0.3, 1.1
    u = reference.mesh_product(3, [(1, theta, phi)], np.array([0.5, 0.0, 0.0]))
    expected = np.eye(3, dtype=complex)
    expected[1:, 1:] = [
        [np.exp(1j * phi) * np.cos(theta), -np.sin(theta)],
        [np.exp(1j * phi) * np.sin(theta), np.cos(theta)],
    ]
    expected[0, 0] = np.exp(0.5j)
    np.testing.assert_allclose(u, expected, rtol=0, atol=1e-15)


def test_mesh_product_applies_ops_in_light_order():
    a, b = (0, 0.4, 0.2), (1, 0.9, -0.7)
    ta = reference.mesh_product(3, [a], np.zeros(3))
    tb = reference.mesh_product(3, [b], np.zeros(3))
    np.testing.assert_allclose(reference.mesh_product(3, [a, b], np.zeros(3)), tb @ ta, rtol=0, atol=1e-15)


def test_fidelity():
    u = _haar(5, 0)
    assert reference.fidelity(u, u) == pytest.approx(1.0, abs=1e-14)
    assert reference.fidelity(u, np.exp(0.7j) * u) == pytest.approx(1.0, abs=1e-14)
    assert reference.fidelity(np.eye(4), np.diag([1, 1, -1, -1])) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("n", range(1, 13))
def test_reference_reconstructs(mesh, n):
    u = _haar(n, 11)
    ops, out_phase = REFERENCE[mesh](u)
    assert len(ops) == n * (n - 1) // 2
    assert all(0 <= k < n - 1 for k, _, _ in ops)
    thetas = np.array([t for _, t, _ in ops])
    assert np.all((thetas >= 0) & (thetas <= np.pi / 2))
    assert out_phase.shape == (n,)
    np.testing.assert_allclose(reference.mesh_product(n, ops, out_phase), u, rtol=0, atol=ATOL_REFERENCE)
    assert reference.fidelity(u, reference.mesh_product(n, ops, out_phase)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("mesh", MESHES)
def test_reference_does_not_modify_input(mesh):
    u = _haar(4, 2)
    copy = u.copy()
    REFERENCE[mesh](u)
    np.testing.assert_array_equal(u, copy)


@pytest.mark.parametrize("mesh", MESHES)
def test_reference_identity_needs_no_crossing(mesh):
    ops, out_phase = REFERENCE[mesh](np.eye(5))
    assert np.allclose([t for _, t, _ in ops], 0.0, atol=1e-15)
    np.testing.assert_allclose(reference.mesh_product(5, ops, out_phase), np.eye(5), rtol=0, atol=1e-14)


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("n", (2, 3, 5, 8, 16, 33))
def test_photocomp_agrees_with_reference(mesh, n):
    u = _haar(n, 23)
    phases = decompose(u, mesh)
    ops = list(zip(phases.layout.pairs, phases.theta, phases.phi))  # layout order is a light order
    np.testing.assert_allclose(
        reference.mesh_product(n, ops, phases.out_phase), u, rtol=0, atol=ATOL_PHOTOCOMP
    )

    ref_ops, ref_out = REFERENCE[mesh](u)
    np.testing.assert_allclose(reference.mesh_product(n, ref_ops, ref_out), u, rtol=0, atol=ATOL_REFERENCE)

    # Same MZIs: along every mode pair, the sequence of (theta, phi) light meets.
    ours, theirs = _by_pair(ops, n), _by_pair(ref_ops, n)
    for k in range(n - 1):
        assert len(ours[k]) == len(theirs[k]), f"pair {k}"
        if not ours[k]:
            continue
        a, b = np.array(ours[k]), np.array(theirs[k])
        np.testing.assert_allclose(a[:, 0], b[:, 0], rtol=0, atol=ATOL_THETA, err_msg=f"theta, pair {k}")
        np.testing.assert_allclose(
            np.exp(1j * a[:, 1]), np.exp(1j * b[:, 1]), rtol=0, atol=ATOL_PHASOR, err_msg=f"phi, pair {k}"
        )
    np.testing.assert_allclose(
        np.exp(1j * phases.out_phase), np.exp(1j * ref_out), rtol=0, atol=ATOL_PHASOR
    )


@pytest.mark.parametrize("mesh", MESHES)
def test_photocomp_batch_agrees_with_reference(mesh):
    n, batch = 5, 3
    us = np.stack([_haar(n, 100 + i) for i in range(batch)])
    phases = decompose(us, mesh)
    for i in range(batch):
        ops = list(zip(phases.layout.pairs, phases.theta[i], phases.phi[i]))
        np.testing.assert_allclose(
            reference.mesh_product(n, ops, phases.out_phase[i]), us[i], rtol=0, atol=ATOL_PHOTOCOMP
        )
        ref_ops, ref_out = REFERENCE[mesh](us[i])
        np.testing.assert_allclose(
            np.exp(1j * phases.out_phase[i]), np.exp(1j * ref_out), rtol=0, atol=ATOL_PHASOR
        )
