"""The Bell & Walmsley compact mesh (symmetric MZIs, input / edge / output phase layers): the float64 sweep
from Clements phases to Bell heater phases and back, the cell, and the ``bell-N`` target through the chip model."""

from __future__ import annotations

import numpy as np
import pytest

import photocomp as pc
from photocomp.core import bell
from photocomp.core.cell import BELL, MZI, Cell, Coupler, Shifter
from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.layout import layout
from photocomp.core.reference import mesh_product

SIZES = (2, 3, 4, 5, 6, 7, 8, 9, 16, 32)


def _clements_matrix(lay, theta, phi, out):
    return mesh_product(lay.n_modes, [(int(k), t, p) for k, t, p in zip(lay.pairs, theta, phi)], out)


def test_symmetric_cell_is_a_real_rotation_a_common_phase_and_a_pi_on_its_lower_input():
    """B diag(e^{ia}, e^{ib}) B = i e^{i sigma} R(theta) Z, sigma = (a + b)/2, theta = pi/2 - (a - b)/2."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 2 * np.pi, (2, 20))
    got = BELL.transfer({"internal": a, "lower": b})
    theta, sigma = np.pi / 2 - (a - b) / 2, (a + b) / 2
    c, s = np.cos(theta), np.sin(theta)
    rz = np.stack([np.stack([c, s], -1), np.stack([s, -c], -1)], -2)  # R(theta) Z
    np.testing.assert_allclose(got, (1j * np.exp(1j * sigma))[:, None, None] * rz, atol=1e-15)
    assert BELL.heaters == ("internal", "lower") and BELL.couplers == ("coupler_in", "coupler_out")
    assert BELL.programming == "sweep" and BELL.internal is None and "bell" in pc.core.cell.CELLS


def test_sweep_cells_are_checked_and_refuse_per_cell_programming():
    with pytest.raises(InvalidInputError, match=r"Shifter.arm must be one of \('upper', 'lower'\); got 'left'"):
        Shifter("x", arm="left")
    with pytest.raises(InvalidInputError, match="a 'sweep' cell must be Coupler"):
        Cell("sym", (Coupler("c"), Shifter("internal"), Coupler("d")), None, None, programming="sweep")
    with pytest.raises(InvalidInputError, match="programming must be one of"):
        Cell("m", MZI.components, MZI.internal, MZI.screen, programming="global")
    with pytest.raises(InvalidInputError, match="'bell' cell is programmed by a 'sweep'"):
        BELL.ideal_settings(0.3, 0.1)
    with pytest.raises(InvalidInputError, match="Clements"):
        bell.sweep_structure(layout("reck", 4))
    with pytest.raises(InvalidTypeError, match="MeshLayout"):
        bell.sweep_structure("clements-4")
    with pytest.raises(InvalidInputError, match="missing"):
        bell.clements_from_bell(layout("clements", 4), {"internal": np.zeros(6)})


@pytest.mark.parametrize("n", SIZES)
def test_bell_phases_reproduce_the_clements_mesh_and_its_decomposition(n):
    lay = layout("clements", n)
    # phase layers: input, one per column, output -- N + 2 (the N = 2 mesh is one column)
    assert bell.phase_layers(lay) == lay.depth + 2 == (n + 2 if n >= 3 else 3)
    assert bell.edge_count(lay) == (n if n % 2 == 0 else (n - 1) // 2) * (n >= 3)
    rng = np.random.default_rng(n)
    # a Haar unitary through the compiler's Clements decomposition
    u = pc.haar_unitary(n, rng)
    mp = pc.decompose(u, "clements")
    ph = bell.bell_from_clements(lay, np.asarray(mp.theta), np.asarray(mp.phi), np.asarray(mp.out_phase))
    assert {k: v.shape for k, v in ph.items()} == {"internal": (lay.n_mzi,), "lower": (lay.n_mzi,), "input": (n,),
                                                   "edge": (bell.edge_count(lay),), "output": (n,)}
    assert all(np.all((v >= 0) & (v < 2 * np.pi)) for v in ph.values())
    np.testing.assert_allclose(bell.bell_unitary(lay, ph), u, atol=1e-12)
    # random phases (outside the canonical ranges too), and back
    theta, phi, out = rng.uniform(-4, 4, lay.n_mzi), rng.uniform(-4, 4, lay.n_mzi), rng.uniform(-4, 4, n)
    want = _clements_matrix(lay, theta, phi, out)
    ph = bell.bell_from_clements(lay, theta, phi, out)
    np.testing.assert_allclose(bell.bell_unitary(lay, ph), want, atol=1e-12)
    t2, p2, o2 = bell.clements_from_bell(lay, ph)
    np.testing.assert_allclose(_clements_matrix(lay, t2, p2, o2), want, atol=1e-12)
    # the ideal programming leaves the mode-0 edge shifters, every edge of odd N and the last column's at 0
    st = bell.sweep_structure(lay)
    idle = [j for j, (c, q) in enumerate(st.edges) if q == 0 or n % 2 == 1 or c == lay.depth - 1]
    np.testing.assert_array_equal(ph["edge"][idle], 0.0)


def test_random_bell_phases_round_trip_through_the_clements_phases():
    for n in (5, 8):
        lay = layout("clements", n)
        rng = np.random.default_rng(7)
        ph = {g: rng.uniform(0, 2 * np.pi, s) for g, s in (("internal", lay.n_mzi), ("lower", lay.n_mzi),
                                                            ("input", n), ("edge", bell.edge_count(lay)),
                                                            ("output", n))}
        want = bell.bell_unitary(lay, ph)
        theta, phi, out = bell.clements_from_bell(lay, ph)
        np.testing.assert_allclose(_clements_matrix(lay, theta, phi, out), want, atol=1e-12)
        again = bell.bell_from_clements(lay, theta, phi, out)
        np.testing.assert_allclose(bell.bell_unitary(lay, again), want, atol=1e-12)


def test_sweep_batches_over_leading_axes():
    lay = layout("clements", 6)
    rng = np.random.default_rng(3)
    theta, phi, out = rng.uniform(0, 2, (2, 3, 15)), rng.uniform(0, 6, (2, 3, 15)), rng.uniform(0, 6, (2, 3, 6))
    batched = bell.bell_from_clements(lay, theta, phi, out)
    one = bell.bell_from_clements(lay, theta[1, 2], phi[1, 2], out[1, 2])
    for g in bell.BELL_GROUPS:
        np.testing.assert_allclose(batched[g][1, 2], one[g], atol=1e-12)
