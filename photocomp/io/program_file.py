"""The versioned phase-map file format (the one place that defines it).

A phase-map file holds one compiled (optionally calibrated) program. It is a
zip archive in numpy's ``.npz`` layout, written by :func:`save_program`
(:meth:`photocomp.Program.save`) and read by :func:`read_program`
(:func:`photocomp.load`). Nothing in a file is ever executed or unpickled.

Archive
-------
Every member is an uncompressed (``ZIP_STORED``) ``.npy`` file named
``<array>.npy``: the arrays below, plus ``__meta__.npy``, a 1-D ``uint8``
array holding the UTF-8 JSON metadata record. Arrays are C-ordered, of the
dtype listed, little-endian as written on common machines (a reader accepts
either byte order). Nothing else may be in the archive.

Program
-------
A real or complex ``M x N`` matrix ``W`` (``M = out_dim``, ``N = in_dim``) is
cut into ``K x K`` tiles (``K`` = ``grid.tile`` = the target's ``size`` = the
mesh's ``n_modes``): ``rows = ceil(M / K)`` block rows, ``cols = ceil(N / K)``
block columns, ``T = rows * cols`` tiles in row-major order, tile ``t`` at
block row ``t // cols`` and block column ``t % cols``. The input ``x`` (N,)
is zero-padded to ``cols * K``; tile ``t`` reads input block ``t % cols`` and
its output is added (electronically) into output block ``t // cols``; the
result is cropped to ``M``. Mode ``n`` of a tile is entry ``n`` of its input
and output blocks (mode 0 is the first row and the first column).

Every tile runs the program's *circuit* (metadata field ``circuit``,
:data:`photocomp.core.ir.CIRCUITS`). In an ``"svd"`` program tile ``t``
implements::

    W_t = gain[t] * diag(e^{i u_out_phase[t]}) U(u_theta[t], u_phi[t])
                  * diag(cos sigma[t])
                  * diag(e^{i v_out_phase[t]}) V(v_theta[t], v_phi[t])

where ``V(...)`` and ``U(...)`` are the meshes' MZI columns without their
screens. The V mesh with its output screen, the first mesh light meets,
implements ``V_t^H`` (the conjugate transpose of the right singular vectors
of the zero-padded tile, ``W_t ~ U_t S_t V_t^H``); the U mesh with its screen
implements ``U_t``; ``cos sigma[t] ~ S_t / gain[t]`` with ``gain[t]`` the
largest singular value. In a ``"unitary"`` program (every tile a scaled
unitary) tile ``t`` has one mesh, stored as the U mesh, and no attenuators::

    W_t = gain[t] * diag(e^{i u_out_phase[t]}) U(u_theta[t], u_phi[t])

the U mesh with its screen implementing the unitary ``W_t / gain[t]``
(``gain[t]`` its scale). A mesh ``M(theta, phi)`` applies its MZIs column by
column, column 0 first (column 0 is the input side, where light enters);
MZI ``j`` acts on modes ``(mode_pairs[j], mode_pairs[j] + 1)`` (in a
``butterfly`` mesh on ``(mode_pairs[j], mode_pairs[j] + 2^columns[j])``) with the
convention's 2 x 2 matrix (:mod:`photocomp.core.convention`, tag
``clements2016-eq1``)::

    T(theta, phi) = [[e^{i phi} cos theta, -sin theta],
                     [e^{i phi} sin theta,  cos theta]]

(the external phase ``phi`` sits on the upper input). MZIs are stored in
the order light meets them: by column, upper mode ascending inside a column
(``columns`` is non-decreasing). An output screen multiplies the field on
mode ``n`` by ``e^{+i out_phase[n]}`` after the mesh's last column.
``detection = "coherent"`` reads the fields ``y = W x``; ``"intensity"``
reads ``|W x|^2``.

Arrays
------
``T`` tiles, ``K`` modes, ``n_mzi = K (K - 1) / 2`` MZIs per mesh,
``H`` heaters per tile: ``4 n_mzi + 3 K`` (``svd``), ``2 n_mzi + K``
(``unitary``). Ranges are checked on load and on save (``ANGLE_TOLERANCE``
allows rounding at the ends of closed ranges; ``PHASE_LIMIT`` bounds phases
that are only meaningful modulo 2 pi). A file holds exactly its circuit's
arrays (:func:`circuit_arrays`), no more and no fewer: an ``svd`` file all of
the first table, a ``unitary`` file only ``u_theta``, ``u_phi``,
``u_out_phase``, ``gain``, ``mode_pairs`` and ``columns`` (no ``v_*``, no
``sigma``).

=================  ===========  =======  ==================================================
array              shape        dtype    meaning (units; range)
=================  ===========  =======  ==================================================
``v_theta``        (T, n_mzi)   float64  V-mesh internal angles theta (rad; [0, pi/2])
``v_phi``          (T, n_mzi)   float64  V-mesh external phases phi (rad; |phi| <= PHASE_LIMIT)
``v_out_phase``    (T, K)       float64  V-mesh output screen (rad; |.| <= PHASE_LIMIT)
``sigma``          (T, K)       float64  attenuator angles; amplitude cos(sigma) on mode n (rad; [0, pi/2])
``u_theta``        (T, n_mzi)   float64  U-mesh internal angles theta (rad; [0, pi/2])
``u_phi``          (T, n_mzi)   float64  U-mesh external phases phi (rad; |phi| <= PHASE_LIMIT)
``u_out_phase``    (T, K)       float64  U-mesh output screen (rad; |.| <= PHASE_LIMIT)
``gain``           (T,)         float64  electronic gain per tile (dimensionless; finite, >= 0)
``mode_pairs``     (n_mzi,)     int32    upper mode of each MZI, equal to the layout's
``columns``        (n_mzi,)     int32    column of each MZI, equal to the layout's
=================  ===========  =======  ==================================================

The compiler emits theta in [0, pi/2] and, after ``canonicalize``, phi and
output phases in [0, 2 pi). A program calibrated for a fabricated chip also
stores the phases its heaters must produce
(:class:`photocomp.hardware.chipsim.Settings`, physical convention of
:mod:`photocomp.sim.physical`), all float64 and finite: an ``svd`` file all
of the table below, a ``unitary`` file only ``cal_u_int``, ``cal_u_ext``,
``cal_u_out``, ``cal_gain`` and ``drives_mw`` (``cal_<group>`` for each of
the circuit's heater groups, :func:`photocomp.hardware.chip.heater_groups`):

=================  ===========  ==========================================================
array              shape        meaning (units; range)
=================  ===========  ==========================================================
``cal_v_int``      (T, n_mzi)   V-mesh internal (upper-arm) heater phases (rad; |.| <= PHASE_LIMIT)
``cal_v_ext``      (T, n_mzi)   V-mesh external heater phases (rad; |.| <= PHASE_LIMIT)
``cal_v_out``      (T, K)       V output phase shifters (rad; |.| <= PHASE_LIMIT)
``cal_att``        (T, K)       attenuator internal phases (rad; |.| <= PHASE_LIMIT)
``cal_u_int``      (T, n_mzi)   U-mesh internal heater phases (rad; |.| <= PHASE_LIMIT)
``cal_u_ext``      (T, n_mzi)   U-mesh external heater phases (rad; |.| <= PHASE_LIMIT)
``cal_u_out``      (T, K)       U output phase shifters (rad; |.| <= PHASE_LIMIT)
``cal_gain``       (T,)         electronic gain per tile on the chip (dimensionless; finite)
``drives_mw``      (T, H)       heater powers (mW; [0, drive_limit_p_pi * heater_p_pi_mw])
=================  ===========  ==========================================================

``drives_mw`` columns follow ``heater_groups(circuit)``
(:func:`photocomp.hardware.chip.heater_groups`): for ``svd`` V internal, V
external, V output, attenuator, U internal, U external, U output
(:data:`photocomp.hardware.chip.HEATER_GROUPS`); for ``unitary`` U internal,
U external, U output, then the cell's extra groups (trims: ``cal_v_trim``,
``cal_u_trim``). A chip of the symmetric (Bell) cell stores ``cal_<s>_low``
(lower-arm heaters, (T, n_mzi)) in place of ``cal_<s>_ext``, and adds the
input layers ``cal_<s>_in`` (T, K) and edge shifters ``cal_<s>_edge`` (T, E)
(:mod:`photocomp.core.bell`). A chip of Fldzhyan's layout (static couplers) has no
internal heaters and stores no ``cal_<s>_int``. The chip is not stored: it is re-sampled on load from
the target, the seed and the circuit (``fabricate(target, seed,
circuit=circuit)``; a ``unitary`` chip holds only its ``"u"`` stage's
couplers and losses and the offsets and efficiencies of its own heaters) and
must match its SHA-256 fingerprint (:func:`chip_fingerprint`).

Metadata (``__meta__``)
-----------------------
One JSON object (at most ``MAX_META_BYTES`` bytes, nesting depth at most
``MAX_JSON_DEPTH``, no duplicate keys) with exactly these fields:

* ``format``: ``"photocomp.phasemap"``; ``schema_version``: ``3`` (int);
  ``convention``: ``"clements2016-eq1"``.
* ``circuit``: ``"svd"``, ``"unitary"`` or ``"crossbar"`` (a crossbar target's weight cells, stored
  as the ``u`` arrays: ``mesh.kind`` ``"crossbar"``), the program circuit; it decides
  which arrays the file holds (see Arrays) and which chip a calibrated
  program is re-sampled as.
* ``phase_ranges``: ``{"theta": [0, pi/2], "phi": [0, 2 pi]}`` (the
  convention's canonical ranges, as numbers).
* ``units``: ``{quantity: unit}`` strings (:data:`UNITS`).
* ``photocomp_version``: the writer's version (string).
* ``target``: every field of :class:`photocomp.core.target.Target`
  (``Target.to_dict()``); ``target.mesh`` must equal ``mesh.kind`` and
  ``target.size`` must equal ``grid.tile``.
* ``grid``: ``{"out_dim": M, "in_dim": N, "tile": K}`` (ints >= 1).
* ``mesh``: ``{"kind": "clements" | "reck", "n_modes": K, "n_mzi": K (K-1)/2,
  "depth": K (clements, K > 2; 1 for K = 2) or 2 K - 3 (reck)}``.
* ``pipeline``: the pipeline text; ``detection``: ``"coherent"`` or ``"intensity"``.
* ``report``: the compile report, ``{"records": [{"name", "spec", "wall_s",
  "metrics"}], "summary": {...}}`` (:meth:`photocomp.core.ir.CompileReport.to_dict`).
* ``chip``: ``null``, or ``{"seed": int >= 0, "fingerprint": 64 hex digits}``
  for a calibrated program.
* ``arrays``: for every array, ``{"shape": [...], "dtype": "float64" |
  "int32", "sha256": 64 hex digits}``, the SHA-256 of its C-order bytes.
* ``meta_sha256``: SHA-256 (hex) of the canonical JSON of every other field
  (:func:`meta_digest`: keys sorted, separators ``","`` and ``":"``, ASCII
  with ``\\u`` escapes, floats in shortest round-trip form), so no field that
  determines the program (target, grid, mesh, circuit, detection, pipeline,
  chip, array records) nor the report can be edited unnoticed. It detects damage
  and careless edits, not forgery (anyone can recompute it): what a file
  says is therefore also checked for consistency and range, as below.

Older files are still read, with the same checks on structure and values.
Schema version 2 has no ``circuit`` field (a ``circuit`` field is refused)
and is always an ``svd`` program, with the ``svd`` arrays. Schema version 1
is version 2 without ``meta_sha256`` (which it refuses); ``chip`` and the
target's later fields may be absent, the target's defaults then apply.

Reading
-------
:func:`read_program` checks, in this order, before anything large is read or
built: the zip directory (at most ``MAX_MEMBERS`` members, known names,
uncompressed, declared sizes within the file, ``__meta__`` at most
``MAX_META_BYTES``); the metadata's size, depth, format, version, convention
and digest; the type and value of every metadata field and their agreement
(target, grid, mesh, circuit); the array records and the archive's members
against the circuit's exact array set (a missing or extra array is refused,
named); each member's declared size against the shape the grid and mesh
imply; then each array's ``.npy`` header (dtype, shape, C order),
bytes, SHA-256 and value ranges; only then is the mesh layout built and
compared with ``mode_pairs`` / ``columns``. Every refusal is a
:class:`PhaseMapFileError` naming the path and what was wrong. Writes go to a
temporary file in the destination folder, then ``os.replace`` it into place,
so a failure never leaves a half-written file; :func:`save_program` refuses
(:class:`InvalidInputError`) a program that the reader would refuse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import stat
import tokenize
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import jax
import numpy as np

from photocomp.core import convention
from photocomp.core.atomic import atomic_write, os_reason, quote_path
from photocomp.core.bell import edge_count
from photocomp.core.cell import get_cell
from photocomp.core.errors import InvalidInputError, InvalidTypeError, PhaseMapFileError, PhotocompError
from photocomp.core.ir import CIRCUITS, CompileReport, PhaseMap, TileGrid, circuit_stages
from photocomp.core.layout import MESH_KINDS, mesh_counts
from photocomp.core.layout import layout as mesh_layout
from photocomp.core.phases import MeshPhases
from photocomp.core.target import OPTIONAL_FIELDS, Target
from photocomp.core.version import __version__
from photocomp.hardware.chip import TRIM_GROUPS, fabricate, heater_groups
from photocomp.hardware.chipsim import Settings

__all__ = ["check_path", "check_existing_file", "unique_keys", "DuplicateKeyError", "FORMAT", "SCHEMA_VERSION", "READ_VERSIONS", "DETECTIONS", "UNITS", "PHASE_LIMIT", "ANGLE_TOLERANCE",
           "MAX_META_BYTES", "MAX_JSON_DEPTH", "MAX_MEMBERS", "ProgramFile", "save_program", "read_program",
           "atomic_write_npz", "meta_digest", "chip_fingerprint", "check_program_arrays", "mesh_counts",
           "circuit_arrays"]

FORMAT = "photocomp.phasemap"
SCHEMA_VERSION = 3
"""Schema version written."""
READ_VERSIONS = (1, 2, 3)
"""Schema versions read."""
DETECTIONS = ("coherent", "intensity")
"""Detection models a program may have."""
UNITS = {
    "theta": "rad", "phi": "rad", "out_phase": "rad", "sigma": "rad (amplitude cos(sigma))",
    "gain": "dimensionless", "wavelength_nm": "nm", "heater_p_pi_mw": "mW", "heater_tau_us": "us",
    "v_pi": "V", "clock_ghz": "GHz",
}
PHASE_LIMIT = 2048 * math.pi
"""Largest ``|phase|`` (rad) of an external or output phase or a heater phase in a file.

