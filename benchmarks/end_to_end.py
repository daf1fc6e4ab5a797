"""End to end: what users call, timed: ``photocomp.compile``, a fresh process, ``photocomp demo``.

Warm compile (in this process, after a first call and warm-up calls):

* ``pc.compile(W, "clements-N")`` with the target's default pipeline for two
  kinds of ``W`` at every ``--sizes`` N: a real Gaussian N x N matrix
  (``default_rng(seed).normal``), compiled as an svd program (V mesh,
  attenuators, U mesh: two meshes per tile), and a Haar unitary
  (``pc.haar_unitary(N, default_rng(seed))``), compiled as a unitary program
  (one mesh). The median wall time of the timed calls stands next to the
  decomposition kernel alone, ``decompose_many(u[None], "clements")`` on the
  Haar unitary (median over its own timed calls), and their ratio; the svd
  program is held against two kernel calls, since it decomposes two meshes;
* where the time goes: the median of each pass's wall time
  (``prog.report.records``) and of the time outside the passes (the driver:
  scaling, the dense matrix of the program, the summary).

Each measurement makes one first call (jit compilation, untimed), up to
``--warmup`` untimed calls within a quarter of ``--budget-s``, then up to
``--repeats`` timed calls, which stop once their total would pass the budget
(after ``_report.MIN_TIMED`` = 3 timed calls at least, or ``--repeats`` if fewer).
At each N the timed calls of the two compiles and of the kernel go in rounds,
one call of each per round (``_report.interleaved``), so the ratios compare
times taken over the same stretch of a machine whose load may change.

Cold start (each sample a fresh ``sys.executable`` process, median over
``--cold-repeats``), with the compilation cache off (``PHOTOCOMP_CACHE_DIR=""``)
and with a warm cache (a temporary cache directory, filled by a first run
whose times are shown too):

* the interpreter alone (``python -c pass``, process wall time), the yardstick;
* ``import photocomp``, timed inside the process, and of it ``import ml_dtypes``
  (a JAX dependency that registers its number types' loops with NumPy's
  ufuncs; its version is named), timed after ``import numpy`` in a process of
  its own;
* ``import photocomp`` and a first ``pc.compile`` of a 64 x 64 real Gaussian
  matrix onto ``pace-64``, timed inside the process; the process turns the
  cache on the way a library user does, ``pc.enable_compilation_cache()``;
  with the number of XLA programs that compile builds, how many of them were
  read from the cache, and the time JAX spent compiling or reading them
  (its ``/jax/core/compile/backend_compile_duration`` and
  ``/jax/compilation_cache/cache_hits`` events);
* ``photocomp demo --quiet``, the console script of this environment, process
  wall time (the command line turns the cache on by itself).

Usage::

    python benchmarks/end_to_end.py --out benchmarks/README.md
    python benchmarks/end_to_end.py --quick        # smoke run: N = 64, 128, one cold repeat; writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402
from _report import MIN_TIMED, fmt_time, interleaved  # noqa: E402

import photocomp as pc  # noqa: E402
from photocomp.compiler.decompose import decompose_many  # noqa: E402
from photocomp.io.cache import CACHE_ENV  # noqa: E402

BEGIN = "<!-- end_to_end:begin -->"
END = "<!-- end_to_end:end -->"
SIZES = [64, 128, 256, 512, 1024]
QUICK_SIZES = [64, 128]
COLD_TARGET = "pace-64"
COLD_N = 64
CHILD_TIMEOUT_S = 600.0
KINDS = (("gaussian", "real Gaussian", "svd", 2), ("haar", "Haar unitary", "unitary", 1))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- warm: in this process ------------------------------------------------------------------------


def test_matrix(kind: str, n: int, seed: int) -> np.ndarray:
    if kind == "gaussian":
        return np.random.default_rng(seed).normal(size=(n, n))
    return pc.haar_unitary(n, np.random.default_rng(seed))


def measure_warm(n: int, seed: int, repeats: int, warmup: int, budget_s: float) -> dict:
    """End-to-end compiles of both kinds of matrix onto ``clements-n`` and the decomposition kernel alone,
    timed in rounds (:func:`_report.interleaved`): the ratios compare times taken over the same stretch."""
    target = f"clements-{n}"
    out: dict = {"n": n, "target": target}
    mats = {kind: test_matrix(kind, n, seed) for kind, _, _, _ in KINDS}
    fns = {kind: (lambda w=w: pc.compile(w, target)) for kind, w in mats.items()}
    u = np.asarray(test_matrix("haar", n, seed), dtype=np.complex128)[None]
    fns["kernel"] = lambda: decompose_many(u, "clements")
    runs = interleaved(fns, repeats=repeats, warmup=warmup, budget_s=budget_s)
    for kind, _, circuit, _ in KINDS:
        r = runs[kind]
        progs = r["results"]
        if any(p.circuit != circuit for p in progs):
            raise RuntimeError(f"{kind} matrix on {target}: expected a {circuit} program, got {progs[0].circuit}")
        specs = [rec.spec for rec in progs[0].report.records]
        passes = {s: statistics.median(p.report.records[i].wall_s for p in progs) for i, s in enumerate(specs)}
        outside = statistics.median(t - p.report.total_s for t, p in zip(r["times"], progs))
        out[kind] = {
            "median": statistics.median(r["times"]), "first": r["first"], "runs": len(r["times"]),
            "pipeline": progs[0].pipeline, "passes": passes, "outside": outside,
            "error": max(float(p.report.summary["matrix_error"]) for p in progs),
        }
        log(f"{target} {kind}: {fmt_time(out[kind]['median'])} median of {len(r['times'])} "
            f"(first call {fmt_time(r['first'])})")
    r = runs["kernel"]
    out["kernel"] = {"median": statistics.median(r["times"]), "runs": len(r["times"])}
    log(f"{target} kernel: {fmt_time(out['kernel']['median'])} median of {len(r['times'])}")
    return out


# ---- cold: fresh processes ------------------------------------------------------------------------

IMPORT_CHILD = textwrap.dedent("""\
    import json, time
    t0 = time.perf_counter()
    import photocomp
    print(json.dumps({"import_s": time.perf_counter() - t0}))
