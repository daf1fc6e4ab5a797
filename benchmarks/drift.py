"""Thermal drift of a calibrated pace-64 program: compensators over one simulated hour.

A 64x64 real Gaussian matrix is compiled onto the target (no DAC
quantization) and calibrated with ``calibrate(method="model")`` for one
fabricated chip; :func:`photocomp.drift.study` then simulates one hour at
``dt = 1 s`` under the default :class:`~photocomp.drift.ThermalProcess` for
several Monte-Carlo runs and compares every compensator. The script prints
and writes (between the drift markers of ``benchmarks/README.md``):

* per compensator: mean / p95 / max matrix error, the drift-induced error
  ``sqrt(max(e^2 - e_fresh^2, 0))`` (RMS over time and runs), measurements,
  sensor readings, extra heater power and wall time;
* the closed loop at several detector integrations (shots per probe);
* the wall time of one simulated hour (median of repeats) and the goals.

Usage::

    python benchmarks/drift.py --out benchmarks/README.md
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

BEGIN = "<!-- drift:begin -->"
END = "<!-- drift:end -->"
PIPELINE = "validate | tile | svd | clements | canonicalize | lower"


def drift_error(e: np.ndarray, fresh: float) -> float:
    """RMS over time and runs of the error above the fresh calibration (added in quadrature)."""
    return float(np.sqrt(np.mean(np.clip(e**2 - fresh**2, 0.0, None))))


def mean_output_power(cal, chip) -> float:
    """Mean output power per unit input power in one mode: mean |M_ij|^2 of the calibrated core (no gain)."""
    import jax

    from photocomp.hardware.chipsim import chip_tile_matrices

    with jax.enable_x64(True):
        m = np.asarray(chip_tile_matrices(chip, cal.settings, with_gain=False))
    return float(np.mean(np.abs(m) ** 2))


def program(target: str, chip_seed: int, case_seed: int, steps: int):
    t = pc.get_target(target)
    w = np.random.default_rng(case_seed).normal(size=(t.size, t.size))
    prog = pc.compile(w, target=target, pipeline=PIPELINE, progress=False)
    chip = pc.fabricate(target, seed=chip_seed)
    t0 = time.perf_counter()
    cal = pc.calibrate(prog, chip, method="model", steps=steps, progress=False)
    return cal, chip, time.perf_counter() - t0


def compensator_rows(s) -> list[dict]:
    rows = []
    n = s.info["target"]
    k = pc.get_target(n).size
    for name, summ in s.summary().items():
        e = s.errors[name]
        conf = s.info["compensators"][name]
        if name == "closed-loop":
            updates = int(round(s.info["duration_s"] / conf["interval_s"]))
            probes = conf["probes"] or 2 * k
            note = f"{probes} probes ({probes // k}N) x {conf['shots']} shots per update, every {conf['interval_s']:g} s"
        elif name == "feedforward":
            note = f"{conf['sensors']} sensors, {conf['sensor_noise_k']:g} K noise, every step"
        elif name == "recalibrate":
            note = f"calibrate(method={conf['method']!r}) every {conf['interval_s']:g} s"
        else:
            note = "calibrated drives held"
        rows.append({"name": name, **summ, "drift": drift_error(e, s.fresh_error), "note": note,
                     "updates": updates if name == "closed-loop" else None})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="pace-64")
    ap.add_argument("--chip-seed", type=int, default=7)
    ap.add_argument("--case-seed", type=int, default=2026)
    ap.add_argument("--steps", type=int, default=300, help="model calibration steps (default %(default)s)")
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--dt", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3, help="Monte-Carlo runs (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 100, 1000, 10000],
                    help="closed-loop detector integrations to compare (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of one uncompensated hour (default %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="README to write the table into (between markers)")
    args = ap.parse_args(argv)
    load0 = _report.load_average()
    proc = pc.drift.ThermalProcess()
    print(f"calibrating a {args.target} program for chip seed {args.chip_seed} ...", flush=True)
    cal, chip, cal_s = program(args.target, args.chip_seed, args.case_seed, args.steps)
    k = chip.target.size
    kw = dict(hours=args.hours, dt_s=args.dt, seed=args.seed, progress=False)

    print("study: all compensators ...", flush=True)
    t0 = time.perf_counter()
    s = pc.drift.study(cal, chip, proc, compensators="all", runs=args.runs, **kw)
    study_s = time.perf_counter() - t0
    print(s.table(), flush=True)
    rows = compensator_rows(s)
    by = {r["name"]: r for r in rows}
    fresh = s.fresh_error

    print("closed loop at several integrations ...", flush=True)
    shot_rows = []
    for shots in args.shots:
        c = pc.drift.ClosedLoop(shots=shots)
        sc = pc.drift.study(cal, chip, proc, compensators=[c], runs=args.runs, **kw)
        r = compensator_rows(sc)[0]
        shot_rows.append({"shots": shots, **r})
        print(f"  shots {shots}: mean {r['mean_error']:.3e} drift {r['drift']:.3e} measurements {r['measurements']:.0f}",
              flush=True)

    print("timing one uncompensated hour ...", flush=True)
    times = []
    for _ in range(args.repeats + 1):  # the first call compiles for this shape
        t0 = time.perf_counter()
        pc.drift.study(cal, chip, proc, compensators=["none"], runs=1, **kw)
        times.append(time.perf_counter() - t0)
    cold, warm = times[0], statistics.median(times[1:])
    steps = int(round(args.hours * 3600 / args.dt))

    # goals
    none, ff, cl = by["none"], by["feedforward"], by["closed-loop"]
    growth = float(np.median(s.errors["none"][:, -1])) / fresh
    cut = none["drift"] / max(ff["drift"], 1e-300)
    cl_ratio = cl["mean_error"] / fresh
    cl_probes = 2 * k  # per tile and update (ClosedLoop default)
    goals = [
        ("uncompensated error grows by > 10x in one hour",
         f"final / fresh = {growth:.1f}x (median over runs); max / fresh = {none['max_error'] / fresh:.1f}x",
         growth > 10),
        ("feed-forward cuts the drift by >= 10x",
         f"drift-induced error {none['drift']:.3e} -> {ff['drift']:.3e} ({cut:.0f}x); mean error "
         f"{none['mean_error']:.3e} -> {ff['mean_error']:.3e}", cut >= 10),
        ("closed loop keeps the mean error within 2x of the fresh calibration with <= 2N probes per update",
         f"mean / fresh = {cl_ratio:.2f} with {cl_probes} = 2N probe inputs per update, each read over "
         f"{pc.drift.ClosedLoop().shots} detector shots ({cl_probes * pc.drift.ClosedLoop().shots} readings in "
         "BlackBoxChip's count)", cl_ratio <= 2.0),
        (f"one simulated hour at dt = {args.dt:g} s for a {k}x{k} program in < 60 s",
         f"median {warm:.1f} s over {args.repeats} repeats ({steps} steps, uncompensated; first call with "
         f"compilation {cold:.1f} s)", warm < 60),
    ]

    p = proc
    lines = [
        "## Thermal drift", "",
        f"One {k}x{k} real Gaussian matrix (seed {args.case_seed}) compiled onto `{chip.target.name}` "
        f"(`{PIPELINE}`) and calibrated with `calibrate(method=\"model\", steps={args.steps})` for chip seed "
        f"{args.chip_seed} ({cal_s:.0f} s), then `photocomp.drift.study` over {args.hours:g} h at dt = {args.dt:g} s, "
        f"{args.runs} Monte-Carlo runs (seed {args.seed}), default `ThermalProcess`: ambient "
        f"{p.ambient_k_per_hour:g} K RMS per hour (correlation {p.ambient_tau_s:g} s), gradients {p.gradient_k:g} K "
        f"RMS end to end (correlation {p.gradient_tau_s:g} s), package lag {p.package_tau_s:g} s, arm imbalance "
        f"{p.arm_imbalance_um:g} um RMS. Errors are ‖W − g Ŵ‖_F / ‖W‖_F with the best complex gain per tile; "
        f"the fresh calibration scores {fresh:.3e}. \"Drift\" is the RMS over time and runs of "
        "sqrt(max(e² − e_fresh², 0)), the error the drift adds. Measurements are per run (one probe input read "
        "once per detector shot, as `BlackBoxChip` counts them); power is the time-averaged net change of a tile's "
        "total heater power, from `drive_map`, which solves every command afresh: heaters pushed past either end "
        f"of their range wrap by 2π (±{2 * chip.target.heater_p_pi_mw:g} mW / efficiency each), which offsets part "
        "of the continuous change.", "",
        "| compensator | mean error | p95 error | max error | drift | measurements / run | sensor reads / run "
        f"| extra power | wall time ({args.runs} runs) | settings |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|:--|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['mean_error']:.3e} | {r['p95_error']:.3e} | {r['max_error']:.3e} | "
                     f"{r['drift']:.3e} | {r['measurements']:.3g} | {r['sensor_reads']:.3g} | "
                     f"{r['extra_power_mw']:+.1f} mW | {r['wall_s']:.1f} s | {r['note']} |")
    out_power = mean_output_power(cal, chip)
    lines += ["", f"Whole study (all compensators, {args.runs} runs): {study_s:.0f} s.", "",
              f"Closed loop at several detector integrations (same runs): with one unit of input power in one mode, "
              f"the calibrated {k}-mode core delivers on average {out_power:.1e} to each output, against a detector "
              f"dark noise of {chip.target.dark_noise:g} per shot, so the 2N probes must be integrated.", "",
              "| shots per probe | mean error | drift | measurements / run | wall time |",
              "|--:|--:|--:|--:|--:|"]
    for r in shot_rows:
        lines.append(f"| {r['shots']} | {r['mean_error']:.3e} | {r['drift']:.3e} | {r['measurements']:.3g} | "
                     f"{r['wall_s']:.1f} s |")
    lines += ["", "Goals:", "", "| goal | measured | met |", "|:--|:--|:--|"]
    for goal, measured, met in goals:
        lines.append(f"| {goal} | {measured} | {'yes' if met else 'no'} |")
    return _report.finish(
        lines, load0,
        f"python benchmarks/drift.py --target {chip.target.name} --chip-seed {args.chip_seed} --runs {args.runs} "
        f"--hours {args.hours:g} --dt {args.dt:g}", args.out, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
