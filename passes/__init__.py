"""photocomp's compiler passes (one module per pass or family) and preset pipelines.

Each pass is a frozen dataclass deriving from :class:`photocomp.Pass`; passes
are registered in the ``photocomp.passes`` entry-point group, so pipeline
strings can name them.
"""

from passes.canonicalize import Canonicalize
from passes.decompose import Clements, Reck
from passes.lower import Lower
from passes.presets import preset
from passes.quantize import Quantize
from passes.svd import SVD
from passes.tile import Tile
from passes.validate import Validate

__all__ = ["Validate", "Tile", "SVD", "Clements", "Reck", "Canonicalize", "Quantize", "Lower", "preset"]
