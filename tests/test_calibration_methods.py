"""Calibration methods as objects (pc.Local, pc.Model, pc.Twin) and as names: one behaviour, checked arguments."""

from __future__ import annotations

import dataclasses

import numpy as np
import optax
import pytest

import photocomp as pc


@pytest.fixture(scope="module")
def small():
    prog = pc.compile(np.random.default_rng(11).normal(size=(4, 4)), target="clements-4")
    return prog, pc.fabricate("clements-4", seed=5)


def _same_settings(a, b):
    for x, y in zip(dataclasses.astuple(a.settings)[2:], dataclasses.astuple(b.settings)[2:]):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_local_object_equals_the_name(small):
    prog, chip = small
    a, b = pc.calibrate(prog, chip, "local"), pc.calibrate(prog, chip, pc.Local())
    assert a.report.summary["method"] == b.report.summary["method"] == "local"
    assert a.report.summary["error_after"] == b.report.summary["error_after"]
    _same_settings(a, b)


def test_model_object_equals_the_name_with_the_same_settings(small):
    prog, chip = small
    opt = optax.adam(1e-2)
    a = pc.calibrate(prog, chip, "model", optimizer=opt, steps=15, tol=0.0, patience=5, progress=False)
    b = pc.calibrate(prog, chip, pc.Model(optimizer=opt, steps=15, tol=0.0, patience=5), progress=False)
    assert a.report.summary["error_after"] == b.report.summary["error_after"]
    assert a.report.summary["error_after"] <= a.report.summary["error_start"]
    _same_settings(a, b)


@pytest.mark.slow  # run by .ci/run after the fast suite
def test_twin_object_equals_the_name_with_the_same_settings(small):
    prog, chip = small
    kw = {"twin_configs": 2, "twin_steps": 10, "twin_rounds": 1, "steps": 5, "shots": 50, "seed": 3}
    a = pc.calibrate(prog, chip, "twin", progress=False, **kw)
    b = pc.calibrate(prog, chip, pc.Twin(configs=2, fit_steps=10, rounds=1, steps=5, shots=50, seed=3), progress=False)
    assert a.report.summary["measurements"] == b.report.summary["measurements"] > 0
    assert a.report.summary["error_after"] == b.report.summary["error_after"]


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "twin", "twin_configs": 0}, r"^twin_configs must be an integer in \[1, inf\]; got 0"),
    ({"method": "twin", "twin_steps": -1}, r"^twin_steps must be"),
    ({"method": "twin", "twin_rounds": 0}, r"^twin_rounds must be"),
    ({"method": "model", "steps": -1}, r"^steps must be"),
    ({"method": "model", "tol": 2.0}, r"^tol must be"),
    ({"method": "model", "patience": 0}, r"^patience must be"),
    ({"method": "model", "warm_start": "cold"}, r"^warm_start must be one of \('local', 'ideal'\); got 'cold'"),
    ({"method": "model", "optimizer": "adam"}, r"^optimizer must be an optax.GradientTransformation"),
    ({"method": "annealing"}, r"^method must be one of \('model', 'local', 'twin', 'selfconfig', 'nullify', 'diagonalize', 'cells', 'insitu', 'backprop'\) or a method object"),
    ({"method": "x" * 10_000}, r"^method must be one of"),
    ({"method": 3}, r"^method must be 'local', 'model', 'twin', 'selfconfig', 'nullify', 'diagonalize', 'cells', 'insitu', 'backprop' or a method object"),
    ({"method": "diagonalize", "steps": 5}, r"^steps apply to the optimising methods \('model', 'twin', 'insitu', 'backprop'\); "
                                            r"method='diagonalize' takes none of them"),
    ({"method": "local", "tol": 0.1, "patience": 3}, r"^tol, patience apply to the optimising methods"),
    ({"method": pc.Model(), "steps": 3}, r"calibrate got method=Model\(\.\.\.\) and also steps: give these settings "
                                         r"to the method object"),
    ({"method": pc.Local(), "twin_configs": 3, "seed": 1}, r"and also seed, twin_configs"),
])
def test_bad_arguments_are_named_as_written(small, kwargs, match):
    prog, chip = small
    with pytest.raises(pc.PhotocompError, match=match) as info:
        pc.calibrate(prog, chip, progress=False, **kwargs)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("build, match", [
    (lambda: pc.Twin(configs=0), r"^Twin.configs must be"),
    (lambda: pc.Twin(fit_steps=1.5), r"^Twin.fit_steps must be"),
    (lambda: pc.Twin(shots=0), r"^Twin.shots must be"),
    (lambda: pc.Twin(seed=-1), r"^Twin.seed must be"),
    (lambda: pc.Twin(optimizer=object()), r"^Twin.optimizer must be an optax.GradientTransformation"),
    (lambda: pc.Model(steps=True), r"^Model.steps must be"),
    (lambda: pc.Model(warm_start="local\n"), r"^Model.warm_start must be one of"),
])
def test_method_objects_check_their_fields_when_built(build, match):
    with pytest.raises(pc.PhotocompError, match=match):
        build()


def test_method_objects_are_frozen_values():
    assert pc.Model(steps=10) == pc.Model(steps=10) and pc.Model(steps=10) != pc.Model(steps=11)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pc.Twin().configs = 3
    assert hash(pc.Local()) == hash(pc.Local())
    assert (pc.Local().name, pc.Model().name, pc.Twin().name) == ("local", "model", "twin")


def test_a_black_box_needs_the_twin(small):
    prog, chip = small
    box = pc.BlackBoxChip(chip, seed=0)
    with pytest.raises(pc.InvalidInputError, match=r"a BlackBoxChip can only be calibrated with method='twin'"):
        pc.calibrate(prog, box, pc.Model(steps=1), progress=False)
