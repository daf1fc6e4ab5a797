"""Phase-map files: round trip, atomic writes, and every way a file can be refused."""

import dataclasses
import hashlib
import json
import os
import pathlib
import pickle
import types
import zipfile

import jax
import numpy as np
import pytest
from conftest import random_matrix

import photocomp as pc
from photocomp.core.errors import InvalidInputError, InvalidTypeError, MismatchError, PhaseMapFileError
from photocomp.core.ir import CompileReport, PhaseMap, TileGrid
from photocomp.core.phases import MeshPhases
from photocomp.io import program_file as pio

PIPELINE = "validate | tile | svd | clements | canonicalize | quantize(bits=10) | lower"


@pytest.fixture(scope="module")
def prog():
    """A complex 6 x 5 matrix on clements-4 (2 x 2 tiles), quantized."""
    w = random_matrix(np.random.default_rng(60), (6, 5), "complex")
    return pc.compile(w, "clements-4", PIPELINE)


@pytest.fixture(scope="module")
def saved(prog, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "w.phases.npz"
    assert prog.save(path) == str(path)
    return path


@pytest.fixture
def xs():
    r = np.random.default_rng(61)
    return r.standard_normal((4, 5)) + 1j * r.standard_normal((4, 5))


def _leftovers(folder):
    return sorted(p.name for p in pathlib.Path(folder).iterdir() if p.name.startswith(".photocomp-") or p.suffix == ".tmp")


def _read(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays.pop("__meta__")).decode("utf-8"))
    return meta, arrays


def _write(path, meta, arrays, rehash=False):
    """Write an archive as given; ``rehash`` recomputes the array records and the metadata digest
    (what someone editing a file on purpose would do), so that only the semantic checks can refuse it."""
    meta = dict(meta)
    if rehash:
        meta["arrays"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype),
                              "sha256": hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()}
                          for k, v in arrays.items()}
        if meta.get("schema_version") in (2, 3):
            meta["meta_sha256"] = pio.meta_digest(meta)
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(path, __meta__=blob, **arrays)


# ---- round trip ----------------------------------------------------------------------------------------


def test_round_trip_forward_is_bit_identical(prog, saved, xs):
    again = pc.load(saved)
    assert isinstance(again, pc.Program)
    for x in xs:
        assert np.array_equal(np.asarray(again.forward(x)), np.asarray(prog.forward(x)))
    assert np.array_equal(again.matrix(), prog.matrix())


def test_round_trip_phase_arrays_identical(prog, saved):
    again = pc.load(saved)
    a, b = jax.tree_util.tree_leaves(prog.phase_map), jax.tree_util.tree_leaves(again.phase_map)
    assert len(a) == len(b) == 8
    for x, y in zip(a, b):
        assert x.dtype == y.dtype == np.float64
        np.testing.assert_array_equal(x, y)
    assert again.phase_map.grid == prog.phase_map.grid
    assert again.phase_map.v.layout == prog.phase_map.v.layout


def test_round_trip_metadata(prog, saved):
    again = pc.load(saved)
    assert again.target == prog.target
    assert again.pipeline == prog.pipeline == PIPELINE
    assert again.detection == prog.detection
    assert again.report.to_dict() == prog.report.to_dict()
    assert again.report.summary["matrix_error"] == prog.report.summary["matrix_error"]
    assert [r.name for r in again.report.records] == [r.name for r in prog.report.records]
    assert (again.shape, again.n_tiles, again.n_mzi, again.depth) == (prog.shape, prog.n_tiles, prog.n_mzi, prog.depth)


def test_file_contents_follow_the_schema(saved):
    meta, arrays = _read(saved)
    assert meta["format"] == pio.FORMAT == "photocomp.phasemap"
    assert meta["schema_version"] == pio.SCHEMA_VERSION == 3
    assert meta["meta_sha256"] == pio.meta_digest(meta)
    assert set(meta) == {"format", "schema_version", "convention", "phase_ranges", "units", "photocomp_version",
                         "target", "grid", "mesh", "pipeline", "detection", "report", "chip", "arrays", "meta_sha256",
                         "circuit"}
    assert meta["circuit"] == "svd"
    with zipfile.ZipFile(saved) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    assert meta["convention"] == pc.convention.CONVENTION_TAG
    assert set(arrays) == {"v_theta", "v_phi", "v_out_phase", "sigma", "u_theta", "u_phi", "u_out_phase",
                           "gain", "mode_pairs", "columns"}
    assert arrays["v_theta"].shape == (4, 6) and arrays["gain"].shape == (4,)
    assert arrays["mode_pairs"].dtype == np.int32
    assert meta["units"]["theta"] == "rad"
    assert set(meta["arrays"]) == set(arrays)


def test_round_trip_intensity_program(tmp_path):
    w = random_matrix(np.random.default_rng(62), (6, 5), "real")
    prog = pc.compile(w, "clements-4", "tile | svd | clements | lower(detection=intensity)")
    prog.save(tmp_path / "i.npz")
    again = pc.load(str(tmp_path / "i.npz"))
    x = np.arange(5.0)
    assert again.detection == "intensity"
    assert np.array_equal(np.asarray(again.forward(x)), np.asarray(prog.forward(x)))


def test_save_accepts_str_and_pathlike(prog, tmp_path):
    assert prog.save(str(tmp_path / "a.npz")) == str(tmp_path / "a.npz")
    assert prog.save(tmp_path / "b.npz") == str(tmp_path / "b.npz")
    assert sorted(os.listdir(tmp_path)) == ["a.npz", "b.npz"]


def test_save_overwrites(prog, tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(b"old contents")
    prog.save(path)
    assert pc.load(path).target == prog.target
    assert _leftovers(tmp_path) == []


# ---- atomic writes -------------------------------------------------------------------------------------


def test_no_temp_files_after_success(prog, tmp_path):
    prog.save(tmp_path / "ok.npz")
    assert os.listdir(tmp_path) == ["ok.npz"]


def test_saved_file_has_the_permissions_of_a_plain_write(prog, tmp_path):
    old = os.umask(0o022)
    try:
        prog.save(tmp_path / "ok.npz")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "ok.npz").st_mode & 0o777 == 0o644


