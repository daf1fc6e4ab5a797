"""Equinox photonic layers: :class:`PhotonicLinear` and :func:`from_model`.

A :class:`PhotonicLinear` holds real weights (out, in) and a bias like
``equinox.nn.Linear``; its forward pass runs the weights through the chip of
its :class:`~photocomp.nn.functional.ChipState`
(:func:`~photocomp.nn.functional.linear`): ``y = chip_matrix(W) @ x + b``,
batched over leading axes. The chip state is a static field, so ``jax.jit``
and ``equinox.filter_jit`` recompile when it changes and
``equinox.filter_grad`` differentiates the weights and the bias
(straight through the chip for the weights; see :mod:`photocomp.nn.functional`).

Equinox is the optional ``models`` extra (``pip install "photocomp[models]"``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.registry import quote
from photocomp.core.validate import check_int
from photocomp.nn.functional import ChipState, as_chip_state, chip_matrix, linear

try:
    import equinox as eqx
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("photocomp.nn.PhotonicLinear and photocomp.nn.from_model need equinox; install it with "
                      "pip install equinox (or pip install \"photocomp[models]\")") from exc

__all__ = ["PhotonicLinear", "from_model"]


def _is_linear(node: object) -> bool:
    return isinstance(node, eqx.nn.Linear)


class PhotonicLinear(eqx.Module):
    """A dense layer whose matrix product runs on a photonic chip: ``y = chip_matrix(W) @ x + b``.

    Args:
      in_features, out_features: sizes (ints >= 1).
      target: a :class:`~photocomp.nn.functional.ChipState`, or a target name
        or :class:`~photocomp.core.target.Target` with ``state`` and the
        ChipState's keyword options (``seed``, ``calibration``,
        ``temperature_k``, ``dac_bits``, ``adc_bits``, ``shots``).
      state: the chip state when ``target`` is not a ChipState (default ``"ideal"``).
      use_bias: whether the layer has a bias.
      key: ``jax.random`` key of the initial weights and bias, drawn like
        ``equinox.nn.Linear``'s (uniform on ``[-1/sqrt(in), 1/sqrt(in)]``).
      dtype: floating dtype of the parameters (default: JAX's default float).

    Attributes:
      weight: ``(out_features, in_features)``.
      bias: ``(out_features,)`` or None.
      chip: the :class:`~photocomp.nn.functional.ChipState` (static).

    Example:
      >>> import jax, photocomp as pc
      >>> layer = pc.nn.PhotonicLinear(6, 3, "clements-4", key=jax.random.key(0))
      >>> layer(jax.numpy.ones((5, 6))).shape
      (5, 3)
    """

    weight: jax.Array
    bias: jax.Array | None
    in_features: int = eqx.field(static=True)
    out_features: int = eqx.field(static=True)
    chip: ChipState = eqx.field(static=True)

    def __init__(self, in_features: int, out_features: int, target: object, state: str | None = None, *,
                 use_bias: bool = True, key: jax.Array, dtype=None, **options):
        self.in_features = check_int(in_features, "in_features", low=1)
        self.out_features = check_int(out_features, "out_features", low=1)
        self.chip = as_chip_state(target, state, **options)
        if not isinstance(use_bias, bool):
            raise InvalidTypeError(f"use_bias must be a bool; got {type(use_bias).__name__} {quote(use_bias)}")
        if not (isinstance(key, jax.Array) and (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                                                or (key.dtype == jnp.uint32 and key.shape == (2,)))):
            raise InvalidTypeError(f"key must be a jax.random key (jax.random.key(seed)); got "
                                   f"{type(key).__name__} {quote(key)}")
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64) if dtype is None else dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise InvalidTypeError(f"dtype must be a real floating dtype; got {quote(dtype)}")
        k_w, k_b = jax.random.split(key)
        lim = 1 / math.sqrt(self.in_features)
        self.weight = jax.random.uniform(k_w, (self.out_features, self.in_features), dtype, -lim, lim)
        self.bias = jax.random.uniform(k_b, (self.out_features,), dtype, -lim, lim) if use_bias else None

    @classmethod
    def from_linear(cls, layer: object, target: object, state: str | None = None, **options) -> PhotonicLinear:
        """The photonic layer with the weights and bias of an ``equinox.nn.Linear``."""
        if not _is_linear(layer):
            raise InvalidTypeError(f"layer must be an equinox.nn.Linear; got {type(layer).__name__}")
        assert isinstance(layer, eqx.nn.Linear)
        if layer.in_features == "scalar" or layer.out_features == "scalar":
            raise InvalidInputError("layer must map vectors to vectors; got an equinox.nn.Linear with "
                                    f"in_features={layer.in_features!r}, out_features={layer.out_features!r}")
        weight = jnp.asarray(layer.weight)
        new = cls(int(layer.in_features), int(layer.out_features), target, state, use_bias=layer.bias is not None,
                  key=jax.random.key(0), dtype=weight.dtype, **options)
        new = eqx.tree_at(lambda m: m.weight, new, weight)
        if layer.bias is not None:
            new = eqx.tree_at(lambda m: m.bias, new, jnp.asarray(layer.bias))
        return new

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``chip_matrix(weight) @ x + bias`` for ``x`` (..., in_features); ``key`` turns on detector noise."""
        return linear(self.weight, self.bias, x, self.chip, key)

    def matrix(self) -> jax.Array:
        """The (out, in) matrix the chip applies for the current weights."""
        return chip_matrix(self.weight, self.chip)


def from_model(model: object, target: object, state: str | None = None, **options) -> object:
    """``model`` with every ``equinox.nn.Linear`` replaced by a :class:`PhotonicLinear` of the same weights.

    Args:
      model: any Equinox module (or pytree holding Equinox modules).
      target: a :class:`~photocomp.nn.functional.ChipState`, or a target name or
        Target with ``state`` and the ChipState's options.
      state: the chip state when ``target`` is not a ChipState.

    Everything else (activations, convolutions, other layers) is kept as it
    is. A model's own ``__call__`` keeps working when it calls its layers on
    single examples, as Equinox models do. Raises
    :class:`~photocomp.core.errors.InvalidInputError` when the model holds no
    ``equinox.nn.Linear``.

    Example:
      >>> import equinox as eqx, jax, photocomp as pc
      >>> mlp = eqx.nn.MLP(4, 2, 8, 1, key=jax.random.key(0))
      >>> chip_mlp = pc.nn.from_model(mlp, "clements-8")
      >>> [type(layer).__name__ for layer in chip_mlp.layers]
      ['PhotonicLinear', 'PhotonicLinear']
    """
    chip = as_chip_state(target, state, **options)
    nodes = [n for n in jax.tree_util.tree_leaves(model, is_leaf=_is_linear) if _is_linear(n)]
    if not nodes:
        raise InvalidInputError(f"model must hold at least one equinox.nn.Linear; got a {type(model).__name__} "
                                "with none")

    def linears(m):
        return [n for n in jax.tree_util.tree_leaves(m, is_leaf=_is_linear) if _is_linear(n)]

    return eqx.tree_at(linears, model, replace_fn=lambda layer: PhotonicLinear.from_linear(layer, chip))
