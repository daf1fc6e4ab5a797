"""The pass engine: passes, pipelines as values, and the pipeline-string parser.

A pass is a frozen dataclass with a pure ``__call__(state) -> (state, metrics)``.
It declares the properties it ``requires`` and ``provides``; a
:class:`Pipeline` checks when it is built that every requirement is provided
by an earlier pass, and that nothing after the lowering pass (the one that
provides ``"lowered"`` and folds the phases into the dense matrix) reads or
changes what that matrix was built from. Pipelines are values (like
``optax.chain``) and also parse from strings such as
``"tile | svd | clements | quantize(bits=10) | lower"`` with a small
hand-written parser (no ``eval``). Pass names resolve through the
``photocomp.passes`` entry-point group.

The pipeline-string grammar, ASCII only outside quoted strings::

    pipeline := stage ("|" stage)*
    stage    := NAME ["(" [NAME "=" value ("," NAME "=" value)*] ")"]
    value    := NUMBER | "'" text "'" | '"' text '"' | NAME
    NAME     := [A-Za-z_][A-Za-z0-9_-]*
    NUMBER   := [+-]? (digits "." digits? | "." digits | digits) ([eE] [+-]? digits)?

Bare words ``true``/``false`` (any case) are booleans, ``none``/``null`` are
``None``, other bare words are strings. Numbers have at most
``MAX_NUMBER_CHARS`` characters and must be finite; the whole text at most
``MAX_PIPELINE_CHARS``. Every failure is a :class:`PipelineError`
(:class:`UnknownNameError` for an unknown pass name, :class:`InvalidTypeError`
for text that is not a ``str``) whose message quotes the input only up to
``QUOTE_LIMIT`` characters.

Example:
  >>> p = Pipeline.parse("validate | tile | svd | clements | lower")
  >>> [q.name for q in p.passes]
  ['validate', 'tile', 'svd', 'clements', 'lower']
"""

from __future__ import annotations

import abc
import concurrent.futures
import contextlib
import dataclasses
import math
import numbers
import re
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from photocomp.compiler.state import CompileState
from photocomp.core import registry
from photocomp.core.errors import InvalidTypeError, PhotocompError, PipelineError, UnknownNameError
from photocomp.core.ir import PassRecord, TileGrid
from photocomp.core.registry import quote
from photocomp.sim.devices import single_threaded_blas

__all__ = ["Pass", "Pipeline", "parse_pipeline", "get_pass", "available_passes", "INITIAL_PROPERTIES",
           "LOWERED", "MAX_PIPELINE_CHARS", "MAX_NUMBER_CHARS"]

INITIAL_PROPERTIES = frozenset({"weights"})
"""Properties every compile starts with: ``compile`` validates the weights on entry."""

LOWERED = "lowered"
"""The property of the lowering pass, which folds the phases into the program's dense matrix."""

MAX_PIPELINE_CHARS = 10_000
"""Longest pipeline text :func:`parse_pipeline` accepts (characters)."""

MAX_NUMBER_CHARS = 40
"""Longest number literal in pipeline text (characters, sign and exponent included)."""

_WHITESPACE = " \t\n\r\f\v"
_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*", re.ASCII)
_KEYWORDS = ("true", "false", "none", "null")




class Pass(abc.ABC):
    """Abstract compiler pass. Concrete passes are frozen dataclasses.
    Class attributes:
      name: the registry / pipeline-string name.
      requires: properties that must be provided by earlier passes.
      provides: properties this pass establishes.
      counts: metrics that count things in the tiles it saw (tiles, MZIs):
        a compile run in strips reports their sum over the strips.
    """
    name: ClassVar[str] = ""
    requires: ClassVar[frozenset] = frozenset()
    provides: ClassVar[frozenset] = frozenset()
    counts: ClassVar[frozenset] = frozenset()

    @abc.abstractmethod
    def __call__(self, state: CompileState) -> tuple[CompileState, dict]:
        """Return the new state and a dict of metrics (floats/ints/strings)."""

    def ahead(self, target, grid: TileGrid, circuit: str) -> tuple[Callable[[], object], ...]:
        """Functions that run the XLA programs this pass will run on ``grid``'s tiles, on placeholder data.

        ``circuit`` is ``"svd"``, ``"unitary"`` or ``"crossbar"``. :func:`photocomp.compile`
        calls them in background threads, the first time a process compiles
        such a grid, so that the programs compile while earlier passes run
        (ahead-of-time compilation); :meth:`Pipeline.run` waits for them before
        it runs the pass, which then finds its programs compiled. Their results
        are discarded and their errors ignored (the pass raises its own).
        It is asked for grids of any size: a pass keeps its placeholders small
        next to the compilation they save (the decomposition passes run each
        only up to :data:`photocomp.compiler.driver.AHEAD_MAX_WORK`).
        Default: none.
        """
        return ()

    def spec(self) -> str:
        """This pass as pipeline-string text, e.g. ``quantize(bits=10)``."""
        if not dataclasses.is_dataclass(self):
            raise InvalidTypeError(f"pass {self.name!r} is a {type(self).__name__}, not a dataclass; "
                                   "concrete passes are frozen dataclasses")
        args = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v != f.default:
                args.append(f"{f.name}={_format_arg(v)}")
        return f"{self.name}({', '.join(args)})" if args else self.name


