"""Cell models as values: every built-in cell runs through the one simulation engine.

Oracles are independent of the engine: each cell's float64 transfer matrix is
the plain product of its components' 2 x 2 matrices (Cell.transfer, numpy),
the mesh reference is the column loop over those matrices, and the ideal
mesh is the convention's mathematical mesh (photocomp.core.layout.mesh_unitary).
"""

import dataclasses

import jax
import numpy as np
import pytest
from scipy.stats import unitary_group

import photocomp as pc
from photocomp.core.cell import CELLS, MZI, MZI3, MZIX, Affine, Cell, Coupler, Crossing, Shifter, get_cell
from photocomp.core.convention import mzi, physical_mzi
from photocomp.core.errors import InvalidInputError, InvalidTypeError, UnknownNameError
from photocomp.core.layout import apply_columns, layout, mesh_unitary
from photocomp.sim.physical import (
    cell_coefficients,
    mesh_from_physical,
    mesh_to_physical,
    physical_coefficients,
    physical_mesh_unitary,
)

ATOL = 1e-12
CELL_NAMES = sorted(n for n in CELLS if CELLS[n].programming == "screen")  # the Bell cell: tests/test_bell.py


def _rng(seed):
    return np.random.default_rng(seed)


def test_mzi_cell_is_the_conventions_physical_mzi():
    r = _rng(0)
    internal, external, c_in, c_out = r.normal(size=(4, 20))
    got = MZI.transfer({"internal": internal, "external": external}, {"coupler_in": c_in, "coupler_out": c_out})
    want = np.asarray(physical_mzi(internal, external, c_in, c_out, xp=np))
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_ideal_programming_realises_the_convention_up_to_the_cells_screen(name):
    """transfer(ideal_settings(theta, chi)) == diag(e^{i alpha}, e^{i beta}) T(theta, chi)."""
    cell = CELLS[name]
    r = _rng(1)
    theta = r.uniform(0, np.pi / 2, 50)
    chi = r.uniform(0, 2 * np.pi, 50)
    alpha, beta = cell.screen_phases(theta)
    want = np.exp(1j * np.stack([alpha, beta], -1))[..., None] * np.asarray(mzi(theta, chi, xp=np))
    np.testing.assert_allclose(cell.transfer(cell.ideal_settings(theta, chi)), want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", CELL_NAMES)
@pytest.mark.parametrize("kind,n", [("clements", 6), ("clements", 7), ("reck", 5)])
def test_ideal_physical_mesh_of_any_cell_is_exactly_the_mathematical_mesh(name, kind, n):
    lay = layout(kind, n, cell=name)
    ph = pc.decompose(unitary_group.rvs(n, random_state=n), kind)
    with jax.enable_x64(True):
        phys = mesh_to_physical(lay, ph.theta, ph.phi, ph.out_phase)
        got = np.asarray(physical_mesh_unitary(lay, *phys))
        want = np.asarray(mesh_unitary(lay, ph.theta, ph.phi, ph.out_phase))
        back = mesh_from_physical(lay, *phys)
        again = np.asarray(mesh_unitary(lay, *back))
    np.testing.assert_allclose(got, want, atol=1e-11, rtol=0)
    np.testing.assert_allclose(again, want, atol=1e-11, rtol=0)  # the inverse conversion is exact too


@pytest.mark.parametrize("name", CELL_NAMES)
def test_engine_with_errors_matches_the_column_loop_over_cell_transfers(name):
    """Random heaters, trims, coupler errors and losses: the step engine equals the float64 reference."""
    cell = CELLS[name]
    lay = layout("clements", 7, cell=name)
    m = lay.n_mzi
    r = _rng(2)
    settings = {h: r.uniform(0, 2 * np.pi, m) for h in cell.heaters}
    errors = {e: r.normal(0, 0.05, m) for e in cell.couplers}
    errors["loss_db"] = np.abs(r.normal(0.1, 0.05, m))
    out = r.uniform(0, 2 * np.pi, 7)
    mats = cell.transfer(settings, errors)
    trims = {h: settings[h] for h, _ in cell.trims}
    extra = {e: v for e, v in errors.items() if e not in ("coupler_in", "coupler_out", "loss_db")}
    with jax.enable_x64(True):
        want = np.asarray(apply_columns(lay, jax.numpy.asarray(mats), out, jax.numpy.eye(7, dtype=complex)))
        got = np.asarray(physical_mesh_unitary(
            lay, settings["internal"], settings["external"], out, coupler_in=errors["coupler_in"],
            coupler_out=errors["coupler_out"], loss_db=errors["loss_db"], trims=trims, errors=extra))
    np.testing.assert_allclose(got, want, atol=1e-12, rtol=0)


def test_mzi_fast_path_equals_the_generic_product():
    lay = layout("clements", 8)
    r = _rng(3)
    internal, external, c_in, c_out = r.normal(size=(4, lay.n_mzi))
    loss = np.abs(r.normal(0.2, 0.1, lay.n_mzi))
    with jax.enable_x64(True):
        fast = physical_coefficients(lay, internal, external, c_in, c_out, loss, dtype=np.complex128)
        generic = cell_coefficients(MZI, {"internal": internal, "external": external},
                                    {"coupler_in": c_in, "coupler_out": c_out, "loss_db": loss}, lay.n_mzi,
                                    dtype=np.complex128)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(generic), atol=1e-14, rtol=0)


