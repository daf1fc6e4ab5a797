"""Detector noise model and the black-box measurement interface."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import photocomp as pc
from photocomp.hardware.chipsim import drive_map, realized_phases


def _quiet(target):
    return dataclasses.replace(target, photons_per_shot=1e15, dark_noise=0.0, adc_bits=32)


def test_noise_free_black_box_equals_the_chip_model():
    t = _quiet(pc.get_target("clements-4"))
    chip = pc.fabricate(t, seed=2)
    box = pc.BlackBoxChip(chip, seed=0)
    rng = np.random.default_rng(0)
    power = rng.uniform(0, 2 * t.heater_p_pi_mw, chip.n_heaters)
    x = rng.normal(size=(5, 4)) + 1j * rng.normal(size=(5, 4))
    got = box.measure(power, x)
    from photocomp.hardware.detector import _tile_matrix_from_drives

    with jax.enable_x64(True):
        m = np.asarray(_tile_matrix_from_drives(chip, jnp.asarray(power)))
    want = np.abs(x @ m.T) ** 2
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    assert box.measurements == 5
    box.measure(power, x[0], shots=3)
    assert box.measurements == 8


def test_drives_from_the_drive_map_realise_the_program_settings():
    t = _quiet(pc.get_target("clements-4"))
    chip = pc.fabricate(t, seed=5)
    want = np.random.default_rng(1).uniform(0, 2 * np.pi, chip.n_heaters)
    power = drive_map(chip, want)
    with jax.enable_x64(True):
        got = np.asarray(realized_phases(chip, jnp.asarray(power)))
    np.testing.assert_allclose(np.angle(np.exp(1j * (got - want))), 0, atol=1e-11)


def test_shot_noise_scales_like_sqrt_intensity_over_photons():
    t = dataclasses.replace(pc.get_target("clements-4"), photons_per_shot=1e4, dark_noise=0.0, adc_bits=24)
    key = jax.random.PRNGKey(0)
    intensity = jnp.full((20000,), 0.25)
    with jax.enable_x64(True):
        r = np.asarray(pc.detect(intensity, t, key))
        r4 = np.asarray(pc.detect(intensity, t, key, shots=4))
    assert r.mean() == pytest.approx(0.25, rel=1e-3)
    assert r.std() == pytest.approx(np.sqrt(0.25 / 1e4), rel=0.03)
    assert r4.std() == pytest.approx(np.sqrt(0.25 / 4e4), rel=0.03)


def test_adc_quantizes_to_its_levels():
    t = dataclasses.replace(pc.get_target("clements-4"), photons_per_shot=1e15, dark_noise=0.0, adc_bits=3)
    with jax.enable_x64(True):
        r = np.asarray(pc.detect(jnp.linspace(0, 1, 101), t, jax.random.PRNGKey(0)))
    np.testing.assert_allclose(np.unique(np.round(r * 7, 9)), np.arange(8), atol=1e-9)


def test_black_box_is_reproducible_by_seed():
    chip = pc.fabricate("clements-4", seed=1)
    p = np.full(chip.n_heaters, 10.0)
    x = np.eye(4)
    a = pc.BlackBoxChip(chip, seed=3).measure(p, x)
    b = pc.BlackBoxChip(chip, seed=3).measure(p, x)
    c = pc.BlackBoxChip(chip, seed=4).measure(p, x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_black_box_bad_input():
    chip = pc.fabricate("clements-4", seed=1)
    box = pc.BlackBoxChip(chip)
    p = np.zeros(chip.n_heaters)
    with pytest.raises(pc.InvalidInputError, match="drives_mw"):
        box.measure(np.zeros(3), np.eye(4))
    with pytest.raises(pc.InvalidInputError, match="drives_mw"):
        box.measure(p - 1.0, np.eye(4))
    with pytest.raises(pc.InvalidInputError, match="inputs"):
        box.measure(p, np.ones((2, 3)))
    with pytest.raises(pc.InvalidInputError, match="inputs"):
        box.measure(p, np.full(4, np.nan))
    with pytest.raises(pc.InvalidInputError, match="shots"):
        box.measure(p, np.eye(4), shots=0)
    with pytest.raises(pc.InvalidInputError, match="shots"):
        pc.BlackBoxChip(chip, shots=0)
    with pytest.raises(pc.InvalidTypeError, match="chip"):
        pc.BlackBoxChip("chip")
