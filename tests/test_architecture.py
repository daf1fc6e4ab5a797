"""The package's shape: layers that import only downwards, no import cycles, no private imports,
and ``photocomp.passes`` / ``photocomp.targets`` installed under photocomp's own name.

The import graph is read from the source files themselves (every ``import``
statement, function-level ones included), with ``passes/`` and ``targets/``
mapped to the packages they install as. ``.ci/run`` checks the same layers
with import-linter on an installed copy (``.importlinter``).
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import networkx as nx
import pytest

import photocomp as pc

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = {"photocomp": ROOT / "photocomp", "photocomp.passes": ROOT / "passes", "photocomp.targets": ROOT / "targets"}

# lowest first; a module may import its own layer and the layers before it
LAYERS = ("core", "sim", "hardware", "io", "compiler", "passes", "targets", "calibration", "drift", "models", "nn", "analysis", "cli")


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for pkg, root in SOURCES.items():
        for f in root.rglob("*.py"):
            rel = f.relative_to(root).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            mods[".".join((pkg, *rel))] = f
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The photocomp module an import names (``photocomp.core.ir.PhaseMap`` -> ``photocomp.core.ir``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: pathlib.Path):
    """(imported module, line, names) for every photocomp import in a file, at any depth."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "photocomp":
                    yield _resolve(a.name), node.lineno, ()
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(parent + ([base] if base else []))
            if base.split(".")[0] != "photocomp":
                continue
            for a in node.names:
                target = _resolve(f"{base}.{a.name}")
                yield target, node.lineno, (a.name,)


def _graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for mod, path in MODULES.items():
        g.add_node(mod)
        for target, line, names in _imports(mod, path):
            if target and target != mod:
                g.add_edge(mod, target)
                g.edges[mod, target].setdefault("lines", []).append((line, names))
    return g


GRAPH = _graph()


def _layer(mod: str) -> int | None:
    parts = mod.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_sits_in_a_layer():
    loose = [m for m in MODULES if m not in ("photocomp", "photocomp.__main__") and _layer(m) is None]
    assert loose == [], f"modules outside the layers {LAYERS}: {loose}"


def test_layers_import_only_downwards():
    upward = []
    for a, b, data in GRAPH.edges(data=True):
        la, lb = _layer(a), _layer(b)
        if la is not None and lb is not None and lb > la:
            upward.append(f"{a} -> {b} (lines {[line for line, _ in data['lines']]})")
    assert upward == [], "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycles_at_any_level():
    # the package root re-exports the API; nothing below it may import it back
    into_root = [a for a, b in GRAPH.edges if b == "photocomp" and a not in ("photocomp.cli", "photocomp.__main__")]
    assert into_root == [], f"modules importing the photocomp root: {into_root}"
    cycles = list(nx.simple_cycles(GRAPH))
    assert cycles == [], f"import cycles: {cycles[:5]}"


def test_no_private_names_cross_module_boundaries():
    private = []
    for mod, path in MODULES.items():
        for target, line, names in _imports(mod, path):
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    private.append(f"{mod}:{line} imports {target}.{n}")
    assert private == []


def test_the_graph_sees_function_level_imports():
    """The checks above are not vacuous: a function-level upward import would be caught."""
    src = textwrap.dedent("""
        def f():
            from photocomp.analysis.cost import cost
            return cost
    """)
    tree_imports = [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)]
    assert [n.module for n in tree_imports] == ["photocomp.analysis.cost"]
    assert _resolve("photocomp.analysis.cost.cost") == "photocomp.analysis.cost"
    assert _layer("photocomp.analysis.cost") > _layer("photocomp.core.ir")
    assert GRAPH.has_edge("photocomp.compiler.program", "photocomp.io.program_file")


def test_one_version_source():
    assert pc.__version__ == importlib.metadata.version("photocomp")
    writers = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "photocomp").rglob("*.py")
                     if re.search(r"^\s*__version__ = ", p.read_text(encoding="utf-8"), re.M))
    assert writers == ["photocomp/core/version.py"]  # reads the installed metadata, written nowhere else


def _run(code: str, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_import_leaves_passes_and_targets_unloaded(tmp_path):
    r = _run("import sys, photocomp; print(sorted(m for m in sys.modules if m.startswith('photocomp.passes') "
             "or m.startswith('photocomp.targets') or m in ('passes', 'targets')))", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_python_dash_m_photocomp(tmp_path):
    r = subprocess.run([sys.executable, "-m", "photocomp", "--version"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"photocomp {pc.__version__}"


_SHADOWS = {
    "targets.py": "raise ImportError('the user\\'s own targets.py was imported')\n",
    "passes/__init__.py": "raise ImportError('the user\\'s own passes/ was imported')\n",
}
_COMPILE = ("import numpy as np, photocomp as pc; p = pc.compile(np.eye(4), target='clements-4'); "
            "import photocomp.passes as ps, photocomp.targets as ts; print(p.n_tiles, ps.__file__, ts.__file__)")


def _user_folder(tmp_path) -> pathlib.Path:
    for name, text in _SHADOWS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_user_passes_and_targets_in_the_working_folder_do_not_interfere(tmp_path):
    """The installed photocomp (editable here) ignores a user's own targets.py and passes/ in the cwd."""
    r = _run(_COMPILE, _user_folder(tmp_path))
    assert r.returncode == 0, r.stderr
    n_tiles, passes_file, targets_file = r.stdout.split()
    assert n_tiles == "1"
    assert pathlib.Path(passes_file).parent.name == "passes" and str(tmp_path) not in passes_file
    assert str(tmp_path) not in targets_file


@pytest.mark.slow
def test_wheel_install_keeps_passes_and_targets_inside_photocomp(tmp_path):
    """A normal (non-editable) install puts passes and targets under photocomp/ and nothing at the top level."""
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                        str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    installed = sorted(p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".egg-info")))
    assert installed == ["bin", "photocomp"]  # bin/: the photocomp command
    assert (site / "photocomp" / "passes" / "svd.py").is_file()
    assert (site / "photocomp" / "targets" / "chips.py").is_file()
    user = _user_folder(tmp_path / "user")
    r = _run(_COMPILE, user, env={"PYTHONPATH": str(site)})
    assert r.returncode == 0, r.stderr
    n_tiles, passes_file, targets_file = r.stdout.split()
    assert n_tiles == "1"
    assert passes_file.startswith(str(site)) and targets_file.startswith(str(site))
