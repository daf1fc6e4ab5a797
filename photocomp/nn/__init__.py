"""Photonic linear layers for hardware-aware training: the matrix a chip applies, and layers built on it.

:mod:`photocomp.nn.functional` holds the pure-JAX core (:class:`ChipState`,
:func:`chip_matrix`, :func:`read_out`, :func:`linear`); :mod:`photocomp.nn.layers`
the Equinox layer :class:`PhotonicLinear` and :func:`from_model`, which swaps
the ``eqx.nn.Linear`` layers of a model for photonic ones; and
:mod:`photocomp.nn.nnx` the same for Flax NNX. Equinox and Flax are imported
only when those names are first used::

    import photocomp as pc
    chip = pc.nn.ChipState("pace-64", "fabricated", seed=1)
    layer = pc.nn.PhotonicLinear(64, 10, chip, key=jax.random.key(0))
    model = pc.nn.from_model(eqx_model, chip)
"""

from __future__ import annotations

import importlib
from typing import Any

from photocomp.nn.functional import (
    CALIBRATIONS,
    STATES,
    ChipState,
    as_chip_state,
    chip_matrix,
    clear_cache,
    linear,
    read_out,
)

__all__ = ["ChipState", "STATES", "CALIBRATIONS", "as_chip_state", "chip_matrix", "read_out", "linear", "clear_cache",
           "PhotonicLinear", "from_model"]

_LAZY = {"PhotonicLinear": "photocomp.nn.layers", "from_model": "photocomp.nn.layers"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "nnx":
        return importlib.import_module("photocomp.nn.nnx")
    raise AttributeError(f"module 'photocomp.nn' has no attribute {name!r}")
