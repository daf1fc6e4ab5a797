"""The pass engine: the pipeline-string parser, build-time checks, the pass contract, reports."""

import dataclasses
import json
import types

import numpy as np
import pytest
from conftest import BOUND

import photocomp as pc
from photocomp.compiler.pipeline import Pass, Pipeline, get_pass, parse_pipeline
from photocomp.compiler.state import CompileState
from photocomp.core import registry
from photocomp.core.errors import InvalidTypeError, PhotocompError, PipelineError, UnknownNameError

FULL = "validate | tile | svd | {mesh} | canonicalize | quantize(bits=10) | lower"


# ---- a probe pass with one parameter of every value type -----------------------------


@dataclasses.dataclass(frozen=True)
class Probe(Pass):
    """Test-only pass: records its parameters, changes nothing."""

    i: int = 0
    f: float = 0.0
    b: bool = False
    s: str = ""
    o: object = None

    name = "probe"

    def __call__(self, state):
        return state, {}


@pytest.fixture
def with_probe(monkeypatch):
    """Register :class:`Probe` under the name ``probe`` for this test only."""
    original = registry.entry_points

    def entry_points(group):
        eps = dict(original(group))
        if group == "photocomp.passes":
            eps["probe"] = types.SimpleNamespace(name="probe", load=lambda: Probe)
        return eps

    monkeypatch.setattr(registry, "entry_points", entry_points)


# ---- parsing valid text ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, names",
    [
        ("validate | tile | svd | clements | lower", ["validate", "tile", "svd", "clements", "lower"]),
        ("tile|svd|clements", ["tile", "svd", "clements"]),
        ("   tile  |\tsvd |  clements   ", ["tile", "svd", "clements"]),
        ("tile() | svd( ) | clements | lower()", ["tile", "svd", "clements", "lower"]),
        ("tile(size=4) | svd | reck | quantize(bits=8, scheme=linear) | lower(detection='intensity')",
         ["tile", "svd", "reck", "quantize", "lower"]),
        ('tile | svd | clements | lower(detection="coherent")', ["tile", "svd", "clements", "lower"]),
    ],
)
def test_parse_valid(text, names):
    p = Pipeline.parse(text)
    assert p.names() == names
    assert parse_pipeline(text) == p


def test_parse_parameter_values():
    p = Pipeline.parse("tile(size=4) | svd | clements | quantize(bits=+9, scheme='linear') | lower(detection=intensity)")
    tile, _, _, quant, lower = p.passes
    assert tile.size == 4 and isinstance(tile.size, int)
    assert quant.bits == 9 and quant.scheme == "linear"
    assert lower.detection == "intensity"


def test_parse_typed_values(with_probe):
    (p,) = Pipeline.parse("probe(i=-3, f=2.5e-3, b=true, s='a b | c', o=none)").passes
    assert p == Probe(i=-3, f=2.5e-3, b=True, s="a b | c", o=None)
    assert type(p.i) is int and type(p.f) is float and p.b is True
    (p,) = Pipeline.parse('probe(f=.5, b=FALSE, s="x,y(z)=")').passes
    assert p.f == 0.5 and p.b is False and p.s == "x,y(z)="
    (p,) = Pipeline.parse("probe(f=1., i=7, s=bare_word-2)").passes
    assert p.f == 1.0 and type(p.f) is float and p.i == 7 and p.s == "bare_word-2"
    (p,) = Pipeline.parse("probe(f=1e3)").passes
    assert p.f == 1000.0 and type(p.f) is float


@pytest.mark.parametrize(
    "text",
    [
        "validate | tile | svd | clements | lower",
        "tile(size=4) | svd | reck | canonicalize | quantize(bits=8, scheme=linear) | lower(detection=intensity)",
        "tile | svd | clements | quantize | lower(detection=coherent)",
        "  tile( ) |svd|clements  ",
    ],
)
def test_round_trip(text):
    p = Pipeline.parse(text)
    again = Pipeline.parse(str(p))
    assert again == p
    assert str(again) == str(p)


