"""Time unitary decompositions: photocomp against the NumPy reference and public peers.

Every implementation decomposes the same Haar-random unitaries (fixed seeds)
at each size N. A cell of the table is the median wall time of repeated calls;
photocomp's first call (which includes jit compilation) is left out of the
median and reported in its own column. Each implementation's result is turned
back into a dense unitary and the largest entry of |U - U_hat| is reported, so
a fast but wrong result cannot hide.

Implementations (the peers only where they import):

* photocomp ``decompose(U, "clements")`` and ``decompose(U, "reck")``;
* photocomp batched: one ``decompose`` call on a stack of unitaries (throughput),
  for both kinds;
* :mod:`photocomp.core.reference`, the plain float64 NumPy loops;
* the ``interferometer`` package: ``square_decomposition`` (Clements) and
  ``triangle_decomposition`` (Reck);
* Strawberry Fields 0.23's ``decompositions`` module: ``rectangular``
  (Clements, stops before moving the middle phase screen out) and
  ``triangular`` (Reck). The module is loaded from its file on its own,
  because ``import strawberryfields`` as a whole no longer works with current
  SciPy.

Each (implementation, N) cell runs in a fresh child process. A call that runs
past ``--budget-s`` is stopped; that cell and every larger N of that
implementation are shown as "—" (skipped over budget). After the first call,
up to ``--warmup`` untimed calls let caches, the allocator and the page tables
settle (the first few calls after a compile run noticeably slower and would
dominate a median of few repeats), within a quarter of the budget; the timed
repeats then stop once their total would pass the budget. photocomp's jit
compile time is its first call minus the median of the timed calls, per N.

The whole-model row compiles a ``--whole-model`` x ``--whole-model`` real
Gaussian matrix onto ``--whole-target`` with ``photocomp.compile`` (default
pipeline) in a fresh process, once per entry of ``--whole-devices`` (the
number of JAX host devices the tiles are sharded over, set with
``--xla_force_host_platform_device_count``), and reports its wall time (jit
compilation included: a first compile), the time of each pass, the peak
resident memory of the process and the compiled matrix's error. Its table is a
section of its own in benchmarks/README.md; ``--only whole-model`` runs only it,
in the project's own environment (no peers needed)::

    python benchmarks/decompositions.py --only whole-model --whole-model 4096 --whole-devices 1 2

Usage (``benchmarks/run.sh`` builds an environment with the peers)::

    python benchmarks/decompositions.py --sizes 16 32 64 128 256 512 1024 \\
        --repeats 11 --warmup 2 --budget-s 90 --out benchmarks/README.md --plot benchmarks/decompositions.png
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow running from a checkout without installing
    sys.path.insert(0, str(ROOT))

from photocomp.core import reference  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402
from _report import DASH, fmt_time  # noqa: E402

BEGIN = "<!-- decompositions:begin -->"
END = "<!-- decompositions:end -->"
WHOLE_BEGIN = "<!-- whole_model:begin -->"
WHOLE_END = "<!-- whole_model:end -->"

# name -> (mesh family, is jit-compiled)
IMPLEMENTATIONS = {
    "photocomp clements": ("clements", True),
    "photocomp reck": ("reck", True),
    "numpy reference clements": ("clements", False),
    "numpy reference reck": ("reck", False),
    "interferometer square (Clements)": ("clements", False),
    "interferometer triangle (Reck)": ("reck", False),
    "strawberryfields rectangular (Clements)": ("clements", False),
    "strawberryfields triangular (Reck)": ("reck", False),
}
SF_BASELINE = {
    "clements": "strawberryfields rectangular (Clements)",
    "reck": "strawberryfields triangular (Reck)",
}
BATCHED = {"photocomp clements, batched": "clements", "photocomp reck, batched": "reck"}


# --------------------------------------------------------------------------
# Test matrices and reconstruction
# --------------------------------------------------------------------------


def test_unitary(n: int, seed: int) -> np.ndarray:
    """The Haar unitary every implementation decomposes at size ``n``."""
    return reference.haar_unitary(n, np.random.default_rng([seed, n]))


def test_batch(batch: int, n: int, seed: int) -> np.ndarray:
    """``batch`` Haar unitaries of size ``n`` for the throughput measurement."""
    rng = np.random.default_rng([seed, n, batch])
    return np.stack([reference.haar_unitary(n, rng) for _ in range(batch)])


def _left(u: np.ndarray, k: int, t: np.ndarray) -> None:
    """In place ``u <- t @ u`` on rows (k, k+1)."""
    u[k : k + 2, :] = t @ u[k : k + 2, :]


def _sf_rectangular_unitary(n, result):
    """Rebuild U from ``(tilist, diags, tlist)``: ``T_1^-1 .. T_m^-1 D Ti_r^-1 .. Ti_1^-1``."""
    tilist, diags, tlist = result
    u = np.eye(n, dtype=np.complex128)
    for m, _, theta, phi, _ in tilist:  # Ti^-1 = T, the first one meets light first
        _left(u, int(m), reference.mzi_matrix(theta, phi))
    u = np.asarray(diags)[:, None] * u
    for m, _, theta, phi, _ in reversed(tlist):
        _left(u, int(m), reference.mzi_matrix(theta, phi).conj().T)
    return u


def _sf_triangular_unitary(n, result):
    """Rebuild U from ``(tlist, diags, None)``, tlist as returned: ``T_1^-1 .. T_m^-1 D``."""
    tlist, diags, _ = result
    u = np.diag(np.asarray(diags, dtype=np.complex128))
    for m, _, theta, phi, _ in tlist:  # returned last-nulled first
        _left(u, int(m), reference.mzi_matrix(theta, phi).conj().T)
    return u


def _interferometer_unitary(n, itf):
    ops = []
    for bs in itf.BS_list:
        if bs.mode2 != bs.mode1 + 1:
            raise ValueError(f"unexpected beam splitter on modes {bs.mode1}, {bs.mode2}")
        ops.append((bs.mode1 - 1, bs.theta, bs.phi))
    return reference.mesh_product(n, ops, np.asarray(itf.output_phases, dtype=np.float64))


def _photocomp_unitary(n, phases):
    ops = zip(phases.layout.pairs, phases.theta, phases.phi)
    return reference.mesh_product(n, ops, phases.out_phase)


def load_strawberryfields_decompositions():
    """Strawberry Fields' ``decompositions.py`` as a module of its own, or None.

    Only that file is executed (it needs numpy, scipy and thewalrus), not the
    package's ``__init__``.
    """
    spec = importlib.util.find_spec("strawberryfields")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "decompositions.py"
    if not path.is_file():
        return None
    module_spec = importlib.util.spec_from_file_location("_sf_decompositions", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # an optional dependency is missing or broken
        print(f"# strawberryfields decompositions not usable: {exc!r}", file=sys.stderr)
        return None
    return module


def load(name: str):
    """``(decompose(U) -> result, rebuild(n, result) -> U_hat)`` for one implementation.

    Raises ImportError when the implementation is not available.
    """
    if name.startswith("photocomp"):
        from photocomp.compiler.decompose import decompose

        kind = BATCHED[name] if name in BATCHED else IMPLEMENTATIONS[name][0]
        return (lambda u: decompose(u, kind)), _photocomp_unitary
    if name == "numpy reference clements":
        return reference.clements_reference, lambda n, r: reference.mesh_product(n, *r)
    if name == "numpy reference reck":
        return reference.reck_reference, lambda n, r: reference.mesh_product(n, *r)
    if name.startswith("interferometer"):
        import interferometer

        fn = interferometer.square_decomposition if "square" in name else interferometer.triangle_decomposition
        return fn, _interferometer_unitary
    if name.startswith("strawberryfields"):
        sf = load_strawberryfields_decompositions()
        if sf is None:
            raise ImportError("strawberryfields decompositions unavailable")
        if "rectangular" in name:
            return sf.rectangular, _sf_rectangular_unitary
        return sf.triangular, _sf_triangular_unitary
    raise KeyError(name)


# --------------------------------------------------------------------------
# Measuring one cell in a child process
# --------------------------------------------------------------------------


def _measure_child(conn, name, n, batch, seed, repeats, budget_s, warmup):
    """Child process: load, time, check; report to the parent over ``conn``."""
    try:
        fn, rebuild = load(name)
        u = test_batch(batch, n, seed) if batch else test_unitary(n, seed)
        conn.send(("started", None))
        t = time.perf_counter()
        result = fn(u)
        first = time.perf_counter() - t
        conn.send(("first", first))
        times = []
        spent = first
        last = first
        for _ in range(warmup):  # untimed: caches, allocator and page tables settle
            if spent + last > budget_s / 4:
                break
            t = time.perf_counter()
            fn(u)
            last = time.perf_counter() - t
            spent += last
        while len(times) < repeats and spent + last <= budget_s:
            t = time.perf_counter()
            result = fn(u)
            last = time.perf_counter() - t
            times.append(last)
            spent += last
        if batch:
            # Check the batch against the reference rebuild on a sample of it.
            sample = range(min(batch, 25))
            err = max(
                float(np.max(np.abs(rebuild(n, _take(result, i)) - u[i]))) for i in sample
            )
        else:
            err = float(np.max(np.abs(rebuild(n, result) - u)))
        conn.send(("done", {"first": first, "times": times, "err": err}))
    except ImportError as exc:
        conn.send(("unavailable", repr(exc)))
    except Exception as exc:  # report, the table shows it
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _take(phases, i):
    """Item ``i`` of a batched MeshPhases."""
    import dataclasses

    return dataclasses.replace(
        phases, theta=phases.theta[i], phi=phases.phi[i], out_phase=phases.out_phase[i]
    )


def measure(name, n, *, seed, repeats, budget_s, batch=0, warmup=0, load_timeout_s=600.0):
    """Time one (implementation, N) cell in a fresh process.

    Returns a dict with ``status`` in {"ok", "over", "unavailable", "failed"}
    and, for "ok", ``median`` (s), ``first`` (s, the first call), ``runs`` and
    ``err`` (max |U - U_hat|).
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_measure_child, args=(child, name, n, batch, seed, repeats, budget_s, warmup), daemon=True
    )
    proc.start()
    child.close()

    def receive(timeout):
        if parent.poll(timeout):
            try:
                return parent.recv()
            except EOFError:
                return ("failed", "child exited without a result")
        return None

    try:
        msg = receive(load_timeout_s)
        if msg is None:
            return {"status": "failed", "why": "loading timed out"}
        if msg[0] != "started":
            return _final(msg)
        msg = receive(budget_s)
        if msg is None:
            return {"status": "over", "why": f"first call > {budget_s:g} s"}
        if msg[0] != "first":
            return _final(msg)
        first = msg[1]
        msg = receive(budget_s + first + 120.0)  # repeats stop by themselves at the budget
        if msg is None:
            return {"status": "failed", "why": "no result after timing"}
        out = _final(msg)
        if out["status"] == "ok" and first > budget_s:
            out["over_budget"] = True
        return out
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join(10)
        parent.close()


