"""A BERT-base-shaped network compiled onto tianshu-128 end to end: time and peak memory.

The weights are random (seeded, N(0, 0.02) as BERT initialises them) but every linear layer has the
shape of BERT-base's encoder: per layer the attention query, key, value and output projections
(768 x 768) and the feed-forward intermediate (768 x 3072) and output (3072 x 768) layers, twelve
layers, 84.9 M weights (embeddings and the pooler are lookups or outside the encoder and not
compiled). They are given as a Flax-style params tree (kernels ``(in, out)``) to
:func:`photocomp.compile_model` with the target's preset pipeline and a progress bar over the
layers. Reported: weights, tiles, wall time (whole and per layer kind), the peak resident memory of
the process, the compiled model's worst layer error, the number of JAX devices the tiles were
sharded across (:mod:`photocomp.sim.devices`), and the goals (≤ 10 min, ≤ 8 GB on a 2-core machine).

``--host-devices K`` splits the host CPU into ``K`` JAX devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=K``, ``JAX_PLATFORMS=cpu``), set before JAX is
imported, so every layer's tiles are sharded across ``K`` devices as on a machine that has several.

Usage::

    python benchmarks/model_scale.py --out benchmarks/README.md
    python benchmarks/model_scale.py --layers 1 --host-devices 2
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np


def host_devices_option(argv: list[str] | None) -> int | None:
    """``--host-devices K`` of ``argv``, put into XLA_FLAGS (and JAX_PLATFORMS=cpu) before JAX is imported."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--host-devices", type=int, default=None)
    k = ap.parse_known_args(sys.argv[1:] if argv is None else argv)[0].host_devices
    if k is None:
        return None
    if k < 1:
        raise SystemExit(f"--host-devices must be an integer >= 1; got {k}")
    if "jax" in sys.modules:
        raise SystemExit("--host-devices must be set before JAX is imported (run this script as a program)")
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={k}"])
    os.environ["JAX_PLATFORMS"] = "cpu"  # the flag multiplies the host (CPU) devices
    return k


if __name__ == "__main__":
    host_devices_option(None)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402
import jax  # noqa: E402

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
    ap.add_argument("--host-devices", type=int, default=None,
                    help="split the host CPU into this many JAX devices (set before JAX is imported)")
    ap.add_argument("--out", type=Path, default=None, help="write the table into this markdown file")
    args = ap.parse_args(argv)
    devices = jax.device_count()
    if args.host_devices is not None and devices != args.host_devices:
        ap.error(f"--host-devices {args.host_devices} asks for {args.host_devices} JAX devices; this process has "
                 f"{devices} (JAX was imported before XLA_FLAGS was set)")
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
        f"process, tiles sharded across {devices} JAX device{'s' if devices > 1 else ''} "
        f"({jax.default_backend()}){'' if args.power else ', heater powers not computed'}.", "",
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
        " --power" if args.power else "") + (f" --host-devices {args.host_devices}" if args.host_devices else "")
    return _report.finish(lines, load0, reproduce, args.out, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
