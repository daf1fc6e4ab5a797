"""Calibration by in-mesh nullification against mesh size, monitor strength and nulling inputs.

For a Haar-random unitary program on ``clements-N`` (unitary circuit, one
fabricated chip), :class:`photocomp.Nullify` programs the chip through a
:class:`photocomp.BlackBoxChip` with in-mesh monitors. Rows: monitors without
noise (what the method reaches when every reading is exact), then monitors
that detect ``monitor_fraction`` of the guided power (shot and dark noise of
the target's detectors, 10-bit ADC per monitor) at ``shots`` shots per
reading, and the same with one nulling input per column (``vectors=1``)
instead of the default. Columns: the true matrix error of the drives the
nulling ended at (``configured``; the method returns the start's drives when
those measure no better: ``kept``), the ratio to ``method="model"`` (the
chip known), readings, configuration changes and chip time (the instrument's
ledger at the chip's own clock and heater settling).

Usage::

    python benchmarks/nullification.py --out benchmarks/README.md
    python benchmarks/nullification.py --sizes 8 16 --fractions 0.1
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
from photocomp.calibration.selfconfig import chip_error  # noqa: E402

BEGIN = "<!-- nullification:begin -->"
END = "<!-- nullification:end -->"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0],
                    help="monitor fractions of the noisy rows")
    ap.add_argument("--shots", type=int, default=pc.Nullify.shots)
    ap.add_argument("--one-input-sizes", type=int, nargs="*", default=[16],
                    help="sizes that also get rows with one nulling input per column")
    ap.add_argument("--chip-seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    load = _report.load_average()
    lines = ["## Calibration by in-mesh nullification", "",
             f"Haar-random unitary on `clements-N` (unitary circuit, chip seed {args.chip_seed}) programmed by "
             f"`photocomp.Nullify` (parallel schedule, {pc.Nullify.passes} passes, as many nulling inputs per "
             "column as the mesh has modes unless the `inputs` column says otherwise) through a `BlackBoxChip` with in-mesh "
             f"monitors. `monitors`: exact, or detecting that fraction of the guided power at {args.shots} shots "
             "per reading. Error: true matrix error (best real gain) of the drives the nulling ended at; the method "
             "returns the start's drives when those measure no better (`kept`). Ratio: to `method=\"model\"`. "
             "Chip time: configuration changes x heater settling + readings at the target's clock.", "",
             "| N | monitors | inputs | start | configured | / model | kept | readings | configurations | "
             "chip time | wall |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in args.sizes:
        target = f"clements-{n}"
        prog = pc.compile(pc.haar_unitary(n, np.random.default_rng(n)), target)
        chip = pc.fabricate(target, seed=args.chip_seed, circuit="unitary")
        ref = pc.calibrate(prog, chip, "model", progress=False).report.summary["error_after"]
        lines.append(f"| {n} | model (chip known) | - | - | {ref:.4f} | 1.00 | - | - | - | - | - |")
        runs = [("exact", None, n)] + [(f"{f:g}", f, n) for f in args.fractions]
        if n in args.one_input_sizes:
            runs += [("exact", None, 1)] + [(f"{f:g}", f, 1) for f in args.fractions]
        for label, fraction, vectors in runs:
            t0 = time.perf_counter()
            box = pc.BlackBoxChip(chip, seed=0, noise=fraction is not None,
                                  monitor_fraction=1.0 if fraction is None else fraction)
            res = pc.Nullify(shots=args.shots, vectors=vectors).run(prog, box)
            start = chip_error(prog, chip, res.start_drives_mw)
            end = chip_error(prog, chip, res.configured_drives_mw)
            lines.append(f"| {n} | {label} | {vectors} | {start:.4f} | {end:.4f} | {end / ref:.2f} | {res.kept} | "
                         f"{res.readings:.3g} | {res.configurations} | {res.chip_time_s * 1e3:.1f} ms | "
                         f"{time.perf_counter() - t0:.0f} s |")
            print(lines[-1], flush=True)
    lines += ["", "Readings and configuration changes include the heater characterisation (8 per heater) and the "
              "phase-stepped error measurements at the start and the end."]
    reproduce = _report.reproduce_command("benchmarks/nullification.py", argv)
    return _report.finish(lines, load, reproduce, args.out, BEGIN, END)


if __name__ == "__main__":
    raise SystemExit(main())
