"""``compile_model``: every linear layer of a model compiled to a target; ``CompiledModel`` and ``load_model``.

What each kind of model gives and the layout conventions are in
:mod:`photocomp.models.sources` and :mod:`photocomp.models.layers`; the
report's figures in :mod:`photocomp.models.report`; the file format in
:mod:`photocomp.models.archive`.

A compiled layer computes ``y = Re(W_hat x) + b``: ``W_hat`` is the matrix
its program implements on the ideal chip (:attr:`photocomp.Program.dense`,
complex; for a real layer its imaginary part is compile error, and a
coherent receiver reads the in-phase quadrature), ``b`` the bias, added
electronically. Convolutions apply ``W_hat`` to im2col patches.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from photocomp.compiler.driver import compile as compile_matrix
from photocomp.compiler.pipeline import Pipeline
from photocomp.compiler.program import Program
from photocomp.core.errors import InvalidInputError, InvalidTypeError, PhotocompError
from photocomp.core.registry import quote
from photocomp.core.target import Target, get_target
from photocomp.core.validate import check_int
from photocomp.models.archive import read_archive, write_archive
from photocomp.models.layers import ConvSpec, apply_activation, conv_apply, dense_apply, parse_activation
from photocomp.models.report import LayerReport, ModelReport, layer_report
from photocomp.models.sources import LayerSpec, ModelSpec, read_model

__all__ = ["CompiledLayer", "CompiledModel", "compile_model", "load_model"]


class CompiledLayer:
    """One layer of a compiled model.

    Attributes:
      name: the layer's name in its model.
      kind: ``"dense"`` or ``"conv"``.
      program: the layer's :class:`~photocomp.Program` (its matrix ``(out, in)``).
      bias: ``(out,)`` float64 or None (added electronically).
      source_shape: the weight's shape as the model stored it.
      source_layout: how that weight became the ``(out, in)`` matrix.
      conv: the convolution geometry (:class:`~photocomp.models.layers.ConvSpec`), None for dense layers.
      activation: the activation after the layer where the model records one.
      positions: output positions per example of a convolution, when known.
      compile_s: wall time of the layer's compile (s).
    """

    def __init__(self, name: str, kind: str, program: Program, bias: np.ndarray | None, *,
                 source_shape: tuple, source_layout: str, conv: ConvSpec | None = None,
                 activation: str | None = None, positions: int | None = None, compile_s: float = 0.0):
        self.name = name
        self.kind = kind
        self.program = program
        self.bias = bias
        self.source_shape = tuple(int(d) for d in source_shape)
        self.source_layout = source_layout
        self.conv = conv
        self.activation = activation
        self.positions = positions
        self.compile_s = float(compile_s)
        self._weights: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(out, in)`` of the layer's matrix."""
        return self.program.shape

    def weights(self) -> np.ndarray:
        """The ``(out, in)`` float64 matrix the compiled layer applies: the real part of the program's matrix."""
        if self._weights is None:
            self._weights = np.ascontiguousarray(np.real(self.program.dense))
        return self._weights

    def _check_x(self, x: Any) -> np.ndarray:
        if isinstance(x, (str, bytes)) or x is None:
            raise InvalidTypeError(f"x must be a numeric array; got {type(x).__name__}")
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise InvalidTypeError(f"x must be a real numeric array; got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise InvalidInputError(f"x must be finite; got NaN/Inf entries (layer {self.name!r})")
        return arr

    def expected_input(self) -> str:
        """The input shape this layer takes, in words."""
        n = self.shape[1]
        if self.conv is None:
            return f"({n},) or (batch, {n})"
        c = self.conv.in_channels
        if self.conv.one_d:
            return f"(C={c}, L)" if self.conv.data_layout == "CHW" else f"(L, C={c})"
        return f"(C={c}, H, W)" if self.conv.data_layout == "CHW" else f"(H, W, C={c})"

    def forward(self, x: Any) -> np.ndarray:
        """The layer on the ideal chip (no activation): one example or a batch (leading axis), float64.

        Dense: ``x`` ``(in,)`` or ``(batch, in)``. Convolution: one example in the
        layer's data layout (``(C, H, W)``, Flax ``(H, W, C)``; 1-D ``(C, L)``,
        Flax ``(L, C)``) or a batch of them.
        """
        x = self._check_x(x)
        if self.conv is None:
            if x.ndim not in (1, 2) or x.shape[-1] != self.shape[1]:
                raise InvalidInputError(f"x must have shape {self.expected_input()} for layer {self.name!r}; "
                                        f"got {x.shape}")
            return dense_apply(self.weights(), self.bias, x)
        nd = 2 if self.conv.one_d else 3
        ch_axis = -nd if self.conv.data_layout == "CHW" else -1
        if x.ndim not in (nd, nd + 1) or x.shape[ch_axis] != self.conv.in_channels:
            raise InvalidInputError(f"x must have shape {self.expected_input()} (or a batch of them) for layer "
                                    f"{self.name!r}; got {x.shape}")
        return conv_apply(self.weights(), self.bias, self.conv, x)

    __call__ = forward

    def record(self) -> dict:
        """The layer's manifest fields (without its files)."""
        return {"name": self.name, "kind": self.kind, "matrix_shape": list(self.shape),
                "source_shape": list(self.source_shape), "source_layout": self.source_layout,
                "activation": self.activation, "conv": None if self.conv is None else self.conv.to_dict(),
                "positions": self.positions, "compile_s": self.compile_s}

    def __repr__(self) -> str:
        act = f", then {self.activation}" if self.activation else ""
        return (f"CompiledLayer({self.name!r}: {self.kind} {self.shape[0]}x{self.shape[1]} from "
                f"{self.source_shape}, {self.program.n_tiles} tile(s){act})")


class CompiledModel:
    """Every linear layer of a model, compiled for one target.

    Attributes:
      target: the :class:`~photocomp.Target`.
      layers: the :class:`CompiledLayer` values, in model order.
      source: ``"params"``, ``"equinox"``, ``"safetensors"`` or ``"onnx"``.
      sequential: whether the layers form a chain (then :meth:`forward` runs the whole model).
      skipped: the parts of the model not compiled, each ``"name: why"``.
      batch: input vectors per inference used by :attr:`report`.
    """

    def __init__(self, target: Target, layers: Iterable[CompiledLayer], *, source: str, sequential: bool,
                 skipped: Iterable[str] = (), batch: int = 1, power: bool = True):
        self.target = target
        self.layers = tuple(layers)
        self.source = source
        self.sequential = bool(sequential)
        self.skipped = tuple(skipped)
        self.batch = int(batch)
        self._power = power
        self._report: ModelReport | None = None

    # -- access ----------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[CompiledLayer]:
        return iter(self.layers)

    def __getitem__(self, key: int | str) -> CompiledLayer:
        if isinstance(key, str):
            for layer in self.layers:
                if layer.name == key:
                    return layer
            raise InvalidInputError(f"key must name a layer of this model; got {quote(key)}; layers: "
                                    f"{quote(self.names, 300)}")
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            raise InvalidTypeError(f"key must be a layer index or name; got {type(key).__name__}")
        n = len(self.layers)
        if not -n <= int(key) < n:
            raise InvalidInputError(f"key must be a layer index in [{-n}, {n - 1}]; got {int(key)}")
        return self.layers[int(key)]

    @property
    def report(self) -> ModelReport:
        """Per-layer and whole-model figures (:mod:`photocomp.models.report`), computed once."""
        if self._report is None:
            self._report = ModelReport(self.target.name, self.batch, tuple(self._layer_report(la)
                                                                            for la in self.layers))
        return self._report

    def _layer_report(self, layer: CompiledLayer) -> LayerReport:
        vectors = self.batch * (layer.positions or 1)
        return layer_report(layer.name, layer.kind, layer.program, vectors=vectors, compile_s=layer.compile_s,
                            power=self._power)

    # -- running ---------------------------------------------------------------------
    def forward(self, x: Any) -> np.ndarray:
        """The whole model on the ideal chip: each layer, then its activation, in order (float64).

        Only for a chain (:attr:`sequential`); a dense layer after a convolution
        reads its input flattened (C order, in the data's own layout, as
        ``torch.flatten`` / ``x.reshape`` do). ``x`` is one example or a batch.
        """
        if not self.sequential:
            raise InvalidInputError(
                f"model.forward runs chains of layers only; this {self.source} model's layers are not known to "
                "form one (run them one by one: model[name].forward(x); a params tree or safetensors file "
                "becomes a chain with compile_model(..., activations={...}))")
        y = self.layers[0]._check_x(x)
        first = self.layers[0]
        per_example = 1 if first.conv is None else (2 if first.conv.one_d else 3)
        batched = y.ndim == per_example + 1
        for i, layer in enumerate(self.layers):
            if layer.conv is None and y.ndim > (2 if batched else 1):
                y = y.reshape((y.shape[0], -1) if batched else (-1,))
            try:
                y = layer.forward(y)
            except InvalidInputError as exc:
                raise InvalidInputError(f"model.forward: layer {i} ({layer.name!r}): {exc}") from None
            y = apply_activation(layer.activation, y)
        return y

    __call__ = forward

    # -- files -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> str:
        """Write the compiled model (``.pcm``: :mod:`photocomp.models.archive`) atomically; returns the path.

        Raises:
          InvalidTypeError: ``path`` is not a str or os.PathLike.
          InvalidInputError: ``path`` cannot name a file (empty, a NUL byte, a folder).
          PhaseMapFileError: the folder is missing or the operating system refuses the write;
            an existing file is kept.
        """
        if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
            raise InvalidTypeError(f"path must be a file path (str or os.PathLike); got {type(path).__name__}")
        head = {"target": self.target.name, "source": self.source, "sequential": self.sequential,
                "skipped": list(self.skipped)}
        return write_archive(os.fspath(path), head, [(la.record(), la.program, la.bias) for la in self.layers])

    def summary(self) -> dict:
        """Headline numbers: target, source, layers, tiles, MZIs, latency, heater power, largest error."""
        r = self.report
        return {"target": self.target.name, "source": self.source, "sequential": self.sequential, **r.totals()}

    def __repr__(self) -> str:
        tiles = sum(la.program.n_tiles for la in self.layers)
        return (f"CompiledModel({len(self.layers)} layers from {self.source} on {self.target.name}: {tiles} tiles"
                f"{', a chain' if self.sequential else ''})")


# ---- compile -----------------------------------------------------------------------------


def _check_pipeline(pipeline, target: Target) -> None:
    """Refuse intensity detection before any work: a layer must read fields (y = W x), not |W x|^2."""
    detection = target.detection
    if isinstance(pipeline, (str, Pipeline)):
        pipe = Pipeline.parse(pipeline) if isinstance(pipeline, str) else pipeline
        for p in pipe.passes:
            if getattr(p, "name", None) == "lower" and getattr(p, "detection", None) is not None:
                detection = p.detection
    if detection != "coherent":
        raise InvalidInputError(f"pipeline must read the layers coherently (detection='coherent'): a layer computes "
                                f"W x; got detection={detection!r}")


def _apply_activations(spec: ModelSpec, activations) -> ModelSpec:
    if activations is None:
        return spec
    if spec.source not in ("params", "safetensors"):
        raise InvalidInputError(f"activations apply to params trees and safetensors files only: this {spec.source} "
                                "model records its own")
    if not isinstance(activations, Mapping):
        raise InvalidTypeError(f"activations must be a mapping of layer names to activation names (or None); got "
                               f"{type(activations).__name__}")
    names = [ls.name for ls in spec.layers]
    missing, extra = [n for n in names if n not in activations], sorted(set(activations) - set(names))
    if missing or extra:
        raise InvalidInputError(f"activations must name every layer of the model, in order {quote(names, 300)}; "
                                f"missing {quote(missing, 200)}, unknown {quote(extra, 200)}")
    layers = []
    for ls in spec.layers:
        act = activations[ls.name]
        if act is not None:
            try:
                parse_activation(act)
            except PhotocompError as exc:
                raise type(exc)(f"activations[{ls.name!r}]: {exc}") from None
        layers.append(dataclasses.replace(ls, activation=act))
    return dataclasses.replace(spec, layers=tuple(layers), sequential=True)


def _compile_layer(ls: LayerSpec, target: Target, pipeline, callback) -> CompiledLayer:
    t0 = time.perf_counter()
    try:
        prog = compile_matrix(ls.matrix, target=target, pipeline=pipeline, callback=callback)
    except PhotocompError as exc:
        raise type(exc)(f"layer {ls.name!r}: {exc}") from None
    return CompiledLayer(ls.name, ls.kind, prog, ls.bias, source_shape=ls.source_shape,
                         source_layout=ls.source_layout, conv=ls.conv, activation=ls.activation,
                         positions=ls.positions, compile_s=time.perf_counter() - t0)


def compile_model(model: Any, target: str | Target = "pace-64", pipeline: str | Pipeline | None = None, *,
                  exclude: Iterable[str] = (), conv: Mapping[str, Mapping] | None = None,
                  activations: Mapping[str, str | None] | None = None, batch: int = 1, power: bool = True,
                  progress: bool = False, callback: Callable | None = None) -> CompiledModel:
    """Compile every linear layer of a model (convolutions by im2col) to a target.

    Args:
      model: a path to an ``.onnx`` or ``.safetensors`` file, a params tree (a dict of arrays: Flax
        params, a torch ``state_dict``) or an Equinox module (:mod:`photocomp.models.sources`).
      target: a target name or :class:`~photocomp.Target`; each layer is tiled onto it.
      pipeline: a pipeline for every layer (see :func:`photocomp.compile`); default the target's preset.
        Its detection must be coherent.
      exclude: layer names not to compile (e.g. an embedding's ``weight`` in a state_dict).
      conv: ``{layer: {"stride", "padding", "dilation"}}`` for convolutions of a params tree or
        safetensors file, whose files do not record them.
      activations: ``{layer: activation or None}`` for every layer of a params tree or safetensors
        file: declares the layers a chain in their order (``model.forward`` then runs).
      batch: input vectors per inference, for the report's cycles and latency (int >= 1).
      power: compute the report's heater powers (a drive map per tile); False reports NaN.
      progress: a progress bar over the layers.
      callback: passed to every layer's :func:`photocomp.compile`.

    Returns:
      a :class:`CompiledModel`.

    Raises:
      InvalidTypeError: ``model`` of another kind; non-numeric weights (the layer named).
      InvalidInputError: an empty model, a layer with a bad shape or NaN weights, an unsupported ONNX
        operator (the layer named), unknown ``exclude``/``conv``/``activations`` names.
      UnknownNameError, PipelineError: an unknown target or a bad pipeline.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> rng = np.random.default_rng(0)
      >>> params = {"Dense_0": {"kernel": rng.normal(size=(6, 4)), "bias": np.zeros(4)}}   # Flax: (in, out)
      >>> m = pc.compile_model(params, target="clements-8")
      >>> m["Dense_0"].shape
      (4, 6)
    """
    tgt = get_target(target)
    batch = check_int(batch, "batch", low=1)
    if isinstance(exclude, (str, bytes)) or not isinstance(exclude, Iterable):
        raise InvalidTypeError(f"exclude must be a list of layer names; got {type(exclude).__name__} {quote(exclude)}")
    excluded = list(exclude)
    if not all(isinstance(e, str) for e in excluded):
        raise InvalidTypeError(f"exclude must be a list of layer names (str); got {quote(excluded)}")
    if pipeline is not None and not isinstance(pipeline, (str, Pipeline)):
        raise InvalidTypeError(f"pipeline must be None, a string or a photocomp.Pipeline; got {type(pipeline).__name__}")
    _check_pipeline(pipeline, tgt)
    spec = read_model(model, conv=conv)
    names = [ls.name for ls in spec.layers]
    unknown = sorted(set(excluded) - set(names))
    if unknown:
        raise InvalidInputError(f"exclude must name layers of the model; got unknown {quote(unknown, 200)}; layers: "
                                f"{quote(names, 300)}")
    if excluded:
        kept = tuple(ls for ls in spec.layers if ls.name not in excluded)
        if not kept:
            raise InvalidInputError(f"exclude leaves no layer to compile; layers: {quote(names, 300)}")
        spec = dataclasses.replace(spec, layers=kept, sequential=False,
                                   skipped=spec.skipped + tuple(f"{e}: excluded" for e in excluded))
    spec = _apply_activations(spec, activations)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(spec.layers), desc="compile_model", unit="layer")
    layers = []
    try:
        for ls in spec.layers:
            if bar is not None:
                bar.set_postfix_str(ls.name[:30])
            layers.append(_compile_layer(ls, tgt, pipeline, callback))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return CompiledModel(tgt, layers, source=spec.source, sequential=spec.sequential, skipped=spec.skipped,
                         batch=batch, power=power)


def load_model(path: str | os.PathLike, *, batch: int = 1) -> CompiledModel:
    """Load a compiled model written by :meth:`CompiledModel.save`, verifying every digest.

    Nothing is unpickled or executed. The phase maps and biases come back exactly; each layer's matrix is
    re-simulated from its phase map, equal to the saved model's to float64 rounding.

    Raises:
      InvalidTypeError: ``path`` is not a str or os.PathLike.
      PhaseMapFileError: missing, unreadable, not a model file, tampered (a manifest or member whose
        SHA-256 does not match) or inconsistent; the message names the file and the member.
    """
    batch = check_int(batch, "batch", low=1)
    manifest, entries = read_archive(path)
    layers = []
    for e in entries:
        r = e.record
        layers.append(CompiledLayer(r["name"], r["kind"], e.program, e.bias, source_shape=tuple(r["source_shape"]),
                                    source_layout=r["source_layout"],
                                    conv=None if r["conv"] is None else ConvSpec.from_dict(r["conv"]),
                                    activation=r["activation"], positions=r["positions"], compile_s=r["compile_s"]))
    return CompiledModel(entries[0].program.target, layers, source=manifest["source"],
                         sequential=manifest["sequential"], skipped=manifest["skipped"], batch=batch)