def test_failure_mid_write_leaves_nothing(prog, tmp_path, monkeypatch):
    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    dest = tmp_path / "w.npz"
    with pytest.raises(PhaseMapFileError, match=r"cannot write path '.*w\.npz': disk full") as info:
        prog.save(dest)
    assert isinstance(info.value.__cause__, OSError)
    assert not dest.exists()
    assert os.listdir(tmp_path) == []


def test_failure_keeps_the_old_file(prog, tmp_path, monkeypatch):
    dest = tmp_path / "w.npz"
    prog.save(dest)
    before = dest.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"garbage")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        prog.save(dest)
    assert dest.read_bytes() == before
    assert _leftovers(tmp_path) == [] and os.listdir(tmp_path) == ["w.npz"]


def test_save_to_missing_folder(prog, tmp_path):
    with pytest.raises(PhaseMapFileError, match="folder must exist"):
        prog.save(tmp_path / "missing" / "w.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad", [None, 3, b"/tmp/w.npz", ["w.npz"]])
def test_save_rejects_non_paths(prog, bad):
    with pytest.raises(InvalidTypeError, match="path must be a file path"):
        prog.save(bad)


# ---- refusing files ---------------------------------------------------------------------------------------


def test_load_missing_file(tmp_path):
    with pytest.raises(PhaseMapFileError, match="must be an existing file"):
        pc.load(tmp_path / "nope.npz")
    with pytest.raises(PhaseMapFileError, match="must be an existing file"):
        pc.load(tmp_path)  # a folder


def test_load_garbage(tmp_path):
    path = tmp_path / "g.npz"
    path.write_bytes(bytes(np.random.default_rng(63).integers(0, 256, 4096, dtype=np.uint8)))
    with pytest.raises(PhaseMapFileError, match="cannot read"):
        pc.load(path)
    path.write_bytes(b"")
    with pytest.raises(PhaseMapFileError, match="cannot read"):
        pc.load(path)
    # a text file (e.g. a drift study's CSV) is named as such, not taken for pickled data
    path = tmp_path / "drift.csv"
    path.write_text("run,compensator,time_s\n0,none,0.0\n")
    with pytest.raises(PhaseMapFileError, match=r"path must be a photocomp \.npz file .*got a file starting with b'run,comp'"):
        pc.load(path)


def test_load_truncated(saved, tmp_path):
    data = saved.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        path = tmp_path / f"t{cut}.npz"
        path.write_bytes(data[:cut])
        with pytest.raises(PhaseMapFileError, match="truncated or corrupt|tampered or truncated|SHA-256"):
            pc.load(path)


def test_load_tampered_array(saved, tmp_path):
    meta, arrays = _read(saved)
    arrays["u_phi"] = arrays["u_phi"].copy()
    arrays["u_phi"][1, 2] += 1e-9
    path = tmp_path / "tampered.npz"
    _write(path, meta, arrays)
    with pytest.raises(PhaseMapFileError, match="'u_phi' fails its SHA-256"):
        pc.load(path)


def test_load_tampered_structure(saved, tmp_path):
    meta, arrays = _read(saved)
    del arrays["gain"]
    path = tmp_path / "missing_array.npz"
    _write(path, meta, arrays)
    with pytest.raises(PhaseMapFileError, match="tampered or truncated"):
        pc.load(path)


def test_load_untampered_rewrite_is_accepted(saved, tmp_path):
    """The checks above fail for the right reason: an unchanged rewrite loads."""
    meta, arrays = _read(saved)
    path = tmp_path / "same.npz"
    _write(path, meta, arrays)
    assert pc.load(path).pipeline == PIPELINE


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("schema_version", 4, "schema version 4.*Upgrade photocomp"),
        ("schema_version", "3", "schema version '3'.*reads \\[1, 2, 3\\]"),
        ("schema_version", None, "schema version None"),
        ("convention", "reck1994", "convention 'reck1994'"),
        ("format", "otherlab.phasemap", "must be a 'photocomp.phasemap' file"),
    ],
)
def test_load_refuses_other_versions_conventions_formats(saved, tmp_path, key, value, match):
    meta, arrays = _read(saved)
    meta[key] = value
    path = tmp_path / "other.npz"
    _write(path, meta, arrays)
    with pytest.raises(PhaseMapFileError, match=match):
        pc.load(path)


def test_load_refuses_bad_metadata(saved, tmp_path):
    meta, arrays = _read(saved)
    meta["target"]["dac_bits"] = 0
    path = tmp_path / "bad_target.npz"
    _write(path, meta, arrays, rehash=True)
    with pytest.raises(PhaseMapFileError, match="field 'target' is not a valid target: Target.dac_bits"):
        pc.load(path)
    meta, arrays = _read(saved)
    meta["mesh"]["kind"] = "reck"
    meta["target"]["mesh"] = "reck"
    _write(path, meta, arrays, rehash=True)
    with pytest.raises(PhaseMapFileError, match="a reck mesh of 4 modes has 6 MZIs in 5 columns; the metadata says 6 in 4"):
        pc.load(path)
    meta["mesh"]["depth"] = 5
    _write(path, meta, arrays, rehash=True)
    with pytest.raises(PhaseMapFileError, match="disagree with the reck layout"):
        pc.load(path)


def test_load_file_without_meta(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.ones(3))
    with pytest.raises(PhaseMapFileError, match="no __meta__"):
        pc.load(path)


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_never_unpickles(saved, tmp_path):
    marker = tmp_path / "code-ran"
    meta, arrays = _read(saved)
    arrays["evil"] = np.array([_Payload(str(marker))], dtype=object)
    meta["arrays"]["evil"] = {"shape": [1], "dtype": "object", "sha256": "0"}
    path = tmp_path / "evil.npz"
    _write(path, meta, arrays)  # np.savez pickles object arrays
    # the payload is live: unpickling it really creates the marker
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(str(probe)))).close()
    assert probe.exists()
    with pytest.raises(PhaseMapFileError, match="cannot read"):
        pc.load(path)
    assert not marker.exists()


