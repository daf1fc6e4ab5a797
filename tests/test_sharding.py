"""Tiles across devices and strips: a compile sharded over several JAX devices, or run in strips of
block rows, gives the phase map of a one-device, one-piece compile."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import haar_unitary, random_matrix

import photocomp as pc
import photocomp.compiler.driver as compiler
from photocomp.core.errors import InvalidInputError

# Runs in a fresh process, where XLA_FLAGS can still set the number of host devices.
SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    import jax.numpy as jnp
    import numpy as np
    import photocomp as pc
    from photocomp.sim.devices import run_tiles

    def device_of_tile(x):
        return (jnp.full(x.shape[:1], jax.lax.axis_index("tiles")),)

    w = np.random.default_rng(40).standard_normal((100, 70)) + 1j * np.random.default_rng(41).standard_normal((100, 70))
    pm = pc.compile(w, "clements-8").phase_map
    us = np.load(sys.argv[2])
    ph = pc.decompose(us, "reck")
    where = run_tiles(device_of_tile, [np.zeros(64)], chunk=2)[0] if jax.device_count() > 1 else np.zeros(64)
    np.savez(sys.argv[1], devices=jax.device_count(), where=where,
             v_theta=pm.v.theta, v_phi=pm.v.phi, v_out=pm.v.out_phase, sigma=pm.sigma,
             u_theta=pm.u.theta, u_phi=pm.u.phi, u_out=pm.u.out_phase, gain=pm.gain,
             r_theta=ph.theta, r_phi=ph.phi, r_out=ph.out_phase)
    """
)
KEYS = ("v_theta", "v_phi", "v_out", "sigma", "u_theta", "u_phi", "u_out", "gain", "r_theta", "r_phi", "r_out")


def _python(script: str, *args, devices: int | None = None, timeout: float) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh Python process from the repository root (with ``devices`` JAX host
    devices when given: XLA_FLAGS must be set before jax is imported). Its stdout is returned; its stderr
    goes to pytest's capture, so a failing child's traceback shows in the report."""
    env = dict(os.environ)
    if devices is not None:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
        env["JAX_PLATFORMS"] = "cpu"  # host devices are the ones the flag multiplies
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, check=True, timeout=timeout,
                          stdout=subprocess.PIPE, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(tmp_path, devices: int) -> dict:
    us = tmp_path / "us.npy"
    if not us.exists():
        np.save(us, haar_unitary(6, np.random.default_rng(42), size=301))  # three groups on 4 devices
    out = tmp_path / f"run{devices}.npz"
    _python(SCRIPT, out, us, devices=devices, timeout=600)
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.slow  # run by .ci/run after the fast suite
def test_compile_sharded_over_four_devices_equals_one_device(tmp_path):
    one = _run(tmp_path, 1)
    four = _run(tmp_path, 4)
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4
    # the tiles really were spread over the four devices, evenly
    np.testing.assert_array_equal(np.bincount(four["where"].astype(int), minlength=4), [16, 16, 16, 16])
    for key in KEYS:
        assert one[key].shape == four[key].shape, key
        np.testing.assert_allclose(four[key], one[key], rtol=0, atol=1e-12, err_msg=key)


def test_group_padding_keeps_full_groups_and_fits_the_devices():
    """A full group of a batch is decomposed as it is; a ragged last one is padded to a multiple of the devices."""
    from photocomp.compiler.decompose import _group_padding

    for nd in (1, 2, 3, 4, 6):
        group = 32 * nd
        assert _group_padding(group, group, nd) == group  # e.g. 96 on 3 devices, not 129
        for count in range(1, group):
            size = _group_padding(count, group, nd)
            assert size >= count and size % nd == 0, (nd, count, size)


BIG = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    import photocomp as pc

    w = np.random.default_rng(45).standard_normal((512, 1024))
    pm = pc.compile(w, "pace-64").phase_map
    np.savez(sys.argv[1], devices=jax.device_count(), v_theta=pm.v.theta, u_theta=pm.u.theta, sigma=pm.sigma,
             gain=pm.gain)
    """
)


@pytest.mark.slow  # run by .ci/run after the fast suite
def test_sharded_compile_of_many_full_size_tiles(tmp_path):
    """128 tiles of 64 x 64 on 2 devices: 64 per device in several chunks (batched LAPACK calls once
    deadlocked here); the phase map equals this process's one-device compile."""
    out = tmp_path / "big.npz"
    _python(BIG, out, devices=2, timeout=300)
    pm = pc.compile(np.random.default_rng(45).standard_normal((512, 1024)), "pace-64").phase_map
    with np.load(out) as two:
        assert int(two["devices"]) == 2
        for key, mine in (("v_theta", pm.v.theta), ("u_theta", pm.u.theta), ("sigma", pm.sigma), ("gain", pm.gain)):
            np.testing.assert_allclose(two[key], mine, rtol=0, atol=1e-12, err_msg=key)


