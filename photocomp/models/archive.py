"""The compiled-model file (``.pcm``): one phase-map file per layer and a JSON manifest, in one zip archive.

Archive
-------
A zip archive, every member uncompressed (``ZIP_STORED``), holding exactly:

* ``layers/NNNN.phases.npz``: layer ``NNNN``'s program (``NNNN`` its index,
  from ``0000``), a phase-map file in the format of
  :mod:`photocomp.io.program_file` (written by :meth:`photocomp.Program.save`);
* ``layers/NNNN.bias.npy``: the layer's bias, a 1-D float64 ``.npy`` array
  (read with ``allow_pickle=False``), for layers that have one;
* ``manifest.json``: the manifest, UTF-8 JSON.

The file is written atomically (a temporary file in the destination folder,
then renamed; :mod:`photocomp.core.atomic`). Nothing in it is executed or
unpickled.

Manifest
--------
One JSON object (no duplicate keys, no NaN) with exactly the fields:

* ``format``: ``"photocomp.model"``; ``format_version``: ``1``;
  ``photocomp_version``: the writer's version.
* ``target``: the target's name (every layer's phase-map file holds the full
  target, which must have this name).
* ``source``: ``"params"``, ``"equinox"``, ``"safetensors"`` or ``"onnx"``.
* ``sequential``: whether the layers form a chain (:attr:`CompiledModel.forward
  <photocomp.models.model.CompiledModel.forward>` runs only then).
* ``convention``: the layout convention in words (:data:`CONVENTION`).
* ``skipped``: list of strings, the parts of the model not compiled.
* ``layers``: a list, in order, of objects with exactly the fields
  ``name`` (str, unique), ``kind`` (``"dense"`` or ``"conv"``),
  ``matrix_shape`` (``[out, in]``), ``source_shape`` (the weight's shape in
  the model), ``source_layout`` (str), ``activation`` (str or null,
  :data:`photocomp.models.layers.ACTIVATIONS`), ``conv`` (null, or the
  :class:`~photocomp.models.layers.ConvSpec` fields), ``positions`` (int or
  null), ``compile_s`` (number), ``file`` / ``sha256`` / ``bytes`` (the
  phase-map member, its SHA-256 and size) and ``bias`` (null, or an object
  with ``file``, ``sha256``, ``bytes``).
* ``sha256``: SHA-256 (hex) of the canonical JSON of the manifest without this
  field (keys sorted, separators ``,`` and ``:``, ASCII).

A reader (:func:`read_archive`) refuses, with
:class:`~photocomp.core.errors.PhaseMapFileError` naming the file and the
member: a file that is not such an archive, another format or version, a
manifest whose digest or schema does not hold, missing, extra or duplicate
members, a member whose size or SHA-256 differs from the manifest, and a
phase-map file or bias that does not read or does not match its layer.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import tokenize
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from photocomp.compiler.program import Program, load
from photocomp.core.atomic import atomic_write, os_reason, quote_path
from photocomp.core.errors import InvalidInputError, InvalidTypeError, PhaseMapFileError, PhotocompError
from photocomp.core.version import __version__
from photocomp.io.program_file import (
    DuplicateKeyError,
    check_existing_file,
    check_path,
    quiet_npy_header,
    unique_keys,
)
from photocomp.models.layers import ACTIVATIONS, ConvSpec, parse_activation

__all__ = ["FORMAT", "FORMAT_VERSION", "CONVENTION", "write_archive", "read_archive", "LayerEntry"]

FORMAT = "photocomp.model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20
_CHUNK = 1 << 20

CONVENTION = ("each layer is y = W x + b with W of shape (out, in) = matrix_shape, x a column; Flax kernels "
              "(in, out) were transposed, torch/Equinox/ONNX-Gemm(transB=1) weights (out, in) taken as they are; "
              "a convolution kernel (out, in, kh, kw) is the matrix (out, in*kh*kw) in C order, applied to "
              "im2col patches of the padded input, one column per output position in row-major order")

_LAYER_KEYS = frozenset({"name", "kind", "matrix_shape", "source_shape", "source_layout", "activation", "conv",
                         "positions", "compile_s", "file", "sha256", "bytes", "bias"})
_KEYS = frozenset({"format", "format_version", "photocomp_version", "target", "source", "sequential", "convention",
                   "skipped", "layers", "sha256"})
SOURCES = ("params", "equinox", "safetensors", "onnx")


class LayerEntry:
    """One layer as stored: its manifest record, program and bias."""

    def __init__(self, record: dict, program: Program, bias: np.ndarray | None):
        self.record = record
        self.program = program
        self.bias = bias


def digest(manifest: dict) -> str:
    """SHA-256 of the canonical JSON of ``manifest`` without its ``sha256`` field."""
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _file_digest(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def write_archive(path: str, head: dict, layers: list[tuple[dict, Program, np.ndarray | None]],
                  progress: Callable[[int], Any] | None = None) -> str:
    """Write the archive atomically: ``head`` (the manifest's model fields) and per layer (record, program, bias).

    Each record gets its ``file``/``sha256``/``bytes`` and ``bias`` fields here.
    """
    records = []

    def write(fh) -> None:
        with tempfile.TemporaryDirectory(prefix="photocomp-model-") as tmp, \
                zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for i, (record, prog, bias) in enumerate(layers):
                rec = dict(record)
                member = f"layers/{i:04d}.phases.npz"
                local = os.path.join(tmp, f"{i:04d}.phases.npz")
                prog.save(local)
                sha, size = _file_digest(local)
                zf.write(local, member)
                os.unlink(local)
                rec.update(file=member, sha256=sha, bytes=size, bias=None)
                if bias is not None:
                    buf = io.BytesIO()
                    np.save(buf, np.ascontiguousarray(bias, dtype=np.float64), allow_pickle=False)
                    data = buf.getvalue()
                    bmember = f"layers/{i:04d}.bias.npy"
                    zf.writestr(bmember, data)
                    rec["bias"] = {"file": bmember, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                records.append(rec)
                if progress is not None:
                    progress(i)
            manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "photocomp_version": __version__,
                        **head, "convention": CONVENTION, "layers": records}
            manifest["sha256"] = digest(manifest)
            zf.writestr(MANIFEST, json.dumps(manifest, indent=1, allow_nan=False).encode("utf-8"))

    return atomic_write(path, write)


# ---- reading ---------------------------------------------------------------------------------


class _Bad(Exception):
    pass


def _no_constant(name: str):
    raise _Bad(f"{name} is not allowed")


def _int(v, where: str, low: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise _Bad(f"{where} must be an integer >= {low}; got {v!r}"[:200])
    return v


def _str(v, where: str) -> str:
    if not isinstance(v, str):
        raise _Bad(f"{where} must be a string; got {type(v).__name__}")
    return v


def _shape(v, where: str, ndim: int | None = None) -> tuple[int, ...]:
    if not isinstance(v, list) or (ndim is not None and len(v) != ndim) or not v:
        raise _Bad(f"{where} must be a list of {ndim or 'some'} integers; got {v!r}"[:200])
    return tuple(_int(d, where, 1) for d in v)


def _check_manifest(m: Any) -> dict:
    if not isinstance(m, dict):
        raise _Bad(f"the manifest must be a JSON object; got {type(m).__name__}")
    if m.get("format") != FORMAT:
        raise _Bad(f"not a photocomp model: format must be {FORMAT!r}; got {m.get('format')!r}"[:200])
    if m.get("format_version") != FORMAT_VERSION:
        raise _Bad(f"format_version must be {FORMAT_VERSION} (this photocomp reads only that); got "
                   f"{m.get('format_version')!r}"[:200])
    if set(m) != _KEYS:
        raise _Bad(f"the manifest must have exactly the fields {sorted(_KEYS)}; missing "
                   f"{sorted(_KEYS - set(m))}, extra {sorted(set(m) - _KEYS)}"[:300])
    if m["sha256"] != digest(m):
        raise _Bad("the manifest's sha256 does not match its content (tampered or corrupt)")
    _str(m["target"], "target")
    _str(m["photocomp_version"], "photocomp_version")
    _str(m["convention"], "convention")
    if m["source"] not in SOURCES:
        raise _Bad(f"source must be one of {SOURCES}; got {m['source']!r}"[:200])
    if not isinstance(m["sequential"], bool):
        raise _Bad("sequential must be true or false")
    if not isinstance(m["skipped"], list) or not all(isinstance(s, str) for s in m["skipped"]):
        raise _Bad("skipped must be a list of strings")
    if not isinstance(m["layers"], list) or not m["layers"]:
        raise _Bad("layers must be a non-empty list")
    names = set()
    for i, rec in enumerate(m["layers"]):
        w = f"layers[{i}]"
        if not isinstance(rec, dict) or set(rec) != _LAYER_KEYS:
            raise _Bad(f"{w} must be an object with exactly the fields {sorted(_LAYER_KEYS)}")
        name = _str(rec["name"], f"{w}.name")
        if name in names:
            raise _Bad(f"{w}.name {name!r} repeats an earlier layer's name")
        names.add(name)
        if rec["kind"] not in ("dense", "conv"):
            raise _Bad(f"{w}.kind must be 'dense' or 'conv'; got {rec['kind']!r}"[:200])
        _shape(rec["matrix_shape"], f"{w}.matrix_shape", 2)
        _shape(rec["source_shape"], f"{w}.source_shape")
        _str(rec["source_layout"], f"{w}.source_layout")
        if rec["activation"] is not None:
            try:
                parse_activation(rec["activation"])
            except PhotocompError as exc:
                raise _Bad(f"{w}.activation: {exc} ({', '.join(ACTIVATIONS)})") from None
        if (rec["conv"] is None) != (rec["kind"] == "dense"):
            raise _Bad(f"{w}.conv must be null for a dense layer and an object for a conv layer")
        if rec["positions"] is not None:
            _int(rec["positions"], f"{w}.positions", 1)
        cs = rec["compile_s"]
        if isinstance(cs, bool) or not isinstance(cs, (int, float)) or not math.isfinite(cs) or cs < 0:
            raise _Bad(f"{w}.compile_s must be a finite number >= 0; got {cs!r}"[:200])
        if rec["file"] != f"layers/{i:04d}.phases.npz":
            raise _Bad(f"{w}.file must be 'layers/{i:04d}.phases.npz'; got {rec['file']!r}"[:200])
        _str(rec["sha256"], f"{w}.sha256")
        _int(rec["bytes"], f"{w}.bytes", 1)
        b = rec["bias"]
        if b is not None:
            if not isinstance(b, dict) or set(b) != {"file", "sha256", "bytes"}:
                raise _Bad(f"{w}.bias must be null or an object with file, sha256, bytes")
            if b["file"] != f"layers/{i:04d}.bias.npy":
                raise _Bad(f"{w}.bias.file must be 'layers/{i:04d}.bias.npy'; got {b['file']!r}"[:200])
            _str(b["sha256"], f"{w}.bias.sha256")
            _int(b["bytes"], f"{w}.bias.bytes", 1)
    return m


def _member(zf: zipfile.ZipFile, name: str, size: int, sha: str, sink) -> None:
    info = zf.getinfo(name)
    if info.file_size != size:
        raise _Bad(f"member {name!r} has {info.file_size} bytes; the manifest says {size}")
    h = hashlib.sha256()
    n = 0
    with zf.open(info) as fh:
        while chunk := fh.read(_CHUNK):
            n += len(chunk)
            if n > size:
                raise _Bad(f"member {name!r} is longer than the {size} bytes the manifest says")
            h.update(chunk)
            sink(chunk)
    if n != size or h.hexdigest() != sha:
        raise _Bad(f"member {name!r} does not match its sha256 in the manifest (tampered or corrupt)")


def read_archive(path: str | os.PathLike) -> tuple[dict, list[LayerEntry]]:
    """Read and verify a compiled-model file: its manifest and every layer's program and bias.

    Raises:
      InvalidTypeError: ``path`` is not a str or os.PathLike.
      PhaseMapFileError: missing, unreadable, not a model archive, tampered or inconsistent
        (the message names the file and what was wrong).
    """
    path = check_path(path, load=True)
    check_existing_file(path)
    q = quote_path(path)
    try:
        with open(path, "rb") as fh:
            if not fh.read(4).startswith(b"PK"):
                raise _Bad("not a photocomp model file (a zip archive written by CompiledModel.save)")
            fh.seek(0)
            with zipfile.ZipFile(fh) as zf, tempfile.TemporaryDirectory(prefix="photocomp-model-") as tmp:
                return _read(zf, tmp)
    except _Bad as exc:
        raise PhaseMapFileError(f"cannot read {q}: {exc}") from None
    except PhaseMapFileError as exc:
        raise PhaseMapFileError(f"cannot read {q}: {exc}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, KeyError, OverflowError,
            NotImplementedError, RuntimeError) as exc:
        raise PhaseMapFileError(f"cannot read {q}: truncated or corrupt ({type(exc).__name__}: "
                                f"{str(exc)[:160]})") from None
    except MemoryError:
        raise PhaseMapFileError(f"cannot read {q}: not enough memory for what it declares") from None
    except OSError as exc:
        raise PhaseMapFileError(f"cannot read {q}: {os_reason(exc)}") from None


def _read(zf: zipfile.ZipFile, tmp: str) -> tuple[dict, list[LayerEntry]]:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(names) != len(set(names)):
        raise _Bad("the archive holds two members of one name")
    if MANIFEST not in names:
        raise _Bad(f"not a photocomp model file: no {MANIFEST}")
    info = zf.getinfo(MANIFEST)
    if info.file_size > MAX_MANIFEST_BYTES:
        raise _Bad(f"{MANIFEST} declares {info.file_size} bytes, more than {MAX_MANIFEST_BYTES}")
    try:
        text = zf.read(MANIFEST).decode("utf-8")
        m = json.loads(text, object_pairs_hook=unique_keys, parse_constant=_no_constant)
    except DuplicateKeyError as exc:
        raise _Bad(f"duplicate key {exc.args[0]!r}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _Bad(f"{MANIFEST} is not UTF-8 JSON ({type(exc).__name__})") from None
    m = _check_manifest(m)
    expected = {MANIFEST}
    for rec in m["layers"]:
        expected.add(rec["file"])
        if rec["bias"] is not None:
            expected.add(rec["bias"]["file"])
    if set(names) != expected:
        raise _Bad(f"the archive's members must be exactly those the manifest names; missing "
                   f"{sorted(expected - set(names))[:5]}, extra {sorted(set(names) - expected)[:5]}")
    entries = []
    for i, rec in enumerate(m["layers"]):
        where = f"layer {rec['name']!r} ({rec['file']})"
        local = os.path.join(tmp, f"{i:04d}.phases.npz")
        with open(local, "wb") as out:
            _member(zf, rec["file"], rec["bytes"], rec["sha256"], out.write)
        try:
            prog = load(local)
        except PhotocompError as exc:
            raise _Bad(f"{where}: {str(exc).replace(quote_path(local), 'the member')}") from None
        os.unlink(local)
        if prog.target.name != m["target"]:
            raise _Bad(f"{where}: its target {prog.target.name!r} is not the model's {m['target']!r}")
        if list(prog.shape) != rec["matrix_shape"]:
            raise _Bad(f"{where}: its matrix is {prog.shape[0]}x{prog.shape[1]}; the manifest says "
                       f"{rec['matrix_shape']}")
        if prog.calibrated:
            raise _Bad(f"{where}: a calibrated program (a model holds compiled programs)")
        bias = None
        if rec["bias"] is not None:
            parts: list[bytes] = []
            b = rec["bias"]
            _member(zf, b["file"], b["bytes"], b["sha256"], parts.append)
            try:
                with quiet_npy_header():
                    bias = np.load(io.BytesIO(b"".join(parts)), allow_pickle=False)
            except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:  # a damaged header
                raise _Bad(f"layer {rec['name']!r} ({b['file']}): not a .npy array ({str(exc)[:100]})") from None
            if bias.dtype != np.float64 or bias.shape != (prog.shape[0],) or not np.all(np.isfinite(bias)):
                raise _Bad(f"layer {rec['name']!r} ({b['file']}): the bias must be finite float64 of shape "
                           f"({prog.shape[0]},); got {bias.dtype} {bias.shape}")
        if rec["conv"] is not None:
            try:
                spec = ConvSpec.from_dict(rec["conv"])
            except (InvalidInputError, InvalidTypeError, TypeError, ValueError) as exc:
                raise _Bad(f"layer {rec['name']!r}: conv: {str(exc)[:200]}") from None
            cols = spec.in_channels * spec.kernel[0] * spec.kernel[1]
            if cols != prog.shape[1]:
                raise _Bad(f"layer {rec['name']!r}: conv in_channels x kernel = {cols} columns, but the matrix "
                           f"has {prog.shape[1]}")
        entries.append(LayerEntry(rec, prog, bias))
    return m, entries
