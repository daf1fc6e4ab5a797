"""Which mesh should I build? Architectures compared on the same fabrication statistics.

For every architecture (``clements-N``: MZI cells; ``mzi3-N``: three-splitter
MZI cells; ``mzix-N``: MZI + crossing cells; ``bell-N``: symmetric MZI cells
with input, edge and output phase layers, Bell & Walmsley 2021; ``butterfly-N``:
the FFT-pattern mesh, N a power of two, not universal; ``fldzhyan-N``: Fldzhyan
et al. 2020's 2N brick columns of static couplers, programmed by fitting, up to
:data:`FLDZHYAN_MAX` modes; ``crossbar-N``: no mesh, a fan-out / weight / fan-in
core of N^2 weight MZIs between splitter trees, :mod:`photocomp.core.crossbar`,
whose unitary program is its crossbar program), size N and coupler
splitting-angle error sigma, a Haar-random N x N unitary (seed 2026) is
compiled onto the target (a unitary program: one mesh, no attenuators) and
run on chips fabricated with ``coupler_sigma_rad = sigma`` and lossless
components (losses cannot be corrected by phases and would hide the effect
studied). Every architecture's chip of one seed has the same MZI couplers;
the three-splitter MZI adds a third coupler per cell. Reported per row
(medians over the chip seeds):

* cells, heaters, optical depth (cells on the longest path), phase-shifter
  layers light crosses (``phase_layers`` of :func:`photocomp.cost`), and the
  insertion loss of the worst path at the target's nominal component losses
  (``insertion_loss_db`` of :func:`photocomp.cost` of the program compiled onto
  the unmodified target: the chips of the table are lossless);
* the uncorrected error (ideal settings on the chip);
* the error after local (per-cell) correction, and the unreachable fraction
  of cells with the error clipping them leaves (``Reachability.clip_error``);
* the error after model-based calibration (``--model``, slower);
* drift sensitivity: the error 1 K of ambient warming, and 1 K of gradient
  across the modes, add to the locally corrected program (:func:`drift_sensitivity`;
  for Fldzhyan's layout, whose local correction corrects nothing, to the
  model-calibrated one when ``--model`` is given).

Errors are ``||U - g U_chip||_F / ||U||_F`` with the best gain, ``U`` the compiled
program's matrix; the "compiled" column is the error of that program against
the Haar unitary itself (the DAC quantization for the universal meshes, the fit's error
for a butterfly, which reaches only its own family, and for Fldzhyan's layout, whose fit
stalls in local minima from about 12 modes on). Fldzhyan's cells have no adjustable
splitting: local correction only sets their phases, every cell with a coupler error is
unreachable on its own, and only model calibration (a fit on the chip) uses the layout's
tolerance of coupler errors. A crossbar's cells err independently: its local
correction is exact for every cell that reaches its share of the tile, and its
unreachable cells are the small entries below their cell's extinction floor
(the trees' splitting errors are on its chips too). The headline
of Hamerly et al., Nat. Commun. 13, 6831 (2022): after correction the MZI
mesh's error grows with N, the three-splitter mesh's does not.

Usage::

    python benchmarks/architectures.py --sizes 16 32 64 128 --sigmas 0.01 0.03 0.06 0.1 --seeds 0 1 2 \
        --model --out benchmarks/README.md --plot benchmarks/architectures.png

The whole table keeps every XLA program it compiles, and by its end the process holds nearly as
many memory maps as Linux's default ``vm.max_map_count`` (65,530) allows; past it LLVM stops the run
with "Cannot allocate memory". Raise the limit (``sysctl vm.max_map_count=262144``) or run fewer sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

import photocomp as pc  # noqa: E402
from photocomp.calibration.engine import error, ideal_tiles, reachability  # noqa: E402
from photocomp.hardware.chipsim import chip_tile_matrices, flatten_heaters, unflatten_heaters  # noqa: E402

BEGIN = "<!-- architectures:begin -->"
END = "<!-- architectures:end -->"
FAMILIES = ("clements", "mzi3", "mzix", "bell", "butterfly", "fldzhyan", "crossbar")
FLDZHYAN_MAX = 32
"""Largest Fldzhyan layout in the table: its fit is far from exact beyond, and takes minutes per mesh."""


def available(family: str, n: int) -> bool:
    """Whether ``family`` has an ``n``-mode mesh in the table (a butterfly needs a power of two; Fldzhyan's
    layout stops at :data:`FLDZHYAN_MAX`)."""
    if family == "fldzhyan":
        return n <= FLDZHYAN_MAX
    return family != "butterfly" or (n >= 2 and n & (n - 1) == 0)


def row(family: str, n: int, sigma: float, seeds: list[int], model: bool, steps: int) -> dict:
    target = dataclasses.replace(pc.get_target(f"{family}-{n}"), coupler_sigma_rad=sigma, mzi_loss_db=0.0,
                                 mzi_loss_sigma_db=0.0, crossing_loss_db=0.0)
    t0 = time.perf_counter()
    u = pc.haar_unitary(n, np.random.default_rng(2026))
    prog = pc.compile(u, target)
    compiled = float(np.linalg.norm(np.asarray(prog.matrix()) - u) / np.linalg.norm(u))
    nominal = pc.cost(pc.compile(pc.haar_unitary(n, np.random.default_rng(2026)), f"{family}-{n}"))
    uncal, local, unreach, clip, mod, drift = [], [], [], [], [], []
    for seed in seeds:
        chip = pc.fabricate(target, seed=seed, circuit=prog.circuit)
        uncal.append(error(prog, chip)["matrix_error"])
        cal = pc.calibrate(prog, chip, "local", progress=False)
        local.append(error(cal, chip)["matrix_error"])
        r = reachability(prog, chip)
        unreach.append(r.fraction)
        clip.append(r.clip_error)
        if model:
            fitted = pc.calibrate(prog, chip, "model", progress=False, steps=steps)
            mod.append(error(fitted, chip)["matrix_error"])
        if family == "fldzhyan" and model:  # its local correction corrects nothing: drift from the fitted program
            drift.append(drift_sensitivity(fitted, chip, mod[-1]))
        else:
            drift.append(drift_sensitivity(cal, chip, local[-1]))
    chip = pc.fabricate(target, seed=seeds[0], circuit=prog.circuit)
    med = statistics.median
    return {"family": family, "n": n, "sigma": sigma, "compiled": compiled, "cells": target.layout.n_mzi, "heaters": chip.n_heaters,
            "depth": target.depth, "layers": pc.cost(prog).phase_layers, "loss_db": nominal.insertion_loss_db,
            "uncal": med(uncal), "local": med(local), "unreach": med(unreach), "clip": med(clip), "model": med(mod) if mod else None, "ambient": med(d[0] for d in drift),
            "gradient": med(d[1] for d in drift),
            "wall_s": time.perf_counter() - t0}


PLOT_FLOOR = 1e-16
"""Errors below this (rounding) are drawn at it on the figure's log scale."""
COLOURS = {"clements": "tab:blue", "mzi3": "tab:green", "mzix": "tab:orange", "bell": "tab:red",
           "butterfly": "tab:purple", "fldzhyan": "tab:brown", "crossbar": "tab:gray"}


