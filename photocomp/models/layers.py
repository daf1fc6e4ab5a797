"""Layers of a model as matrices: conventions, convolutions by im2col, activations, digital arithmetic.

Every linear layer becomes one real matrix ``W`` of shape ``(out, in)``
acting on a column ``x`` of length ``in``: ``y = W x + b`` (the bias ``b``
is added electronically, after detection). Where each kind of model keeps
its weights (see :mod:`photocomp.models.sources` for the readers):

=====================================  ======================  =========================================
source                                 dense weight            convolution kernel
=====================================  ======================  =========================================
Flax params tree (``kernel``)          ``(in, out)``: W = k.T  ``(kh, kw, in, out)`` (HWIO), data ``HWC``
torch / safetensors / Equinox          ``(out, in)``: W = w    ``(out, in, kh, kw)`` (OIHW), data ``CHW``
(``weight``)
ONNX ``Gemm``                          ``B`` ``(in, out)``: W = alpha B.T; with ``transB=1`` W = alpha B
ONNX ``MatMul`` (x @ B)                ``B`` ``(in, out)``: W = B.T
ONNX ``Conv``                                                  ``(out, in, kh, kw)`` (OIHW), data ``CHW``
=====================================  ======================  =========================================

A one-dimensional convolution (kernel ``(out, in, k)``, or ``(k, in, out)``
in Flax) is a two-dimensional one of height 1.

Convolutions (im2col)
---------------------
A kernel in OIHW order ``(out_ch, in_ch, kh, kw)`` becomes the matrix
``W = kernel.reshape(out_ch, in_ch * kh * kw)``: row ``o``, column
``(c * kh + i) * kw + j`` (input channel slowest, kernel column fastest).
A ``CHW`` input is padded (``pads = (top, left, bottom, right)``) and cut
into patches, one column per output position ``(p, q)`` in row-major order:
``P[(c * kh + i) * kw + j, p * ow + q] = x_pad[c, p * sh + i * dh, q * sw + j * dw]``,
so that ``Y = W P`` is the convolution (cross-correlation, as every framework
computes it), ``(out_ch, oh, ow)`` after reshaping, with
``oh = (H + top + bottom - dh (kh - 1) - 1) // sh + 1`` (likewise ``ow``).
The chip applies ``W`` to every patch column in turn: a layer with ``L``
output positions streams ``L`` vectors through each tile setting. ``"same"``
padding pads ``max((ceil(H / s) - 1) s + d (k - 1) + 1 - H, 0)`` in total per
axis, the smaller half first (``"same_lower"``: the larger half first).
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from photocomp.core.errors import InvalidInputError, InvalidTypeError

__all__ = ["ConvSpec", "ACTIVATIONS", "activation_name", "apply_activation", "conv_patches", "conv_output_shape",
           "dense_apply", "conv_apply"]

PADDINGS = ("same", "same_lower", "valid")

#: activations the whole-model forward applies (``leaky_relu`` and ``elu`` take ``:alpha``, e.g. ``leaky_relu:0.2``)
ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu", "softplus", "softmax", "log_softmax",
               "elu", "leaky_relu")

_PARAMETRIC = ("elu", "leaky_relu")


def _pair(value, name: str, low: int) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"{name} must be an integer or a pair of integers; got {value!r}") from None
    if len(pair) != 2 or min(pair) < low:
        raise InvalidInputError(f"{name} must be an integer or a pair of integers >= {low}; got {value!r}")
    return pair  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """How a convolution layer slides its kernel (the matrix is the kernel, im2col order; module docstring).

    Attributes:
      kernel: ``(kh, kw)``.
      in_channels: input channels.
      stride: ``(sh, sw)``.
      dilation: ``(dh, dw)``.
      padding: ``(top, left, bottom, right)``, or ``"same"``, ``"same_lower"``, ``"valid"``.
      data_layout: ``"CHW"`` (torch, Equinox, ONNX) or ``"HWC"`` (Flax): the layout of one
        example's input and output.
      one_d: a one-dimensional convolution (inputs ``(C, L)`` or ``(L, C)``), run as height 1.
    """

    kernel: tuple[int, int]
    in_channels: int
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] | str = (0, 0, 0, 0)
    data_layout: str = "CHW"
    one_d: bool = False

    def __post_init__(self):
        object.__setattr__(self, "kernel", _pair(self.kernel, "conv kernel", 1))
        object.__setattr__(self, "stride", _pair(self.stride, "conv stride", 1))
        object.__setattr__(self, "dilation", _pair(self.dilation, "conv dilation", 1))
        if isinstance(self.padding, str):
            if self.padding.lower() not in PADDINGS:
                raise InvalidInputError(f"conv padding must be one of {PADDINGS}, an integer, a pair or "
                                        f"(top, left, bottom, right); got {self.padding!r}")
            object.__setattr__(self, "padding", self.padding.lower())
        else:
            pad = self.padding
            if isinstance(pad, (int, np.integer)) and not isinstance(pad, bool):
                pad = (int(pad),) * 4
            try:
                pad = tuple(int(p) for p in pad)
            except (TypeError, ValueError):
                raise InvalidTypeError(f"conv padding must be integers or a string; got {self.padding!r}") from None
            if len(pad) == 2:
                pad = (pad[0], pad[1], pad[0], pad[1])
            if len(pad) != 4 or min(pad) < 0:
                raise InvalidInputError(f"conv padding must be an integer, a pair (h, w) or (top, left, bottom, "
                                        f"right), all >= 0; got {self.padding!r}")
            object.__setattr__(self, "padding", pad)
        if self.data_layout not in ("CHW", "HWC"):
            raise InvalidInputError(f"conv data_layout must be 'CHW' or 'HWC'; got {self.data_layout!r}")
        if int(self.in_channels) < 1:
            raise InvalidInputError(f"conv in_channels must be >= 1; got {self.in_channels!r}")
        object.__setattr__(self, "in_channels", int(self.in_channels))

    def to_dict(self) -> dict:
        return {"kernel": list(self.kernel), "in_channels": self.in_channels, "stride": list(self.stride),
                "dilation": list(self.dilation),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "data_layout": self.data_layout, "one_d": self.one_d}

    @classmethod
    def from_dict(cls, d: dict) -> ConvSpec:
        if not isinstance(d, dict) or set(d) != {"kernel", "in_channels", "stride", "dilation", "padding",
                                                 "data_layout", "one_d"}:
            raise InvalidInputError(f"conv must be a dict with kernel, in_channels, stride, dilation, padding, "
                                    f"data_layout, one_d; got {d!r}"[:300])
        if not isinstance(d["one_d"], bool) or not isinstance(d["data_layout"], str):
            raise InvalidInputError(f"conv one_d must be a bool and data_layout a str; got {d!r}"[:300])
        pad = d["padding"]
        return cls(kernel=tuple(d["kernel"]), in_channels=d["in_channels"], stride=tuple(d["stride"]),  # type: ignore[arg-type]
                   dilation=tuple(d["dilation"]), padding=pad if isinstance(pad, str) else tuple(pad),
                   data_layout=d["data_layout"], one_d=d["one_d"])

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` for an ``h`` x ``w`` input."""
        if not isinstance(self.padding, str):
            return self.padding
        if self.padding == "valid":
            return (0, 0, 0, 0)
        out = []
        for size, k, s, d in zip((h, w), self.kernel, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + d * (k - 1) + 1 - size, 0)
            small, large = total // 2, total - total // 2
            out.append((small, large) if self.padding == "same" else (large, small))
        (t, b), (l, r) = out
        return (t, l, b, r)


