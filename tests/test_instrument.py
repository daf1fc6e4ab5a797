"""The instrument interface (photocomp/hardware/instrument.py): the protocol, the ledger, injected faults."""

import dataclasses

import numpy as np
import pytest

import photocomp as pc
from photocomp.hardware.instrument import (
    BurstDropped,
    DriveRefused,
    FaultyInstrument,
    HeaterCharacterizer,
    Instrument,
    Ledger,
    ReadFailed,
    as_instrument,
    measure,
    read_robust,
)


def _quiet(name="clements-4"):
    return dataclasses.replace(pc.get_target(name), photons_per_shot=1e15, dark_noise=0.0, adc_bits=32)


@pytest.fixture(scope="module")
def chip4():
    return pc.fabricate("clements-4", seed=1, circuit="unitary")


def test_black_box_and_faulty_wrapper_implement_the_protocol(chip4):
    box = pc.BlackBoxChip(chip4, seed=0)
    assert isinstance(box, Instrument) and isinstance(box, HeaterCharacterizer)
    assert isinstance(FaultyInstrument(box), Instrument)
    assert not isinstance(object(), Instrument)
    assert box.drive_limit_mw == pytest.approx(2.5 * 25.0) and box.saturation == np.inf
    assert box.drives_mw is None and box.read_temperatures().shape == (0,)
    with pytest.raises(pc.InvalidTypeError, match="instrument must implement .*Instrument.*got str"):
        as_instrument("chip")


def test_ledger_arithmetic():
    t = pc.get_target("clements-4")  # heater_tau_us 3, clock_ghz 1
    led = Ledger.for_target(t)
    assert led.settle_s == pytest.approx(3e-6) and led.clock_hz == pytest.approx(1e9)
    before = led.snapshot()
    led.add(readings=2000, configurations=5, temperature_reads=3, retries=1)
    led.fault("nan", 2)
    assert led.chip_time_s == pytest.approx(5 * 3e-6 + 2000 / 1e9)
    spent = led.since(before)
    assert spent["readings"] == 2000 and spent["configurations"] == 5 and spent["faults"]["nan"] == 2
    assert spent["chip_time_s"] == pytest.approx(led.chip_time_s)
    assert Ledger.for_target(t, settle_taus=5).settle_s == pytest.approx(15e-6)
    with pytest.raises(pc.InvalidInputError, match=r"readings must be an integer in \[0, inf\]; got -1"):
        led.add(readings=-1)
    with pytest.raises(pc.InvalidInputError, match="kind must be one of .*got 'fire'"):
        led.fault("fire")
    with pytest.raises(pc.InvalidInputError, match="settle_taus must be >= 0.0; got -1.0"):
        Ledger.for_target(t, settle_taus=-1.0)
    with pytest.raises(pc.InvalidTypeError, match="target must be a photocomp.Target; got str"):
        Ledger.for_target("clements-4")


def test_black_box_counts_readings_and_configuration_changes(chip4):
    box = pc.BlackBoxChip(chip4, seed=0)
    p = np.full(box.n_heaters, 10.0)
    box.set_drives(p)
    box.set_drives(p)  # the same setting again: no change
    assert box.ledger.configurations == 1
    np.testing.assert_array_equal(box.drives_mw, p)
    assert box.read(np.eye(4), shots=3).shape == (4, 4)
    assert box.measurements == box.ledger.readings == 12
    box.measure(np.stack([p, p + 1, p + 1]), np.eye(4)[:2])  # two changes: p -> p+1, then p+1 again
    assert box.ledger.configurations == 2 and box.measurements == 12 + 3 * 2
    box.characterize_heaters(points_per_heater=4)
    assert box.ledger.configurations == 2 + 4 * box.n_heaters
    assert box.ledger.chip_time_s == pytest.approx(box.ledger.configurations * 3e-6 + box.measurements * 1e-9)
    np.testing.assert_allclose(measure(box, p, np.eye(4)).shape, (4, 4))


def test_black_box_rejects_bad_drives_and_reads_before_drives(chip4):
    box = pc.BlackBoxChip(chip4, seed=0)
    with pytest.raises(pc.InvalidInputError, match="drives_mw must be set .*before read"):
        box.read(np.eye(4))
    with pytest.raises(pc.InvalidInputError, match=r"drives_mw must have shape \(16,\) \(one setting\)"):
        box.set_drives(np.zeros((2, box.n_heaters)))
    with pytest.raises(pc.InvalidTypeError, match="drives_mw must be a real array"):
        box.set_drives("hot")
    box.set_drives(np.zeros(box.n_heaters))
    too_hot = np.zeros(box.n_heaters)
    too_hot[[3, 7]] = 1e3
    with pytest.raises(DriveRefused, match=r"drives_mw must be finite and within \[0, 62.5\] mW") as info:
        box.set_drives(too_hot)
    assert isinstance(info.value, pc.InvalidInputError)
    assert info.value.heaters.tolist() == [3, 7] and info.value.limit_mw == pytest.approx(62.5)
    np.testing.assert_array_equal(box.drives_mw, np.zeros(box.n_heaters))  # nothing applied
    assert box.ledger.configurations == 1 and box.measurements == 0


