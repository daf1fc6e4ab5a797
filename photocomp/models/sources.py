"""Reading models: every linear layer of a params tree, an Equinox module, a safetensors or an ONNX file.

Each reader returns a :class:`ModelSpec`: the layers in order, each a
:class:`LayerSpec` with its ``(out, in)`` float64 matrix (conventions in
:mod:`photocomp.models.layers`), its bias, its convolution geometry and the
activation that follows it where the source records one.

* **Params tree** (a nested ``dict`` of arrays, e.g. a Flax Linen
  ``variables`` or ``params`` dict, ``nnx.state(model).to_pure_dict()`` of
  Flax NNX, or a PyTorch ``state_dict`` with dotted names). Flax itself is
  never imported. A dict holding a ``kernel`` is a layer in Flax's layout
  (dense ``(in, out)``, conv ``(kh, kw, in, out)`` on ``HWC`` data with
  ``"same"`` padding, Flax's default); a dict holding a 2-D to 4-D
  ``weight`` is a layer in torch's layout (dense ``(out, in)``, conv
  ``(out, in, kh, kw)`` on ``CHW`` data, padding 0). A ``bias`` next to it is
  its bias. Keys with dots (``"fc1.weight"``) are nested paths. A top-level
  ``params`` entry (Flax's variables) is the tree read; other collections
  (``batch_stats``) are skipped. Layers come in the dict's own order (Flax
  keeps the order modules were defined in). Parameters of other layers
  (norm scales and shifts, 1-D ``weight`` arrays, embeddings named
  ``embedding``, running statistics) are listed in ``skipped``; a
  ``torch.nn.Embedding``'s 2-D ``weight`` cannot be told from a linear layer
  by its name: pass its name in ``exclude``. Stride, padding and dilation are
  not in a params tree: they default as above and are given per layer with
  ``conv=``. Activations are not in a params tree either: ``activations=``
  names them and makes the layers a chain.
* **Equinox module**: every ``eqx.nn.Linear`` (weight ``(out, in)``) and
  ``eqx.nn.Conv`` (1-D or 2-D, weight ``(out, in, *kernel)``, ``CHW`` data)
  in the module's pytree order; an ``eqx.nn.MLP`` or ``eqx.nn.Sequential``
  is a chain whose activations (``MLP.activation``, ``final_activation``,
  ``eqx.nn.Lambda`` layers) are found by evaluating them
  (:func:`photocomp.models.layers.activation_name`).
* **safetensors file** (``*.safetensors``, e.g. a PyTorch ``state_dict``
  saved with ``safetensors.torch.save_file``): read as a params tree of
  dotted names. The format does not keep the order tensors were added in,
  so layers come in the natural order of their names (digit runs compared
  as numbers: ``layers.2`` before ``layers.10``).
* **ONNX file** (``*.onnx``): its initializers and graph. ``Gemm`` (weight
  ``B``, ``transB``, ``alpha``, bias ``C`` times ``beta``), ``MatMul`` with
  a constant second operand (``x @ B``; a following ``Add`` of a constant
  vector is its bias) and ``Conv`` (``pads``, ``strides``, ``dilations``,
  ``auto_pad``) are layers, in graph order; an activation node that alone
  consumes a layer's output is its activation. Operators photocomp runs
  electronically (element-wise maths, shape operations, pooling,
  normalization, a ``MatMul`` of two activations) pass; any other operator
  is refused, naming the node. The model is a chain when every layer reads
  the previous one's output through shape-only nodes (``Flatten``,
  ``Reshape``, ``Identity``, ``Dropout``, ``Squeeze``, ``Unsqueeze``).
  External-data tensors are refused (the file must be self-contained).

Weights must be real and finite; NaN, infinite, complex and non-numeric
weights are refused with the layer named.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from photocomp.core.atomic import quote_path
from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.registry import quote
from photocomp.models.layers import ConvSpec, activation_name, conv_output_shape, parse_activation

__all__ = ["LayerSpec", "ModelSpec", "read_model", "ONNX_LAYER_OPS", "ONNX_ELECTRONIC_OPS"]

#: ONNX operators compiled to the chip (with a constant weight)
ONNX_LAYER_OPS = ("Gemm", "MatMul", "Conv")

_ONNX_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softmax": "softmax",
                     "LogSoftmax": "log_softmax", "Softplus": "softplus", "Gelu": "gelu", "LeakyRelu": "leaky_relu",
                     "Elu": "elu"}
_ONNX_PASSTHROUGH = ("Flatten", "Reshape", "Identity", "Dropout", "Squeeze", "Unsqueeze")

#: ONNX operators run electronically: they pass (the model is then a chain only through the shape-only ones)
ONNX_ELECTRONIC_OPS = tuple(sorted(set(_ONNX_ACTIVATIONS) | set(_ONNX_PASSTHROUGH) | {
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Neg", "Abs", "Erf", "Clip", "Max",
    "Min", "Sum", "Mean", "Sign", "Floor", "Ceil", "Round", "Where", "Equal", "Greater", "Less", "Not", "And", "Or",
    "HardSigmoid", "HardSwish", "Selu", "Celu", "PRelu", "ThresholdedRelu", "Softsign", "Mish",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "BatchNormalization",
    "LayerNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization",
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare",
    "ArgMax", "ArgMin", "Transpose", "Concat", "Split", "Slice", "Gather", "Expand", "Tile", "Pad", "Shape",
    "Size", "Cast", "CastLike", "Constant", "ConstantOfShape", "Range", "Resize", "Upsample", "DepthToSpace",
    "SpaceToDepth",
}))

_MAX_LAYERS = 100_000


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One linear layer read from a model.

    Attributes:
      name: the layer's name in its model.
      kind: ``"dense"`` or ``"conv"``.
      matrix: ``(out, in)`` float64: ``y = matrix @ x + bias`` (conv: im2col, :mod:`photocomp.models.layers`).
      bias: ``(out,)`` float64 or None.
      source_shape: shape of the weight as the model stores it.
      source_layout: how that weight maps to ``matrix``, in words.
      conv: the convolution's geometry (None for dense layers).
      activation: the activation after the layer, where the model records one (None: none, or not known).
      positions: output positions per example of a convolution when the model records its input size.
    """

    name: str
    kind: str
    matrix: np.ndarray
    bias: np.ndarray | None
    source_shape: tuple[int, ...]
    source_layout: str
    conv: ConvSpec | None = None
    activation: str | None = None
    positions: int | None = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The linear layers of a model, in order.

    Attributes:
      source: ``"params"``, ``"equinox"``, ``"safetensors"`` or ``"onnx"``.
      layers: the :class:`LayerSpec` values.
      sequential: whether the layers form a chain (each reads the previous one's output after its activation).
      skipped: ``"name: why"`` for every parameter or part of the model not compiled.
    """

    source: str
    layers: tuple[LayerSpec, ...]
    sequential: bool
    skipped: tuple[str, ...] = ()


# ---- checks --------------------------------------------------------------------------------


def _as_weights(value: Any, where: str) -> np.ndarray:
    """``value`` as a float64 array; refuse non-numeric, complex and non-finite values, naming ``where``."""
    if isinstance(value, (str, bytes)) or value is None:
        raise InvalidTypeError(f"{where} must be a numeric array; got {type(value).__name__} {quote(value)}")
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise InvalidTypeError(f"{where} must be a numeric array; could not convert {type(value).__name__}: "
                               f"{str(exc)[:80]}") from None
    kind = arr.dtype.kind
    if kind == "c":
        raise InvalidInputError(f"{where} must be real; got a complex array of shape {arr.shape} "
                                "(complex-valued networks are not supported)")
    if kind not in "biuf":
        try:  # ml_dtypes floats (bfloat16, float8) are numbers numpy does not classify as such
            if kind != "V" or "float" not in arr.dtype.name:
                raise TypeError
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise InvalidTypeError(f"{where} must be a numeric array; got dtype {arr.dtype} "
                                   f"of shape {arr.shape}") from None
    out = np.array(arr, dtype=np.float64)
    if out.size == 0:
        raise InvalidInputError(f"{where} must be non-empty; got shape {out.shape}")
    bad = ~np.isfinite(out)
    if bad.any():
        raise InvalidInputError(f"{where} must be finite; got {int(bad.sum())} NaN or infinite entries of "
                                f"{out.size} (shape {out.shape})")
    return out


def _bias(value: Any, layer: str, out: int) -> np.ndarray | None:
    if value is None:
        return None
    b = _as_weights(value, f"layer {layer!r}: bias")
    if b.size != out or sum(d != 1 for d in b.shape) > 1:
        raise InvalidInputError(f"layer {layer!r}: bias must have {out} entries (one per output); "
                                f"got shape {b.shape}")
    return b.reshape(out)


def _dense(name: str, w: np.ndarray, bias, source_layout: str, flax: bool, source_shape) -> LayerSpec:
    m = w.T if flax else w
    return LayerSpec(name, "dense", np.ascontiguousarray(m), _bias(bias, name, m.shape[0]), tuple(source_shape),
                     source_layout)


def _conv(name: str, k: np.ndarray, bias, spec_kw: dict, flax: bool, source_shape, positions=None,
          activation=None) -> LayerSpec:
    """A convolution from an OIHW (or Flax HWIO) kernel; 3-D kernels are 1-D convolutions of height 1."""
    one_d = k.ndim == 3
    if flax:  # (kh, kw, I, O) -> (O, I, kh, kw); 1-D: (k, I, O) -> (O, I, 1, k)
        k = k.transpose(2, 1, 0)[:, :, None, :] if one_d else k.transpose(3, 2, 0, 1)
    elif one_d:
        k = k[:, :, None, :]
    o, i, kh, kw = k.shape
    try:
        spec = ConvSpec(kernel=(kh, kw), in_channels=i, data_layout="HWC" if flax else "CHW", one_d=one_d,
                        **spec_kw)
    except (InvalidInputError, InvalidTypeError) as exc:
        raise type(exc)(f"layer {name!r}: {exc}") from None
    layout = ("Flax conv kernel (kh, kw, in, out) -> (out, in*kh*kw), HWC data" if flax else
              "conv kernel (out, in, kh, kw) -> (out, in*kh*kw), CHW data")
    if one_d:
        layout = layout.replace("kh, kw", "k").replace("in*kh*kw", "in*k").replace("HWC", "LC").replace("CHW", "CL")
    return LayerSpec(name, "conv", np.ascontiguousarray(k.reshape(o, i * kh * kw)), _bias(bias, name, o),
                     tuple(source_shape), layout, spec, activation, positions)


# ---- params trees ----------------------------------------------------------------------------


def _natural_key(text: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t]


def _leaves(tree: Any, path: tuple, out: list, where: str) -> None:
    """(path, leaf) pairs of a nested mapping in its own order; dotted keys are split; NNX variables unwrapped."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise InvalidTypeError(f"{where}: keys must be strings; got {type(key).__name__} {quote(key)} "
                                       f"under {'.'.join(path) or 'the top level'!r}")
            parts = tuple(p for p in str(key).split(".")) if isinstance(key, str) else (str(key),)
            if any(p == "" for p in parts):
                raise InvalidInputError(f"{where}: key {quote(key)} has an empty name part")
            _leaves(value, path + parts, out, where)
    elif isinstance(tree, (list, tuple)) and not (tree and all(isinstance(v, (int, float)) for v in tree)):
        for i, value in enumerate(tree):
            _leaves(value, path + (str(i),), out, where)
    elif tree is None:
        return
    else:
        if not hasattr(tree, "shape") and hasattr(tree, "value"):  # flax.nnx.Variable and the like
            tree = tree.value
        out.append((path, tree))