def conv_output_shape(spec: ConvSpec, h: int, w: int) -> tuple[int, int]:
    """``(oh, ow)`` of a convolution of an ``h`` x ``w`` input."""
    t, l, b, r = spec.pads(h, w)
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel, spec.stride, spec.dilation
    oh = (h + t + b - dh * (kh - 1) - 1) // sh + 1
    ow = (w + l + r - dw * (kw - 1) - 1) // sw + 1
    return oh, ow


def conv_patches(spec: ConvSpec, x: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """im2col of one ``(C, H, W)`` example: patches ``(C kh kw, oh ow)`` and ``(oh, ow)``."""
    c, h, w = x.shape
    t, l, b, r = spec.pads(h, w)
    oh, ow = conv_output_shape(spec, h, w)
    if oh < 1 or ow < 1:
        raise InvalidInputError(f"x of spatial size {h}x{w} is smaller than the kernel {spec.kernel} "
                                f"(dilation {spec.dilation}, padding {(t, l, b, r)})")
    xp = np.pad(x, ((0, 0), (t, b), (l, r)))
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel, spec.stride, spec.dilation
    cols = np.empty((c, kh, kw, oh, ow), dtype=np.result_type(x.dtype, np.float64))
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xp[:, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
    return cols.reshape(c * kh * kw, oh * ow), (oh, ow)


def dense_apply(matrix: np.ndarray, bias: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """``x @ W.T + b`` over leading batch axes of ``x`` (``(..., in)`` -> ``(..., out)``)."""
    y = x @ matrix.T
    return y if bias is None else y + bias


def conv_apply(matrix: np.ndarray, bias: np.ndarray | None, spec: ConvSpec, x: np.ndarray) -> np.ndarray:
    """The convolution of ``x`` (one example or a batch, in ``spec.data_layout``) with the im2col ``matrix``."""
    nd = 2 if spec.one_d else 3
    batched = x.ndim == nd + 1
    xs = x if batched else x[None]
    outs = []
    for ex in xs:
        if spec.one_d:  # (C, L) -> (C, 1, L); (L, C) -> (1, L, C)
            ex = ex[:, None, :] if spec.data_layout == "CHW" else ex[None]
        if spec.data_layout == "HWC":
            ex = ex.transpose(2, 0, 1)
        p, (oh, ow) = conv_patches(spec, ex)
        y = (matrix @ p).reshape(matrix.shape[0], oh, ow)
        if bias is not None:
            y = y + bias[:, None, None]
        if spec.data_layout == "HWC":
            y = y.transpose(1, 2, 0)
        if spec.one_d:  # (O, 1, L') -> (O, L'); (1, L', O) -> (L', O)
            y = y[:, 0] if spec.data_layout == "CHW" else y[0]
        outs.append(y)
    out = np.stack(outs)
    return out if batched else out[0]


# ---- activations -----------------------------------------------------------------------


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _numpy_activation(name: str, alpha: float | None):
    if name == "relu":
        return lambda x: np.maximum(x, 0.0)
    if name == "sigmoid":
        return lambda x: 0.5 * (1.0 + np.tanh(0.5 * x))
    if name == "tanh":
        return np.tanh
    if name == "gelu":
        return lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if name == "silu":
        return lambda x: x * 0.5 * (1.0 + np.tanh(0.5 * x))
    if name == "softplus":
        return lambda x: np.logaddexp(x, 0.0)
    if name == "softmax":
        return lambda x: np.exp(x - x.max(axis=-1, keepdims=True)) / np.exp(x - x.max(axis=-1, keepdims=True)).sum(axis=-1, keepdims=True)
    if name == "log_softmax":
        return lambda x: x - x.max(axis=-1, keepdims=True) - np.log(np.exp(x - x.max(axis=-1, keepdims=True)).sum(axis=-1, keepdims=True))
    a = 1.0 if alpha is None and name == "elu" else (0.01 if alpha is None else alpha)
    if name == "elu":
        return lambda x: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0)))
    return lambda x: np.where(x > 0, x, a * x)  # leaky_relu


