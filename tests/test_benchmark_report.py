"""The benchmark scripts' shared writer (``benchmarks/_report.py``), the architectures figure and the measurement-cost goal and figure."""

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


def test_interleaved_timings_go_in_rounds(monkeypatch):
    """First calls and warm-ups one function after the other, then one timed call of each per round; a function
    leaves the rounds at ``repeats`` calls or when its budget is spent (after MIN_TIMED calls), the others go on."""
    clock = {"t": 0.0}
    monkeypatch.setattr(_report.time, "perf_counter", lambda: clock["t"])
    calls = []

    def fn(name, cost):
        def call():
            calls.append(name)
            clock["t"] += cost
            return len(calls)
        return call

    out = _report.interleaved({"a": fn("a", 1.0), "b": fn("b", 4.0)}, repeats=5, warmup=1, budget_s=20.0)
    # b: first 4 s, no warm-up (4 + 4 > 20 / 4), then timed while its total stays within 20 s: 4 calls (20 s),
    # a fifth would reach 24; a: first, one warm-up, then all 5 timed calls
    assert calls == ["a", "a", "b", "a", "b", "a", "b", "a", "b", "a", "b", "a"]
    assert out["a"]["times"] == [1.0] * 5 and out["b"]["times"] == [4.0] * 4
    assert out["a"]["first"] == 1.0 and out["b"]["first"] == 4.0
    assert out["a"]["results"] == [4, 6, 8, 10, 12] and out["b"]["results"] == [5, 7, 9, 11]


def test_the_architectures_figure_is_drawn_from_the_rows(tmp_path):
    pytest.importorskip("matplotlib")
    import architectures

    rows = [{"family": f, "n": n, "sigma": s, "local": 10.0 ** -(2 + n // 8) if f != "mzi3" else 0.0, "model": 1e-3}
            for f in architectures.FAMILIES for n in (8, 16) for s in (0.03, 0.06)]
    out = tmp_path / "figure.png"
    architectures.plot(out, rows, [0.03, 0.06], model=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]


def _cost_row(target, method, shots, error, readings, model=0.05):
    return {"target": target, "method": method, "shots": shots, "error": error, "readings": readings,
            "chip_s": readings * 1e-9, "model": model, "split": "-", "wall_s": 1.0}


def test_the_measurement_cost_goal_takes_the_fewest_readings_within_the_ratio():
    import measurement_cost as mc

    rows = [_cost_row("clements-64", "twin", 1000, 0.06, 2_340_000),
            _cost_row("clements-64", "twin-frugal", 100, 0.0588, 25_100),
            _cost_row("clements-64", "nullify", 100, 0.2, 10_000),  # fewer readings, but 4x the model: not it
            _cost_row("clements-16", "twin-frugal", 100, 0.05, 100)]
    line = mc.goal_line(rows)
    assert "twin-frugal at 100 shots: 1.18x with 25,100 readings" in line and line.endswith("| yes |")
    rows[1]["readings"] = 300_000
    assert mc.goal_line(rows).endswith("| no |")
    assert mc.goal_line(rows[2:3]).endswith("no method reached 1.5x | no |")
    assert "not run" in mc.goal_line(rows[3:])
    assert mc.ratio(0.01, 0.0) == "-" and mc.ratio(0.03, 0.02) == "1.50"


def test_the_measurement_cost_figure_is_drawn_from_the_rows(tmp_path):
    pytest.importorskip("matplotlib")
    import measurement_cost as mc

    rows = [_cost_row(t, m, s, 0.05 * (1 + 1 / s) if t != "crossbar-4" else 0.0, 1000 * s,
                      model=0.05 if t != "crossbar-4" else 0.0)
            for t in ("clements-8", "crossbar-4") for m in mc.METHODS for s in (100, 1000)]
    out = tmp_path / "cost.png"
    mc.plot(out, rows)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cost.png"]


@pytest.mark.parametrize("direction", ["right", "left"])
def test_the_step_probes_rotate_alike_in_both_layouts(direction):
    """benchmarks/kernel_steps.py times the same steps in the complex and the split layout: the split one's real
    arithmetic gives the complex one's matrix, and both are the steps of a plain loop over the entries."""
    import jax
    import kernel_steps
    import numpy as np

    from photocomp.compiler.decompose import step_rotation

    n, length = 8, 5
    with jax.enable_x64(True):
        u = np.asarray(kernel_steps.matrix(n, "complex128", seed=3))
        split = np.asarray(kernel_steps.matrix(n, "split float64", seed=3))
        np.testing.assert_array_equal(split[:, 0] + 1j * split[:, 1], u)
        got = np.asarray(kernel_steps.probe(n, length, direction, "complex128")(u))
        got_split = np.asarray(kernel_steps.probe(n, length, direction, "split float64")(split))
        ref = u.copy()
        cf = np.asarray(step_rotation(ref[0, 0], ref[0, 1], False))
        for j in range(n * (n - 1) // 2):  # the probe's loop, one entry pair at a time
            k = j % (n - 2)
            if direction == "right":
                x0, x1 = ref[:length, k].copy(), ref[:length, k + 1].copy()
                ref[:length, k], ref[:length, k + 1] = cf[0] * x0 - cf[3] * x1, cf[1] * x0 + cf[2] * x1
                cf = np.asarray(step_rotation(ref[n - 2 - k, k], ref[n - 2 - k, k + 1], False))
            else:
                cols = slice(n - length, n)
                x0, x1 = ref[k, cols].copy(), ref[k + 1, cols].copy()
                ref[k, cols], ref[k + 1, cols] = cf[0] * x0 - cf[3] * x1, cf[1] * x0 + cf[2] * x1
                cf = np.asarray(step_rotation(ref[k, k], ref[k + 1, k], True))
    assert np.abs(got - u).max() > 1e-3  # the steps changed the matrix
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)
    np.testing.assert_allclose(got_split[:, 0] + 1j * got_split[:, 1], got, rtol=0, atol=1e-13)
