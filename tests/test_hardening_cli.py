"""The command line under abuse: interrupts, output paths, write failures, argument names, and property tests
over argument vectors run in-process through ``photocomp.cli.main``."""

from __future__ import annotations

import _thread
import contextlib
import errno
import gc
import hashlib
import io
import os
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import photocomp as pc
from photocomp import cli
from photocomp.cli import main
from photocomp.core.registry import quote

EXACT = "tile | svd | clements | lower"


def run(*argv):
    """main(argv) in this process -> (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def one_line_error(code, err, match=None, expect=2):
    assert code == expect, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("photocomp: error: "), lines[0]
    if match is not None:
        assert match in lines[0], lines[0]
    return lines[0]


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Tiny inputs: weights (.npy, .npz, .csv), a compiled and a calibrated clements-4 program, a drift CSV."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(4)
    w = rng.normal(size=(4, 4))
    np.save(d / "w.npy", w)
    np.savez(d / "w.npz", weights=w)
    np.savez(d / "two.npz", a=w, b=w)
    np.savetxt(d / "w.csv", w, delimiter=",")
    (d / "w.txt").write_text("1,2\n3,4\n")
    (d / "empty.csv").write_text("")
    prog = pc.compile(w, target="clements-4", pipeline=EXACT, progress=False)
    prog.save(d / "prog.npz")
    chip = pc.fabricate("clements-4", seed=11)
    cal = pc.calibrate(prog, chip, method="local", progress=False)
    cal.save(d / "cal.npz")
    study = pc.drift.study(cal, chip, hours=0.002, dt_s=2.0, compensators=["none"], progress=False)
    study.to_csv(d / "drift.csv")
    return d


@pytest.fixture
def out(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- output paths ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, match", [
    # `compile -o out.png` wrote an npz archive named .png
    (["compile", "{i}/w.npy", "--target", "clements-4", "-o", "{o}/out.png"], "-o/--output must end in .npz; got '"),
    (["calibrate", "{i}/prog.npz", "--chip-seed", "11", "--method", "local", "-o", "{o}/out.csv"],
     "-o/--output must end in .npz; got"),
    (["drift", "{i}/cal.npz", "--hours", "0.002", "-o", "{o}/out.npz"], "-o/--output must end in .csv; got"),
    (["drift", "{i}/cal.npz", "--hours", "0.002", "--plot", "{o}/out.jpg"], "--plot must end in .png, .pdf or .svg"),
    (["plot", "{i}/prog.npz", "-o", "{o}/out.npz"], "-o/--output must end in .png, .pdf or .svg; got"),
    (["inspect", "{i}/prog.npz", "--graph", "{o}/out.txt"], "--graph must end in .graphml or .json; got"),
    (["inspect", "{i}/prog.npz", "--netlist", "{o}/out.graphml"], "--netlist must end in .json; got"),
    (["demo", "-q", "-o", "{o}/out.png"], "-o/--output must end in .npz; got"),
    (["compile", "{i}/w.npy", "--target", "clements-4", "-o", ""], "-o/--output must be a non-empty path"),
])
def test_output_suffix_is_checked_before_any_work(inputs, out, argv, match):
    code, stdout, err = run(*[a.format(i=inputs, o=out) for a in argv])
    one_line_error(code, err, match)
    assert stdout == "" and leftovers(out) == []


def test_output_that_is_the_input_is_refused(inputs, tmp_path):
    """`compile W.npz -o W.npz` silently replaced the weights with the phase map."""
    shutil.copy(inputs / "w.npz", tmp_path / "w.npz")
    shutil.copy(inputs / "prog.npz", tmp_path / "prog.npz")
    os.link(tmp_path / "w.npz", tmp_path / "hard.npz")
    os.symlink(tmp_path / "prog.npz", tmp_path / "soft.npz")
    before = {p: digest(tmp_path / p) for p in ("w.npz", "prog.npz")}
    cases = [
        (["compile", tmp_path / "w.npz", "--target", "clements-4", "-o", tmp_path / "w.npz"],
         "-o/--output must differ from weights: writing '"),
        (["compile", tmp_path / "w.npz", "--target", "clements-4", "-o", tmp_path / "hard.npz"],
         "-o/--output must differ from weights"),
        (["compile", tmp_path / "w.npz", "--target", "clements-4", "-o", f"{tmp_path}/./sub/../w.npz"],
         "-o/--output must differ from weights"),
        (["calibrate", tmp_path / "prog.npz", "--chip-seed", "1", "-o", tmp_path / "soft.npz"],
         "-o/--output must differ from file"),
        (["inspect", tmp_path / "prog.npz", "--graph", tmp_path / "g.json", "--netlist", tmp_path / "g.json"],
         "--netlist must differ from --graph"),
    ]
    (tmp_path / "sub").mkdir()
    for argv, match in cases:
        code, _, err = run(*argv)
        one_line_error(code, err, match)
    assert {p: digest(tmp_path / p) for p in before} == before
    assert not (tmp_path / "g.json").exists()


def test_output_folder_problems_name_the_argument(inputs, out, monkeypatch):
    base = ["compile", inputs / "w.npy", "--target", "clements-4", "-q", "-o"]
    line = one_line_error(*run(*base, out / "missing" / "x.npz")[::2], "-o/--output: cannot write '")
    assert "its folder must exist; got '" in line
    (out / "dir.npz").mkdir()
    one_line_error(*run(*base, out / "dir.npz")[::2], "-o/--output: cannot write '")
    assert "it is a folder" in run(*base, out / "dir.npz")[2]
    # a read-only folder (as root, the permission bits do not stop writes: the check is simulated)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(path) == str(out) else real_access(path, mode))
    line = one_line_error(*run(*base, out / "x.npz")[::2], "-o/--output: cannot write '")
    assert line.endswith(f"its folder {str(out)!r} is not writable")
    one_line_error(*run("drift", inputs / "cal.npz", "--hours", "0.002", "--plot", out / "p.png")[::2],
                   "--plot: cannot write '")
    assert leftovers(out) == ["dir.npz"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0555 folder")
def test_a_0555_folder_is_refused(inputs, out):
    locked = out / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, err = run("compile", inputs / "w.npy", "--target", "clements-4", "-o", locked / "x.npz")
        one_line_error(code, err, "-o/--output: cannot write '")
        assert "is not writable" in err
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("code_errno, expect, reason", [
    (errno.ENOSPC, 1, "No space left on device"),   # the run failed: exit 1
    (errno.EROFS, 2, "Read-only file system"),      # the argument is bad: exit 2
    (errno.EACCES, 2, "Permission denied"),         # a 0555 folder, for a user other than root
])
def test_write_failures_are_one_line_and_leave_nothing(inputs, out, monkeypatch, code_errno, expect, reason):
    """The disk fills up (or turns out read-only) half-way through the write."""
    def failing_savez(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError(code_errno, os.strerror(code_errno))

    monkeypatch.setattr(np, "savez", failing_savez)
    code, stdout, err = run("compile", inputs / "w.npy", "--target", "clements-4", "-q", "-o", out / "x.npz")
    line = one_line_error(code, err, f"-o/--output: cannot write {quote(str(out / 'x.npz'))}: ", expect=expect)
    assert line.endswith(reason)
    assert stdout == "" and leftovers(out) == []  # no output, no temporary file
    code, _, err = run("calibrate", inputs / "prog.npz", "--chip-seed", "3", "--method", "local", "-q",
                       "-o", out / "c.npz")
    one_line_error(code, err, "-o/--output: cannot write", expect=expect)
    assert leftovers(out) == []


def test_figure_write_failure_is_one_line(inputs, out, monkeypatch):
    import matplotlib.figure

    def full(self, f, **kw):
        f.write(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    code, _, err = run("plot", inputs / "drift.csv", "--what", "drift", "-o", out / "d.png")
    one_line_error(code, err, f"-o/--output: cannot write {quote(str(out / 'd.png'))}: No space left on device", expect=1)
    assert leftovers(out) == []


# ---- flags and names -------------------------------------------------------------------------------------------


def test_no_compile_cache_is_accepted_after_the_command(monkeypatch):
    calls = []
    monkeypatch.setattr("photocomp.io.cache.enable_compilation_cache", lambda: calls.append(1))
    assert run("targets", "--no-compile-cache")[0] == 0  # was: unrecognized arguments
    assert run("--no-compile-cache", "targets")[0] == 0
    assert calls == []
    assert run("targets")[0] == 0
    assert calls == [1]


def test_compilation_cache_in_an_impossible_folder_stays_off(tmp_path):
    """A path the file system refuses (a NUL character: ValueError, not OSError) turns the cache off, as an
    unwritable folder does, instead of failing the command."""
    import jax

    from photocomp.io.cache import enable_compilation_cache

    session = jax.config.jax_compilation_cache_dir  # the test session's (tests/conftest.py), if any
    jax.config.update("jax_compilation_cache_dir", None)  # as in a process that has none
    try:
        assert enable_compilation_cache(str(tmp_path / "bad\x00dir")) is None
        (tmp_path / "file").write_text("")
        assert enable_compilation_cache(tmp_path / "file" / "sub") is None  # a file where a folder should be
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", session)


@pytest.mark.parametrize("argv, expected", [
    (["drift", "{i}/cal.npz", "--hours", "0.001", "--dt", "10"],
     "--dt must not exceed the duration (--hours * 3600 = 3.6 s); got --dt = 10 s"),
    (["drift", "{i}/cal.npz", "--hours", "1e6", "--compensator", "none"],
     "--hours, --dt and --runs ask for 3,600,000,001 time samples in each of 1 run(s)"),
    (["drift", "{i}/cal.npz", "--hours", "0.002", "--runs", "0"],
     "argument --runs: expected an integer in [1, 1000000000]; got 0"),
    (["drift", "{i}/cal.npz", "--hours", "0.002", "--gradient-k", "1e6"],
     "argument --gradient-k: expected a finite number >= 0 and <= 100; got '1e6'"),
    (["drift", "{i}/cal.npz", "--dt", "nan"], "argument --dt: expected a finite number > 0; got 'nan'"),
    (["drift", "{i}/cal.npz", "--hours", "0.002", "--chip-seed", "12"],
     "--chip-seed must be the chip the program was calibrated for (seed 11)"),
    (["drift", "{i}/prog.npz", "--hours", "0.002"], "file must hold a calibrated program"),
    (["calibrate", "{i}/prog.npz", "--chip-seed", "-1"],
     "argument --chip-seed: expected an integer in [0, 9223372036854775807]; got -1"),
    (["calibrate", "{i}/prog.npz", "--chip-seed", "1", "--dac-bits", "40"],
     "argument --dac-bits: expected an integer in [1, 32]; got 40"),
    (["calibrate", "{i}/prog.npz", "--chip-seed", "1", "--steps", "many"],
     "argument --steps: expected an integer in [0, 1000000000]; got 'many'"),
    (["calibrate", "{i}/cal.npz", "--chip-seed", "1", "-o", "{o}/c.npz"], "file must hold an uncalibrated program"),
    (["inspect", "{i}/prog.npz", "--graph", "{o}/g.json", "--tile", "9"], "--tile must be in [0, 0]; got 9"),
    (["inspect", "{i}/missing.npz"], "file must be an existing file"),
    (["report", "{i}/prog.npz", "--batch", "0"], "argument --batch: expected an integer >= 1; got 0"),
    (["report", "{i}/prog.npz", "--group-index", "inf"], "argument --group-index: expected a finite number > 0"),
    (["plot", "{i}/drift.csv", "--what", "drift", "--tile", "0"], "--tile does not apply to --what drift"),
    (["compile", "{i}/w.npy", "--target", "nope"], "--target must be one of"),
    (["compile", "{i}/w.npy", "--target", "clements-4", "--pipeline", "tile | bogus", "-o", "{o}/x.npz"],
     "--pipeline"),
    (["compile", "{i}/w.csv", "--key", "a", "--target", "clements-4"], "--key applies to an .npz weights file only"),
    (["compile", "{i}/empty.csv", "--target", "clements-4", "-o", "{o}/x.npz"], "weights must be non-empty"),
    (["compile", "{i}/w\x00.npy", "--target", "clements-4"], "weights must be a non-empty path without NUL"),
    (["compile", "{i}/w\udcff\ud800.npy", "--target", "clements-4"], "weights must be a path the file system can encode"),
])
def test_errors_name_the_command_line_argument(inputs, out, argv, expected):
    code, _, err = run(*[a.format(i=inputs, o=out) for a in argv])
    one_line_error(code, err, expected)
    assert leftovers(out) == []


def test_long_input_is_quoted_only_up_to_a_bound(inputs):
    code, _, err = run("compile", inputs / "w.npy", "--target", "clements-" + "x" * 5000)
    assert len(one_line_error(code, err, "--target must be one of")) < 400
    code, _, err = run("compile", inputs / "w.npy", "--bogus-" + "y" * 5000)
    assert len(one_line_error(code, err, "unrecognized arguments")) < 400


# ---- interrupts --------------------------------------------------------------------------------------------------


@pytest.fixture
def terminal_sigint():
    """SIGINT handled as in a command typed at a terminal (Python's KeyboardInterrupt handler) for the test.
    A test run started in the background by a script inherits an ignored SIGINT; an interrupt sent to this
    process would then be dropped and the command under test run to its end."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def interrupt_after(seconds: float) -> threading.Timer:
    """SIGINT as the terminal sends it, to this (the main) thread, after ``seconds``."""
    timer = threading.Timer(seconds, _thread.interrupt_main)
    timer.start()
    return timer


def test_interrupt_in_process_stops_a_calibration(inputs, out, terminal_sigint):
    """A calibration keeps its best settings on KeyboardInterrupt; the command must still stop, exit 130 and
    write nothing (it used to run on to the end and exit 0)."""
    before_handler, before_hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    timer = interrupt_after(1.0)
    t0 = time.perf_counter()
    code, stdout, err = run("calibrate", inputs / "prog.npz", "--chip-seed", "5", "--method", "twin",
                            "--twin-rounds", "1000", "-q", "-o", out / "c.npz")
    timer.join()
    assert (code, err) == (130, "photocomp: interrupted\n")
    assert time.perf_counter() - t0 < 120 and stdout == "" and leftovers(out) == []
    assert signal.getsignal(signal.SIGINT) is before_handler and sys.unraisablehook is before_hook


def _interrupt_in_a_gc_callback(monkeypatch) -> list[str]:
    """Make ``pc.calibrate`` start with a collection whose callback receives a Ctrl-C (the handler runs there,
    where Python drops its exception); returns the list the names of the exceptions seen there go into."""
    seen: list[str] = []
    real = pc.calibrate

    def callback(phase, info):
        if phase != "start" or seen:
            return
        try:
            _thread.interrupt_main()
            for _ in range(10_000):  # the handler runs here, inside the callback
                pass
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    def calibrate(*args, **kwargs):
        gc.callbacks.append(callback)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(callback)
        return real(*args, **kwargs)

    monkeypatch.setattr(pc, "calibrate", calibrate)
    return seen


def test_interrupt_inside_a_gc_callback_is_not_lost(inputs, out, monkeypatch, terminal_sigint):
    """A signal handler runs wherever the interpreter is; in a garbage-collector callback (JAX registers one)
    an exception is printed as "Exception ignored ..." and dropped, and the command carried on."""
    seen = _interrupt_in_a_gc_callback(monkeypatch)
    code, stdout, err = run("calibrate", inputs / "prog.npz", "--chip-seed", "5", "--method", "local", "-q",
                            "-o", out / "c.npz")
    assert seen == ["_Interrupted"]  # raised inside the callback, where Python drops it ...
    assert (code, err) == (130, "photocomp: interrupted\n")  # ... and raised again where it stops the command
    assert leftovers(out) == []


def test_an_interrupt_not_yet_raised_stops_the_command_before_it_writes(inputs, out, monkeypatch, terminal_sigint):
    """On a loaded machine the resend of a dropped interrupt can come after the command's last step: the
    command checks for a received interrupt before it writes anything (here the resend never comes)."""
    monkeypatch.setattr(cli._Sigint, "_resend", lambda self: None)
    seen = _interrupt_in_a_gc_callback(monkeypatch)
    code, stdout, err = run("calibrate", inputs / "prog.npz", "--chip-seed", "5", "--method", "local", "-q",
                            "-o", out / "c.npz")
    assert seen == ["_Interrupted"]
    assert (code, err) == (130, "photocomp: interrupted\n")
    assert leftovers(out) == [] and cli._active == []


def test_interrupt_dropped_by_the_interpreter_is_sent_again(inputs, out, monkeypatch, terminal_sigint):
    """CPython 3.11 now and then drops a signal handler's exception raised while ``compile()`` turns a module's
    source into bytecode (an import of a module with no up-to-date bytecode): the command ran on to its end.
    The handler's watchdog sends the interrupt again until the command has taken it."""
    arrived = []

    def calibrate(*args, **kwargs):
        try:
            _thread.interrupt_main()
            for _ in range(10_000):  # the handler raises here ...
                pass
        except cli._Interrupted:
            pass  # ... and the exception is dropped, as compile() drops it
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < 60:
                time.sleep(0.005)
        except cli._Interrupted:
            arrived.append(time.monotonic() - t0)
            raise
        raise AssertionError("the dropped interrupt was not sent again")

    monkeypatch.setattr(pc, "calibrate", calibrate)
    code, stdout, err = run("calibrate", inputs / "prog.npz", "--chip-seed", "5", "-q", "-o", out / "c.npz")
    assert (code, err) == (130, "photocomp: interrupted\n")
    assert len(arrived) == 1 and arrived[0] < 10 * cli._Sigint.RESEND_S + 5, arrived
    assert leftovers(out) == []


def test_a_second_interrupt_does_not_break_into_the_clean_up_of_the_first(inputs, out, monkeypatch, terminal_sigint):
    """While the first interrupt is being handled (an except or finally clause removing a temporary file), a
    second Ctrl-C and the watchdog's resends are only noted; the first goes on to stop the command."""
    cleaned = []

    def calibrate(*args, **kwargs):
        try:
            _thread.interrupt_main()
            for _ in range(1_000_000):
                pass
            raise AssertionError("the interrupt did not arrive")
        except cli._Interrupted:
            _thread.interrupt_main()  # a second Ctrl-C during the clean-up
            t0 = time.monotonic()
            while time.monotonic() - t0 < 5 * cli._Sigint.RESEND_S:  # and resends: none may raise here
                time.sleep(0.005)
            cleaned.append(True)
            raise

    monkeypatch.setattr(pc, "calibrate", calibrate)
    code, stdout, err = run("calibrate", inputs / "prog.npz", "--chip-seed", "5", "-q", "-o", out / "c.npz")
    assert cleaned == [True]
    assert (code, err) == (130, "photocomp: interrupted\n")


def test_an_ignored_sigint_stays_ignored(inputs, out, monkeypatch):
    """A job a script starts in the background has SIGINT ignored; the command keeps it so (as the
    interpreter does at start-up) and restores nothing it did not change."""
    during = []
    real = pc.calibrate

    def calibrate(*args, **kwargs):
        during.append(signal.getsignal(signal.SIGINT))
        return real(*args, **kwargs)

    monkeypatch.setattr(pc, "calibrate", calibrate)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code, stdout, err = run("calibrate", inputs / "prog.npz", "--chip-seed", "5", "--method", "local", "-q",
                                "-o", out / "c.npz")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
    assert (code, err) == (0, "") and during == [signal.SIG_IGN]
    pc.load(out / "c.npz")


# the child starts with the default SIGINT action, as a command typed at a terminal does (a test run started
# in the background by a script would pass an ignored SIGINT on to it)
READY = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); import photocomp.cli as c; "
         "sys.stderr.write('ready\\n'); sys.stderr.flush(); sys.exit(c.main())")


