"""Preset pipelines: functions of a target returning a pipeline (like optax's presets)."""

from __future__ import annotations

from photocomp.compiler.pipeline import Pipeline
from photocomp.core.target import get_target


def preset(target, *, quantize: bool = True) -> Pipeline:
    """The default pipeline for ``target`` (a name or Target).

    ``validate | tile | svd | <mesh> | canonicalize | quantize(bits=<dac_bits>) | lower``;
    ``quantize=False`` leaves the phases unquantized.
    """
    t = get_target(target)
    text = t.default_pipeline()
    if not quantize:
        text = text.replace(f" | quantize(bits={t.dac_bits})", "")
    return Pipeline.parse(text)
