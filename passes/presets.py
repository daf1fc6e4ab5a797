"""Preset pipelines: functions of a target returning a pipeline (like optax's presets)."""

from __future__ import annotations

from photocomp.compiler.pipeline import Pipeline
from photocomp.core.errors import InvalidTypeError
from photocomp.core.target import Target, get_target


def preset(target: str | Target, *, quantize: bool = True, circuit: str | None = None) -> Pipeline:
    """The default pipeline for ``target`` (a name or Target).

    ``validate | tile | svd | <mesh> | canonicalize | quantize(bits=<dac_bits>) | lower``;
    ``quantize=False`` leaves the phases unquantized; ``circuit="unitary"``
    factors with ``unitary`` instead of ``svd`` (one mesh per tile). A crossbar target's pipeline is
    ``validate | tile | crossbar | canonicalize | quantize(bits=<dac_bits>) | lower`` (``circuit`` default:
    the target's first, :attr:`~photocomp.core.target.Target.circuits`).
    """
    if not isinstance(quantize, bool):
        raise InvalidTypeError(f"quantize must be a bool; got {type(quantize).__name__}")
    pipe = Pipeline.parse(get_target(target).default_pipeline(circuit))
    if quantize:
        return pipe
    return Pipeline(tuple(p for p in pipe.passes if "quantized" not in p.provides))
