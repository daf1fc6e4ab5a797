"""Write docs/api.md, the API reference, from photocomp's public names and their docstrings.

The reference covers every name in ``photocomp.__all__`` and
``photocomp.drift.__all__`` and ``photocomp.nn.__all__``, and the public modules whose names are not
re-exported at the top level (cost report, netlist export, figures). For each
function: its signature, the first line of its docstring and its
``Args``/``Returns`` sections (where the units are written); for each class:
its constructor, summary, ``Attributes``/``Args`` and its public methods and
properties, one line each.

Usage::

    python docs/gen_api.py            # rewrite docs/api.md
    python docs/gen_api.py --check    # exit 1 if docs/api.md is out of date

``tests/test_docs.py`` runs :func:`render` and compares it with the committed
file, so the reference moves with the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
import types
from pathlib import Path

OUT = Path(__file__).resolve().parent / "api.md"

# (module, names): names None means the module's __all__
SECTIONS = (
    ("photocomp", None),
    ("photocomp.drift", None),
    ("photocomp.nn", None),
    ("photocomp.analysis.cost", ("GROUP_INDEX", "SPEED_OF_LIGHT_M_S")),
    ("photocomp.core.graph", ("to_sax_netlist", "export_netlist", "NETLIST_MODELS")),
    ("photocomp.analysis.plot", None),
)

# a section starts with one of these words at the docstring's left margin and ends its line with a colon,
# e.g. "Args:" or "Attributes (defaults and where they come from):"
_HEAD = re.compile(r"^(Args|Arguments|Attributes|Returns|Raises|Examples?|References|Yields|Notes?)\b[^:]*:$")
_KEPT = {"Args": "Args", "Arguments": "Args", "Attributes": "Attributes", "Returns": "Returns"}
_MAX_VALUE = 120


# ---- docstrings ----------------------------------------------------------------------------


def _plain(text: str) -> str:
    """Sphinx roles and double back-quotes as Markdown code spans."""
    text = re.sub(r":(?:func|class|meth|attr|mod|data|exc|obj):`~?([^`]+)`", lambda m: f"`{m.group(1)}`", text)
    return text.replace("``", "`")


def _summary(doc: str) -> str:
    """The first sentence-paragraph of a docstring, on one line."""
    para = []
    for line in doc.strip().splitlines():
        if not line.strip() or _HEAD.match(line):
            break
        para.append(line.strip())
    return _plain(" ".join(para))


def _sections(doc: str) -> dict:
    """``{"Args": [(name, text)], "Attributes": [...], "Returns": [("", text)]}`` of a Google-style docstring."""
    out: dict = {}
    current = None
    indent = None
    for line in doc.splitlines():
        stripped = line.strip()
        head = _HEAD.match(line)
        if head:
            current = _KEPT.get(head.group(1))
            indent = None
            if current:
                out.setdefault(current, [])
            continue
        if current is None:
            continue
        if not stripped:
            continue
        level = len(line) - len(line.lstrip())
        if level == 0:  # the section ended with a paragraph
            current = None
            continue
        if indent is None:
            indent = level
        if current == "Returns":
            if out[current]:
                out[current][-1] = ("", out[current][-1][1] + " " + stripped)
            else:
                out[current].append(("", stripped))
            continue
        m = re.match(r"([\w*, ]+?)\s*(?:\([^)]*\))?:\s*(.*)$", stripped)
        if level == indent and m:
            out[current].append((m.group(1).strip(), m.group(2)))
        elif out[current]:
            name, text = out[current][-1]
            out[current][-1] = (name, (text + " " + stripped).strip())
    return {k: [(n, _plain(t)) for n, t in v] for k, v in out.items() if v}


# ---- signatures ----------------------------------------------------------------------------


def _value(v) -> str:
    if isinstance(v, dict) and any(inspect.isclass(x) for x in v.values()):
        text = "{" + ", ".join(f"{k!r}: {x.__name__ if inspect.isclass(x) else repr(x)}" for k, x in v.items()) + "}"
    else:
        text = repr(v)
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)
    if len(text) > _MAX_VALUE:
        text = text[: _MAX_VALUE - 3] + "..."
    return text


def _annotation(ann) -> str:
    """An annotation as written (``from __future__ import annotations`` keeps them as strings)."""
    text = ann if isinstance(ann, str) else inspect.formatannotation(ann)
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" else text


def _signature(obj) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    parts = []
    seen_kw_only = False
    params = list(sig.parameters.values())
    for i, p in enumerate(params):
        if p.kind is p.VAR_POSITIONAL:
            seen_kw_only = True
        if p.kind is p.KEYWORD_ONLY and not seen_kw_only:
            parts.append("*")
            seen_kw_only = True
        text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
        if p.annotation is not p.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not p.empty:
            text += (" = " if p.annotation is not p.empty else "=") + _value(p.default)
        parts.append(text)
        if p.kind is p.POSITIONAL_ONLY and (i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY):
            parts.append("/")
    out = f"({', '.join(parts)})"
    ret = sig.return_annotation
    if ret is not sig.empty and not (inspect.isclass(obj) and _annotation(ret) == "None"):
        out += " -> " + _annotation(ret)
    return out


# ---- rendering -----------------------------------------------------------------------------


def _doc_lines(doc: str, *, sections=("Args", "Attributes", "Returns")) -> list[str]:
    lines = []
    summary = _summary(doc)
    if summary:
        lines += [summary, ""]
    found = _sections(doc)
    for key in sections:
        if key not in found:
            continue
        if key == "Returns":
            lines += [f"Returns: {found[key][0][1]}", ""]
            continue
        lines.append(f"{key}:")
        lines += [f"- `{n}`: {t}" if t else f"- `{n}`" for n, t in found[key]]
        lines.append("")
    return lines


def _members(cls) -> list[str]:
    """Public methods and properties defined on ``cls`` (one line each)."""
    out = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            out.append(f"- `.{name}` (property): {_summary(inspect.getdoc(member) or '')}".rstrip(": "))
        elif isinstance(member, (staticmethod, classmethod)) or inspect.isfunction(member):
            func = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            sig = _signature(func)
            if not isinstance(member, staticmethod):  # drop self / cls
                sig = re.sub(r"^\((self|cls)(, )?", "(", sig)
            out.append(f"- `.{name}{sig}`: {_summary(inspect.getdoc(func) or '')}".rstrip(": "))
    return out


def _entry(module: str, name: str, obj) -> list[str]:
    qual = f"{module}.{name}"
    if isinstance(obj, types.ModuleType):
        names = getattr(obj, "__all__", [])
        return [f"### `{qual}` (module)", "", _summary(obj.__doc__ or ""), "",
                "Public names: " + ", ".join(f"`{n}`" for n in names) + ".", ""]
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            bases = ", ".join(b.__name__ for b in obj.__bases__)
            return [f"### `{name}({bases})` (exception)", "", _summary(inspect.getdoc(obj) or ""), ""]
        kind = "frozen dataclass" if dataclasses.is_dataclass(obj) and obj.__dataclass_params__.frozen else (
            "dataclass" if dataclasses.is_dataclass(obj) else "class")
        lines = [f"### `{name}{_signature(obj)}` ({kind})", ""]
        lines += _doc_lines(inspect.getdoc(obj) or "", sections=("Args", "Attributes"))
        members = _members(obj)
        if members:
            lines += ["Methods and properties:"] + members + [""]
        return lines
    if callable(obj):
        return [f"### `{name}{_signature(obj)}`", ""] + _doc_lines(inspect.getdoc(obj) or "")
    return [f"### `{name}` = `{_value(obj)}`", ""]


def _anchor(module: str) -> str:
    return "#" + module.replace(".", "").lower()


def render() -> str:
    """The text of docs/api.md."""
    lines = [
        "# API reference",
        "",
        "Generated by `python docs/gen_api.py` from the public names (`__all__`) of photocomp's modules and "
        "their docstrings; do not edit by hand (`tests/test_docs.py` checks that this file is up to date). "
        "Units are in the names (`_mw`, `_um`, `_s`, `_k`, ...) or in the argument descriptions; phases are "
        "in radians. In signatures, `ArrayLike` is `jax.typing.ArrayLike` (computed in JAX), `npt.ArrayLike` "
        "is `numpy.typing.ArrayLike` (converted with NumPy); `jax.Array` and `np.ndarray` are the JAX and NumPy "
        "results.",
        "",
        "Modules: " + " · ".join(f"[`{m}`]({_anchor(m)})" for m, _ in SECTIONS),
        "",
    ]
    for module, names in SECTIONS:
        mod = importlib.import_module(module)
        names = list(mod.__all__ if names is None else names)
        lines += [f"## {module}", "", _summary(mod.__doc__ or ""), ""]
        for name in names:
            lines += _entry(module, name, getattr(mod, name))
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip("\n") + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/api.md differs from the generated text")
    ap.add_argument("--out", type=Path, default=OUT, help="output file (default docs/api.md)")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'out of date; run python docs/gen_api.py'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
