"""Accuracy of a whole network per chip state: digital, ideal, fabricated, calibrated, drifting, DAC and ADC bits.

A two-layer MLP (64 -> 64 -> 10, ReLU) is trained digitally on scikit-learn's digits (1,437 training
and 360 test images, seed 2026, optax Adam), then both of its weight matrices run through the chip
states of :class:`photocomp.nn.ChipState` on ``pace-64`` (the 64x64 core, one tile per layer) and
the test accuracy is measured:

* digital (float32, no chip) and the ideal chip (exact phases, then the preset's 12-bit DAC);
* fabricated chips, uncalibrated and calibrated (local and model-based), over chip seeds;
* the calibrated chip as the die warms (ambient 0.25 ... 2 K, and 0.1 and 0.3 K gradients across the light)
  with the drives held: accuracy lost per K from a least-squares line through the ambient points;
* the phase-drive DAC (ideal chip) and the output ADC (calibrated chip) at several resolutions.

Usage::

    python benchmarks/accuracy.py --out benchmarks/README.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

import photocomp as pc  # noqa: E402

BEGIN = "<!-- accuracy:begin -->"
END = "<!-- accuracy:end -->"


def digits(seed: int):
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def train(x, y, seed: int, steps: int = 600):
    """A 64-64-10 ReLU MLP by Adam on the cross-entropy; weights (out, in) as a chip applies them."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"w1": jax.random.normal(k1, (64, 64)) / 8.0, "b1": jnp.zeros(64),
              "w2": jax.random.normal(k2, (10, 64)) / 8.0, "b2": jnp.zeros(10)}
    opt = optax.adam(1e-2)
    state = opt.init(params)

    def loss(p):
        logits = jax.nn.relu(x @ p["w1"].T + p["b1"]) @ p["w2"].T + p["b2"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s)
        return optax.apply_updates(p, u), s

    for _ in range(steps):
        params, state = step(params, state)
    return {k: np.asarray(v) for k, v in params.items()}


def accuracy(params, x, y, w1=None, w2=None) -> float:
    w1 = params["w1"] if w1 is None else w1
    w2 = params["w2"] if w2 is None else w2
    logits = np.maximum(x @ np.asarray(w1).T + params["b1"], 0) @ np.asarray(w2).T + params["b2"]
    return float(np.mean(np.argmax(logits, -1) == y))


def on_chip(params, x, y, cs: pc.nn.ChipState, key=None) -> float:
    """Test accuracy with both layers' matrices applied by the chip state (read-out ADC/noise when keyed)."""
    w1, w2 = (np.asarray(pc.nn.chip_matrix(params[k], cs)) for k in ("w1", "w2"))
    if key is None:
        return accuracy(params, x, y, w1, w2)
    k1, k2 = jax.random.split(key)
    h = np.maximum(np.asarray(pc.nn.read_out(jnp.asarray(x @ w1.T), cs, k1)) + params["b1"], 0)
    logits = np.asarray(pc.nn.read_out(jnp.asarray(h @ w2.T), cs, k2)) + params["b2"]
    return float(np.mean(np.argmax(logits, -1) == y))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="pace-64")
    ap.add_argument("--seed", type=int, default=2026, help="data split and training seed")
    ap.add_argument("--chips", type=int, nargs="+", default=[0, 1, 2], help="chip seeds")
    ap.add_argument("--out", type=Path, default=None, help="write the table into this markdown file")
    args = ap.parse_args(argv)
    load0 = _report.load_average()
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = digits(args.seed)
    params = train(xtr, ytr, args.seed)
    target = pc.get_target(args.target)
    rows: list[tuple[str, float, str]] = []
    digital = accuracy(params, xte, yte)
    rows.append(("digital (float32)", digital, "no chip"))
    rows.append(("ideal chip, exact phases", on_chip(params, xte, yte, pc.nn.ChipState(target)), "compiled, no DAC"))
    rows.append((f"ideal chip, {target.dac_bits}-bit DAC", on_chip(
        params, xte, yte, pc.nn.ChipState(target, dac_bits=target.dac_bits)), "the target's preset"))

    def over_chips(**kw) -> tuple[float, str]:
        accs = [on_chip(params, xte, yte, pc.nn.ChipState(target, seed=s, **kw)) for s in args.chips]
        return statistics.median(accs), f"median of chips {args.chips} (min {min(accs):.3f})"

    for name, kw in (("fabricated, uncalibrated", {"state": "fabricated"}),
                     ("calibrated (local)", {"state": "calibrated", "calibration": "local"}),
                     ("calibrated (model)", {"state": "calibrated", "calibration": "model"})):
        acc, note = over_chips(**kw)
        rows.append((name, acc, note))
    warm = [0.25, 0.5, 1.0, 2.0]
    drift = {}
    for dt in warm:
        drift[dt] = over_chips(state="drifting", calibration="model", temperature_k=dt)
        rows.append((f"calibrated (model), die +{dt:g} K", drift[dt][0], drift[dt][1]))
    for g in (0.1, 0.3):
        acc, note = over_chips(state="drifting", calibration="model", temperature_k=(0.0, 0.0, g))
        rows.append((f"calibrated (model), {g:g} K gradient across the light", acc, note))
    base = next(a for n, a, _ in rows if n == "calibrated (model)")
    ts = np.array([0.0] + warm)
    accs = np.array([base] + [drift[t][0] for t in warm])
    per_k = float(-np.polyfit(ts, accs, 1)[0])
    for bits in (8, 10, 12):
        rows.append((f"ideal chip, {bits}-bit DAC", on_chip(params, xte, yte, pc.nn.ChipState(target, dac_bits=bits)),
                     "phase quantization"))
    for bits in (2, 3, 4, 8):
        cs = pc.nn.ChipState(target, "calibrated", seed=args.chips[0], calibration="model", adc_bits=bits)
        rows.append((f"calibrated (model), {bits}-bit ADC + detector noise",
                     on_chip(params, xte, yte, cs, jax.random.key(args.seed)), f"chip {args.chips[0]}, noise key seeded"))
    wall = time.perf_counter() - t0
    lines = [
        "## Accuracy of a network per chip state", "",
        f"A 64-64-10 ReLU MLP trained digitally on scikit-learn's digits (seed {args.seed}; {len(xtr)} training, "
        f"{len(xte)} test images), both weight matrices run through `photocomp.nn.ChipState` on `{target.name}`; test "
        "accuracy:", "",
        "| chip state | test accuracy | vs digital | note |", "|:--|--:|--:|:--|",
    ]
    for name, acc, note in rows:
        lines.append(f"| {name} | {100 * acc:.2f} % | {100 * (acc - digital):+.2f} | {note} |")
    lines += ["", f"Accuracy lost per K of ambient warming with the calibration held (least squares through 0, "
              f"{', '.join(f'{t:g}' for t in warm)} K): {100 * per_k:.2f} points per K. Whole run {wall:.0f} s."]
    reproduce = (f"python benchmarks/accuracy.py --target {target.name} --seed {args.seed} --chips "
                 + " ".join(map(str, args.chips)))
    return _report.finish(lines, load0, reproduce, args.out, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