def test_engine_is_differentiable_for_a_new_cell():
    """Gradients through a three-splitter mesh (trims included) agree with finite differences."""
    lay = layout("clements", 4, cell="mzi3")
    r = _rng(4)
    internal, external, trim = r.uniform(0, 2 * np.pi, (3, lay.n_mzi))
    target = unitary_group.rvs(4, random_state=0)

    def loss(t):
        u = physical_mesh_unitary(lay, internal, external, np.zeros(4), trims={"trim": t},
                                  errors={"coupler_mid": 0.03})
        return jax.numpy.sum(jax.numpy.abs(u - target) ** 2)

    with jax.enable_x64(True):
        loss = jax.jit(loss)
        g = np.asarray(jax.grad(loss)(jax.numpy.asarray(trim)))
        eps = 1e-6
        fd = np.array([(loss(trim + eps * e) - loss(trim - eps * e)) / (2 * eps) for e in np.eye(lay.n_mzi)])
    np.testing.assert_allclose(g, fd, atol=1e-7, rtol=0)


def test_trim_restores_full_splitting_range_of_an_imperfect_three_splitter_mzi():
    """The point of the extra splitter: with coupler errors a plain MZI cannot reach the cross state
    (|m00| = 0); the three-splitter MZI can, by its trim (Hamerly et al. 2022)."""
    err = {"coupler_in": 0.08, "coupler_out": 0.08}
    grid = np.linspace(0, 2 * np.pi, 721)
    mzi_best = np.abs(MZI.transfer({"internal": grid, "external": 0.0}, err)[:, 0, 0]).min()
    err3 = dict(err, coupler_mid=0.08)
    a, t = np.meshgrid(grid, grid)
    mzi3_best = np.abs(MZI3.transfer({"internal": a, "external": 0.0, "trim": t}, err3)[..., 0, 0]).min()
    assert mzi_best > 0.15  # sin(2 * 0.08) = 0.159: the MZI's cross state is out of reach
    assert mzi3_best < 0.02


def test_layouts_differ_by_cell_and_are_cached():
    a, b = layout("clements", 5), layout("clements", 5, cell="mzix")
    assert a.cell == MZI and b.cell == MZIX
    assert a != b and hash(a) != hash(b)
    assert (a.pairs, a.columns) == (b.pairs, b.columns)
    assert layout("clements", 5, cell=MZIX) is b
    assert layout("clements", 5, cell="mzi") is a


def test_a_new_cell_is_a_value():
    """A user-defined cell (an MZI with its external shifter on the output side of a crossing) runs
    through the same engine with no new code."""
    cell = Cell(name="xmzi", components=(Crossing(), Shifter("external"), Coupler("coupler_in"),
                                         Shifter("internal"), Coupler("coupler_out"), Crossing()),
                internal=Affine(2.0, np.pi), screen=(Affine(1.0, np.pi), Affine(1.0, 0.0)))
    lay = dataclasses.replace(layout("clements", 4), cell=cell)
    r = _rng(5)
    settings = {h: r.uniform(0, 2 * np.pi, lay.n_mzi) for h in cell.heaters}
    with jax.enable_x64(True):
        got = np.asarray(physical_mesh_unitary(lay, settings["internal"], settings["external"], np.zeros(4)))
        want = np.asarray(apply_columns(lay, jax.numpy.asarray(cell.transfer(settings)), np.zeros(4),
                                        jax.numpy.eye(4, dtype=complex)))
    np.testing.assert_allclose(got, want, atol=1e-12, rtol=0)