def test_round_trip_typed_values(with_probe):
    for probe in [
        Probe(i=-3, f=2.5e-3, b=True, s="a b | c"),
        Probe(f=1e-300, s="it's"),
        Probe(b=False, s='say "hi"'),
        Probe(i=12345678901234567890),
    ]:
        p = Pipeline((probe,))
        assert Pipeline.parse(str(p)) == p, str(p)


def test_round_trip_string_with_backslash(with_probe):
    p = Pipeline((Probe(s="C:\\temp"),))
    assert Pipeline.parse(str(p)) == p


def test_pass_spec_text():
    from photocomp.passes import Lower, Quantize, Tile

    assert Tile().spec() == "tile"
    assert Tile(size=4).spec() == "tile(size=4)"
    assert Quantize(bits=10, scheme="linear").spec() == "quantize(bits=10, scheme=linear)"
    assert Lower(detection="intensity").spec() == "lower(detection=intensity)"


# ---- malformed text -----------------------------------------------------------------------

POSITION = r"position \d+|at end"


@pytest.mark.parametrize(
    "text, where",
    [
        ("tile | svd | clements | quantize(bits=10", "at end"),
        ("tile | svd | clements | quantize(bits=10))", "position 41"),
        ("(tile | svd)", "position 0"),
        ("tile)", "position 4"),
        ("tile | svd | clements | lower |", "at end"),
        ("tile || svd", "position 6"),
        ("| tile", "position 0"),
        ("tile | svd | clements | quantize(bits=) | lower", "position 38"),
        ("tile | svd | clements | quantize(=3)", "position 33"),
        ("tile | svd | clements | quantize(bits 3)", "position 38"),
        ("tile(size=4,)", "position 12"),
        ("tile(size=4 size=5)", "position 12"),
        ("1abc", "position 0"),
        ("tile | 2svd", "position 7"),
        ("tile svd", "position 5"),
        ("tile; svd", "position 4"),
        ("tile | svd(size=[3])", "position 16"),
    ],
)
def test_malformed_text_raises_with_position(text, where):
    with pytest.raises(PipelineError, match=POSITION) as exc:
        Pipeline.parse(text)
    assert where in str(exc.value)
    assert repr(text) in str(exc.value)


def test_unexpected_character_after_space_is_located():
    with pytest.raises(PipelineError, match=r"'\$' at position 5"):
        Pipeline.parse("tile $")


def test_duplicate_parameter():
    with pytest.raises(PipelineError, match="'bits' given twice"):
        Pipeline.parse("tile | svd | clements | quantize(bits=1,bits=2)")


def test_duplicate_parameter_has_position():
    with pytest.raises(PipelineError, match=POSITION):
        Pipeline.parse("tile | svd | clements | quantize(bits=1,bits=2)")


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_text(text):
    with pytest.raises(PipelineError, match="at least one pass"):
        Pipeline.parse(text)


@pytest.mark.parametrize("bad", [None, 3, ["tile"], b"tile"])
def test_parse_rejects_non_strings(bad):
    with pytest.raises(InvalidTypeError, match="pipeline must be a string"):
        parse_pipeline(bad)


def test_unknown_pass_name():
    with pytest.raises(UnknownNameError, match="'frobnicate'") as exc:
        Pipeline.parse("tile | frobnicate | svd")
    assert "clements" in str(exc.value)  # lists the known passes


def test_unknown_parameter():
    with pytest.raises(PipelineError, match="'bitz'") as exc:
        Pipeline.parse("tile | svd | clements | quantize(bitz=3)")
    assert "bits" in str(exc.value)
    with pytest.raises(PipelineError, match="'size'"):
        Pipeline.parse("tile | svd(size=3)")


@pytest.mark.parametrize(
    "text, error, match",
    [
        ("tile | svd | clements | quantize(bits=0)", PipelineError, "bits.*got 0"),
        ("tile | svd | clements | quantize(bits=33)", PipelineError, "bits.*got 33"),
        ("tile | svd | clements | quantize(bits=1.5)", PipelineError, "bits must be an integer"),
        ("tile | svd | clements | quantize(bits=true)", PipelineError, "bits must be an integer"),
        ("tile | svd | clements | quantize(bits='8')", PipelineError, "bits must be an integer"),
        ("tile(size=1)", PipelineError, "tile size.*got 1"),
        ("tile(size=-4)", PipelineError, "tile size"),
        ("tile(size=4.0)", PipelineError, "tile size must be an integer"),
        ("tile | svd | clements | quantize(scheme=foo)", PipelineError, "scheme.*'foo'"),
        ("tile | svd | clements | lower(detection=foo)", PipelineError, "detection.*'foo'"),
    ],
)
def test_invalid_parameter_values(text, error, match):
    with pytest.raises(error, match=match):
        Pipeline.parse(text)