def _read_tree(tree: Mapping, source: str, where: str, conv_opts: Mapping, order_natural: bool = False) -> ModelSpec:
    skipped: list[str] = []
    if "params" in tree and isinstance(tree["params"], Mapping):
        skipped += [f"{k}: a collection other than 'params'" for k in tree if k != "params"]
        tree = tree["params"]
    leaves: list = []
    _leaves(tree, (), leaves, where)
    if not leaves:
        raise InvalidInputError(f"{where} must hold at least one layer's weights; got an empty tree")
    groups: dict[tuple, dict] = {}
    for path, leaf in leaves:
        if not path:
            raise InvalidInputError(f"{where} must be a dict of layers; got a bare array")
        groups.setdefault(path[:-1], {})[path[-1]] = leaf
    keys = sorted(groups, key=lambda p: _natural_key(".".join(p))) if order_natural else list(groups)
    layers = []
    for parent in keys:
        params = groups[parent]
        name = ".".join(parent) or "(top level)"
        has_k, has_w = "kernel" in params, "weight" in params
        if has_k and has_w:
            raise InvalidInputError(f"layer {name!r} holds both 'kernel' (Flax layout) and 'weight' (torch layout); "
                                    "one layer has one weight")
        if not (has_k or has_w):
            skipped += [f"{name}.{k}: not a linear layer's weight" for k in params]
            continue
        key = "kernel" if has_k else "weight"
        w = _as_weights(params[key], f"layer {name!r}: {key}")
        if has_w and w.ndim == 1:  # torch norm layers: weight and bias are per-channel scales
            skipped += [f"{name}.{k}: a 1-D weight (a normalization layer, not a linear one)" for k in params]
            continue
        skipped += [f"{name}.{k}: not a linear layer's weight" for k in params if k not in (key, "bias")]
        opts = conv_opts.get(name, {})
        if w.ndim == 2:
            if opts:
                raise InvalidInputError(f"conv options given for layer {name!r}, which is a dense layer "
                                        f"({key} of shape {w.shape})")
            layout = ("Flax kernel (in, out), transposed to (out, in)" if has_k else "weight (out, in)")
            layers.append(_dense(name, w, params.get("bias"), layout, has_k, w.shape))
        elif w.ndim in (3, 4):
            default = {"padding": "same"} if has_k else {}
            layers.append(_conv(name, w, params.get("bias"), {**default, **opts}, has_k, w.shape))
        else:
            expected = ("(in, out) for a dense layer, (k, in, out) or (kh, kw, in, out) for a convolution" if has_k
                        else "(out, in) for a dense layer, (out, in, k) or (out, in, kh, kw) for a convolution")
            raise InvalidInputError(f"layer {name!r}: {key} must be {expected}; got shape {w.shape}")
    return ModelSpec(source, tuple(layers), False, tuple(skipped))


