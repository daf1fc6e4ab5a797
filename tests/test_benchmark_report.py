"""The benchmark scripts' shared writer (``benchmarks/_report.py``) and the architectures figure."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import _report  # noqa: E402


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "table.md"
    path.write_text("old")
    path.chmod(0o640)
    _report.replace_atomically(path, lambda tmp: Path(tmp).write_text("new"))
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640

    def half_written(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _report.replace_atomically(path, half_written)
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]  # no temporary file left


def test_the_architectures_figure_is_drawn_from_the_rows(tmp_path):
    pytest.importorskip("matplotlib")
    import architectures

    rows = [{"family": f, "n": n, "sigma": s, "local": 10.0 ** -(2 + n // 8) if f != "mzi3" else 0.0, "model": 1e-3}
            for f in architectures.FAMILIES for n in (8, 16) for s in (0.03, 0.06)]
    out = tmp_path / "figure.png"
    architectures.plot(out, rows, [0.03, 0.06], model=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]