def _final(msg):
    kind, payload = msg
    if kind == "done":
        times = payload["times"] or [payload["first"]]
        return {
            "status": "ok",
            "median": statistics.median(times),
            "first": payload["first"],
            "runs": len(payload["times"]) or 1,
            # no timed call fitted the budget: the "median" is the first call, compilation included
            "first_only": not payload["times"],
            "err": payload["err"],
        }
    if kind == "unavailable":
        return {"status": "unavailable", "why": payload}
    return {"status": "failed", "why": payload}


# --------------------------------------------------------------------------
# The whole-model compile
# --------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _whole_child(conn, m, target, seed):
    """Child process: compile an m x m real Gaussian matrix once; report time, passes, memory, error."""
    import resource

    try:
        import jax

        import photocomp as pc
        from photocomp.compiler.driver import memory_plan

        w = np.random.default_rng([seed, m]).standard_normal((m, m))
        tgt = pc.get_target(target)
        plan = memory_plan(w.shape, tgt.size)  # the plan the compile makes (the same memory is free)
        baseline = _rss_bytes()
        t = time.perf_counter()
        prog = pc.compile(w, tgt)
        total = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
        conn.send(("done", {
            "total": total,
            "passes": [(r.spec, r.wall_s) for r in prog.report.records],
            "peak": peak,
            "baseline": baseline,
            "matrix_error": float(prog.report.summary["matrix_error"]),
            "fidelity": float(prog.report.summary.get("min_mesh_fidelity", float("nan"))),
            "tiles": prog.n_tiles,
            "strips": len(plan.strips),
            "in_flight": plan.in_flight,
            "devices": jax.device_count(),
            "pipeline": prog.pipeline,
        }))
    except Exception as exc:  # report, the table shows it
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