def test_load_never_unpickles_meta(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil_meta.npz"
    np.savez(path, __meta__=np.array([_Payload(str(marker))], dtype=object))
    with pytest.raises(PhaseMapFileError):
        pc.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("bad", [None, 3, 2.5, b"w.npz", ["w.npz"]])
def test_load_rejects_non_paths(bad):
    with pytest.raises(TypeError, match="path must be a file path"):
        pc.load(bad)
    with pytest.raises(InvalidTypeError):
        pc.load(bad)


def test_load_npy_file_is_a_phase_map_file_error(tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.ones((3, 3)))
    with pytest.raises(PhaseMapFileError):
        pc.load(path)


# ---- metadata integrity and semantic checks (schema version 3) ---------------------------------------------


def _edit(meta, dotted, value):
    meta = json.loads(json.dumps(meta))
    *parents, key = dotted.split(".")
    node = meta
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[key]
    else:
        node[key] = value
    return meta


_DELETE = object()


@pytest.mark.parametrize(
    "field, value",
    [("grid.out_dim", 7), ("grid.in_dim", 8), ("target.size", 5), ("target.mesh", "reck"), ("target.name", "pace-64"),
     ("target.wavelength_nm", 1310.0), ("detection", "bogus"), ("detection", "intensity"), ("mesh.n_modes", 4096),
     ("pipeline", "lower"), ("report.summary.matrix_error", 0.0), ("chip", {"seed": 1, "fingerprint": "0" * 64}),
     ("units.theta", "deg"), ("target.adc_bits", _DELETE)],
)
def test_metadata_edits_fail_the_metadata_digest(saved, tmp_path, field, value):
    meta, arrays = _read(saved)
    path = tmp_path / "edited.npz"
    _write(path, _edit(meta, field, value), arrays)
    with pytest.raises(PhaseMapFileError, match=r"edited\.npz': the metadata fails its SHA-256 check \(meta_sha256\)"):
        pc.load(path)


def test_metadata_digest_is_over_the_parsed_record(saved, tmp_path):
    """Re-serialising the same record differently (indentation, key order) keeps the digest valid."""
    meta, arrays = _read(saved)
    blob = np.frombuffer(json.dumps(dict(reversed(list(meta.items()))), indent=3).encode("utf-8"), dtype=np.uint8)
    path = tmp_path / "reformatted.npz"
    np.savez(path, __meta__=blob, **arrays)
    assert pc.load(path).pipeline == PIPELINE
    meta["meta_sha256"] = "f" * 64
    _write(path, meta, arrays)
    with pytest.raises(PhaseMapFileError, match="fails its SHA-256 check"):
        pc.load(path)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("target.size", 5, r"mesh has 4 modes but tiles are 4x4 and target 'clements-4' has 5 modes"),
        ("target.mesh", "reck", r"mesh kind 'clements' differs from target 'clements-4''s mesh 'reck'"),
        ("grid.tile", 5, r"mesh has 4 modes but tiles are 5x5"),
        ("grid.out_dim", 9, r"field 'arrays\.\w+\.shape' must be \[\d+(, 6)?\] \(from the grid and mesh\)"),
        ("grid.out_dim", 0, r"field 'grid\.out_dim' must be an integer in \[1, 2\*\*31 - 1\]; got integer 0"),
        ("grid.in_dim", 5.0, r"field 'grid\.in_dim' must be an integer .*; got number 5\.0"),
        ("grid.tile", True, r"field 'grid\.tile' must be an integer .*; got boolean True"),
        ("detection", "bogus", r"field 'detection' must be one of \('coherent', 'intensity'\); got string 'bogus'"),
        ("detection", None, r"field 'detection' must be one of .*; got null None"),
        ("mesh.kind", "hexagonal", r"field 'mesh\.kind' must be one of \('clements', 'reck', 'butterfly', 'fldzhyan', 'crossbar'\)"),
        ("mesh.kind", "crossbar", r"mesh kind 'crossbar' differs from target 'clements-4''s mesh 'clements'"),
        ("mesh.n_mzi", 7, r"a clements mesh of 4 modes has 6 MZIs in 4 columns; the metadata says 7 in 4"),
        ("target.wavelength_nm", "1550", r"field 'target\.wavelength_nm' must be a finite number; got string '1550'"),
        ("target.size", 4.0, r"field 'target\.size' must be an integer; got number 4\.0"),
        ("target.description", ["x"], r"field 'target\.description' must be a string"),
        ("target.components", -3, r"field 'target\.components' must be an integer >= 0"),
        ("target.adc_bits", _DELETE, r"field 'target' lacks the fields \['adc_bits'\]"),
        ("target.laser", 1.0, r"field 'target' has unknown fields \['laser'\]"),
        ("pipeline", 3, r"field 'pipeline' must be a string"),
        ("chip", {"seed": -1, "fingerprint": "0" * 64}, r"field 'chip\.seed' must be an integer in \[0, 2\*\*64\)"),
        ("chip", {"seed": 1}, r"field 'chip' must be null or an object with exactly the fields seed, fingerprint"),
        ("phase_ranges.theta", [0, 3.2], r"field 'phase_ranges' must be"),
        ("units", [], r"field 'units' must be an object of unit strings"),
        ("photocomp_version", 2, r"field 'photocomp_version' must be a version string"),
        ("extra", 1, r"the metadata has unknown fields \['extra'\]"),
        ("report", _DELETE, r"the metadata lacks the fields \['report'\]"),
    ],
)
def test_edited_metadata_with_recomputed_digest_is_checked(saved, tmp_path, field, value, match):
    """Someone who recomputes every hash still cannot load metadata that disagrees with itself or the arrays."""
    meta, arrays = _read(saved)
    path = tmp_path / "edited.npz"
    _write(path, _edit(meta, field, value), arrays, rehash=True)
    with pytest.raises(PhaseMapFileError, match=r"cannot read '.*edited\.npz': .*" + match):
        pc.load(path)