CALIBRATE = textwrap.dedent(
    """
    import importlib
    import sys
    import jax
    import numpy as np
    import photocomp as pc

    engine = importlib.import_module("photocomp.calibration.engine")  # where optimize looks up minimize
    spread = []  # devices holding the heater phases the optimizer starts from
    minimize = engine.minimize

    def spy(loss_fn, params0, *args, **kwargs):
        spread.append(len(params0.sharding.device_set))
        return minimize(loss_fn, params0, *args, **kwargs)

    engine.minimize = spy
    prog = pc.compile(np.random.default_rng(46).standard_normal((24, 20)), "clements-8")
    cal = pc.calibrate(prog, pc.fabricate("clements-8", seed=2), method="model", steps=25, progress=False)
    s = cal.settings
    np.savez(sys.argv[1], devices=jax.device_count(), spread=spread[0], error=cal.report.summary["error_after"],
             v_int=s.v_int, v_ext=s.v_ext, att=s.att, u_int=s.u_int, u_out=s.u_out, gain=s.gain)
    """
)


@pytest.mark.slow  # run by .ci/run after the fast suite
def test_calibration_sharded_over_four_devices_equals_one_device(tmp_path):
    """9 tiles (padded to 12) over 4 devices: the same calibrated settings as on one device."""
    runs = {}
    for devices in (1, 4):
        out = tmp_path / f"cal{devices}.npz"
        _python(CALIBRATE, out, devices=devices, timeout=600)
        with np.load(out) as data:
            runs[devices] = {k: data[k] for k in data.files}
    one, four = runs[1], runs[4]
    assert int(four["devices"]) == 4 and int(four["spread"]) == 4 and int(one["spread"]) == 1
    assert float(four["error"]) == pytest.approx(float(one["error"]), rel=1e-9)
    for key in ("v_int", "v_ext", "att", "u_int", "u_out", "gain"):
        assert four[key].shape == one[key].shape and one[key].shape[0] == 9, key
        np.testing.assert_allclose(four[key], one[key], rtol=0, atol=1e-8, err_msg=key)


# ---- strips --------------------------------------------------------------------------------------

PIPE = "validate | tile | svd | clements | canonicalize | quantize(bits=10) | lower"


def _assert_same_program(a, b):
    for name in ("v", "u"):
        for field in ("theta", "phi", "out_phase"):
            np.testing.assert_allclose(getattr(getattr(a.phase_map, name), field),
                                       getattr(getattr(b.phase_map, name), field), rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.phase_map.sigma, b.phase_map.sigma, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.phase_map.gain, b.phase_map.gain, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.dense, b.dense, rtol=0, atol=1e-12)


@pytest.mark.slow  # tests/test_hardening_weights.py compiles in strips in the default suite
def test_compile_in_strips_equals_one_piece(monkeypatch):
    w = random_matrix(np.random.default_rng(43), (61, 30), "complex")  # 8 x 4 tiles of 8, last row partial
    whole = pc.compile(w, "clements-8", PIPE)
    # 3 block rows per strip in flight: 3 strips, rounded up to 4 (whole rounds of two), of 2 block rows
    monkeypatch.setattr(compiler, "STRIPS_IN_FLIGHT", 2)
    monkeypatch.setattr(compiler, "STRIP_BUDGET", 2 * 3 * 4 * compiler.TILE_COPIES * 16 * 8 * 8)
    plan = compiler.memory_plan(w.shape, 8)
    assert plan.strips == [(0, 16), (16, 32), (32, 48), (48, 61)] and plan.in_flight == 2
    parts = pc.compile(w, "clements-8", PIPE)
    _assert_same_program(parts, whole)
    assert [r.name for r in parts.report.records] == [r.name for r in whole.report.records]
    for key, value in whole.report["tile"].metrics.items():
        assert parts.report["tile"].metrics[key] == value, key  # counts add up, the grid is the whole grid
    assert parts.report["svd"].metrics["zero_tiles"] == whole.report["svd"].metrics["zero_tiles"]
    for name in ("clements", "quantize", "lower"):  # relative errors recombined from the strips' norms
        assert parts.report[name].metrics["matrix_error"] == pytest.approx(
            whole.report[name].metrics["matrix_error"], rel=1e-9)
    for key in ("matrix_error", "max_abs_error", "min_mesh_fidelity"):
        assert parts.report.summary[key] == pytest.approx(whole.report.summary[key], rel=1e-9)