@contextlib.contextmanager
def host_devices(devices: int):
    """Children spawned inside see ``devices`` JAX host devices (XLA_FLAGS is read by their jax import)."""
    flag = f"--xla_force_host_platform_device_count={devices}"
    saved = os.environ.get("XLA_FLAGS")
    os.environ["XLA_FLAGS"] = ((saved or "") + " " + flag).strip()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["XLA_FLAGS"]
        else:
            os.environ["XLA_FLAGS"] = saved


def measure_whole(m, target, *, seed, devices, timeout_s):
    """Time one whole-model compile in a fresh process with ``devices`` JAX host devices."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_whole_child, args=(child, m, target, seed), daemon=True)
    with host_devices(devices):
        proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            return {"status": "over", "why": f"no result within {timeout_s:g} s"}
        try:
            kind, payload = parent.recv()
        except EOFError:
            return {"status": "failed", "why": "child exited without a result"}
        if kind != "done":
            return {"status": "failed", "why": payload}
        return {"status": "ok", **payload}
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join(10)
        parent.close()


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def fmt_err(e: float) -> str:
    return f"{e:.1e}"


cpu_model = _report.cpu_model
load_average = _report.load_average


def machine_description(load_at_start: float | None = None) -> list[str]:
    return _report.machine_description(
        load_at_start, ("jax", "jaxlib", "numpy", "scipy", "interferometer", "strawberryfields", "thewalrus")
    )


def cell(results, name, n):
    r = results.get((name, n))
    if r is None:
        return DASH
    if r["status"] == "ok":
        return fmt_time(r["median"]) + (" (over budget)" if r.get("over_budget") else "") + first_only(r)
    if r["status"] in ("over", "skipped"):
        return f"{DASH} (skipped over budget)"
    if r["status"] == "unavailable":
        return f"{DASH} (not installed)"
    return f"{DASH} (failed)"


def first_only(r) -> str:
    """A cell's note when its time is the first call alone (compilation included): no timed call fitted."""
    return " (first call only)" if r.get("first_only") else ""


