"""The versioned phase-map file format (the one place that defines it).

A phase-map file is a numpy ``.npz`` archive read with ``allow_pickle=False``:
plain float64/int32 arrays plus one ``__meta__`` array holding UTF-8 JSON.
Nothing in a file is ever executed. Layout of schema version 1:

=================  ==================  ==========================================
array              shape               meaning (units)
=================  ==================  ==========================================
``v_theta``        (T, n_mzi)          V-mesh internal angles theta (rad)
``v_phi``          (T, n_mzi)          V-mesh external phases phi (rad)
``v_out_phase``    (T, K)              V-mesh output phase screen (rad)
``sigma``          (T, K)              attenuator angles; amplitude = cos(sigma) (rad)
``u_theta``        (T, n_mzi)          U-mesh internal angles (rad)
``u_phi``          (T, n_mzi)          U-mesh external phases (rad)
``u_out_phase``    (T, K)              U-mesh output phase screen (rad)
``gain``           (T,)                electronic gain per tile (dimensionless)
``mode_pairs``     (n_mzi,)            upper mode of each MZI (int32)
``columns``        (n_mzi,)            column of each MZI (int32)
=================  ==================  ==========================================

A program calibrated for a fabricated chip also stores its physical heater
settings ``cal_v_int``, ``cal_v_ext``, ``cal_v_out``, ``cal_att``, ``cal_u_int``,
``cal_u_ext``, ``cal_u_out`` (rad), ``cal_gain`` and the heater drives
``drives_mw`` (T, H) (mW), and records the chip (target and seed, from which
it is re-sampled on load, plus a SHA-256 fingerprint that must match).

``__meta__`` records the format name, schema version, MZI convention tag,
units, the full target, the tile grid, the mesh, the pipeline, the detection
model, the compile report and a SHA-256 of every array. Readers refuse other
formats, versions and conventions, mismatching hashes (tampering or
truncation) and structure that disagrees with the mesh layout.
Writes go to a temporary file in the destination folder, then
``os.replace`` it into place, so a failure never leaves a half-written file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from typing import Any

import jax
import numpy as np

from photocomp.core import convention
from photocomp.core.atomic import atomic_write
from photocomp.core.errors import InvalidTypeError, PhaseMapFileError, PhotocompError
from photocomp.core.ir import CompileReport, PhaseMap, TileGrid
from photocomp.core.layout import layout as mesh_layout
from photocomp.core.phases import MeshPhases
from photocomp.core.target import Target
from photocomp.core.version import __version__
from photocomp.hardware.chip import fabricate
from photocomp.hardware.chipsim import Settings

__all__ = ["FORMAT", "SCHEMA_VERSION", "ProgramFile", "save_program", "read_program", "atomic_write_npz", "read_npz",
           "chip_fingerprint"]

FORMAT = "photocomp.phasemap"
SCHEMA_VERSION = 1
UNITS = {
    "theta": "rad", "phi": "rad", "out_phase": "rad", "sigma": "rad (amplitude cos(sigma))",
    "gain": "dimensionless", "wavelength_nm": "nm", "heater_p_pi_mw": "mW", "heater_tau_us": "us",
    "v_pi": "V", "clock_ghz": "GHz",
}
_FLOAT_ARRAYS = ("v_theta", "v_phi", "v_out_phase", "sigma", "u_theta", "u_phi", "u_out_phase", "gain",
                 "cal_v_int", "cal_v_ext", "cal_v_out", "cal_att", "cal_u_int", "cal_u_ext", "cal_u_out", "cal_gain")
_INT_ARRAYS = ("mode_pairs", "columns")


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _check_path(path, name="path") -> str:
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"{name} must be a file path (str or os.PathLike); got {type(path).__name__}")
    return os.fspath(path)


def atomic_write_npz(path, arrays: dict, meta: dict) -> str:
    """Write ``arrays`` plus JSON ``meta`` to ``path`` atomically (temp file, then rename).

    The hashes of all arrays are added to ``meta["arrays"]``. Returns the path.
    """
    path = _check_path(path)
    meta = dict(meta)
    meta["arrays"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype), "sha256": _sha256(v)} for k, v in arrays.items()}
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, __meta__=blob, **arrays))


def read_npz(path, fmt: str, versions: tuple) -> tuple[dict, dict]:
    """Read and verify an archive written by :func:`atomic_write_npz`.

    Returns ``(meta, arrays)``. Raises :class:`PhaseMapFileError` for anything
    unreadable, of another format or version, or whose arrays fail their hash.
    """
    path = _check_path(path)
    if not os.path.isfile(path):
        raise PhaseMapFileError(f"path must be an existing file; got {path!r}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head and not head.startswith((b"PK", b"\x93NUMPY")):  # neither a zip (.npz) nor an .npy file
        raise PhaseMapFileError(f"cannot read {path!r}: path must be a photocomp .npz file (a zip archive, e.g. "
                                f"written by Program.save); got a file starting with {head!r}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise PhaseMapFileError(f"{path!r} is not a photocomp file: expected an .npz archive, got a bare array")
        with loaded as z:
            if "__meta__" not in z.files:
                raise PhaseMapFileError(f"{path!r} is not a photocomp file: no __meta__ record")
            meta = json.loads(bytes(z["__meta__"]).decode("utf-8"))
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
    except PhotocompError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PhaseMapFileError(f"cannot read {path!r}: truncated or corrupt ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise PhaseMapFileError(f"{path!r} must be a {fmt!r} file; got format {meta.get('format') if isinstance(meta, dict) else meta!r}")
    if meta.get("schema_version") not in versions:
        raise PhaseMapFileError(
            f"{path!r} has schema version {meta.get('schema_version')!r}; this photocomp reads {list(versions)}. "
            "Upgrade photocomp to read newer files."
        )
    if meta.get("convention") != convention.CONVENTION_TAG:
        raise PhaseMapFileError(f"{path!r} uses MZI convention {meta.get('convention')!r}; expected {convention.CONVENTION_TAG!r}")
    declared = meta.get("arrays", {})
    if set(declared) != set(arrays):
        raise PhaseMapFileError(f"{path!r} array set {sorted(arrays)} differs from its record {sorted(declared)}: tampered or truncated")
    for k, a in arrays.items():
        if _sha256(a) != declared[k].get("sha256") or list(a.shape) != declared[k].get("shape"):
            raise PhaseMapFileError(f"{path!r}: array {k!r} fails its SHA-256/shape check: the file was modified or damaged")
    return meta, arrays


def save_program(program, path) -> str:
    """Write a :class:`~photocomp.compiler.program.Program` as a phase-map file (atomic)."""
    pm: PhaseMap = program.phase_map
    lay = pm.v.layout
    arrays = {
        "v_theta": pm.v.theta, "v_phi": pm.v.phi, "v_out_phase": pm.v.out_phase,
        "sigma": pm.sigma,
        "u_theta": pm.u.theta, "u_phi": pm.u.phi, "u_out_phase": pm.u.out_phase,
        "gain": pm.gain,
    }
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    arrays["mode_pairs"] = lay.pair_array
    arrays["columns"] = lay.column_array
    chip_meta = None
    if program.chip is not None:
        s = program.settings
        for g in _SETTINGS_FIELDS:
            arrays[f"cal_{g}"] = np.asarray(getattr(s, g), dtype=np.float64)
        arrays["drives_mw"] = np.asarray(program.drives(), dtype=np.float64)
        chip_meta = {"seed": program.chip.seed, "fingerprint": chip_fingerprint(program.chip)}
    meta = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "convention": convention.CONVENTION_TAG,
        "phase_ranges": {"theta": list(convention.THETA_RANGE), "phi": list(convention.PHI_RANGE)},
        "units": UNITS,
        "photocomp_version": __version__,
        "target": program.target.to_dict(),
        "grid": {"out_dim": pm.grid.out_dim, "in_dim": pm.grid.in_dim, "tile": pm.grid.tile},
        "mesh": {"kind": lay.kind, "n_modes": lay.n_modes, "n_mzi": lay.n_mzi, "depth": lay.depth},
        "pipeline": program.pipeline,
        "detection": program.detection,
        "report": program.report.to_dict(),
        "chip": chip_meta,
    }
    return atomic_write_npz(path, arrays, meta)


_SETTINGS_FIELDS = ("v_int", "v_ext", "v_out", "att", "u_int", "u_ext", "u_out", "gain")


def chip_fingerprint(chip) -> str:
    """SHA-256 over every error array of a chip (detects a chip that re-samples differently)."""

    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(chip):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def _expect(arrays, name, shape, path):
    a = arrays.get(name)
    if a is None:
        raise PhaseMapFileError(f"{path!r}: missing array {name!r}")
    if a.shape != shape:
        raise PhaseMapFileError(f"{path!r}: array {name!r} must have shape {shape}; got {a.shape}")
    if name in _FLOAT_ARRAYS and (a.dtype != np.float64 or not np.all(np.isfinite(a))):
        raise PhaseMapFileError(f"{path!r}: array {name!r} must be finite float64; got dtype {a.dtype}")
    return a


@dataclasses.dataclass(frozen=True)
class ProgramFile:
    """What a phase-map file holds: the parts of a program, verified.

    ``chip`` and ``settings`` are set for a calibrated program (the chip
    re-sampled from its target and seed and checked against its fingerprint).
    """

    target: Target
    phase_map: PhaseMap
    report: CompileReport
    pipeline: str
    detection: str
    chip: Any = None
    settings: Any = None


def read_program(path) -> ProgramFile:
    """Read and verify a phase-map file: the parts :class:`~photocomp.compiler.program.Program` is built from.

    :func:`photocomp.load` turns them into a program whose forward is
    bit-identical to the saved one's.

    Raises:
      PhaseMapFileError: missing, unreadable, truncated, tampered, of another
        format, schema version or MZI convention, or inconsistent.
    """
    meta, arrays = read_npz(path, FORMAT, (SCHEMA_VERSION,))
    path = os.fspath(path)
    try:
        target = Target.from_dict(meta["target"])
        g = meta["grid"]
        grid = TileGrid(out_dim=int(g["out_dim"]), in_dim=int(g["in_dim"]), tile=int(g["tile"]))
        mesh = meta["mesh"]
        lay = mesh_layout(mesh["kind"], int(mesh["n_modes"]))
        report = CompileReport.from_dict(meta["report"])
        pipeline = str(meta["pipeline"])
        detection = str(meta["detection"])
    except PhaseMapFileError:
        raise
    except (PhotocompError, KeyError, TypeError, ValueError) as exc:
        raise PhaseMapFileError(f"{path!r}: invalid metadata ({type(exc).__name__}: {exc})") from None
    if lay.n_modes != grid.tile:
        raise PhaseMapFileError(f"{path!r}: mesh has {lay.n_modes} modes but tiles are {grid.tile}x{grid.tile}")
    if not np.array_equal(arrays.get("mode_pairs"), lay.pair_array) or not np.array_equal(arrays.get("columns"), lay.column_array):
        raise PhaseMapFileError(f"{path!r}: mode pairs/columns disagree with the {lay.kind} layout of {lay.n_modes} modes")
    t, k, nm = grid.n_tiles, grid.tile, lay.n_mzi
    get = lambda name, shape: _expect(arrays, name, shape, path)  # noqa: E731
    pm = PhaseMap(
        grid=grid,
        v=MeshPhases(lay, get("v_theta", (t, nm)), get("v_phi", (t, nm)), get("v_out_phase", (t, k))),
        sigma=get("sigma", (t, k)),
        u=MeshPhases(lay, get("u_theta", (t, nm)), get("u_phi", (t, nm)), get("u_out_phase", (t, k))),
        gain=get("gain", (t,)),
    )
    chip_meta = meta.get("chip")
    if chip_meta is None:
        return ProgramFile(target, pm, report, pipeline, detection)
    try:
        chip = fabricate(target, int(chip_meta["seed"]))
    except (PhotocompError, KeyError, TypeError, ValueError) as exc:
        raise PhaseMapFileError(f"{path!r}: invalid chip record ({type(exc).__name__}: {exc})") from None
    if chip_fingerprint(chip) != chip_meta.get("fingerprint"):
        raise PhaseMapFileError(
            f"{path!r}: the chip (seed {chip_meta['seed']}) re-samples differently from the one it was calibrated on"
        )
    m = lay.n_mzi
    shapes = {"v_int": (t, m), "v_ext": (t, m), "v_out": (t, k), "att": (t, k),
              "u_int": (t, m), "u_ext": (t, m), "u_out": (t, k), "gain": (t,)}
    for g in _SETTINGS_FIELDS:
        if arrays.get(f"cal_{g}") is not None:
            _expect(arrays, f"cal_{g}", shapes[g], path)
    settings = Settings(grid, lay, **{g: get(f"cal_{g}", shapes[g]) for g in _SETTINGS_FIELDS})
    return ProgramFile(target, pm, report, pipeline, detection, chip=chip, settings=settings)