Phases only matter modulo 2 pi; below this bound float64 keeps them to about
1e-12 rad, and anything beyond is a damaged value."""
ANGLE_TOLERANCE = 1e-12
"""Rounding (rad) allowed beyond the ends of the closed ranges [0, pi/2] of theta and sigma."""
MAX_META_BYTES = 8 << 20
"""Largest ``__meta__`` record (bytes of JSON)."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects in ``__meta__``."""
MAX_MEMBERS = 32
"""Most members an archive may have (a calibrated ``svd`` program has 20, a calibrated ``unitary`` one 12;
22 and 14 with trims, 24 and 14 on a Bell chip)."""
_MAX_NPY_HEADER = 4096  # bytes of .npy magic + header a member may have beyond its data
_MAX_TEXT = 1 << 16  # characters of a free-text field (pipeline, target name, description)
_HEX64 = re.compile(r"[0-9a-f]{64}")

_STAGE_ARRAYS = {"v": ("v_theta", "v_phi", "v_out_phase"), "att": ("sigma",), "u": ("u_theta", "u_phi", "u_out_phase")}
_INT_ARRAYS = ("mode_pairs", "columns")
# heater groups with one heater per MZI (edge groups: one per edge shifter; the others: one per mode)
_MZI_GROUPS = ("v_int", "v_ext", "u_int", "u_ext", "v_low", "u_low")
_CAL_GROUPS = tuple(dict.fromkeys(heater_groups("svd", "mzi3") + heater_groups("svd", "bell")))
_ALL_ARRAYS = frozenset(
    [a for names in _STAGE_ARRAYS.values() for a in names] + ["gain", *_INT_ARRAYS]
    + [f"cal_{g}" for g in _CAL_GROUPS] + ["cal_gain", "drives_mw"]
)
_ANGLES = ("v_theta", "u_theta", "sigma")
_PHASES = ("v_phi", "v_out_phase", "u_phi", "u_out_phase", *(f"cal_{g}" for g in _CAL_GROUPS))
_META_KEYS = frozenset({"format", "schema_version", "convention", "phase_ranges", "units", "photocomp_version",
                        "target", "grid", "mesh", "pipeline", "detection", "report", "chip", "arrays", "circuit"})