def test_a_refused_target_edit_no_longer_reaches_cost(saved, tmp_path):
    """The edit that used to load and then crash pc.cost with a broadcasting error is refused at load."""
    meta, arrays = _read(saved)
    path = tmp_path / "size5.npz"
    _write(path, _edit(meta, "target.size", 5), arrays, rehash=True)
    with pytest.raises(PhaseMapFileError, match="must agree"):
        pc.cost(pc.load(path))
    assert pc.cost(pc.load(saved)) is not None


@pytest.mark.parametrize(
    "name, index, value, match",
    [
        ("v_theta", (0, 0), 1e308, r"array 'v_theta' must be in \[0, pi/2\] rad .*e\.g\. 1e\+308"),
        ("u_theta", (1, 2), -0.25, r"array 'u_theta' must be in \[0, pi/2\]"),
        ("u_theta", (1, 2), np.pi / 2 + 1e-9, r"array 'u_theta' must be in \[0, pi/2\]"),
        ("sigma", (0, 1), 2.0, r"array 'sigma' must be in \[0, pi/2\]"),
        ("sigma", (0, 1), np.nan, r"array 'sigma' must be finite"),
        ("gain", (2,), -1.0, r"array 'gain' must be >= 0"),
        ("gain", (2,), np.inf, r"array 'gain' must be finite"),
        ("v_phi", (3, 5), 1e308, r"array 'v_phi' must be a phase with \|phase\| <= PHASE_LIMIT"),
        ("u_out_phase", (0, 0), -1e5, r"array 'u_out_phase' must be a phase"),
        ("v_out_phase", (0, 3), -np.inf, r"array 'v_out_phase' must be finite"),
        ("mode_pairs", (0,), 2, r"mode pairs/columns disagree with the clements layout of 4 modes"),
        ("columns", (5,), -1, r"mode pairs/columns disagree"),
    ],
)
def test_array_values_out_of_range_are_refused_even_with_recomputed_hashes(saved, tmp_path, name, index, value, match):
    meta, arrays = _read(saved)
    arrays[name] = arrays[name].copy()
    arrays[name][index] = value
    path = tmp_path / "values.npz"
    _write(path, meta, arrays, rehash=True)
    with pytest.raises(PhaseMapFileError, match=r"values\.npz': " + match):
        pc.load(path)


def test_rounding_at_the_ends_of_the_angle_ranges_is_accepted(saved, tmp_path, prog):
    meta, arrays = _read(saved)
    arrays["v_theta"] = arrays["v_theta"].copy()
    arrays["v_theta"][0, 0] = np.pi / 2 + 1e-13
    arrays["sigma"] = arrays["sigma"].copy()
    arrays["sigma"][0, 0] = -1e-13
    path = tmp_path / "rounded.npz"
    _write(path, meta, arrays, rehash=True)
    again = pc.load(path)
    assert again.phase_map.v.theta[0, 0] == np.pi / 2 + 1e-13


@pytest.mark.parametrize(
    "name, change, match",
    [
        ("mode_pairs", lambda a: a.astype(np.int64), r"field 'arrays\.mode_pairs\.dtype' must be 'int32'; got string 'int64'"),
        ("columns", lambda a: a.astype(np.float64), r"field 'arrays\.columns\.dtype' must be 'int32'"),
        ("v_phi", lambda a: a.astype(np.float32), r"field 'arrays\.v_phi\.dtype' must be 'float64'"),
        ("gain", lambda a: a.astype(np.complex128), r"field 'arrays\.gain\.dtype' must be 'float64'"),
        ("v_theta", lambda a: a[:, :5], r"field 'arrays\.v_theta\.shape' must be \[4, 6\] .*; got array \[4, 5\]"),
        ("sigma", lambda a: a[:, :3], r"field 'arrays\.sigma\.shape' must be \[4, 4\]"),
        ("gain", lambda a: a[None], r"field 'arrays\.gain\.shape' must be \[4\]"),
    ],
)
def test_arrays_of_other_dtypes_or_shapes_are_refused(saved, tmp_path, name, change, match):
    meta, arrays = _read(saved)
    arrays[name] = change(arrays[name])
    path = tmp_path / "typed.npz"
    _write(path, meta, arrays, rehash=True)
    with pytest.raises(PhaseMapFileError, match=match):
        pc.load(path)


def test_npy_header_is_checked_against_the_record(saved, tmp_path):
    """Same bytes, other shape or dtype in the .npy header (records left as they were): refused from the header."""
    meta, arrays = _read(saved)
    path = tmp_path / "header.npz"
    arrays["v_theta"] = arrays["v_theta"].reshape(6, 4)
    _write(path, meta, arrays)
    with pytest.raises(PhaseMapFileError, match=r"array 'v_theta' must have shape \(4, 6\); got \(6, 4\)"):
        pc.load(path)
    meta, arrays = _read(saved)
    arrays["v_phi"] = arrays["v_phi"].view(np.int64)
    _write(path, meta, arrays)
    with pytest.raises(PhaseMapFileError, match=r"array 'v_phi' must have dtype float64; got '<i8'"):
        pc.load(path)
    meta, arrays = _read(saved)
    arrays["u_phi"] = np.asfortranarray(arrays["u_phi"])
    _write(path, meta, arrays)
    with pytest.raises(PhaseMapFileError, match=r"array 'u_phi' must be stored in C order"):
        pc.load(path)