def interrupted_command(argv, delay: float, timeout: float = 240):
    """Run the command in a fresh interpreter (as `photocomp ...` does), SIGINT it ``delay`` s into main."""
    env = dict(os.environ, PHOTOCOMP_CACHE_DIR="")
    p = subprocess.Popen([sys.executable, "-c", READY, *map(str, argv)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    assert p.stderr.readline() == "ready\n"  # the package is imported: main starts now
    time.sleep(delay)
    alive = p.poll() is None
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=timeout)
    return alive, p.returncode, stdout, stderr


def test_ctrl_c_during_calibrate_exits_130_with_one_line(inputs, out):
    alive, code, stdout, stderr = interrupted_command(
        ["calibrate", inputs / "prog.npz", "--chip-seed", "5", "--method", "twin", "--twin-rounds", "1000", "-q",
         "-o", out / "c.npz"], delay=1.0)
    assert alive
    assert (code, stderr, stdout) == (130, "photocomp: interrupted\n", "")
    assert leftovers(out) == []


def test_command_skips_the_interpreter_teardown():
    """Once its work is done the command ends the process with its code. The teardown it skips (JAX's
    exit handlers, then the default SIGINT action) is where a Ctrl-C printed "Exception ignored ...
    KeyboardInterrupt" tracebacks or killed the process by the signal (exit -2) after a complete run."""
    script = ("import atexit, sys, photocomp.cli as c\n"
              "atexit.register(lambda: sys.stderr.write('teardown ran\\n'))\n"
              "sys.argv = ['photocomp', 'targets']\n"
              "sys.exit(c.main())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, PHOTOCOMP_CACHE_DIR=""))
    assert (done.returncode, done.stderr) == (0, "")
    assert "pace-64" in done.stdout  # the command's output is complete (flushed before the exit)
    failed = subprocess.run([sys.executable, "-c", script.replace("'targets'", "'inspect', 'missing.npz'")],
                            capture_output=True, text=True, timeout=240, env=dict(os.environ, PHOTOCOMP_CACHE_DIR=""))
    assert failed.returncode == 2 and failed.stderr.startswith("photocomp: error:") and "teardown" not in failed.stderr


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("command", ["calibrate-model", "calibrate-twin", "compile", "drift"])
def test_ctrl_c_at_any_moment_of_any_command(inputs, tmp_path, command, delay):
    """Exit 130, one line, and no output file or a complete one, wherever the interrupt lands."""
    big = tmp_path / "big.npy"
    np.save(big, np.random.default_rng(1).normal(size=(256, 256)))
    outputs = {"calibrate-model": tmp_path / "c.npz", "calibrate-twin": tmp_path / "c.npz",
               "compile": tmp_path / "p.npz", "drift": tmp_path / "d.csv"}
    argv = {
        "calibrate-model": ["calibrate", inputs / "prog.npz", "--chip-seed", "5", "--steps", "100000"],
        "calibrate-twin": ["calibrate", inputs / "prog.npz", "--chip-seed", "5", "--method", "twin",
                           "--twin-rounds", "1000"],
        "compile": ["compile", big, "--target", "clements-64"],
        "drift": ["drift", inputs / "cal.npz", "--hours", "3", "--plot", tmp_path / "d.png"],
    }[command] + ["-q", "-o", outputs[command]]
    alive, code, stdout, stderr = interrupted_command(argv, delay)
    if not alive:  # finished before the signal: nothing to check about interrupts
        assert code == 0, stderr
        return
    assert code == 130 and stderr == "photocomp: interrupted\n", stderr
    path = outputs[command]
    if path.exists():  # complete, never half-written
        pc.drift.read_csv(path) if command == "drift" else pc.load(path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".photocomp-")]


# ---- property tests over argument vectors -------------------------------------------------------------------------


ODD_TEXT = st.text(min_size=0, max_size=24) | st.sampled_from(
    ["", " ", "-", "--", "-o", "..", ".", "a b", "ä ö", "\n", "x\ny", "'\"", "$x$", "\\", "~", "\udcff", "\x00"])
NUMBERS = st.one_of(
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "x", "1e999", "-0", "0x10", "1_0", " 3", "\u0663", "nan", "-inf", "9" * 5000]),
)
SUFFIXES = st.sampled_from(["", ".npz", ".NPZ", ".png", ".csv", ".json", ".graphml", ".svg", ".npy", ".txt"])
JUNK_NAMES = st.text(alphabet=string.ascii_letters + "-_ ()|=", max_size=20)  # no digits: no mesh of any size


