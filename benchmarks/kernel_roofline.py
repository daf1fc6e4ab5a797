"""The decomposition kernel against the machine's arithmetic rate: how far it is from the flop limit.

For each N, the Clements kernel ``decompose_many(u[None], "clements")`` on one Haar unitary (seeded)
is timed (median of the timed calls after a first, compiling call and warm-up calls). Its arithmetic
is counted exactly: every nulling step rotates two lines of its stripe's length
(:func:`photocomp.compiler.decompose.line_updates`), 28 real floating-point operations per line
(two outputs, each two complex products and a complex sum). The rate it reaches is held against
what one core of this machine does on dense complex arithmetic: a 512 x 512 complex128 matrix
product (``numpy.matmul``, BLAS limited to one thread, ``8 N^3`` operations), since the kernel is
one chain of dependent steps and runs on one core. The kernel's time includes turning the nulled
entries into phases on the host, so its rate is a lower bound for the nulling alone.

Usage::

    python benchmarks/kernel_roofline.py --out benchmarks/README.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402
import jax  # noqa: E402
from _report import fmt_time, repeated  # noqa: E402

import photocomp as pc  # noqa: E402
from photocomp.compiler.decompose import decompose_many, line_updates  # noqa: E402
from photocomp.sim.devices import single_threaded_blas  # noqa: E402

BEGIN = "<!-- kernel-roofline:begin -->"
END = "<!-- kernel-roofline:end -->"
SIZES = (64, 128, 256, 512, 1024)
FLOPS_PER_LINE = 28
BYTES_PER_LINE = 64  # two complex128 entries read and written
GEMM_N = 512
GOAL = {256: 10e-3}  # issue goal: Clements at N = 256 within 10 ms


def gemm_rate(repeats: int) -> float:
    """Floating-point operations per second of a complex128 matrix product on one BLAS thread."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(GEMM_N, GEMM_N)) + 1j * rng.normal(size=(GEMM_N, GEMM_N))
    b = rng.normal(size=(GEMM_N, GEMM_N)) + 1j * rng.normal(size=(GEMM_N, GEMM_N))
    with single_threaded_blas():
        r = repeated(lambda: a @ b, repeats=repeats, warmup=2, budget_s=10.0)
    return 8 * GEMM_N**3 / statistics.median(r["times"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--repeats", type=int, default=11, help="timed calls per size (at most)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=20.0, help="time budget of the timed calls per size")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    for n in args.sizes:
        if n < 2:
            ap.error(f"--sizes must be integers >= 2; got {n}")
    load0 = _report.load_average()

    peak = gemm_rate(args.repeats)
    rows = []
    for n in args.sizes:
        u = pc.haar_unitary(n, np.random.default_rng(args.seed))
        r = repeated(lambda u=u: jax.block_until_ready(decompose_many(u[None], "clements")),
                     repeats=args.repeats, warmup=args.warmup, budget_s=args.budget_s)
        t, count = statistics.median(r["times"]), len(r["times"])
        flops = FLOPS_PER_LINE * line_updates("clements", n)
        rate = flops / t
        goal = f"≤ {fmt_time(GOAL[n])}" if n in GOAL else ""
        lines_n = line_updates("clements", n)
        rows.append(f"| {n} | {fmt_time(t)} | {lines_n:,} | {rate / 1e9:.2f} | {100 * rate / peak:.0f} % | "
                    f"{fmt_time(flops / peak)} | {BYTES_PER_LINE * lines_n / t / 1e9:.0f} | {count} | {goal} |")

    lines = [
        "## The decomposition kernel against the flop limit",
        "",
        f"The Clements kernel `decompose_many(u[None], \"clements\")` on one Haar unitary (`default_rng({args.seed})`), "
        "median of the timed calls after a first (compiling) call and warm-up calls. Its arithmetic is counted "
        f"exactly: the lines its steps rotate (`photocomp.compiler.decompose.line_updates`), {FLOPS_PER_LINE} "
        "real floating-point operations each. The limit is one core's rate on dense complex arithmetic, a "
        f"{GEMM_N} × {GEMM_N} complex128 matrix product on one BLAS thread: **{peak / 1e9:.1f} GFLOP/s** here "
        "(the kernel is one chain of dependent steps and runs on one core). The time includes the host's "
        "phase extraction, so the kernel's rate is a lower bound for the nulling alone; \"at the limit\" is "
        "the time its arithmetic would take at the matrix product's rate. Each rotated line also moves "
        f"{BYTES_PER_LINE} bytes (two complex128 entries read and written): the GB/s column is that traffic, "
        "which stays in the caches (a 256 × 256 matrix is 1 MiB).",
        "",
        "| N | kernel | lines rotated | GFLOP/s | of the limit | at the limit | GB/s moved | timed calls | goal |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|:--|",
        *rows,
    ]
    return _report.finish(lines, load0, _report.reproduce_command("benchmarks/kernel_roofline.py", argv),
                          args.out, BEGIN, END)


if __name__ == "__main__":
    raise SystemExit(main())