""")

ML_DTYPES_CHILD = textwrap.dedent("""\
    import json, time
    import numpy
    t0 = time.perf_counter()
    import ml_dtypes
    print(json.dumps({"import_s": time.perf_counter() - t0, "version": ml_dtypes.__version__}))
""")

COMPILE_CHILD = textwrap.dedent("""\
    import json, sys, time
    t0 = time.perf_counter()
    import photocomp as pc
    t1 = time.perf_counter()
    import jax.monitoring
    import numpy as np
    cache = pc.enable_compilation_cache()
    xla, hits = [], []  # the programs' XLA compile (or cache read) times; cache hits
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: xla.append(secs) if event == "/jax/core/compile/backend_compile_duration" else None)
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(1) if event == "/jax/compilation_cache/cache_hits" else None)
    w = np.random.default_rng(int(sys.argv[1])).normal(size=(int(sys.argv[2]), int(sys.argv[2])))
    t2 = time.perf_counter()
    prog = pc.compile(w, sys.argv[3])
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "compile_s": t3 - t2, "cache": None if cache is None else str(cache),
                      "error": float(prog.report.summary["matrix_error"]), "xla_programs": len(xla),
                      "xla_s": sum(xla), "cache_hits": len(hits)}))
""")


def console_script() -> list[str]:
    """The ``photocomp`` console script next to this interpreter (``python -m photocomp`` where there is none)."""
    script = Path(sys.executable).parent / "photocomp"
    return [str(script)] if script.is_file() and os.access(script, os.X_OK) else [sys.executable, "-m", "photocomp"]


def child_env(cache_dir: str) -> dict:
    """This environment with the photocomp cache at ``cache_dir`` ("" turns it off) and no JAX cache of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)
    env[CACHE_ENV] = cache_dir
    return env