def test_bad_cells_and_names_are_refused_with_the_argument_named():
    with pytest.raises(UnknownNameError, match="cell must be"):
        get_cell("mzi9")
    with pytest.raises(UnknownNameError, match="cell must be"):
        layout("clements", 4, cell=3)
    base = dict(name="c", internal=Affine(2.0, 0.0), screen=(Affine(1.0, 0.0), Affine(1.0, 0.0)))
    with pytest.raises(InvalidInputError, match="'internal' and 'external'"):
        Cell(components=(Shifter("internal"), Coupler("a")), **base)
    with pytest.raises(InvalidInputError, match="unique"):
        Cell(components=(Shifter("external"), Shifter("internal"), Coupler("a"), Coupler("a")), **base)
    with pytest.raises(InvalidInputError, match="trims"):
        Cell(components=(Shifter("external"), Shifter("internal"), Shifter("t")), **base)
    with pytest.raises(InvalidTypeError, match="components"):
        Cell(components=("coupler",), **base)
    with pytest.raises(InvalidInputError, match="keys"):
        MZI.transfer({"internal": 0.0})
    with pytest.raises(InvalidInputError, match="errors"):
        cell_coefficients(MZI3, {"internal": 0.0, "external": 0.0, "trim": 0.0}, {"coupler_x": 0.1}, 3,
                          dtype=np.complex128)


def test_path_shifters_count_the_heaters_light_passes_from_each_input():
    from photocomp.core.cell import BELL

    counts = {c.name: (c.path_shifters(0), c.path_shifters(1)) for c in (MZI, MZI3, MZIX, BELL)}
    assert counts == {"mzi": (2, 1), "mzi3": (3, 2), "mzix": (2, 1), "bell": (1, 1)}
    # a crossing before the first coupler moves the light to the other arm's shifter
    crossed = Cell("x", (Crossing(), Shifter("external"), Coupler("c"), Shifter("internal"), Coupler("d")),
                   MZI.internal, MZI.screen)
    assert (crossed.path_shifters(0), crossed.path_shifters(1)) == (1, 2)
    with pytest.raises(pc.InvalidInputError, match=r"port must be .*got 2"):
        MZI.path_shifters(2)


def test_cost_counts_the_crossing_of_every_mzi_crossing_cell_on_the_worst_path():
    u = pc.haar_unitary(6, np.random.default_rng(0))
    mzi, mzix = (pc.cost(pc.compile(u, f"{fam}-6")) for fam in ("clements", "mzix"))
    t = pc.get_target("mzix-6")
    assert mzi.path_crossings == 0 and mzix.path_crossings == mzix.path_mzis == mzi.path_mzis
    assert mzix.insertion_loss_db - mzi.insertion_loss_db == pytest.approx(mzix.path_crossings * t.crossing_loss_db,
                                                                           rel=1e-12)
    assert f"{mzix.path_crossings} crossings)" in str(mzix) and "crossings" not in str(mzi)


def test_cost_counts_the_three_splitter_mzis_trim_on_the_worst_path():
    u = pc.haar_unitary(6, np.random.default_rng(0))
    mzi, mzi3 = (pc.cost(pc.compile(u, f"{fam}-6")) for fam in ("clements", "mzi3"))
    t = pc.get_target("mzi3-6")
    # one more heater per cell on the path: the worst path (through the most cells) gains one per cell
    assert mzi3.path_phase_shifters - mzi.path_phase_shifters == mzi3.path_mzis == mzi.path_mzis
    assert mzi3.insertion_loss_db - mzi.insertion_loss_db == pytest.approx(
        mzi3.path_mzis * t.phase_shifter_loss_db, rel=1e-12)
