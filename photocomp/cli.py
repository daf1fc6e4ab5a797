"""The ``photocomp`` command line.

Commands: ``targets``, ``passes``, ``compile``, ``inspect``, ``calibrate``,
``drift``, ``report``, ``plot``, ``demo``. Every command has ``--help``. Exit
code 0 on success; on bad input a one-line ``photocomp: error: ...`` message
on stderr and exit code 2 (no traceback). Compiled XLA programs are kept on
disk for later runs (:mod:`photocomp.io.cache`; ``--no-compile-cache`` or
``PHOTOCOMP_CACHE_DIR=""`` turns that off).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

__all__ = ["main"]

DEMO_SHAPE = (100, 80)
DEMO_SEED = 0
DEMO_TARGET = "pace-64"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"photocomp: error: {message} (see '{self.prog} --help')\n")


def _progress(args) -> bool:
    """Progress bars only for people: not with --quiet, not when stderr is not a terminal."""
    return not args.quiet and sys.stderr.isatty()


def _load_matrix(path: str, key: str | None):
    from photocomp.core.errors import InvalidInputError, PhaseMapFileError

    if not os.path.isfile(path):
        raise PhaseMapFileError(f"weights file must exist; got {path!r}")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            return np.load(path, allow_pickle=False)
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = [n for n in z.files if not n.startswith("__")]
                if key is None:
                    if len(names) != 1:
                        raise InvalidInputError(f"{path!r} holds arrays {names}; choose one with --key")
                    key = names[0]
                if key not in z.files:
                    raise InvalidInputError(f"--key must be one of {names}; got {key!r}")
                return z[key]
        if ext in (".csv", ".txt"):
            try:
                return np.loadtxt(path, delimiter=",", ndmin=2)
            except ValueError:
                return np.loadtxt(path, delimiter=",", dtype=complex, ndmin=2)
    except (InvalidInputError, PhaseMapFileError):
        raise
    except Exception as exc:
        raise PhaseMapFileError(f"cannot read weights from {path!r}: {type(exc).__name__}: {exc}") from None
    raise InvalidInputError(f"weights file must end in .npy, .npz or .csv; got {path!r}")


def _print_targets(args) -> int:
    from photocomp.core.target import available_targets, get_target

    print(f"{'name':<14} {'mesh':<9} {'size':>5} {'MZIs/mesh':>9} {'DAC':>4} {'clock':>8}  description")
    for name in available_targets():
        t = get_target(name.replace("<N>", "64"))
        shown = name if "<N>" in name else t.name
        size = "N" if "<N>" in name else str(t.size)
        mzis = "N(N-1)/2" if "<N>" in name else str(t.n_mzi)
        desc = t.description.replace("64x64", "NxN") if "<N>" in name else t.description
        print(f"{shown:<14} {t.mesh:<9} {size:>5} {mzis:>9} {t.dac_bits:>4} {t.clock_ghz:>5.1f}GHz  {desc}")
    return 0


def _print_passes(args) -> int:
    import dataclasses

    from photocomp.compiler.pipeline import available_passes, get_pass

    for name in available_passes():
        p = get_pass(name)
        params = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(p))
        doc = (type(p).__doc__ or "").strip().splitlines()[0]
        print(f"{name:<13} {('(' + params + ')') if params else '':<34} {doc}")
    return 0


def _compile(args) -> int:
    import photocomp as pc

    w = _load_matrix(args.weights, args.key)
    prog = pc.compile(w, target=args.target, pipeline=args.pipeline, progress=_progress(args))
    out = args.output or (os.path.splitext(args.weights)[0] + ".phases.npz")
    prog.save(out)
    if not args.quiet:
        print(prog)
        print(prog.report.table())
    print(f"wrote {out}")
    return 0


def _phase_stats(mp) -> str:
    th, ph = np.asarray(mp.theta), np.asarray(mp.phi)
    if th.size == 0:
        return "no MZIs"
    return f"theta [{th.min():.4f}, {th.max():.4f}]  phi [{ph.min():.4f}, {ph.max():.4f}]"


def _inspect(args) -> int:
    import photocomp as pc
    from photocomp.core.format import format_value

    prog = pc.load(args.file)
    pm = prog.phase_map
    rows = [
        ("file", args.file),
        ("target", f"{prog.target.name} ({prog.target.mesh}, {prog.target.size} modes, {prog.target.dac_bits}-bit DAC)"),
        ("matrix", f"{prog.shape[0]}x{prog.shape[1]}"),
        ("tiles", f"{pm.n_tiles} ({pm.grid.rows}x{pm.grid.cols} of {pm.grid.tile}x{pm.grid.tile})"),
        ("MZIs", f"{prog.n_mzi} ({pm.v.layout.n_mzi} per mesh, 2 meshes + {pm.grid.tile} attenuators per tile)"),
        ("optical depth", f"{prog.depth} columns"),
        ("detection", prog.detection),
        ("pipeline", prog.pipeline),
        ("V mesh phases", _phase_stats(pm.v)),
        ("U mesh phases", _phase_stats(pm.u)),
        ("attenuators", f"sigma [{np.min(pm.sigma):.4f}, {np.max(pm.sigma):.4f}] rad"),
        ("gains", f"[{np.min(pm.gain):.4g}, {np.max(pm.gain):.4g}]"),
    ]
    if prog.calibrated:
        rows.append(("calibrated for", f"chip seed {prog.chip.seed} ({prog.chip.n_heaters} heaters)"))
        power = prog.drives()
        rows.append(("heater power", f"total {power.sum(axis=1).max():.1f} mW per tile, max {power.max():.2f} mW"))
    rows += [(k.replace("_", " "), format_value(v)) for k, v in prog.report.summary.items()]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.graph:
        from photocomp.core.graph import export_graph

        print(f"wrote {export_graph(prog.graph(args.tile), args.graph)} (circuit of tile {args.tile})")
    if args.netlist:
        from photocomp.core.graph import export_netlist

        print(f"wrote {export_netlist(prog, args.netlist, args.tile)} (SAX netlist of tile {args.tile})")
    return 0


def _calibrate(args) -> int:
    import time

    import photocomp as pc

    prog = pc.load(args.file)
    if prog.calibrated:
        raise pc.InvalidInputError(f"file must hold an uncalibrated program; {args.file!r} is calibrated for chip seed {prog.chip.seed}")
    chip = pc.fabricate(prog.target, seed=args.chip_seed)
    t0 = time.perf_counter()
    cal = pc.calibrate(prog, chip, method=args.method, steps=args.steps, progress=_progress(args), shots=args.shots,
                       seed=args.seed, dac_bits=args.dac_bits, twin_configs=args.twin_configs,
                       twin_steps=args.twin_steps, twin_rounds=args.twin_rounds)
    wall = time.perf_counter() - t0
    out = args.output or (os.path.splitext(args.file)[0].removesuffix(".phases") + ".cal.npz")
    cal.save(out)
    s = cal.report.summary
    print(f"chip: {prog.target.name} seed {args.chip_seed}  method: {args.method}")
    print(f"matrix error before: {s['error_before']:.4e}")
    print(f"matrix error after:  {s['error_after']:.4e}")
    if "error_after_measured" in s:
        print(f"matrix error after, as measured: {s['error_after_measured']:.4e}")
    if "error_unquantized" in s:
        print(f"matrix error before DAC quantization ({args.dac_bits} bits): {s['error_unquantized']:.4e}")
    if "steps_run" in s:
        print(f"steps: {s['steps_run']} ({s['stopped']})")
    print(f"measurements used: {s['measurements']}")
    print(f"time: {wall:.2f} s")
    print(f"wrote {out}")
    return 0


def _drift(args) -> int:
    import photocomp as pc

    cal = pc.load(args.file)
    if not cal.calibrated:
        raise pc.InvalidInputError(f"file must hold a calibrated program (photocomp calibrate); {args.file!r} is uncalibrated")
    chip = cal.chip if args.chip_seed is None else pc.fabricate(cal.target, seed=args.chip_seed)
    proc = pc.drift.ThermalProcess(ambient_k_per_hour=args.ambient_k_per_hour, gradient_k=args.gradient_k)
    names = args.compensator or ["all"]
    comps = "all" if "all" in names else list(dict.fromkeys(names))
    study = pc.drift.study(cal, chip, proc, hours=args.hours, dt_s=args.dt, compensators=comps, seed=args.seed,
                           runs=args.runs, progress=_progress(args))
    print(study.table())
    for ev in study.events[:10]:
        print(f"event: {ev['compensator']} run {ev['run']} t = {ev['time_s']:g} s: {ev['kind']}: {ev['message']}")
    if len(study.events) > 10:
        print(f"... and {len(study.events) - 10} more events")
    if args.output:
        print(f"wrote {study.to_csv(args.output)}")
    if args.plot:
        print(f"wrote {study.plot(args.plot)}")
    return 0


def _demo(args) -> int:
    import photocomp as pc

    rng = np.random.default_rng(DEMO_SEED)
    w = rng.normal(size=DEMO_SHAPE) / np.sqrt(DEMO_SHAPE[1])
    print(f"photocomp demo: a {DEMO_SHAPE[0]}x{DEMO_SHAPE[1]} Gaussian weight matrix (seed {DEMO_SEED}) -> {DEMO_TARGET}")
    prog = pc.compile(w, target=DEMO_TARGET, progress=_progress(args))
    print(prog)
    print(prog.report.table())
    out = args.output
    prog.save(out)
    again = pc.load(out)
    x = rng.normal(size=DEMO_SHAPE[1])
    same = np.array_equal(np.asarray(again.forward(x)), np.asarray(prog.forward(x)))
    err = np.linalg.norm(np.asarray(prog.forward(x)) - w @ x) / np.linalg.norm(w @ x)
    print(f"wrote {out}; reloaded forward bit-identical: {same}; |y - W x| / |W x| = {err:.3e}")
    return 0 if same else 1


def _report(args) -> int:
    import json

    import photocomp as pc

    cost = pc.cost(pc.load(args.file), batch=args.batch, group_index=args.group_index)
    print(json.dumps(cost.as_dict(), indent=1) if args.json else cost.table())
    return 0


def _plot(args) -> int:
    from photocomp.analysis.plot import plot_file

    out = args.output or (os.path.splitext(args.file)[0].removesuffix(".phases") + f".{args.what}.png")
    print(f"wrote {plot_file(args.file, out, args.what, tile=args.tile)}")
    return 0


def _add_report_and_plot(sub) -> None:
    from photocomp.analysis.cost import GROUP_INDEX
    from photocomp.analysis.plot import plot_kinds

    s = sub.add_parser("report", help="cost report of a phase-map file",
                       description="Print the cost of a phase-map file: MZI and phase-shifter counts, optical depth, "
                                   "worst-path insertion loss, heater power, latency, throughput, effective bits and "
                                   "equivalent compute (definitions: photocomp.analysis.cost).")
    s.add_argument("file", help="phase-map file (compiled or calibrated)")
    s.add_argument("--batch", type=int, default=1, help="input vectors streamed per tile setting; default %(default)s")
    s.add_argument("--group-index", type=float, default=GROUP_INDEX,
                   help="waveguide group index for the time of flight; default %(default)s")
    s.add_argument("--json", action="store_true", help="print the numbers as JSON")
    s.set_defaults(func=_report)

    s = sub.add_parser("plot", help="draw a phase-map file (phases, mesh, calibration) or a drift study (drift)",
                       description="Draw a phase-map file: phase heatmaps, the mesh with every MZI coloured by its "
                                   "setting, or a calibrated file's per-tile errors and reachability maps; or draw "
                                   "a drift study's CSV file ('photocomp drift -o'): error against time per "
                                   "compensator and the die's temperature.")
    s.add_argument("file", help="phase-map file (compiled or calibrated); for --what drift a drift study CSV")
    s.add_argument("-o", "--output", default=None, help="output image (.png, .pdf or .svg); default FILE.WHAT.png")
    s.add_argument("--what", default="phases", choices=plot_kinds(), help="figure to draw; default %(default)s")
    s.add_argument("--tile", type=int, default=None,
                   help="phases: only this tile; mesh: the tile drawn (default 0); calibration: reachability of "
                        "this tile; not used by drift")
    s.set_defaults(func=_plot)


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="photocomp", description="Compile weight matrices to phase maps for photonic MZI-mesh chips.")
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not keep compiled XLA programs on disk for later runs (default: kept in "
                        "$PHOTOCOMP_CACHE_DIR or ~/.cache/photocomp/xla; see photocomp.io.cache)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("targets", help="list the available chip targets", description="List the available chip targets.")
    s.set_defaults(func=_print_targets)

    s = sub.add_parser("passes", help="list the compiler passes", description="List the registered compiler passes and their parameters.")
    s.set_defaults(func=_print_passes)

    s = sub.add_parser("compile", help="compile a weight matrix to a phase-map file",
                       description="Compile a weight matrix (.npy, .npz or .csv) to a phase-map file (.npz).")
    s.add_argument("weights", help="weight matrix file: .npy, .npz (one array, or --key) or .csv (real or complex)")
    s.add_argument("--target", default=DEMO_TARGET, help="target name (see 'photocomp targets'); default %(default)s")
    s.add_argument("--pipeline", default=None, help='pipeline string, e.g. "tile | svd | clements | quantize(bits=10) | lower"; default: the target preset')
    s.add_argument("--key", default=None, help="array name inside an .npz input")
    s.add_argument("-o", "--output", default=None, help="output phase-map file; default WEIGHTS.phases.npz")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar or report")
    s.set_defaults(func=_compile)

    s = sub.add_parser("inspect", help="summarise a phase-map file", description="Print a summary table of a phase-map file.")
    s.add_argument("file", help="phase-map file written by 'photocomp compile' or Program.save")
    s.add_argument("--graph", default=None, help="also export the circuit netlist (.graphml or .json)")
    s.add_argument("--netlist", default=None, help="also export the circuit as a SAX netlist (.json)")
    s.add_argument("--tile", type=int, default=0, help="tile whose settings the exported graph/netlist carries; default 0")
    s.set_defaults(func=_inspect)

    s = sub.add_parser("calibrate", help="calibrate a phase map for a fabricated chip",
                       description="Calibrate a compiled phase-map file for a chip sampled from its target with --chip-seed.")
    s.add_argument("file", help="uncalibrated phase-map file")
    s.add_argument("--chip-seed", type=int, required=True, help="seed of the fabricated chip (photocomp.fabricate)")
    s.add_argument("--method", default="model", choices=["model", "local", "twin"],
                   help="model: chip errors known; local: analytic per-MZI correction; twin: the chip is a black box, "
                        "a digital twin is fitted to its measurements; default %(default)s")
    s.add_argument("--steps", type=int, default=300, help="maximum optimisation steps (model, twin); default %(default)s")
    s.add_argument("--shots", type=int, default=1, help="shots per black-box reading (twin); default %(default)s")
    s.add_argument("--seed", type=int, default=0, help="seed of measurement noise and probes (twin); default %(default)s")
    s.add_argument("--dac-bits", type=int, default=None, help="quantize the final heater drives with a DAC of this many bits")
    s.add_argument("--twin-configs", type=int, default=6, help="probe drive configurations of the twin; default %(default)s")
    s.add_argument("--twin-steps", type=int, default=300, help="twin fitting steps; default %(default)s")
    s.add_argument("--twin-rounds", type=int, default=2, help="fit-calibrate rounds of the twin; default %(default)s")
    s.add_argument("-o", "--output", default=None, help="output file; default FILE.cal.npz")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_calibrate)

    s = sub.add_parser("drift", help="simulate thermal drift of a calibrated program and compare compensators",
                       description="Simulate the thermal drift of a calibrated program (a .cal.npz file) on its chip "
                                   "and compare drift compensators: error against time, measurements, heater power.")
    s.add_argument("file", help="calibrated program file written by 'photocomp calibrate'")
    s.add_argument("--chip-seed", type=int, default=None, help="seed of the chip (must be the one the file was calibrated for); default: the file's")
    s.add_argument("--hours", type=float, default=1.0, help="simulated duration (h); default %(default)s")
    s.add_argument("--dt", type=float, default=1.0, help="time step (s); default %(default)s")
    s.add_argument("--compensator", action="append", choices=["all", "none", "feedforward", "closed-loop", "recalibrate"],
                   help="compensator to compare (repeat for several); default all")
    s.add_argument("--runs", type=int, default=1, help="Monte-Carlo runs; default %(default)s")
    s.add_argument("--seed", type=int, default=0, help="seed of the temperature, sensor and detector noise; default %(default)s")
    s.add_argument("--ambient-k-per-hour", type=float, default=1.0, help="RMS ambient change over one hour (K); default %(default)s")
    s.add_argument("--gradient-k", type=float, default=0.2, help="RMS temperature difference across the die (K); default %(default)s")
    s.add_argument("-o", "--output", default=None, help="write the error and temperature traces as CSV")
    s.add_argument("--plot", default=None, help="write a plot of error against time and the temperature field (.png, .pdf, .svg)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_drift)

    s = sub.add_parser("demo", help="compile a built-in matrix and show the report",
                       description=f"Compile a built-in {DEMO_SHAPE[0]}x{DEMO_SHAPE[1]} matrix onto {DEMO_TARGET}, print the report and write the phase map.")
    s.add_argument("-o", "--output", default="photocomp-demo.phases.npz", help="output phase-map file; default %(default)s")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_demo)

    _add_report_and_plot(sub)
    return p


def _version() -> str:
    from photocomp.core.version import __version__

    return f"photocomp {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``photocomp`` command; returns the exit code."""
    from photocomp.core.errors import PhotocompError

    parser = _build_parser()
    args = parser.parse_args(argv)
    if not args.no_compile_cache:
        from photocomp.io.cache import enable_compilation_cache

        enable_compilation_cache()  # this process is ours: later runs skip the JIT compilation
    try:
        return int(args.func(args) or 0)
    except (PhotocompError, OSError, ValueError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"photocomp: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("photocomp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