# ---- Equinox ---------------------------------------------------------------------------------


def _eqx_conv(name: str, layer, eqx) -> LayerSpec:
    w = _as_weights(layer.weight, f"layer {name!r}: weight")
    if w.ndim not in (3, 4):
        raise InvalidInputError(f"layer {name!r}: only 1-D and 2-D convolutions are supported; got weight of "
                                f"shape {w.shape} ({w.ndim - 2}-D)")
    if int(layer.groups) != 1:
        raise InvalidInputError(f"layer {name!r}: grouped convolutions (groups={layer.groups}) are not supported")
    mode = str(getattr(layer, "padding_mode", "ZEROS")).upper()
    if mode != "ZEROS":
        raise InvalidInputError(f"layer {name!r}: padding_mode must be 'ZEROS'; got {mode!r}")
    pad = [tuple(int(v) for v in p) for p in layer.padding]
    stride, dil = tuple(int(s) for s in layer.stride), tuple(int(d) for d in layer.dilation)
    if w.ndim == 3:
        pad, stride, dil = [(0, 0)] + pad, (1,) + stride, (1,) + dil
    spec = {"padding": (pad[0][0], pad[1][0], pad[0][1], pad[1][1]), "stride": stride, "dilation": dil}
    return _conv(name, w, layer.bias, spec, False, w.shape)


