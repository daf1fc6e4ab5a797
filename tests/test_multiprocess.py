"""The cluster path run for real: two processes under JAX's multi-process runtime on this machine.

Two Python processes, each with two host CPU devices, start ``jax.distributed`` against a coordinator on
localhost (four devices in all, two of them held by the other process), compile the same multi-tile matrix
and calibrate it on the same fabricated chip. A third process without the distributed runtime, on one
device, does the same. Every process writes what it got; the test compares them:

* the two processes of the distributed run get bitwise the same program, calibrated settings and
  errors: the tiles' results are gathered from every process (:func:`photocomp.sim.devices.gather`), and
  the calibration's loss, a sum over the tiles, is one all-reduced value that both processes read;
* both equal the one-device run to 1e-12 (float64 rounding): the compile's per-tile work runs the same
  arithmetic in differently padded batches, and the calibration's loss is summed in a different order
  (within each device, across the devices, across the processes), so the optimizer's iterates differ by a
  few ulp, which three steps leave near 1e-15 (measured: at most 2e-15, the compile bitwise equal).

Only the child processes are pinned to the CPU (``JAX_PLATFORMS`` and ``XLA_FLAGS`` in their environment):
the library itself picks whatever devices it finds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCESS_TIMEOUT_S = 600  # all three processes together; they took 85-150 s on two shared cores
INIT_TIMEOUT_S = 120  # a process whose peer never comes gives up after this

CHILD = textwrap.dedent(
    """
    import importlib
    import sys
    import jax

    out, processes, process_id, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if processes > 1:
        jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=processes,
                                   process_id=process_id, initialization_timeout=int(sys.argv[5]),
                                   cluster_detection_method="deactivate")  # whatever cluster runs the suite
    import jax.numpy as jnp
    import numpy as np
    import photocomp as pc
    from photocomp.sim.devices import run_tiles

    def device_of_tile(x):
        return (jnp.full(x.shape[:1], jax.lax.axis_index("tiles")),)

    engine = importlib.import_module("photocomp.calibration.engine")  # where optimize looks up minimize
    spread = []  # how many devices hold the heater phases the optimizer starts from
    minimize = engine.minimize

    def spy(loss_fn, params0, *args, **kwargs):
        spread.append(len(params0.sharding.device_set))
        return minimize(loss_fn, params0, *args, **kwargs)

    engine.minimize = spy
    where = run_tiles(device_of_tile, [np.zeros(8)], chunk=2)[0] if jax.device_count() > 1 else np.zeros(8)
    w = np.random.default_rng(47).standard_normal((20, 13))  # 3 x 2 tiles of 8
    prog = pc.compile(w, "clements-8")
    cal = pc.calibrate(prog, pc.fabricate("clements-8", seed=1), "model", steps=3, progress=False)
    pm, s = prog.phase_map, cal.settings
    np.savez(out, processes=jax.process_count(), process=jax.process_index(), devices=jax.device_count(),
             local=jax.local_device_count(), owner=[d.process_index for d in jax.devices()], where=where,
             spread=spread[0], n_tiles=prog.n_tiles, matrix=prog.matrix(), calibrated=cal.matrix(),
             errors=[cal.report.summary[k] for k in ("error_before", "error_start", "error_after")],
             steps_run=cal.report.summary["steps_run"],
             v_theta=pm.v.theta, v_phi=pm.v.phi, v_out=pm.v.out_phase, sigma=pm.sigma,
             u_theta=pm.u.theta, u_phi=pm.u.phi, u_out=pm.u.out_phase, gain=pm.gain,
             s_v_int=s.v_int, s_v_ext=s.v_ext, s_v_out=s.v_out, s_att=s.att,
             s_u_int=s.u_int, s_u_ext=s.u_ext, s_u_out=s.u_out, s_gain=s.gain)
    """
)
PHASES = ("v_theta", "v_phi", "v_out", "sigma", "u_theta", "u_phi", "u_out",
          "s_v_int", "s_v_ext", "s_v_out", "s_att", "s_u_int", "s_u_ext", "s_u_out")
VALUES = ("matrix", "calibrated", "gain", "s_gain", "errors")


def _free_port() -> int:
    """A TCP port on localhost that nothing listens on now (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    """The environment of a child: ``devices`` host CPU devices (XLA_FLAGS is read when jax starts)."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] = "gloo"  # the default of recent JAX, named for older ones
    env["PHOTOCOMP_CACHE_DIR"] = ""
    env.pop("PYTHONPATH", None)
    return env


def _run_all(jobs: dict, tmp_path, timeout: float) -> dict:
    """Start every job ``name -> (args, devices)`` at once and wait for all of them.

    A job that fails stops the others at once (its peer would otherwise wait in a collective until the
    runtime's heartbeat gives up); past ``timeout`` every job still running is killed. Either way the test
    fails with the failing job's stderr. Returns ``name -> (saved arrays, seconds it ran)``.
    """
    procs, logs, started = {}, {}, time.monotonic()
    try:
        for name, (args, devices) in jobs.items():
            logs[name] = open(tmp_path / f"{name}.log", "w+")
            procs[name] = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / f"{name}.npz"), *map(str, args)],
                                           env=_env(devices), cwd=ROOT, stdout=logs[name], stderr=subprocess.STDOUT)
        ended = {}
        while len(ended) < len(procs):
            for name, proc in procs.items():
                if name not in ended and proc.poll() is not None:
                    ended[name] = time.monotonic() - started
                    if proc.returncode != 0:
                        logs[name].seek(0)
                        pytest.fail(f"process {name} exited with {proc.returncode}:\n{logs[name].read()[-6000:]}")
            if time.monotonic() - started > timeout:
                pytest.fail(f"processes {sorted(set(procs) - set(ended))} still running after {timeout} s")
            time.sleep(0.2)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()
    out = {}
    for name in jobs:
        with np.load(tmp_path / f"{name}.npz") as data:
            out[name] = ({k: data[k] for k in data.files}, ended[name])
    return out


def _assert_close_phases(a, b, atol: float, key: str) -> None:
    """Phases equal modulo 2 pi to ``atol`` (a value a few ulp from 0 may have wrapped to 2 pi)."""
    assert a.shape == b.shape, key
    np.testing.assert_allclose(np.abs(np.angle(np.exp(1j * (a - b)))), 0, rtol=0, atol=atol, err_msg=key)


@pytest.mark.slow  # three processes compile and calibrate: 85-150 s on two shared, loaded cores
def test_two_processes_compile_and_calibrate_like_one(tmp_path):
    port = _free_port()
    jobs = {f"process{i}": ((2, i, port, INIT_TIMEOUT_S), 2) for i in range(2)}
    jobs["alone"] = ((1, 0, 0, INIT_TIMEOUT_S), 1)
    runs = _run_all(jobs, tmp_path, PROCESS_TIMEOUT_S)
    (p0, t0), (p1, t1), (one, t_one) = runs["process0"], runs["process1"], runs["alone"]
    print(f"two processes: {t0:.1f} s and {t1:.1f} s; one process on one device: {t_one:.1f} s")

    # the runtime really spans two processes of two devices each, and the work really was spread over them
    for i, p in enumerate((p0, p1)):
        assert (int(p["processes"]), int(p["process"]), int(p["devices"]), int(p["local"])) == (2, i, 4, 2)
        np.testing.assert_array_equal(np.sort(p["owner"]), [0, 0, 1, 1])
        owner_of_tile = p["owner"][p["where"].astype(int)]
        np.testing.assert_array_equal(np.bincount(owner_of_tile, minlength=2), [4, 4])  # per-tile programs
        assert int(p["spread"]) == 4  # the calibration's heater phases lie on all four devices
    assert int(one["processes"]) == 1 and int(one["devices"]) == 1 and int(one["spread"]) == 1
    assert int(p0["n_tiles"]) == int(one["n_tiles"]) == 6

    # both processes receive the same whole program and calibration, bit for bit
    for key in PHASES + VALUES:
        np.testing.assert_array_equal(p0[key], p1[key], err_msg=key)

    # and they equal the one-device run to float64 rounding (see the module docstring)
    for key in PHASES:
        _assert_close_phases(p0[key], one[key], 1e-12, key)
    for key in VALUES:
        assert p0[key].shape == one[key].shape, key
        np.testing.assert_allclose(p0[key], one[key], rtol=0, atol=1e-12, err_msg=key)
    assert int(p0["steps_run"]) == int(p1["steps_run"]) == int(one["steps_run"]) == 3
    before, start, after = p0["errors"]
    assert after < start < before  # a real calibration: the optimizer improved on the local correction


def test_a_failing_process_stops_its_peer_at_once(tmp_path):
    """A process that dies (here: an id outside the process count) fails the test with its output, and its
    peer, left waiting for it at the coordinator, is killed rather than waited for."""
    port = _free_port()
    jobs = {"waiting": ((2, 0, port, INIT_TIMEOUT_S), 2), "failing": ((2, 5, port, INIT_TIMEOUT_S), 2)}
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"process failing exited with 1(.|\n)*process_id"):
        _run_all(jobs, tmp_path, PROCESS_TIMEOUT_S)
    assert time.monotonic() - started < 60  # not the peer's INIT_TIMEOUT_S nor the overall timeout
