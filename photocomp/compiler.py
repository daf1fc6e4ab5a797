"""``compile``: weights in, a :class:`~photocomp.program.Program` out."""

from __future__ import annotations

import types
from typing import Callable

import jax
import numpy as np

from photocomp.errors import InvalidTypeError, PipelineError
from photocomp.ir import CompileReport, CompileState
from photocomp.metrics import fidelity
from photocomp.pipeline import Pipeline, get_pass
from photocomp.program import Program
from photocomp.target import get_target
from photocomp.validate import as_matrix

__all__ = ["compile"]


def _resolve_pipeline(pipeline, target) -> Pipeline:
    if pipeline is None:
        pipe = Pipeline.parse(target.default_pipeline())
    elif isinstance(pipeline, Pipeline):
        pipe = pipeline
    elif isinstance(pipeline, str):
        pipe = Pipeline.parse(pipeline)
    else:
        raise InvalidTypeError(f"pipeline must be None, a string or a photocomp.Pipeline; got {type(pipeline).__name__}")
    if "phases" not in pipe.provides:
        raise PipelineError(
            f"pipeline must include a decomposition pass ({target.mesh!r} for target {target.name!r}); got {str(pipe)!r}"
        )
    if "lowered" not in pipe.provides:
        pipe = Pipeline(pipe.passes + (get_pass("lower"),))
    return pipe


def _summary(state: CompileState) -> dict:
    pm = state.phase_map
    with jax.enable_x64(True):
        w_hat = np.asarray(state.dense)
        out = {}
        if state.svd is not None:
            u, _, vh, _ = state.svd
            f_v = np.asarray(fidelity(vh, pm.v.unitary()))
            f_u = np.asarray(fidelity(u, pm.u.unitary()))
            out["min_mesh_fidelity"] = float(min(f_v.min(), f_u.min()))
    from photocomp.metrics import np_matrix_error

    out["matrix_error"] = np_matrix_error(state.weights, w_hat)
    out["max_abs_error"] = float(np.max(np.abs(w_hat - state.weights)))
    return out


def compile(weights, target="pace-64", pipeline=None, *, callback: Callable | None = None,
            progress: bool = False) -> Program:
    """Compile a weight matrix to a phase map for a target chip.

    Args:
      weights: any finite real or complex (M, N) array-like; non-square and
        rank-deficient matrices are fine. Larger than the target: tiled.
      target: a target name (see :func:`photocomp.targets`) or a
        :class:`~photocomp.target.Target`.
      pipeline: ``None`` for the target's preset, a pipeline string such as
        ``"tile | svd | clements | canonicalize | quantize(bits=10) | lower"``,
        or a :class:`~photocomp.pipeline.Pipeline`. A ``lower`` pass is
        appended when missing.
      callback: optional ``callback(pass_, record, state)`` after every pass.
      progress: show a progress bar over the passes.

    Returns:
      a :class:`~photocomp.program.Program` whose ``report`` holds per-pass
      wall time and metrics.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> w = np.random.default_rng(0).normal(size=(5, 3))
      >>> prog = pc.compile(w, target="clements-8")
      >>> prog.report.summary["matrix_error"] < 1e-2
      True
    """
    tgt = get_target(target)
    w = as_matrix(weights, "weights")
    pipe = _resolve_pipeline(pipeline, tgt)
    state = CompileState(weights=w, target=tgt, provided=frozenset({"weights"}))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pipe.passes), desc=f"compile {w.shape[0]}x{w.shape[1]} -> {tgt.name}", unit="pass")

    def hook(p, rec, st):
        if bar is not None:
            bar.set_postfix_str(p.name)
            bar.update(1)
        if callback is not None:
            callback(p, rec, st)

    try:
        state = pipe.run(state, callback=hook)
    finally:
        if bar is not None:
            bar.close()
    summary = _summary(state)
    report = CompileReport(state.records, types.MappingProxyType(summary))
    return Program(tgt, state.phase_map, report, str(pipe), state.detection, state.dense)