_V1_OPTIONAL = frozenset({"phase_ranges", "units", "photocomp_version", "chip"})
_NEW_IN_V3 = frozenset({"circuit"})


def circuit_arrays(circuit: str, calibrated: bool = False, cell: str = "mzi") -> tuple[str, ...]:
    """Names of the arrays a file of a ``circuit`` program holds, in the schema's order.

    The stages' phase arrays in light order, ``gain``, ``mode_pairs`` and
    ``columns``; for a calibrated program also ``cal_<group>`` for each of
    the circuit's heater groups (:func:`photocomp.hardware.chip.heater_groups`;
    a target whose ``cell`` has trim heaters adds ``cal_v_trim`` / ``cal_u_trim``),
    ``cal_gain`` and ``drives_mw``.
    """
    names = [a for stage in circuit_stages(circuit) for a in _STAGE_ARRAYS[stage]] + ["gain", *_INT_ARRAYS]
    if calibrated:
        names += [f"cal_{g}" for g in heater_groups(circuit, cell)] + ["cal_gain", "drives_mw"]
    return tuple(names)


# ---- small helpers -------------------------------------------------------------------------------------


def _short(value, limit: int = 80) -> str:
    """``repr`` of a value read from a file, cut to about ``limit`` characters."""
    try:
        text = repr(value)
    except Exception:  # e.g. an int too long to print
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "…"