def plot(path: Path, rows: list[dict], sigmas: list[float], model: bool) -> None:
    """Error after local correction (and model calibration) against N, one panel per sigma: Hamerly et al.'s
    headline as curves (the MZI meshes' errors grow with N, the three-splitter mesh's stays at rounding)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sigmas), figsize=(4.2 * len(sigmas), 4), sharey=True, squeeze=False)
    for ax, sigma in zip(axes[0], sigmas):
        for fam in FAMILIES:
            pts = sorted((r["n"], r["local"], r["model"]) for r in rows if r["family"] == fam and r["sigma"] == sigma)
            if not pts:
                continue
            n = [p[0] for p in pts]
            ax.plot(n, [max(p[1], PLOT_FLOOR) for p in pts], "-o", color=COLOURS[fam], label=f"{fam} local")
            if model:
                ax.plot(n, [max(p[2], PLOT_FLOOR) for p in pts], "--s", color=COLOURS[fam], alpha=0.7,
                        label=f"{fam} model")
        ax.set_xscale("log", base=2)
        sizes = sorted({r["n"] for r in rows if r["sigma"] == sigma})
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel("N (modes)")
        ax.set_title(f"sigma = {sigma:g} rad")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("error after correction")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    _report.save_figure(fig, path)
    plt.close(fig)


def drift_sensitivity(cal, chip, fresh: float) -> tuple[float, float]:
    """Error 1 K adds to a calibrated program: ``(ambient, gradient)``.

    Ambient: the whole die 1 K warmer (differential phases come from the arms' length imbalance).
    Gradient: 0 K at mode 0 to 1 K at mode N - 1 (a crossbar: its first to last row of cells), the error taken after the best phase per output (a
    gradient across the modes delays each output's light differently along its whole path; a coherent
    receiver tracking its reference removes that, so the error left is what the mesh's mixing lost).
    Both with the best complex gain (the drift studies' error) and 30 um RMS arm-length imbalance (the default ``ThermalProcess``'s); each is
    ``sqrt(max(e^2 - e_fresh^2, 0))``.
    """
    t = chip.target
    # a mesh's modes, a crossbar's rows of weight cells (two mode pitches each): 1 K from the first to the last
    height = (t.size - 1) * t.mode_pitch_um * (2 if t.layout.crossbar else 1)
    fields = lambda xy: np.column_stack([np.ones(len(xy)), xy[:, 1] / height])  # noqa: E731  (P, 2) K
    shift = pc.drift.thermal_phase_map(t, pc.drift.sample_imbalance(chip, 30.0), fields, circuit=chip.circuit)
    s = cal.settings
    target = np.asarray(ideal_tiles(cal))
    out = []
    for b in range(2):
        warm = unflatten_heaters(s, np.asarray(flatten_heaters(s)) + shift[:, b], t)
        with jax.enable_x64(True):
            got = np.asarray(chip_tile_matrices(chip, warm, with_gain=False))
        if b == 1:  # the best phase per output row
            got = got * np.exp(1j * np.angle(np.sum(np.conj(got) * target, axis=-1)))[..., None]
        g = np.sum(np.conj(got) * target) / np.sum(np.abs(got) ** 2)  # the best complex gain: a common phase
        e1 = float(np.linalg.norm(target - g * got) / np.linalg.norm(target))
        out.append(float(np.sqrt(max(e1**2 - fresh**2, 0.0))))
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.02, 0.05, 0.08])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--model", action="store_true", help="also run model-based calibration (slower)")
    ap.add_argument("--steps", type=int, default=300, help="model calibration steps")
    ap.add_argument("--out", type=Path, default=None, help="write the table into this markdown file")
    ap.add_argument("--plot", type=Path, default=None,
                    help="draw the corrected errors against N into this image (a PNG beside --out, linked from it)")
    args = ap.parse_args(argv)
    load0 = _report.load_average()
    rows = [row(f, n, s, args.seeds, args.model, args.steps)
            for s in args.sigmas for n in args.sizes for f in FAMILIES if available(f, n)]
    lines = [
        "## Architectures: which mesh should I build?", "",
        f"A Haar-random unitary (seed 2026) compiled onto each architecture (a unitary program, one mesh) and run "
        f"on chips with coupler splitting-angle errors of standard deviation sigma and no losses; medians over "
        f"chip seeds {args.seeds}. Every architecture's chip of one seed has the same MZI couplers (the "
        "three-splitter MZI adds a third; the Bell mesh's symmetric cells have the same two). 'compiled' is the "
        "error of the compiled program against the unitary (DAC quantization; a butterfly reaches only its own "
        "family, so also the fit's error, as does Fldzhyan's layout of static couplers, fitted up to "
        f"N = {FLDZHYAN_MAX}); the chip errors are against the compiled program. Fldzhyan's cells cannot "
        "change their splitting: local correction only sets their phases, every cell with a coupler error is "
        "unreachable on its own, and only model calibration fits the layout to its chip. A crossbar is no mesh: "
        "N^2 weight cells between splitter trees, one cell per entry of the unitary, whose 'depth' is its one "
        "column of cells (its trees add no phase). 'phase layers' "
        "counts the phase-shifter layers light crosses; 'worst path' is the insertion loss of the highest-loss "
        "path at the target's nominal component losses. Errors are ||U - g U_chip||_F / ||U||_F with the best gain; "
        "'unreachable' is the fraction of cells whose splitting their couplers cannot reach, 'clip error' the error "
        "those cells leave when everything else is perfect; '+1 K ambient' and '+1 K gradient' the error a die "
        "1 K warmer, or 1 K warmer on its last mode than on its first, adds to the locally corrected program "
        "(30 um RMS arm imbalance; the gradient's after the best phase per output, which a coherent receiver "
        "tracks)" + ("; for Fldzhyan's layout to the model-calibrated program" if args.model else "") + ".", "",
        "| sigma (rad) | N | architecture | compiled | cells | heaters | depth | phase layers | worst path (dB) | uncorrected "
        "| local | unreachable | clip error |" + (" model |" if args.model else "") + " +1 K ambient | +1 K gradient | wall |",
        "|--:|--:|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|" + ("--:|" if args.model else "") + "--:|--:|--:|",
    ]
    for r in rows:
        model = f" {r['model']:.2e} |" if args.model else ""
        lines.append(f"| {r['sigma']:g} | {r['n']} | {r['family']} | {r['compiled']:.1e} | {r['cells']} | "
                     f"{r['heaters']} | {r['depth']} | "
                     f"{r['layers']} | {r['loss_db']:.2f} | "
                     f"{r['uncal']:.3e} | {r['local']:.2e} | {r['unreach']:.3f} | {r['clip']:.2e} |{model} "
                     f"{r['ambient']:.2e} | {r['gradient']:.2e} | {r['wall_s']:.1f} s |")
    # the headline, computed: growth of the locally corrected error from the smallest to the largest N
    lines += ["", "Local-correction error, largest N over smallest N (per sigma):", "",
              "| sigma (rad) | " + " | ".join(FAMILIES) + " |", "|--:|" + "--:|" * len(FAMILIES)]
    for s in args.sigmas:
        cells = []
        for f in FAMILIES:
            errs = [r["local"] for r in rows if r["family"] == f and r["sigma"] == s]
            cells.append(f"{errs[-1]:.2e} / {errs[0]:.2e}" if errs else "-")
        lines.append(f"| {s:g} | " + " | ".join(cells) + " |")
    reproduce = ("python benchmarks/architectures.py --sizes " + " ".join(map(str, args.sizes)) + " --sigmas "
                 + " ".join(f"{s:g}" for s in args.sigmas) + " --seeds " + " ".join(map(str, args.seeds))
                 + (f" --model --steps {args.steps}" if args.model else ""))
    if args.plot is not None:
        plot(args.plot, rows, args.sigmas, args.model)
        link = args.plot.name if args.out is not None and args.plot.parent.resolve() == args.out.parent.resolve() \
            else args.plot.as_posix()
        lines += ["", f"![corrected error against N, per sigma]({link})", "",
                  f"The figure ({link}): the medians above, after local correction (solid)"
                  + (" and model calibration (dashed)" if args.model else "") + " against N, one panel per sigma; "
                  f"errors below {PLOT_FLOOR:g} (rounding) are drawn at {PLOT_FLOOR:g}."]
        reproduce += f" --plot {_report.out_name(args.plot)}"
    return _report.finish(lines, load0, reproduce, args.out, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
