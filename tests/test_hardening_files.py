"""Property tests: a phase-map file changed in any way loads as the same program or is refused.

A small saved program (clements-4, 2 tiles) is mutated at random: metadata
fields deleted, their types changed, numbers pushed to extremes, junk nested
into them; arrays given out-of-range values, other dtypes, other shapes,
deleted or added; the file's bytes flipped or cut. Each mutant is written
with its hashes as they were, with only the metadata digest recomputed, or
with every hash recomputed (what a deliberate edit would do), as schema
version 3 and as version 1. Loading it must either return a program whose
phases, grid and detection equal the original's (so its forward is
bit-identical) or raise PhaseMapFileError naming the file; nothing else.
With the hashes left as they were, any real change must be refused.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import warnings
import zipfile

import jax
import numpy as np
import pytest
from conftest import random_matrix
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import photocomp as pc
from photocomp.cli import main as cli_main
from photocomp.core.errors import PhaseMapFileError
from photocomp.io import program_file as pio

PIPELINE = "validate | tile | svd | clements | canonicalize | quantize(bits=10) | lower"
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
X = np.linspace(-1.0, 1.0, 8) + 0.5j * np.cos(np.arange(8.0))


@pytest.fixture(scope="module")
def original():
    """A complex 4 x 8 matrix on clements-4: one block row, two tiles."""
    w = random_matrix(np.random.default_rng(70), (4, 8), "complex")
    prog = pc.compile(w, "clements-4", PIPELINE)
    assert prog.n_tiles == 2
    prog.forward(X)  # simulate once: the dense matrix is cached
    return prog


def _saved(prog, folder):
    path = folder / "orig.npz"
    prog.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays.pop("__meta__")).decode("utf-8"))
    return folder, meta, arrays, path.read_bytes()


@pytest.fixture(scope="module")
def work(original, tmp_path_factory):
    """(folder, meta, arrays, saved bytes) of the saved original."""
    return _saved(original, tmp_path_factory.mktemp("mutants"))


@pytest.fixture(scope="module")
def calibrated(original):
    cal = pc.calibrate(original, pc.fabricate("clements-4", seed=5), method="local", progress=False)
    cal.forward(X)
    return cal


@pytest.fixture(scope="module")
def cal_work(calibrated, tmp_path_factory):
    return _saved(calibrated, tmp_path_factory.mktemp("cal_mutants"))


def _sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _write(path, meta, arrays, *, records: bool, digest: bool):
    meta = copy.deepcopy(meta)
    if records:
        meta["arrays"] = {k: {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype), "sha256": _sha(v)}
                          for k, v in arrays.items()}
    if digest and meta.get("schema_version") in (2, 3):
        meta["meta_sha256"] = pio.meta_digest(meta)
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.savez(path, __meta__=blob, **arrays)


def _same_program(prog, original) -> None:
    """The loaded program is the original one: equal phases, grid, detection; forward bit-identical."""
    assert prog.phase_map.grid == original.phase_map.grid
    assert prog.detection == original.detection
    assert prog.phase_map.v.layout == original.phase_map.v.layout
    for a, b in zip(jax.tree_util.tree_leaves(prog.phase_map), jax.tree_util.tree_leaves(original.phase_map)):
        assert a.dtype == b.dtype == np.float64 and a.shape == b.shape
        assert np.array_equal(a, b)
    assert np.array_equal(prog.forward(X), original.forward(X))


def _load_or_refuse(path, original):
    """Load ``path``: returns ``"loaded"`` (and checks it is the original) or ``"refused"``."""
    try:
        prog = pc.load(path)
    except PhaseMapFileError as exc:
        assert os.path.basename(path) in str(exc)  # names the file
        return "refused"
    _same_program(prog, original)
    assert prog.calibrated == original.calibrated
    if original.calibrated:
        assert prog.chip.seed == original.chip.seed
        for a, b in zip(jax.tree_util.tree_leaves(prog.settings), jax.tree_util.tree_leaves(original.settings)):
            assert np.array_equal(a, b)
    return "loaded"


# ---- strategies ----------------------------------------------------------------------------------------

NUMBER_EXTREMES = [math.nan, math.inf, -math.inf, 1e308, -1e308, -1, -(2**63), 2**64, 10**30, 1e-320]
scalars = st.one_of(
    st.sampled_from(NUMBER_EXTREMES), st.none(), st.booleans(), st.sampled_from(["", "\u0000\ud7ff"]),
    st.integers(4000, 6000).map(lambda n: "x" * n),
)
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=8)


def _paths(obj, prefix=()):
    """Every path to a value inside a JSON object (keys and list indices)."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(prefix + (k,))
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append(prefix + (i,))
            out += _paths(v, prefix + (i,))
    return out