def _cut(text: str, limit: int = 200) -> str:
    """A message of a caught error, cut to about ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + "…"


def _kind(value) -> str:
    """JSON type name of a parsed value, for messages."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def meta_digest(meta: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of ``meta`` without its ``meta_sha256`` field.

    Canonical JSON: keys sorted, separators ``","`` and ``":"``, ASCII output
    (``\\u`` escapes), floats in Python's shortest round-trip form, ``NaN`` /
    ``Infinity`` spelled as such. Computed on the parsed record, so it does not
    depend on how the stored text is laid out.
    """
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def chip_fingerprint(chip) -> str:
    """SHA-256 over every error array of a chip (detects a chip that re-samples differently)."""

    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(chip):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def check_path(path, *, load: bool) -> str:
    """``path`` as a str, checked for a file to write (``load=False``) or to read (``load=True``).

    Raises InvalidTypeError for anything but a str or os.PathLike giving a
    str; an empty path or one with a NUL byte raises InvalidInputError when
    writing and PhaseMapFileError when reading (every reader's error for a
    file it cannot read).
    """
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"path must be a file path (str or os.PathLike); got {type(path).__name__}")
    try:
        path = os.fspath(path)
    except TypeError as exc:
        raise InvalidTypeError(f"path must be a file path (str or os.PathLike); got {type(path).__name__}") from exc
    if not isinstance(path, str):
        raise InvalidTypeError(f"path must be a file path (str or os.PathLike giving a str); got {type(path).__name__}")
    if load:
        if not path:
            raise PhaseMapFileError("path must be an existing file; got an empty path ''")
        if "\0" in path:
            raise PhaseMapFileError(f"path must be an existing file; got {quote_path(path)}, which contains a NUL byte")
    else:
        if not path:
            raise InvalidInputError("path must name a file; got an empty path ''")
        if "\0" in path:
            raise InvalidInputError(f"path must not contain a NUL byte; got {quote_path(path)}")
    return path


def check_existing_file(path: str) -> None:
    """Raise PhaseMapFileError unless ``path`` (checked by :func:`check_path`) is an existing regular file."""
    q = quote_path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PhaseMapFileError(f"path must be an existing file; got {q}: no such file") from None
    except OSError as exc:
        raise PhaseMapFileError(f"cannot read {q}: {os_reason(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise PhaseMapFileError(f"path must be an existing file; got {q}, which is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise PhaseMapFileError(f"path must be an existing file; got {q}, which is not a regular file")


# ---- value checks shared by reading and writing -------------------------------------------------------


def _expected_shapes(n_tiles: int, k: int, calibrated: bool, circuit: str = "svd", cell: str = "mzi",
                     mesh: str = "clements") -> dict:
    """``{array: shape}`` of a ``circuit`` program's arrays, with the closed-form MZI count."""
    m = mesh_counts(mesh, k)[0]
    per_mzi = {"v_theta", "v_phi", "u_theta", "u_phi", *(f"cal_{g}" for g in _MZI_GROUPS)}
    n_trims = len(get_cell(cell).trims)
    edges = edge_count(mesh_layout("clements", k)) if get_cell(cell).programming == "sweep" else 0

    def size(g: str) -> int:
        if g.endswith("_edge"):
            return edges
        return m * n_trims if g in TRIM_GROUPS.values() else m if g in _MZI_GROUPS else k

    shapes: dict[str, tuple[int, ...]] = {}
    for name in circuit_arrays(circuit, calibrated, cell):
        if name in _INT_ARRAYS:
            shapes[name] = (m,)
        elif name in ("gain", "cal_gain"):
            shapes[name] = (n_tiles,)
        elif name == "drives_mw":
            shapes[name] = (n_tiles, sum(size(g) for g in heater_groups(circuit, cell)))
        elif name.startswith("cal_"):
            shapes[name] = (n_tiles, size(name[4:]))
        else:  # phases per MZI, or per mode (output screens, attenuators)
            shapes[name] = (n_tiles, m if name in per_mzi else k)
    return shapes


def check_program_arrays(arrays: dict, target: Target) -> None:
    """Check the value ranges of a program's float arrays (the schema's table).

    ``arrays`` maps the file's array names to numpy arrays of the right
    shapes. Raises :class:`InvalidInputError` naming the first array out of
    range, its worst value and the allowed range.
    """
    def bad(name, a, mask, rule):
        worst = float(a[mask].flat[0])
        raise InvalidInputError(f"array {name!r} must be {rule}; got {int(mask.sum())} value(s) outside, e.g. {worst!r}")

    for name, a in arrays.items():
        if name in _INT_ARRAYS:
            continue
        a = np.asarray(a)
        if a.dtype != np.float64:
            raise InvalidInputError(f"array {name!r} must be float64; got dtype {a.dtype}")
        finite = np.isfinite(a)
        if not finite.all():
            bad(name, a, ~finite, "finite")
        if name in _ANGLES:
            lo, hi = convention.THETA_RANGE
            out = (a < lo - ANGLE_TOLERANCE) | (a > hi + ANGLE_TOLERANCE)
            if out.any():
                bad(name, a, out, f"in [0, pi/2] rad (up to {ANGLE_TOLERANCE:g} of rounding)")
        elif name in _PHASES:
            out = np.abs(a) > PHASE_LIMIT
            if out.any():
                bad(name, a, out, f"a phase with |phase| <= PHASE_LIMIT = {PHASE_LIMIT:.6g} rad")
        elif name == "gain":
            out = a < 0
            if out.any():
                bad(name, a, out, ">= 0 (a tile's electronic gain)")
        elif name == "drives_mw":
            cap = target.drive_limit_p_pi * target.heater_p_pi_mw
            out = (a < 0) | (a > cap * (1 + 1e-12))
            if out.any():
                bad(name, a, out, f"in [0, {cap:g}] mW (the target's drive limit)")


# ---- writing ---------------------------------------------------------------------------------------------


def atomic_write_npz(path, arrays: dict, meta: dict) -> str:
    """Write ``arrays`` plus JSON ``meta`` to ``path`` atomically (temp file, then rename).

    The records of all arrays (shape, dtype, SHA-256) are added to
    ``meta["arrays"]`` and the digest of the whole record to
    ``meta["meta_sha256"]`` (:func:`meta_digest`). Returns the path.

    Raises:
      InvalidInputError: ``meta`` is not plain JSON or exceeds ``MAX_META_BYTES``,
        or ``path`` cannot name a file.
      PhaseMapFileError: the folder is missing or the write fails.
    """
    path = check_path(path, load=False)
    meta = dict(meta)
    meta.pop("meta_sha256", None)
    meta["arrays"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype), "sha256": _sha256(v)} for k, v in arrays.items()}
    try:  # the digest is taken on the record as a reader parses it back
        plain = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"cannot save to path {quote_path(path)}: the metadata must be plain JSON "
                                f"(numbers, strings, lists, dicts); {_cut(str(exc), 160)}") from None
    plain["meta_sha256"] = meta_digest(plain)
    text = json.dumps(plain, sort_keys=True).encode("utf-8")
    if len(text) > MAX_META_BYTES:
        raise InvalidInputError(f"cannot save to path {quote_path(path)}: the metadata (e.g. the report) takes "
                                f"{len(text)} bytes; a file holds at most MAX_META_BYTES = {MAX_META_BYTES}")
    blob = np.frombuffer(text, dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, __meta__=blob, **arrays))


