"""The ``photocomp`` command line.

Commands: ``targets``, ``passes``, ``compile``, ``compile-model``,
``inspect``, ``calibrate``, ``drift``, ``report``, ``plot``, ``demo``. Every
command has ``--help``.

Exit codes, each failure with exactly one line on stderr and no traceback:

* 0: success;
* 2: bad input: a usage error, an argument out of range, an input file that
  is missing or of the wrong kind, an output path that cannot be written
  (wrong suffix, missing or read-only folder, the input itself); the line is
  ``photocomp: error: ...`` and names the argument (``--hours``,
  ``-o/--output``), what was expected and what was received;
* 1: the run failed for another reason (e.g. the disk filled up while
  writing), also ``photocomp: error: ...``;
* 130: interrupted (Ctrl-C): ``photocomp: interrupted``.

Output files are written atomically: after a failure or an interrupt an
output file is absent or complete, never half-written. Ctrl-C stops the
command even inside a calibration (which, called from Python, stops early
and keeps its best settings instead).

Compiled XLA programs are kept on disk for later runs
(:mod:`photocomp.io.cache`; ``--no-compile-cache``, before or after the
command, or ``PHOTOCOMP_CACHE_DIR=""`` turns that off).
"""

from __future__ import annotations

import _thread
import argparse
import errno
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
from typing import NoReturn

import numpy as np

__all__ = ["main"]

DEMO_SHAPE = (100, 80)
DEMO_SEED = 0
DEMO_TARGET = "pace-64"

#: weight-matrix files ``photocomp compile`` reads
WEIGHT_SUFFIXES = (".npy", ".npz", ".csv")
#: model files ``photocomp compile-model`` reads
MODEL_SUFFIXES = (".onnx", ".safetensors")
#: compiled-model files (photocomp.models.archive)
MODEL_OUTPUT_SUFFIXES = (".pcm",)
#: figure files
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
#: largest seed the command accepts (JAX keys take a signed 64-bit integer)
SEED_MAX = 2**63 - 1
#: longest message line (characters) the command prints; longer ones are cut with "…"
MESSAGE_LIMIT = 1000

# Argument names of the library calls each command makes -> the command's own names.
# Names with "_" or "." are replaced wherever they appear; plain words only at the start of a message.
_RENAME = {
    "compile": {"target": "--target", "key": "--key"},
    "compile-model": {"target": "--target", "exclude": "--exclude", "batch": "--batch", "path": "-o/--output"},
    "inspect": {"path": "file", "tile": "--tile"},
    "calibrate": {"path": "file", "steps": "--steps", "shots": "--shots", "seed": "--seed",
                  "dac_bits": "--dac-bits", "twin_configs": "--twin-configs", "twin_steps": "--twin-steps",
                  "twin_rounds": "--twin-rounds", "method": "--method", "chip": "--chip-seed"},
    "drift": {"path": "file", "hours": "--hours", "dt_s": "--dt", "runs": "--runs", "seed": "--seed",
              "chip": "--chip-seed", "compensators": "--compensator", "compensator": "--compensator",
              "ThermalProcess.ambient_k_per_hour": "--ambient-k-per-hour",
              "ThermalProcess.gradient_k": "--gradient-k"},
    "report": {"path": "file", "batch": "--batch", "group_index": "--group-index"},
    "plot": {"path": "-o/--output", "tile": "--tile", "what": "--what"},
    "demo": {},
}
_EVERYWHERE = {"hours", "runs"}  # plain words replaced everywhere in drift's messages (the memory estimate)


