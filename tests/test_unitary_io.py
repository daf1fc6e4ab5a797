"""Phase-map files of unitary programs (schema version 3), and the circuit field of every file.

A unitary file holds one mesh per tile (the ``u_*`` arrays) and the gains, a
calibrated one only the U heater groups' settings and a unitary chip. The
reader refuses any array set other than the circuit's, naming the arrays
missing or extra, and still reads version 2 (svd) files as before.
"""

from __future__ import annotations

import hashlib
import json
import types

import jax
import numpy as np
import pytest

import photocomp as pc
from photocomp.cli import main as cli_main
from photocomp.core.errors import InvalidInputError, PhaseMapFileError
from photocomp.core.ir import CompileReport, PhaseMap, TileGrid
from photocomp.core.phases import MeshPhases
from photocomp.hardware.chip import heater_groups
from photocomp.hardware.chipsim import settings_from_program
from photocomp.io import program_file as pio

UNITARY_PIPELINE = "validate | tile | unitary | clements | canonicalize | quantize(bits=10) | lower"
SVD_PIPELINE = "validate | tile | svd | clements | canonicalize | quantize(bits=10) | lower"
U_ARRAYS = {"u_theta", "u_phi", "u_out_phase", "gain", "mode_pairs", "columns"}
SVD_ONLY = ["sigma", "v_out_phase", "v_phi", "v_theta"]
X = np.linspace(-1.0, 1.0, 8) + 0.5j * np.cos(np.arange(8.0))


def _on_chip(prog, seed):
    """``prog`` on a chip of its circuit with the ideal-chip settings (a calibrated program, no optimisation)."""
    chip = pc.fabricate(prog.target, seed, circuit=prog.circuit)
    settings = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), settings_from_program(prog.phase_map))
    return prog.with_chip(chip, settings)


@pytest.fixture(scope="module")
def uprog():
    """An 8 x 8 matrix of four scaled unitary 4 x 4 blocks on clements-4: a unitary program of 2 x 2 tiles."""
    r = np.random.default_rng(80)
    blocks = [[pc.haar_unitary(4, r), 2.0 * pc.haar_unitary(4, r)], [0.5 * pc.haar_unitary(4, r), pc.haar_unitary(4, r)]]
    prog = pc.compile(np.block(blocks), "clements-4", UNITARY_PIPELINE)
    assert prog.circuit == "unitary" and prog.n_tiles == 4
    return prog


@pytest.fixture(scope="module")
def ucal(uprog):
    cal = _on_chip(uprog, 11)
    assert cal.chip.circuit == "unitary" and cal.settings.circuit == "unitary"
    return cal


@pytest.fixture(scope="module")
def sprog():
    """An svd program of the same shape and target."""
    w = np.random.default_rng(81).standard_normal((8, 8))
    return pc.compile(w, "clements-4", SVD_PIPELINE)


@pytest.fixture(scope="module")
def files(uprog, ucal, sprog, tmp_path_factory):
    folder = tmp_path_factory.mktemp("unitary_io")
    paths = {"u": folder / "u.npz", "ucal": folder / "ucal.npz", "s": folder / "s.npz", "scal": folder / "scal.npz"}
    uprog.save(paths["u"])
    ucal.save(paths["ucal"])
    sprog.save(paths["s"])
    _on_chip(sprog, 12).save(paths["scal"])
    return paths


def _read(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(bytes(arrays.pop("__meta__")).decode("utf-8")), arrays


def _write(path, meta, arrays, *, records=False, digest=False):
    """Write an archive as given; ``records`` recomputes the array records and ``digest`` the metadata digest
    (what a deliberate edit would do), so that only the checks of structure and values can refuse it."""
    meta = json.loads(json.dumps(meta))
    if records:
        meta["arrays"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype),
                              "sha256": hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()}
                          for k, v in arrays.items()}
    if digest:
        meta["meta_sha256"] = pio.meta_digest(meta)
    np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8), **arrays)
    return path


def _as_version_2(meta):
    """The record the version-2 writer wrote for the same program: no ``circuit`` field, its own digest."""
    meta = {k: v for k, v in meta.items() if k != "circuit"}
    meta["schema_version"] = 2
    meta["meta_sha256"] = pio.meta_digest(meta)
    return meta