def _mutate_meta(meta, path, action, value):
    meta = copy.deepcopy(meta)
    parent = meta
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    if action == "delete":
        del parent[key]
    elif action == "nest":
        parent[key] = [parent[key], value]
    elif action == "wrap":
        parent[key] = {"value": parent[key]}
    else:
        parent[key] = value
    return meta


@st.composite
def meta_mutations(draw, meta):
    path = draw(st.sampled_from(_paths(meta)))
    action = draw(st.sampled_from(["delete", "replace", "nest", "wrap"]))
    value = draw(junk)
    return path, action, value


# values out of each float array's range (the schema's table): never a valid program
_ANGLE_BAD = [math.nan, math.inf, -math.inf, 1e308, -1e308, -1.0, 2.0, 1e20, -1e-6]
_PHASE_BAD = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1e20, -1e20, 1e5]
_GAIN_BAD = [math.nan, math.inf, -math.inf, -1e308, -1.0, -1e-300]
_INT_BAD = [-1, 2**31 - 1, 5, 100, -(2**31)]
_BAD = {"v_theta": _ANGLE_BAD, "u_theta": _ANGLE_BAD, "sigma": _ANGLE_BAD, "gain": _GAIN_BAD,
        "v_phi": _PHASE_BAD, "u_phi": _PHASE_BAD, "v_out_phase": _PHASE_BAD, "u_out_phase": _PHASE_BAD,
        "mode_pairs": _INT_BAD, "columns": _INT_BAD,
        **{f"cal_{g}": _PHASE_BAD for g in ("v_int", "v_ext", "v_out", "att", "u_int", "u_ext", "u_out")},
        "cal_gain": [math.nan, math.inf, -math.inf], "drives_mw": [math.nan, math.inf, -1.0, 1e6]}


def _reshape(a, how):
    if how == "drop_row":
        return a[:-1]
    if how == "add_column":
        return np.concatenate([a, a[..., :1]], axis=-1)
    if how == "transpose":
        return np.ascontiguousarray(a.T) if a.ndim > 1 else a[None]
    if how == "ravel":
        return a.ravel() if a.ndim > 1 else a.reshape(1, -1)
    if how == "scalar":
        return np.asarray(a.ravel()[0])
    return a[:0]


@st.composite
def array_mutations(draw, arrays):
    names = sorted(arrays)
    kind = draw(st.sampled_from(["value", "dtype", "shape", "delete", "add", "object"]))
    name = draw(st.sampled_from(names))
    out = dict(arrays)
    a = arrays[name]
    if kind == "value":
        a = a.copy()
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(_BAD[name]))
        out[name] = a
    elif kind == "dtype":
        dtypes = ["float32", "int64", "int32", "complex128", "bool", "uint8", ">f8", "float16"]
        if a.dtype == np.int32:
            dtypes = ["int64", "float64", "int16", "uint32", ">i4"]
        dt = np.dtype(draw(st.sampled_from(dtypes)))
        if dt.str == a.dtype.str:  # '>f8' on a big-endian machine
            dt = np.dtype(np.float32)
        with np.errstate(all="ignore"):
            out[name] = a.astype(dt)
    elif kind == "shape":
        out[name] = _reshape(a, draw(st.sampled_from(["drop_row", "add_column", "transpose", "ravel", "scalar", "empty"])))
    elif kind == "delete":
        del out[name]
    elif kind == "add":
        extra = draw(st.sampled_from(["cal_gain", "drives_mw", "extra", "__meta__x"]))
        out[extra] = np.full(3, np.nan)  # no array of this program has 3 entries, none may be NaN
    else:
        out[name] = np.array([{"not": "data"}], dtype=object)
    changed = kind != "shape" or out[name].shape != a.shape or not np.array_equal(out[name], a)
    return kind, name, out, changed


