"""Hostile input to the pipeline parser, the pipeline checks and target-name resolution.

Every input either gives a valid Pipeline / Target or one of photocomp's typed
errors with a bounded message; a pass after ``lower`` that reads or changes
what it folded is refused when the pipeline is built.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
from conftest import BOUND
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import photocomp as pc
from photocomp.compiler.pipeline import (
    LOWERED,
    MAX_NUMBER_CHARS,
    MAX_PIPELINE_CHARS,
    Pass,
    Pipeline,
    get_pass,
    parse_pipeline,
)
from photocomp.core import registry
from photocomp.core.errors import (
    InvalidInputError,
    InvalidTypeError,
    PhotocompError,
    PipelineError,
    UnknownNameError,
)
from photocomp.core.metrics import np_matrix_error
from photocomp.core.registry import quote
from photocomp.core.target import SIZE_RANGE, get_target
from photocomp.passes import SVD, Canonicalize, Clements, Lower, Quantize, Tile, Validate

MESSAGE_MAX = 500
"""Longest error message any input may produce (characters)."""

PIPELINE_ERRORS = (PipelineError, InvalidTypeError, UnknownNameError)
TARGET_ERRORS = (InvalidInputError, InvalidTypeError, UnknownNameError)
PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HEAD = "tile | svd | clements"


def _bounded(exc_info) -> str:
    message = str(exc_info.value)
    assert len(message) < MESSAGE_MAX, f"{len(message)}-character message: {message[:200]}"
    return message


# ---- 1. nothing after lower may touch what it folded ---------------------------------------------------

AFTER_LOWER = [
    ("tile | svd | clements | lower | quantize(bits=4)", "quantize", 4),
    ("tile | svd | clements | lower | canonicalize", "canonicalize", 4),
    ("tile | svd | clements | lower | canonicalize | quantize", "canonicalize", 4),
    ("tile | svd | clements | lower | clements", "clements", 4),
    ("tile | svd | clements | lower | svd", "svd", 4),
    ("tile | svd | clements | lower | tile | svd | clements", "tile", 4),
    ("validate | tile | svd | clements | lower | validate | quantize(bits=10, scheme=linear)", "quantize", 6),
]


@pytest.mark.parametrize("text, culprit, position", AFTER_LOWER)
def test_pass_after_lower_is_refused_by_compile(text, culprit, position):
    w = np.random.default_rng(0).standard_normal((4, 4))
    with pytest.raises(PipelineError, match="'lower' must come last") as exc:
        pc.compile(w, target="clements-4", pipeline=text)
    message = _bounded(exc)
    assert quote(text) in message  # names the pipeline (its first 80 characters) ...
    assert f"pass {culprit!r} (position {position})" in message  # ... and the offending pass


@pytest.mark.parametrize("text, culprit, position", AFTER_LOWER)
def test_pass_after_lower_is_refused_by_parse(text, culprit, position):
    with pytest.raises(PipelineError, match=f"{culprit!r} \\(position {position}\\) follows 'lower'"):
        pc.Pipeline.parse(text)
    with pytest.raises(PipelineError, match="must come last"):
        parse_pipeline(text)


def test_second_lower_is_refused():
    with pytest.raises(PipelineError, match=r"'lower' \(position 4\) lowers the program again.*must come last"):
        Pipeline.parse("tile | svd | clements | lower | lower(detection=intensity)")


def test_pass_after_lower_is_refused_from_pass_objects():
    with pytest.raises(PipelineError, match="'quantize'.*follows 'lower'.*must come last"):
        Pipeline((Tile(), SVD(), Clements(), Lower(), Quantize(bits=4)))
    with pytest.raises(PipelineError, match="'canonicalize'.*must come last"):
        Pipeline([Tile(), SVD(), Clements(), Lower(), Canonicalize()])


@pytest.mark.slow  # the first compile in a process pays ~15 s of XLA compilation
def test_validate_after_lower_is_allowed_and_the_program_is_consistent():
    """An analysis pass (requires the weights only, provides nothing lower folded) may follow lower."""
    w = np.random.default_rng(1).standard_normal((5, 3))
    prog = pc.compile(w, "clements-4", "tile | svd | clements | quantize(bits=4) | lower | validate")
    assert prog.report.records[-1].name == "validate"
    x = np.random.default_rng(2).standard_normal(3)
    np.testing.assert_allclose(prog.forward(x), prog.matrix() @ x, rtol=0, atol=1e-12)
    # the report's error is the error of the matrix the program implements
    assert prog.report["lower"].metrics["matrix_error"] == pytest.approx(
        np_matrix_error(w, prog.matrix()), rel=BOUND["recomputed"], abs=1e-15
    )


@dataclasses.dataclass(frozen=True)
class Touch(Pass):
    """Test-only pass that works on the phases (declares it through ``requires``)."""

    name = "touch"
    requires = frozenset({"phases"})
    provides = frozenset({"touched"})

    def __call__(self, state):
        return state, {}


@dataclasses.dataclass(frozen=True)
class Note(Pass):
    """Test-only pass that reads nothing the lowering folded."""

    name = "note"
    provides = frozenset({"noted"})

    def __call__(self, state):
        return state, {}


@dataclasses.dataclass(frozen=True)
class Fold(Pass):
    """Test-only lowering pass under another name, folding only what the SVD provides."""

    name = "fold"
    requires = frozenset({"svd"})
    provides = frozenset({LOWERED})

    def __call__(self, state):
        return state, {}


def test_the_rule_follows_requires_and_provides_not_names():
    with pytest.raises(PipelineError, match="'touch' \\(position 4\\) follows 'lower'.*\\['phases'\\]"):
        Pipeline((Tile(), SVD(), Clements(), Lower(), Touch()))
    assert Pipeline((Tile(), SVD(), Clements(), Lower(), Note())).names()[-1] == "note"
    assert Pipeline((Tile(), SVD(), Clements(), Touch(), Lower())).names()[-1] == "lower"
    # a lowering pass named otherwise freezes what it (transitively) was built from: svd and tiled
    with pytest.raises(PipelineError, match="'svd' \\(position 3\\) follows 'fold'.*must come last"):
        Pipeline((Tile(), SVD(), Fold(), SVD()))
    assert Pipeline((Tile(), SVD(), Fold(), Validate())).names()[-1] == "validate"


# ---- 2. the parser ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Probe(Pass):
    """Test-only pass with one parameter of every value type."""

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
    original = registry.entry_points

    def entry_points(group):
        eps = dict(original(group))
        if group == "photocomp.passes":
            eps["probe"] = types.SimpleNamespace(name="probe", load=lambda: Probe)
        return eps

    monkeypatch.setattr(registry, "entry_points", entry_points)


@pytest.mark.parametrize("key", ["name", "self", "cls", "params"])
def test_unknown_keyword_is_a_pipeline_error_listing_the_parameters(key):
    with pytest.raises(PipelineError, match=rf"'quantize' has no parameter\(s\) \['{key}'\]; parameters: \['bits', 'scheme'\]"):
        Pipeline.parse(f"{HEAD} | quantize({key}=x)")
    with pytest.raises(PipelineError, match="parameters: \\['bits', 'scheme'\\]"):
        get_pass("quantize", **{key: "x"})


def test_get_pass_name_must_be_a_string():
    with pytest.raises(InvalidTypeError, match="pass name must be a string; got list"):
        get_pass(["quantize"])


@pytest.mark.parametrize("digits", [5000, 100, MAX_NUMBER_CHARS + 1])
def test_big_integer_literal_is_refused(digits):
    with pytest.raises(PipelineError, match=f"{digits} characters, more than the {MAX_NUMBER_CHARS}") as exc:
        Pipeline.parse(f"{HEAD} | quantize(bits={'9' * digits})")
    _bounded(exc)


def test_longest_accepted_literal_still_parses(with_probe):
    pipe = Pipeline.parse(f"probe(i={'9' * MAX_NUMBER_CHARS})")
    assert pipe.passes[0].i == int("9" * MAX_NUMBER_CHARS)
    assert Pipeline.parse(str(pipe)) == pipe


@pytest.mark.parametrize("literal", ["1e999", "-1e999", "1E400", "9" * 30 + ".0e300"])
def test_non_finite_float_literal_is_refused(literal):
    with pytest.raises(PipelineError, match="out of the float range"):
        Pipeline.parse(f"{HEAD} | quantize(bits={literal})")


@pytest.mark.parametrize(
    "text",
    [
        f"{HEAD} | quantize(bits=\uff11\uff10)",  # full-width digits
        f"{HEAD} | quantize(\uff42\uff49\uff54\uff53=\uff11\uff10)",  # full-width keyword and digits
        f"{HEAD} | quantize(bits=\u0661\u0660)",  # Arabic-Indic digits
        f"{HEAD} | quantize(bits=\u06f1\u06f0)",  # Extended Arabic-Indic digits
        f"{HEAD} | quantize(bits=\u0967\u0966)",  # Devanagari digits
        f"{HEAD} | quantize(bits=1\u0660)",  # an ASCII digit, then a non-ASCII one
        f"{HEAD}\u3000| lower",  # ideographic space
        f"{HEAD} |\u00a0lower",  # no-break space
        f"{HEAD} | lower\u2028",  # line separator at the end
    ],
)
def test_non_ascii_digits_and_spaces_are_refused(text):
    with pytest.raises(PipelineError, match="ASCII outside quoted strings") as exc:
        Pipeline.parse(text)
    _bounded(exc)


def test_messages_quote_at_most_80_characters_of_a_long_input():
    long_text = "tile | " * 1400 + "$"  # 9801 characters: under the length limit, bad at the end
    with pytest.raises(PipelineError, match=r"'\$' at position 9800") as exc:
        Pipeline.parse(long_text)
    message = _bounded(exc)
    assert repr(long_text[:80]) + "… (9801 characters)" in message
    huge = "tile | " * 250_000  # the 1.75 MB input of the report
    with pytest.raises(PipelineError, match=f"at most {MAX_PIPELINE_CHARS} characters; got {len(huge)}") as exc:
        Pipeline.parse(huge)
    _bounded(exc)
    with pytest.raises(UnknownNameError, match="got 'xxxxx") as exc:
        Pipeline.parse("x" * 5000)
    _bounded(exc)
    with pytest.raises(PipelineError, match="no parameter") as exc:
        Pipeline.parse(f"{HEAD} | quantize({'k' * 5000}=1)")
    _bounded(exc)


def test_long_string_values_are_quoted_briefly():
    for text in [f"{HEAD} | quantize(scheme='{'v' * 5000}')", f"{HEAD} | quantize(bits='{'8' * 5000}')",
                 f"{HEAD} | lower(detection={'d' * 5000})"]:
        with pytest.raises(PipelineError, match="invalid parameters") as exc:
            Pipeline.parse(text)
        _bounded(exc)


@pytest.mark.parametrize(
    "text, match",
    [
        (f"{HEAD} | quantize(bits=8", "at end"),
        (f"{HEAD} | quantize((bits=8))", "expected a parameter name"),
        (f"{HEAD} | quantize(bits=(8))", "expected a value"),
        (f"{HEAD} | quantize(bits=lower(x=1))", "expected ',' or '\\)'"),
        ("tile || svd", "expected a pass name at position 6"),
        ("tile | | svd", "expected a pass name"),
        ("|", "expected a pass name at position 0"),
        ("tile |", "at end"),
        ("tile\x00 | svd", "unexpected character '\\\\x00' at position 4"),
        ("tile | svd('abc", "unclosed quote"),
        ('tile | svd("abc', "unclosed quote"),
        (f"{HEAD} | quantize(bits=nan)", "bits must be an integer"),
        (f"{HEAD} | quantize(bits=inf)", "bits must be an integer"),
        (f"{HEAD} | quantize(bits=-inf)", "unexpected character '-'"),
        (f"{HEAD} | quantize(bits=true)", "bits must be an integer"),
        (f"{HEAD} | quantize(bits=-3)", "bits must be an integer in \\[1, 32\\]; got -3"),
        (f"{HEAD} | quantize(bits=--3)", "unexpected character '-'"),
        (f"{HEAD} | quantize(bits=1e1000000)", "out of the float range"),
        (f"{HEAD} | quantize(bits=4, bits=4)", "'bits' given twice"),
        (f"{HEAD} | quantize(bits=0x10)", "expected ',' or '\\)'"),
        (f"{HEAD} | quantize(bits=1_000)", "expected ',' or '\\)'"),
        ("\ufefftile", "unexpected character '\\\\ufeff'"),
        ("tile | sv\u0064\u0301", "unexpected character"),
    ],
)
def test_malformed_text_gives_pipeline_errors(text, match):
    with pytest.raises(PipelineError, match=match) as exc:
        Pipeline.parse(text)
    _bounded(exc)


@pytest.mark.parametrize("bad", [b"tile | svd", bytearray(b"tile"), None, 3, 3.5, ["tile"] * 100_000, {"tile": 1},
                                 ("tile",), object()])
def test_non_string_pipelines_are_type_errors(bad):
    with pytest.raises(InvalidTypeError, match="pipeline must be a string") as exc:
        parse_pipeline(bad)
    _bounded(exc)
    if bad is not None:  # None is compile's default pipeline
        with pytest.raises(InvalidTypeError, match="pipeline must be") as exc:
            pc.compile(np.eye(2), "clements-4", bad)
        _bounded(exc)


@pytest.mark.parametrize("bad", ["tile | svd", b"tile", 3, None])
def test_pipeline_passes_must_be_a_sequence(bad):
    with pytest.raises(InvalidTypeError, match="Pipeline passes must be a sequence|pipeline element 0"):
        Pipeline(bad)


def test_keyword_strings_round_trip(with_probe):
    for probe in [Probe(s="true"), Probe(s="FALSE"), Probe(s="none"), Probe(s="Null"), Probe(s="é"),
                  Probe(s="tab\there"), Probe(i=-(10 ** (MAX_NUMBER_CHARS - 1) - 1)), Probe(i=10 ** MAX_NUMBER_CHARS - 1), Probe(f=-2.5e-300),
                  Probe(i=np.int64(7)), Probe(f=np.float32(0.5))]:
        p = Pipeline((probe,))
        again = Pipeline.parse(str(p))
        assert again == p, str(p)
        assert type(again.passes[0].s) is str


@pytest.mark.parametrize(
    "probe, match",
    [
        (Probe(i=10 ** MAX_NUMBER_CHARS), f"more than {MAX_NUMBER_CHARS} digits"),
        (Probe(i=-(10 ** (MAX_NUMBER_CHARS - 1))), f"more than {MAX_NUMBER_CHARS - 1} digits"),
        (Probe(i=10 ** 5000), "more than 40 digits"),  # too long even to print as an int
        (Probe(f=float("nan")), "not a finite number"),
        (Probe(f=float("inf")), "not a finite number"),
        (Probe(s="both ' and \""), "both quote kinds"),
        (Probe(o=[1, 2]), "of type list cannot be written"),
    ],
)
def test_unwritable_parameters_are_pipeline_errors(with_probe, probe, match):
    with pytest.raises(PipelineError, match=match) as exc:
        str(Pipeline((probe,)))
    _bounded(exc)


def test_unwritable_parameter_does_not_break_the_requirement_message():
    with pytest.raises(PipelineError, match=r"pipeline 'probe \| svd'.*'svd' \(position 1\) requires \['tiled'\]"):
        Pipeline((Probe(f=float("nan")), SVD()))


# ---- 3. target names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, hint",
    [
        ("clements-4\n", "no surrounding whitespace: 'clements-4'"),
        ("clements-4 ", "no surrounding whitespace"),
        (" clements-4", "no surrounding whitespace"),
        ("pace-64\n", "no surrounding whitespace: 'pace-64'"),
        ("pace-64\r\n", "no surrounding whitespace"),
        ("clements -4", "no whitespace"),
        ("clements-\t4", "no whitespace"),
        ("clements-\u0664", "ASCII"),  # Arabic-Indic 4
        ("clements-\uff14", "ASCII"),  # full-width 4
        ("clements-\u0967\u0966", "ASCII"),  # Devanagari 10
        ("clements-04", "without a sign or leading zeros: 'clements-4'"),
        ("reck-0016", "without a sign or leading zeros: 'reck-16'"),
        ("clements-+4", "without a sign or leading zeros: 'clements-4'"),
        ("clements--4", ""),
        ("clements-4.0", ""),
        ("clements-4e1", ""),
        ("clements-0x10", ""),
        ("Clements-4", ""),
        ("clements_4", ""),
        ("pace-064", ""),
        ("pace-64-1", ""),
        ("clements-4\x00", ""),
    ],
)
def test_malformed_target_names_are_unknown(name, hint):
    with pytest.raises(UnknownNameError, match="target must be one of") as exc:
        get_target(name)
    assert hint in _bounded(exc)


@pytest.mark.parametrize("name, got", [
    ("clements-0", "got 0"), ("clements-1", "got 1"), ("reck-4097", "got 4097"), ("reck-9999", "got 9999"),
    ("clements-1000000000", "got a 10-digit number"), ("clements-" + "9" * 5000, "got a 5000-digit number"),
])
def test_target_size_out_of_range_names_target_and_range(name, got):
    with pytest.raises(InvalidInputError, match=r"target '.*: mesh size N of \w+-N must be an int in \[2, 4096\]") as exc:
        get_target(name)
    assert got in _bounded(exc)
    with pytest.raises(InvalidInputError, match="target '.*'.*\\[2, 4096\\]"):
        pc.compile(np.eye(2), target=name)


def test_size_is_checked_before_the_family_constructor_runs(monkeypatch):
    built = []
    original = registry.entry_points

    def entry_points(group):
        eps = dict(original(group))
        if group == "photocomp.targets":
            eps["lab"] = types.SimpleNamespace(name="lab", load=lambda: lambda n: built.append(n) or pc.Target("lab", "clements", n))
        return eps

    monkeypatch.setattr(registry, "entry_points", entry_points)
    for name in ["lab-1000000000", "lab-1", "lab-" + "7" * 4400]:
        with pytest.raises(InvalidInputError, match="mesh size N"):
            get_target(name)
    assert built == []
    assert get_target("lab-5").size == 5 and built == [5]


def test_family_constructors_name_target():
    from photocomp.targets import clements, reck

    with pytest.raises(InvalidInputError, match=r"target clements-N: mesh size N must be an int in \[2, 4096\]; got 1"):
        clements(1)
    with pytest.raises(InvalidInputError, match=r"target reck-N: mesh size N .*got 5000"):
        reck(5000)
    with pytest.raises(InvalidTypeError, match="target clements-N: mesh size N must be an int; got str '4'"):
        clements("4")
    with pytest.raises(InvalidTypeError, match="got bool True"):
        reck(True)
    with pytest.raises(InvalidInputError, match=r"physics overrides must be among .*got \['name'\]"):
        clements(4, name="other")
    with pytest.raises(InvalidInputError, match=r"got \['colour'\]"):
        reck(4, colour="red")
    assert clements(4, dac_bits=8).dac_bits == 8


@pytest.mark.parametrize("bad", [b"pace-64", ["pace-64"] * 100_000, 64, None, 4.0])
def test_non_string_targets_are_type_errors(bad):
    with pytest.raises(InvalidTypeError, match="target must be a target name") as exc:
        get_target(bad)
    _bounded(exc)


def test_size_range_is_the_targets():
    assert SIZE_RANGE == (2, 4096)
    assert get_target("clements-2").size == 2 and get_target("reck-4096").size == 4096
    with pytest.raises(InvalidInputError, match="Target.size"):
        pc.Target("lab", "clements", SIZE_RANGE[1] + 1)


def test_quote():
    assert quote("abc") == "'abc'"
    assert quote("a" * 100, 10) == "'aaaaaaaaaa'… (100 characters)"
    assert quote(list(range(1000)), 10) == "[0, 1, 2, …"
    assert quote(10 ** 5000) == "<int>"  # beyond the int-to-text limit


# ---- properties --------------------------------------------------------------------------------------

PASS_NAMES = pc.available_passes()
KEYWORDS = sorted({f.name for n in PASS_NAMES for f in dataclasses.fields(type(get_pass(n)))}) + ["name", "self"]
UNICODE_DIGITS = "0123456789\uff10\uff15\u0660\u0665\u06f0\u0966\u09e6\u0e50\U0001d7ce"

values = st.one_of(
    st.integers(-10, 40).map(str),
    st.integers(-(10 ** 60), 10 ** 60).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e999", "-1e999", "nan", "inf", "-inf", "true", "FALSE", "none", "null", ".5", "1.", "+9",
                     "voltage", "linear", "coherent", "intensity", "'linear'", '"intensity"', "'a|b(c)=,'", "''",
                     "1_0", "0x10", "(1)", "[1]", "lower(x=1)", "'", "\x00"]),
    st.text(UNICODE_DIGITS, min_size=1, max_size=4),
)
stages = st.builds(
    lambda name, args, paren: name + (f"({', '.join(f'{k}={v}' for k, v in args)})" if args or paren else ""),
    st.sampled_from(PASS_NAMES + ["frobnicate", "Tile", "ｔｉｌｅ", ""]),
    st.lists(st.tuples(st.sampled_from(KEYWORDS), values), max_size=3),
    st.booleans(),
)
separators = st.sampled_from([" | ", "|", " || ", " ", "\t|\n", " |\u3000", ", ", " | | "])


@st.composite
def grammar_text(draw):
    """Pipeline-shaped text from the real pass and keyword names, sometimes broken."""
    n = draw(st.integers(1, 8))
    parts = [draw(stages) for _ in range(n)]
    seps = [draw(st.one_of(st.just(" | "), separators)) for _ in range(n - 1)]
    text = parts[0] + "".join(s + p for s, p in zip(seps, parts[1:]))
    if draw(st.booleans()):
        # the real pipelines, sometimes with a pass moved after lower
        text = draw(st.sampled_from([
            "validate | tile | svd | clements | canonicalize | quantize(bits={b}) | lower",
            "tile(size={b}) | svd | reck | quantize(bits={b}, scheme=linear) | lower(detection=intensity)",
            "tile | svd | clements | lower | quantize(bits={b})",
            "tile | svd | clements | lower | validate",
        ])).format(b=draw(values))
    cut = draw(st.integers(0, len(text)))
    return draw(st.sampled_from([text, text[:cut], text[:cut] + draw(st.text(max_size=3)) + text[cut:]]))


def _check_pipeline(text) -> Pipeline | None:
    """Parse; a failure must be typed and bounded. Returns the pipeline or None."""
    try:
        pipe = parse_pipeline(text)
    except PIPELINE_ERRORS as exc:
        assert len(str(exc)) < MESSAGE_MAX, str(exc)[:200]
        return None
    assert isinstance(pipe, Pipeline) and pipe.passes
    assert all(isinstance(p, Pass) for p in pipe.passes)
    # nothing after the lowering pass but analysis
    names = pipe.names()
    if "lower" in names:
        assert set(names[names.index("lower") + 1:]) <= {"validate"}, names
    # parse -> str -> parse round-trips
    again = parse_pipeline(str(pipe))
    assert again == pipe and str(again) == str(pipe)
    return pipe


@PROPERTY
@given(st.text(max_size=120))
def test_property_random_text(text):
    _check_pipeline(text)


@PROPERTY
@given(st.text(alphabet=st.sampled_from(list("tilesvdcmnquazwrkbp()=,|'\" .+-_0123456789eE\x00\u0660\uff11")),
               max_size=80))
def test_property_pipeline_alphabet_text(text):
    _check_pipeline(text)


@PROPERTY
@given(grammar_text())
def test_property_grammar_shaped_text(text):
    _check_pipeline(text)


@PROPERTY
@given(st.one_of(st.binary(max_size=20), st.none(), st.integers(), st.floats(), st.lists(st.text(max_size=5), max_size=3),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_property_non_string_pipelines(value):
    with pytest.raises(InvalidTypeError, match="pipeline must be a string") as exc:
        parse_pipeline(value)
    assert len(str(exc.value)) < MESSAGE_MAX


@PROPERTY
@given(st.lists(st.sampled_from(["validate", "tile", "svd", "clements", "reck", "canonicalize", "quantize", "lower"]),
                min_size=1, max_size=8),
       st.integers(1, 32))
def test_property_pass_orders(names, bits):
    """Any order of the real passes: valid pipelines round-trip; invalid ones are typed, bounded errors."""
    text = " | ".join(f"quantize(bits={bits})" if n == "quantize" else n for n in names)
    pipe = _check_pipeline(text)
    if pipe is None:
        return
    have = {"weights"}
    for p in pipe.passes:
        assert p.requires <= have
        have |= p.provides


FAMILIES = ["clements", "reck", "pace", "tianshu", "lab"]


@st.composite
def target_names(draw):
    family = draw(st.sampled_from(FAMILIES + ["Clements", "clements_", ""]))
    sep = draw(st.sampled_from(["-", "-", "-", "_", "--", " -", "-+", "−"]))
    size = draw(st.one_of(st.integers(0, 5000).map(str), st.integers(0, 10 ** 40).map(str),
                          st.text(UNICODE_DIGITS, min_size=1, max_size=5),
                          st.integers(0, 99).map(lambda n: "0" + str(n))))
    pad = draw(st.sampled_from(["", "", "", " ", "\n", "\t", "\u3000", "\x00"]))
    where = draw(st.sampled_from(["end", "start", "none"]))
    name = f"{family}{sep}{size}"
    return name + pad if where == "end" else (pad + name if where == "start" else name)


def _check_target(name):
    try:
        t = get_target(name)
    except TARGET_ERRORS as exc:
        assert len(str(exc)) < MESSAGE_MAX, str(exc)[:200]
        return None
    assert isinstance(t, pc.Target)
    assert t.name == name  # a name resolves only when it is the target's own name
    assert SIZE_RANGE[0] <= t.size <= SIZE_RANGE[1]
    return t


@PROPERTY
@given(target_names())
def test_property_grammar_shaped_target_names(name):
    _check_target(name)


@PROPERTY
@given(st.text(max_size=40))
def test_property_random_target_names(name):
    _check_target(name)


@PROPERTY
@given(st.sampled_from(["clements", "reck"]), st.integers(-10, 10 ** 12))
def test_property_family_sizes(family, n):
    name = f"{family}-{n}"
    if SIZE_RANGE[0] <= n <= SIZE_RANGE[1]:
        assert get_target(name).size == n
    elif n < 0:
        with pytest.raises(UnknownNameError):
            get_target(name)
    else:
        with pytest.raises(InvalidInputError, match=f"target {name!r}: mesh size N .*\\[2, 4096\\]"):
            get_target(name)


def test_errors_are_photocomp_errors():
    assert all(issubclass(e, PhotocompError) for e in PIPELINE_ERRORS + TARGET_ERRORS)