def _same(a, b):
    """Equal programs: circuit, grid, phases, settings and chip; forward bit-identical."""
    x_in = X[: a.shape[1]]
    assert a.circuit == b.circuit and a.phase_map.grid == b.phase_map.grid and a.detection == b.detection
    assert a.target == b.target and a.pipeline == b.pipeline and a.report.to_dict() == b.report.to_dict()
    for x, y in zip(jax.tree_util.tree_leaves(a.phase_map), jax.tree_util.tree_leaves(b.phase_map), strict=True):
        assert x.dtype == y.dtype == np.float64 and np.array_equal(x, y)
    assert (a.chip is None) == (b.chip is None)
    if a.chip is not None:
        assert a.chip.circuit == b.chip.circuit and pio.chip_fingerprint(a.chip) == pio.chip_fingerprint(b.chip)
        for x, y in zip(jax.tree_util.tree_leaves(a.settings), jax.tree_util.tree_leaves(b.settings), strict=True):
            assert np.array_equal(x, y)
    assert np.array_equal(np.asarray(a.forward(x_in)), np.asarray(b.forward(x_in)))
    assert np.array_equal(a.matrix(), b.matrix())


# ---- round trips -----------------------------------------------------------------------------------------


def test_compiled_unitary_program_round_trip(uprog, files):
    again = pc.load(files["u"])
    assert again.phase_map.v is None and again.phase_map.sigma is None and again.chip is None
    assert again.phase_map.layout == uprog.phase_map.layout
    _same(again, uprog)


def test_calibrated_unitary_program_round_trip(ucal, files):
    again = pc.load(files["ucal"])
    assert again.chip.circuit == "unitary" and set(again.chip.coupler_in) == {"u"}
    assert again.settings.circuit == "unitary" and again.settings.v_int is None and again.settings.att is None
    _same(again, ucal)
    assert np.array_equal(again.drives(), ucal.drives())


def test_unitary_files_follow_the_schema(uprog, ucal, files):
    meta, arrays = _read(files["u"])
    assert meta["schema_version"] == pio.SCHEMA_VERSION == 3 and meta["circuit"] == "unitary"
    assert meta["meta_sha256"] == pio.meta_digest(meta) and meta["chip"] is None
    assert set(arrays) == set(meta["arrays"]) == U_ARRAYS == set(pio.circuit_arrays("unitary"))
    m = 4 * 3 // 2
    assert {k: a.shape for k, a in arrays.items()} == {"u_theta": (4, m), "u_phi": (4, m), "u_out_phase": (4, 4),
                                                       "gain": (4,), "mode_pairs": (m,), "columns": (m,)}
    np.testing.assert_array_equal(arrays["gain"], uprog.phase_map.gain)  # tiles in row-major order
    assert np.allclose(arrays["gain"], [1.0, 2.0, 0.5, 1.0])
    meta, arrays = _read(files["ucal"])
    cal = {f"cal_{g}" for g in heater_groups("unitary")} | {"cal_gain", "drives_mw"}
    assert set(arrays) == U_ARRAYS | cal == set(pio.circuit_arrays("unitary", calibrated=True))
    assert arrays["drives_mw"].shape == (4, 2 * m + 4) == (4, ucal.chip.n_heaters)
    assert meta["chip"] == {"seed": 11, "fingerprint": pio.chip_fingerprint(ucal.chip)}
    assert len(arrays) + 1 <= pio.MAX_MEMBERS
    svd_meta, svd_arrays = _read(files["scal"])
    assert svd_meta["circuit"] == "svd" and set(svd_arrays) == set(pio.circuit_arrays("svd", calibrated=True))


def test_the_circuit_is_documented():
    doc = pio.__doc__
    for fact in ("``circuit``", '``"unitary"``', "heater_groups(circuit)", "``2 n_mzi + K``",
                 "``schema_version``: ``3``", "Schema version 2 has no ``circuit`` field", "circuit=circuit"):
        assert fact in doc, fact


# ---- version 2 files -----------------------------------------------------------------------------------------


def test_version_2_svd_files_still_load(sprog, files, tmp_path):
    for key in ("s", "scal"):
        meta, arrays = _read(files[key])
        path = _write(tmp_path / f"{key}_v2.npz", _as_version_2(meta), arrays)
        again = pc.load(path)
        assert again.circuit == "svd"
        _same(again, pc.load(files[key]))
    assert np.array_equal(np.asarray(pc.load(tmp_path / "s_v2.npz").forward(X)), np.asarray(sprog.forward(X)))


def test_version_2_files_have_no_circuit(files, tmp_path):
    meta, arrays = _read(files["s"])
    v2 = _as_version_2(meta)
    path = _write(tmp_path / "v2.npz", {**v2, "circuit": "svd"}, arrays, digest=True)
    with pytest.raises(PhaseMapFileError, match=r"unknown fields \['circuit'\]; schema version 2"):
        pc.load(path)
    # a version 2 file is an svd program: unitary arrays under version 2 are refused, named
    meta, arrays = _read(files["u"])
    path = _write(tmp_path / "v2u.npz", _as_version_2(meta), arrays)
    with pytest.raises(PhaseMapFileError, match=r"svd program .*missing \['sigma', 'v_out_phase', 'v_phi', 'v_theta'\]"):
        pc.load(path)