def test_mesh_size_is_checked_before_any_layout_is_built(saved, tmp_path, monkeypatch):
    """mesh.n_modes = 4096 used to build a 4096-mode layout (68 s) before comparing it with the tiles."""
    built = []
    monkeypatch.setattr(pio, "mesh_layout", lambda *a: built.append(a) or pytest.fail("layout built"))
    meta, arrays = _read(saved)
    path = tmp_path / "big.npz"
    for n in (4096, 10**9):
        _write(path, _edit(meta, "mesh.n_modes", n), arrays, rehash=True)
        with pytest.raises(PhaseMapFileError, match=f"mesh has {n} modes but tiles are 4x4"):
            pc.load(path)
    # all three agree on 4096 modes: the arrays' records (from the closed-form MZI count) disagree
    big = _edit(_edit(_edit(meta, "mesh.n_modes", 4096), "grid.tile", 4096), "target.size", 4096)
    big = _edit(_edit(big, "mesh.n_mzi", 4096 * 4095 // 2), "mesh.depth", 4096)
    _write(path, big, arrays, rehash=True)
    with pytest.raises(PhaseMapFileError, match=r"arrays\.\w+\.shape' must be \[1, \d+\]"):
        pc.load(path)
    assert built == []


def test_version_1_files_still_load(prog, saved, tmp_path, xs):
    meta, arrays = _read(saved)
    meta["schema_version"] = 1
    del meta["meta_sha256"], meta["circuit"]
    path = tmp_path / "v1.npz"
    _write(path, meta, arrays)
    again = pc.load(path)
    assert np.array_equal(again.forward(xs[0]), prog.forward(xs[0]))
    assert again.target == prog.target
    # the oldest version-1 files: no chip record, targets without the later fields (their defaults apply)
    del meta["chip"]
    del meta["target"]["photons_per_shot"]
    _write(path, meta, arrays)
    again = pc.load(path)
    assert again.chip is None and again.target.photons_per_shot == pc.Target("t", "clements", 4).photons_per_shot
    assert np.array_equal(again.matrix(), prog.matrix())


@pytest.mark.parametrize(
    "field, value, match",
    [("detection", "bogus", "field 'detection' must be one of"), ("target.size", 5, "must agree"),
     ("meta_sha256", "0" * 64, r"unknown fields \['meta_sha256'\]"), ("report", [1, 2], "not a compile report")],
)
def test_version_1_files_get_the_same_checks(saved, tmp_path, field, value, match):
    meta, arrays = _read(saved)
    meta["schema_version"] = 1
    del meta["meta_sha256"], meta["circuit"]
    path = tmp_path / "v1.npz"
    _write(path, _edit(meta, field, value), arrays)
    with pytest.raises(PhaseMapFileError, match=match):
        pc.load(path)
    meta["schema_version"] = 1
    arrays["v_theta"] = np.full_like(arrays["v_theta"], 1e308)
    _write(path, meta, arrays, rehash=True)
    with pytest.raises(PhaseMapFileError, match="array 'v_theta' must be in"):
        pc.load(path)


def test_the_schema_is_documented():
    doc = pio.__doc__
    for name in ("v_theta", "v_phi", "v_out_phase", "sigma", "u_theta", "u_phi", "u_out_phase", "gain", "mode_pairs",
                 "columns", "cal_v_int", "cal_v_ext", "cal_v_out", "cal_att", "cal_u_int", "cal_u_ext", "cal_u_out",
                 "cal_gain", "drives_mw", "__meta__", "format", "schema_version", "convention", "phase_ranges", "units",
                 "photocomp_version", "target", "grid", "mesh", "pipeline", "detection", "report", "chip", "arrays",
                 "meta_sha256"):
        assert f"``{name}``" in doc, name
    for fact in ("V_t^H", "column 0 is the input side", "e^{+i out_phase[n]}", "row-major", "t // cols",
                 "float64", "int32", "(rad", "(mW", "ZIP_STORED"):
        assert fact in doc, fact


# ---- loader robustness ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("report", [1, 2], r"field 'report' is not a compile report: report must be a dict .*got list \[1, 2\]"),
        ("report", {"records": [{"name": 1, "spec": "s", "wall_s": 0.0, "metrics": {}}]}, r"\['name'\] must be a str"),
        ("report", {"records": [{"name": "a", "spec": "s", "wall_s": -1.0, "metrics": {}}]}, r"'wall_s'\] must be a finite"),
        ("report", {"records": "abc"}, r"report\['records'\] must be a list"),
        ("report", {"summary": [1]}, r"report\['summary'\] must be a dict"),
        ("arrays", [1, 2], r"field 'arrays' must be an object"),
        ("target", [], r"field 'target' must be an object"),
        ("grid", "6x5", r"field 'grid' must be an object with exactly the fields out_dim, in_dim, tile; got string '6x5'"),
        ("mesh", None, r"field 'mesh' must be an object"),
    ],
)
def test_metadata_of_the_wrong_type_is_a_phase_map_file_error(saved, tmp_path, field, value, match):
    meta, arrays = _read(saved)
    path = tmp_path / "types.npz"
    _write(path, _edit(meta, field, value), arrays, rehash=field != "arrays")
    if field == "arrays":  # keep the edited records: recompute only the digest
        edited = _edit(meta, field, value)
        edited["meta_sha256"] = pio.meta_digest(edited)
        _write(path, edited, arrays)
    with pytest.raises(PhaseMapFileError, match=match):
        pc.load(path)


def test_an_array_record_of_the_wrong_type(saved, tmp_path):
    """``"arrays": {"gain": [1, 2]}`` used to raise AttributeError."""
    meta, arrays = _read(saved)
    meta["arrays"]["gain"] = [1, 2]
    meta["meta_sha256"] = pio.meta_digest(meta)
    path = tmp_path / "record.npz"
    _write(path, meta, arrays)
    with pytest.raises(PhaseMapFileError, match=r"field 'arrays.gain' must be an object with exactly the fields shape, "
                                                r"dtype, sha256; got array \[1, 2\]"):
        pc.load(path)