@pytest.mark.parametrize("text", ["tile | svd | clements | quantize(scheme=foo)", "tile | svd | clements | lower(detection=foo)"])
def test_invalid_enum_values_are_pipeline_errors(text):
    with pytest.raises(PipelineError, match="invalid parameters for pass"):
        Pipeline.parse(text)


# ---- build-time requirement checks -------------------------------------------------------------


def test_requirements_checked_at_build():
    with pytest.raises(PipelineError, match="tile") as exc:
        Pipeline.parse("svd | clements")
    assert "'svd'" in str(exc.value) and "tiled" in str(exc.value)
    with pytest.raises(PipelineError, match="clements.*reck|reck.*clements"):
        Pipeline.parse("tile | svd | quantize")
    with pytest.raises(PipelineError, match="'lower'"):
        Pipeline.parse("lower | tile | svd | clements")


def test_pipeline_from_pass_objects():
    from photocomp.passes import SVD, Clements, Lower, Tile

    p = Pipeline((Tile(), SVD(), Clements(), Lower()))
    assert p == Pipeline.parse("tile | svd | clements | lower")
    assert hash(p) == hash(Pipeline.parse("tile | svd | clements | lower"))
    assert p.provides >= {"tiled", "svd", "phases", "lowered"}
    assert Pipeline([Tile(), SVD()]).passes == (Tile(), SVD())  # lists become tuples
    with pytest.raises(PipelineError, match="tile"):
        Pipeline((SVD(), Clements()))
    with pytest.raises(InvalidTypeError, match="element 1"):
        Pipeline((Tile(), "svd"))


def test_get_pass():
    q = get_pass("quantize", bits=6)
    assert q.bits == 6 and q.name == "quantize"
    with pytest.raises(UnknownNameError, match="'nope'"):
        get_pass("nope")


# ---- the pass contract, over every registered pass ---------------------------------------------

ALL_PASSES = pc.available_passes()


def test_available_passes():
    assert set(ALL_PASSES) >= {"validate", "tile", "svd", "clements", "reck", "canonicalize", "quantize", "lower"}
    assert ALL_PASSES == sorted(ALL_PASSES)


def _states(target, text, w=None, until=None):
    """Input state of every pass of ``text`` on ``target``: {pass name: state before it}; with ``until``, the
    passes stop before the pass of that name (whose input is the last state kept)."""
    w = np.random.default_rng(31).standard_normal((5, 3)) + 0.5j if w is None else w
    tgt = pc.get_target(target)
    state = CompileState(weights=w.astype(np.complex128), target=tgt, provided=frozenset({"weights"}))
    out = {}
    for p in Pipeline.parse(text).passes:
        out[p.name] = state
        if p.name == until:
            return out
        new, _ = p(state)
        state = new.replace(provided=new.provided | p.provides)
    out["__final__"] = state
    return out


@pytest.fixture(scope="module")
def pass_inputs():
    states = _states("clements-4", FULL.format(mesh="clements"))
    states["reck"] = _states("reck-4", FULL.format(mesh="reck"))["reck"]
    # the unitary pass factors scaled unitaries: its input is a 3 x 3 one, padded on clements-4
    u3 = 2.5 * pc.haar_unitary(3, np.random.default_rng(32))
    unitary = _states("clements-4", FULL.format(mesh="clements").replace("| svd |", "| unitary |"), u3)
    states["unitary"] = unitary["unitary"]
    states["clements"] = unitary["clements"]  # the decomposition's unitary branch (its svd branch: reck)
    # the fitted meshes' inputs: the fits themselves run once, in the contract test
    states["butterfly"] = _states("butterfly-4", FULL.format(mesh="butterfly"), until="butterfly")["butterfly"]
    states["fldzhyan"] = _states("fldzhyan-4", FULL.format(mesh="fldzhyan"), until="fldzhyan")["fldzhyan"]
    states["crossbar"] = _states("crossbar-4", FULL.replace("| svd | {mesh} |", "| crossbar |"))["crossbar"]
    return states