def _format_arg(v) -> str:
    """A parameter value as pipeline text that parses back to the same value."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        v = int(v)
        digits = MAX_NUMBER_CHARS - (v < 0)  # the longest literal the parser reads back
        if abs(v) >= 10 ** digits:
            raise PipelineError(
                f"pass parameter {quote(v)} has more than {digits} digits and cannot be written as pipeline text"
            )
        return str(v)
    if isinstance(v, numbers.Real):
        v = float(v)
        if not math.isfinite(v):
            raise PipelineError(f"pass parameter {v!r} is not a finite number and cannot be written as pipeline text")
        return repr(v)
    if isinstance(v, str):
        if _BARE_WORD.fullmatch(v) and v.lower() not in _KEYWORDS:
            return v
        if '"' not in v:
            return f'"{v}"'
        if "'" not in v:
            return f"'{v}'"
        raise PipelineError(
            f"pass parameter {quote(v)} holds both quote kinds and cannot be written as pipeline text"
        )
    raise PipelineError(
        f"pass parameter {quote(v)} of type {type(v).__name__} cannot be written as pipeline text; "
        "parameters are None, booleans, ints, floats or strings"
    )


def _describe_passes(passes) -> str:
    """Pipeline text of ``passes`` for messages, bounded (pass names where a parameter cannot be written)."""
    try:
        text = " | ".join(p.spec() for p in passes)
    except PipelineError:
        text = " | ".join(str(getattr(p, "name", "?")) for p in passes)
    return quote(text)


def _lowering_inputs(passes, lowering: int) -> frozenset:
    """Properties the lowering pass at ``lowering`` folded into the matrix, directly or through earlier passes.
    Starts from what it requires and walks back: a pass that provides one of
    them adds what it requires and everything else it provides. The initial
    properties (the weights) are left out; reading them changes nothing.
    """
    props = set(passes[lowering].requires)
    for q in reversed(passes[:lowering]):
        if q.provides & props:
            props |= q.requires | q.provides
    return frozenset(props - INITIAL_PROPERTIES - {LOWERED})


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """An ordered, validated sequence of passes.
    Raises:
      PipelineError: if a pass's requirement is not provided by an earlier pass,
        or if a pass after the lowering pass (the one providing ``"lowered"``)
        requires or provides a property that pass folded into the dense
        matrix (the lowering pass must come last; analysis passes such as
        ``validate`` may follow it).
      InvalidTypeError: if ``passes`` is not a sequence of :class:`Pass` objects.
    """
    passes: tuple

    def __post_init__(self) -> None:
        if isinstance(self.passes, (str, bytes)) or not hasattr(self.passes, "__iter__"):
            raise InvalidTypeError(
                f"Pipeline passes must be a sequence of photocomp Pass objects; got {type(self.passes).__name__} "
                f"{quote(self.passes)} (parse pipeline text with Pipeline.parse)"
            )
        passes = tuple(self.passes)
        object.__setattr__(self, "passes", passes)
        for i, p in enumerate(passes):
            if not isinstance(p, Pass):
                raise InvalidTypeError(f"pipeline element {i} must be a photocomp Pass; got {type(p).__name__}")
        have: set = set(INITIAL_PROPERTIES)
        lowering = None  # index of the pass that lowered the program, once one has
        frozen: frozenset = frozenset()
        for i, p in enumerate(passes):
            missing = sorted(p.requires - have)
            if missing:
                providers = _providers(missing)
                raise PipelineError(
                    f"pipeline {_describe_passes(passes)}: pass {p.name!r} (position {i}) requires {missing}, "
                    f"which no earlier pass provides; add {providers} before it"
                )
            touched = sorted((p.requires | p.provides) & frozen)
            if touched and lowering is not None:  # (frozen stays empty until a pass lowers the program)
                low = passes[lowering]
                if LOWERED in p.provides:
                    raise PipelineError(
                        f"pipeline {_describe_passes(passes)}: pass {p.name!r} (position {i}) lowers the program "
                        f"again after {low.name!r} (position {lowering}); the lowering pass must come last, once"
                    )
                raise PipelineError(
                    f"pipeline {_describe_passes(passes)}: pass {p.name!r} (position {i}) follows "
                    f"{low.name!r} (position {lowering}), which folds the phases into the program's dense matrix, "
                    f"and would read or change {touched} after that, leaving the folded matrix stale. "
                    f"{low.name!r} must come last: move {p.name!r} before it"
                )
            if LOWERED in p.provides and lowering is None:
                lowering = i
                frozen = _lowering_inputs(passes, i)
            have |= p.provides

    @classmethod
    def parse(cls, text: str) -> Pipeline:
        """Build a pipeline from text (see :func:`parse_pipeline`)."""
        return parse_pipeline(text)

    @property
    def provides(self) -> frozenset:
        out: set = set()
        for p in self.passes:
            out |= p.provides
        return frozenset(out)

    def names(self) -> list[str]:
        return [p.name for p in self.passes]

    def __str__(self) -> str:
        return " | ".join(p.spec() for p in self.passes)

    def run(self, state: CompileState, callback: Callable | None = None, *,
            ahead: Mapping[int, Sequence[concurrent.futures.Future]] | None = None) -> CompileState:
        """Run every pass, recording wall time and metrics.
        Args:
          state: the initial :class:`CompileState`.
          callback: optional ``callback(pass_, record, state)`` called after each pass
            (an instrumentation hook, e.g. for progress or logging).
          ahead: futures of the :meth:`Pass.ahead` functions of pass ``i`` (its
            index in :attr:`passes`), running elsewhere; the pass waits for them
            first (inside its wall time), whatever their outcome.
        """
        # one BLAS thread for the passes (entered once for a run of passes, left for each callback)
        with contextlib.ExitStack() as limit:
            limited = False
            for i, p in enumerate(self.passes):
                t0 = time.perf_counter()
                if ahead and ahead.get(i):
                    concurrent.futures.wait(ahead[i])
                if not limited:
                    limit.enter_context(single_threaded_blas())
                    limited = True
                new_state, metrics = p(state)
                wall = time.perf_counter() - t0
                rec = PassRecord(p.name, p.spec(), wall, types.MappingProxyType(dict(metrics)))
                state = new_state.replace(
                    provided=new_state.provided | p.provides, records=new_state.records + (rec,)
                )
                if callback is not None:
                    limit.close()
                    limited = False
                    callback(p, rec, state)
        return state


def _providers(props) -> list[str]:
    out = []
    try:
        for name, cls in sorted(_pass_classes().items()):
            if set(props) & set(getattr(cls, "provides", ())):
                out.append(name)
    except Exception:  # pragma: no cover - registry problems surface elsewhere
        pass
    return out or ["a pass providing them"]


def _pass_classes() -> dict:

    return {name: ep.load() for name, ep in registry.entry_points("photocomp.passes").items()}


def available_passes() -> list[str]:
    """Names of every registered pass."""
    return sorted(registry.entry_points("photocomp.passes"))


def get_pass(name: str, /, **params) -> Pass:
    """Instantiate the registered pass ``name`` with keyword parameters.
    Raises:
      UnknownNameError: if no pass is registered as ``name``.
      PipelineError: on a parameter the pass does not have or a value it refuses.
    """
    if not isinstance(name, str):
        raise InvalidTypeError(f"pass name must be a string; got {type(name).__name__} {quote(name)}")
    eps = registry.entry_points("photocomp.passes")
    if name not in eps:
        raise UnknownNameError(f"pass name must be one of {sorted(eps)}; got {quote(name)}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Pass) and dataclasses.is_dataclass(cls)):
        raise InvalidTypeError(
            f"pass {name!r} is registered as {quote(cls)}, which is not a photocomp Pass dataclass"
        )
    fields = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = [k for k in params if k not in fields]
    if unknown:
        raise PipelineError(
            f"pass {name!r} has no parameter(s) [{', '.join(quote(k, 40) for k in unknown[:5])}"
            f"{', …' if len(unknown) > 5 else ''}]; parameters: {fields or 'none'}"
        )
    try:
        return cls(**params)
    except (PhotocompError, TypeError, ValueError) as exc:
        message = str(exc)
        if len(message) > 300:
            message = message[:300] + "…"
        raise PipelineError(f"invalid parameters for pass {name!r}: {message}") from None


# ---- the pipeline-string parser ------------------------------------------------

_TOKEN = re.compile(
    r"""[ \t\n\r\f\v]*(?:
        (?P<num>[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?)
      | (?P<str>"[^"]*"|'[^']*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_\-]*)
      | (?P<op>[|(),=])
    )""",
    re.VERBOSE | re.ASCII,
)


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    pos = 0
    out = []
    text = text.rstrip(_WHITESPACE)
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            while text[pos] in _WHITESPACE:
                pos += 1
            ch = text[pos]
            what = "an unclosed quote" if ch in "'\"" else f"unexpected character {ch!r}"
            if ord(ch) > 127:
                what += " (pipeline text is ASCII outside quoted strings)"
            raise PipelineError(f"pipeline: {what} at position {pos} in {quote(text)}")
        kind = m.lastgroup
        assert kind is not None  # every alternative of _TOKEN is a named group
        tok = m.group(kind)
        if kind == "num" and len(tok) > MAX_NUMBER_CHARS:
            raise PipelineError(
                f"pipeline: number at position {m.start(kind)} has {len(tok)} characters, more than the "
                f"{MAX_NUMBER_CHARS} accepted, in {quote(text)}"
            )
        out.append((kind, tok, m.start(kind)))
        pos = m.end()
    return out


def _value(kind: str, tok: str, pos: int, text: str):
    if kind == "num":
        if not any(c in tok for c in ".eE"):
            return int(tok)
        v = float(tok)
        if not math.isfinite(v):
            raise PipelineError(
                f"pipeline: number {tok!r} at position {pos} is out of the float range in {quote(text)}"
            )
        return v
    if kind == "str":
        return tok[1:-1]
    low = tok.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    return tok


def parse_pipeline(text: str) -> Pipeline:
    """Parse ``"name | name(k=v, ...) | ..."`` into a :class:`Pipeline`.
    Values are ints, floats, ``true``/``false``, ``none``, quoted strings or bare
    words (strings). Nothing is evaluated. The grammar is in the module docstring.

    Raises:
      PipelineError: on malformed text, unknown parameters or unmet requirements.
      UnknownNameError: on an unknown pass name.
      InvalidTypeError: if ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise InvalidTypeError(f"pipeline must be a string; got {type(text).__name__} {quote(text)}")
    if len(text) > MAX_PIPELINE_CHARS:
        raise PipelineError(
            f"pipeline must be at most {MAX_PIPELINE_CHARS} characters; got {len(text)}: {quote(text)}"
        )
    if not text.strip(_WHITESPACE):
        raise PipelineError(f"pipeline must name at least one pass; got {quote(text)}")
    toks = _tokenize(text)
    i = 0
    passes = []

    def expect(kinds, what):
        nonlocal i
        if i >= len(toks):
            raise PipelineError(f"pipeline: expected {what} at end of {quote(text)}")
        kind, tok, pos = toks[i]
        if kind not in kinds and tok not in kinds:
            raise PipelineError(
                f"pipeline: expected {what} at position {pos} in {quote(text)}; got {quote(tok, 40)}"
            )
        i += 1
        return kind, tok, pos

    while True:
        _, name, _ = expect(("name",), "a pass name")
        params: dict = {}
        if i < len(toks) and toks[i][1] == "(":
            i += 1
            if i < len(toks) and toks[i][1] == ")":
                i += 1
            else:
                while True:
                    _, key, kpos = expect(("name",), "a parameter name")
                    if key in params:
                        raise PipelineError(
                            f"pipeline: parameter {quote(key, 40)} given twice for pass {quote(name, 40)} "
                            f"at position {kpos} in {quote(text)}"
                        )
                    expect(("=",), "'='")
                    vkind, vtok, vpos = expect(("num", "str", "name"), "a value")
                    params[key] = _value(vkind, vtok, vpos, text)
                    _, sep, _ = expect((",", ")"), "',' or ')'")
                    if sep == ")":
                        break
        passes.append(get_pass(name, **params))
        if i >= len(toks):
            break
        expect(("|",), "'|'")
    return Pipeline(tuple(passes))