def test_equal_strips_add_up_their_counts(monkeypatch):
    """Strips of equal size report the same counts per strip: the whole compile's counts are their sums."""
    w = np.random.default_rng(44).standard_normal((64, 16))  # 8 x 2 tiles of 8
    whole = pc.compile(w, "clements-8", PIPE)
    monkeypatch.setattr(compiler, "STRIPS_IN_FLIGHT", 2)
    monkeypatch.setattr(compiler, "STRIP_BUDGET", 2 * 2 * 2 * compiler.TILE_COPIES * 16 * 8 * 8)  # 2 block rows each
    assert len(compiler.memory_plan(w.shape, 8).strips) == 4
    parts = pc.compile(w, "clements-8", PIPE)
    for name in ("tile", "svd", "clements", "canonicalize", "quantize"):
        for key, value in whole.report[name].metrics.items():
            if isinstance(value, float):
                assert parts.report[name].metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-15), (name, key)
            else:
                assert parts.report[name].metrics[key] == value, (name, key)
    assert parts.report["tile"].metrics["tiles"] == 16 and parts.report["clements"].metrics["mzis"] == 16 * (2 * 28 + 8)


def test_strips_progress_and_callback(monkeypatch):
    monkeypatch.setattr(compiler, "STRIPS_IN_FLIGHT", 2)
    monkeypatch.setattr(compiler, "STRIP_BUDGET", 2 * 2 * 2 * compiler.TILE_COPIES * 16 * 8 * 8)  # 2 block rows each
    seen = []
    prog = pc.compile(np.ones((32, 16)), "clements-8", PIPE, callback=lambda p, rec, st: seen.append(p.name))
    assert seen.count("validate") == 1 and seen.count("svd") == 2  # validate once, the rest per strip
    assert prog.shape == (32, 16) and prog.n_tiles == 8
    np.testing.assert_allclose(prog.matrix(), prog.dense, rtol=0, atol=1e-12)  # the joined map runs as one


def test_strips_in_flight_compile_the_same_program(monkeypatch):
    """Strips run two at a time or one after the other give the same program bit for bit, and the
    same report; the callback sees every strip's passes, one call at a time."""
    w = np.random.default_rng(45).standard_normal((48, 20))  # 6 x 3 tiles of 8, last column partial
    programs, calls = [], []
    for flight in (1, 2):  # one block row per strip either way: the same strips, run differently
        monkeypatch.setattr(compiler, "STRIPS_IN_FLIGHT", flight)
        monkeypatch.setattr(compiler, "STRIP_BUDGET", flight * 3 * compiler.TILE_COPIES * 16 * 8 * 8)
        plan = compiler.memory_plan(w.shape, 8)
        assert plan.in_flight == flight and len(plan.strips) == 6
        inside, most = [0], [0]
        lock = threading.Lock()

        def callback(p, rec, st, inside=inside, most=most, lock=lock):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.001)
            with lock:
                inside[0] -= 1

        programs.append(pc.compile(w, "clements-8", PIPE, callback=callback))
        calls.append(most[0])
    one, two = programs
    for name in ("v", "u"):
        for field in ("theta", "phi", "out_phase"):
            np.testing.assert_array_equal(getattr(getattr(two.phase_map, name), field),
                                          getattr(getattr(one.phase_map, name), field))
    np.testing.assert_array_equal(two.phase_map.sigma, one.phase_map.sigma)
    np.testing.assert_array_equal(two.phase_map.gain, one.phase_map.gain)
    np.testing.assert_array_equal(two.dense, one.dense)
    assert two.report.summary == one.report.summary
    for a, b in zip(one.report.records, two.report.records):
        assert (a.name, dict(a.metrics)) == (b.name, dict(b.metrics))
    assert calls == [1, 1]  # never two callbacks at once


def test_memory_plan_strips_in_flight_share_the_budget():
    per_row = compiler.TILE_COPIES * 16 * 64 * 64 * 64  # a block row of a 4096-wide matrix of 64 x 64 tiles
    one = compiler.memory_plan((4096, 4096), 64, available=64 << 30, in_flight=1)
    two = compiler.memory_plan((4096, 4096), 64, available=64 << 30, in_flight=2)
    assert one.strip_rows * per_row <= compiler.STRIP_BUDGET and 2 * two.strip_rows * per_row <= compiler.STRIP_BUDGET
    assert len(two.strips) % 2 == 0 and len({r1 - r0 for r0, r1 in two.strips}) == 1  # whole rounds, equal strips
    assert two.peak_bytes - two.whole_bytes == 2 * two.strip_rows * per_row
    assert compiler.memory_plan((64, 4096), 64, available=64 << 30, in_flight=2).strips == [(0, 64)]
    with pytest.raises(InvalidInputError, match=r"in_flight must be an integer in \[1, inf\]; got 0"):
        compiler.memory_plan((4096, 4096), 64, available=64 << 30, in_flight=0)
    with pytest.raises(pc.InvalidTypeError, match="in_flight must be an integer; got float 1.5"):
        compiler.memory_plan((4096, 4096), 64, available=64 << 30, in_flight=1.5)


