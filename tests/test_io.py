"""Phase-map files: round trip, atomic writes, and every way a file can be refused."""

import hashlib
import json
import os
import pathlib
import pickle
import zipfile

import jax
import numpy as np
import pytest
from conftest import random_matrix

import photocomp as pc
from photocomp.core.errors import InvalidTypeError, PhaseMapFileError
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
        if meta.get("schema_version") == 2:
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
    assert meta["schema_version"] == pio.SCHEMA_VERSION == 2
    assert meta["meta_sha256"] == pio.meta_digest(meta)
    assert set(meta) == {"format", "schema_version", "convention", "phase_ranges", "units", "photocomp_version",
                         "target", "grid", "mesh", "pipeline", "detection", "report", "chip", "arrays", "meta_sha256"}
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
        ("schema_version", 3, "schema version 3.*Upgrade photocomp"),
        ("schema_version", "2", "schema version '2'.*reads \\[1, 2\\]"),
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
