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
the known-chip optimum). A reading is one input vector detected once per shot
(:class:`photocomp.BlackBoxChip`); the heater characterisation counts one
reading and one configuration change per point. Chip time is counted at
``pace-64``'s clock and heater settling time (:class:`photocomp.hardware.instrument.Ledger`).

``twin`` is :class:`photocomp.Twin` with its defaults (six probe
configurations, two rounds, eight characterisation points per heater) but for
its step counts. ``twin-frugal`` is the twin with a budget: three
characterisation points per heater, one probe configuration (the program's
operating point), three refinement rounds that each probe the chip where the
last calibration took it, and a tenth of the level's shots for the probes and
a twentieth for the final measured check. The twin rows split their readings
as characterisation / probes / refinement / check.

Usage::

    python benchmarks/measurement_cost.py --out benchmarks/README.md
    python benchmarks/measurement_cost.py --sizes 64 --shots 100 --large-methods twin twin-frugal

``--methods`` are run up to 8 modes, ``--large-methods`` (default: the two
twins) above; the defaults give ``clements-8`` with every method and
``clements-64`` with the twins.
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
METHODS = ("selfconfig", "twin", "twin-frugal", "insitu")
CLOCK_TARGET = "pace-64"


def methods(shots: int, size: int) -> dict:
    """The measurement methods at ``shots`` per reading (the twin's steps: 100 up to 8 modes, else its default 300)."""
    twin_steps = 100 if size <= 8 else 300
    return {
        "selfconfig": pc.SelfConfig(shots=shots),
        "twin": pc.Twin(shots=shots, fit_steps=twin_steps, steps=twin_steps),
        "twin-frugal": pc.Twin(shots=shots, configs=1, rounds=4, fit_steps=twin_steps, steps=twin_steps,
                               points_per_heater=3, probe_shots=max(shots // 10, 1), check_shots=max(shots // 20, 1)),
        "insitu": pc.InSitu(shots=shots),
    }


def split(summary) -> str:
    """A twin's readings as characterisation / probes / refinement / check; '-' for other methods."""
    keys = ("readings_characterization", "readings_probes", "readings_refinement", "readings_check")
    return " / ".join(f"{summary[k]:.3g}" for k in keys) if all(k in summary for k in keys) else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--shots", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                    help="methods run on chips of up to 8 modes")
    ap.add_argument("--large-methods", nargs="+", choices=METHODS, default=["twin", "twin-frugal"],
                    help="methods run on chips of more than 8 modes")
    ap.add_argument("--chip-seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    clock = pc.get_target(CLOCK_TARGET)
    pace = Ledger.for_target(clock)
    load = _report.load_average()
    lines = ["## Measurement cost of calibration by measurement", "",
             f"Haar-random unitary on `clements-N` (unitary circuit, chip seed {args.chip_seed}); the chip seen "
             "only through `BlackBoxChip` (shot noise, dark noise, 10-bit ADC). Error: true matrix error "
             f"(best real gain) after calibration; ratio: to the model-based error (chip known). A reading: one "
             f"input vector detected once per shot. Chip time at {CLOCK_TARGET}'s clock: configuration changes x "
             f"{pace.settle_s * 1e6:g} us heater settling + readings at {clock.clock_ghz:g} GHz (the ledger's counts). "
             "Twin readings split as characterisation / probes / refinement / check.", "",
             "| N | method | shots | error | / model | readings | twin readings | chip time | wall |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n in args.sizes:
        target = f"clements-{n}"
        u = pc.haar_unitary(n, np.random.default_rng(n))
        prog = pc.compile(u, target)
        chip = pc.fabricate(target, seed=args.chip_seed, circuit="unitary")
        model = pc.calibrate(prog, chip, "model", progress=False).report.summary
        ref = model["error_after"]
        lines.append(f"| {n} | uncalibrated | - | {model['error_before']:.4f} | "
                     f"{model['error_before'] / ref:.2f} | 0 | - | 0 | - |")
        lines.append(f"| {n} | model (chip known) | - | {ref:.4f} | 1.00 | 0 | - | 0 | - |")
        for shots in args.shots:
            for name in args.methods if n <= 8 else args.large_methods:
                t0 = time.perf_counter()
                box = pc.BlackBoxChip(chip, seed=0, shots=shots)
                cal = pc.calibrate(prog, box, methods(shots, n)[name], progress=False)
                err = pc.error(cal, chip)["matrix_error"]
                led = box.ledger
                chip_ms = (led.configurations * pace.settle_s + led.readings / pace.clock_hz) * 1e3
                lines.append(f"| {n} | {name} | {shots} | {err:.4f} | {err / ref:.2f} | {led.readings:.3g} | "
                             f"{split(cal.report.summary)} | {chip_ms:.1f} ms | {time.perf_counter() - t0:.0f} s |")
                print(lines[-1], flush=True)
    lines += ["", "Readings and chip time include the heater characterisation every method starts from "
              "(8 configurations per heater; 3 for twin-frugal)."]
    reproduce = _report.reproduce_command("benchmarks/measurement_cost.py", argv)
    return _report.finish(lines, load, reproduce, args.out, BEGIN, END)


if __name__ == "__main__":
    raise SystemExit(main())