def test_memory_plan_fails_early_with_the_size():
    with pytest.raises(InvalidInputError, match=r"weights of shape 4096x4096 \(4096 tiles of 64x64\) need about"):
        compiler.memory_plan((4096, 4096), 64, available=1 << 28)
    plan = compiler.memory_plan((4096, 4096), 64, available=16 << 30)
    assert plan.peak_bytes <= 16 << 30 and sum(r1 - r0 for r0, r1 in plan.strips) == 4096


def test_compile_refuses_what_cannot_fit(monkeypatch):
    monkeypatch.setattr(compiler, "available_memory", lambda: 1 << 20)
    with pytest.raises(InvalidInputError, match=r"GiB is available\. Compile a smaller matrix"):
        pc.compile(np.ones((300, 300)), "clements-8")


# ---- the whole model ------------------------------------------------------------------------------

WHOLE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    import photocomp as pc
    w = np.random.default_rng(44).standard_normal((4096, 4096))
    prog = pc.compile(w, "pace-64")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    s = prog.report.summary
    print(prog.n_tiles, peak, s["matrix_error"], s["min_mesh_fidelity"], prog.report["clements"].metrics["matrix_error"])
    """
)


@pytest.mark.slow
def test_whole_model_4096_on_pace64_fits_in_4_gib():
    """4,096 tiles of 64 x 64 end to end with the default pipeline, in a fresh process (no timing asserted)."""
    out = _python(WHOLE, timeout=3600)
    tiles, peak, err, fidelity, exact_err = (float(x) for x in out.stdout.split())
    assert tiles == 4096
    assert peak <= 4 * 2**30
    assert exact_err < 1e-12  # before quantization the compiled matrix is exact
    assert err < 0.05 and fidelity > 0.999  # 12-bit DACs


# ---- a whole model across devices ----------------------------------------------------------------

MODEL = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    import photocomp as pc

    rng = np.random.default_rng(47)
    params = {f"Dense_{i}": {"kernel": rng.standard_normal(shape), "bias": rng.standard_normal(shape[1])}
              for i, shape in enumerate(((16, 24), (24, 16), (16, 24)))}
    model = pc.compile_model(params, target="clements-8", power=False)
    out = {"devices": jax.device_count()}
    for layer in model:
        pm = layer.program.phase_map
        for key, value in (("v_theta", pm.v.theta), ("v_phi", pm.v.phi), ("u_theta", pm.u.theta),
                           ("u_phi", pm.u.phi), ("sigma", pm.sigma), ("gain", pm.gain), ("dense", layer.program.dense)):
            out[f"{layer.name}/{key}"] = np.asarray(value)
    np.savez(sys.argv[1], **out)
    """
)


def test_compile_model_on_two_devices_equals_one_device(tmp_path):
    """compile_model of a three-layer model (6 tiles of 8 x 8 each: one shape of tile batch to compile) with its
    tiles sharded over two host devices gives every layer the phases and matrix of this process's compile
    (to 1e-12)."""
    out = tmp_path / "model2.npz"
    _python(MODEL, out, devices=2, timeout=300)
    rng = np.random.default_rng(47)
    params = {f"Dense_{i}": {"kernel": rng.standard_normal(shape), "bias": rng.standard_normal(shape[1])}
              for i, shape in enumerate(((16, 24), (24, 16), (16, 24)))}
    model = pc.compile_model(params, target="clements-8", power=False)
    with np.load(out) as two:
        assert int(two["devices"]) == 2
        assert sorted(k for k in two.files if k != "devices") == sorted(f"{la.name}/{k}" for la in model for k in (
            "v_theta", "v_phi", "u_theta", "u_phi", "sigma", "gain", "dense"))
        for layer in model:
            pm = layer.program.phase_map
            for key, mine in (("v_theta", pm.v.theta), ("v_phi", pm.v.phi), ("u_theta", pm.u.theta),
                              ("u_phi", pm.u.phi), ("sigma", pm.sigma), ("gain", pm.gain),
                              ("dense", layer.program.dense)):
                theirs = two[f"{layer.name}/{key}"]
                assert theirs.shape == np.shape(mine), (layer.name, key)
                np.testing.assert_allclose(theirs, np.asarray(mine), rtol=0, atol=1e-12, err_msg=f"{layer.name}/{key}")
    assert [la.program.n_tiles for la in model] == [6, 6, 6]