def _arrays(state):
    """Every array reachable from a CompileState, with a path for messages."""
    import jax

    leaves = {"weights": state.weights, "blocks": state.blocks, "dense": state.dense, "matrix": state.matrix}
    if state.svd is not None:
        leaves.update({f"svd[{i}]": a for i, a in enumerate(state.svd)})
    if state.phase_map is not None:
        for path, leaf in jax.tree_util.tree_flatten_with_path(state.phase_map)[0]:
            leaves[f"phase_map{jax.tree_util.keystr(path)}"] = leaf
    return {k: v for k, v in leaves.items() if v is not None}


@pytest.mark.parametrize("name", ALL_PASSES)
def test_pass_contract(name, pass_inputs):
    p = get_pass(name)
    cls = type(p)
    # a frozen, hashable dataclass with its declarations
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    assert isinstance(p, Pass)
    assert p.name == name
    assert isinstance(cls.requires, frozenset) and isinstance(cls.provides, frozenset) and cls.provides
    assert hash(p) == hash(get_pass(name)) and p == get_pass(name)
    for f in dataclasses.fields(p):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(p, f.name, f.default)
    assert (cls.__doc__ or "").strip()

    # passes outside the standard pipeline (registered later) run on the fully compiled state
    state = pass_inputs.get(name, pass_inputs["__final__"])
    assert p.requires <= state.provided, f"no test input state provides {sorted(p.requires)} for {name!r}"
    before = {k: np.array(v, copy=True) for k, v in _arrays(state).items()}
    for v in _arrays(state).values():  # any in-place write now raises
        if isinstance(v, np.ndarray):
            v.flags.writeable = False
    result = p(state)
    assert isinstance(result, tuple) and len(result) == 2
    new_state, metrics = result
    assert isinstance(new_state, CompileState)
    # the input is unchanged
    after = _arrays(state)
    assert set(after) == set(before)
    for k in before:
        np.testing.assert_array_equal(np.asarray(after[k]), before[k], err_msg=f"{name} modified {k}")
    # metrics: a dict of JSON values
    assert isinstance(metrics, dict)
    json.dumps(metrics)
    for k, v in metrics.items():
        assert isinstance(k, str) and isinstance(v, (bool, int, float, str)), (k, type(v))


def test_passes_share_the_program_matrix_they_simulate(monkeypatch):
    """Each pass keeps the program matrix it builds; the next ones reuse it, and no stale matrix survives."""
    from photocomp.sim import ideal as simulate

    real = simulate.tiles_and_meshes_np
    calls = []

    def counted(pm, tiles=None):
        calls.append(pm)
        return real(pm, tiles)

    monkeypatch.setattr(simulate, "tiles_and_meshes_np", counted)
    w = np.random.default_rng(5).standard_normal((6, 7))
    prog = pc.compile(w, target="clements-4", pipeline=FULL.format(mesh="clements"))
    # the decomposition's check and quantize only: the decomposition emits canonical phases, so canonicalize
    # changes no tile and keeps the check's matrix; quantize's before and lower reuse what the pass before
    # kept, and the summary's mesh fidelity reads the mesh matrices quantize kept
    assert len(calls) == 2
    np.testing.assert_array_equal(prog.dense, simulate.program_matrix_np(prog.phase_map))
    metrics = {r.name: dict(r.metrics) for r in prog.report.records}
    assert metrics["lower"]["matrix_error"] == metrics["quantize"]["matrix_error"]
    assert metrics["canonicalize"]["max_matrix_change"] == 0.0 and metrics["canonicalize"]["tiles_changed"] == 0

    state = _states("clements-4", FULL.format(mesh="clements"))["__final__"]
    assert state.matrix is not None and state.program_matrix() is state.matrix
    moved = state.replace(phase_map=state.phase_map.replace(gain=2 * np.asarray(state.phase_map.gain)))
    assert moved.matrix is None  # a new phase map drops the matrix kept for the old one
    np.testing.assert_allclose(moved.program_matrix(), 2 * state.matrix, rtol=0, atol=1e-13)
    assert state.replace(records=()).matrix is state.matrix