def parse_activation(text: str) -> tuple[str, float | None]:
    """``"leaky_relu:0.2"`` -> ``("leaky_relu", 0.2)``; ``"relu"`` -> ``("relu", None)``."""
    if not isinstance(text, str):
        raise InvalidTypeError(f"activation must be a str; got {type(text).__name__} {text!r}")
    m = re.fullmatch(r"([a-z_]+)(?::([-+0-9.eE]+))?", text)
    if m is None or m.group(1) not in ACTIVATIONS or (m.group(2) is not None and m.group(1) not in _PARAMETRIC):
        raise InvalidInputError(f"activation must be one of {ACTIVATIONS} (elu and leaky_relu may add ':alpha', "
                                f"e.g. 'leaky_relu:0.2'); got {text!r}")
    alpha = None
    if m.group(2) is not None:
        try:
            alpha = float(m.group(2))
        except ValueError:
            raise InvalidInputError(f"activation {text!r}: alpha must be a number") from None
        if not math.isfinite(alpha):
            raise InvalidInputError(f"activation {text!r}: alpha must be finite")
    return m.group(1), alpha


def apply_activation(text: str | None, x: np.ndarray) -> np.ndarray:
    """Apply an activation (None: identity) in float64; softmax over the last axis."""
    if text is None:
        return x
    name, alpha = parse_activation(text)
    return _numpy_activation(name, alpha)(np.asarray(x, dtype=np.float64))


_PROBE = np.linspace(-4.0, 4.0, 33)


def activation_name(fn) -> str | None:
    """The name of a Python/JAX activation function, found by evaluating it (``None``: the identity).

    The function is evaluated on 33 points in [-4, 4] and compared with every
    known activation (float32 accuracy): names alone are ambiguous
    (``jax.nn.gelu`` is the tanh approximation by default, ``torch``'s is
    exact). Raises :class:`InvalidInputError` for a function that is none of them.
    """
    try:
        got = np.asarray(fn(_PROBE.astype(np.float32)), dtype=np.float64)
    except Exception as exc:
        raise InvalidInputError(f"activation {fn!r} could not be evaluated: {type(exc).__name__}: {exc}"[:300]) from None
    if got.shape != _PROBE.shape:
        raise InvalidInputError(f"activation {fn!r} is not elementwise (maps 33 points to shape {got.shape})")
    if np.allclose(got, _PROBE, atol=1e-5):
        return None
    for name in ACTIVATIONS:
        if name in ("softmax", "log_softmax"):
            continue
        if name in _PARAMETRIC:
            # the slope of the negative side: x < 0 gives alpha * x (leaky) or alpha * (e^x - 1) (elu)
            neg = _PROBE < 0
            base = _PROBE[neg] if name == "leaky_relu" else np.expm1(_PROBE[neg])
            alpha = float(np.dot(got[neg], base) / np.dot(base, base))
            ref = _numpy_activation(name, alpha)(_PROBE)
            if np.allclose(got, ref, atol=1e-5):
                return f"{name}:{alpha:.6g}"
            continue
        if np.allclose(got, _numpy_activation(name, None)(_PROBE), atol=1e-5):
            return name
    raise InvalidInputError(f"activation {getattr(fn, '__name__', fn)!r} is not one photocomp knows "
                            f"({', '.join(ACTIVATIONS)}): it is not recorded; the layers still compile")