# ---- the circuit field -------------------------------------------------------------------------------------


def test_tampered_circuit_field_is_refused(files, tmp_path):
    meta, arrays = _read(files["u"])
    path = tmp_path / "circuit.npz"
    _write(path, {**meta, "circuit": "svd"}, arrays)  # the digest kept: the edit is noticed
    with pytest.raises(PhaseMapFileError, match=r"circuit\.npz': the metadata fails its SHA-256 check.*circuit"):
        pc.load(path)
    _write(path, {**meta, "circuit": "svd"}, arrays, digest=True)  # a deliberate edit: the arrays disagree
    with pytest.raises(PhaseMapFileError, match=r"differ from the arrays of this svd program .*"
                                                r"missing \['sigma', 'v_out_phase', 'v_phi', 'v_theta'\]"):
        pc.load(path)
    for value, shown in (("bogus", "string 'bogus'"), (None, "null None"), (["unitary"], "array"), (1, "integer 1")):
        _write(path, {**meta, "circuit": value}, arrays, digest=True)
        with pytest.raises(PhaseMapFileError, match=r"field 'circuit' must be one of \('svd', 'unitary', 'crossbar'\); got "
                                                    + shown):
            pc.load(path)
    _write(path, {k: v for k, v in meta.items() if k != "circuit"}, arrays, digest=True)
    with pytest.raises(PhaseMapFileError, match=r"the metadata lacks the fields \['circuit'\] \(schema version 3\)"):
        pc.load(path)


def test_unitary_file_with_svd_arrays_is_refused(files, tmp_path):
    meta, arrays = _read(files["u"])
    _, svd = _read(files["s"])
    extra = {**arrays, **{k: svd[k] for k in SVD_ONLY}}
    path = tmp_path / "extra.npz"
    _write(path, meta, extra)  # the records as they were
    with pytest.raises(PhaseMapFileError, match=r"array set .* differs from its record .*extra \['sigma', "
                                                r"'v_out_phase', 'v_phi', 'v_theta'\] for a unitary program"):
        pc.load(path)
    _write(path, meta, extra, records=True, digest=True)  # records rewritten to match
    with pytest.raises(PhaseMapFileError, match=r"arrays of this unitary program .*extra \['sigma', 'v_out_phase', "
                                                r"'v_phi', 'v_theta'\]"):
        pc.load(path)
    # one missing array, named
    short = {k: v for k, v in arrays.items() if k != "u_phi"}
    _write(path, meta, short, records=True, digest=True)
    with pytest.raises(PhaseMapFileError, match=r"unitary program .*\(missing \['u_phi'\]\)"):
        pc.load(path)
    # a calibrated unitary file with the svd heater groups' settings added
    meta, arrays = _read(files["ucal"])
    _, scal = _read(files["scal"])
    _write(path, meta, {**arrays, "cal_att": scal["cal_att"], "cal_v_int": scal["cal_v_int"]}, records=True, digest=True)
    with pytest.raises(PhaseMapFileError, match=r"unitary program .*extra \['cal_att', 'cal_v_int'\]"):
        pc.load(path)


def test_svd_file_claiming_unitary_is_refused(files, tmp_path):
    meta, arrays = _read(files["s"])
    path = tmp_path / "claim.npz"
    _write(path, {**meta, "circuit": "unitary"}, arrays, digest=True)
    with pytest.raises(PhaseMapFileError, match=r"arrays of this unitary program .*extra \['sigma', 'v_out_phase', "
                                                r"'v_phi', 'v_theta'\]"):
        pc.load(path)
    # pruned to the unitary set: its program would load, but it is a different program than the file held
    pruned = {k: v for k, v in arrays.items() if k in U_ARRAYS}
    _write(path, {**meta, "circuit": "unitary"}, pruned, records=True, digest=True)
    assert pc.load(path).circuit == "unitary"
    # calibrated: the drives have the svd chip's heaters, and the chip is an svd chip
    meta, arrays = _read(files["scal"])
    keep = set(pio.circuit_arrays("unitary", calibrated=True))
    pruned = {k: v for k, v in arrays.items() if k in keep}
    _write(path, {**meta, "circuit": "unitary"}, pruned, records=True, digest=True)
    with pytest.raises(PhaseMapFileError, match=r"arrays\.drives_mw\.shape' must be \[4, 16\] .*got array \[4, 36\]"):
        pc.load(path)
    m, k = 6, 4
    pruned["drives_mw"] = arrays["drives_mw"][:, 2 * m + 2 * k:]  # the U heaters' columns of the svd chip
    _write(path, {**meta, "circuit": "unitary"}, pruned, records=True, digest=True)
    with pytest.raises(PhaseMapFileError, match=r"the chip \(seed 12\) re-samples differently .*unitary circuit"):
        pc.load(path)


