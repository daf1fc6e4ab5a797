"""Every fenced code block of README.md runs as shown.

Each ```python block runs on its own in a fresh interpreter, in an empty temporary folder, with
``PHOTOCOMP_CACHE_DIR=""`` (nothing written to a user's compilation cache). The blocks of one test
process share one XLA compilation cache in a temporary folder (JAX's ``JAX_COMPILATION_CACHE_DIR``,
every program cached; the test session's shared folder of tests/conftest.py when there is one), as a
user's later runs share theirs: a block
loads the programs an earlier block compiled instead of compiling them again, which changes no
result (the cache keys on the program and the compiler options). Each ```bash block runs line by line in
its own empty temporary folder, so its ``photocomp ...`` commands work on the files its earlier
lines create; ``pip install`` lines and the set-up block at the top of the README are not run. Blocks
in the languages of ``SHOWN_LANGS`` (a launcher's batch script, a Kubernetes manifest) are shown, not
run: they need a cluster.

An HTML comment on the line just before a block's opening fence marks it:

* ``<!-- slow -->``: the block takes more than ~20 s (a twin calibration, an hour of drift); its
  test carries the ``slow`` marker and runs with ``pytest -m slow``.
* ``<!-- requires: NAME -->``: the block imports an optional package (e.g. ``sax``); its test is
  skipped when that package cannot be imported.

Every block is its own test, named ``readme-line-N`` after the line of its opening fence.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import XLA_CACHE_ENV
from hypothesis import given, settings
from hypothesis import strategies as st

README = Path(__file__).resolve().parent.parent / "README.md"
RUN_LANGS = ("python", "bash")
SHOWN_LANGS = ("text", "yaml")  # not run (a cluster launcher's files)
BLOCK_TIMEOUT_S = 900  # a slow block (the twin calibration) takes a few minutes on two shared cores

_FENCE = re.compile(r"^```(\S*)\s*$")
_MARK = re.compile(r"^<!--\s*(slow|requires:\s*([A-Za-z0-9_.]+))\s*-->$")


@dataclasses.dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    slow: bool = False
    requires: tuple[str, ...] = ()


def extract_blocks(text: str) -> list[Block]:
    """The fenced code blocks of ``text`` with their language, opening line and markers."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        if j == len(lines):
            raise AssertionError(f"README.md line {start + 1}: code block is never closed")
        slow, requires = False, []
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        while k >= 0 and (mark := _MARK.match(lines[k].strip())):
            if mark.group(1) == "slow":
                slow = True
            else:
                requires.append(mark.group(2))
            k -= 1
        blocks.append(Block(start + 1, lang, "\n".join(lines[start + 1:j]) + "\n", slow, tuple(requires)))
        i = j + 1
    return blocks


BLOCKS = extract_blocks(README.read_text(encoding="utf-8"))
SETUP = BLOCKS[0]  # the two set-up commands (install, demo; install, test suite): not run here


def _params():
    for block in BLOCKS:
        if block.lang not in RUN_LANGS or block is SETUP:
            continue
        marks = [pytest.mark.slow] if block.slow else []
        yield pytest.param(block, id=f"readme-line-{block.line}", marks=marks)


_XLA_CACHE: list[str] = []  # this test process's compilation cache folder, made on first use


def _xla_cache() -> str:
    """The session's shared folder (tests/conftest.py) when there is one, else a folder of this process's own."""
    shared = os.environ.get(XLA_CACHE_ENV)
    if shared:
        return shared
    if not _XLA_CACHE:
        _XLA_CACHE.append(tempfile.mkdtemp(prefix="photocomp-readme-xla-"))
        atexit.register(shutil.rmtree, _XLA_CACHE[0], ignore_errors=True)
    return _XLA_CACHE[0]


def _env() -> dict:
    env = dict(os.environ)
    env["PHOTOCOMP_CACHE_DIR"] = ""  # nothing written to the user's compilation cache
    env["JAX_COMPILATION_CACHE_DIR"] = _xla_cache()  # shared by this process's blocks (module docstring)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["MPLBACKEND"] = "Agg"
    # `python` and `photocomp` in a bash block are this interpreter's (the environment under test)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    return env


def _bash_lines(code: str) -> list[str]:
    """The commands of a bash block, one per line; blank, comment-only and ``pip install`` lines left out."""
    out = []
    for raw in code.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or re.match(r"^(python\S* -m )?pip\S* install\b", line):
            continue
        out.append(line)
    return out


def _fail(block: Block, what: str, proc: subprocess.CompletedProcess) -> str:
    return (f"README.md line {block.line}: {what} exited with {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")


def test_setup_block_is_first_and_unchanged():
    assert README.read_text(encoding="utf-8").splitlines()[:4] == [
        "# photocomp", "", "```bash", "pip install -e . && photocomp demo"]
    assert SETUP.line == 3 and SETUP.lang == "bash"
    assert SETUP.code == 'pip install -e . && photocomp demo\npip install -e ".[dev]" && pytest\n'