class _Fail(Exception):
    """A failure the command reports as one line with its exit code (2: bad input, 1: the run failed)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class _Interrupted(BaseException):
    """Ctrl-C in the command.

    Not a KeyboardInterrupt: library code that survives a KeyboardInterrupt by
    keeping its best result (a calibration's optimisation loop) would swallow
    it, and the command would run on and exit 0.
    """


class _Sigint:
    """The command's SIGINT handler: raises :class:`_Interrupted`, and makes sure the interrupt arrives.

    A signal handler runs wherever the interpreter happens to be, and an
    exception it raises is not always delivered:

    * inside a garbage-collector callback or a ``__del__`` (JAX has both) it
      cannot propagate: Python passes it to ``sys.unraisablehook`` and carries
      on. :meth:`unraisable` (installed while the command runs) takes it there
      silently, where printing it would show "Exception ignored ...";
    * inside ``compile()`` of a module's source (an import of a module with no
      up-to-date bytecode) CPython 3.11 now and then drops it altogether, so the
      command ran on to its end.

    So after the first raise a watchdog thread sends the interrupt again
    (``_thread.interrupt_main``), at first after 2 ms and then at doubling
    intervals up to :attr:`RESEND_S` seconds, until the command has taken it
    (:meth:`finish`). The handler raises only where the
    interrupt is not already on its way: never inside the unraisable hook, and
    never while the main thread is handling an :class:`_Interrupted` (an
    ``except`` or ``finally`` clause, a context manager's ``__exit__``), so a
    resent or second Ctrl-C never interrupts the clean-up of the first (a
    temporary file being removed).
    """

    RESEND_S = 0.1

    def __init__(self) -> None:
        self.hit = False
        self.done = False
        self.in_hook = False
        self.previous_hook = sys.unraisablehook
        self.watchdog: threading.Thread | None = None

    def __call__(self, signum, frame):
        self.hit = True
        if self.done or self.in_hook or _handling_interrupt():
            return
        if self.watchdog is None:
            self.watchdog = threading.Thread(target=self._resend, name="photocomp-sigint", daemon=True)
            self.watchdog.start()
        raise _Interrupted

    def unraisable(self, info) -> None:
        if isinstance(info.exc_value, (_Interrupted, KeyboardInterrupt)):
            return  # dropped here; the watchdog sends it again once the interpreter is back in ordinary code
        self.in_hook = True
        try:
            self.previous_hook(info)
        finally:
            self.in_hook = False

    def _resend(self) -> None:
        wait = 0.002  # soon after a drop in a gc callback, then less often: doubling up to RESEND_S
        while not self.done:
            time.sleep(wait)
            wait = min(2 * wait, self.RESEND_S)
            if not self.done:
                _thread.interrupt_main()

    def finish(self) -> None:
        """Stop raising: from now on a Ctrl-C is only noted."""
        self.done = True
        if self.watchdog is not None:
            self.watchdog.join()


_active: list[_Sigint] = []  # the handler of the command running in this process (main thread only)


def _stop_if_interrupted() -> None:
    """Raise :class:`_Interrupted` where the running command has received a Ctrl-C that has not stopped it yet.

    An interrupt dropped where Python cannot raise it is sent again, but on a
    loaded machine the resend can come after the command's last step; every
    output is written after this check, so a command that was interrupted
    writes nothing, however late the interrupt would have arrived.
    """
    if _active and _active[-1].hit and not _active[-1].done:
        raise _Interrupted


def _handling_interrupt() -> bool:
    """Whether the calling thread is inside the handling of an :class:`_Interrupted` (its context chain too)."""
    exc: BaseException | None = sys.exc_info()[1]
    seen = 0
    while exc is not None and seen < 100:
        if isinstance(exc, _Interrupted):
            return True
        exc, seen = exc.__context__, seen + 1
    return False


def _quote(value) -> str:
    from photocomp.core.registry import quote

    return quote(value)


def _show(path) -> str:
    """A path as printed after ``wrote``: as it is, or escaped when it holds unprintable characters."""
    text = os.fspath(path)
    return text if text.isprintable() else ascii(text)


def _one_line(message: object) -> str:
    """``message`` on one line: unprintable characters (line breaks of any kind included) escaped, length bounded."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(message).strip())
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "…"


def _err(line: str) -> None:
    """One line on stderr, whatever characters it holds."""
    stream = sys.stderr
    enc = getattr(stream, "encoding", None) or "utf-8"
    try:
        stream.write(line.encode(enc, "backslashreplace").decode(enc, "replace") + "\n")
        stream.flush()
    except (OSError, ValueError):  # stderr closed: nothing more to say
        pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump; long words (user input) cut
        message = re.sub(r"\S{80,}", lambda m: m.group(0)[:80] + "…", _one_line(message))
        self.exit(2, f"photocomp: error: {message} (see '{self.prog} --help')\n")

    def exit(self, status=0, message=None):
        if message:
            _err(message.rstrip("\n"))
        raise SystemExit(status)


# ---- argument types ----------------------------------------------------------------------------------


def _integer(low: int, high: int | None = None):
    """An argparse type: an integer in ``[low, high]``, with a message saying so."""
    what = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}; got {_quote(text)}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}; got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _number(low: float, *, above: bool = False, high: float | None = None):
    """An argparse type: a finite number ``>= low`` (``> low`` when ``above``) and ``<= high``."""
    what = f"a finite number {'>' if above else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}; got {_quote(text)}") from None
        if not math.isfinite(value) or value < low or (above and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}; got {_quote(text)}")
        return value

    parse.__name__ = "number"
    return parse


# ---- paths -----------------------------------------------------------------------------------------------


def _check_text(flag: str, path: str) -> str:
    """A path the file system can take: not empty, no NUL character, encodable."""
    if not path or "\x00" in path:
        raise _Fail(f"{flag} must be a non-empty path without NUL characters; got {_quote(path)}")
    try:
        os.fsencode(path)
    except UnicodeError:
        raise _Fail(f"{flag} must be a path the file system can encode; got {_quote(path)}") from None
    return path


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _or(suffixes) -> str:
    return suffixes[0] if len(suffixes) == 1 else ", ".join(suffixes[:-1]) + " or " + suffixes[-1]


