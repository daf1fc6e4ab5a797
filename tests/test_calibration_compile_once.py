"""Calibration compiles once per (target, tile count, circuit): chips and programs are jit arguments, not constants.

No timing here: compilations are counted with ``jax.log_compiles`` (every XLA
compilation, eager operations included, logs one "Compiling ..." line) and
with the jitted step's cache size. The compile-once step is held to the
closure form (the chip and the target tiles baked into the step as
constants), which is what calibration compiled before.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compilations

import photocomp as pc
from photocomp.calibration import engine, twin
from photocomp.hardware.chipsim import chip_tile_matrices, flatten_heaters, unflatten_heaters

TARGET = "clements-4"


def _program(seed: int, circuit: str = "svd"):
    rng = np.random.default_rng(seed)
    if circuit == "unitary":
        w = np.vstack([pc.haar_unitary(4, rng), pc.haar_unitary(4, rng)])
        return pc.compile(w, TARGET, pipeline="validate | tile | unitary | clements | lower")
    return pc.compile(rng.normal(size=(8, 4)), TARGET)


# the svd case (about 20 s) runs with the slow tests; the unitary case checks the same compile-once path fast
@pytest.mark.parametrize("circuit", [pytest.param("svd", marks=pytest.mark.slow), "unitary"])
def test_second_chip_and_second_program_compile_nothing(circuit):
    """After one model calibration, another chip (another seed) and another program of the same shape reuse
    every compiled program: no tracing, no XLA compilation, the same cached step."""
    first, second = _program(0, circuit), _program(1, circuit)
    assert first.n_tiles == second.n_tiles == 2
    method = pc.Model(steps=4)
    pc.calibrate(first, pc.fabricate(TARGET, 0, circuit=circuit), method, progress=False)  # compiles
    steps_compiled = engine._jit_step._cache_size()
    with compilations() as compiled:
        a = pc.calibrate(first, pc.fabricate(TARGET, 1, circuit=circuit), method, progress=False)
        b = pc.calibrate(second, pc.fabricate(TARGET, 2, circuit=circuit), pc.Model(steps=6), progress=False)
        c = pc.calibrate(second, pc.fabricate(TARGET, 3, circuit=circuit), "model", steps=3, progress=False)
        d = pc.calibrate(first, pc.fabricate(TARGET, 4, circuit=circuit), "local", progress=False)
    assert compiled == []
    assert engine._jit_step._cache_size() == steps_compiled
    for cal, seed in ((a, 1), (b, 2), (c, 3), (d, 4)):
        assert cal.calibrated and cal.chip.seed == seed  # the chip keeps its seed; only the jit argument drops it
        assert cal.report.summary["error_after"] <= cal.report.summary["error_before"]


@pytest.mark.slow  # the twin's fit (tens of seconds); run by .ci/run with the slow tests
def test_twin_second_chip_compiles_nothing():
    """The twin method: fitting, calibrating on the twin and measuring the black box reuse their programs too."""
    prog = _program(0)
    method = pc.Twin(configs=2, fit_steps=3, rounds=2, steps=3)
    pc.calibrate(prog, pc.fabricate(TARGET, 0), method, progress=False)
    with compilations() as compiled:
        cal = pc.calibrate(prog, pc.fabricate(TARGET, 1), method, progress=False)
    assert compiled == []
    assert cal.chip.seed == 1 and cal.report.summary["measurements"] > 0


def test_chip_unseeded_keeps_the_arrays():
    chip = pc.fabricate(TARGET, 5)
    bare = chip.unseeded()
    assert bare.seed == -1 and chip.seed == 5 and bare.unseeded() is bare
    assert jax.tree_util.tree_structure(bare) == jax.tree_util.tree_structure(pc.fabricate(TARGET, 6).unseeded())
    for x, y in zip(jax.tree_util.tree_leaves(chip), jax.tree_util.tree_leaves(bare)):
        assert x is y


def _closure_optimize(chip, start, target_tiles, optimizer, steps):
    """The calibration step as it was compiled before: chip and target tiles closed over (constants)."""
    with jax.enable_x64(True):
        tiles = jnp.asarray(target_tiles)

        def loss_fn(flat):
            s = unflatten_heaters(start, flat, chip.target)
            b = chip_tile_matrices(chip, s, with_gain=False, reverse_only=True)
            return engine.relative_error(tiles, b)[0] ** 2

        flat0 = jnp.asarray(np.asarray(flatten_heaters(start), dtype=np.float64))
        best, history, info = engine.minimize(loss_fn, flat0, engine.extra_args_optimizer(optimizer), steps, 0.0,
                                              steps + 1, False, "")
        return np.asarray(best), history, info


# the svd case (two meshes and attenuators, about 20 s of tracing both ways) runs with the slow tests; the
# unitary case checks the same step fast
@pytest.mark.parametrize("circuit", [pytest.param("svd", marks=pytest.mark.slow), "unitary"])
def test_compile_once_step_equals_the_closure_step(circuit):
    """Same iterates, within float64 rounding, as the step with the chip baked in as constants (evaluated
    there with numpy: sin, cos and 10^x; here traced), over 12 L-BFGS steps."""
    prog = _program(3, circuit)
    chip = pc.fabricate(TARGET, 7, circuit=circuit)
    tiles = engine.ideal_tiles(prog)
    start, _ = engine.local_settings(prog, chip, tiles)
    opt = engine.check_optimizer(None)
    steps = 12
    best, history, info = engine.optimize(chip, start, tiles, opt, steps, 0.0, steps + 1, False, "")
    ref_flat, ref_history, ref_info = _closure_optimize(chip, start, tiles, opt, steps)
    assert info == ref_info and info["steps_run"] == steps
    np.testing.assert_allclose(history, ref_history, rtol=1e-9, atol=0)
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(flatten_heaters(best)), ref_flat, rtol=0, atol=1e-9)


@pytest.mark.slow  # the twin's fit (tens of seconds); run by .ci/run with the slow tests
def test_twin_fit_equals_the_closure_fit(monkeypatch):
    """The twin fit's module-level loss (prior chip and data as arguments) gives the closure's fit."""
    prog = _program(0)
    box = pc.BlackBoxChip(pc.fabricate(TARGET, 2), seed=1)
    operating = np.asarray(flatten_heaters(engine.ideal_settings(prog)))[0]
    fit = twin.fit_twin(box, operating_phases=operating, configs=2, steps=10, seed=0)

    minimize = engine.minimize

    def closure_minimize(loss_fn, params0, opt, *rest, args=(), **kwargs):
        return minimize(lambda z: loss_fn(z, *args), params0, opt, *rest, **kwargs)

    monkeypatch.setattr(twin, "minimize", closure_minimize)
    box = pc.BlackBoxChip(pc.fabricate(TARGET, 2), seed=1)
    ref = twin.fit_twin(box, operating_phases=operating, configs=2, steps=10, seed=0)
    assert fit.steps_run == ref.steps_run
    np.testing.assert_allclose(fit.history, ref.history, rtol=1e-9, atol=0)
    for x, y in zip(jax.tree_util.tree_leaves(fit.chip), jax.tree_util.tree_leaves(ref.chip)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-9)


@pytest.mark.slow  # the twin's fit (tens of seconds); run by .ci/run with the slow tests
def test_twin_rounds_reuse_the_fitting_step():
    """Each round after the first probes the chip where calibration took it (one configuration per tile, two
    here); the configurations are padded to a few batch sizes, so rounds whose counts share one (5 and 7
    here) reuse the compiled fit, where each round used to compile its own."""
    prog = _program(0)
    assert prog.n_tiles == 2
    pc.calibrate(prog, pc.fabricate(TARGET, 0), pc.Twin(configs=3, fit_steps=3, rounds=2, steps=3), progress=False)
    with compilations() as compiled:
        cal = pc.calibrate(prog, pc.fabricate(TARGET, 1), pc.Twin(configs=3, fit_steps=3, rounds=3, steps=3),
                           progress=False)
    assert compiled == []
    assert cal.report.summary["twin_configs"] == 7


def test_twin_loss_ignores_the_padding():
    """The fit's loss over configurations padded to a batch size (weight 0) is the mean over the real ones."""
    prog = _program(0)
    box = pc.BlackBoxChip(pc.fabricate(TARGET, 2), seed=1)
    operating = np.asarray(flatten_heaters(engine.ideal_settings(prog)))[0]
    fit = twin.fit_twin(box, operating_phases=operating, configs=3, steps=1, seed=0)
    drives, refs, readings = fit.data
    assert len(drives) == 3

    def loss(size):
        with jax.enable_x64(True):
            args = twin._fit_args(fit.chip, drives, refs, readings, size)
            z = jax.tree_util.tree_map(lambda a: jnp.full_like(a, 0.1), args[-2])
            return float(jax.jit(twin._fit_loss)(z, *args))  # compiled, as the fit runs it (op by op: 3x longer)

    whole = loss(3)
    assert whole > 0
    np.testing.assert_allclose([loss(4), loss(8)], whole, rtol=1e-12, atol=0)
