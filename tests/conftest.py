"""Shared test helpers: the tolerance table, seeded generators, random matrices and the command runner.

Every tolerance the suite uses lives here. ``TOL`` is per dtype (like JAX's
own test suite); ``BOUND`` holds the few named bounds that are tighter or
looser than the dtype default for a documented reason. Every random draw
comes from ``numpy.random.default_rng(seed)`` with an explicit seed.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import shutil
import tempfile

import numpy as np
import pytest

# The command line keeps compiled programs on disk (photocomp.io.cache); the suite runs the command in this
# process and in subprocesses, which must neither write to the user's cache nor change JAX's configuration
# for the tests after them. tests/test_cli.py turns the cache on explicitly where it tests it.
os.environ["PHOTOCOMP_CACHE_DIR"] = ""

# ---- one compilation cache for the test session ---------------------------------

XLA_CACHE_ENV = "PHOTOCOMP_TEST_XLA_CACHE"
"""Names the session's shared folder of compiled XLA programs; set it to an empty value for no cache."""
_OWN_CACHE = pytest.StashKey[str]()  # the folder this process made and removes


def pytest_configure(config):
    """Keep the session's compiled XLA programs in one temporary folder, shared by the test processes.

    Many tests compile the same programs (the same kernels at the same shapes, built for a new chip or in
    another worker process); with JAX's persistent cache a process loads what another has compiled
    instead of compiling it again. A cached program is the one the compiler would build (the cache keys on
    the program and the compiler options), so no result changes. The folder is made by the controlling
    process, inherited by the workers through the environment, and removed at the end. Only this test
    process's JAX configuration is set: the commands the suite runs in subprocesses keep their own (see
    tests/test_cli.py and tests/test_readme.py, which passes the folder to the README's blocks).
    """
    if not hasattr(config, "workerinput") and XLA_CACHE_ENV not in os.environ:
        path = tempfile.mkdtemp(prefix="photocomp-tests-xla-")
        os.environ[XLA_CACHE_ENV] = path
        config.stash[_OWN_CACHE] = path
    path = os.environ.get(XLA_CACHE_ENV)
    if path:
        import jax

        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    path = config.stash.get(_OWN_CACHE, None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop(XLA_CACHE_ENV, None)


# ---- tolerances -----------------------------------------------------------------

TOL = {
    "float64": 1e-10,
    "complex128": 1e-10,
    "float32": 1e-4,
    "complex64": 1e-4,
}
"""Default absolute tolerance per result dtype."""

BOUND = {
    # exact identities of the convention, evaluated in float64
    # docs/design.md: the commuting identity holds to ~1e-15. Measured over 1e5 draws
    # in [-pi, pi): max 1.5e-15 (a few ulp of the phases entering exp(i x)).
    "commute": 2e-15,
    "physical": 1e-14,  # physical form == -e^{i theta} Z T(theta, phi)
    "unitary": 1e-14,  # a single 2x2 transfer matrix is unitary
    # decomposition: max |U_rebuilt - U| for Haar unitaries
    # (measured: 6e-14 at N = 64, 2.8e-13 at N = 256 for Clements; grows ~ N)
    "reconstruction": 1e-12,
    # canonicalization must not change the implemented matrix
    "canonical": 1e-12,
    # phases: |e^{i wrap(x)} - e^{i x}| for |x| <= 100 (rounding ~ |x| eps)
    "wrap_circle": 1e-12,
    # extremes of a sampled curve (2001 points over 2 pi): sampling error, not rounding
    "sampled_extremum": 1e-5,
    # a quantized phase sits on a DAC level
    "dac_level": 1e-12,
    # gradient checks (float64, central finite differences with step grad_eps)
    "grad_atol": 1e-5,
    "grad_rtol": 1e-5,
    "grad_eps": 1e-6,
    # autodiff gradient vs closed form (float64)
    "grad_reference": 1e-9,
    # the same float64 quantity computed twice along different code paths (relative)
    "recomputed": 1e-9,
    # statistics: smallest accepted KS p-value per MZI position (fixed seeds) ...
    "ks_pvalue": 1e-3,
    # ... and largest p-value tolerated when the wrong law must be rejected
    "ks_reject": 1e-6,
    # a 16-bit DAC leaves a small-matrix error well below 1 %
    "quantized_16bit_error": 1e-2,
}


def run_cli(capsys, *argv):
    """``photocomp.cli.main(argv)`` -> (exit code, stdout, stderr); argparse exits become codes."""
    from photocomp.cli import main  # conftest itself imports no photocomp

    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def tol(dtype) -> float:
    """Absolute tolerance for results of ``dtype`` (numpy or JAX dtype or name)."""
    return TOL[np.dtype(dtype).name]


# ---- generators -----------------------------------------------------------------


def haar_unitary(n: int, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    """Haar-random unitary ``(n, n)`` (or a batch ``(size, n, n)``), complex128.

    QR of a complex Ginibre matrix with the phases of R's diagonal moved into Q
    (Mezzadri, Notices AMS 54, 592 (2007)); without that fix Q is not Haar.
    """
    shape = (n, n) if size is None else (size, n, n)
    z = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    q, r = np.linalg.qr(z)
    d = np.diagonal(r, axis1=-2, axis2=-1)
    return q * (d / np.abs(d))[..., None, :]


MATRIX_KINDS = ("real", "complex", "lowrank_real", "lowrank_complex", "zero")


def random_matrix(rng: np.random.Generator, shape: tuple, kind: str = "real", rank: int = 1) -> np.ndarray:
    """A test matrix of ``shape``.

    Kinds: ``real`` / ``complex`` (standard normal entries), ``lowrank_real``
    / ``lowrank_complex`` (product of ``(M, rank)`` and ``(rank, N)`` normal
    factors, rank-deficient when ``rank < min(M, N)``), ``zero``.
    """
    m, n = shape
    if kind == "real":
        return rng.standard_normal((m, n))
    if kind == "complex":
        return rng.standard_normal((m, n)) + 1j * rng.standard_normal((m, n))
    if kind == "lowrank_real":
        return rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    if kind == "lowrank_complex":
        a = rng.standard_normal((m, rank)) + 1j * rng.standard_normal((m, rank))
        b = rng.standard_normal((rank, n)) + 1j * rng.standard_normal((rank, n))
        return a @ b
    if kind == "zero":
        return np.zeros((m, n))
    raise ValueError(f"kind must be one of {MATRIX_KINDS}; got {kind!r}")


def mesh_matrix_np(layout, theta, phi, out_phase) -> np.ndarray:
    """Independent NumPy rebuild of a mesh: diag(e^{i out}) . T_last ... T_first.

    Written from the convention of docs/design.md §3.1 and the layout alone (light meets the
    MZIs in layout order; MZIs of one column act on disjoint pairs), so it
    does not share code with photocomp's simulator.
    """
    n = layout.n_modes
    u = np.eye(n, dtype=np.complex128)
    pairs = np.asarray(layout.pairs, dtype=int)
    cols = np.asarray(layout.columns, dtype=int)
    theta = np.asarray(theta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    for c in range(layout.depth):
        sel = np.flatnonzero(cols == c)
        k = pairs[sel]
        cth, sth, e = np.cos(theta[sel]), np.sin(theta[sel]), np.exp(1j * phi[sel])
        a, b = u[k].copy(), u[k + 1].copy()
        u[k] = (e * cth)[:, None] * a - sth[:, None] * b
        u[k + 1] = (e * sth)[:, None] * a + cth[:, None] * b
    return np.exp(1j * np.asarray(out_phase, dtype=np.float64))[:, None] * u


def assert_same_fabrication(mzi_chip, other) -> None:
    """``other`` (a chip of another cell, same target size and seed) drew the MZI chip's fabrication: the same
    coupler errors and losses in every stage and the same offsets on the heaters both chips have (the MZI
    chip's, which come first in the flat order)."""
    for stage in ("v", "att", "u"):
        np.testing.assert_array_equal(mzi_chip.coupler_in[stage], other.coupler_in[stage])
        np.testing.assert_array_equal(mzi_chip.coupler_out[stage], other.coupler_out[stage])
        np.testing.assert_array_equal(mzi_chip.loss_db[stage], other.loss_db[stage])
    np.testing.assert_array_equal(mzi_chip.offset, other.offset[: mzi_chip.n_heaters])


def lossless_nominal(prog):
    """``(program, chip)``: ``prog`` moved onto its target with lossless waveguide crossings, and that target's
    nominal chip for the program's circuit with lossless MZIs: an ideal chip, which runs the compiled program
    exactly."""
    import dataclasses

    import photocomp as pc
    from photocomp.hardware.chip import nominal_chip

    target = dataclasses.replace(prog.target, crossing_loss_db=0.0)
    moved = pc.Program(target, prog.phase_map, prog.report, prog.pipeline, prog.detection)
    chip = nominal_chip(target, prog.circuit)
    return moved, dataclasses.replace(chip, loss_db={k: np.zeros_like(v) for k, v in chip.loss_db.items()})


# ---- fixtures -------------------------------------------------------------------


# A worker process's resident memory above which the compiled programs are dropped after a test: XLA's CPU
# executables take tens of MB each, and a module of parametrized tests compiles dozens. Two workers, each
# held near this bound, plus a README block's or a command's subprocess stay inside CI's 3 GB budget.
RELEASE_ABOVE_MB = 1150


def _resident_mb() -> float | None:
    """This process's resident memory in MiB (Linux's /proc), or None where that is not available."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _release_compiled_programs() -> None:
    """Drop JAX's compiled programs (and their buffers) and hand the freed heap back to the system.

    The session's on-disk compilation cache (``pytest_configure``) makes a later compilation of the same
    program a read from disk instead of a compile (the default suite measured 8:44 against 8:00 without it).
    """
    import sys

    jax = sys.modules.get("jax")
    if jax is None:
        return
    jax.clear_caches()
    gc.collect()
    try:  # glibc keeps freed memory in the process unless told; other C libraries have no malloc_trim
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


@pytest.fixture(scope="module", autouse=True)
def _release_after_module():
    """After each test module, drop JAX's compiled programs so a worker's memory does not grow with every
    module it has run; a module's own tests still share its compilations."""
    yield
    _release_compiled_programs()


@pytest.fixture(autouse=True)
def _release_when_large():
    """After a test that leaves the process above ``RELEASE_ABOVE_MB``, drop the compiled programs now."""
    yield
    rss = _resident_mb()
    if rss is not None and rss > RELEASE_ABOVE_MB:
        _release_compiled_programs()


@pytest.fixture
def rng():
    """A fresh generator with a fixed seed (tests needing other seeds make their own)."""
    return np.random.default_rng(20240611)


@pytest.fixture(scope="session")
def haar():
    """The Haar generator ``haar(n, rng, size=None)``."""
    return haar_unitary


@pytest.fixture(scope="session")
def make_matrix():
    """The matrix builder ``make_matrix(rng, shape, kind, rank=1)``."""
    return random_matrix


@pytest.fixture(scope="session")
def rebuild_mesh():
    """The independent mesh rebuild ``rebuild_mesh(layout, theta, phi, out_phase)``."""
    return mesh_matrix_np


# ---- counting XLA compilations -----------------------------------------------------


class _Compiles(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Compiling "):
            self.names.append(msg.split(" with ", 1)[0])


@contextlib.contextmanager
def compilations():
    """The XLA compilations (``Compiling jit(name)``) this thread runs inside the block: JAX logs one such line
    per program it compiles (eager operations included), none for a program found in its caches."""
    import jax

    handler = _Compiles()
    log = logging.getLogger("jax")
    log.addHandler(handler)
    try:
        with jax.log_compiles():
            yield handler.names
    finally:
        log.removeHandler(handler)