def speedup(results, name, sizes):
    family = IMPLEMENTATIONS[name][0]
    base = SF_BASELINE[family]
    if name == base:
        return "1×"
    for n in sorted(sizes, reverse=True):
        a, b = results.get((name, n)), results.get((base, n))
        if a and b and a["status"] == "ok" and b["status"] == "ok":
            return f"{b['median'] / a['median']:.3g}× (N={n})"
    return DASH


def build_report(results, batched, args, names) -> str:
    sizes = args.sizes
    lines = [
        "## Unitary decompositions",
        "",
        "Median wall time of one decomposition of a Haar-random N×N unitary "
        f"(same matrices for every implementation, seed {args.seed}; up to {args.repeats} "
        f"timed calls after one untimed first call and up to {args.warmup} untimed warm-up calls; "
        f"budget {args.budget_s:g} s per "
        "implementation and size; "
        + (f"{args.threads} BLAS/XLA thread(s) per process" if args.threads > 0 else "library-default threads")
        + "). \"compile\" is photocomp's first call minus its median "
        "(jit compilation, once per N). The speed-up compares with Strawberry Fields' "
        "decomposition of the same mesh (rectangular for Clements rows, triangular for Reck "
        "rows) at the largest N both finished. \"max err\" is the largest max|U − Û| over "
        "all sizes, Û rebuilt from the returned phases.",
        "",
        "Machine:",
        "",
        *machine_description(args.load_at_start),
        "",
    ]
    header = ["implementation"] + [f"N={n}" for n in sizes] + ["compile", "max err", "speed-up vs SF"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|")
    for name in names:
        row = [name] + [cell(results, name, n) for n in sizes]
        ok = [results[(name, n)] for n in sizes if results.get((name, n), {}).get("status") == "ok"]
        comp = [r["first"] - r["median"] for r in ok if not r.get("first_only")]
        if IMPLEMENTATIONS[name][1] and comp:
            row.append(f"{min(comp):.2f}–{max(comp):.2f} s")
        else:
            row.append(DASH)
        row.append(fmt_err(max(r["err"] for r in ok)) if ok else DASH)
        row.append(speedup(results, name, sizes))
        lines.append("| " + " | ".join(row) + " |")

    lines += ["", "Reconstruction error max|U − Û| per size:", ""]
    lines.append("| implementation | " + " | ".join(f"N={n}" for n in sizes) + " |")
    lines.append("|:--|" + "|".join(["--:"] * len(sizes)) + "|")
    for name in names:
        row = [name]
        for n in sizes:
            r = results.get((name, n))
            row.append(fmt_err(r["err"]) if r and r["status"] == "ok" else DASH)
        lines.append("| " + " | ".join(row) + " |")

    lines += ["", "jit compile time of photocomp (first call minus the median of the others):", ""]
    compile_sizes = [n for n in sizes if n >= 256] or sizes[-1:]
    lines.append("| implementation | " + " | ".join(f"N={n}" for n in compile_sizes) + " |")
    lines.append("|:--|" + "|".join(["--:"] * len(compile_sizes)) + "|")
    for name in names:
        if not IMPLEMENTATIONS[name][1]:
            continue
        row = [name]
        for n in compile_sizes:
            r = results.get((name, n))
            timed = r and r["status"] == "ok" and not r.get("first_only")
            row.append(f"{r['first'] - r['median']:.2f} s" if timed else DASH)
        lines.append("| " + " | ".join(row) + " |")

    nb = args.batch_n
    lines += [
        "",
        f"Throughput at N={nb} (unitaries per second). A batched row is one "
        f"`decompose` call on a ({args.batch}, {nb}, {nb}) stack, median over repeats "
        "after the compiling first call and the warm-up calls; its error is checked on the first 25 "
        "unitaries. With several host devices (`--xla_force_host_platform_device_count`, one per core) the "
        "batch is sharded across them, so the nulling runs on every core. The other rows are 1 / (median "
        "time of one call).",
        "",
        "| implementation | unitaries / s | max err |",
        "|:--|--:|--:|",
    ]
    for name in BATCHED:
        for devices in args.batch_devices:
            r = (batched or {}).get((name, devices))
            label = f"{name} ({args.batch}×{nb}×{nb})" + (f", {devices} host devices" if devices > 1 else "")
            if r and r["status"] == "ok":
                lines.append(f"| {label} | {args.batch / r['median']:.4g}{first_only(r)} | {fmt_err(r['err'])} |")
            else:
                lines.append(f"| {label} | {DASH} | {DASH} |")
    for name in names:
        r = results.get((name, nb))
        if r and r["status"] == "ok":
            lines.append(f"| {name} | {1.0 / r['median']:.4g}{first_only(r)} | {fmt_err(r['err'])} |")
        else:
            lines.append(f"| {name} | {DASH} | {DASH} |")

    lines.append("")
    given = f"--sizes {' '.join(str(n) for n in sizes)} --repeats {args.repeats} --budget-s {args.budget_s:g}"
    if args.only:  # photocomp alone needs no peers: the project's own environment runs it
        lines.append(f"Reproduce with `python benchmarks/decompositions.py --only {' '.join(args.only)} {given} "
                     f"--whole-model 0 --out {_report.out_name(args.out)}`.")
    else:
        lines.append(f"Reproduce with `bash benchmarks/run.sh {given} --whole-model 0` "
                     "(it builds `benchmarks/.venv` with the peers).")
    return "\n".join(lines)


def build_whole_report(whole, args) -> str:
    """The whole-model section: one row per entry of ``--whole-devices``, then the machine."""
    m = args.whole_model
    ok = [w for w in whole if w["status"] == "ok"]
    lines = [
        "## Whole-model compile",
        "",
        f"A {m}×{m} real Gaussian matrix (seed {args.seed}) onto "
        f"`{args.whole_target}` with `photocomp.compile` and the target's default pipeline"
        + (f" (`{ok[0]['pipeline']}`)" if ok else "")
        + ", one fresh process per row, timed once (a first compile: jit compilation "
        "included). The tiles are sharded over the JAX host devices of the row; the matrix is compiled "
        "in strips of block rows (`photocomp.compiler.driver.memory_plan`), "
        + (f"{ok[0]['in_flight']} at a time" if ok else "several at a time")
        + " (`STRIPS_IN_FLIGHT`), so the passes' times, each summed over the strips, add up to more "
        "than the total. Peak memory is the process's peak resident set (Python and JAX included; "
        "the process held the stated baseline before compiling).",
        "",
    ]
    passes = list(dict.fromkeys(spec for w in ok for spec, _ in w["passes"]))
    header = ["devices", "tiles", "strips", "total"] + passes + ["peak memory", "baseline", "matrix error"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["--:"] * len(header)) + "|")
    for w in whole:
        if w["status"] != "ok":
            lines.append(f"| {w['requested']} | {DASH} ({w['status']}: {w.get('why', '')}) |")
            continue
        times = dict(w["passes"])
        row = [str(w["devices"]), str(w["tiles"]), str(w["strips"]), fmt_time(w["total"])]
        row += [fmt_time(times[p]) if p in times else DASH for p in passes]
        row += [f"{w['peak'] / 2**30:.2f} GiB", f"{w['baseline'] / 2**30:.2f} GiB", f"{w['matrix_error']:.2e}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Machine:", ""] + _report.machine_description(args.load_at_start) + [
        "",
        f"Reproduce with `python benchmarks/decompositions.py --only whole-model --seed {args.seed} "
        f"--whole-model {m} --whole-target {args.whole_target} --whole-devices "
        + " ".join(str(d) for d in args.whole_devices) + f" --out {_report.out_name(args.out)}` "
        "(the project's own environment; no peers).",
    ]
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Put ``body`` between this script's markers in ``path`` (atomically), keeping the rest."""
    _report.write_section(path, body, BEGIN, END)


