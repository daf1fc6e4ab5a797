"""Calibration speed: the first chip (which compiles) against further chips and programs of the same shape.

Calibration compiles once per (target, tile count, circuit): the chip, the
start settings and the target tiles are arguments of one jitted optimizer
step, not constants baked into it, so a second chip (another seed) or a
second program of the same shape reuses the compiled program. For each case
a fresh Python process (no on-disk compilation cache) compiles a random
real matrix with the default preset, then times
``calibrate(prog, chip, photocomp.Model(steps=S))``:

* first chip: seed 0, the first calibration in the process (tracing and
  XLA compilation included);
* second chip: seeds 1, 2, ... (``--repeats`` of them), the same program;
  the minimum and the median;
* second program: another matrix of the same shape on a further chip.

Every calibration runs to its own stopping rule (the steps run are shown);
"per step" is the second chip's minimum time over its steps.

Usage::

    python benchmarks/calibration_speed.py --out benchmarks/README.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

BEGIN = "<!-- calibration-speed:begin -->"
END = "<!-- calibration-speed:end -->"
CASES = (("clements-16", 2), ("clements-32", 2), ("clements-64", 2), ("pace-64", 2), ("pace-64", 1),
         ("clements-64", 1))
"""(target, tiles per side): 2 is a 2 x 2 tile grid (a 2K x 2K matrix), 1 one K x K tile."""

CHILD = r"""
import json, sys, time
import numpy as np
import photocomp as pc

target, side, steps, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
k = pc.get_target(target).size
rng = np.random.default_rng(2026)
progs = [pc.compile(rng.normal(size=(side * k, side * k)), target) for _ in range(2)]
method = pc.Model(steps=steps)


def timed(prog, seed):
    chip = pc.fabricate(target, seed)
    t0 = time.perf_counter()
    cal = pc.calibrate(prog, chip, method, progress=False)
    s = cal.report.summary
    return {"s": time.perf_counter() - t0, "steps": int(s.get("steps_run", 0)), "error": float(s["error_after"])}


first = timed(progs[0], 0)
second = [timed(progs[0], seed) for seed in range(1, repeats + 1)]
other = timed(progs[1], repeats + 1)
print(json.dumps({"tiles": progs[0].n_tiles, "first": first, "second": second, "other": other}))
"""


def run_case(target: str, side: int, steps: int, repeats: int, timeout: float) -> dict:
    env = dict(os.environ, PHOTOCOMP_CACHE_DIR="", JAX_ENABLE_COMPILATION_CACHE="false")
    out = subprocess.run([sys.executable, "-c", CHILD, target, str(side), str(steps), str(repeats)], env=env,
                         capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{target} x{side}: the child process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt(s: float) -> str:
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="Model(steps=...) (default %(default)s, the default)")
    ap.add_argument("--repeats", type=int, default=3, help="second-chip calibrations per case (default %(default)s)")
    ap.add_argument("--cases", nargs="+", default=None,
                    help="TARGET:SIDE cases, e.g. clements-16:2 pace-64:1 (default: all of the table)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per case, seconds (default %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="README to write the table into (between markers)")
    args = ap.parse_args(argv)
    cases = CASES if args.cases is None else tuple((c.split(":")[0], int(c.split(":")[1])) for c in args.cases)
    load0 = _report.load_average()
    lines = ["## Calibration speed", "",
             "Wall time of `photocomp.calibrate(prog, chip, photocomp.Model(steps="
             f"{args.steps}))` (L-BFGS from the local correction, its own early stopping) in a fresh process per "
             "row, without an on-disk compilation cache. *First chip* is the process's first calibration "
             "(tracing and compilation included); *second chip* calibrates the same program on other chips "
             f"(seeds 1–{args.repeats}; minimum and median); *second program* is another matrix of the same shape "
             "on another chip. The chip, the start settings and the target tiles are arguments of one jitted "
             "step, so the second chip and the second program compile nothing "
             "(`tests/test_calibration_compile_once.py` counts the compilations). Steps run in parentheses.", "",
             "| target | tiles | first chip | second chip (min) | second chip (median) | first / second | "
             "second program | per step |",
             "|:--|--:|--:|--:|--:|--:|--:|--:|"]
    for target, side in cases:
        print(f"{target} {side}x{side} tiles ...", flush=True)
        r = run_case(target, side, args.steps, args.repeats, args.timeout)
        first, second, other = r["first"], r["second"], r["other"]
        best = min(second, key=lambda x: x["s"])
        med = statistics.median(x["s"] for x in second)
        per_step = best["s"] / max(best["steps"], 1)
        row = (f"| {target} | {side}×{side} ({r['tiles']}) | {fmt(first['s'])} ({first['steps']}) | "
               f"{fmt(best['s'])} ({best['steps']}) | {fmt(med)} | {first['s'] / best['s']:.1f}× | "
               f"{fmt(other['s'])} ({other['steps']}) | {1e3 * per_step:.1f} ms |")
        print(row, flush=True)
        lines.append(row)
    reproduce = "python benchmarks/calibration_speed.py"
    if args.steps != 300:
        reproduce += f" --steps {args.steps}"
    if args.repeats != 3:
        reproduce += f" --repeats {args.repeats}"
    if args.cases is not None:
        reproduce += " --cases " + " ".join(args.cases)
    return _report.finish(lines + [""], load0, reproduce, args.out, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