def test_blocks_are_found():
    langs = [b.lang for b in BLOCKS]
    assert langs.count("python") >= 8 and langs.count("bash") >= 6
    assert all(b.lang in RUN_LANGS + SHOWN_LANGS + ("",) for b in BLOCKS), langs


def test_extract_blocks_reads_markers_and_lines():
    text = "intro\n\n<!-- slow -->\n```python\nx = 1\n```\n\n<!-- requires: sax -->\n```python\nimport sax\n```\n```bash\nls\n```\n"
    blocks = extract_blocks(text)
    assert [(b.line, b.lang, b.code, b.slow, b.requires) for b in blocks] == [
        (4, "python", "x = 1\n", True, ()), (9, "python", "import sax\n", False, ("sax",)), (12, "bash", "ls\n", False, ())]
    with pytest.raises(AssertionError, match="line 2: code block is never closed"):
        extract_blocks("a\n```python\nx = 1\n")


_CODE_LINE = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                     max_size=30).filter(lambda t: not t.startswith("```"))
_BLOCK = st.tuples(st.sampled_from(["python", "bash", ""]), st.lists(_CODE_LINE, max_size=4),
                   st.booleans(), st.lists(st.sampled_from(["sax", "optax", "scipy.linalg"]), max_size=2),
                   st.lists(st.sampled_from(["prose", "", "<!-- a note -->"]), max_size=3))


@settings(max_examples=50, deadline=None)
@given(st.lists(_BLOCK, max_size=5))
def test_extract_blocks_finds_what_was_written(spec):
    lines, expected = [], []
    for lang, code, slow, requires, prose in spec:
        lines += prose
        marks = (["<!-- slow -->"] if slow else []) + [f"<!-- requires: {r} -->" for r in requires]
        lines += marks
        if not marks and lines and lines[-1].strip().startswith("<!--"):
            lines.append("prose")  # a comment right before an unmarked block would be read as its marker
        lines.append(f"```{lang}")
        expected.append(Block(len(lines), lang, "\n".join(code) + "\n", slow, tuple(reversed(requires))))
        lines += code
        lines.append("```")
    got = extract_blocks("\n".join(lines) + "\n")
    assert [(b.line, b.lang, b.code, b.slow, sorted(b.requires)) for b in got] == [
        (b.line, b.lang, b.code, b.slow, sorted(b.requires)) for b in expected]


def test_bash_lines_skip_installs_and_comments():
    code = "pip install -e .\n# a comment\n\nphotocomp demo -q   # note\npython -m pip install x\n"
    assert _bash_lines(code) == ["photocomp demo -q   # note"]


def run_block(block: Block, cwd) -> None:
    """Run ``block`` in the folder ``cwd``; AssertionError (with its output) when it fails."""
    env = _env()
    if block.lang == "python":
        proc = subprocess.run([sys.executable, "-c", block.code], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=BLOCK_TIMEOUT_S)
        assert proc.returncode == 0, _fail(block, "the python block", proc)
        return
    lines = _bash_lines(block.code)
    assert lines, f"README.md line {block.line}: a bash block with nothing to run"
    for line in lines:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=BLOCK_TIMEOUT_S)
        assert proc.returncode == 0, _fail(block, repr(line), proc)


def test_a_failing_block_fails(tmp_path):
    with pytest.raises(AssertionError, match=r"line 7: the python block exited with 1(.|\n)*NameError: name 'W'"):
        run_block(Block(7, "python", "import numpy as np\nprint(W)\n"), tmp_path)
    with pytest.raises(AssertionError, match=r"line 9: 'false' exited with 1"):
        run_block(Block(9, "bash", "echo one > a.txt\nfalse\necho never > b.txt\n"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # stops at the failing line
    with pytest.raises(AssertionError, match="must be an existing file"):  # a command against a missing file
        run_block(Block(11, "bash", "photocomp inspect missing.phases.npz\n"), tmp_path)
    with pytest.raises(AssertionError, match="nothing to run"):
        run_block(Block(13, "bash", "pip install -e .\n"), tmp_path)
    run_block(Block(15, "python", "import os, tempfile\nassert os.environ['PHOTOCOMP_CACHE_DIR'] == ''\n"
                                  "assert os.environ['JAX_COMPILATION_CACHE_DIR'].startswith(tempfile.gettempdir())\n"
                                  "open('x', 'w')\n"), tmp_path)
    assert (tmp_path / "x").exists()  # the block ran in the folder given


@pytest.mark.parametrize("block", list(_params()))
def test_readme_block(block: Block, tmp_path):
    for name in block.requires:
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"README.md line {block.line} needs the optional package {name!r}")
    run_block(block, tmp_path)