def _read_equinox(model, eqx, jax) -> ModelSpec:
    layers: list[LayerSpec] = []
    sequential = True

    def add(name: str, obj) -> bool:
        if isinstance(obj, eqx.nn.Linear):
            w = _as_weights(obj.weight, f"layer {name!r}: weight")
            if w.ndim != 2:
                raise InvalidInputError(f"layer {name!r}: weight must be (out, in); got shape {w.shape}")
            layers.append(_dense(name, w, obj.bias, "weight (out, in)", False, w.shape))
            return True
        if isinstance(obj, eqx.nn.Conv):
            layers.append(_eqx_conv(name, obj, eqx))
            return True
        return False

    def set_activation(fn, name: str) -> None:
        nonlocal sequential
        act = activation_name(fn)
        if act is None:
            return
        if not layers or layers[-1].activation is not None:
            sequential = False  # an activation before any layer, or two in a row: not a plain chain
            return
        layers[-1] = dataclasses.replace(layers[-1], activation=act)

    def visit(obj, name: str, chain: bool) -> None:
        nonlocal sequential
        if add(name or type(obj).__name__.lower(), obj):
            return
        if isinstance(obj, eqx.nn.MLP) and chain:
            for i, lin in enumerate(obj.layers):
                visit(lin, f"{name}.layers[{i}]".lstrip("."), True)
                set_activation(obj.activation if i < len(obj.layers) - 1 else obj.final_activation, name)
            return
        if isinstance(obj, eqx.nn.Sequential) and chain:
            for i, sub in enumerate(obj.layers):
                where = f"{name}.layers[{i}]".lstrip(".")
                if isinstance(sub, eqx.nn.Lambda):
                    set_activation(sub.fn, where)
                elif isinstance(sub, (eqx.nn.Dropout, eqx.nn.Identity)):
                    continue
                else:
                    visit(sub, where, True)
            return
        sequential = False
        found = jax.tree_util.tree_flatten_with_path(obj, is_leaf=lambda x: isinstance(x, (eqx.nn.Linear, eqx.nn.Conv)))[0]
        for path, leaf in found:
            add((name + jax.tree_util.keystr(path)).lstrip("."), leaf)

    visit(model, "", True)
    if not layers:
        raise InvalidInputError(f"model must hold at least one eqx.nn.Linear or eqx.nn.Conv layer; got a "
                                f"{type(model).__name__} without one")
    return ModelSpec("equinox", tuple(layers), sequential)


