"""Fabricated chips: sampling statistics, determinism, crosstalk, drive maps, reachability bounds."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import photocomp as pc
from photocomp.hardware.chip import fabricate, heater_slices
from photocomp.hardware.chipsim import chip_matrix, drive_map, realized_phases, settings_from_program


def test_fabricate_is_deterministic_by_seed():
    a, b, c = fabricate("clements-6", seed=7), fabricate("clements-6", seed=7), fabricate("clements-6", seed=8)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.offset, c.offset)


def test_fabricated_statistics_follow_the_target():
    chip = fabricate("pace-64", seed=1)
    t = chip.target
    errs = np.concatenate([chip.coupler_in["v"], chip.coupler_out["v"], chip.coupler_in["u"], chip.coupler_out["u"]])
    assert errs.std() == pytest.approx(t.coupler_sigma_rad, rel=0.05)
    assert abs(errs.mean()) < 3 * t.coupler_sigma_rad / np.sqrt(errs.size)
    loss = np.concatenate([chip.loss_db["v"], chip.loss_db["u"]])
    assert loss.mean() == pytest.approx(t.mzi_loss_db, rel=0.02)
    assert loss.std() == pytest.approx(t.mzi_loss_sigma_db, rel=0.1)
    assert 0 <= chip.offset.min() and chip.offset.max() < 2 * np.pi
    # uniform offsets: mean ~ pi, each quarter of the circle ~ 25 %
    counts = np.histogram(chip.offset, bins=4, range=(0, 2 * np.pi))[0] / chip.offset.size
    np.testing.assert_allclose(counts, 0.25, atol=0.02)
    assert chip.n_heaters == heater_slices(t)["u_out"].stop == 4 * t.n_mzi + 3 * t.size


def test_crosstalk_is_symmetric_local_and_nearest_neighbours_couple_by_the_target_value():
    chip = fabricate("clements-8", seed=0)
    x = chip.crosstalk_dense()
    np.testing.assert_allclose(x, x.T, atol=0)
    assert np.all(np.diag(x) == 0)
    assert x.max() == pytest.approx(chip.target.crosstalk)
    # adjacent MZIs of one column (2 mode pitches apart) couple by exactly `crosstalk`
    sl = heater_slices(chip.target)["v_int"]
    lay = chip.layout
    i = next(j for j in range(lay.n_mzi) if lay.columns[j] == 0 and lay.pairs[j] == 0)
    k = next(j for j in range(lay.n_mzi) if lay.columns[j] == 0 and lay.pairs[j] == 2)
    assert x[sl][:, sl][i, k] == pytest.approx(chip.target.crosstalk)
    none = fabricate(dataclasses.replace(chip.target, crosstalk=0.0), seed=0)
    assert len(none.xt_rows) == 0


def test_drive_map_realises_the_wanted_phases_with_crosstalk():
    chip = fabricate("clements-6", seed=2)
    want = np.random.default_rng(0).uniform(0, 2 * np.pi, (3, chip.n_heaters))
    power = drive_map(chip, want)
    assert power.min() >= 0
    assert power.max() <= chip.target.drive_limit_p_pi * chip.target.heater_p_pi_mw
    with jax.enable_x64(True):
        got = np.asarray(realized_phases(chip, jnp.asarray(power)))
    np.testing.assert_allclose(np.angle(np.exp(1j * (got - want))), 0.0, atol=1e-11)


def test_ideal_chip_implements_the_program_exactly():
    t = dataclasses.replace(pc.get_target("clements-5"), coupler_sigma_rad=0.0, mzi_loss_db=0.0, mzi_loss_sigma_db=0.0)
    w = np.random.default_rng(1).normal(size=(7, 4)) + 1j * np.random.default_rng(2).normal(size=(7, 4))
    prog = pc.compile(w, target=t, pipeline="tile | svd | clements | lower")
    with jax.enable_x64(True):
        got = np.asarray(chip_matrix(fabricate(t, seed=0), settings_from_program(prog.phase_map)))
    np.testing.assert_allclose(got, w, atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", range(5))
def test_reachable_bar_power_matches_brute_force(seed):
    """docs/design.md §4.3: with coupler errors a, b the bar power is reachable only in [sin^2(a+b), cos^2(a-b)]."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 0.08, 2)
    psi = np.linspace(0, 2 * np.pi, 200001)
    with jax.enable_x64(True):
        m = np.asarray(pc.convention.physical_mzi(psi, 0.0, a, b))
    bar = np.abs(m[:, 0, 0]) ** 2
    assert bar.min() == pytest.approx(np.sin(a + b) ** 2, abs=1e-9)
    assert bar.max() == pytest.approx(np.cos(a - b) ** 2, abs=1e-9)


def test_fabricate_bad_input():
    with pytest.raises(pc.InvalidInputError, match="seed"):
        fabricate("clements-4", seed=-1)
    with pytest.raises(pc.InvalidTypeError, match="seed"):
        fabricate("clements-4", seed=1.5)
    with pytest.raises(pc.UnknownNameError, match="target"):
        fabricate("nope-4", seed=0)
    with pytest.raises(pc.InvalidInputError, match="coupler_sigma_rad"):
        dataclasses.replace(pc.get_target("clements-4"), coupler_sigma_rad=-0.1)
