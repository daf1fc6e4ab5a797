"""A BERT-base-shaped network compiled onto tianshu-128 end to end: time and peak memory.

The weights are random (seeded, N(0, 0.02) as BERT initialises them) but every linear layer has the
shape of BERT-base's encoder: per layer the attention query, key, value and output projections
(768 x 768) and the feed-forward intermediate (768 x 3072) and output (3072 x 768) layers, twelve
layers, 84.9 M weights (embeddings and the pooler are lookups or outside the encoder and not
compiled). They are given as a Flax-style params tree (kernels ``(in, out)``) to
:func:`photocomp.compile_model` with the target's preset pipeline and a progress bar over the
layers. Reported: weights, tiles, wall time (whole and per layer kind), the peak resident memory of
the process, the compiled model's worst layer error, and the goals (≤ 10 min, ≤ 8 GB on a 2-core
machine).

Usage::

    python benchmarks/model_scale.py --out benchmarks/README.md
"""

from __future__ import annotations

import argparse
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

import photocomp as pc  # noqa: E402

BEGIN = "<!-- model-scale:begin -->"
END = "<!-- model-scale:end -->"
HIDDEN, FFN = 768, 3072
SHAPES = {  # (in, out) of every linear layer of one BERT-base encoder layer
    "attention_query": (HIDDEN, HIDDEN),
    "attention_key": (HIDDEN, HIDDEN),
    "attention_value": (HIDDEN, HIDDEN),
    "attention_output": (HIDDEN, HIDDEN),
    "intermediate": (HIDDEN, FFN),
    "output": (FFN, HIDDEN),
}


def bert_params(layers: int, seed: int) -> dict:
    """A params tree of ``layers`` BERT-base encoder layers with random N(0, 0.02) float32 kernels."""
    rng = np.random.default_rng(seed)
    return {f"layer_{i:02d}": {name: {"kernel": (0.02 * rng.standard_normal(shape)).astype(np.float32),
                                      "bias": np.zeros(shape[1], np.float32)}
                               for name, shape in SHAPES.items()}
            for i in range(layers)}


def peak_rss_gb() -> float:
    """Peak resident memory of this process (GB); ru_maxrss is in KiB on Linux."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12, help="encoder layers (BERT-base: 12)")
    ap.add_argument("--target", default="tianshu-128")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--power", action="store_true", help="also compute the report's heater powers (slower)")
    ap.add_argument("--out", type=Path, default=None, help="write the table into this markdown file")
    args = ap.parse_args(argv)
    load0 = _report.load_average()
    rss0 = peak_rss_gb()
    params = bert_params(args.layers, args.seed)
    weights = sum(leaf["kernel"].size for layer in params.values() for leaf in layer.values())
    t0 = time.perf_counter()
    model = pc.compile_model(params, target=args.target, power=args.power, progress=True)
    wall = time.perf_counter() - t0
    rep = model.report
    kinds: dict[str, list] = {k: [r for r in rep.layers if re.split(r"[/.]", r.name)[-1] == k] for k in SHAPES}
    times = {k: sum(r.compile_s for r in layers) for k, layers in kinds.items()}
    tiles = sum(layer.tiles for layer in rep.layers)
    worst = max(layer.matrix_error for layer in rep.layers)
    rss = peak_rss_gb()
    lines = [
        "## A BERT-base-shaped network onto tianshu-128", "",
        f"{args.layers} encoder layers of BERT-base's linear shapes (query, key, value, attention output "
        f"{HIDDEN}x{HIDDEN}; intermediate {HIDDEN}x{FFN}; output {FFN}x{HIDDEN}), random N(0, 0.02) float32 "
        f"weights (seed {args.seed}), {weights / 1e6:.1f} M weights, compiled by `photocomp.compile_model` onto "
        f"`{args.target}` with its preset pipeline (`{pc.get_target(args.target).default_pipeline()}`), one "
        f"process on this machine's CPU devices{'' if args.power else ', heater powers not computed'}.", "",
        "| layer kind | layers | tiles | compile time (sum) | worst matrix error |",
        "|:--|--:|--:|--:|--:|",
    ]
    for k, layers in kinds.items():
        if layers:
            lines.append(f"| {k} | {len(layers)} | {sum(x.tiles for x in layers)} | {times[k]:.1f} s | "
                         f"{max(x.matrix_error for x in layers):.3e} |")
    lines += ["", f"Whole model: {len(rep.layers)} layers, {tiles} tiles of {pc.get_target(args.target).size} modes, "
              f"{wall:.0f} s wall, peak resident memory {rss:.2f} GB (the process held {rss0:.2f} GB before the "
              f"weights were built); worst layer error {worst:.3e}.", "",
              "| goal | measured | met |", "|:--|:--|:--|",
              f"| ≤ 10 min | {wall / 60:.1f} min | {'yes' if wall <= 600 else 'no'} |",
              f"| ≤ 8 GB | {rss:.2f} GB | {'yes' if rss <= 8 else 'no'} |"]
    reproduce = f"python benchmarks/model_scale.py --layers {args.layers} --target {args.target} --seed {args.seed}" + (
        " --power" if args.power else "")
    return _report.finish(lines, load0, reproduce, args.out, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
