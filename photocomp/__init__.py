"""photocomp: a differentiable JAX compiler for programmable photonic MZI meshes.

Compile weight matrices to phase maps for a target chip, simulate the chip,
and run the result as jit-compiled forward functions::

    import photocomp as pc
    prog = pc.compile(W, target="pace-64")
    y = prog.forward(x)          # ~ W @ x
    prog.save("W.phases.npz"); prog2 = pc.load("W.phases.npz")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from photocomp.analysis.cost import Cost, cost
from photocomp.calibration.calibrate import calibrate
from photocomp.calibration.engine import Reachability, error, local_correction, reachability
from photocomp.calibration.methods import Cells, Diagonalize, InSitu, Local, Model, Nullify, SelfConfig, Twin
from photocomp.compiler.decompose import clements, decompose, reck
from photocomp.compiler.driver import compile
from photocomp.compiler.pipeline import Pass, Pipeline, available_passes, parse_pipeline
from photocomp.compiler.program import Program, load
from photocomp.compiler.state import CompileState
from photocomp.core import convention
from photocomp.core.errors import (
    InvalidInputError,
    InvalidTypeError,
    MismatchError,
    PhaseMapFileError,
    PhotocompError,
    PipelineError,
    UnknownNameError,
)
from photocomp.core.graph import circuit_graph, export_graph
from photocomp.core.ir import CompileReport, PhaseMap, TileGrid
from photocomp.core.layout import MeshLayout, layout
from photocomp.core.metrics import fidelity, matrix_error
from photocomp.core.phases import MeshPhases
from photocomp.core.reference import haar_unitary
from photocomp.core.target import Target, available_targets, get_target
from photocomp.core.version import __version__
from photocomp.hardware.chip import Chip, fabricate
from photocomp.hardware.detector import BlackBoxChip, detect, measure_matrix
from photocomp.io.cache import enable_compilation_cache
from photocomp.models.model import CompiledLayer, CompiledModel, compile_model, load_model

__all__ = [
    "__version__",
    "compile",
    "load",
    "compile_model",
    "load_model",
    "CompiledModel",
    "CompiledLayer",
    "enable_compilation_cache",
    "fabricate",
    "Chip",
    "BlackBoxChip",
    "measure_matrix",
    "detect",
    "calibrate",
    "Local",
    "Model",
    "Twin",
    "SelfConfig",
    "Nullify",
    "Diagonalize",
    "Cells",
    "InSitu",
    "error",
    "local_correction",
    "reachability",
    "Reachability",
    "cost",
    "Cost",
    "plot",
    "haar_unitary",
    "available_targets",
    "get_target",
    "Target",
    "Program",
    "Pass",
    "Pipeline",
    "parse_pipeline",
    "available_passes",
    "decompose",
    "clements",
    "reck",
    "layout",
    "MeshLayout",
    "MeshPhases",
    "PhaseMap",
    "TileGrid",
    "CompileState",
    "CompileReport",
    "circuit_graph",
    "export_graph",
    "fidelity",
    "matrix_error",
    "convention",
    "drift",
    "nn",
    "PhotocompError",
    "InvalidInputError",
    "InvalidTypeError",
    "UnknownNameError",
    "PipelineError",
    "PhaseMapFileError",
    "MismatchError",
]

# Loaded on first use (module-level __getattr__): the drift package, the photonic layers and the figures
# (which read drift studies) are not needed to compile, simulate or calibrate, and importing them costs
# part of `import photocomp`. `from photocomp import *` and attribute access load them as before.
_LAZY = {"drift": ("photocomp.drift", None), "nn": ("photocomp.nn", None), "plot": ("photocomp.analysis.plot", "plot")}

if TYPE_CHECKING:
    from photocomp import drift, nn
    from photocomp.analysis.plot import plot


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'photocomp' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