def run_child(cmd: list[str], env: dict, cwd: str) -> tuple[float, dict]:
    """Run ``cmd``; its wall time and the JSON object on its last output line (empty if there is none)."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    lines = proc.stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        data = {}
    return wall, data if isinstance(data, dict) else {}


def cold_sample(env: dict, cwd: str, seed: int, want_cache: str | None) -> dict:
    """One sample of every cold-start quantity, each in a fresh process."""
    py = sys.executable
    s = {"python": run_child([py, "-c", "pass"], env, cwd)[0]}
    s["import"] = run_child([py, "-c", IMPORT_CHILD], env, cwd)[1]["import_s"]
    # JAX imports ml_dtypes, whose import registers its number types' loops with NumPy's ufuncs
    s["ml_dtypes"] = run_child([py, "-c", ML_DTYPES_CHILD], env, cwd)[1]["import_s"]
    _, d = run_child([py, "-c", COMPILE_CHILD, str(seed), str(COLD_N), COLD_TARGET], env, cwd)
    if d.get("cache") != want_cache:
        raise RuntimeError(f"the compile process used the cache {d.get('cache')!r}, not {want_cache!r}")
    s["import_compile"], s["compile"], s["error"] = d["import_s"] + d["compile_s"], d["compile_s"], d["error"]
    s["xla_programs"], s["xla_s"], s["cache_hits"] = d["xla_programs"], d["xla_s"], d["cache_hits"]
    out = os.path.join(cwd, "demo.phases.npz")
    s["demo"] = run_child(console_script() + ["demo", "--quiet", "-o", out], env, cwd)[0]
    return s


def measure_cold(seed: int, repeats: int) -> dict:
    res: dict = {}
    with tempfile.TemporaryDirectory(prefix="photocomp-e2e-") as tmp:
        cache = os.path.join(tmp, "xla")
        cases = (("off", "", None, repeats), ("fill", cache, cache, 1), ("warm", cache, cache, repeats))
        for name, cache_dir, want, count in cases:
            samples = []
            for i in range(count):
                samples.append(cold_sample(child_env(cache_dir), tmp, seed, want))
                log(f"cold start, cache {name} ({i + 1}/{count}): " + ", ".join(
                    f"{k} {fmt_time(v)}" for k, v in samples[-1].items() if k not in ("error", "xla_programs", "cache_hits"))
                    + f", XLA programs {samples[-1]['xla_programs']} ({samples[-1]['cache_hits']} from the cache)")
            res[name] = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
            res[name]["runs"] = count
        res["cache_files"] = sum(len(files) for _, _, files in os.walk(cache))
    return res


# ---- the report -----------------------------------------------------------------------------------


def warm_table(rows: list[dict]) -> list[str]:
    lines = ["| matrix | program | N | end to end | decomposition kernel | end to end / (calls × kernel) | "
             "clements pass | matrix error | timed calls (compile, kernel) |",
             "|:--|:--|--:|--:|--:|--:|--:|--:|--:|"]
    for kind, label, circuit, calls in KINDS:
        for r in rows:
            e, k = r[kind], r["kernel"]
            lines.append(
                f"| {label} | {circuit} | {r['n']} | {fmt_time(e['median'])} | {fmt_time(k['median'])} | "
                f"{e['median'] / (calls * k['median']):.2f} ({calls} call{'s' if calls > 1 else ''}) | "
                f"{fmt_time(e['passes'].get('clements'))} | "
                f"{e['error']:.1e} | {e['runs']}, {k['runs']} |")
    return lines


def pass_table(rows: list[dict], kind: str) -> list[str]:
    specs = list(rows[0][kind]["passes"])
    lines = ["| N | " + " | ".join(specs) + " | outside the passes | end to end |",
             "|--:|" + "--:|" * (len(specs) + 2)]
    for r in rows:
        e = r[kind]

        def cell(t, total=e["median"]):
            return f"{fmt_time(t)} ({100 * t / total:.0f} %)"

        lines.append(f"| {r['n']} | " + " | ".join(cell(e["passes"].get(s, 0.0)) for s in specs)
                     + f" | {cell(max(e['outside'], 0.0))} | {fmt_time(e['median'])} |")
    return lines


def cold_table(c: dict) -> list[str]:
    off, fill, warm = c["off"], c["fill"], c["warm"]

    def row(label, key, extra=None):
        cells = []
        for d in (off, fill, warm):
            cell = fmt_time(d[key])
            if extra is not None:
                cell += f" (compile {fmt_time(d[extra])})"
            cells.append(cell)
        return f"| {label} | " + " | ".join(cells) + " |"

    return [
        f"| quantity | cache off (median of {off['runs']}) | empty cache, first run (writes it) | "
        f"warm cache (median of {warm['runs']}) |",
        "|:--|--:|--:|--:|",
        row("interpreter start, `python -c pass` (process wall time)", "python"),
        row("`import photocomp` (in the process)", "import"),
        row(f"of which `import ml_dtypes` {_ml_dtypes_version()} (a JAX dependency; after `import numpy`, in a "
            "process of its own)", "ml_dtypes"),
        row(f"`import photocomp` + first `pc.compile` of a {COLD_N}x{COLD_N} real Gaussian matrix onto "
            f"`{COLD_TARGET}` (in the process)", "import_compile", "compile"),
        "| XLA programs that first `pc.compile` builds, of them read from the cache (XLA compile and cache "
        "read time) | "
        + " | ".join(f"{d['xla_programs']:g}, {d['cache_hits']:g} from the cache ({fmt_time(d['xla_s'])})"
                     for d in (off, fill, warm)) + " |",
        row("`photocomp demo --quiet` (process wall time)", "demo"),
    ]


def _ml_dtypes_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ml_dtypes")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def report(rows, cold, args, elapsed_s) -> list[str]:
    lines = ["## End to end", ""]
    if rows:
        pipes = {kind: rows[0][kind]["pipeline"] for kind, *_ in KINDS}
        low = min(MIN_TIMED, args.repeats)
        timed = (f"{args.repeats} timed calls" if low == args.repeats else
                 f"{low} to {args.repeats} timed calls (more than {low} while their total, first call included, "
                 f"stays within {args.budget_s:g} s per matrix and N)")
        lines += [
            "### Warm compile",
            "",
            f"`pc.compile(W, \"clements-N\")` with the target's default pipeline, in one process, after a first "
            f"call (jit compilation) and up to {args.warmup} warm-up call(s): median wall time of {timed}. W is a "
            "real Gaussian N×N "
            f"matrix (`default_rng({args.seed}).normal`), compiled as an svd program (`{pipes['gaussian']}`: a V "
            f"mesh, attenuators and a U mesh), or a Haar unitary (`pc.haar_unitary(N, default_rng({args.seed}))`), "
            f"compiled as a unitary program (`{pipes['haar']}`: one mesh). The decomposition kernel is "
            "`decompose_many(u[None], \"clements\")` on the Haar unitary alone, timed the same way; at each N the "
            "timed calls of the two compiles and the kernel go in rounds, one call of each per round, so that "
            "all three are timed over the same stretch of the machine's time. The ratio "
            "divides the end-to-end time by the kernel calls the program needs: two for the svd program (its U "
            "and V meshes are decomposed; the kernel's time does not depend on the matrix), one for the unitary "
            "program. \"clements pass\" is that pass's median wall time inside the compile; \"matrix error\" "
            "is the largest `report.summary[\"matrix_error\"]` of the timed compiles, so a fast but wrong "
            "compile cannot hide (the `quantize` pass of the default pipeline, phases rounded to the DAC's bits, sets "
            "it: without that pass it is at rounding level).",
            "",
        ]
        lines += warm_table(rows)
        for kind, label, circuit, _ in KINDS:
            lines += ["", f"Where the time goes, {label} (the {circuit} program): median wall time of each pass "
                      "(`prog.report.records`) and of the time outside the passes (end to end less the passes' "
                      "sum: scaling, the program's dense matrix, the summary), with its share of the median end "
                      "to end time.", ""]
            lines += pass_table(rows, kind)
        lines.append("")
    if cold is not None:
        lines += [
            "### Cold start",
            "",
            "Each sample is a fresh process of this environment's interpreter (`sys.executable`), median "
            f"over {args.cold_repeats} sample(s). Cache off: `PHOTOCOMP_CACHE_DIR=\"\"`, every process compiles "
            "its XLA programs. Warm cache: `PHOTOCOMP_CACHE_DIR` set to a temporary directory that one first run "
            f"of each process filled ({cold['cache_files']} files); the middle column is that first run. The "
            "compile process turns the cache on as a library user does, with `pc.enable_compilation_cache()`; "
            "`photocomp demo` (the console script; a 100x80 Gaussian matrix onto `pace-64`, written, reloaded "
            "and run) turns it on by itself. In-process times leave the interpreter's start out.",
            "",
        ]
        lines += cold_table(cold)
        lines.append("")
    lines.append(f"The whole run took {elapsed_s / 60:.1f} min.")
    return lines


def reproduce(args) -> str:
    cmd = (f"python benchmarks/end_to_end.py --sizes {' '.join(map(str, args.sizes))} --repeats {args.repeats} "
           f"--warmup {args.warmup} --budget-s {args.budget_s:g} --cold-repeats {args.cold_repeats} "
           f"--seed {args.seed}")
    return cmd + (" --no-warm" if args.no_warm else "") + (" --no-cold" if args.no_cold else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help=f"N of the clements-N targets (default {' '.join(map(str, SIZES))}; "
                         f"with --quick {' '.join(map(str, QUICK_SIZES))})")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 11; with --quick 3)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed calls after the first, within a quarter of the budget (default %(default)s)")
    ap.add_argument("--budget-s", type=float, default=60.0,
                    help="time budget of one measurement (one matrix or the kernel at one N), s (default %(default)s)")
    ap.add_argument("--cold-repeats", type=int, default=None,
                    help="fresh processes per cold-start quantity and cache setting (default 3; with --quick 1)")
    ap.add_argument("--seed", type=int, default=2026, help="seed of the matrices (default %(default)s)")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm compiles")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold starts")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: N = 64 128, 3 timed calls, 1 cold repeat (explicit options still apply)")
    ap.add_argument("--out", type=Path, default=None,
                    help="README to write the section into (between its markers); without it nothing is written")
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = QUICK_SIZES if args.quick else SIZES
    if args.repeats is None:
        args.repeats = 3 if args.quick else 11
    if args.cold_repeats is None:
        args.cold_repeats = 1 if args.quick else 3
    if min(args.sizes) < 2 or args.repeats < 1 or args.warmup < 0 or args.budget_s <= 0 or args.cold_repeats < 1:
        ap.error("sizes must be >= 2, --repeats and --cold-repeats >= 1, --warmup >= 0 and --budget-s > 0")
    if args.no_warm and args.no_cold:
        ap.error("nothing to run: --no-warm and --no-cold together")

    load0 = _report.load_average()
    t0 = time.perf_counter()
    rows = [] if args.no_warm else [measure_warm(n, args.seed, args.repeats, args.warmup, args.budget_s)
                                    for n in args.sizes]
    cold = None if args.no_cold else measure_cold(args.seed, args.cold_repeats)
    lines = report(rows, cold, args, time.perf_counter() - t0)
    return _report.finish(lines, load0, reproduce(args), args.out, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
