"""Measurement cost of calibration by measurement: error reached against readings and chip time.

For a Haar-random unitary program on each target (``clements-8`` ... ``clements-64``
and the other architectures at 16 modes; one fabricated chip each), every
measurement method that applies calibrates the program through a
:class:`photocomp.BlackBoxChip` at several shot counts (shots per reading):

- ``selfconfig`` (:class:`photocomp.SelfConfig`): output powers only, one heater at a time;
- ``nullify`` (:class:`photocomp.Nullify`): Pai et al.'s parallel nullification with in-mesh
  power monitors tapping a tenth of the guided power (the only method here that needs them);
- ``diagonalize`` (:class:`photocomp.Diagonalize`): a triangular (Reck) mesh configured chain by
  chain from its output powers (the Reck targets only);
- ``cells`` (:class:`photocomp.Cells`): a crossbar's weight cells read at once and set in closed
  form (the crossbar only);
- ``insitu`` (:class:`photocomp.InSitu`): Gauss-Newton on the measured parameter-shift Jacobian;
- ``backprop`` (:meth:`photocomp.InSitu.backprop`): Gauss-Newton on the Jacobian measured by in-situ
  backpropagation, from monitors at every phase shifter tapping a tenth of the guided power (a mesh's
  unitary circuit only);
- ``twin`` (:class:`photocomp.Twin`) and ``twin-frugal`` (the twin with a budget, below).

A crossbar takes no ``selfconfig``, ``nullify`` or ``backprop`` (they walk a mesh's columns; all three
refuse it), only a Reck mesh takes ``diagonalize`` and only a crossbar ``cells``. The table gives the true matrix error reached, the readings and
the chip time the instrument's ledger counted (configuration changes x heater
settling + readings / clock), and the ratio to the model-based error
(``method="model"``: the known-chip optimum). A reading is one input vector
detected once per shot (:class:`photocomp.BlackBoxChip`); the heater
characterisation counts one reading and one configuration change per point.
Chip time is counted at ``pace-64``'s clock and heater settling time
(:class:`photocomp.hardware.instrument.Ledger`).

``twin`` is :class:`photocomp.Twin` with its defaults (six probe
configurations, two rounds, eight characterisation points per heater) but for
its step counts. ``twin-frugal`` is the twin with a budget: three
characterisation points per heater, one probe configuration (the program's
operating point), three refinement rounds that each probe the chip where the
last calibration took it, and a tenth of the level's shots for the probes and
a twentieth for the final measured check. The twin rows split their readings
as characterisation / probes / refinement / check.

Usage::

    python benchmarks/measurement_cost.py --out benchmarks/README.md --plot benchmarks/measurement_cost.png
    python benchmarks/measurement_cost.py --targets clements-64 --shots 100 --large-methods twin twin-frugal

``--methods`` run on targets of up to ``--all-methods-max`` modes (default 16),
``--large-methods`` above (default: every method but ``insitu`` and
``selfconfig``, whose readings grow fastest: at 32 modes ``insitu`` alone
needs minutes of this machine per shot level; ``backprop`` runs up to
``--backprop-max`` modes, default 32: at 64 its Gauss-Newton system has 8,256
unknowns).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

import photocomp as pc  # noqa: E402
from photocomp.hardware.instrument import Ledger  # noqa: E402

BEGIN = "<!-- measurement-cost:begin -->"
END = "<!-- measurement-cost:end -->"
METHODS = ("selfconfig", "nullify", "diagonalize", "cells", "insitu", "backprop", "twin", "twin-frugal")
MESH_ONLY = ("selfconfig", "nullify", "backprop")
"""Methods that walk a mesh's columns; a crossbar refuses them."""
TRIANGLE_ONLY = ("diagonalize",)
"""Methods for a triangular (Reck) mesh alone."""
CROSSBAR_ONLY = ("cells",)
"""Methods for a crossbar alone."""
TARGETS = ("clements-8", "clements-16", "clements-32", "clements-64", "reck-8", "reck-16", "reck-32", "mzi3-16",
           "crossbar-16")
MONITOR_FRACTION = 0.1
"""Power the in-mesh monitors of ``nullify`` and ``backprop`` tap (the other methods read the outputs only)."""
CLOCK_TARGET = "pace-64"
GOAL_TARGET, GOAL_RATIO, GOAL_READINGS = "clements-64", 1.5, 250_000
"""The goal: a 64-mode mesh within 1.5x of the model-based error with at most 250 k readings."""
ROUNDING = 1e-9
"""Model-based errors below this are rounding (a small crossbar's cells all reach their weights): no ratio to them."""
PLOT_FLOOR = 1e-6
"""Errors below this are drawn at it on the figure's log scale."""
MARKERS = {"selfconfig": "v", "nullify": "s", "diagonalize": "P", "cells": "X", "insitu": "^", "backprop": "*",
           "twin": "o", "twin-frugal": "D"}