# ---- safetensors -----------------------------------------------------------------------------


def _need(package: str, what: str):
    try:
        return importlib.import_module(package)
    except ImportError:
        raise InvalidInputError(f"model: reading {what} needs the {package!r} package, which is not installed "
                                f"(pip install \"photocomp[models]\")") from None


def _read_safetensors(path: str, conv_opts: Mapping) -> ModelSpec:
    st = _need("safetensors.numpy", "a .safetensors file")
    try:
        tensors = st.load_file(path)
    except Exception as exc:
        raise InvalidInputError(f"model: cannot read safetensors file {quote_path(path)}: {type(exc).__name__}: "
                                f"{str(exc)[:200]}") from None
    if not tensors:
        raise InvalidInputError(f"model: safetensors file {quote_path(path)} holds no tensors")
    spec = _read_tree(tensors, "safetensors", f"model {quote_path(path)}", conv_opts, order_natural=True)
    return spec


# ---- ONNX ------------------------------------------------------------------------------------


def _attrs(node, onnx) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _read_onnx(path: str) -> ModelSpec:
    onnx = _need("onnx", "an .onnx file")
    from onnx import numpy_helper

    q = quote_path(path)
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise InvalidInputError(f"model: cannot read ONNX file {q}: {type(exc).__name__}: {str(exc)[:200]}") from None
    graph = model.graph
    consts: dict[str, np.ndarray] = {}
    for t in graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise InvalidInputError(f"model: ONNX file {q} keeps initializer {t.name!r} in an external file; "
                                    "save the model with its weights inside (onnx.save(model, path, "
                                    "save_as_external_data=False))")
        consts[t.name] = numpy_helper.to_array(t)
    nodes = list(graph.node)
    for node in nodes:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            a = _attrs(node, onnx)
            if "value" in a:
                consts[node.output[0]] = numpy_helper.to_array(a["value"])
    shapes: dict[str, list] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
            dims = vi.type.tensor_type.shape.dim
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    except Exception:  # shapes only refine the report (output positions of convolutions)
        shapes = {}
    consumers: dict[str, list[int]] = {}
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for t in node.input:
            consumers.setdefault(t, []).append(i)
        for t in node.output:
            producer[t] = i

    def node_name(i: int) -> str:
        n = nodes[i]
        return n.name or f"{n.op_type}_{i}"

    layers: list[LayerSpec] = []
    ends: list[tuple[str, str]] = []  # (input tensor, output tensor after bias and activation) per layer
    folded: set[int] = set()
    skipped: list[str] = []
    names: set[str] = set()
    for i, node in enumerate(nodes):
        op, name = node.op_type, node_name(i)
        if i in folded:
            continue
        if node.domain not in ("", "ai.onnx"):
            raise InvalidInputError(f"layer {name!r}: unsupported ONNX operator {node.domain}.{op} (a custom "
                                    f"domain); photocomp compiles {', '.join(ONNX_LAYER_OPS)} and runs the "
                                    "standard element-wise, shape, pooling and normalization operators electronically")
        a = _attrs(node, onnx)
        weight_in = [t for t in node.input[:2] if t in consts]
        if op == "MatMul" and not weight_in:
            skipped.append(f"{name}: MatMul of two activations (run electronically)")
            continue
        if op not in ONNX_LAYER_OPS:
            if op in ONNX_ELECTRONIC_OPS:
                continue
            raise InvalidInputError(f"layer {name!r}: unsupported ONNX operator {op!r}; photocomp compiles "
                                    f"{', '.join(ONNX_LAYER_OPS)} and runs {len(ONNX_ELECTRONIC_OPS)} element-wise, "
                                    "shape, pooling and normalization operators electronically")
        if name in names:
            raise InvalidInputError(f"layer {name!r}: two ONNX nodes have this name")
        names.add(name)
        bias = None
        if op == "Gemm":
            if int(a.get("transA", 0)):
                raise InvalidInputError(f"layer {name!r}: Gemm with transA=1 is not supported (the input must be "
                                        "(batch, in))")
            if node.input[0] in consts or len(node.input) < 2 or node.input[1] not in consts:
                raise InvalidInputError(f"layer {name!r}: Gemm must take its weight B as a constant (initializer) "
                                        "and its input A from the graph")
            b = _as_weights(consts[node.input[1]], f"layer {name!r}: weight B")
            if b.ndim != 2:
                raise InvalidInputError(f"layer {name!r}: Gemm weight B must be 2-D; got shape {b.shape}")
            trans_b = int(a.get("transB", 0))
            alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
            w = alpha * (b if trans_b else b.T)
            layout = "Gemm B (out, in) with transB=1" if trans_b else "Gemm B (in, out), transposed to (out, in)"
            if alpha != 1.0:
                layout += f", times alpha={alpha:g}"
            if len(node.input) > 2 and node.input[2]:
                if node.input[2] not in consts:
                    raise InvalidInputError(f"layer {name!r}: Gemm bias C must be a constant (initializer)")
                c = _as_weights(consts[node.input[2]], f"layer {name!r}: bias C")
                if c.size == 1:
                    c = np.full(w.shape[0], float(c.reshape(())))
                bias = beta * np.asarray(_bias(c, name, w.shape[0]))
            spec = LayerSpec(name, "dense", np.ascontiguousarray(w), bias, b.shape, layout)
        elif op == "MatMul":
            if node.input[0] in consts:
                raise InvalidInputError(f"layer {name!r}: MatMul with a constant first operand (W @ X) is not "
                                        "supported; export x @ W.T (a Linear/Gemm layer)")
            b = _as_weights(consts[node.input[1]], f"layer {name!r}: weight")
            if b.ndim != 2:
                raise InvalidInputError(f"layer {name!r}: MatMul weight must be 2-D (in, out); got shape {b.shape}")
            spec = LayerSpec(name, "dense", np.ascontiguousarray(b.T), None, b.shape,
                             "MatMul x @ B, B (in, out), transposed to (out, in)")
        else:  # Conv
            if node.input[0] in consts or len(node.input) < 2 or node.input[1] not in consts:
                raise InvalidInputError(f"layer {name!r}: Conv must take its kernel W as a constant (initializer)")
            k = _as_weights(consts[node.input[1]], f"layer {name!r}: kernel W")
            if k.ndim not in (3, 4):
                raise InvalidInputError(f"layer {name!r}: only 1-D and 2-D convolutions are supported; got kernel "
                                        f"of shape {k.shape}")
            if int(a.get("group", 1)) != 1:
                raise InvalidInputError(f"layer {name!r}: grouped convolutions (group={a['group']}) are not supported")
            nd = k.ndim - 2
            auto = a.get("auto_pad", b"NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else str(auto)
            pads = list(a.get("pads", [0] * (2 * nd)))
            strides, dil = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
            if nd == 1:
                pads, strides, dil = [0, pads[0], 0, pads[1]], [1] + strides, [1] + dil
            else:
                pads = [pads[0], pads[1], pads[2], pads[3]]
            padding: Any = {"NOTSET": tuple(pads), "VALID": "valid", "SAME_UPPER": "same",
                            "SAME_LOWER": "same_lower"}.get(auto, "?")
            if padding == "?":
                raise InvalidInputError(f"layer {name!r}: Conv auto_pad must be NOTSET, VALID, SAME_UPPER or "
                                        f"SAME_LOWER; got {auto!r}")
            c = None
            if len(node.input) > 2 and node.input[2]:
                if node.input[2] not in consts:
                    raise InvalidInputError(f"layer {name!r}: Conv bias B must be a constant (initializer)")
                c = consts[node.input[2]]
            positions = None
            out_shape = shapes.get(node.output[0])
            if out_shape and len(out_shape) == nd + 2 and all(isinstance(d, int) and d > 0 for d in out_shape[2:]):
                positions = int(np.prod(out_shape[2:]))
            spec = _conv(name, k, c, {"padding": padding, "stride": strides, "dilation": dil}, False, k.shape,
                         positions)
        out = node.output[0]
        cons = consumers.get(out, [])
        if bias is None and spec.bias is None and op == "MatMul" and len(cons) == 1 and nodes[cons[0]].op_type == "Add":
            add = nodes[cons[0]]
            other = [t for t in add.input if t != out]
            if len(other) == 1 and other[0] in consts and np.size(consts[other[0]]) == spec.matrix.shape[0]:
                spec = dataclasses.replace(spec, bias=_bias(consts[other[0]], name, spec.matrix.shape[0]))
                folded.add(cons[0])
                out = add.output[0]
                cons = consumers.get(out, [])
        if len(cons) == 1 and nodes[cons[0]].op_type in _ONNX_ACTIVATIONS:
            act_node = nodes[cons[0]]
            aa = _attrs(act_node, onnx)
            act: str | None = _ONNX_ACTIVATIONS[act_node.op_type]
            if act == "gelu" and (aa.get("approximate", b"none") in (b"tanh", "tanh")):
                act = "gelu_tanh"
            elif act in ("leaky_relu", "elu"):
                act = f"{act}:{float(aa.get('alpha', 0.01 if act == 'leaky_relu' else 1.0)):.6g}"
            elif act in ("softmax", "log_softmax") and (spec.kind != "dense" or int(aa.get("axis", -1)) not in (-1, 1)):
                act = None  # over another axis than the features: not an activation the forward applies
            if act is not None:
                parse_activation(act)
                spec = dataclasses.replace(spec, activation=act)
                folded.add(cons[0])
                out = act_node.output[0]
        layers.append(spec)
        ends.append((node.input[0], out))
        if len(layers) > _MAX_LAYERS:
            raise InvalidInputError(f"model: ONNX file {q} has more than {_MAX_LAYERS} layers")
    if not layers:
        raise InvalidInputError(f"model: ONNX file {q} has no Gemm, MatMul (with a constant weight) or Conv "
                                "node: nothing to compile")

    def source_of(t: str) -> str:
        seen = 0
        while t in producer and nodes[producer[t]].op_type in _ONNX_PASSTHROUGH and seen < len(nodes):
            t = nodes[producer[t]].input[0]
            seen += 1
        return t

    inputs = [v.name for v in graph.input if v.name not in consts]
    outputs = [v.name for v in graph.output]
    chain = len(inputs) == 1 and len(outputs) == 1 and source_of(ends[0][0]) == inputs[0]
    chain = chain and all(source_of(ends[k][0]) == ends[k - 1][1] for k in range(1, len(ends)))
    chain = chain and source_of(outputs[0]) == ends[-1][1]
    return ModelSpec("onnx", tuple(layers), bool(chain), tuple(skipped))


# ---- dispatch --------------------------------------------------------------------------------

MODEL_SUFFIXES = (".onnx", ".safetensors")


def _equinox_module(model):
    """``(equinox, jax)`` if ``model`` is an Equinox module (only when equinox is already imported)."""
    eqx = sys.modules.get("equinox")
    if eqx is not None and isinstance(model, eqx.Module):
        import jax

        return eqx, jax
    return None


def read_model(model: Any, *, conv: Mapping | None = None) -> ModelSpec:
    """The linear layers of ``model`` (see the module docstring for what each kind of model gives).

    Args:
      model: a path (str or os.PathLike) to an ``.onnx`` or ``.safetensors`` file, a params tree (a
        mapping), or an Equinox module.
      conv: ``{layer name: {"stride": ..., "padding": ..., "dilation": ...}}`` for the convolutions of
        a params tree or safetensors file (their files do not record these).

    Raises:
      InvalidTypeError: ``model`` is of another kind, or holds non-numeric weights (the layer named).
      InvalidInputError: a missing or unreadable file, a layer with a bad shape, NaN or complex
        weights, an unsupported ONNX operator (the layer named), or no layer at all.
    """
    conv_opts: Mapping = {} if conv is None else conv
    if not isinstance(conv_opts, Mapping):
        raise InvalidTypeError(f"conv must be a mapping of layer names to dicts of stride, padding, dilation; "
                               f"got {type(conv_opts).__name__}")
    for key, opts in conv_opts.items():
        if not isinstance(opts, Mapping) or not set(opts) <= {"stride", "padding", "dilation"}:
            raise InvalidInputError(f"conv[{key!r}] must be a dict with keys among stride, padding, dilation; "
                                    f"got {quote(opts)}")
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not isinstance(path, str) or not path or "\0" in path:
            raise InvalidInputError(f"model must be a path without NUL characters; got {quote(model)}")
        ext = os.path.splitext(path)[1].lower()
        if ext not in MODEL_SUFFIXES:
            raise InvalidInputError(f"model file must end in .onnx or .safetensors; got {quote_path(path)}")
        if not os.path.isfile(path):
            raise InvalidInputError(f"model file must exist; got {quote_path(path)}")
        if ext == ".onnx":
            if conv_opts:
                raise InvalidInputError("conv options apply to params trees and safetensors files only: an ONNX "
                                        "file records every convolution's stride, padding and dilation")
            spec = _read_onnx(path)
        else:
            spec = _read_safetensors(path, conv_opts)
    elif isinstance(model, Mapping):
        spec = _read_tree(model, "params", "model", conv_opts)
    elif (mods := _equinox_module(model)) is not None:
        if conv_opts:
            raise InvalidInputError("conv options apply to params trees and safetensors files only: an Equinox "
                                    "module records every convolution's stride, padding and dilation")
        spec = _read_equinox(model, *mods)
    else:
        raise InvalidTypeError(f"model must be a path to an .onnx or .safetensors file, a params tree (a dict of "
                               f"arrays, e.g. Flax params or a torch state_dict) or an Equinox module; got "
                               f"{type(model).__name__}")
    if not spec.layers:
        raise InvalidInputError(f"model has no linear layer to compile (no 2-D to 4-D 'kernel' or 'weight'); "
                                f"skipped: {', '.join(spec.skipped)[:300] or 'nothing'}")
    unknown = sorted(set(conv_opts) - {ls.name for ls in spec.layers if ls.kind == "conv"})
    if unknown:
        raise InvalidInputError(f"conv names layers that are not convolutions of this model: {unknown}; "
                                f"convolutions: {[ls.name for ls in spec.layers if ls.kind == 'conv']}")
    return spec


def conv_positions(spec: ConvSpec, h: int, w: int) -> int:
    """Output positions of a convolution of an ``h`` x ``w`` input."""
    oh, ow = conv_output_shape(spec, h, w)
    return oh * ow
