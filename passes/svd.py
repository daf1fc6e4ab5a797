"""``svd``: factor every tile as W = U Sigma V^H with Sigma normalised to [0, 1]."""

from __future__ import annotations

import dataclasses

import numpy as np

from photocomp.ir import CompileState
from photocomp.pipeline import Pass


@dataclasses.dataclass(frozen=True)
class SVD(Pass):
    """Singular value decomposition of every tile (transform pass).

    Passive optics can only attenuate, so each tile's singular values are
    divided by the largest one, sigma_max, which becomes the tile's
    electronic gain. An all-zero tile gets gain 0 and identity factors.
    Computed in float64 with LAPACK (numpy), batched over tiles.
    """

    name = "svd"
    requires = frozenset({"tiled"})
    provides = frozenset({"svd"})

    def __call__(self, state: CompileState):
        blocks = state.require("blocks", "tile")
        u, s, vh = np.linalg.svd(blocks)
        gain = s[:, 0].copy()
        zero = gain == 0
        safe = np.where(zero, 1.0, gain)
        s_norm = np.where(zero[:, None], 0.0, s / safe[:, None])
        k = blocks.shape[-1]
        if zero.any():
            u[zero] = np.eye(k)
            vh[zero] = np.eye(k)
        recon = np.einsum("tij,tj,tjk->tik", u, s, vh)
        err = float(np.max(np.abs(recon - blocks))) if blocks.size else 0.0
        return state.replace(svd=(u, s_norm, vh, gain)), {
            "max_gain": float(gain.max()),
            "zero_tiles": int(zero.sum()),
            "reconstruction_max_abs": err,
        }
