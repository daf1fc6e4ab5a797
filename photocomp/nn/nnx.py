"""Flax NNX photonic layers: :class:`PhotonicLinear` and :func:`from_model`.

The NNX counterpart of :mod:`photocomp.nn.layers`. An NNX ``Linear`` keeps
its ``kernel`` as (in, out); :class:`PhotonicLinear` keeps the same layout, so
its parameters read like ``flax.nnx.Linear``'s, and runs ``kernel.T`` (out,
in) through the chip: ``y = x @ chip_matrix(kernel.T).T + bias``.

Flax is not a dependency of photocomp, nor in any of its extras: it pulls
in orbax and tensorstore, and its releases for the JAX versions photocomp
supports need newer JAX than photocomp's floor (flax 0.12.1 and later need
jax >= 0.8.1). ``pip install flax`` adds it; importing this module without
it raises an ``ImportError`` that says so. Tested with flax 0.12.8.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.validate import check_int
from photocomp.nn.functional import ChipState, as_chip_state, chip_matrix, linear

try:
    from flax import nnx
except ImportError as exc:  # pragma: no cover - exercised only without flax
    raise ImportError("photocomp.nn.nnx needs the flax package (Flax NNX), which photocomp does not install; "
                      "install it with pip install flax") from exc

__all__ = ["PhotonicLinear", "from_model"]


class PhotonicLinear(nnx.Module):
    """A Flax NNX dense layer whose matrix product runs on a photonic chip.

    Args:
      in_features, out_features: sizes (ints >= 1).
      target: a :class:`~photocomp.nn.functional.ChipState`, or a target name
        or Target with ``state`` and the ChipState's keyword options.
      state: the chip state when ``target`` is not a ChipState (default ``"ideal"``).
      use_bias: whether the layer has a bias.
      rngs: ``flax.nnx.Rngs`` for the initial kernel (LeCun normal, as
        ``nnx.Linear``) and bias (zeros).

    Attributes:
      kernel: ``nnx.Param`` (in_features, out_features), as ``nnx.Linear``'s.
      bias: ``nnx.Param`` (out_features,) or None.
      chip: the :class:`~photocomp.nn.functional.ChipState`.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp, photocomp as pc
      >>> layer = pc.nn.nnx.PhotonicLinear(6, 3, "clements-4", rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((5, 6))).shape
      (5, 3)
    """

    def __init__(self, in_features: int, out_features: int, target: object, state: str | None = None, *,
                 use_bias: bool = True, rngs: nnx.Rngs, **options):
        self.in_features = check_int(in_features, "in_features", low=1)
        self.out_features = check_int(out_features, "out_features", low=1)
        self.chip: ChipState = as_chip_state(target, state, **options)
        if not isinstance(use_bias, bool):
            raise InvalidTypeError(f"use_bias must be a bool; got {type(use_bias).__name__}")
        if not isinstance(rngs, nnx.Rngs):
            raise InvalidTypeError(f"rngs must be a flax.nnx.Rngs; got {type(rngs).__name__}")
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (self.in_features, self.out_features)))
        self.bias = nnx.Param(jnp.zeros((self.out_features,), self.kernel.dtype)) if use_bias else None

    @classmethod
    def from_linear(cls, layer: object, target: object, state: str | None = None, **options) -> PhotonicLinear:
        """The photonic layer with the kernel and bias of a ``flax.nnx.Linear``."""
        if not isinstance(layer, nnx.Linear):
            raise InvalidTypeError(f"layer must be a flax.nnx.Linear; got {type(layer).__name__}")
        new = cls(layer.in_features, layer.out_features, target, state, use_bias=layer.bias is not None,
                  rngs=nnx.Rngs(0), **options)
        new.kernel = nnx.Param(jnp.asarray(layer.kernel[...]))
        if layer.bias is not None:
            new.bias = nnx.Param(jnp.asarray(layer.bias[...]))
        return new

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``x @ chip_matrix(kernel.T).T + bias`` for ``x`` (..., in_features); ``key`` turns on detector noise."""
        bias = None if self.bias is None else self.bias[...]
        return linear(self.kernel[...].T, bias, x, self.chip, key)

    def matrix(self) -> jax.Array:
        """The (out, in) matrix the chip applies for the current kernel."""
        return chip_matrix(self.kernel[...].T, self.chip)


def _child(node: Any, step: Any) -> Any:
    return node[step] if isinstance(step, int) else getattr(node, step)


def from_model(model: object, target: object, state: str | None = None, **options) -> Any:
    """A copy of an NNX ``model`` with every ``flax.nnx.Linear`` replaced by a :class:`PhotonicLinear`.

    The weights are the same; the original model is not changed
    (``nnx.clone``). Raises :class:`~photocomp.core.errors.InvalidInputError`
    when the model holds no ``nnx.Linear``, and
    :class:`~photocomp.core.errors.InvalidTypeError` when ``model`` is not an
    ``nnx.Module``.
    """
    if not isinstance(model, nnx.Module):
        raise InvalidTypeError(f"model must be a flax.nnx.Module; got {type(model).__name__}")
    chip = as_chip_state(target, state, **options)
    copy = nnx.clone(model)
    found = [path for path, node in nnx.iter_graph(copy) if isinstance(node, nnx.Linear)]
    if not found:
        raise InvalidInputError(f"model must hold at least one flax.nnx.Linear; got a {type(model).__name__} with none")
    if () in found:
        return PhotonicLinear.from_linear(copy, chip)
    for path in found:
        parent: Any = copy
        for step in path[:-1]:
            parent = _child(parent, step)
        last: Any = path[-1]
        new = PhotonicLinear.from_linear(_child(parent, last), chip)
        if isinstance(last, int):
            parent[last] = new
        else:
            setattr(parent, str(last), new)
    return copy
