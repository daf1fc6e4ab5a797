"""Calibrate compiled programs on fabricated chips: error per method over chip seeds.

For each case (a 64x64 Haar unitary and a 64x64 real Gaussian matrix, both
compiled through the SVD pipeline onto the target without DAC quantization,
and a 100x80 real Gaussian matrix, 2 x 2 tiles of which three are zero-padded,
through the target's default pipeline)
and each chip seed, report the matrix error against the ideal program of:

* uncorrected: ideal settings (heater offsets compensated, coupler errors and
  loss non-uniformity not), best real gain per tile;
* local: the analytic per-MZI correction (``calibrate(method="local")``);
* model: ``calibrate(method="model")`` with its defaults (L-BFGS, warm start
  from local), and its wall time including JIT compilation;
* twin: ``calibrate(method="twin")``: the chip seen only through noisy
  black-box measurements (a digital twin is fitted, then calibrated on), with
  the measurements it used and its wall time;
* the reachability estimate and the fraction of unreachable MZIs.

Usage::

    python benchmarks/calibration.py --target pace-64 --seeds 0 1 2 3 4 --out benchmarks/README.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

import photocomp as pc  # noqa: E402

BEGIN = "<!-- calibration:begin -->"
END = "<!-- calibration:end -->"
PIPELINE = "validate | tile | svd | clements | canonicalize | lower"


def cases(n: int, seed: int) -> dict:
    """``name: (matrix, pipeline)``: two full tiles without DAC rounding, and a non-square matrix of 2 x 2 tiles
    (three of them zero-padded) through the target's default pipeline (``None``), DAC rounding included."""
    from photocomp.core.reference import haar_unitary

    rng = np.random.default_rng(seed)
    rows, cols = n + n // 2 + 4, n + n // 4
    return {
        f"{n}x{n} Haar unitary": (haar_unitary(n, rng), PIPELINE),
        f"{n}x{n} real Gaussian": (rng.normal(size=(n, n)), PIPELINE),
        f"{rows}x{cols} real Gaussian, 2 x 2 tiles (three zero-padded), the target's default pipeline":
            (rng.normal(size=(rows, cols)), None),
    }


def run_case(w, target: str, seeds, steps: int, twin: dict, pipeline: str | None = PIPELINE) -> list[dict]:
    prog = pc.compile(w, target=target, pipeline=pipeline)
    rows = []
    for seed in seeds:
        chip = pc.fabricate(target, seed=seed)
        reach = pc.reachability(prog, chip)
        t0 = time.perf_counter()
        local = pc.calibrate(prog, chip, method="local", progress=False)
        t_local = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = pc.calibrate(prog, chip, method="model", steps=steps, progress=False)
        t_model = time.perf_counter() - t0
        s = model.report.summary
        t0 = time.perf_counter()
        tw = pc.calibrate(prog, chip, method="twin", steps=steps, progress=False, seed=seed, **twin).report.summary
        t_twin = time.perf_counter() - t0
        rows.append({
            "twin": tw["error_after"],
            "twin_s": t_twin,
            "twin_measurements": tw["measurements"],
            "seed": seed,
            "uncorrected": pc.error(prog, chip)["matrix_error"],
            "local": local.report.summary["error_after"],
            "model": s["error_after"],
            "clip": reach.clip_error,
            "unreachable": reach.fraction,
            "local_s": t_local,
            "model_s": t_model,
            "steps": s.get("steps_run", 0),
            "measurements": s["measurements"],
        })
        print(f"  seed {seed}: uncorrected {rows[-1]['uncorrected']:.3e} local {rows[-1]['local']:.3e} "
              f"model {rows[-1]['model']:.3e} ({t_model:.1f} s, {rows[-1]['steps']} steps) twin {tw['error_after']:.3e} "
              f"({t_twin:.1f} s, {tw['measurements']} measurements) clip error~{reach.clip_error:.3e}",
              flush=True)
    return rows