def _check_output(flag: str, path: str, suffixes: tuple, inputs: tuple = ()) -> str:
    """Refuse an output path before any work: wrong suffix, a folder, missing or read-only folder, an input."""
    _check_text(flag, path)
    if os.path.splitext(path)[1].lower() not in suffixes:
        raise _Fail(f"{flag} must end in {_or(suffixes)}; got {_quote(path)}")
    if os.path.isdir(path):
        raise _Fail(f"{flag}: cannot write {_quote(path)}: it is a folder")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise _Fail(f"{flag}: cannot write {_quote(path)}: its folder must exist; got {_quote(folder)}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _Fail(f"{flag}: cannot write {_quote(path)}: its folder {_quote(folder)} is not writable")
    for in_flag, in_path in inputs:
        if in_path is not None and _same_file(path, in_path):
            raise _Fail(f"{flag} must differ from {in_flag}: writing {_quote(path)} would replace it")
    return path


#: errno values that make an output path a bad argument (exit 2) rather than a failed run (exit 1)
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def _write(flag: str, path: str, write, inputs: tuple = ()):
    """``write()``, with an operating-system failure turned into one line naming ``flag`` and the path.

    The failure is an ``OSError``, or a photocomp error caused by one (the
    atomic writer names the path and keeps the ``OSError`` as its cause); one
    about reading an input (its file name is one of ``inputs``) is left alone.
    Nothing is written once the command has received a Ctrl-C (:func:`_stop_if_interrupted`).
    """
    from photocomp.core.errors import PhotocompError

    _stop_if_interrupted()
    try:
        return write()
    except (OSError, PhotocompError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        if not isinstance(cause, OSError):
            raise
        name = getattr(cause, "filename", None)
        if isinstance(name, str) and any(_same_file(name, p) for p in inputs):
            raise
        reason = cause.strerror or type(cause).__name__
        raise _Fail(f"{flag}: cannot write {_quote(path)}: {reason}", 2 if cause.errno in _PATH_ERRNOS else 1) from None


def _about_message(flag: str, message: str) -> str:
    """``message`` as one about ``flag``: its leading argument name replaced, else ``flag: `` in front."""
    name = flag.lstrip("-")
    if re.match(rf"{re.escape(name)}\b", message):
        return flag + message[len(name):]
    return f"{flag}: {message}"


def _about(flag: str, call):
    """``call()``, with a photocomp error turned into one about ``flag`` (all it can be about)."""
    from photocomp.core.errors import PhotocompError

    try:
        return call()
    except PhotocompError as exc:
        raise _Fail(_about_message(flag, str(exc))) from None


def _progress(args) -> bool:
    """Progress bars only for people: not with --quiet, not when stderr is not a terminal."""
    return not args.quiet and sys.stderr.isatty()


# ---- commands ----------------------------------------------------------------------------------------------


def _load_matrix(path: str, key: str | None):
    _check_text("weights", path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in WEIGHT_SUFFIXES:
        raise _Fail(f"weights must end in {_or(WEIGHT_SUFFIXES)}; got {_quote(path)}")
    if key is not None and ext != ".npz":
        raise _Fail(f"--key applies to an .npz weights file only; got --key {_quote(key)} with {_quote(path)}")
    if not os.path.isfile(path):
        raise _Fail(f"weights file must exist; got {_quote(path)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. an empty CSV file: the error that follows says enough
            return _read_matrix(path, ext, key)
    except _Fail:
        raise
    except Exception as exc:
        raise _Fail(f"cannot read weights from {_quote(path)}: {type(exc).__name__}: {_one_line(exc)[:200]}") from None


def _read_matrix(path: str, ext: str, key: str | None):
    if ext == ".npy":
        return np.load(path, allow_pickle=False)
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            names = [n for n in z.files if not n.startswith("__")]
            if key is None:
                if len(names) != 1:
                    raise _Fail(f"weights file {_quote(path)} holds arrays {_quote(names)}; choose one with --key")
                key = names[0]
            if key not in z.files:
                raise _Fail(f"--key must be one of {_quote(names)}; got {_quote(key)}")
            return z[key]
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError:
        return np.loadtxt(path, delimiter=",", dtype=complex, ndmin=2)


def _print_targets(args) -> int:
    from photocomp.core.target import available_targets, get_target

    print(f"{'name':<14} {'mesh':<9} {'size':>5} {'MZIs/mesh':>9} {'DAC':>4} {'clock':>8}  description")
    for name in available_targets():
        t = get_target(name.replace("<N>", "64"))
        shown = name if "<N>" in name else t.name
        size = "N" if "<N>" in name else str(t.size)
        closed = {"butterfly": "N/2 log2N", "fldzhyan": "N(N-1)", "crossbar": "N^2"}.get(t.mesh, "N(N-1)/2")
        mzis = closed if "<N>" in name else str(t.n_mzi)
        desc = t.description.replace("64x64", "NxN") if "<N>" in name else t.description
        print(f"{shown:<14} {t.mesh:<9} {size:>5} {mzis:>9} {t.dac_bits:>4} {t.clock_ghz:>5.1f}GHz  {desc}")
    return 0


def _print_passes(args) -> int:
    import dataclasses

    from photocomp.compiler.pipeline import available_passes, get_pass

    for name in available_passes():
        p = get_pass(name)
        assert dataclasses.is_dataclass(p)  # get_pass builds registered pass dataclasses only
        params = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(p))
        doc = (type(p).__doc__ or "").strip().splitlines()[0]
        print(f"{name:<13} {('(' + params + ')') if params else '':<34} {doc}")
    return 0


def _compile(args) -> int:
    import photocomp as pc

    out = args.output if args.output is not None else os.path.splitext(args.weights)[0] + ".phases.npz"
    _check_text("weights", args.weights)
    _check_output("-o/--output", out, (".npz",), (("weights", args.weights),))
    pipeline = None if args.pipeline is None else _about("--pipeline", lambda: pc.parse_pipeline(args.pipeline))
    w = _load_matrix(args.weights, args.key)
    try:
        prog = pc.compile(w, target=args.target, pipeline=pipeline, progress=_progress(args))
    except pc.PipelineError as exc:  # the passes do not fit the target
        if pipeline is None:
            raise
        raise _Fail(_about_message("--pipeline", str(exc))) from None
    _write("-o/--output", out, lambda: prog.save(out))
    if not args.quiet:
        print(prog)
        print(f"circuit: {_circuit(prog.circuit)}")
        print(prog.report.table())
    print(f"wrote {_show(out)}")
    return 0


def _compile_model(args) -> int:
    import json

    import photocomp as pc

    _check_text("model", args.model)
    ext = os.path.splitext(args.model)[1].lower()
    if ext not in MODEL_SUFFIXES:
        raise _Fail(f"model must end in {_or(MODEL_SUFFIXES)}; got {_quote(args.model)}")
    if not os.path.isfile(args.model):
        raise _Fail(f"model file must exist; got {_quote(args.model)}")
    out = args.output if args.output is not None else os.path.splitext(args.model)[0] + ".pcm"
    _check_output("-o/--output", out, MODEL_OUTPUT_SUFFIXES, (("model", args.model),))
    pipeline = None if args.pipeline is None else _about("--pipeline", lambda: pc.parse_pipeline(args.pipeline))
    try:
        model = pc.compile_model(args.model, target=args.target, pipeline=pipeline, exclude=args.exclude or (),
                                 batch=args.batch, progress=_progress(args))
    except pc.PipelineError as exc:  # the passes do not fit the target
        if pipeline is None:
            raise
        raise _Fail(_about_message("--pipeline", str(exc))) from None
    except pc.PhotocompError as exc:  # the model's own content: "model: ..." or "layer 'x': ..."
        message = str(exc)
        if message.startswith(("layer ", "model")):
            raise _Fail(message) from None
        raise
    _write("-o/--output", out, lambda: model.save(out), (args.model,))
    if args.json:
        print(json.dumps(model.report.as_dict(), indent=1))
    elif not args.quiet:
        print(model)
        for line in model.skipped[:10]:
            print(f"skipped: {line}")
        if len(model.skipped) > 10:
            print(f"... and {len(model.skipped) - 10} more skipped")
        print(model.report.table())
    print(f"wrote {_show(out)}")
    return 0


def _circuit(circuit: str) -> str:
    """A program circuit in words."""
    if circuit == "unitary":
        return "unitary (one mesh per tile; no V mesh, no attenuators)"
    if circuit == "crossbar":
        return "crossbar (fan-out trees, one weight cell per entry, fan-in trees per tile)"
    return f"{circuit} (V mesh, attenuator column, U mesh per tile)"


def _phase_stats(mp) -> str:
    th, ph = np.asarray(mp.theta), np.asarray(mp.phi)
    if th.size == 0:
        return "no MZIs"
    return f"theta [{th.min():.4f}, {th.max():.4f}]  phi [{ph.min():.4f}, {ph.max():.4f}]"


def _load(args):
    import photocomp as pc

    _check_text("file", args.file)
    return pc.load(args.file)


def _inspect(args) -> int:
    from photocomp.core.format import format_value

    inputs = (("file", args.file),)
    if args.graph is not None:
        _check_output("--graph", args.graph, (".graphml", ".json"), inputs)
    if args.netlist is not None:
        _check_output("--netlist", args.netlist, (".json",), inputs + (("--graph", args.graph),))
    prog = _load(args)
    pm = prog.phase_map
    rows = [
        ("file", _show(args.file)),
        ("target", f"{prog.target.name} ({prog.target.mesh}, {prog.target.size} modes, {prog.target.dac_bits}-bit DAC)"),
        ("matrix", f"{prog.shape[0]}x{prog.shape[1]}"),
        ("tiles", f"{pm.n_tiles} ({pm.grid.rows}x{pm.grid.cols} of {pm.grid.tile}x{pm.grid.tile})"),
        ("circuit", _circuit(prog.circuit)),
    ]
    if pm.layout.crossbar:
        rows.append(("MZIs", f"{prog.n_mzi} ({pm.layout.n_mzi} weight cells per tile)"))
    elif pm.v is None:
        rows.append(("MZIs", f"{prog.n_mzi} ({pm.layout.n_mzi} per tile: one mesh, no attenuators)"))
    else:
        rows.append(("MZIs", f"{prog.n_mzi} ({pm.layout.n_mzi} per mesh, 2 meshes + {pm.grid.tile} attenuators per tile)"))
    rows += [
        ("optical depth", f"{prog.depth} columns"),
        ("detection", prog.detection),
        ("pipeline", prog.pipeline),
    ]
    if pm.v is not None:
        rows.append(("V mesh phases", _phase_stats(pm.v)))
    rows.append(("weight cells" if pm.layout.crossbar else "U mesh phases", _phase_stats(pm.u)))
    if pm.sigma is not None:
        rows.append(("attenuators", f"sigma [{np.min(pm.sigma):.4f}, {np.max(pm.sigma):.4f}] rad"))
    rows.append(("gains", f"[{np.min(pm.gain):.4g}, {np.max(pm.gain):.4g}]"))
    if prog.calibrated:
        rows.append(("calibrated for", f"chip seed {prog.chip.seed} ({prog.chip.n_heaters} heaters)"))
        power = prog.drives()
        rows.append(("heater power", f"total {power.sum(axis=1).max():.1f} mW per tile, max {power.max():.2f} mW"))
    rows += [(k.replace("_", " "), format_value(v)) for k, v in prog.report.summary.items()]
    if args.graph is not None or args.netlist is not None:
        graph = prog.graph(args.tile)  # checks --tile before anything is printed or written
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.graph is not None:
        from photocomp.core.graph import export_graph

        path = _write("--graph", args.graph, lambda: export_graph(graph, args.graph))
        print(f"wrote {_show(path)} (circuit of tile {args.tile})")
    if args.netlist is not None:
        from photocomp.core.graph import export_netlist

        path = _write("--netlist", args.netlist, lambda: export_netlist(prog, args.netlist, args.tile))
        print(f"wrote {_show(path)} (SAX netlist of tile {args.tile})")
    return 0


def _calibrate(args) -> int:
    import photocomp as pc

    _check_text("file", args.file)
    out = args.output if args.output is not None else os.path.splitext(args.file)[0].removesuffix(".phases") + ".cal.npz"
    _check_output("-o/--output", out, (".npz",), (("file", args.file),))
    prog = _load(args)
    if prog.calibrated:
        raise _Fail(f"file must hold an uncalibrated program; {_quote(args.file)} is calibrated for chip seed "
                    f"{prog.chip.seed}")
    # flag -> the photocomp.Twin field it sets; left out, the field keeps photocomp.Twin's default
    twin = {field: getattr(args, flag[2:].replace("-", "_")) for flag, field in _TWIN_FLAGS.items()}
    given = [flag for flag, field in _TWIN_FLAGS.items() if twin[field] is not None]
    if args.method != "twin" and given:
        raise _Fail(f"{given[0]} applies to --method twin only; got --method {args.method}")
    chip = pc.fabricate(prog.target, seed=args.chip_seed, circuit=prog.circuit)
    method: str | pc.Twin = args.method
    settings = {"steps": args.steps, "shots": args.shots, "seed": args.seed}
    if args.method == "twin":
        chosen = {field: value for field, value in twin.items() if value is not None}
        method = pc.Twin(shots=1 if args.shots is None else args.shots, seed=args.seed, **chosen,
                         **({} if args.steps is None else {"steps": args.steps}))
        settings = {}
    t0 = time.perf_counter()
    cal = pc.calibrate(prog, chip, method=method, progress=_progress(args), dac_bits=args.dac_bits, **settings)
    wall = time.perf_counter() - t0
    _write("-o/--output", out, lambda: cal.save(out))
    s = cal.report.summary
    print(f"chip: {prog.target.name} seed {args.chip_seed} ({prog.circuit} circuit)  method: {args.method}")
    print(f"matrix error before: {s['error_before']:.4e}")
    print(f"matrix error after:  {s['error_after']:.4e}")
    if "error_after_measured" in s:
        print(f"matrix error after, as measured: {s['error_after_measured']:.4e}")
    if "error_unquantized" in s:
        print(f"matrix error before DAC quantization ({args.dac_bits} bits): {s['error_unquantized']:.4e}")
    if "steps_run" in s:
        print(f"steps: {s['steps_run']} ({s['stopped']})")
    print(f"measurements used: {s['measurements']}")
    print(f"time: {wall:.2f} s")
    print(f"wrote {_show(out)}")
    return 0


_TWIN_FLAGS = {"--twin-configs": "configs", "--twin-steps": "fit_steps", "--twin-rounds": "rounds",
               "--twin-points-per-heater": "points_per_heater", "--twin-probe-shots": "probe_shots",
               "--twin-check-shots": "check_shots"}
"""The twin's command-line flags and the :class:`photocomp.Twin` fields they set."""


def _drift(args) -> int:
    import photocomp as pc

    _check_text("file", args.file)
    inputs = (("file", args.file),)
    if args.output is not None:
        _check_output("-o/--output", args.output, (".csv",), inputs)
    if args.plot is not None:
        _check_output("--plot", args.plot, FIGURE_SUFFIXES, inputs)
    cal = _load(args)
    if not cal.calibrated:
        raise _Fail(f"file must hold a calibrated program (photocomp calibrate); {_quote(args.file)} is uncalibrated")
    chip = cal.chip if args.chip_seed is None else pc.fabricate(cal.target, seed=args.chip_seed, circuit=cal.circuit)
    proc = pc.drift.ThermalProcess(ambient_k_per_hour=args.ambient_k_per_hour, gradient_k=args.gradient_k)
    names = args.compensator or ["all"]
    comps = "all" if "all" in names else list(dict.fromkeys(names))
    study = pc.drift.study(cal, chip, proc, hours=args.hours, dt_s=args.dt, compensators=comps, seed=args.seed,
                           runs=args.runs, progress=_progress(args))
    print(study.table())
    for ev in study.events[:10]:
        print(f"event: {ev['compensator']} run {ev['run']} t = {ev['time_s']:g} s: {ev['kind']}: {ev['message']}")
    if len(study.events) > 10:
        print(f"... and {len(study.events) - 10} more events")
    if args.output is not None:
        print(f"wrote {_show(_write('-o/--output', args.output, lambda: study.to_csv(args.output)))}")
    if args.plot is not None:
        path = _write("--plot", args.plot, lambda: pc.plot(study, args.plot, what="drift"))
        print(f"wrote {_show(path)}")
    return 0


def _demo(args) -> int:
    import photocomp as pc

    out = _check_output("-o/--output", args.output, (".npz",))
    rng = np.random.default_rng(DEMO_SEED)
    w = rng.normal(size=DEMO_SHAPE) / np.sqrt(DEMO_SHAPE[1])
    if not args.quiet:
        print(f"photocomp demo: a {DEMO_SHAPE[0]}x{DEMO_SHAPE[1]} Gaussian weight matrix (seed {DEMO_SEED}) -> {DEMO_TARGET}")
    prog = pc.compile(w, target=DEMO_TARGET, progress=_progress(args))
    if not args.quiet:
        print(prog)
        print(prog.report.table())
    _write("-o/--output", out, lambda: prog.save(out))
    again = pc.load(out)
    x = rng.normal(size=DEMO_SHAPE[1])
    same = np.array_equal(np.asarray(again.forward(x)), np.asarray(prog.forward(x)))
    err = np.linalg.norm(np.asarray(prog.forward(x)) - w @ x) / np.linalg.norm(w @ x)
    print(f"wrote {_show(out)}; reloaded forward bit-identical: {same}; |y - W x| / |W x| = {err:.3e}")
    if not same:
        raise _Fail(f"the program reloaded from {_quote(out)} computes a different forward function", 1)
    return 0


def _report(args) -> int:
    import json

    import photocomp as pc

    _check_text("file", args.file)
    if os.path.splitext(args.file)[1].lower() in MODEL_OUTPUT_SUFFIXES:  # a compiled model: its per-layer report
        model = pc.load_model(args.file, batch=args.batch)
        print(json.dumps(model.report.as_dict(), indent=1) if args.json else model.report.table())
        return 0
    cost = pc.cost(_load(args), batch=args.batch, group_index=args.group_index)
    print(json.dumps(cost.as_dict(), indent=1) if args.json else cost.table())
    return 0


def _plot(args) -> int:
    from photocomp.analysis.plot import plot_file

    _check_text("file", args.file)
    if args.what == "drift" and args.tile is not None:
        raise _Fail(f"--tile does not apply to --what drift (a study covers every tile); got --tile {args.tile}")
    out = args.output if args.output is not None else (
        os.path.splitext(args.file)[0].removesuffix(".phases") + f".{args.what}.png")
    _check_output("-o/--output", out, FIGURE_SUFFIXES, (("file", args.file),))
    path = _write("-o/--output", out, lambda: plot_file(args.file, out, args.what, tile=args.tile), (args.file,))
    print(f"wrote {_show(path)}")
    return 0


# ---- the parser ----------------------------------------------------------------------------------------------


def _common(s) -> None:
    """Options every command takes after its name too."""
    s.add_argument("--no-compile-cache", action="store_true", default=argparse.SUPPRESS,
                   help="do not keep compiled XLA programs on disk (also accepted before the command)")


def _add_report_and_plot(sub) -> None:
    from photocomp.analysis.cost import GROUP_INDEX
    from photocomp.analysis.plot import plot_kinds

    s = sub.add_parser("report", help="cost report of a phase-map file (or a compiled model's per-layer report)",
                       description="Print the cost of a phase-map file: MZI and phase-shifter counts, optical depth, "
                                   "worst-path insertion loss, heater power, latency, throughput, effective bits and "
                                   "equivalent compute (definitions: photocomp.analysis.cost). For a compiled model "
                                   "(.pcm) print its per-layer report (photocomp.models.report).")
    s.add_argument("file", help="phase-map file (compiled or calibrated), or a compiled model (.pcm)")
    s.add_argument("--batch", type=_integer(1), default=1,
                   help="input vectors streamed per tile setting; default %(default)s")
    s.add_argument("--group-index", type=_number(0.0, above=True), default=GROUP_INDEX,
                   help="waveguide group index for the time of flight; default %(default)s")
    s.add_argument("--json", action="store_true", help="print the numbers as JSON")
    _common(s)
    s.set_defaults(func=_report)

    s = sub.add_parser("plot", help="draw a phase-map file (phases, mesh, calibration) or a drift study (drift)",
                       description="Draw a phase-map file: phase heatmaps, the mesh with every MZI coloured by its "
                                   "setting, or a calibrated file's per-tile errors and reachability maps; or draw "
                                   "a drift study's CSV file ('photocomp drift -o'): error against time per "
                                   "compensator and the die's temperature.")
    s.add_argument("file", help="phase-map file (compiled or calibrated); for --what drift a drift study CSV")
    s.add_argument("-o", "--output", default=None, help="output image (.png, .pdf or .svg); default FILE.WHAT.png")
    s.add_argument("--what", default="phases", choices=plot_kinds(), help="figure to draw; default %(default)s")
    s.add_argument("--tile", type=_integer(0), default=None,
                   help="phases: only this tile; mesh: the tile drawn (default 0); calibration: reachability of "
                        "this tile; not used by drift")
    _common(s)
    s.set_defaults(func=_plot)


def _build_parser() -> argparse.ArgumentParser:
    from photocomp.drift.thermal import MAX_TEMPERATURE_K

    p = _Parser(prog="photocomp", description="Compile weight matrices to phase maps for photonic MZI-mesh chips.",
                epilog="Exit codes: 0 success, 1 the run failed, 2 bad input, 130 interrupted.")
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not keep compiled XLA programs on disk for later runs (default: kept in "
                        "$PHOTOCOMP_CACHE_DIR or ~/.cache/photocomp/xla; see photocomp.io.cache); also accepted "
                        "after the command")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    seed = _integer(0, SEED_MAX)

    s = sub.add_parser("targets", help="list the available chip targets", description="List the available chip targets.")
    _common(s)
    s.set_defaults(func=_print_targets)

    s = sub.add_parser("passes", help="list the compiler passes", description="List the registered compiler passes and their parameters.")
    _common(s)
    s.set_defaults(func=_print_passes)

    s = sub.add_parser("compile", help="compile a weight matrix to a phase-map file",
                       description="Compile a weight matrix (.npy, .npz or .csv) to a phase-map file (.npz).")
    s.add_argument("weights", help="weight matrix file: .npy, .npz (one array, or --key) or .csv (real or complex)")
    s.add_argument("--target", default=DEMO_TARGET, help="target name (see 'photocomp targets'); default %(default)s")
    s.add_argument("--pipeline", default=None, help='pipeline string, e.g. "tile | svd | clements | quantize(bits=10) | lower"; default: the target preset')
    s.add_argument("--key", default=None, help="array name inside an .npz input")
    s.add_argument("-o", "--output", default=None, help="output phase-map file (.npz); default WEIGHTS.phases.npz")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar or report")
    _common(s)
    s.set_defaults(func=_compile)

    s = sub.add_parser("compile-model", help="compile every linear layer of a model (.onnx, .safetensors) to a .pcm file",
                       description="Compile every linear layer of a model (an ONNX file, or a safetensors file such "
                                   "as a PyTorch state_dict) to the target: one phase-map file per layer and a JSON "
                                   "manifest in one .pcm archive (photocomp.models.archive). Prints the per-layer "
                                   "report: tiles, MZIs, cycles, latency, heater power, error.")
    s.add_argument("model", help="model file: .onnx (graph and initializers) or .safetensors (weights (out, in))")
    s.add_argument("--target", default=DEMO_TARGET, help="target name (see 'photocomp targets'); default %(default)s")
    s.add_argument("--pipeline", default=None, help="pipeline string for every layer; default: the target preset")
    s.add_argument("--exclude", action="append", metavar="LAYER",
                   help="a layer not to compile (repeat for several), e.g. an embedding")
    s.add_argument("--batch", type=_integer(1), default=1,
                   help="input vectors per inference, for the report's cycles and latency; default %(default)s")
    s.add_argument("-o", "--output", default=None, help="output compiled model (.pcm); default MODEL.pcm")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar or report")
    _common(s)
    s.set_defaults(func=_compile_model)

    s = sub.add_parser("inspect", help="summarise a phase-map file", description="Print a summary table of a phase-map file.")
    s.add_argument("file", help="phase-map file written by 'photocomp compile' or Program.save")
    s.add_argument("--graph", default=None, help="also export the circuit netlist (.graphml or .json)")
    s.add_argument("--netlist", default=None, help="also export the circuit as a SAX netlist (.json)")
    s.add_argument("--tile", type=_integer(0), default=0,
                   help="tile whose settings the exported graph/netlist carries; default 0")
    _common(s)
    s.set_defaults(func=_inspect)

    s = sub.add_parser("calibrate", help="calibrate a phase map for a fabricated chip",
                       description="Calibrate a compiled phase-map file for a chip sampled from its target with --chip-seed.")
    s.add_argument("file", help="uncalibrated phase-map file")
    s.add_argument("--chip-seed", type=seed, required=True, help="seed of the fabricated chip (photocomp.fabricate)")
    s.add_argument("--method", default="model", choices=["model", "local", "twin", "selfconfig", "nullify", "diagonalize", "cells",
                                                                 "insitu", "backprop"],
                   help="model: chip errors known; local: analytic per-MZI correction; twin: the chip is a black box, "
                        "a digital twin is fitted to its measurements; selfconfig: a one-tile unitary program is "
                        "configured from the chip's output powers alone; nullify: a one-tile unitary program is "
                        "programmed column by column by nulling in-mesh power monitors; diagonalize: a one-tile "
                        "unitary program on a triangular (reck) mesh is configured chain by chain from its output "
                        "powers; cells: a crossbar program's weight cells are read at once and set in closed "
                        "form; insitu: gradient steps on "
                        "the measured error, gradients by the parameter-shift rule; backprop: Adam steps on a "
                        "one-tile unitary program, gradients by in-situ backpropagation (light sent backwards, a "
                        "monitor at every phase shifter); default %(default)s")
    s.add_argument("--steps", type=_integer(0, 10**9), default=None,
                   help="maximum optimisation steps (model, twin, insitu, backprop); default: the method's own "
                        "(photocomp.Model, photocomp.Twin, photocomp.InSitu, photocomp.InSitu.backprop)")
    s.add_argument("--shots", type=_integer(1, 10**9), default=None,
                   help="shots per black-box reading (twin, selfconfig, nullify, diagonalize, cells, "
                        "insitu, backprop); default 1, for nullify, diagonalize, cells and backprop their own "
                        "(photocomp.Nullify().shots)")
    s.add_argument("--seed", type=seed, default=0,
                   help="seed of measurement noise and probes (twin, selfconfig, nullify, diagonalize, cells, "
                        "insitu, backprop); default %(default)s")
    s.add_argument("--dac-bits", type=_integer(1, 32), default=None,
                   help="quantize the final heater drives with a DAC of this many bits")
    # the twin's settings default to photocomp.Twin's (None here: a flag given with another method is refused)
    s.add_argument("--twin-configs", type=_integer(1, 10**6), default=None,
                   help="probe drive configurations of the twin; default photocomp.Twin().configs")
    s.add_argument("--twin-steps", type=_integer(0, 10**9), default=None,
                   help="twin fitting steps; default photocomp.Twin().fit_steps")
    s.add_argument("--twin-rounds", type=_integer(1, 10**6), default=None,
                   help="fit-calibrate rounds of the twin; default photocomp.Twin().rounds")
    s.add_argument("--twin-points-per-heater", type=_integer(3, 10**6), default=None,
                   help="drives per heater of the twin's heater characterisation; "
                        "default photocomp.Twin().points_per_heater")
    s.add_argument("--twin-probe-shots", type=_integer(1, 10**9), default=None,
                   help="shots per probe reading of the twin fit and its refinements; default --shots")
    s.add_argument("--twin-check-shots", type=_integer(1, 10**9), default=None,
                   help="shots per reading of the twin's final measured check; default --shots. The frugal twin "
                        "of benchmarks/measurement_cost.py: --twin-configs 1 --twin-rounds 4 "
                        "--twin-points-per-heater 3, probe shots a tenth and check shots a twentieth of --shots")
    s.add_argument("-o", "--output", default=None, help="output file (.npz); default FILE.cal.npz")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _common(s)
    s.set_defaults(func=_calibrate)

    s = sub.add_parser("drift", help="simulate thermal drift of a calibrated program and compare compensators",
                       description="Simulate the thermal drift of a calibrated program (a .cal.npz file) on its chip "
                                   "and compare drift compensators: error against time, measurements, heater power.")
    s.add_argument("file", help="calibrated program file written by 'photocomp calibrate'")
    s.add_argument("--chip-seed", type=seed, default=None,
                   help="seed of the chip (must be the one the file was calibrated for); default: the file's")
    s.add_argument("--hours", type=_number(0.0, above=True), default=1.0, help="simulated duration (h); default %(default)s")
    s.add_argument("--dt", type=_number(0.0, above=True), default=1.0, help="time step (s); default %(default)s")
    s.add_argument("--compensator", action="append", choices=["all", "none", "feedforward", "closed-loop", "recalibrate"],
                   help="compensator to compare (repeat for several); default all")
    s.add_argument("--runs", type=_integer(1, 10**9), default=1, help="Monte-Carlo runs; default %(default)s")
    s.add_argument("--seed", type=seed, default=0,
                   help="seed of the temperature, sensor and detector noise; default %(default)s")
    s.add_argument("--ambient-k-per-hour", type=_number(0.0, high=MAX_TEMPERATURE_K), default=1.0,
                   help="RMS ambient change over one hour (K); default %(default)s")
    s.add_argument("--gradient-k", type=_number(0.0, high=MAX_TEMPERATURE_K), default=0.2,
                   help="RMS temperature difference across the die (K); default %(default)s")
    s.add_argument("-o", "--output", default=None, help="write the error and temperature traces as CSV (.csv)")
    s.add_argument("--plot", default=None, help="write a plot of error against time and the temperature field (.png, .pdf, .svg)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _common(s)
    s.set_defaults(func=_drift)

    s = sub.add_parser("demo", help="compile a built-in matrix and show the report",
                       description=f"Compile a built-in {DEMO_SHAPE[0]}x{DEMO_SHAPE[1]} matrix onto {DEMO_TARGET}, print the report and write the phase map.")
    s.add_argument("-o", "--output", default="photocomp-demo.phases.npz",
                   help="output phase-map file (.npz); default %(default)s")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar or report: only the line saying what was written")
    _common(s)
    s.set_defaults(func=_demo)

    _add_report_and_plot(sub)
    return p


def _version() -> str:
    from photocomp.core.version import __version__

    return f"photocomp {__version__}"


# ---- running a command -------------------------------------------------------------------------------------------


def _rename(message: str, command: str) -> str:
    """Library argument names in ``message`` -> the command's own (``dt_s`` -> ``--dt``)."""
    for name, flag in sorted(_RENAME.get(command, {}).items(), key=lambda kv: -len(kv[0])):
        if "_" in name or "." in name or (command == "drift" and name in _EVERYWHERE):
            message = re.sub(rf"(?<![\w.\-']){re.escape(name)}(?![\w])", flag, message)
        else:
            message = re.sub(rf"^{re.escape(name)}(?=[\s:\[])", flag, message)
    return message


def _run(argv) -> int:
    from photocomp.core.errors import PhotocompError

    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error, already printed (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        if not args.no_compile_cache:
            from photocomp.io.cache import enable_compilation_cache

            enable_compilation_cache()  # this process is ours: later runs skip the JIT compilation
        return int(args.func(args) or 0)
    except _Fail as exc:
        _err(f"photocomp: error: {_one_line(exc)}")
        return exc.code
    except PhotocompError as exc:
        _err(f"photocomp: error: {_one_line(_rename(str(exc), args.command)) or type(exc).__name__}")
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except MemoryError:
        _err(f"photocomp: error: out of memory in 'photocomp {args.command}'")
        return 1
    except OSError as exc:
        where = f" ({_quote(exc.filename)})" if getattr(exc, "filename", None) else ""
        _err(f"photocomp: error: {exc.strerror or type(exc).__name__}{where}")
        return 1
    except (ValueError, TypeError) as exc:  # input that reached numpy or JAX unchecked
        _err(f"photocomp: error: {type(exc).__name__}: {_one_line(exc)}")
        return 2
    except Exception as exc:
        _err(f"photocomp: error: unexpected {type(exc).__name__} in 'photocomp {args.command}': {_one_line(exc)}")
        return 1


def _flush_and_exit(code: int) -> NoReturn:
    """Flush stdout and stderr, then end the process with ``code`` without the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``photocomp`` command; returns the exit code (0, 1, 2 or 130; see the module docstring).

    ``argv=None`` reads ``sys.argv`` and is the command itself: once the work
    is done (output files complete, streams flushed) the process ends at once
    with the exit code, without the interpreter's teardown. That teardown
    stops XLA's threads and restores the default SIGINT action, so a Ctrl-C
    landing in it killed the process by the signal, and one landing while
    XLA still ran could crash it. With an explicit ``argv`` the caller's
    SIGINT handler is restored and the code returned.
    """
    handler = _Sigint()
    process = argv is None
    main_thread = threading.current_thread() is threading.main_thread()
    installed, previous = False, None
    code, interrupted = 1, False
    try:
        try:  # the handler is installed inside: a Ctrl-C landing during the installation is ours too
            if main_thread:
                previous = signal.getsignal(signal.SIGINT)
                # not where SIGINT is ignored (a job started in the background by a script): it stays ignored
                installed = previous is not signal.SIG_IGN
            if installed:
                _active.append(handler)
                signal.signal(signal.SIGINT, handler)
                sys.unraisablehook = handler.unraisable
            code = _run(sys.argv[1:] if argv is None else list(argv))
        finally:
            handler.finish()
            if handler in _active:
                _active.remove(handler)
    except (_Interrupted, KeyboardInterrupt):
        interrupted = True
    if interrupted or handler.hit:
        code = 130
        _err("photocomp: interrupted")
    if process:
        _flush_and_exit(code)
    if installed:
        sys.unraisablehook = handler.previous_hook
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