def test_require_names_the_provider():
    state = CompileState(weights=np.ones((2, 2), complex), target=pc.get_target("clements-4"))
    with pytest.raises(KeyError, match="'tile'"):
        state.require("blocks", "tile")
    with pytest.raises(KeyError, match="'tile'"):
        get_pass("svd")(state)


# ---- running: records and callbacks ---------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled_with_calls():
    calls = []
    w = np.random.default_rng(32).standard_normal((6, 4))
    prog = pc.compile(w, "clements-4", FULL.format(mesh="clements"), callback=lambda *a: calls.append(a))
    return prog, calls


def test_report_has_one_record_per_pass(compiled_with_calls):
    prog, _ = compiled_with_calls
    names = Pipeline.parse(FULL.format(mesh="clements")).names()
    recs = prog.report.records
    assert [r.name for r in recs] == names
    assert all(r.wall_s >= 0.0 for r in recs)
    assert prog.report.total_s == pytest.approx(sum(r.wall_s for r in recs), rel=BOUND["recomputed"], abs=0.0)
    assert recs[5].spec == "quantize(bits=10)"
    assert prog.report["quantize"] is recs[5]
    with pytest.raises(KeyError, match="no pass named 'reck'"):
        prog.report["reck"]
    json.dumps(prog.report.to_dict())
    assert "quantize(bits=10)" in prog.report.table()


def test_callback_called_once_per_pass_in_order(compiled_with_calls):
    prog, calls = compiled_with_calls
    assert [c[0].name for c in calls] == [r.name for r in prog.report.records]
    assert [c[0].spec() for c in calls] == prog.pipeline.split(" | ")
    for i, (p, rec, state) in enumerate(calls):
        assert rec is prog.report.records[i] and rec.name == p.name
        assert state.records[-1] is rec and len(state.records) == i + 1
        assert p.provides <= state.provided


def test_pipeline_run_directly():
    seen = []
    state = CompileState(weights=np.eye(3, dtype=complex), target=pc.get_target("clements-4"),
                         provided=frozenset({"weights"}))
    out = Pipeline.parse("validate | tile | svd").run(state, callback=lambda p, r, s: seen.append(p.name))
    assert seen == ["validate", "tile", "svd"]
    assert [r.name for r in out.records] == seen
    assert {"validated", "tiled", "svd"} <= out.provided
    assert state.records == () and state.svd is None  # the input state is untouched


def test_compile_appends_lower_and_requires_a_decomposition():
    w = np.eye(3)
    prog = pc.compile(w, "clements-4", "tile | svd | clements")
    assert prog.report.records[-1].name == "lower"
    assert prog.pipeline.endswith("| lower")
    with pytest.raises(PipelineError, match="decomposition"):
        pc.compile(w, "clements-4", "validate | tile | svd")
    with pytest.raises(InvalidTypeError, match="pipeline must be"):
        pc.compile(w, "clements-4", 42)


# ---- presets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["pace-64", "tianshu-128", "clements-5", "reck-5"])
def test_presets(target):
    from photocomp.passes.presets import preset

    t = pc.get_target(target)
    p = preset(target)
    assert isinstance(p, Pipeline)
    assert p == Pipeline.parse(t.default_pipeline())
    assert p.names() == ["validate", "tile", "svd", t.mesh, "canonicalize", "quantize", "lower"]
    assert p.passes[5].bits == t.dac_bits
    q = preset(t, quantize=False)
    assert "quantize" not in q.names() and t.mesh in q.names()


def test_preset_is_the_compile_default():
    prog = pc.compile(np.diag([1.0, 0.5, 0.25]), "clements-4")
    assert prog.pipeline == str(pc.get_target("clements-4").default_pipeline())
    # a scaled unitary that fits one tile takes the unitary preset
    prog = pc.compile(3 * np.eye(3), "clements-4")
    assert prog.pipeline == str(pc.get_target("clements-4").default_pipeline("unitary"))
    assert prog.pipeline == str(pc.passes.preset("clements-4", circuit="unitary"))
    assert isinstance(prog, pc.Program) and issubclass(PipelineError, PhotocompError)