def methods(shots: int, size: int) -> dict:
    """The measurement methods at ``shots`` per reading (the twin's steps: 100 up to 8 modes, else its default 300)."""
    twin_steps = 100 if size <= 8 else 300
    return {
        "selfconfig": pc.SelfConfig(shots=shots),
        "nullify": pc.Nullify(shots=shots),
        "diagonalize": pc.Diagonalize(shots=shots),
        "cells": pc.Cells(shots=shots),
        "insitu": pc.InSitu(shots=shots),
        "backprop": pc.InSitu.backprop(shots=shots),
        "twin": pc.Twin(shots=shots, fit_steps=twin_steps, steps=twin_steps),
        "twin-frugal": pc.Twin(shots=shots, configs=1, rounds=4, fit_steps=twin_steps, steps=twin_steps,
                               points_per_heater=3, probe_shots=max(shots // 10, 1), check_shots=max(shots // 20, 1)),
    }


def split(summary) -> str:
    """A twin's readings as characterisation / probes / refinement / check; '-' for other methods."""
    keys = ("readings_characterization", "readings_probes", "readings_refinement", "readings_check")
    return " / ".join(f"{summary[k]:.3g}" for k in keys) if all(k in summary for k in keys) else "-"


def chosen(target: str, size: int, args) -> list[str]:
    """The methods run on ``target``: by its size, less those its mesh refuses."""
    names = args.methods if size <= args.all_methods_max else args.large_methods
    kind = pc.get_target(target).mesh
    return [m for m in names if not (kind == "crossbar" and m in MESH_ONLY) and not (kind != "reck" and m in TRIANGLE_ONLY)
            and not (kind != "crossbar" and m in CROSSBAR_ONLY) and not (m == "backprop" and size > args.backprop_max)]


def run_one(prog, chip, name: str, shots: int, size: int, pace: Ledger) -> dict:
    """Calibrate ``prog`` on ``chip`` through a black box with ``name`` at ``shots``; the row's numbers."""
    t0 = time.perf_counter()
    box = pc.BlackBoxChip(chip, seed=0, shots=shots,
                          monitor_fraction=MONITOR_FRACTION if name in ("nullify", "backprop") else None,
                          heater_monitors=name == "backprop")
    cal = pc.calibrate(prog, box, methods(shots, size)[name], progress=False)
    led = box.ledger
    return {"method": name, "shots": shots, "error": pc.error(cal, chip)["matrix_error"],
            "readings": led.readings, "split": split(cal.report.summary),
            "chip_s": led.configurations * pace.settle_s + led.readings / pace.clock_hz,
            "wall_s": time.perf_counter() - t0}


def plot(path: Path, rows: list[dict]) -> None:
    """Error against readings (left) and chip time (right): one colour per target (its model-based error dotted),
    one marker per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(r["target"] for r in rows))
    colours = {t: plt.get_cmap("tab10")(i % 10) for i, t in enumerate(targets)}
    top = max(r["shots"] for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, key, label in ((axes[0], "readings", "readings"), (axes[1], "chip_s", "chip time at pace-64's clock (s)")):
        for r in rows:
            ax.plot(r[key], max(r["error"], PLOT_FLOOR), MARKERS[r["method"]], color=colours[r["target"]],
                    alpha=1.0 if r["shots"] == top else 0.35, markersize=6)
        for t in targets:
            ax.axhline(max(next(r["model"] for r in rows if r["target"] == t), PLOT_FLOOR), color=colours[t],
                       lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].axvline(GOAL_READINGS, color="k", lw=0.8, ls="--")
    axes[0].set_ylabel("matrix error after calibration")
    handles = [plt.Line2D([], [], ls="", marker=m, color="k", label=n) for n, m in MARKERS.items()
               if any(r["method"] == n for r in rows)]
    handles += [plt.Line2D([], [], ls="", marker="o", color=c, label=t) for t, c in colours.items()]
    axes[1].legend(handles=handles, fontsize=7, loc="best", ncol=2)
    fig.tight_layout()
    _report.save_figure(fig, path)
    plt.close(fig)


def ratio(error: float, model: float) -> str:
    """``error / model`` as the table prints it; '-' where the model-based error is at rounding level."""
    return "-" if model < ROUNDING else f"{error / model:.2f}"


def goal_line(rows: list[dict]) -> str:
    """The goal row: the fewest readings that bring the goal's target within the goal's ratio."""
    ok = [r for r in rows if r["target"] == GOAL_TARGET and r["model"] >= ROUNDING
          and r["error"] / r["model"] <= GOAL_RATIO]
    goal = (f"{GOAL_TARGET}: within {GOAL_RATIO:g}x of the model-based error with <= {GOAL_READINGS / 1e3:g} k readings")
    if not [r for r in rows if r["target"] == GOAL_TARGET]:
        return f"| {goal} | not run | - |"
    if not ok:
        return f"| {goal} | no method reached {GOAL_RATIO:g}x | no |"
    best = min(ok, key=lambda r: r["readings"])
    return (f"| {goal} | {best['method']} at {best['shots']} shots: {best['error'] / best['model']:.2f}x with "
            f"{best['readings']:,} readings, {best['chip_s'] * 1e3:.1f} ms of chip time | "
            f"{'yes' if best['readings'] <= GOAL_READINGS else 'no'} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", nargs="+", default=list(TARGETS))
    ap.add_argument("--shots", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                    help="methods run on targets of up to --all-methods-max modes")
    ap.add_argument("--large-methods", nargs="+", choices=METHODS,
                    default=["nullify", "diagonalize", "cells", "backprop", "twin", "twin-frugal"],
                    help="methods run on larger targets")
    ap.add_argument("--backprop-max", type=int, default=32, help="largest target backprop runs on")
    ap.add_argument("--all-methods-max", type=int, default=16)
    ap.add_argument("--chip-seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="write the figure here (PNG)")
    args = ap.parse_args(argv)
    for t in args.targets:
        pc.get_target(t)  # an unknown name fails before anything runs
    clock = pc.get_target(CLOCK_TARGET)
    pace = Ledger.for_target(clock)
    load = _report.load_average()
    t_start = time.perf_counter()
    lines = ["## Measurement cost of calibration by measurement", "",
             f"Haar-random unitary on each target (a mesh's unitary circuit, a crossbar's own; chip seed "
             f"{args.chip_seed}); the chip seen only through `BlackBoxChip` (shot noise, dark noise, 10-bit ADC). "
             "Error: true matrix error (best real gain) after calibration; ratio: to the model-based error (chip "
             "known; '-' where that is rounding). A reading: one input vector detected once per shot. Chip time at "
             f"{CLOCK_TARGET}'s clock: configuration changes x {pace.settle_s * 1e6:g} us heater settling + readings "
             f"at {clock.clock_ghz:g} GHz (the ledger's counts). `nullify` reads monitors after every column and "
             f"`backprop` monitors at every phase shifter (each tapping {MONITOR_FRACTION:g} of the guided power); "
             "a crossbar refuses `selfconfig`, `nullify` and `backprop`, and only a "
             "Reck mesh takes `diagonalize` and only a crossbar `cells`. Methods "
             f"above {args.all_methods_max} modes: {', '.join(args.large_methods)} (`backprop` up to "
             f"{args.backprop_max}). Twin readings split as "
             "characterisation / probes / refinement / check.", "",
             "| target | method | shots | error | / model | readings | twin readings | chip time | wall |",
             "|:--|:--|--:|--:|--:|--:|--:|--:|--:|"]
    rows = []
    for target in args.targets:
        size = pc.get_target(target).size
        u = pc.haar_unitary(size, np.random.default_rng(size))
        prog = pc.compile(u, target)
        circuit = "unitary" if "unitary" in pc.get_target(target).circuits else None
        chip = pc.fabricate(target, seed=args.chip_seed, circuit=circuit)
        model = pc.calibrate(prog, chip, "model", progress=False).report.summary
        ref = model["error_after"]
        lines.append(f"| {target} | uncalibrated | - | {model['error_before']:.4f} | "
                     f"{ratio(model['error_before'], ref)} | 0 | - | 0 | - |")
        lines.append(f"| {target} | model (chip known) | - | {ref:.4f} | {ratio(ref, ref)} | 0 | - | 0 | - |")
        for shots in args.shots:
            for name in chosen(target, size, args):
                r = dict(run_one(prog, chip, name, shots, size, pace), target=target, model=ref)
                rows.append(r)
                lines.append(f"| {target} | {name} | {shots} | {r['error']:.4f} | {ratio(r['error'], ref)} | "
                             f"{r['readings']:.3g} | {r['split']} | {r['chip_s'] * 1e3:.1f} ms | {r['wall_s']:.0f} s |")
                print(lines[-1], flush=True)
    lines += ["", "Readings and chip time include the heater characterisation every method starts from "
              "(8 configurations per heater; 3 for twin-frugal) and, for `selfconfig`, `nullify`, `diagonalize`, "
              "`cells`, `insitu` and `backprop`, "
              "the phase-stepped error measurements at the start and the end.", "",
              "| goal | measured | met |", "|:--|:--|:--|", goal_line(rows), "",
              f"The whole run took {(time.perf_counter() - t_start) / 60:.1f} min."]
    reproduce = _report.reproduce_command("benchmarks/measurement_cost.py", argv)
    if args.plot is not None:
        plot(args.plot, rows)
        link = args.plot.name if args.out is not None and args.plot.parent.resolve() == args.out.parent.resolve() \
            else args.plot.as_posix()
        lines += ["", f"![error after calibration against readings and chip time]({link})", "",
                  f"The figure ({link}): every row above, its true error against readings (left; dashed: the "
                  f"goal's {GOAL_READINGS / 1e3:g} k readings) and against chip time (right); one colour per target, "
                  f"its model-based error dotted; one marker per method; the highest shot level drawn solid, the "
                  f"others faint; errors below {PLOT_FLOOR:g} drawn at it."]
    return _report.finish(lines, load, reproduce, args.out, BEGIN, END)


if __name__ == "__main__":
    raise SystemExit(main())