def save_program(program: Any, path: str | os.PathLike) -> str:
    """Write a :class:`~photocomp.compiler.program.Program` as a phase-map file (atomic).

    Raises:
      InvalidTypeError: ``path`` is not a str or os.PathLike.
      InvalidInputError: ``path`` cannot name a file (empty, NUL byte, a
        folder), or the program holds values the reader would refuse.
      PhaseMapFileError: the folder is missing or the operating system refuses
        the write (permission, read-only file system, disk full).
    """
    path = check_path(path, load=False)
    q = quote_path(path)
    pm: PhaseMap = program.phase_map
    target = program.target
    if program.detection not in DETECTIONS:
        raise InvalidInputError(f"cannot save to path {q}: detection must be one of {DETECTIONS}; "
                                f"got {_short(program.detection)}")
    circuit = pm.circuit
    if (pm.v is None) != (pm.sigma is None):
        raise InvalidInputError(f"cannot save to path {q}: phase_map.v and phase_map.sigma must both be given (an "
                                f"svd program) or both be None (a unitary program); got v={type(pm.v).__name__}, "
                                f"sigma={type(pm.sigma).__name__}")
    lay = pm.layout
    if (any(mp.layout != lay for mp in pm.meshes) or lay.kind != target.mesh or lay.n_modes != target.size
            or pm.grid.tile != target.size):
        got = ", ".join(f"{name.upper()} {mp.layout.kind}/{mp.layout.n_modes}"
                        for name, mp in zip((st for st in pm.stages if st != "att"), pm.meshes))
        raise InvalidInputError(
            f"cannot save to path {q}: every mesh must have the target's layout ({target.mesh}, {target.size} "
            f"modes) on {target.size}x{target.size} tiles; got {got}, tiles of {pm.grid.tile}"
        )
    arrays = {"u_theta": pm.u.theta, "u_phi": pm.u.phi, "u_out_phase": pm.u.out_phase, "gain": pm.gain}
    if pm.v is not None:  # an svd program
        arrays.update({"v_theta": pm.v.theta, "v_phi": pm.v.phi, "v_out_phase": pm.v.out_phase, "sigma": pm.sigma})
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    arrays["mode_pairs"] = lay.pair_array
    arrays["columns"] = lay.column_array
    chip_meta = None
    if program.chip is not None:
        s = program.settings
        if program.chip.circuit != circuit or s.circuit != circuit:
            raise InvalidInputError(f"cannot save to path {q}: the chip and settings must be for the program's "
                                    f"{circuit} circuit; got a {program.chip.circuit} chip and {s.circuit} settings")
        for g in heater_groups(circuit, target.cell) + ("gain",):
            arrays[f"cal_{g}"] = np.asarray(getattr(s, g), dtype=np.float64)
        arrays["drives_mw"] = np.asarray(program.drives(), dtype=np.float64)
        chip_meta = {"seed": int(program.chip.seed), "fingerprint": chip_fingerprint(program.chip)}
    shapes = _expected_shapes(pm.grid.n_tiles, pm.grid.tile, program.chip is not None, circuit, target.cell,
                              target.mesh)
    arrays = {name: arrays[name] for name in shapes}  # the schema's order
    for name, a in arrays.items():
        if a.shape != shapes[name]:
            raise InvalidInputError(f"cannot save to path {q}: array {name!r} must have shape {shapes[name]}; "
                                    f"got {a.shape}")
    try:
        check_program_arrays(arrays, target)
    except InvalidInputError as exc:
        raise InvalidInputError(f"cannot save to path {q}: {exc}") from None
    meta = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "convention": convention.CONVENTION_TAG,
        "phase_ranges": {"theta": list(convention.THETA_RANGE), "phi": list(convention.PHI_RANGE)},
        "units": UNITS,
        "photocomp_version": __version__,
        "target": target.to_dict(),
        "grid": {"out_dim": pm.grid.out_dim, "in_dim": pm.grid.in_dim, "tile": pm.grid.tile},
        "mesh": {"kind": lay.kind, "n_modes": lay.n_modes, "n_mzi": lay.n_mzi, "depth": lay.depth},
        "pipeline": program.pipeline,
        "detection": program.detection,
        "report": program.report.to_dict(),
        "chip": chip_meta,
        "circuit": circuit,
    }
    return atomic_write_npz(path, arrays, meta)


# ---- reading ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProgramFile:
    """What a phase-map file holds: the parts of a program, verified.

    ``chip`` and ``settings`` are set for a calibrated program (the chip
    re-sampled from its target, seed and circuit and checked against its fingerprint).
    """

    target: Target
    phase_map: PhaseMap
    report: CompileReport
    pipeline: str
    detection: str
    chip: Any = None
    settings: Any = None