def plot(path: Path, results, names, sizes) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name in names:
        pts = [(n, results[(name, n)]["median"]) for n in sizes if results.get((name, n), {}).get("status") == "ok"]
        if not pts:
            continue
        style = "-" if IMPLEMENTATIONS[name][0] == "clements" else "--"
        ax.loglog(*zip(*pts), style, marker="o", label=name)
    ax.set_xlabel("N (modes)")
    ax.set_ylabel("median time per decomposition (s)")
    ax.set_title("Unitary decomposition time (solid: Clements, dashed: Reck)")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(n) for n in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _report.save_figure(fig, path)
    plt.close(fig)


def report_batched(name, devices, r, args) -> None:
    """One line on stderr for a batched measurement."""
    where = f"{args.batch}x{args.batch_n}x{args.batch_n}, {devices} device(s)"
    if r["status"] == "ok":
        print(f"{name} ({where}): {args.batch / r['median']:.4g} unitaries/s, first call {fmt_time(r['first'])}, "
              f"err {fmt_err(r['err'])}", file=sys.stderr)
    else:
        print(f"{name} ({where}): {r['status']} {r.get('why', '')}", file=sys.stderr)


def limit_threads(threads: int) -> None:
    """Make the measured (child) processes use ``threads`` BLAS threads (and single-threaded Eigen in XLA for 1).

    Children are spawned after this and read the variables when they import
    numpy and jax; the parent's own libraries are not affected.
    """
    if threads <= 0:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    eigen = "false" if threads == 1 else "true"
    # XLA ignores every flag after an entry it cannot parse, so only well-formed flags here
    flags = f"--xla_cpu_multi_thread_eigen={eigen}"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=11, help="timed calls per cell (after the first)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed calls after the first, within a quarter of the budget (default %(default)s)")
    parser.add_argument("--budget-s", type=float, default=90.0, help="time budget per implementation and size (s)")
    parser.add_argument("--seed", type=int, default=2016)
    parser.add_argument("--batch", type=int, default=1000, help="unitaries in the throughput batch")
    parser.add_argument("--batch-n", type=int, default=64, help="size of the throughput unitaries")
    parser.add_argument("--batch-devices", type=int, nargs="+", default=[1, 2],
                        help="JAX host devices of each batched throughput run (default %(default)s)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS and XLA threads of each measured process (0: the libraries' defaults)",
    )
    parser.add_argument("--only", nargs="*", default=None, help="run only implementations whose name contains one of these")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "README.md")
    parser.add_argument("--plot", type=Path, default=None, help="write a log-log plot of time vs N here")
    parser.add_argument("--whole-model", type=int, default=4096,
                        help="size M of the M x M whole-model compile (0: skip it)")
    parser.add_argument("--whole-target", default="pace-64", help="target of the whole-model compile")
    parser.add_argument("--whole-devices", type=int, nargs="+", default=[1, 2],
                        help="JAX host devices of each whole-model run")
    parser.add_argument("--whole-timeout-s", type=float, default=1800.0, help="time limit of one whole-model run (s)")
    args = parser.parse_args(argv)
    args.sizes = sorted(set(args.sizes))
    if args.repeats < 1 or args.warmup < 0 or args.budget_s <= 0 or min(args.sizes) < 1:
        parser.error("--repeats must be >= 1, --warmup >= 0, --budget-s > 0 and sizes >= 1")
    if min(args.batch_devices) < 1:
        parser.error("--batch-devices must be >= 1")

    limit_threads(args.threads)
    args.load_at_start = load_average()
    names = [n for n in IMPLEMENTATIONS if not args.only or any(s in n for s in args.only)]
    results = {}
    available = []
    for name in names:
        over = False
        for n in args.sizes:
            if over:
                results[(name, n)] = {"status": "skipped"}
                print(f"{name:42s} N={n:4d} skipped (over budget at a smaller N)", file=sys.stderr)
                continue
            r = measure(name, n, seed=args.seed, repeats=args.repeats, budget_s=args.budget_s, warmup=args.warmup)
            results[(name, n)] = r
            if r["status"] == "unavailable":
                print(f"{name:42s} not available: {r['why']}", file=sys.stderr)
                break
            if r["status"] == "ok":
                print(
                    f"{name:42s} N={n:4d} median {fmt_time(r['median']):>10s} first {fmt_time(r['first']):>10s} "
                    f"runs {r['runs']} err {fmt_err(r['err'])}",
                    file=sys.stderr,
                    flush=True,
                )
                over = r["first"] > args.budget_s or r["median"] > args.budget_s
            else:
                print(f"{name:42s} N={n:4d} {r['status']}: {r.get('why', '')}", file=sys.stderr, flush=True)
                over = r["status"] == "over"
                if r["status"] == "failed":
                    over = True
        if any(results.get((name, n), {}).get("status") not in (None, "unavailable") for n in args.sizes):
            available.append(name)

    batched = {}
    for name, _kind in BATCHED.items():
        if args.only and not any(s in name for s in args.only):
            continue
        for devices in args.batch_devices:
            with host_devices(devices):
                r = measure(name, args.batch_n, seed=args.seed, repeats=args.repeats, budget_s=args.budget_s,
                            batch=args.batch, warmup=args.warmup)
            batched[name, devices] = r
            report_batched(name, devices, r, args)

    whole = []
    if args.whole_model > 0 and (not args.only or any(s in "whole-model" for s in args.only)):
        for devices in args.whole_devices:
            r = measure_whole(args.whole_model, args.whole_target, seed=args.seed, devices=devices,
                              timeout_s=args.whole_timeout_s)
            r["requested"] = devices
            whole.append(r)
            if r["status"] == "ok":
                print(f"whole model {args.whole_model}x{args.whole_model} on {devices} device(s): "
                      f"{fmt_time(r['total'])}, peak {r['peak'] / 2**30:.2f} GiB, "
                      f"matrix error {r['matrix_error']:.2e}", file=sys.stderr, flush=True)
            else:
                print(f"whole model on {devices} device(s): {r['status']} {r.get('why', '')}", file=sys.stderr)

    if results or batched:
        report = build_report(results, batched, args, available)
        print(report)
        if args.out:
            write_section(args.out, report)
            print(f"\nwrote {args.out}", file=sys.stderr)
    if whole:
        report = build_whole_report(whole, args)
        print(report)
        if args.out:
            _report.write_section(args.out, report, WHOLE_BEGIN, WHOLE_END)
            print(f"\nwrote {args.out}", file=sys.stderr)
    if args.plot:
        plot(args.plot, results, available, args.sizes)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
