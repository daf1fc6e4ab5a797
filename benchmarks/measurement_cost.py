"""Measurement cost of calibration by measurement: error reached against readings and chip time.

For Haar-random unitary programs on ``clements-N`` chips (unitary circuit, one
fabricated chip each), every measurement method -- ``selfconfig``
(:class:`photocomp.SelfConfig`), ``twin`` (:class:`photocomp.Twin`) and
``insitu`` (:class:`photocomp.InSitu`, Gauss-Newton on the measured
parameter-shift Jacobian) -- calibrates the program through a
:class:`photocomp.BlackBoxChip` at several shot counts (shots per reading).
The table gives the true matrix error reached, the readings and the chip time
the instrument's ledger counted (configuration changes x heater settling +
readings / clock), and the ratio to the model-based error (``method="model"``:
the known-chip optimum).

Usage::

    python benchmarks/measurement_cost.py --out benchmarks/README.md
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

BEGIN = "<!-- measurement-cost:begin -->"
END = "<!-- measurement-cost:end -->"


def methods(shots: int, size: int) -> dict:
    """The measurement methods at ``shots`` per reading (the twin kept short on larger chips)."""
    twin_steps = 100 if size <= 8 else 40
    return {
        "selfconfig": pc.SelfConfig(shots=shots),
        "twin": pc.Twin(shots=shots, rounds=1, fit_steps=twin_steps, steps=twin_steps),
        "insitu": pc.InSitu(shots=shots),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8])
    ap.add_argument("--shots", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--methods", nargs="+", default=["selfconfig", "twin", "insitu"])
    ap.add_argument("--chip-seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    load = _report.load_average()
    lines = ["## Measurement cost of calibration by measurement", "",
             f"Haar-random unitary on `clements-N` (unitary circuit, chip seed {args.chip_seed}); the chip seen "
             "only through `BlackBoxChip` (shot noise, dark noise, 10-bit ADC). Error: true matrix error "
             "(best real gain) after calibration; ratio: to the model-based error (chip known). Chip time: "
             "configuration changes x 3 us heater settling + readings at 1 GHz (the ledger).", "",
             "| N | method | shots | error | / model | readings | chip time | wall |", "|---|---|---|---|---|---|---|---|"]
    for n in args.sizes:
        target = f"clements-{n}"
        u = pc.haar_unitary(n, np.random.default_rng(n))
        prog = pc.compile(u, target)
        chip = pc.fabricate(target, seed=args.chip_seed, circuit="unitary")
        model = pc.calibrate(prog, chip, "model", progress=False).report.summary
        ref = model["error_after"]
        lines.append(f"| {n} | uncalibrated | - | {model['error_before']:.4f} | "
                     f"{model['error_before'] / ref:.2f} | 0 | 0 | - |")
        lines.append(f"| {n} | model (chip known) | - | {ref:.4f} | 1.00 | 0 | 0 | - |")
        for shots in args.shots:
            for name in args.methods:
                t0 = time.perf_counter()
                box = pc.BlackBoxChip(chip, seed=0, shots=shots)
                cal = pc.calibrate(prog, box, methods(shots, n)[name], progress=False)
                err = pc.error(cal, chip)["matrix_error"]
                chip_ms = box.ledger.chip_time_s * 1e3
                lines.append(f"| {n} | {name} | {shots} | {err:.4f} | {err / ref:.2f} | {box.ledger.readings:.3g} | "
                             f"{chip_ms:.1f} ms | {time.perf_counter() - t0:.0f} s |")
                print(lines[-1], flush=True)
    lines += ["", "Readings and chip time include the heater characterisation every method starts from "
              "(8 configurations per heater)."]
    return _report.finish(lines, load, "python benchmarks/measurement_cost.py", args.out, BEGIN, END)


if __name__ == "__main__":
    raise SystemExit(main())