def _as_version_1(meta):
    meta = copy.deepcopy(meta)
    meta["schema_version"] = 1
    meta.pop("meta_sha256", None)
    meta.pop("circuit", None)
    return meta


def _canonical(meta) -> str:
    return json.dumps(meta, sort_keys=True)


# ---- properties ---------------------------------------------------------------------------------------


def test_the_unchanged_rewrite_loads(work, original):
    """The property's baseline: rewritten with each hash mode and as version 1, the file loads unchanged."""
    folder, meta, arrays, _ = work
    for records, digest in ((False, False), (False, True), (True, True)):
        path = folder / "same.npz"
        _write(path, meta, arrays, records=records, digest=digest)
        assert _load_or_refuse(path, original) == "loaded"
        _write(path, _as_version_1(meta), arrays, records=records, digest=digest)
        assert _load_or_refuse(path, original) == "loaded"


@SETTINGS
@given(data=st.data(), hashes=st.sampled_from(["kept", "digest", "all"]), version=st.sampled_from([3, 1]))
def test_metadata_mutants_load_as_the_original_or_are_refused(work, original, data, hashes, version):
    folder, meta, arrays, _ = work
    base = meta if version == 3 else _as_version_1(meta)
    path, action, value = data.draw(meta_mutations(base))
    mutant = _mutate_meta(base, path, action, value)
    out = folder / "meta_mutant.npz"
    _write(out, mutant, arrays, records=hashes == "all", digest=hashes != "kept")
    result = _load_or_refuse(out, original)
    event(f"meta/{hashes}/v{version}/{result}")
    if version == 3 and hashes == "kept" and _canonical(mutant) != _canonical(base):
        assert result == "refused", f"an edit of {path} ({action}) was not noticed"


@SETTINGS
@given(data=st.data(), hashes=st.sampled_from(["kept", "digest", "all"]), version=st.sampled_from([3, 1]))
def test_array_mutants_load_as_the_original_or_are_refused(work, original, data, hashes, version):
    folder, meta, arrays, _ = work
    base = meta if version == 3 else _as_version_1(meta)
    kind, name, mutant, changed = data.draw(array_mutations(arrays))
    out = folder / "array_mutant.npz"
    _write(out, base, mutant, records=hashes == "all", digest=hashes != "kept")
    result = _load_or_refuse(out, original)
    event(f"array/{kind}/{hashes}/{result}")
    if changed:  # every array mutation above is out of range, of another dtype or shape, missing or extra
        assert result == "refused", f"{kind} of {name!r} was not noticed"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), hashes=st.sampled_from(["kept", "digest", "all"]), part=st.sampled_from(["meta", "arrays"]))
def test_calibrated_file_mutants_load_as_the_original_or_are_refused(cal_work, calibrated, data, hashes, part):
    """The same for a calibrated program: settings, drives and the chip record."""
    folder, meta, arrays, _ = cal_work
    changed = True
    if part == "meta":
        path, action, value = data.draw(meta_mutations(meta))
        mutant_meta, mutant_arrays = _mutate_meta(meta, path, action, value), arrays
        changed = _canonical(mutant_meta) != _canonical(meta)
    else:
        _, _, mutant_arrays, changed = data.draw(array_mutations(arrays))
        mutant_meta = meta
    out = folder / "cal_mutant.npz"
    _write(out, mutant_meta, mutant_arrays, records=hashes == "all", digest=hashes != "kept")
    result = _load_or_refuse(out, calibrated)
    event(f"calibrated/{part}/{hashes}/{result}")
    if changed and (part == "arrays" or hashes == "kept"):
        assert result == "refused"


def test_a_calibrated_file_with_another_chip_seed_is_refused(cal_work, calibrated):
    folder, meta, arrays, _ = cal_work
    out = folder / "seed.npz"
    _write(out, _mutate_meta(meta, ("chip", "seed"), "replace", calibrated.chip.seed + 1), arrays,
           records=True, digest=True)
    with pytest.raises(PhaseMapFileError, match=r"seed\.npz': the chip \(seed 6\) re-samples differently"):
        pc.load(out)


