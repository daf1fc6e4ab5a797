"""Which mesh should I build? Architectures compared on the same fabrication statistics.

For every architecture (``clements-N``: MZI cells; ``mzi3-N``: three-splitter
MZI cells; ``mzix-N``: MZI + crossing cells), size N and coupler
splitting-angle error sigma, a Haar-random N x N unitary (seed 2026) is
compiled onto the target (a unitary program: one mesh, no attenuators) and
run on chips fabricated with ``coupler_sigma_rad = sigma`` and lossless
components (losses cannot be corrected by phases and would hide the effect
studied). Every architecture's chip of one seed has the same MZI couplers;
the three-splitter MZI adds a third coupler per cell. Reported per row
(medians over the chip seeds):

* cells, heaters, optical depth (cells on the longest path);
* the uncorrected error (ideal settings on the chip);
* the error after local (per-cell) correction, and the unreachable fraction
  of cells with its floor;
* the error after model-based calibration (``--model``, slower).

Errors are ``||U - g U_chip||_F / ||U||_F`` with the best gain. The headline
of Hamerly et al., Nat. Commun. 13, 6831 (2022): after correction the MZI
mesh's error grows with N, the three-splitter mesh's does not.

Usage::

    python benchmarks/architectures.py --sizes 8 16 32 64 --sigmas 0.02 0.05 0.08 --seeds 0 1 2 \
        --out benchmarks/README.md
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

import photocomp as pc  # noqa: E402
from photocomp.calibration.engine import error, reachability  # noqa: E402

BEGIN = "<!-- architectures:begin -->"
END = "<!-- architectures:end -->"
FAMILIES = ("clements", "mzi3", "mzix")


def haar(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) / np.sqrt(2)
    q, r = np.linalg.qr(z)
    return q * (np.diag(r) / np.abs(np.diag(r)))


def row(family: str, n: int, sigma: float, seeds: list[int], model: bool, steps: int) -> dict:
    target = dataclasses.replace(pc.get_target(f"{family}-{n}"), coupler_sigma_rad=sigma, mzi_loss_db=0.0,
                                 mzi_loss_sigma_db=0.0)
    t0 = time.perf_counter()
    prog = pc.compile(haar(n, 2026), target)
    uncal, local, unreach, floor, mod = [], [], [], [], []
    for seed in seeds:
        chip = pc.fabricate(target, seed=seed, circuit=prog.circuit)
        uncal.append(error(prog, chip)["matrix_error"])
        local.append(error(pc.calibrate(prog, chip, "local", progress=False), chip)["matrix_error"])
        r = reachability(prog, chip)
        unreach.append(r.fraction)
        floor.append(r.floor)
        if model:
            cal = pc.calibrate(prog, chip, "model", progress=False, steps=steps)
            mod.append(error(cal, chip)["matrix_error"])
    chip = pc.fabricate(target, seed=seeds[0], circuit=prog.circuit)
    med = statistics.median
    return {"family": family, "n": n, "sigma": sigma, "cells": target.layout.n_mzi, "heaters": chip.n_heaters,
            "depth": target.depth, "uncal": med(uncal), "local": med(local), "unreach": med(unreach),
            "floor": med(floor), "model": med(mod) if mod else None, "wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.02, 0.05, 0.08])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--model", action="store_true", help="also run model-based calibration (slower)")
    ap.add_argument("--steps", type=int, default=300, help="model calibration steps")
    ap.add_argument("--out", type=Path, default=None, help="write the table into this markdown file")
    args = ap.parse_args(argv)
    load0 = _report.load_average()
    rows = [row(f, n, s, args.seeds, args.model, args.steps)
            for s in args.sigmas for n in args.sizes for f in FAMILIES]
    lines = [
        "## Architectures: which mesh should I build?", "",
        f"A Haar-random unitary (seed 2026) compiled onto each architecture (a unitary program, one mesh) and run "
        f"on chips with coupler splitting-angle errors of standard deviation sigma and no losses; medians over "
        f"chip seeds {args.seeds}. Every architecture's chip of one seed has the same MZI couplers (the "
        "three-splitter MZI adds a third). Errors are ||U - g U_chip||_F / ||U||_F with the best gain; "
        "'unreachable' is the fraction of cells whose splitting their couplers cannot reach, 'floor' the error "
        "those cells leave when everything else is perfect.", "",
        "| sigma (rad) | N | architecture | cells | heaters | depth | uncorrected | local | unreachable | floor |"
        + (" model |" if args.model else "") + " wall |",
        "|--:|--:|:--|--:|--:|--:|--:|--:|--:|--:|" + ("--:|" if args.model else "") + "--:|",
    ]
    for r in rows:
        model = f" {r['model']:.2e} |" if args.model else ""
        lines.append(f"| {r['sigma']:g} | {r['n']} | {r['family']} | {r['cells']} | {r['heaters']} | {r['depth']} | "
                     f"{r['uncal']:.3e} | {r['local']:.2e} | {r['unreach']:.3f} | {r['floor']:.2e} |{model} "
                     f"{r['wall_s']:.1f} s |")
    # the headline, computed: growth of the locally corrected error from the smallest to the largest N
    lines += ["", "Local-correction error, largest N over smallest N (per sigma):", "",
              "| sigma (rad) | " + " | ".join(FAMILIES) + " |", "|--:|" + "--:|" * len(FAMILIES)]
    for s in args.sigmas:
        cells = []
        for f in FAMILIES:
            errs = [r["local"] for r in rows if r["family"] == f and r["sigma"] == s]
            cells.append(f"{errs[-1]:.2e} / {errs[0]:.2e}")
        lines.append(f"| {s:g} | " + " | ".join(cells) + " |")
    reproduce = ("python benchmarks/architectures.py --sizes " + " ".join(map(str, args.sizes)) + " --sigmas "
                 + " ".join(f"{s:g}" for s in args.sigmas) + " --seeds " + " ".join(map(str, args.seeds))
                 + (f" --model --steps {args.steps}" if args.model else ""))
    return _report.finish(lines, load0, reproduce, args.out, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
