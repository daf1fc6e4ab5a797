"""The pass engine: passes, pipelines as values, and the pipeline-string parser.

A pass is a frozen dataclass with a pure ``__call__(state) -> (state, metrics)``.
It declares the properties it ``requires`` and ``provides``; a
:class:`Pipeline` checks when it is built that every requirement is provided
by an earlier pass. Pipelines are values (like ``optax.chain``) and also parse
from strings such as ``"tile | svd | clements | quantize(bits=10) | lower"``
with a small hand-written parser (no ``eval``). Pass names resolve through
the ``photocomp.passes`` entry-point group.

Example:
  >>> p = Pipeline.parse("validate | tile | svd | clements | lower")
  >>> [q.name for q in p.passes]
  ['validate', 'tile', 'svd', 'clements', 'lower']
"""

from __future__ import annotations

import abc
import dataclasses
import re
import time
import types
from collections.abc import Callable
from typing import ClassVar

from photocomp.compiler.state import CompileState
from photocomp.core.errors import InvalidInputError, InvalidTypeError, PipelineError, UnknownNameError
from photocomp.core.ir import PassRecord
from photocomp.core.registry import entry_points

__all__ = ["Pass", "Pipeline", "parse_pipeline", "get_pass", "available_passes", "INITIAL_PROPERTIES"]

INITIAL_PROPERTIES = frozenset({"weights"})
"""Properties every compile starts with: ``compile`` validates the weights on entry."""


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
    def spec(self) -> str:
        """This pass as pipeline-string text, e.g. ``quantize(bits=10)``."""
        args = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v != f.default:
                args.append(f"{f.name}={_format_arg(v)}")
        return f"{self.name}({', '.join(args)})" if args else self.name


def _format_arg(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", v):
            return v
        if '"' not in v:
            return f'"{v}"'
        if "'" not in v:
            return f"'{v}'"
        raise PipelineError(f"pass parameter {v!r} holds both quote kinds and cannot be written as pipeline text")
    return repr(v)


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """An ordered, validated sequence of passes.
    Raises:
      PipelineError: if a pass's requirement is not provided by an earlier pass.
    """
    passes: tuple

    def __post_init__(self):
        passes = tuple(self.passes)
        object.__setattr__(self, "passes", passes)
        have: set = set(INITIAL_PROPERTIES)
        for i, p in enumerate(passes):
            if not isinstance(p, Pass):
                raise InvalidTypeError(f"pipeline element {i} must be a photocomp Pass; got {type(p).__name__}")
            missing = sorted(p.requires - have)
            if missing:
                providers = _providers(missing)
                raise PipelineError(
                    f"pass {p.name!r} (position {i}) requires {missing}, which no earlier pass provides; "
                    f"add {providers} before it"
                )
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

    def run(self, state: CompileState, callback: Callable | None = None) -> CompileState:
        """Run every pass, recording wall time and metrics.
        Args:
          state: the initial :class:`CompileState`.
          callback: optional ``callback(pass_, record, state)`` called after each pass
            (an instrumentation hook, e.g. for progress or logging).
        """
        for p in self.passes:
            t0 = time.perf_counter()
            new_state, metrics = p(state)
            wall = time.perf_counter() - t0
            rec = PassRecord(p.name, p.spec(), wall, types.MappingProxyType(dict(metrics)))
            state = new_state.replace(
                provided=new_state.provided | p.provides, records=new_state.records + (rec,)
            )
            if callback is not None:
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

    return {name: ep.load() for name, ep in entry_points("photocomp.passes").items()}


def available_passes() -> list[str]:
    """Names of every registered pass."""
    return sorted(entry_points("photocomp.passes"))


def get_pass(name: str, **params) -> Pass:
    """Instantiate the registered pass ``name`` with keyword parameters."""
    eps = entry_points("photocomp.passes")
    if name not in eps:
        raise UnknownNameError(f"pass name must be one of {sorted(eps)}; got {name!r}")
    cls = eps[name].load()
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise PipelineError(f"pass {name!r} has no parameter(s) {unknown}; parameters: {sorted(fields) or 'none'}")
    try:
        return cls(**params)
    except (InvalidInputError, InvalidTypeError, UnknownNameError) as exc:
        raise PipelineError(f"invalid parameters for pass {name!r}: {exc}") from None


# ---- the pipeline-string parser ------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
      | (?P<str>"[^"]*"|'[^']*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_\-]*)
      | (?P<op>[|(),=])
    )""",
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    pos = 0
    out = []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            while text[pos].isspace():
                pos += 1
            raise PipelineError(f"pipeline: unexpected character {text[pos]!r} at position {pos} in {text!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


def _value(kind: str, tok: str):
    if kind == "num":
        return float(tok) if any(c in tok for c in ".eE") else int(tok)
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
    words (strings). Nothing is evaluated.

    Raises:
      PipelineError: on malformed text, unknown parameters or unmet requirements.
      UnknownNameError: on an unknown pass name.
    """
    if not isinstance(text, str):
        raise InvalidTypeError(f"pipeline must be a string; got {type(text).__name__}")
    if not text.strip():
        raise PipelineError("pipeline must name at least one pass; got an empty string")
    toks = _tokenize(text)
    i = 0
    passes = []

    def expect(kinds, what):
        nonlocal i
        if i >= len(toks):
            raise PipelineError(f"pipeline: expected {what} at end of {text!r}")
        kind, tok, pos = toks[i]
        if kind not in kinds and tok not in kinds:
            raise PipelineError(f"pipeline: expected {what} at position {pos} in {text!r}; got {tok!r}")
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
                            f"pipeline: parameter {key!r} given twice for pass {name!r} at position {kpos} in {text!r}"
                        )
                    expect(("=",), "'='")
                    vkind, vtok, _ = expect(("num", "str", "name"), "a value")
                    params[key] = _value(vkind, vtok)
                    _, sep, _ = expect((",", ")"), "',' or ')'")
                    if sep == ")":
                        break
        passes.append(get_pass(name, **params))
        if i >= len(toks):
            break
        expect(("|",), "'|'")
    return Pipeline(tuple(passes))