@SETTINGS
@given(data=st.data())
def test_both_at_once_with_every_hash_recomputed(work, original, data):
    """A deliberate edit of metadata and arrays together, every hash recomputed."""
    folder, meta, arrays, _ = work
    path, action, value = data.draw(meta_mutations(meta))
    _, _, mutant_arrays, changed = data.draw(array_mutations(arrays))
    out = folder / "both_mutant.npz"
    _write(out, _mutate_meta(meta, path, action, value), mutant_arrays, records=True, digest=True)
    result = _load_or_refuse(out, original)
    event(f"both/{result}")
    if changed:
        assert result == "refused"


@SETTINGS
@given(data=st.data())
def test_byte_level_damage_loads_as_the_original_or_is_refused(work, original, data):
    folder, _, _, blob = work
    blob = bytearray(blob)
    kind = data.draw(st.sampled_from(["flip", "cut", "splice", "zero_run"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] ^= data.draw(st.integers(1, 255))
    elif kind == "cut":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "splice":
        i = data.draw(st.integers(0, len(blob)))
        blob[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    else:
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i : i + data.draw(st.integers(1, 64))] = bytes(64)[: len(blob[i : i + 64])]
    out = folder / "bytes_mutant.npz"
    out.write_bytes(bytes(blob))
    result = _load_or_refuse(out, original)
    event(f"bytes/{kind}/{result}")


def test_inspect_prints_no_traceback_on_damaged_files(work, capsys):
    """``photocomp inspect`` on refused files: one error line naming the file, exit status 2 (bad input), no traceback."""
    folder, meta, arrays, _ = work
    cases = {
        "report_list.npz": (_mutate_meta(meta, ("report",), "replace", [1, 2]), arrays),
        "gain_record.npz": (_mutate_meta(meta, ("arrays", "gain"), "replace", [1, 2]), arrays),
        "huge_theta.npz": (meta, {**arrays, "v_theta": np.full_like(arrays["v_theta"], 1e308)}),
        "bad_size.npz": (_mutate_meta(meta, ("target", "size"), "replace", 5), arrays),
        "detection.npz": (_mutate_meta(meta, ("detection",), "replace", "anything"), arrays),
    }
    for name, (m, a) in cases.items():
        path = folder / name
        _write(path, m, a, records=name != "gain_record.npz", digest=True)
        assert cli_main(["inspect", str(path)]) == 2
        out = capsys.readouterr()
        assert "Traceback" not in out.out + out.err
        assert len(out.err.strip().splitlines()) == 1 and name in out.err


def test_a_header_the_tokenizer_rejects_is_refused(work):
    """A ``)`` of an .npy header's shape turned into ``(`` (one flipped bit): numpy's header parser then re-reads
    the header with Python's tokenizer, which raises ``tokenize.TokenError`` (neither ValueError nor
    SyntaxError). The file is refused with a PhaseMapFileError, as any other damaged header. The archive is
    rewritten with the damaged member so its CRC is right and the header is what fails (a member over 4 KiB is
    parsed before zipfile reaches its end and checks the CRC, as the byte-level fuzzing found)."""
    folder, _, _, blob = work
    out = folder / "token_mutant.npz"
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = bytearray(src.read(info))
            if info.filename == "__meta__.npy":
                i = data.index(b")", data.index(b"'shape': ("))
                data[i] ^= 1  # ')' -> '('
            dst.writestr(info, bytes(data))
    with pytest.raises(PhaseMapFileError, match=r"__meta__.* bad \.npy header"):
        pc.load(out)


def test_a_header_with_an_invalid_escape_is_refused_without_a_parser_warning(work):
    """Damage that puts a backslash into an .npy header's dtype string (``'|u1'`` -> ``'\\o1'``): Python's
    parser warns about the invalid escape while numpy reads the header. The file is refused as a bad header,
    and the parser's warning does not reach the user."""
    folder, _, _, blob = work
    out = folder / "escape_mutant.npz"
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "__meta__.npy":
                assert b"'descr': '|u1'" in data
                data = data.replace(b"'descr': '|u1'", b"'descr': '\\o1'", 1)
            dst.writestr(info, data)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(PhaseMapFileError, match=r"__meta__.* bad \.npy header"):
            pc.load(out)
    assert [str(w.message) for w in seen] == []