def _raw_meta(path, text: str, arrays):
    np.savez(path, __meta__=np.frombuffer(text.encode("utf-8"), dtype=np.uint8), **arrays)


def test_deeply_nested_json_is_refused_without_recursion(saved, tmp_path):
    meta, arrays = _read(saved)
    path = tmp_path / "deep.npz"
    for depth in (pio.MAX_JSON_DEPTH + 1, 100_000):
        text = json.dumps(meta).replace('"summary": {', '"summary": {"deep": ' + "[" * depth + "]" * depth + ", ", 1)
        _raw_meta(path, text, arrays)
        with pytest.raises(PhaseMapFileError, match=r"deep\.npz': the __meta__ record nests \d+ levels deep; at most "
                                                    r"MAX_JSON_DEPTH = 32"):
            pc.load(path)
    # brackets inside strings are not nesting
    text = json.dumps(meta).replace('"summary": {', '"summary": {"text": "' + "[" * 1000 + '", ', 1)
    _raw_meta(path, text, arrays)
    with pytest.raises(PhaseMapFileError, match="fails its SHA-256 check"):  # parsed fine; the edit is then noticed
        pc.load(path)


@pytest.mark.parametrize(
    "text, match",
    [("[1, 2]", "must be a JSON object; got array"), ('{"a": 1, "a": 2}', "repeats the key 'a'"),
     ("{", "not valid JSON"), ('{"format": ' + "9" * 5000 + "}", "not valid JSON"), ("\udcff", "not UTF-8")],
)
def test_malformed_meta_text(saved, tmp_path, text, match):
    _, arrays = _read(saved)
    path = tmp_path / "text.npz"
    if text == "\udcff":
        np.savez(path, __meta__=np.frombuffer(b"\xff\xfe{}", dtype=np.uint8), **arrays)
    else:
        _raw_meta(path, text, arrays)
    with pytest.raises(PhaseMapFileError, match=match):
        pc.load(path)


def _patch_directory(path, member: str, *, compressed=None, uncompressed=None):
    """Rewrite the sizes a zip's central directory declares for ``member`` (the data stays as it is)."""
    data = bytearray(pathlib.Path(path).read_bytes())
    i = data.find(b"PK\x01\x02")
    while i >= 0:
        name_len = int.from_bytes(data[i + 28 : i + 30], "little")
        if data[i + 46 : i + 46 + name_len].decode() == member:
            if compressed is not None:
                data[i + 20 : i + 24] = compressed.to_bytes(4, "little")
            if uncompressed is not None:
                data[i + 24 : i + 28] = uncompressed.to_bytes(4, "little")
        i = data.find(b"PK\x01\x02", i + 4)
    pathlib.Path(path).write_bytes(bytes(data))


@pytest.fixture
def no_member_read(monkeypatch):
    """Call it to fail the test from then on if any archive member is opened."""
    def refuse(self, *a, **k):
        pytest.fail("a member was read before the directory was checked")

    return lambda: monkeypatch.setattr(zipfile.ZipFile, "open", refuse)


@pytest.mark.parametrize(
    "member, compressed, uncompressed, match",
    [
        ("v_theta.npy", 0xFFFFFFF0, 0xFFFFFFF0, r"member 'v_theta\.npy' declares 4294967280 bytes .* beyond the end"),
        ("__meta__.npy", 0xFFFFFFF0, 0xFFFFFFF0, r"member '__meta__\.npy' declares 4294967280 bytes"),
        ("gain.npy", None, 0xFFFFFFF0, r"member 'gain\.npy' is compressed \(or declares 4294967280 bytes"),
    ],
)
def test_declared_sizes_are_checked_before_anything_is_read(saved, tmp_path, member, compressed, uncompressed, match,
                                                            no_member_read):
    """A small archive declaring 4 GiB is refused from its directory alone."""
    path = tmp_path / "declared.npz"
    path.write_bytes(saved.read_bytes())
    _patch_directory(path, member, compressed=compressed, uncompressed=uncompressed)
    no_member_read()
    with pytest.raises(PhaseMapFileError, match=match):
        pc.load(path)


def test_compressed_archives_are_refused_unread(saved, tmp_path, no_member_read):
    """Compressed members could expand far beyond the file: photocomp files are stored uncompressed."""
    meta, arrays = _read(saved)
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    no_member_read()
    with pytest.raises(PhaseMapFileError, match=r"member '[\w_]+\.npy' is compressed"):
        pc.load(path)


def test_members_larger_than_their_shape_are_refused_unread(saved, tmp_path, monkeypatch):
    """Only __meta__ is read before every member's declared size matches the shape the metadata implies."""
    meta, arrays = _read(saved)
    arrays["v_theta"] = np.zeros((4, 60_000))
    path = tmp_path / "large.npz"
    _write(path, meta, arrays)
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k: opened.append(info.filename)
                        or real_open(self, info, *a, **k))
    with pytest.raises(PhaseMapFileError, match=r"array 'v_theta' declares 1920128 bytes; its shape \(4, 6\) needs 192"):
        pc.load(path)
    assert opened == ["__meta__.npy"]


def test_meta_record_size_is_bounded(saved, tmp_path, no_member_read):
    meta, arrays = _read(saved)
    path = tmp_path / "big_meta.npz"
    text = json.dumps(meta)
    _raw_meta(path, text + " " * (pio.MAX_META_BYTES + 1 - len(text)), arrays)  # one byte over: refused when read
    with pytest.raises(PhaseMapFileError, match=r"the __meta__ record has 8388609 bytes; at most MAX_META_BYTES"):
        pc.load(path)
    _raw_meta(path, text + " " * (pio.MAX_META_BYTES + 8192), arrays)  # far over: refused from the directory
    no_member_read()
    with pytest.raises(PhaseMapFileError, match=r"the __meta__ record declares \d+ bytes; at most MAX_META_BYTES"):
        pc.load(path)