def table(name: str, rows: list[dict]) -> list[str]:
    out = [f"### {name}", "",
           "| chip seed | uncorrected | local | model | model / local | twin | twin / model | reachability estimate | "
           "unreachable MZIs | local time | model time (steps) | twin time | twin measurements |",
           "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        out.append(f"| {r['seed']} | {r['uncorrected']:.3e} | {r['local']:.3e} | {r['model']:.3e} | "
                   f"{r['model'] / r['local']:.2f} | {r['twin']:.3e} | {r['twin'] / r['model']:.2f} | "
                   f"{r['clip']:.3e} | {100 * r['unreachable']:.1f} % | "
                   f"{r['local_s']:.2g} s | {r['model_s']:.1f} s ({r['steps']}) | {r['twin_s']:.1f} s | "
                   f"{r['twin_measurements']:,} |")
    keys = ("uncorrected", "local", "model", "twin", "clip", "local_s", "model_s", "twin_s", "twin_measurements")
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    out.append(f"| **median** | {med['uncorrected']:.3e} | {med['local']:.3e} | {med['model']:.3e} | "
               f"{med['model'] / med['local']:.2f} | {med['twin']:.3e} | {med['twin'] / med['model']:.2f} | "
               f"{med['clip']:.3e} | | {med['local_s']:.2g} s | {med['model_s']:.1f} s | {med['twin_s']:.1f} s | "
               f"{med['twin_measurements']:,.0f} |")
    return out + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="pace-64")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=300, help="model calibration steps (default %(default)s)")
    ap.add_argument("--case-seed", type=int, default=2026)
    ap.add_argument("--twin-shots", type=int, default=1000, help="shots per black-box reading (default %(default)s)")
    ap.add_argument("--twin-configs", type=int, default=6, help="twin probe configurations (default %(default)s)")
    ap.add_argument("--twin-steps", type=int, default=300, help="twin fitting steps (default %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="README to write the table into (between markers)")
    args = ap.parse_args(argv)
    load0 = _report.load_average()
    target = pc.get_target(args.target)
    lines = ["## Calibration", "",
             f"Matrix error ‖W_ideal − W_chip‖_F / ‖W_ideal‖_F (best real gain per tile) of programs compiled onto "
             f"`{target.name}` (`{PIPELINE}` for the full tiles; the target's default pipeline, with its DAC "
             f"rounding, for the padded program), on chips sampled with `photocomp.fabricate` (coupler σ = "
             f"{target.coupler_sigma_rad} rad, MZI loss {target.mzi_loss_db} ± {target.mzi_loss_sigma_db} dB, "
             f"random heater offsets). Model calibration: `calibrate(method=\"model\", steps={args.steps})` with its "
             "defaults (L-BFGS, warm start from the local correction); its time includes JIT compilation. "
             f"Twin calibration: `calibrate(method=\"twin\", shots={args.twin_shots}, twin_configs={args.twin_configs}, "
             f"twin_steps={args.twin_steps})`: heater characterisation, {args.twin_configs} probe configurations read "
             "with phase stepping through auto-ranging receivers (shot, dark and ADC noise), a twin fitted by L-BFGS, "
             "then model calibration on the twin; a measurement counts one input vector read once per shot. The "
             "reachability estimate is the error left when every unreachable MZI is clipped to its nearest reachable "
             "splitting and everything else is perfect; global calibration can go below it.", ""]
    for name, (w, pipeline) in cases(target.size, args.case_seed).items():
        print(name, flush=True)
        twin = {"shots": args.twin_shots, "twin_configs": args.twin_configs, "twin_steps": args.twin_steps}
        lines += table(name, run_case(w, target.name, args.seeds, args.steps, twin, pipeline))
    return _report.finish(
        lines, load0,
        f"python benchmarks/calibration.py --target {target.name} --seeds {' '.join(map(str, args.seeds))} "
        f"--steps {args.steps} --twin-shots {args.twin_shots} --twin-configs {args.twin_configs} "
        f"--twin-steps {args.twin_steps}", args.out, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
