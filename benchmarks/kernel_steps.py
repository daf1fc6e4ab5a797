"""What one nulling step of the decomposition kernel costs: a fixed part per step and a part per rotated line.

The Clements nulling is one chain of N(N-1)/2 dependent steps (docs/design.md), so its time is
``steps x (fixed + lines x per_line)``. This script measures both parts on the machine, for the two
directions a step takes and two storage layouts of the matrix:

* ``right``: a column pair rotated down the rows (strided: one pair of entries per row);
* ``left``: a row pair rotated along the columns (contiguous);
* ``complex128``: the kernel's layout, rows of complex entries (odd row length, as the kernel keeps it);
* ``split float64``: the real and imaginary parts in planes of their own, the rotation in real arithmetic.

Each probe runs N(N-1)/2 steps in one ``lax.fori_loop``, built as the kernel's loop body is (the
stripe's ``dynamic_slice``, the rotation, the in-place ``dynamic_update_slice``, the look-ahead read of
the next pair and its coefficients, with the kernel's own ``step_rotation`` and ``rotate_lines``), once with a
stripe of ``--short`` lines and once with N lines. The difference gives the cost per line, the rest the
fixed cost per step. All probes are timed in rounds (``_report.interleaved``), so their ratios come from
the same stretch of the machine's time.

The last column is the time ``steps`` of that kind would take with the kernel's mean stripe length
(``line_updates / steps``). The kernel runs half its steps each way, so its floor in one layout is the
mean of the two directions' rows.

Usage::

    python benchmarks/kernel_steps.py --out benchmarks/README.md
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
import jax.numpy as jnp  # noqa: E402
from _report import fmt_time, interleaved  # noqa: E402
from jax import lax  # noqa: E402

from photocomp.compiler.decompose import line_updates, rotate_lines, step_rotation  # noqa: E402

BEGIN = "<!-- kernel-steps:begin -->"
END = "<!-- kernel-steps:end -->"


def _split_coefficients(a, b, left: bool):
    """The kernel's coefficients (``step_rotation``) of complex entries, as six reals: ec, es (re, im), c, s."""
    cf = step_rotation(a, b, left)
    return jnp.stack([cf[0].real, cf[0].imag, cf[1].real, cf[1].imag, cf[2].real, cf[3].real])


def _split_rotate(cf, x0r, x0i, x1r, x1i):
    """``rotate_lines`` in real arithmetic: new0 = ec x0 - s x1, new1 = es x0 + c x1."""
    ecr, eci, esr, esi, c, s = cf
    return (ecr * x0r - eci * x0i - s * x1r, ecr * x0i + eci * x0r - s * x1i,
            esr * x0r - esi * x0i + c * x1r, esr * x0i + esi * x0r + c * x1i)


def probe(n: int, length: int, direction: str, layout: str):
    """A jitted loop of n(n-1)/2 steps of one direction and layout, each rotating ``length`` lines."""
    steps = n * (n - 1) // 2
    right = direction == "right"

    def complex_body(j, carry):
        u, cf = carry
        k = j % (n - 2)
        if right:
            lines = lax.dynamic_slice(u, (0, k), (length, 2))
            new0, new1 = rotate_lines(cf, lines[:, 0], lines[:, 1])
            u = lax.dynamic_update_slice(u, jnp.stack([new0, new1], 1), (0, k))
            pair = lax.dynamic_slice(u, (n - 2 - k, k), (1, 2))[0]
        else:
            lines = lax.dynamic_slice(u, (k, n - length), (2, length))
            new0, new1 = rotate_lines(cf, lines[0], lines[1])
            u = lax.dynamic_update_slice(u, jnp.stack([new0, new1], 0), (k, n - length))
            pair = lax.dynamic_slice(u, (k, k), (2, 1))[:, 0]
        return u, step_rotation(pair[0], pair[1], not right)

    def split_body(j, carry):  # u: (n, 2, n + 1), row r's real part then its imaginary part
        u, cf = carry
        k = j % (n - 2)
        if right:
            x = lax.dynamic_slice(u, (0, 0, k), (length, 2, 2))
            n0r, n0i, n1r, n1i = _split_rotate(cf, x[:, 0, 0], x[:, 1, 0], x[:, 0, 1], x[:, 1, 1])
            new = jnp.stack([jnp.stack([n0r, n1r], 1), jnp.stack([n0i, n1i], 1)], 1)
            u = lax.dynamic_update_slice(u, new, (0, 0, k))
            p = lax.dynamic_slice(u, (n - 2 - k, 0, k), (1, 2, 2))[0]
            a, b = lax.complex(p[0, 0], p[1, 0]), lax.complex(p[0, 1], p[1, 1])
        else:
            x = lax.dynamic_slice(u, (k, 0, n - length), (2, 2, length))
            n0r, n0i, n1r, n1i = _split_rotate(cf, x[0, 0], x[0, 1], x[1, 0], x[1, 1])
            new = jnp.stack([jnp.stack([n0r, n0i]), jnp.stack([n1r, n1i])])
            u = lax.dynamic_update_slice(u, new, (k, 0, n - length))
            p = lax.dynamic_slice(u, (k, 0, k), (2, 2, 1))[:, :, 0]
            a, b = lax.complex(p[0, 0], p[0, 1]), lax.complex(p[1, 0], p[1, 1])
        return u, _split_coefficients(a, b, not right)

    @jax.jit
    def run(u):
        if layout == "complex128":
            return lax.fori_loop(0, steps, complex_body, (u, step_rotation(u[0, 0], u[0, 1], False)))[0]
        return lax.fori_loop(0, steps, split_body, (u, _split_coefficients(
            lax.complex(u[0, 0, 0], u[0, 1, 0]), lax.complex(u[0, 0, 1], u[0, 1, 1]), False)))[0]

    return run


