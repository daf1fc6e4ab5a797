"""Mesh simulation speed: transfer matrices, gradients, batched forward passes, model calibration.

All in float64 on a 64 x 64 Haar unitary compiled onto the target
(``validate | tile | svd | clements | canonicalize | lower``, one tile) and a
chip sampled with ``photocomp.fabricate``:

* transfer matrix of one imperfect 64-mode mesh (the tile's V mesh with the
  chip's coupler errors and loss: ``physical.apply_physical_mesh`` on the
  identity), and the value and gradient of its matrix-error loss with
  respect to all its heater phases, jit-compiled: the unit of the goals;
* transfer matrix of one tile of the imperfect chip (two meshes and the
  attenuators: ``chipsim.chip_tile_matrices``), jit-compiled;
* value and gradient of the calibration loss (squared matrix error after the
  best gain) with respect to every heater phase of the tile, jit-compiled,
  with ``reverse_only=True`` as calibration runs it, and on the default path;
* both again on float32 settings (complex64 fields, what the simulator runs
  in JAX's default 32-bit mode), with their difference from float64;
* a forward pass over a batch of 4,096 inputs: ``jax.vmap(prog.forward)``
  (the folded dense matrix), the pure simulation
  ``jax.jit(jax.vmap(prog.forward_fn))`` of the ideal and of the fabricated
  chip (the batch goes through the tile matrices), and a jit-compiled dense
  complex matrix product of the same shape as the yardstick;
* ``pc.calibrate(prog, chip, method="model")`` with its defaults: wall time
  (JIT compilation included) and final matrix error.

The reference is the straightforward simulator this project used before:
every MZI's 2 x 2 matrix from ``convention.physical_mzi`` gathered into its
column and applied by ``mesh.apply_columns``; it is kept here so both run on
the same machine in the same session. Times are the minimum and the median
of repeated calls after a warm-up call (``block_until_ready``); other work on
the machine inflates the medians more than the minima.

Usage::

    python benchmarks/simulation.py --target pace-64 --seed 0 --out benchmarks/README.md
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

import photocomp as pc  # noqa: E402
from photocomp.core.convention import physical_mzi  # noqa: E402
from photocomp.core.layout import apply_columns  # noqa: E402
from photocomp.hardware.chipsim import attenuator_amplitude, chip_tile_matrices, settings_from_program  # noqa: E402
from photocomp.sim import ideal as simulate  # noqa: E402
from photocomp.sim.physical import apply_physical_mesh  # noqa: E402

calibrate_module = importlib.import_module("photocomp.calibration.engine")  # where the optimiser's chip model lives

BEGIN = "<!-- simulation:begin -->"
END = "<!-- simulation:end -->"
PIPELINE = "validate | tile | svd | clements | canonicalize | lower"
BATCH = 4096


# ---- the reference simulator ------------------------------------------------------------------

def reference_tile_matrices(chip, s, *, with_gain=True, reverse_only=False):
    """``chip_tile_matrices`` the straightforward way: per-MZI 2 x 2 products, one column loop per mesh
    (``reverse_only`` is accepted and ignored: plain autodiff serves both modes)."""
    lay = s.layout
    k = s.grid.tile

    def stage(g, internal, external, out, x):
        mats = physical_mzi(internal, external, chip.coupler_in[g], chip.coupler_out[g])
        mats = mats * (10.0 ** (-jnp.asarray(chip.loss_db[g]) / 20.0))[:, None, None]
        return apply_columns(lay, mats.astype(x.dtype), out, x)

    def one(vi, ve, vo, att, ui, ue, uo):
        amp = attenuator_amplitude(att, chip.coupler_in["att"], chip.coupler_out["att"], chip.loss_db["att"])
        z = stage("v", vi, ve, vo, jnp.eye(k, dtype=jnp.complex128))
        return stage("u", ui, ue, uo, z * amp[:, None])

    z = jax.vmap(one)(s.v_int, s.v_ext, s.v_out, s.att, s.u_int, s.u_ext, s.u_out)
    return z * jnp.asarray(s.gain)[:, None, None] if with_gain else z


def reference_chip_forward(chip, s, x):
    """One input field (K,) through tile 0 of the chip, propagated by the reference simulator."""
    lay = s.layout

    def stage(g, internal, external, out, z):
        mats = physical_mzi(internal, external, chip.coupler_in[g], chip.coupler_out[g])
        mats = mats * (10.0 ** (-jnp.asarray(chip.loss_db[g]) / 20.0))[:, None, None]
        return apply_columns(lay, mats.astype(z.dtype), out, z)

    amp = attenuator_amplitude(s.att[0], chip.coupler_in["att"], chip.coupler_out["att"], chip.loss_db["att"])
    z = stage("v", s.v_int[0], s.v_ext[0], s.v_out[0], x.astype(jnp.complex128))
    return s.gain[0] * stage("u", s.u_int[0], s.u_ext[0], s.u_out[0], z * amp)


# ---- timing ---------------------------------------------------------------------------------------

def timed(fn, *args, repeats: int) -> dict:
    """Seconds of ``fn(*args)`` after a warm-up call: min and median over ``repeats`` calls."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return {"min": min(times), "median": statistics.median(times)}


