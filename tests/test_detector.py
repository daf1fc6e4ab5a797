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


# ---- one drive convention: Program.drives() shape ------------------------------------------------


@pytest.fixture(scope="module")
def calibrated():
    """A clements-4 chip and a local calibration of a 6x5 matrix (four tiles) and of a 4x4 one (one tile)."""
    chip = pc.fabricate("clements-4", seed=3)
    rng = np.random.default_rng(9)
    four = pc.calibrate(pc.compile(rng.normal(size=(6, 5)), target="clements-4", progress=False), chip,
                        method="local", progress=False)
    one = pc.calibrate(pc.compile(rng.normal(size=(4, 4)), target="clements-4", progress=False), chip,
                       method="local", progress=False)
    return chip, four, one


def test_measure_takes_the_drives_of_a_calibrated_program(calibrated):
    """cal.drives() is (n_tiles, n_heaters); measure used to accept only (n_heaters,)."""
    chip, four, one = calibrated
    x = np.random.default_rng(2).normal(size=(3, 4))
    for cal in (one, four):
        drives = cal.drives()
        t = drives.shape[0]
        box = pc.BlackBoxChip(chip, noise=False)
        got = box.measure(drives, x)
        assert got.shape == (t, 3, 4) and box.measurements == t * 3
        for k in range(t):
            np.testing.assert_array_equal(got[k], pc.BlackBoxChip(chip, noise=False).measure(drives[k], x))
        assert box.measure(drives, x[0]).shape == (t, 4)  # one input vector per tile setting
        noisy = pc.BlackBoxChip(chip, seed=1, shots=2)
        assert noisy.measure(drives, x).shape == (t, 3, 4) and noisy.measurements == t * 3 * 2
    # the same seed and calls give the same noisy readings; tiles get independent noise
    a = pc.BlackBoxChip(chip, seed=5).measure(four.drives(), x)
    b = pc.BlackBoxChip(chip, seed=5).measure(four.drives(), x)
    np.testing.assert_array_equal(a, b)


def test_measure_matrix_takes_the_drives_of_a_calibrated_program(calibrated):
    chip, four, _ = calibrated
    drives = four.drives()
    box = pc.BlackBoxChip(chip, noise=False)
    m = pc.measure_matrix(box, drives)
    assert m.shape == (drives.shape[0], 4, 4) and box.measurements == 4 * drives.shape[0] * 4
    for k in range(drives.shape[0]):
        np.testing.assert_allclose(m[k], pc.measure_matrix(pc.BlackBoxChip(chip, noise=False), drives[k]),
                                   rtol=0, atol=1e-12)
    fields = pc.measure_matrix(box, drives, inputs=np.eye(4)[:2])
    assert fields.shape == (drives.shape[0], 2, 4)


@pytest.mark.parametrize("drives, err, match", [
    (np.zeros(3), pc.InvalidInputError, r"drives_mw must have shape \(n_tiles, 36\) as Program.drives\(\) returns, "
                                         r"or \(36,\); got shape \(3,\)"),
    (np.zeros((2, 35)), pc.InvalidInputError, r"drives_mw must have shape \(n_tiles, 36\).*got shape \(2, 35\)"),
    (np.zeros((1, 1, 36)), pc.InvalidInputError, r"drives_mw must have shape .*got shape \(1, 1, 36\)"),
    (np.zeros((0, 36)), pc.InvalidInputError, r"drives_mw must have shape .*got shape \(0, 36\)"),
    (np.full((2, 36), np.nan), pc.InvalidInputError, r"drives_mw must be finite and within \[0, "),
    (np.full((2, 36), 1e9), pc.InvalidInputError, r"drives_mw must be finite and within"),
    ("10", pc.InvalidTypeError, r"drives_mw must be a real array of heater powers \(mW\).*got str"),
    (None, pc.InvalidTypeError, r"drives_mw must be a real array .*got NoneType"),
    (np.zeros(36, complex), pc.InvalidTypeError, r"drives_mw must be a real array .*got dtype complex128"),
    ([[1.0] * 36, [1.0] * 3], pc.InvalidTypeError, r"drives_mw must be a real array .*not an array"),
])
def test_measure_names_drives_mw_and_the_expected_shape(drives, err, match):
    box = pc.BlackBoxChip(pc.fabricate("clements-4", seed=1))
    with pytest.raises(err, match=match):
        box.measure(drives, np.eye(4))
    with pytest.raises(err, match=match):
        pc.measure_matrix(box, drives)
    assert box.measurements == 0


def test_measure_checks_its_other_arguments():
    chip = pc.fabricate("clements-4", seed=1)
    box = pc.BlackBoxChip(chip)
    p = np.zeros(chip.n_heaters)
    with pytest.raises(pc.InvalidInputError, match="full_scale must be 'input' or 'auto'; got array"):
        box.measure(p, np.eye(4), full_scale=np.array([1.0, 2.0]))
    with pytest.raises(pc.InvalidInputError, match="full_scale must be 'input' or 'auto'; got 'xxxx"):
        box.measure(p, np.eye(4), full_scale="x" * 500)
    with pytest.raises(pc.InvalidTypeError, match="inputs must be a numeric array .*dtype object"):
        box.measure(p, np.array([object()] * 4))
    with pytest.raises(pc.InvalidTypeError, match="inputs must be a numeric array .*got NoneType"):
        box.measure(p, None)
    with pytest.raises(pc.InvalidInputError, match=r"inputs must be finite with shape \(4,\) or \(B, 4\)"):
        box.measure(p, np.zeros((0, 4)))
    with pytest.raises(pc.InvalidInputError, match=r"inputs must be finite with shape .*got shape \(2, 2, 4\)"):
        pc.measure_matrix(box, p, inputs=np.zeros((2, 2, 4)))
    with pytest.raises(pc.InvalidInputError, match=r"seed must be an integer in \[0, 9223372036854775807\]"):
        pc.BlackBoxChip(chip, seed=2**63)
    assert box.measurements == 0


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 40), min_size=0, max_size=3), fill=st.sampled_from([0.0, 1.0, -1.0, np.nan, 1e9]),
       dtype=st.sampled_from([np.float64, np.int32, np.complex128, np.bool_]))
def test_measure_drives_property(shape, fill, dtype):
    """Any array as drives_mw: a typed error naming drives_mw, or readings with the documented shape."""
    box = pc.BlackBoxChip(pc.fabricate("clements-4", seed=1), noise=False)
    if np.dtype(dtype).kind in "fc":
        drives = np.full(shape, fill, dtype)
    else:  # no NaN in an integer or bool array
        drives = np.full(shape, fill if np.isfinite(fill) else 0.0).astype(dtype)
    try:
        out = box.measure(drives, np.eye(4)[:2])
    except pc.PhotocompError as exc:
        assert "drives_mw" in str(exc)
        assert box.measurements == 0
        return
    assert out.shape == tuple(shape[:-1]) + (2, 4)
    assert box.measurements == 2 * (shape[0] if len(shape) == 2 else 1)
    assert np.all(np.isfinite(out))