def matrix(n: int, layout: str, seed: int):
    """A random (n, n + 1) matrix of entries of size about 0.1 (the rotations keep it bounded), in ``layout``."""
    rng = np.random.default_rng(seed)
    u = (rng.normal(size=(n, n + 1)) + 1j * rng.normal(size=(n, n + 1))) * 0.05
    if layout == "complex128":
        return jnp.asarray(u)
    return jnp.asarray(np.stack([u.real, u.imag], 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="matrix size (the steps are n(n-1)/2)")
    ap.add_argument("--short", type=int, default=8, help="lines per step of the short stripe")
    ap.add_argument("--repeats", type=int, default=9, help="timed calls per probe (at most)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=20.0, help="time budget of the timed calls per probe")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.n < 4:
        ap.error(f"--n must be an integer >= 4; got {args.n}")
    if not 1 <= args.short < args.n:
        ap.error(f"--short must be an integer in [1, n); got {args.short}")
    load0 = _report.load_average()
    n, steps = args.n, args.n * (args.n - 1) // 2
    mean_lines = line_updates("clements", n) / steps
    kinds = [(d, lay) for d in ("right", "left") for lay in ("complex128", "split float64")]
    fns = {}
    with jax.enable_x64(True):
        for d, lay in kinds:
            u = matrix(n, lay, args.seed)
            for length in (args.short, n):
                run = probe(n, length, d, lay)
                fns[(d, lay, length)] = lambda f=run, u=u: jax.block_until_ready(f(u))
        runs = interleaved(fns, repeats=args.repeats, warmup=args.warmup, budget_s=args.budget_s)
    rows = []
    for d, lay in kinds:
        short, full = (statistics.median(runs[(d, lay, m)]["times"]) for m in (args.short, n))
        per_line = (full - short) / ((n - args.short) * steps)
        fixed = short / steps - args.short * per_line
        rows.append(f"| {d} | {lay} | {fixed * 1e9:.0f} | {per_line * 1e9:.2f} | {fmt_time(short)} | "
                    f"{fmt_time(full)} | {fmt_time(steps * (fixed + mean_lines * per_line))} |")
    lines = [
        "## What a nulling step costs",
        "",
        f"N = {n}: {steps:,} dependent steps, as many as the Clements kernel runs, in one loop per probe "
        f"(`benchmarks/kernel_steps.py`), each rotating {args.short} lines, then {n}. The difference gives the "
        "cost per rotated line, the rest the fixed cost per step (the loop's own work, the slices, the "
        "look-ahead read and the coefficients). `complex128` is the kernel's layout; `split float64` keeps "
        "real and imaginary parts in planes of their own and rotates in real arithmetic. The last column "
        f"is {steps:,} steps of that kind at the kernel's mean stripe of {mean_lines:.0f} lines "
        "(`line_updates / steps`). The kernel takes half its steps each way, so its floor in one layout is "
        "the mean of that layout's two rows.",
        "",
        f"| direction | layout | fixed ns per step | ns per line | {args.short} lines | {n} lines | "
        "kernel's mean stripe |",
        "|:--|:--|--:|--:|--:|--:|--:|",
        *rows,
    ]
    return _report.finish(lines, load0, _report.reproduce_command("benchmarks/kernel_steps.py", argv),
                          args.out, BEGIN, END)


if __name__ == "__main__":
    raise SystemExit(main())