def test_member_count_names_and_duplicates(saved, tmp_path):
    meta, arrays = _read(saved)
    path = tmp_path / "members.npz"
    _write(path, meta, {**arrays, **{f"x{i}": np.zeros(1) for i in range(pio.MAX_MEMBERS)}})
    with pytest.raises(PhaseMapFileError, match=r"the archive has \d+ members; a phase-map file has at most 32"):
        pc.load(path)
    _write(path, meta, {**arrays, "cal_gain": np.ones(4)})  # a known name this program does not have
    with pytest.raises(PhaseMapFileError, match=r"array set .* differs from its record"):
        pc.load(path)
    _write(path, meta, arrays)
    with zipfile.ZipFile(path, "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("gain.npy", b"")
    with pytest.raises(PhaseMapFileError, match=r"holds member 'gain\.npy' twice"):
        pc.load(path)


# ---- operating-system failures: load ------------------------------------------------------------------------


def test_load_folder_nul_and_empty_paths(tmp_path):
    with pytest.raises(PhaseMapFileError, match=r"path must be an existing file; got '.*', which is a folder"):
        pc.load(tmp_path)
    with pytest.raises(PhaseMapFileError, match=r"path must be an existing file; got 'w\\x00\.npz', which contains a NUL"):
        pc.load("w\0.npz")
    with pytest.raises(PhaseMapFileError, match="got an empty path"):
        pc.load("")


def test_load_a_long_path_is_quoted_bounded(tmp_path):
    long = str(tmp_path / ("d" * 200) / "w.npz")
    with pytest.raises(PhaseMapFileError, match=r"… \(\d+ characters\)$|no such file") as info:
        pc.load(long)
    assert len(str(info.value)) < 300 and "w.npz" in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_load_unreadable_file(saved, tmp_path):
    path = tmp_path / "locked.npz"
    path.write_bytes(saved.read_bytes())
    os.chmod(path, 0)
    try:
        with pytest.raises(PhaseMapFileError, match=r"cannot read '.*locked\.npz': Permission denied"):
            pc.load(path)
    finally:
        os.chmod(path, 0o644)


def test_load_os_errors_are_wrapped(saved, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pio, "open", denied, raising=False)
    with pytest.raises(PhaseMapFileError, match=r"cannot read '.*w\.phases\.npz': Permission denied"):
        pc.load(saved)

    def eio(*a, **k):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(pio, "open", eio, raising=False)
    with pytest.raises(PhaseMapFileError, match="Input/output error"):
        pc.load(saved)


# ---- operating-system failures: save ------------------------------------------------------------------------


def test_save_folder_nul_and_empty_paths(prog, tmp_path):
    with pytest.raises(InvalidInputError, match=r"path must name a file, not a folder; got '.*', which is a folder"):
        prog.save(tmp_path)
    with pytest.raises(InvalidInputError, match=r"path must not contain a NUL byte; got '.*w\\x00\.npz'"):
        prog.save(str(tmp_path / "w\0.npz"))
    with pytest.raises(InvalidInputError, match="path must name a file; got an empty path"):
        prog.save("")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes whatever a folder's mode")
def test_save_into_a_read_only_folder(prog, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o555)
    try:
        with pytest.raises(PhaseMapFileError, match=r"cannot write path '.*w\.npz': Permission denied"):
            prog.save(folder / "w.npz")
        assert os.listdir(folder) == []
    finally:
        os.chmod(folder, 0o755)


def test_save_read_only_file_system_is_wrapped(prog, tmp_path, monkeypatch):
    """What a read-only folder or file system does, simulated (the suite may run as root)."""
    import errno
    import tempfile

    def erofs(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", erofs)
    with pytest.raises(PhaseMapFileError, match=r"cannot write path '.*w\.npz': Read-only file system") as info:
        prog.save(tmp_path / "w.npz")
    assert isinstance(info.value.__cause__, OSError)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("stage", ["replace", "fsync", "chmod"])
def test_save_os_failure_late_leaves_no_temp_file_and_keeps_the_old_one(prog, saved, tmp_path, monkeypatch, stage):
    dest = tmp_path / "w.npz"
    dest.write_bytes(saved.read_bytes())

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, stage, denied)
    with pytest.raises(PhaseMapFileError, match=r"cannot write path '.*w\.npz': Permission denied"):
        prog.save(dest)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["w.npz"] and dest.read_bytes() == saved.read_bytes()


# ---- what a program may hold, and what save refuses ---------------------------------------------------------


def _hand(target="clements-4", theta=0.5, gain=1.0, **replace):
    t = pc.get_target(target)
    lay = pc.layout(t.mesh, t.size, cell=t.cell)
    k, m = t.size, lay.n_mzi
    theta = np.pi / 4 if t.mesh == "fldzhyan" else theta  # static couplers: theta is theirs
    mp = MeshPhases(lay, np.full((1, m), theta), np.zeros((1, m)), np.zeros((1, k)))
    pm = PhaseMap(TileGrid(k, k, k), mp, np.full((1, k), 0.3), mp, np.full(1, gain)).replace(**replace)
    return t, pm


_REPORT = CompileReport((), types.MappingProxyType({}))


def test_program_checks_its_parts():
    t, pm = _hand()
    with pytest.raises(InvalidInputError, match=r"detection must be one of \('coherent', 'intensity'\); got 'bogus'"):
        pc.Program(t, pm, _REPORT, "hand", "bogus")
    with pytest.raises(InvalidTypeError, match="report must be a photocomp CompileReport; got dict"):
        pc.Program(t, pm, {}, "hand")
    with pytest.raises(InvalidTypeError, match="pipeline must be a str"):
        pc.Program(t, pm, _REPORT, None)
    with pytest.raises(MismatchError, match=r"phase_map tiles must have 2 to 3 modes for target 'clements-3'; got tiles of 4"):
        pc.Program(pc.get_target("clements-3"), pm, _REPORT, "hand")
    with pytest.raises(InvalidInputError, match=r"phase_map.v and phase_map.sigma must both be given .* got v=MeshPhases, sigma=NoneType"):
        pc.Program(t, pm.replace(sigma=None), _REPORT, "hand")
    with pytest.raises(MismatchError, match=r"phase_map.v must have target 'reck-4''s layout"):
        pc.Program(pc.get_target("reck-4"), pm, _REPORT, "hand")
    with pytest.raises(InvalidInputError, match=r"phase_map.gain must have shape \(1,\)"):
        pc.Program(t, pm.replace(gain=np.ones(3)), _REPORT, "hand")


@pytest.mark.parametrize(
    "theta, gain, match",
    [(2.0, 1.0, r"array 'v_theta' must be in \[0, pi/2\]"), (np.nan, 1.0, "array 'v_theta' must be finite"),
     (0.5, -2.0, "array 'gain' must be >= 0")],
)
def test_save_refuses_what_load_would_refuse(tmp_path, theta, gain, match):
    t, pm = _hand(theta=theta, gain=gain)
    prog = pc.Program(t, pm, _REPORT, "hand")
    with pytest.raises(InvalidInputError, match=r"cannot save to path '.*h\.npz': " + match):
        prog.save(tmp_path / "h.npz")
    assert os.listdir(tmp_path) == []


def test_save_refuses_metadata_that_is_not_json(tmp_path):
    t, pm = _hand()
    prog = pc.Program(t, pm, CompileReport((), types.MappingProxyType({"x": object()})), "hand")
    with pytest.raises(InvalidInputError, match="the metadata must be plain JSON"):
        prog.save(tmp_path / "h.npz")
    assert os.listdir(tmp_path) == []


def test_hand_program_round_trip(tmp_path):
    t, pm = _hand()
    prog = pc.Program(t, pm, _REPORT, "hand")
    prog.save(tmp_path / "h.npz")
    assert np.array_equal(pc.load(tmp_path / "h.npz").matrix(), prog.matrix())


def test_compile_report_from_dict_checks_types():
    good = {"records": [{"name": "a", "spec": "a(x=1)", "wall_s": 0.5, "metrics": {"m": [1, "x", None]}}],
            "summary": {"matrix_error": 0.1}}
    rep = CompileReport.from_dict(good)
    assert rep.to_dict() == good
    with pytest.raises(InvalidTypeError, match="report must be a dict"):
        CompileReport.from_dict([1, 2])
    with pytest.raises(InvalidInputError, match=r"report must have only the keys 'records' and 'summary'"):
        CompileReport.from_dict({"records": [], "other": 1})
    with pytest.raises(InvalidInputError, match=r"report\['records'\]\[0\] must be a dict with exactly the keys"):
        CompileReport.from_dict({"records": [{"name": "a"}]})
    with pytest.raises(InvalidInputError, match=r"'wall_s'\] must be a finite number >= 0"):
        CompileReport.from_dict({"records": [dict(good["records"][0], wall_s=float("nan"))]})
    with pytest.raises(InvalidTypeError, match=r"report\['summary'\]\['x'\] must hold plain JSON values"):
        CompileReport.from_dict({"summary": {"x": object()}})


def test_tile_grid_bounds():
    assert TileGrid(2**31 - 1, 1, 4).out_dim == 2**31 - 1
    with pytest.raises(InvalidInputError, match=r"TileGrid.out_dim must be an int in \[1, 2\*\*31 - 1\]; got 2147483648"):
        TileGrid(2**31, 1, 4)
    with pytest.raises(InvalidInputError, match="TileGrid.tile must be an int"):
        TileGrid(4, 4, 4.0)


@pytest.mark.parametrize("target", ["clements-2", "reck-2", "reck-3", "clements-3", "reck-5", "butterfly-2",
                                    "butterfly-8", "fldzhyan-2", "fldzhyan-5"])
def test_small_and_reck_meshes_round_trip(tmp_path, target):
    """The closed forms the reader checks before building a layout hold for every mesh kind and size."""
    t, pm = _hand(target, theta=0.7)
    prog = pc.Program(t, pm, _REPORT, "hand")
    prog.save(tmp_path / "s.npz")
    again = pc.load(tmp_path / "s.npz")
    assert again.phase_map.v.layout == again.phase_map.u.layout == prog.phase_map.v.layout
    for a, b in zip(jax.tree_util.tree_leaves(again.phase_map), jax.tree_util.tree_leaves(prog.phase_map)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["clements", "reck", "butterfly", "fldzhyan"])
def test_mesh_counts_closed_forms_match_the_layouts(kind):
    for n in ((2, 4, 8, 16, 32, 64, 1024) if kind == "butterfly" else range(2, 41)):
        lay = pc.layout(kind, n)
        assert pio.mesh_counts(kind, n) == (lay.n_mzi, lay.depth), n


def test_targets_keep_their_optional_fields_only_where_they_differ_from_the_defaults(prog, saved, tmp_path):
    """Files of default-physics targets carry no ``crossing_loss_db`` (they read the same in versions before the
    field existed); a target with another crossing loss writes and reads it back; a stored value of the wrong
    type is refused."""
    meta, arrays = _read(saved)
    assert "crossing_loss_db" not in meta["target"] and "cell" not in meta["target"]
    assert pc.load(saved).target.crossing_loss_db == pc.get_target("clements-4").crossing_loss_db
    lossy = dataclasses.replace(prog.target, crossing_loss_db=0.04)
    path = pc.Program(lossy, prog.phase_map, prog.report, prog.pipeline).save(tmp_path / "lossy.npz")
    assert _read(path)[0]["target"]["crossing_loss_db"] == 0.04
    assert pc.load(path).target == lossy
    bad = tmp_path / "bad.npz"
    _write(bad, _edit(meta, "target.crossing_loss_db", "0.1"), arrays, rehash=True)
    with pytest.raises(PhaseMapFileError, match=r"target\.crossing_loss_db"):
        pc.load(bad)
