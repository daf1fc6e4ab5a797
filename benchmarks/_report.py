"""Shared helpers of the benchmark scripts: machine description and README sections."""

from __future__ import annotations

import collections
import datetime
import importlib.metadata
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_average() -> float | None:
    """One-minute load average, or None where the OS does not report it."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def machine_description(load_at_start: float | None = None, dists=("jax", "jaxlib", "numpy")) -> list[str]:
    """Markdown bullet lines: CPU, OS, versions of ``dists``, date, load average at start and end."""
    import jax

    versions = [f"python {platform.python_version()}"]
    for dist in dists:
        v = _version(dist)
        if v is not None:
            versions.append(f"{dist} {v}")
    lines = [
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; JAX backend: {jax.default_backend()}",
        *accelerator_lines(),
        f"- {platform.system()} {platform.release()}; " + ", ".join(versions),
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
    ]
    end = load_average()
    if load_at_start is not None and end is not None:
        lines.append(
            f"- 1-minute load average at start {load_at_start:.2f}, at end {end:.2f} "
            "(a load above the core count means other work shared the CPU and the "
            "times are inflated and noisier)"
        )
    return lines


def accelerator_lines() -> list[str]:
    """One markdown bullet naming the accelerators JAX computes on (none on the CPU backend)."""
    import jax

    if jax.default_backend() == "cpu":
        return []
    devices = jax.devices()
    named = ", ".join(f"{n} × {kind}" for kind, n in collections.Counter(d.device_kind for d in devices).items())
    return [f"- accelerator: {named} (JAX platform {devices[0].platform})"]


DASH = "—"
MIN_TIMED = 3  # timed calls made even past the budget (a median of fewer says little)


def fmt_time(s: float | None) -> str:
    """Seconds as text in µs, ms or s (a dash for None)."""
    if s is None:
        return DASH
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def repeated(fn, *, repeats: int, warmup: int, budget_s: float) -> dict:
    """Call ``fn()``: once untimed (the first call), up to ``warmup`` untimed calls within a quarter of the
    budget, then up to ``repeats`` timed calls while their total stays within the budget (``MIN_TIMED`` at
    least).
    Returns the first call's seconds, the timed seconds and the timed calls' results."""
    return interleaved({"fn": fn}, repeats=repeats, warmup=warmup, budget_s=budget_s)["fn"]


def interleaved(fns: dict, *, repeats: int, warmup: int, budget_s: float) -> dict:
    """:func:`repeated` of every function of ``fns`` (name -> callable), their timed calls in rounds.

    Each function gets its first call and warm-up calls (as :func:`repeated`), one function after the
    other; then every round calls each function still timed once, so that all of them are timed over
    the same stretch of the machine's time and ratios between them are not skewed by load that changes
    between one measurement and the next. A function stops at ``repeats`` timed calls, or once one more
    would take its total (first call included) past ``budget_s`` (``MIN_TIMED`` timed calls at least).
    Returns ``{name: repeated's dict}``.
    """
    runs = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        fn()
        first = time.perf_counter() - t
        spent = last = first
        for _ in range(warmup):
            if spent + last > budget_s / 4:
                break
            t = time.perf_counter()
            fn()
            last = time.perf_counter() - t
            spent += last
        runs[name] = {"first": first, "times": [], "results": [], "spent": spent, "last": last}
    active = list(fns)
    while active:
        for name in list(active):
            r = runs[name]
            if len(r["times"]) >= repeats or (len(r["times"]) >= MIN_TIMED and r["spent"] + r["last"] > budget_s):
                active.remove(name)
                continue
            t = time.perf_counter()
            r["results"].append(fns[name]())
            r["last"] = time.perf_counter() - t
            r["times"].append(r["last"])
            r["spent"] += r["last"]
    return {name: {k: r[k] for k in ("first", "times", "results")} for name, r in runs.items()}


def write_section(path: Path, body: str, begin: str, end: str) -> None:
    """Put ``body`` between the markers ``begin``/``end`` in ``path`` (atomically), keeping the rest."""
    BEGIN, END = begin, end
    section = f"{BEGIN}\n{body}\n{END}"
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text and text.index(BEGIN) < text.index(END):
            start = text.index(BEGIN)
            stop = text.index(END) + len(END)
            text = text[:start] + section + text[stop:]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        text = (
            "# Benchmarks\n\n"
            "Scripts that time photocomp against public peers. Each script rewrites "
            "only its own section of this file, between its markers.\n\n" + section + "\n"
        )
    replace_atomically(path, lambda tmp: Path(tmp).write_text(text))


def replace_atomically(path: Path, write) -> None:
    """Create or replace ``path`` whole: ``write(tmp)`` fills a temporary file in its folder, which is then
    renamed over it (with ``path``'s permissions, or a new file's); nothing half-written is left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:  # what a plain open() would give: 0o666 less the umask
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Save a matplotlib figure to ``path`` atomically, in the format its suffix names."""
    replace_atomically(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi))


def reproduce_command(script: str, argv: list[str] | None) -> str:
    """``python <script> <arguments>``: the command that reproduces a table, without its ``--out`` (where it was
    written); ``argv`` None means the process's own arguments."""
    given = list(sys.argv[1:] if argv is None else argv)
    if "--out" in given:
        i = given.index("--out")
        given = given[:i] + given[i + 2:]
    return " ".join(["python", script, *given])


def out_name(out: Path | None) -> str:
    """How a reproduce line names the file a table goes into: ``out`` as given (benchmarks/README.md without it)."""
    if out is None:
        return "benchmarks/README.md"
    try:
        return out.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:  # outside the working folder
        return out.as_posix()


def finish(lines: list[str], load_at_start: float | None, reproduce: str, out: Path | None, begin: str,
           end: str) -> int:
    """Close a report: the machine description and ``reproduce``, the command (without its ``--out``) that
    writes it into ``out`` (benchmarks/README.md without it); print it, and write it into ``out`` between the markers when given.
    Returns the exit status (0)."""
    gap = [""] if lines and lines[-1] else []
    lines = lines + gap + ["Machine:", ""] + machine_description(load_at_start) + [
        "", f"Reproduce with `{reproduce} --out {out_name(out)}`."]
    body = "\n".join(lines)
    print(body)
    if out is not None:
        write_section(out, body, begin, end)
        print(f"wrote {out}")
    return 0