def fmt(t: dict | None) -> str:
    if t is None:
        return "—"
    scale, unit = (1e3, "ms") if t["median"] < 1.0 else (1.0, "s")
    return f"{t['min'] * scale:.3g} / {t['median'] * scale:.3g} {unit}"


def run(target: str, seed: int, repeats: int, steps: int, reference_calibration: bool) -> dict:
    from photocomp.calibration.engine import relative_error as _relative_error
    from photocomp.core.reference import haar_unitary

    out = {}
    with jax.enable_x64(True):
        n = pc.get_target(target).size
        out["n"] = n
        w = haar_unitary(n, np.random.default_rng(2026))
        prog = pc.compile(w, target=target, pipeline=PIPELINE)
        chip = pc.fabricate(target, seed=seed)
        s = jax.tree_util.tree_map(jnp.asarray, settings_from_program(prog.phase_map))
        ideal = jnp.asarray(simulate.tile_matrices(prog.phase_map))

        fast = jax.jit(lambda s: chip_tile_matrices(chip, s, with_gain=False))
        ref = jax.jit(lambda s: reference_tile_matrices(chip, s, with_gain=False))
        out["matrix_diff"] = float(jnp.max(jnp.abs(fast(s) - ref(s))))
        print("transfer matrix", flush=True)
        out["matrix"] = {"ref": timed(ref, s, repeats=repeats), "fast": timed(fast, s, repeats=repeats)}

        def loss(tiles_fn, target):
            def f(s):
                err, _ = _relative_error(target, tiles_fn(s))
                return err**2
            return jax.jit(jax.value_and_grad(f))

        def max_diff(a, b):
            return max(float(jnp.max(jnp.abs(x - y))) for x, y in
                       zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

        # the gradient rows run what calibration runs: reverse_only=True (the similarity-transform adjoint);
        # g_default is the default path, which forward-mode derivatives can also go through
        g_fast = loss(lambda s: chip_tile_matrices(chip, s, with_gain=False, reverse_only=True), ideal)
        g_default = loss(lambda s: chip_tile_matrices(chip, s, with_gain=False), ideal)
        g_ref = loss(lambda s: reference_tile_matrices(chip, s, with_gain=False), ideal)
        (_, ga), (_, gb) = g_fast(s), g_ref(s)
        out["grad_default_diff"] = max_diff(g_default(s)[1], gb)
        out["grad_diff"] = max_diff(ga, gb)
        # the same two fast paths on float32 settings (complex64 fields): what the simulator runs in
        # JAX's default 32-bit mode; accuracy against the float64 result
        s32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), s)
        g32 = loss(lambda s: chip_tile_matrices(chip, s, with_gain=False, reverse_only=True),
                   ideal.astype(jnp.complex64))
        out["f32_matrix_diff"] = max_diff(fast(s32), fast(s))
        out["f32_grad_diff"] = max_diff(g32(s32)[1], ga)
        # one mesh on the identity: apply_physical_mesh vs the column loop over convention.physical_mzi
        lay = s.layout
        mesh_args = (s.v_int[0], s.v_ext[0], s.v_out[0])
        errs = {"coupler_in": chip.coupler_in["v"], "coupler_out": chip.coupler_out["v"], "loss_db": chip.loss_db["v"]}
        eye = jnp.eye(n, dtype=jnp.complex128)
        mesh_fast = jax.jit(lambda i, e, o: apply_physical_mesh(lay, i, e, o, eye, **errs))

        def mesh_ref_fn(i, e, o):
            mats = physical_mzi(i, e, errs["coupler_in"], errs["coupler_out"])
            mats = mats * (10.0 ** (-jnp.asarray(errs["loss_db"]) / 20.0))[:, None, None]
            return apply_columns(lay, mats.astype(jnp.complex128), o, eye)

        mesh_ref = jax.jit(mesh_ref_fn)
        out["mesh_diff"] = float(jnp.max(jnp.abs(mesh_fast(*mesh_args) - mesh_ref(*mesh_args))))
        out["mesh"] = {"ref": timed(mesh_ref, *mesh_args, repeats=repeats),
                       "fast": timed(mesh_fast, *mesh_args, repeats=repeats)}
        # value and gradient of that mesh's matrix-error loss against its ideal matrix, for all its heaters
        ideal_mesh = apply_physical_mesh(lay, *mesh_args, eye)[None]

        def mesh_loss(mesh_fn):
            def f(*args):
                err, _ = _relative_error(ideal_mesh, mesh_fn(*args)[None])
                return err**2
            return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))

        mg_fast = mesh_loss(lambda i, e, o: apply_physical_mesh(lay, i, e, o, eye, reverse_only=True, **errs))
        mg_ref = mesh_loss(mesh_ref_fn)
        out["mesh_grad_diff"] = max_diff(mg_fast(*mesh_args)[1], mg_ref(*mesh_args)[1])
        out["mesh_grad"] = {"ref": timed(mg_ref, *mesh_args, repeats=max(5, repeats // 4)),
                            "fast": timed(mg_fast, *mesh_args, repeats=repeats)}
        print("value and gradient", flush=True)
        out["grad"] = {"ref": timed(g_ref, s, repeats=max(5, repeats // 4)), "fast": timed(g_fast, s, repeats=repeats),
                       "default": timed(g_default, s, repeats=repeats)}
        out["f32"] = {"matrix": timed(fast, s32, repeats=repeats), "grad": timed(g32, s32, repeats=repeats)}

        rng = np.random.default_rng(1)
        xs = jnp.asarray(rng.normal(size=(BATCH, n)) + 1j * rng.normal(size=(BATCH, n)))
        dense = jnp.asarray(prog.dense)
        matmul = jax.jit(lambda x: x @ dense.T)
        vmapped = jax.vmap(prog.forward)
        sim = jax.jit(jax.vmap(prog.forward_fn, in_axes=(None, 0)))
        ref_sim = jax.jit(jax.vmap(lambda x: reference_chip_forward(chip, s, x)))
        want = np.asarray(xs) @ np.asarray(dense).T
        out["forward_diff"] = float(np.max(np.abs(np.asarray(vmapped(xs)) - want)))
        out["sim_diff"] = float(np.max(np.abs(np.asarray(sim(prog.params, xs)) - want)))
        print("forward batch", flush=True)
        out["forward"] = {
            "matmul": timed(matmul, xs, repeats=repeats),
            "vmap_forward": timed(vmapped, xs, repeats=repeats),
            "sim": timed(sim, prog.params, xs, repeats=max(5, repeats // 4)),
        }
        cal = pc.Program(prog.target, prog.phase_map, prog.report, prog.pipeline, prog.detection,
                         chip=chip, settings=jax.tree_util.tree_map(np.asarray, s))
        cal_sim = jax.jit(jax.vmap(cal.forward_fn, in_axes=(None, 0)))
        out["forward"]["chip_sim"] = timed(cal_sim, cal.params, xs, repeats=max(5, repeats // 4))
        out["forward"]["chip_sim_ref"] = timed(ref_sim, xs, repeats=max(3, repeats // 10))
        out["chip_sim_diff"] = float(np.max(np.abs(np.asarray(cal_sim(cal.params, xs)) - np.asarray(ref_sim(xs)))))

    print("model calibration", flush=True)
    out["calibration"] = {"fast": calibrate_timed(prog, chip, steps)}
    if reference_calibration:
        # the same calibration with the optimiser's chip model swapped for the reference simulator
        _clear_jit_caches()
        with mock.patch.object(calibrate_module, "chip_tile_matrices", reference_tile_matrices):
            out["calibration"]["ref"] = calibrate_timed(prog, chip, steps)
        _clear_jit_caches()
    return out


def _clear_jit_caches():
    """Drop compiled chip models cached inside the calibration module (they close over the simulator)."""
    for value in vars(calibrate_module).values():
        if callable(getattr(value, "clear_cache", None)):
            value.clear_cache()


def calibrate_timed(prog, chip, steps) -> dict:
    t0 = time.perf_counter()
    cal = pc.calibrate(prog, chip, method="model", steps=steps, progress=False)
    wall = time.perf_counter() - t0
    s = cal.report.summary
    return {"wall": wall, "error": s["error_after"], "steps": s.get("steps_run", 0), "before": s["error_before"]}


def table(res: dict, target: str, seed: int) -> list[str]:
    m, g, f, c, n = res["matrix"], res["grad"], res["forward"], res["calibration"], res["n"]

    def speedup(ref, new):
        return f"{ref['median'] / new['median']:.1f}x"

    lines = [
        "| quantity | reference (min / median) | photocomp (min / median) | speed-up (median) | goal |",
        "|:--|--:|--:|--:|:--|",
        f"| transfer matrix of one {n}-mode mesh (chip errors), `apply_physical_mesh` on the identity | "
        f"{fmt(res['mesh']['ref'])} | {fmt(res['mesh']['fast'])} | {speedup(res['mesh']['ref'], res['mesh']['fast'])} "
        "| ≤ 0.5 ms |",
        f"| value and gradient of that mesh's matrix-error loss (all its heaters) | {fmt(res['mesh_grad']['ref'])} | "
        f"{fmt(res['mesh_grad']['fast'])} | {speedup(res['mesh_grad']['ref'], res['mesh_grad']['fast'])} | ≤ 2 ms |",
        f"| transfer matrix of one {target} tile (two meshes and attenuators, chip errors) | {fmt(m['ref'])} | "
        f"{fmt(m['fast'])} | {speedup(m['ref'], m['fast'])} | (≤ 0.5 ms) |",
        f"| value and gradient of the tile's matrix-error loss (all {target} heaters) | {fmt(g['ref'])} | "
        f"{fmt(g['fast'])} | {speedup(g['ref'], g['fast'])} | (≤ 2 ms) |",
        f"| the same on the default path (forward mode available too) | {fmt(g['ref'])} | "
        f"{fmt(g['default'])} | {speedup(g['ref'], g['default'])} | |",
        f"| transfer matrix of one {target} tile, float32 settings (complex64) | | {fmt(res['f32']['matrix'])} | "
        f"{res['matrix']['fast']['median'] / res['f32']['matrix']['median']:.2f}x float64 | (≤ 0.5 ms) |",
        f"| value and gradient of the tile, float32 settings (complex64) | | {fmt(res['f32']['grad'])} | "
        f"{g['fast']['median'] / res['f32']['grad']['median']:.2f}x float64 | (≤ 2 ms) |",
        f"| chip simulation of {BATCH} inputs, `jit(vmap(forward_fn))` | {fmt(f['chip_sim_ref'])} | "
        f"{fmt(f['chip_sim'])} | {speedup(f['chip_sim_ref'], f['chip_sim'])} | |",
        f"| ideal simulation of {BATCH} inputs, `jit(vmap(forward_fn))` | | {fmt(f['sim'])} | "
        f"{f['sim']['median'] / f['matmul']['median']:.2f}x the matmul | |",
        f"| `jax.vmap(prog.forward)` over {BATCH} inputs (folded dense matrix) | | {fmt(f['vmap_forward'])} | "
        f"{f['vmap_forward']['median'] / f['matmul']['median']:.2f}x the matmul | ≤ 2x the matmul |",
        f"| dense complex matmul ({BATCH} x {n} by {n} x {n}, jit) | | {fmt(f['matmul'])} | | |",
    ]
    cf = c["fast"]
    cr = c.get("ref")
    lines.append(
        "| `pc.calibrate(prog, chip, method=\"model\")`, wall time (steps run) | "
        + (f"{cr['wall']:.1f} s ({cr['steps']})" if cr else "—")
        + f" | {cf['wall']:.1f} s ({cf['steps']}) | " + (f"{cr['wall'] / cf['wall']:.1f}x" if cr else "") + " | |")
    lines.append(
        "| final matrix error of that calibration (before: "
        f"{cf['before']:.3e}) | " + (f"{cr['error']:.3e}" if cr else "—") + f" | {cf['error']:.3e} | | |")
    lines += [
        "",
        f"Agreement with the reference (max abs difference): tile matrix {res['matrix_diff']:.1e}, "
        f"single mesh {res['mesh_diff']:.1e} (its gradient {res['mesh_grad_diff']:.1e}), "
        f"tile gradient {res['grad_diff']:.1e} (default path {res['grad_default_diff']:.1e}), chip simulation of the batch {res['chip_sim_diff']:.1e}; "
        f"`vmap(prog.forward)` and the ideal simulation vs `x @ dense.T`: {res['forward_diff']:.1e} and "
        f"{res['sim_diff']:.1e}. Float32 against float64 photocomp: tile matrix {res['f32_matrix_diff']:.1e}, "
        f"gradient {res['f32_grad_diff']:.1e}.",
    ]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="pace-64")
    ap.add_argument("--seed", type=int, default=0, help="chip seed (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=100, help="timed calls per fast measurement")
    ap.add_argument("--steps", type=int, default=300, help="model calibration steps (default %(default)s)")
    ap.add_argument("--no-reference-calibration", action="store_true",
                    help="skip the calibration with the reference simulator (the slowest row)")
    ap.add_argument("--out", type=Path, default=None, help="README to write the table into (between markers)")
    args = ap.parse_args(argv)
    load0 = _report.load_average()
    res = run(args.target, args.seed, args.repeats, args.steps, not args.no_reference_calibration)
    n = res["n"]
    lines = ["## Simulation speed", "",
             f"Float64 simulation (two rows repeat the tile's fast paths on float32 settings, what the simulator "
             f"runs in JAX's default 32-bit mode) of a {n}x{n} Haar unitary compiled onto `{args.target}` (`{PIPELINE}`) on the "
             f"chip `photocomp.fabricate(\"{args.target}\", seed={args.seed})`. The reference is the straightforward "
             "simulator (per-MZI 2 x 2 matrices from `convention.physical_mzi`, one `mesh.apply_columns` loop per "
             "mesh); photocomp runs each tile's V mesh, attenuators and U mesh as one scan over pair-scheduled "
             "column steps, and a batch under `jax.vmap` with shared settings goes through the tile matrices "
             "(`physical.fold_batches`). The gradient rows use `reverse_only=True`, what calibration and twin "
             "fitting run: the gradient sweeps one N x N matrix back through the steps by similarity transforms; "
             "one row repeats the tile's gradient on the default path. Times are min / median of repeated jit-compiled calls after a warm-up "
             f"(block_until_ready; {args.repeats} calls for the fast paths, fewer for slow ones). The calibration "
             f"rows run `calibrate(method=\"model\", steps={args.steps})` with its defaults (L-BFGS, warm start from "
             "the local correction), JIT compilation included; the reference column swaps the optimiser's chip "
             "model for the reference simulator. The goals are set for one imperfect "
             f"{n}x{n} mesh (its V mesh here); a tile, what calibration simulates, is two such meshes and a column of "
             "attenuators, and its rows are held to the same goals in parentheses.", ""]
    lines += table(res, args.target, args.seed)
    return _report.finish(
        lines, load0,
        f"python benchmarks/simulation.py --target {args.target} --seed {args.seed} --repeats {args.repeats} "
        f"--steps {args.steps}" + (" --no-reference-calibration" if args.no_reference_calibration else ""),
        args.out, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