SAFE_NAMES = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1,
                     max_size=16).map(lambda t: "f" + t)  # a file name, odd characters and all


@st.composite
def argument_vectors(draw):
    """argv (with "{in}" / "{out}" placeholders) for one command: each piece valid, or now and then junk."""
    def pick(valid, junk):
        return draw(junk) if draw(st.integers(0, 7)) == 0 else draw(valid)

    def one(*values):
        return st.sampled_from(values)

    def path(valid, junk=("w.npy", "w.txt", "prog.npz", "cal.npz", "drift.csv", "empty.csv", "missing.npz")):
        return pick(one(*valid).map(lambda n: "{in}/" + n),
                    one(*junk).map(lambda n: "{in}/" + n) | st.tuples(ODD_TEXT, SUFFIXES).map(
                        lambda t: "{out}/" + t[0] + t[1]))

    def output(*suffixes):
        return pick(st.tuples(SAFE_NAMES, one(*suffixes)).map(lambda t: "{out}/" + t[0] + t[1]),
                    st.tuples(ODD_TEXT, SUFFIXES).map(lambda t: "{out}/" + t[0] + t[1]))

    def maybe(*group):
        return [list(group)] if draw(st.booleans()) else []

    numbers = lambda *valid: pick(one(*valid), NUMBERS)  # noqa: E731
    command = pick(one("targets", "passes", "compile", "inspect", "calibrate", "drift", "report", "plot", "demo"),
                   one("bogus", "", "-q", "compile2") | ODD_TEXT)
    groups: list[list[str]] = []
    head = [command]
    if command == "compile":
        head.append(path(["w.npy", "w.npz", "w.csv"]))
        groups.append(["--target", pick(one("clements-4", "reck-4", "clements-2", "clements-3"), JUNK_NAMES)])
        groups += maybe("--pipeline", pick(one(EXACT, "tile | svd | reck | lower", "tile(size=2) | svd | clements"),
                                           JUNK_NAMES | ODD_TEXT))
        groups += maybe("--key", pick(one("weights"), ODD_TEXT))
        groups += maybe("-o", output(".npz"))
    elif command in ("inspect", "report", "plot"):
        head.append(path(["prog.npz", "cal.npz"] + (["drift.csv"] if command == "plot" else [])))
        if command == "inspect":
            groups += maybe("--graph", output(".json", ".graphml")) + maybe("--netlist", output(".json"))
            groups += maybe("--tile", numbers("0"))
        elif command == "report":
            groups += maybe("--batch", numbers("1", "7", "100000")) + maybe("--group-index", numbers("4.2", "1"))
            groups += maybe("--json")
        else:
            groups += maybe("--what", pick(one("phases", "mesh", "calibration", "drift"), JUNK_NAMES))
            groups += maybe("--tile", numbers("0")) + maybe("-o", output(".png", ".svg", ".pdf"))
    elif command == "calibrate":  # the local method only: no optimisation in a property test
        head += [path(["prog.npz"]), "--method", "local"]
        groups.append(["--chip-seed", numbers("11", "0", "123456789")])
        groups += maybe("--dac-bits", numbers("4", "12", "32")) + maybe("-o", output(".npz"))
    elif command == "drift":  # always a short study: a few samples and runs, or refused
        head.append(path(["cal.npz"]))
        # durations, steps and runs from short lists: a random "5" hours at "0.01" s would be a long study
        groups.append(["--hours", pick(one("0.001", "0.002"), one("1e6", "0", "-1", "nan", "inf", "x", "", "1e999",
                                                                  "1e-300", "1e308"))])
        groups.append(["--dt", pick(one("1", "2"), one("1e-12", "1e300", "0", "-1", "nan", "x", "5e-324"))])
        groups += maybe("--runs", pick(one("1", "2"), one("0", "1000000", "-3", "x", "1e3", "10" * 30)))
        groups += [["--compensator", pick(one("none", "feedforward", "closed-loop", "recalibrate", "all"), one("pid", ""))]
                   for _ in range(draw(st.integers(0, 2)))]
        groups += maybe("--gradient-k", numbers("0", "0.2", "100")) + maybe("--seed", numbers("0", "5"))
        groups += maybe("--ambient-k-per-hour", numbers("1", "0"))
        groups += maybe("--chip-seed", pick(one("11"), one("12", "-1") | NUMBERS)) + maybe("-o", output(".csv"))
        groups += maybe("--plot", output(".png", ".svg"))
    elif command == "demo":  # a demo that would compile its 100x80 matrix is refused by its output path first
        groups.append(["-o", "{out}/" + draw(ODD_TEXT) + draw(one(".png", ".csv", "/missing/x.npz"))])
    if command in ("compile", "inspect", "calibrate", "drift", "demo") and draw(st.booleans()):
        groups.append(["-q"])
    if draw(st.booleans()):
        groups.append(["--no-compile-cache"])
    extra = []
    if draw(st.integers(0, 5)) == 0:  # now and then a stray word or flag
        extra.append(draw(st.sampled_from(["--bogus", "--help", "-", "--"]) | ODD_TEXT))
    groups = draw(st.permutations(groups))
    return head + [a for g in groups for a in g] + extra


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    return tmp_path_factory.mktemp("property")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=argument_vectors())
def test_any_argument_vector_gives_a_documented_exit_and_no_traceback(inputs, sandbox, argv):
    """Random commands, flags, numbers and odd paths: exit 0, 1, 2 (or 130); a failure is one line on stderr;
    an output is never half-written and the inputs are never changed."""
    work = tempfile.mkdtemp(dir=sandbox)
    src, dst = os.path.join(work, "in"), os.path.join(work, "out")
    shutil.copytree(inputs, src)
    os.mkdir(dst)
    before = {name: digest(os.path.join(src, name)) for name in os.listdir(src)}
    argv = [a.replace("{in}", src).replace("{out}", dst) for a in argv]
    code, stdout, err = run(*argv)
    event(f"{ascii(argv[0])[:24]}: exit {code}")
    assert code in (0, 1, 2, 130), (argv, code, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    if code != 0:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("photocomp: "), (argv, err)
    for folder in (src, dst):
        assert not [n for n in os.listdir(folder) if n.startswith(".photocomp-")], os.listdir(folder)
    assert {name: digest(os.path.join(src, name)) for name in before} == before  # inputs untouched
    for name in os.listdir(dst):  # every output is complete
        full = os.path.join(dst, name)
        if name.lower().endswith(".npz"):
            pc.load(full)
        elif name.lower().endswith(".csv"):
            pc.drift.read_csv(full)
    shutil.rmtree(work)


@settings(max_examples=30, deadline=None)
@given(name=ODD_TEXT, suffix=st.sampled_from([".npz"] * 4 + [".NPZ", ".png", ""]), quiet=st.booleans())
def test_odd_output_names_are_written_or_refused_by_name(inputs, sandbox, name, suffix, quiet):
    work = tempfile.mkdtemp(dir=sandbox)
    target = os.path.join(work, name + suffix)
    argv = ["compile", str(inputs / "w.npy"), "--target", "clements-4", "--pipeline", EXACT, "-o", target]
    code, stdout, err = run(*(argv + ["-q"] * quiet))
    event(f"exit {code}")
    if code == 0:
        assert stdout.splitlines()[-1] == f"wrote {cli._show(target)}"
        assert len(stdout.splitlines()) == 1 if quiet else len(stdout.splitlines()) > 2
        assert pc.load(target).shape == (4, 4)
    else:
        line = one_line_error(code, err)
        assert "-o/--output" in line, line
        assert os.listdir(work) == [] or os.path.isdir(target)  # nothing written
    assert not [n for n in os.listdir(work) if n.startswith(".photocomp-")]
    shutil.rmtree(work)
