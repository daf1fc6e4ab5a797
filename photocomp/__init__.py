"""photocomp: a differentiable JAX compiler for programmable photonic MZI meshes.

Compile weight matrices to phase maps for a target chip, simulate the chip,
and run the result as jit-compiled forward functions::

    import photocomp as pc
    prog = pc.compile(W, target="pace-64")
    y = prog.forward(x)          # ~ W @ x
    prog.save("W.phases.npz"); prog2 = pc.load("W.phases.npz")
"""

from photocomp import convention, drift
from photocomp.cache import enable_compilation_cache
from photocomp.calibrate import Reachability, calibrate, error, local_correction, reachability
from photocomp.chip import Chip, fabricate
from photocomp.compiler import compile
from photocomp.detector import BlackBoxChip, detect, measure_matrix
from photocomp.decompose import clements, decompose, reck
from photocomp.errors import (
    InvalidInputError,
    InvalidTypeError,
    MismatchError,
    PhaseMapFileError,
    PhotocompError,
    PipelineError,
    UnknownNameError,
)
from photocomp.graph import circuit_graph, export_graph
from photocomp.io import load
from photocomp.ir import CompileReport, CompileState, PhaseMap, TileGrid
from photocomp.mesh import MeshLayout, layout
from photocomp.metrics import fidelity, matrix_error
from photocomp.phases import MeshPhases
from photocomp.pipeline import Pass, Pipeline, available_passes, parse_pipeline
from photocomp.program import Program
from photocomp.target import Target, get_target, targets

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "compile",
    "load",
    "enable_compilation_cache",
    "fabricate",
    "Chip",
    "BlackBoxChip",
    "measure_matrix",
    "detect",
    "calibrate",
    "error",
    "local_correction",
    "reachability",
    "Reachability",
    "targets",
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
    "PhotocompError",
    "InvalidInputError",
    "InvalidTypeError",
    "UnknownNameError",
    "PipelineError",
    "PhaseMapFileError",
    "MismatchError",
]