def test_faults_are_injected_counted_and_reproducible(chip4):
    def run(seed):
        box = pc.BlackBoxChip(chip4, seed=0, noise=False)
        f = FaultyInstrument(box, nan_rate=0.3, burst_drop_rate=0.3, saturate_at=0.5, seed=seed)
        f.set_drives(np.full(box.n_heaters, 20.0))
        out = []
        for _ in range(20):
            try:
                out.append(f.read(np.eye(4)))
            except BurstDropped:
                out.append(None)
        return out, box.ledger

    a, led = run(5)
    b, _ = run(5)
    assert [x is None for x in a] == [x is None for x in b]
    for x, y in zip(a, b):
        if x is not None:
            np.testing.assert_array_equal(x, y)
    drops = sum(x is None for x in a)
    nan_rows = sum(int(np.isnan(x).any(axis=1).sum()) for x in a if x is not None)
    clipped = sum(int((x == 0.5).sum()) for x in a if x is not None)
    assert led.faults["dropped"] == drops > 0
    assert led.faults["nan"] >= nan_rows > 0  # rows of dropped bursts were drawn too
    assert led.faults["saturated"] >= clipped > 0
    assert led.readings == 20 * 4  # dropped bursts still cost their readings
    assert all(np.nanmax(x) <= 0.5 for x in a if x is not None)


def test_read_robust_survives_faults_and_returns_the_clean_readings(chip4):
    clean = pc.BlackBoxChip(chip4, seed=0, noise=False)
    p = np.full(clean.n_heaters, 20.0)
    want = measure(clean, p, np.eye(4), reference=0.3)
    box = pc.BlackBoxChip(chip4, seed=0, noise=False)
    f = FaultyInstrument(box, nan_rate=0.2, burst_drop_rate=0.2, saturate_at=0.4, seed=2)
    f.set_drives(p)
    for _ in range(5):
        got = read_robust(f, np.eye(4), reference=0.3, retries=6)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)  # attenuation scales exactly
    assert box.ledger.retries > 0 and sum(box.ledger.faults.values()) > 0
    hopeless = FaultyInstrument(pc.BlackBoxChip(chip4, seed=0), nan_rate=1.0, seed=0)
    hopeless.set_drives(p)
    with pytest.raises(ReadFailed, match="NaN"):
        read_robust(hopeless, np.eye(4), retries=2)
    with pytest.raises(pc.InvalidInputError, match=r"retries must be an integer in \[0, inf\]; got -1"):
        read_robust(hopeless, np.eye(4), retries=-1)


def test_heaters_past_a_lower_limit_refuse_or_clip(chip4):
    box = pc.BlackBoxChip(chip4, seed=0)
    f = FaultyInstrument(box, heater_limit_mw=30.0)
    assert f.drive_limit_mw == 30.0
    p = np.full(box.n_heaters, 10.0)
    p[2] = 40.0
    with pytest.raises(DriveRefused, match=r"drives_mw must be within \[0, 30\] mW for heaters \[2\]") as info:
        f.set_drives(p)
    assert info.value.heaters.tolist() == [2] and info.value.limit_mw == 30.0
    assert box.drives_mw is None and box.ledger.faults["refused"] == 1
    c = FaultyInstrument(box, heater_limit_mw=30.0, on_limit="clip")
    c.set_drives(p)
    assert box.drives_mw[2] == 30.0 and box.ledger.faults["clipped"] == 1
    weak = FaultyInstrument(box, heater_limit_mw=30.0, weak_heaters=np.array([5]))
    assert weak.drive_limit_mw == pytest.approx(62.5)  # not advertised
    weak.set_drives(p)  # heater 2 at 40 mW is not weak
    p[5] = 31.0
    with pytest.raises(DriveRefused, match=r"heaters \[5\]"):
        weak.set_drives(p)
    with pytest.raises(pc.InvalidInputError, match="weak_heaters must be a 1-d array of heater indices in \\[0, 16\\)"):
        FaultyInstrument(box, heater_limit_mw=30.0, weak_heaters=np.array([99]))


@pytest.mark.parametrize("kwargs, err, match", [
    ({"saturate_at": 0.0}, pc.InvalidInputError, "saturate_at must be > 0.0"),
    ({"nan_rate": 1.5}, pc.InvalidInputError, "nan_rate must be <= 1.0"),
    ({"burst_drop_rate": "x"}, pc.InvalidTypeError, "burst_drop_rate must be a real number; got str"),
    ({"heater_limit_mw": 1e6}, pc.InvalidInputError, "heater_limit_mw must be <= 62.5"),
    ({"on_limit": "melt"}, pc.InvalidInputError, "on_limit must be 'raise' or 'clip'; got 'melt'"),
    ({"seed": -1}, pc.InvalidInputError, r"seed must be an integer in \[0, inf\]"),
])
def test_faulty_instrument_names_bad_arguments(chip4, kwargs, err, match):
    with pytest.raises(err, match=match):
        FaultyInstrument(pc.BlackBoxChip(chip4), **kwargs)


def test_faulty_instrument_needs_an_instrument():
    with pytest.raises(pc.InvalidTypeError, match="inner must implement .*Instrument.*got int"):
        FaultyInstrument(3)
