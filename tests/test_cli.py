"""The ``photocomp`` command line, run in-process (plus one run of the installed script)."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import TOL, random_matrix
from conftest import run_cli as run

import photocomp as pc
from photocomp.cli import main
from photocomp.core.errors import InvalidTypeError

COMMANDS = ["targets", "passes", "compile", "inspect", "demo"]
EXACT = "validate | tile | svd | clements | canonicalize | lower"




def assert_one_line_error(code, err, match=None):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("photocomp: error: ")
    assert "Traceback" not in err
    if match is not None:
        assert match in lines[0], lines[0]


@pytest.fixture(scope="module")
def weights():
    return random_matrix(np.random.default_rng(70), (6, 5), "real")


@pytest.fixture(scope="module")
def files(weights, tmp_path_factory):
    """The same matrix as .npy, .npz and .csv, and a complex one as .csv."""
    d = tmp_path_factory.mktemp("weights")
    np.save(d / "w.npy", weights)
    np.savez(d / "w.npz", weights=weights)
    np.savez(d / "two.npz", a=weights, b=weights)
    np.savetxt(d / "w.csv", weights, delimiter=",")
    wc = weights + 1j * random_matrix(np.random.default_rng(71), (6, 5), "real")
    np.savetxt(d / "wc.csv", wc, delimiter=",")
    (d / "bad.csv").write_text("1,2\n3,x\n")
    (d / "w.txt").write_text("1,2\n3,4\n")
    (d / "w.json").write_text("[[1, 2]]")
    np.save(d / "nan.npy", np.array([[1.0, np.nan]]))
    np.save(d / "vec.npy", np.ones(3))
    return d, wc


# ---- listing commands ------------------------------------------------------------------------------


def test_targets(capsys):
    code, out, err = run(capsys, "targets")
    assert code == 0 and err == ""
    for name in ("pace-64", "tianshu-128", "clements-<N>", "reck-<N>"):
        assert name in out
    assert "1.0GHz" in out and " 8 " in out


def test_passes(capsys):
    code, out, err = run(capsys, "passes")
    assert code == 0 and err == ""
    lines = out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == pc.available_passes()
    assert "bits=None" in out and "scheme='voltage'" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_help(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert out.startswith("usage: photocomp " + command)


def test_top_level_help_and_version(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and all(c in out for c in COMMANDS)
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"photocomp {pc.__version__}"


# ---- compile and inspect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["w.npy", "w.npz", "w.csv"])
def test_compile_formats(capsys, files, weights, tmp_path, name):
    d, _ = files
    out_file = tmp_path / "out.npz"
    code, out, err = run(capsys, "compile", str(d / name), "--target", "clements-4",
                         "--pipeline", EXACT, "-o", str(out_file), "-q")
    assert code == 0, err
    assert out.strip() == f"wrote {out_file}"
    prog = pc.load(out_file)
    np.testing.assert_allclose(prog.matrix(), weights, rtol=0, atol=TOL["complex128"])


def test_compile_complex_csv_with_report(capsys, files, tmp_path):
    d, wc = files
    out_file = tmp_path / "c.npz"
    code, out, err = run(capsys, "compile", str(d / "wc.csv"), "--target", "clements-4",
                         "--pipeline", EXACT, "-o", str(out_file))
    assert code == 0, err
    assert "Program(6x5 on clements-4" in out and "matrix_error" in out and f"wrote {out_file}" in out
    assert "real=False" in out
    np.testing.assert_allclose(pc.load(out_file).matrix(), wc, rtol=0, atol=TOL["complex128"])


def test_compile_npz_key(capsys, files, tmp_path):
    d, _ = files
    code, _, err = run(capsys, "compile", str(d / "two.npz"), "--key", "b", "--target", "clements-4",
                       "--pipeline", EXACT, "-o", str(tmp_path / "k.npz"), "-q")
    assert code == 0, err
    assert (tmp_path / "k.npz").is_file()


def test_compile_default_output_name(capsys, files, tmp_path):
    d, _ = files
    src = tmp_path / "m.npy"
    shutil.copy(d / "w.npy", src)
    code, out, err = run(capsys, "compile", str(src), "--target", "clements-4", "--pipeline", EXACT, "-q")
    assert code == 0, err
    assert (tmp_path / "m.phases.npz").is_file()


@pytest.fixture(scope="module")
def compiled_file(files, tmp_path_factory):
    d, _ = files
    out_file = tmp_path_factory.mktemp("compiled") / "w.phases.npz"
    assert main(["compile", str(d / "w.npy"), "--target", "clements-4", "-o", str(out_file), "-q"]) == 0
    return out_file


def test_inspect(capsys, compiled_file):
    code, out, err = run(capsys, "inspect", str(compiled_file))
    assert code == 0 and err == ""
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.strip().splitlines())
    assert rows["target"].startswith("clements-4 (clements, 4 modes, 12-bit DAC)")
    assert rows["matrix"] == "6x5"
    assert rows["tiles"].startswith("4 (2x2 of 4x4)")
    prog = pc.load(compiled_file)
    assert rows["MZIs"].startswith(str(prog.n_mzi))
    assert rows["optical depth"] == f"{prog.depth} columns"
    assert "matrix error" in rows and "min mesh fidelity" in rows
    assert rows["V mesh phases"].startswith("theta [") and "phi [" in rows["V mesh phases"]
    assert rows["attenuators"].startswith("sigma [")
    assert "quantize(bits=12)" in rows["pipeline"]


def test_demo(capsys, tmp_path):
    out_file = tmp_path / "demo.npz"
    code, out, err = run(capsys, "demo", "-o", str(out_file), "-q")
    assert code == 0, err
    # -q: no header, no program, no report; only the line saying what was written (it printed the report)
    assert len(out.splitlines()) == 1 and out.startswith(f"wrote {out_file}; ")
    assert "reloaded forward bit-identical: True" in out
    assert out_file.is_file() and pc.load(out_file).shape == (100, 80)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.npz"]


# ---- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, match",
    [
        (["bogus"], "invalid choice: 'bogus'"),
        ([], "required: COMMAND"),
        (["compile"], "required: weights"),
        (["compile", "{d}/w.npy", "--bogus"], "unrecognized arguments: --bogus"),
        (["compile", "{d}/missing.npy"], "weights file must exist"),
        (["compile", "{d}/w.json", "-o", "{t}/x.npz"], "must end in .npy, .npz or .csv"),
        (["compile", "{d}/w.txt", "-o", "{t}/x.npz"], "weights must end in .npy, .npz or .csv; got"),
        (["compile", "{d}/w.npy", "--key", "a", "-o", "{t}/x.npz"], "--key applies to an .npz weights file only"),
        (["compile", "{d}/bad.csv", "-o", "{t}/x.npz"], "cannot read weights"),
        (["compile", "{d}/two.npz", "-o", "{t}/x.npz"], "choose one with --key"),
        (["compile", "{d}/two.npz", "--key", "c", "-o", "{t}/x.npz"], "--key must be one of"),
        (["compile", "{d}/nan.npy", "-o", "{t}/x.npz"], "weights must be finite"),
        (["compile", "{d}/vec.npy", "-o", "{t}/x.npz"], "weights must be a finite 2-D array"),
        (["compile", "{d}/w.npy", "--target", "nope", "-o", "{t}/x.npz"], "target must be one of"),
        (["compile", "{d}/w.npy", "--target", "clements-1", "-o", "{t}/x.npz"], "mesh size N"),
        (["compile", "{d}/w.npy", "--target", "clements-4", "--pipeline", "tile |", "-o", "{t}/x.npz"],
         "--pipeline: expected a pass name at end of 'tile |'"),
        (["compile", "{d}/w.npy", "--target", "clements-4", "--pipeline", "tile | svd | frob", "-o", "{t}/x.npz"],
         "--pipeline: pass name must be one of"),
        (["compile", "{d}/w.npy", "--target", "clements-4", "--pipeline", "tile | svd | reck", "-q", "-o", "{t}/x.npz"],
         "--pipeline: pass 'reck' builds a reck mesh but target 'clements-4' is a clements chip; use the 'clements' pass"),
        (["compile", "{d}/w.npy", "--target", "clements-4", "-q", "-o", "{t}/no/such/dir/x.npz"], "folder must exist"),
        (["inspect", "{d}/missing.npz"], "must be an existing file"),
        (["inspect", "{d}/w.npz"], "no __meta__"),
        (["inspect", "{d}/w.csv"], "cannot read"),
        (["inspect", "{d}/w.npy"], None),
        (["demo", "-q", "-o", "{t}/no/such/dir/demo.npz"], "folder must exist"),
    ],
)
def test_bad_input_gives_one_line_error(capsys, files, tmp_path, argv, match):
    d, _ = files
    argv = [a.format(d=d, t=tmp_path) for a in argv]
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err, match)
    assert not (tmp_path / "x.npz").exists()


def test_error_after_progress_bar_is_the_last_line(capsys, files, tmp_path):
    """Without -q the progress bar shares stderr; the error is still one final line."""
    d, _ = files
    code, _, err = run(capsys, "compile", str(d / "w.npy"), "--target", "clements-4",
                       "--pipeline", "tile | svd | reck", "-o", str(tmp_path / "x.npz"))
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("photocomp: error: --pipeline: pass 'reck'")
    assert not (tmp_path / "x.npz").exists()


def test_installed_console_script():
    exe = shutil.which("photocomp")
    assert exe is not None, "the photocomp console script is not installed"
    out = subprocess.run([exe, "targets"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pace-64" in out.stdout and "tianshu-128" in out.stdout
    bad = subprocess.run([exe, "compile", "/nonexistent/w.npy"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("photocomp: error: ") and "Traceback" not in bad.stderr


@pytest.mark.slow  # run by .ci/run after the fast suite
def test_compile_cache_is_kept_and_reused(files, tmp_path):
    """The command keeps compiled programs in $PHOTOCOMP_CACHE_DIR; a second run reuses them and writes the
    same phase map; --no-compile-cache and an empty variable leave the disk alone."""
    d, _ = files
    cache = tmp_path / "cache"

    def compile_(out, *extra, cache_dir=str(cache)):
        env = dict(os.environ, PHOTOCOMP_CACHE_DIR=cache_dir)
        args = [sys.executable, "-m", "photocomp.cli", *extra, "compile", str(d / "w.npy"), "--target",
                "clements-4", "-o", str(tmp_path / out), "-q"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        return pc.load(tmp_path / out)

    first = compile_("a.npz")
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "no compiled program was cached"
    second = compile_("b.npz")
    assert sorted(p.name for p in cache.iterdir()) == entries  # nothing new to compile: all reused
    for name in ("v", "u"):
        for field in ("theta", "phi", "out_phase"):
            np.testing.assert_array_equal(getattr(getattr(second.phase_map, name), field),
                                          getattr(getattr(first.phase_map, name), field))
    compile_("c.npz", "--no-compile-cache", cache_dir=str(tmp_path / "off1"))
    compile_("d.npz", cache_dir="")
    assert not (tmp_path / "off1").exists()


def test_enable_compilation_cache_rejects_a_bad_path():
    from photocomp.io.cache import enable_compilation_cache

    with pytest.raises(InvalidTypeError, match="path must be a str or os.PathLike; got int"):
        enable_compilation_cache(3)