# ---- shapes and values ------------------------------------------------------------------------------------------


def test_unitary_shapes_are_checked_before_anything_is_built(files, tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(pio, "mesh_layout", lambda *a: built.append(a) or pytest.fail("layout built"))
    monkeypatch.setattr(pio, "fabricate", lambda *a, **k: built.append(a) or pytest.fail("chip built"))
    meta, arrays = _read(files["ucal"])
    path = tmp_path / "shape.npz"
    for name, shape in (("u_theta", (4, 7)), ("u_out_phase", (3, 4)), ("cal_u_ext", (4, 4)), ("drives_mw", (4, 40))):
        _write(path, meta, {**arrays, name: np.zeros(shape)}, records=True, digest=True)
        with pytest.raises(PhaseMapFileError, match=rf"arrays\.{name}\.shape' must be \[\d+(, \d+)?\] \(from the grid"):
            pc.load(path)
    grid = {**meta["grid"], "out_dim": 4}  # two tiles: every (4, ...) array disagrees
    _write(path, {**meta, "grid": grid}, arrays, digest=True)
    with pytest.raises(PhaseMapFileError, match=r"arrays\.\w+\.shape' must be \[2"):
        pc.load(path)
    assert built == []


@pytest.mark.parametrize(
    "name, value, match",
    [("u_theta", 2.0, r"array 'u_theta' must be in \[0, pi/2\]"), ("u_phi", np.nan, "array 'u_phi' must be finite"),
     ("u_out_phase", 1e6, "array 'u_out_phase' must be a phase with"), ("gain", -1.0, "array 'gain' must be >= 0"),
     ("cal_u_int", np.inf, "array 'cal_u_int' must be finite"), ("cal_u_out", -1e5, "array 'cal_u_out' must be a phase"),
     ("drives_mw", 1e9, r"array 'drives_mw' must be in \[0, ")],
)
def test_unitary_values_are_checked_as_for_svd(files, tmp_path, name, value, match):
    meta, arrays = _read(files["ucal"])
    a = arrays[name].copy()
    a.flat[1] = value
    path = _write(tmp_path / "value.npz", meta, {**arrays, name: a}, records=True, digest=True)
    with pytest.raises(PhaseMapFileError, match=r"value\.npz': " + match):
        pc.load(path)


def test_save_refuses_unitary_values_the_reader_would_refuse(tmp_path):
    t = pc.get_target("clements-4")
    lay = pc.layout("clements", 4)
    u = MeshPhases(lay, np.full((1, 6), 2.0), np.zeros((1, 6)), np.zeros((1, 4)))
    prog = pc.Program(t, PhaseMap.unitary(TileGrid(4, 4, 4), u, np.ones(1)), CompileReport((), types.MappingProxyType({})),
                      "hand")
    with pytest.raises(InvalidInputError, match=r"cannot save to path '.*h\.npz': array 'u_theta' must be in \[0, pi/2\]"):
        prog.save(tmp_path / "h.npz")
    assert list(tmp_path.iterdir()) == []
    u = MeshPhases(lay, np.full((1, 6), 0.3), np.zeros((1, 6)), np.zeros((1, 4)))
    ok = pc.Program(t, PhaseMap.unitary(TileGrid(4, 4, 4), u, np.ones(1)),
                    CompileReport((), types.MappingProxyType({})), "hand")
    ok.save(tmp_path / "h.npz")
    assert np.array_equal(pc.load(tmp_path / "h.npz").matrix(), ok.matrix())


def test_identity_compiles_saves_and_loads_as_unitary(tmp_path):
    prog = pc.compile(np.eye(4), "clements-4")
    assert prog.circuit == "unitary"
    prog.save(tmp_path / "eye.npz")
    _same(pc.load(tmp_path / "eye.npz"), prog)


# ---- the CLI ---------------------------------------------------------------------------------------------------


def test_inspect_prints_a_unitary_file(files, capsys):
    assert cli_main(["inspect", str(files["ucal"])]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and out.err == ""
    assert "clements-4" in out.out and "8x8" in out.out and "unitary" in out.out and "chip seed 11" in out.out
