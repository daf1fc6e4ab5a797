"""photocomp's compiler passes (one module per pass or family) and preset pipelines.

Each pass is a frozen dataclass deriving from :class:`photocomp.Pass`; passes
are registered in the ``photocomp.passes`` entry-point group, so pipeline
strings can name them.
"""

from photocomp.passes.canonicalize import Canonicalize
from photocomp.passes.crossbar import Crossbar
from photocomp.passes.decompose import Butterfly, Clements, Fldzhyan, Reck
from photocomp.passes.lower import Lower
from photocomp.passes.presets import preset
from photocomp.passes.quantize import Quantize
from photocomp.passes.svd import SVD
from photocomp.passes.tile import Tile
from photocomp.passes.unitary import Unitary
from photocomp.passes.validate import Validate

__all__ = ["Validate", "Tile", "SVD", "Unitary", "Clements", "Reck", "Butterfly", "Fldzhyan", "Crossbar", "Canonicalize",
           "Quantize", "Lower", "preset"]