@contextmanager
def quiet_npy_header() -> Iterator[None]:
    """Parse an ``.npy`` header without the warnings Python's parser gives for a damaged one.

    numpy reads the header as a Python literal; damage can turn it into a
    string with an invalid escape (``'\\o'``), for which the parser warns
    (DeprecationWarning, SyntaxWarning from Python 3.12) before the header is
    refused or read. The reader reports the damage itself, so these warnings
    are noise to the user.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", SyntaxWarning)
        yield


class _Reader:
    """One verified read of one file; every refusal names the path."""

    def __init__(self, path: str):
        self.path = path
        self.q = quote_path(path)

    def fail(self, what: str) -> NoReturn:
        raise PhaseMapFileError(f"cannot read {self.q}: {what}")

    def field(self, name: str, what: str, value) -> NoReturn:
        raise PhaseMapFileError(f"cannot read {self.q}: metadata field {name!r} must be {what}; "
                                f"got {_kind(value)} {_short(value)}")

    # -- the zip directory ---------------------------------------------------------------------------------

    def directory(self, zf: zipfile.ZipFile, file_size: int) -> dict:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            self.fail(f"the archive has {len(infos)} members; a phase-map file has at most {MAX_MEMBERS}")
        if "__meta__.npy" not in {info.filename for info in infos}:
            self.fail("not a photocomp file: no __meta__ record")
        members, total = {}, 0
        for info in infos:
            name = info.filename
            key = name[:-4] if name.endswith(".npy") else None
            if key != "__meta__" and key not in _ALL_ARRAYS:
                self.fail(f"the archive has an unexpected member {_short(name)}; a phase-map file holds only "
                          "__meta__.npy and the arrays of its schema")
            if key in members:
                self.fail(f"the archive holds member {name!r} twice: tampered")
            if info.flag_bits & 0x1:
                self.fail(f"member {name!r} is encrypted")
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                self.fail(f"member {name!r} is compressed (or declares {info.file_size} bytes for "
                          f"{info.compress_size} stored); photocomp writes uncompressed archives")
            if info.header_offset < 0 or info.header_offset + info.compress_size > file_size:
                self.fail(f"member {name!r} declares {info.file_size} bytes at offset {info.header_offset}, "
                          f"beyond the end of the {file_size}-byte file: truncated or tampered")
            total += info.compress_size
            members[key] = info
        if total > file_size:
            self.fail(f"the members declare {total} bytes in all, more than the file's {file_size}: tampered")
        if members["__meta__"].file_size > MAX_META_BYTES + _MAX_NPY_HEADER:
            self.fail(f"the __meta__ record declares {members['__meta__'].file_size} bytes; at most "
                      f"MAX_META_BYTES = {MAX_META_BYTES} are allowed")
        return members

    def npy(self, zf: zipfile.ZipFile, info, name: str, kind: str, itemsize: int, shape: tuple | None):
        """Read one ``.npy`` member: header checked (dtype, order, shape) before the data is read.

        Returns ``(array in native byte order, SHA-256 of the stored bytes)``.
        """
        with zf.open(info) as f:
            try:
                version = np.lib.format.read_magic(f)
                with quiet_npy_header():
                    if version == (1, 0):
                        got_shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                            f, max_header_size=_MAX_NPY_HEADER)
                    elif version == (2, 0):
                        got_shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                            f, max_header_size=_MAX_NPY_HEADER)
                    else:
                        self.fail(f"array {name!r} has .npy format version {version}; expected 1.0 or 2.0")
            except PhotocompError:
                raise
            except (ValueError, TypeError, SyntaxError, tokenize.TokenError, OverflowError, MemoryError) as exc:
                # TokenError: numpy re-reads a header that is no Python literal with the tokenizer
                self.fail(f"array {name!r} has a bad .npy header: {_cut(str(exc), 160)}")
            header = f.tell()
            if dtype.kind != kind or dtype.itemsize != itemsize or dtype.fields is not None or dtype.shape != ():
                want = {"f": "float64", "i": "int32", "u": "uint8"}[kind]
                self.fail(f"array {name!r} must have dtype {want}; got {_short(dtype.str)}")
            if fortran and len(got_shape) > 1:
                self.fail(f"array {name!r} must be stored in C order; got Fortran order")
            if not isinstance(got_shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in got_shape):
                self.fail(f"array {name!r} has an invalid shape {_short(got_shape)}")
            if shape is not None and got_shape != shape:
                self.fail(f"array {name!r} must have shape {shape}; got {got_shape}")
            nbytes = math.prod(got_shape) * itemsize
            if info.file_size != header + nbytes:
                self.fail(f"array {name!r} declares {info.file_size} bytes but its header implies {header + nbytes}: "
                          "truncated or tampered")
            data = f.read(nbytes)
        if len(data) != nbytes:
            self.fail(f"array {name!r} is truncated: {len(data)} of {nbytes} bytes")
        digest = hashlib.sha256(data).hexdigest()
        native = np.dtype({"f": np.float64, "i": np.int32, "u": np.uint8}[kind])
        return np.frombuffer(data, dtype=dtype).reshape(got_shape).astype(native), digest

    # -- the metadata ----------------------------------------------------------------------------------------

    def meta(self, zf: zipfile.ZipFile, info) -> dict:
        blob, _ = self.npy(zf, info, "__meta__", "u", 1, None)
        if blob.ndim != 1:
            self.fail(f"the __meta__ record must be a 1-D uint8 array; got shape {blob.shape}")
        if blob.size > MAX_META_BYTES:
            self.fail(f"the __meta__ record has {blob.size} bytes; at most MAX_META_BYTES = {MAX_META_BYTES}")
        try:
            text = blob.tobytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            self.fail(f"the __meta__ record is not UTF-8 text ({exc.reason} at byte {exc.start})")
        depth = _json_depth(text)
        if depth > MAX_JSON_DEPTH:
            self.fail(f"the __meta__ record nests {depth} levels deep; at most MAX_JSON_DEPTH = {MAX_JSON_DEPTH}")
        try:
            meta = json.loads(text, object_pairs_hook=unique_keys)
        except DuplicateKeyError as exc:
            self.fail(f"the __meta__ record repeats the key {_short(exc.args[0])} in one object: tampered")
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; so are over-long ints
            self.fail(f"the __meta__ record is not valid JSON ({type(exc).__name__}: {_cut(str(exc), 120)})")
        if not isinstance(meta, dict):
            self.fail(f"the __meta__ record must be a JSON object; got {_kind(meta)} {_short(meta)}")
        return meta

    def header(self, meta: dict) -> int:
        fmt = meta.get("format")
        if fmt != FORMAT:
            self.fail(f"path must be a {FORMAT!r} file; got format {_short(fmt)}")
        version = meta.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version not in READ_VERSIONS:
            self.fail(f"schema version {_short(version)}; this photocomp reads {list(READ_VERSIONS)}. "
                      "Upgrade photocomp to read newer files.")
        if meta.get("convention") != convention.CONVENTION_TAG:
            self.fail(f"the file uses MZI convention {_short(meta.get('convention'))}; "
                      f"expected {convention.CONVENTION_TAG!r}")
        keys = set(meta)
        fields = _META_KEYS if version >= 3 else _META_KEYS - _NEW_IN_V3
        required = (fields | {"meta_sha256"}) if version >= 2 else (fields - _V1_OPTIONAL)
        allowed = fields | ({"meta_sha256"} if version >= 2 else set())
        if keys - allowed:
            self.fail(f"the metadata has unknown fields {_short(sorted(keys - allowed))}; schema version {version} "
                      f"has {sorted(allowed)}")
        if required - keys:
            self.fail(f"the metadata lacks the fields {sorted(required - keys)} (schema version {version})")
        if version >= 2:
            digest = meta["meta_sha256"]
            if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
                self.field("meta_sha256", "64 lowercase hex digits", digest)
            if meta_digest(meta) != digest:
                self.fail("the metadata fails its SHA-256 check (meta_sha256): the target, grid, mesh, circuit, "
                          "detection, pipeline, chip, array records or report were modified")
        return version

    def circuit(self, meta: dict, version: int) -> str:
        """The program's circuit: the ``circuit`` field (schema version 3), ``"svd"`` before."""
        if version < 3:
            return "svd"
        circuit = meta["circuit"]
        if not isinstance(circuit, str) or circuit not in CIRCUITS:
            self.field("circuit", f"one of {CIRCUITS}", circuit)
        return circuit

    def target(self, record, version: int) -> Target:
        if not isinstance(record, dict):
            self.field("target", "an object with the fields of photocomp.Target", record)
        # {field: annotation text}: target.py postpones its annotations, so each is already a string
        fields = {f.name: str(f.type) for f in dataclasses.fields(Target)}
        unknown = sorted(set(record) - set(fields))
        if unknown:
            self.fail(f"metadata field 'target' has unknown fields {_short(unknown)}")
        # ``cell`` and ``crossing_loss_db`` are written only where they differ from their defaults
        # (Target.to_dict, OPTIONAL_FIELDS)
        missing = sorted(set(fields) - set(record) - set(OPTIONAL_FIELDS))
        if missing and version >= 2:
            self.fail(f"metadata field 'target' lacks the fields {_short(missing)}")
        for name, value in record.items():
            kind = fields[name]
            if kind == "str":
                ok = isinstance(value, str) and len(value) <= _MAX_TEXT
            elif kind == "int":
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind == "float":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            else:  # a field of another type: Target checks it
                ok = True
            if not ok:
                what = {"str": f"a string of at most {_MAX_TEXT} characters", "int": "an integer"}.get(kind, "a finite number")
                self.field(f"target.{name}", what, value)
        components = record.get("components", 0)
        if isinstance(components, int) and components < 0:
            self.field("target.components", "an integer >= 0", components)
        try:
            target = Target.from_dict(record)
        except (PhotocompError, TypeError, ValueError) as exc:
            self.fail(f"metadata field 'target' is not a valid target: {_cut(str(exc), 200)}")
        rebuilt = dataclasses.asdict(target)
        if any(rebuilt[k] != v or type(rebuilt[k]) is not type(v) for k, v in record.items()):
            self.fail("metadata field 'target' does not rebuild to the same target")
        return target

    def grid(self, record) -> TileGrid:
        if not isinstance(record, dict) or set(record) != {"out_dim", "in_dim", "tile"}:
            self.field("grid", "an object with exactly the fields out_dim, in_dim, tile", record)
        for k in ("out_dim", "in_dim", "tile"):
            v = record[k]
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**31 - 1:
                self.field(f"grid.{k}", "an integer in [1, 2**31 - 1]", v)
        try:
            return TileGrid(out_dim=record["out_dim"], in_dim=record["in_dim"], tile=record["tile"])
        except PhotocompError as exc:
            self.fail(f"metadata field 'grid' is not a valid tile grid: {_cut(str(exc), 200)}")

    def mesh(self, record, target: Target, grid: TileGrid) -> tuple[str, int]:
        """Kind and size of the mesh, checked against the target and grid by closed forms (no layout built)."""
        if not isinstance(record, dict) or set(record) != {"kind", "n_modes", "n_mzi", "depth"}:
            self.field("mesh", "an object with exactly the fields kind, n_modes, n_mzi, depth", record)
        kind, n = record["kind"], record["n_modes"]
        if not isinstance(kind, str) or kind not in MESH_KINDS:
            self.field("mesh.kind", f"one of {MESH_KINDS}", kind)
        for k in ("n_modes", "n_mzi", "depth"):
            if isinstance(record[k], bool) or not isinstance(record[k], int):
                self.field(f"mesh.{k}", "an integer", record[k])
        if n != grid.tile or n != target.size:
            self.fail(f"mesh has {_short(n)} modes but tiles are {grid.tile}x{grid.tile} and target "
                      f"{target.name!r} has {target.size} modes: they must agree")
        if kind != target.mesh:
            self.fail(f"mesh kind {kind!r} differs from target {target.name!r}'s mesh {target.mesh!r}")
        n_mzi, depth = mesh_counts(kind, n)
        if record["n_mzi"] != n_mzi or record["depth"] != depth:
            self.fail(f"a {kind} mesh of {n} modes has {n_mzi} MZIs in {depth} columns; the metadata says "
                      f"{_short(record['n_mzi'])} in {_short(record['depth'])}")
        return kind, n

    def chip(self, record):
        if record is None:
            return None
        if not isinstance(record, dict) or set(record) != {"seed", "fingerprint"}:
            self.field("chip", "null or an object with exactly the fields seed, fingerprint", record)
        seed, fp = record["seed"], record["fingerprint"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            self.field("chip.seed", "an integer in [0, 2**64)", seed)
        if not isinstance(fp, str) or not _HEX64.fullmatch(fp):
            self.field("chip.fingerprint", "64 lowercase hex digits", fp)
        return record

    def array_records(self, record, expected: dict, circuit: str) -> dict:
        if not isinstance(record, dict):
            self.field("arrays", "an object {array: {shape, dtype, sha256}}", record)
        if set(record) != set(expected):
            self.fail(f"array records {_short(sorted(record), 300)} differ from the arrays of this {circuit} "
                      f"program {sorted(expected)} ({_set_difference(record, expected)}): tampered or truncated")
        for name, r in record.items():
            if not isinstance(r, dict) or set(r) != {"shape", "dtype", "sha256"}:
                self.field(f"arrays.{name}", "an object with exactly the fields shape, dtype, sha256", r)
            dtype = "int32" if name in _INT_ARRAYS else "float64"
            if r["shape"] != list(expected[name]) or not all(type(d) is int for d in r["shape"]):
                self.field(f"arrays.{name}.shape", f"{list(expected[name])} (from the grid and mesh)", r["shape"])
            if r["dtype"] != dtype:
                self.field(f"arrays.{name}.dtype", repr(dtype), r["dtype"])
            if not isinstance(r["sha256"], str) or not _HEX64.fullmatch(r["sha256"]):
                self.field(f"arrays.{name}.sha256", "64 lowercase hex digits", r["sha256"])
        return record

    def other_fields(self, meta: dict, version: int) -> tuple[str, str, CompileReport]:
        pipeline, detection = meta["pipeline"], meta["detection"]
        if not isinstance(pipeline, str) or len(pipeline) > _MAX_TEXT:
            self.field("pipeline", f"a string of at most {_MAX_TEXT} characters", pipeline)
        if not isinstance(detection, str) or detection not in DETECTIONS:
            self.field("detection", f"one of {DETECTIONS}", detection)
        try:
            report = CompileReport.from_dict(meta["report"])
        except (PhotocompError, TypeError, ValueError) as exc:
            self.fail(f"metadata field 'report' is not a compile report: {_cut(str(exc), 200)}")
        if "phase_ranges" in meta:
            want = {"theta": list(convention.THETA_RANGE), "phi": list(convention.PHI_RANGE)}
            if meta["phase_ranges"] != want:
                self.field("phase_ranges", f"{want} (the convention's)", meta["phase_ranges"])
        if "units" in meta:
            units = meta["units"]
            if not isinstance(units, dict) or not all(isinstance(v, str) for v in units.values()):
                self.field("units", "an object of unit strings", units)
            if version >= 2 and units != UNITS:
                self.field("units", f"{UNITS}", units)
        if "photocomp_version" in meta:
            v = meta["photocomp_version"]
            if not isinstance(v, str) or len(v) > 64:
                self.field("photocomp_version", "a version string", v)
        return pipeline, detection, report


def _set_difference(got, expected) -> str:
    """``"missing [...], extra [...]"``: the names ``got`` lacks and has beyond ``expected``."""
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    parts = ([f"missing {missing}"] if missing else []) + ([f"extra {_short(extra, 300)}"] if extra else [])
    return ", ".join(parts)


class DuplicateKeyError(ValueError):
    """A JSON object repeats a key (``args[0]``); raised by :func:`unique_keys`."""


def unique_keys(pairs):
    """``object_pairs_hook`` for ``json.loads`` that refuses an object repeating a key (:class:`DuplicateKeyError`):
    the standard parser keeps the last value silently, so a tampered record could hide a second one."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKeyError(k)
        out[k] = v
    return out


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON text (strings skipped), without parsing it."""
    bare = _JSON_STRING.sub("", text).encode("utf-8", "surrogatepass")
    b = np.frombuffer(bare, dtype=np.uint8)
    if b.size == 0:
        return 0
    step = np.isin(b, (ord("["), ord("{"))).astype(np.int64) - np.isin(b, (ord("]"), ord("}")))
    return int(np.max(np.cumsum(step), initial=0))


def read_program(path: str | os.PathLike) -> ProgramFile:
    """Read and verify a phase-map file: the parts :class:`~photocomp.compiler.program.Program` is built from.

    :func:`photocomp.load` turns them into a program whose forward is
    bit-identical to the saved one's.

    Raises:
      InvalidTypeError: ``path`` is not a str or os.PathLike.
      PhaseMapFileError: missing, unreadable (permission, a folder, ...),
        truncated, tampered, of another format, schema version or MZI
        convention, too large for what it declares, or inconsistent; the
        message names the path and what was wrong.
    """
    path = check_path(path, load=True)
    check_existing_file(path)
    r = _Reader(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if head.startswith(b"\x93NUMPY"):
                r.fail("not a photocomp file: expected an .npz archive, got a bare .npy array")
            if not head.startswith(b"PK"):
                r.fail("path must be a photocomp .npz file (a zip archive, e.g. written by Program.save); "
                       f"got a file starting with {head!r}")
            fh.seek(0)
            with zipfile.ZipFile(fh) as zf:
                return _read(r, zf, size)
    except PhotocompError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, KeyError, OverflowError,
            NotImplementedError, RuntimeError) as exc:  # RuntimeError: an encrypted member
        raise PhaseMapFileError(f"cannot read {r.q}: truncated or corrupt "
                                f"({type(exc).__name__}: {_cut(str(exc), 160)})") from None
    except MemoryError:
        raise PhaseMapFileError(f"cannot read {r.q}: not enough memory for what it declares") from None
    except OSError as exc:
        raise PhaseMapFileError(f"cannot read {r.q}: {os_reason(exc)}") from None


def _read(r: _Reader, zf: zipfile.ZipFile, file_size: int) -> ProgramFile:
    members = r.directory(zf, file_size)
    meta = r.meta(zf, members.pop("__meta__"))
    version = r.header(meta)
    target = r.target(meta["target"], version)
    grid = r.grid(meta["grid"])
    kind, k = r.mesh(meta["mesh"], target, grid)
    circuit = r.circuit(meta, version)
    pipeline, detection, report = r.other_fields(meta, version)
    chip_meta = r.chip(meta.get("chip"))
    shapes = _expected_shapes(grid.n_tiles, k, chip_meta is not None, circuit, target.cell, target.mesh)
    records = r.array_records(meta["arrays"], shapes, circuit)
    if set(members) != set(shapes):
        r.fail(f"array set {sorted(members)} differs from its record {sorted(records)} ("
               f"{_set_difference(members, shapes)} for a {circuit} program): tampered or truncated")
    # every declared size against the shape the metadata implies, before any array is read
    for name, info in members.items():
        nbytes = math.prod(shapes[name]) * (4 if name in _INT_ARRAYS else 8)
        if not nbytes <= info.file_size <= nbytes + _MAX_NPY_HEADER:
            r.fail(f"array {name!r} declares {info.file_size} bytes; its shape {shapes[name]} needs {nbytes} "
                   "plus a header: tampered or truncated")
    arrays = {}
    for name, info in members.items():
        is_int = name in _INT_ARRAYS
        a, digest = r.npy(zf, info, name, "i" if is_int else "f", 4 if is_int else 8, shapes[name])
        if digest != records[name]["sha256"]:
            r.fail(f"array {name!r} fails its SHA-256/shape check: the file was modified or damaged")
        arrays[name] = a
    try:
        check_program_arrays(arrays, target)
    except InvalidInputError as exc:
        r.fail(str(exc))
    if (circuit == "crossbar") != (kind == "crossbar"):
        r.fail(f"circuit {circuit!r} does not fit mesh {kind!r}: a crossbar mesh runs the crossbar circuit, "
               f"and only it")
    # the arrays are real and of the size a K-mode mesh needs: the layout can be built now
    lay = mesh_layout(kind, k, cell=target.cell)
    if not np.array_equal(arrays["mode_pairs"], lay.pair_array) or not np.array_equal(arrays["columns"], lay.column_array):
        r.fail(f"mode pairs/columns disagree with the {lay.kind} layout of {lay.n_modes} modes")
    u = MeshPhases(lay, arrays["u_theta"], arrays["u_phi"], arrays["u_out_phase"])
    if circuit in ("unitary", "crossbar"):  # one stage, stored as u
        pm = PhaseMap.unitary(grid, u, arrays["gain"])
    else:
        v = MeshPhases(lay, arrays["v_theta"], arrays["v_phi"], arrays["v_out_phase"])
        pm = PhaseMap(grid=grid, v=v, sigma=arrays["sigma"], u=u, gain=arrays["gain"])
    if chip_meta is None:
        return ProgramFile(target, pm, report, pipeline, detection)
    try:
        chip = fabricate(target, chip_meta["seed"], circuit=circuit)
    except (PhotocompError, TypeError, ValueError) as exc:
        r.fail(f"invalid chip record: {_cut(str(exc), 200)}")
    if chip_fingerprint(chip) != chip_meta["fingerprint"]:
        r.fail(f"the chip (seed {chip_meta['seed']}) re-samples differently from the one it was calibrated on "
               f"(a chip of the {circuit} circuit)")
    cal = {g: arrays[f"cal_{g}"] for g in heater_groups(circuit, target.cell) + ("gain",)}
    if lay.cell.programming == "sweep":  # the Bell chip has no external heaters (Settings: v_ext, u_ext None)
        cal = {"u_ext": None, **({"v_ext": None} if circuit == "svd" else {}), **cal}
    if lay.cell.programming == "fixed":  # a fixed-splitting cell has no internal heaters (Settings: (T, 0))
        none = np.zeros((grid.n_tiles, 0))
        cal = {"u_int": none, **({"v_int": none} if circuit == "svd" else {}), **cal}
    settings = Settings(grid, lay, **cal) if circuit == "svd" else Settings.unitary(grid, lay, **cal)
    return ProgramFile(target, pm, report, pipeline, detection, chip=chip, settings=settings)
