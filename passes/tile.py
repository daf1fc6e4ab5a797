"""``tile``: cut the weights into K x K blocks with zero padding."""

from __future__ import annotations

import dataclasses

from photocomp.compiler.pipeline import Pass
from photocomp.compiler.state import CompileState
from photocomp.core.errors import InvalidInputError
from photocomp.core.ir import TileGrid
from photocomp.core.validate import check_int


@dataclasses.dataclass(frozen=True)
class Tile(Pass):
    """Tile an M x N matrix onto ``size`` x ``size`` blocks (transform pass).

    Args:
      size: tile size K; default (``None``) the target's mesh size. Must not
        exceed the target's size. Partial products of the tiles in one block
        row are accumulated electronically.
    """

    size: int | None = None

    name = "tile"
    requires = frozenset({"weights"})
    provides = frozenset({"tiled"})
    counts = frozenset({"tiles"})

    def __post_init__(self):
        if self.size is not None:
            check_int(self.size, "tile size", low=2)

    def __call__(self, state: CompileState):
        k = state.target.size if self.size is None else self.size
        if k > state.target.size:
            raise InvalidInputError(
                f"tile size must be <= the target's {state.target.size} modes ({state.target.name}); got {k}"
            )
        m, n = state.weights.shape
        grid = TileGrid(out_dim=m, in_dim=n, tile=k)
        blocks = grid.split(state.weights)
        return state.replace(grid=grid, blocks=blocks), {
            "tiles": grid.n_tiles,
            "grid": f"{grid.rows}x{grid.cols}",
            "tile": k,
        }
