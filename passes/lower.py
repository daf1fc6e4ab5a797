"""``lower``: fix the detection model and fold the ideal program into a dense matrix."""

from __future__ import annotations

import dataclasses

from photocomp.compiler.pipeline import Pass
from photocomp.compiler.state import CompileState
from photocomp.core.errors import UnknownNameError
from photocomp.core.metrics import np_matrix_error
from photocomp.core.registry import quote

_DETECTION = ("coherent", "intensity")


@dataclasses.dataclass(frozen=True)
class Lower(Pass):
    """Lower the phase map to an executable program (transform pass).

    Args:
      detection: ``"coherent"`` (the forward function returns output fields)
        or ``"intensity"`` (returns ``|y|^2``); default the target's.

    Also folds the ideal program into its dense (M, N) matrix, the fast path
    used when nothing varies per call. It must be the last pass that touches
    the program: a :class:`~photocomp.compiler.pipeline.Pipeline` refuses a
    later pass that reads or changes the phases, which would leave that
    matrix stale.
    """

    detection: str | None = None

    name = "lower"
    requires = frozenset({"phases"})
    provides = frozenset({"lowered"})

    def __post_init__(self):
        if self.detection is not None and self.detection not in _DETECTION:
            raise UnknownNameError(f"detection must be one of {_DETECTION}; got {quote(self.detection)}")

    def __call__(self, state: CompileState):
        state.require("phase_map", "clements")
        dense = state.program_matrix()
        detection = self.detection or state.target.detection
        return state.replace(dense=dense, detection=detection), {
            "detection": detection,
            "matrix_error": np_matrix_error(state.weights, dense),
        }
