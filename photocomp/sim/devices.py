"""Running per-tile programs across JAX devices.

A compiled program has many independent tiles. :func:`run_tiles` maps a
per-tile function over them in cache-sized chunks with ``lax.map`` and, with
more than one device, shards the tile axis across the devices of a one-axis
mesh with ``jax.shard_map``; on a multi-process runtime each process supplies
the shards it holds and the outputs are gathered on every process.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax import lax

__all__ = ["run_tiles", "single_threaded_blas", "prepare_blas_limits", "tile_chunk", "pad_tiles", "bucket", "device_tuple", "tile_mesh", "spread", "gather",
           "shard_map"]


def shard_map(fn, mesh, in_specs, out_specs):
    """``jax.shard_map`` of a purely per-shard ``fn`` (no collectives), across JAX versions.

    The replication checks are off: the loops inside start from constants and
    carry per-shard data, which the checker would ask to be cast explicitly.
    """
    smap = getattr(jax, "shard_map", None)
    if smap is None:  # older JAX
        from jax.experimental.shard_map import shard_map as smap
    try:
        return smap(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    except TypeError:
        return smap(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def device_tuple(devices=None) -> tuple:
    return tuple(jax.devices() if devices is None else devices)


def tile_mesh(devices: tuple):
    from jax.sharding import Mesh

    return Mesh(np.asarray(devices, dtype=object), ("tiles",))


@functools.lru_cache(maxsize=64)
def _tile_program(fn, static: tuple, chunk: int, devices: tuple, n_in: int):
    """jit of ``fn`` mapped over chunks of ``chunk`` items, sharded over ``devices`` along axis 0."""
    kwargs = dict(static)

    def local(*arrays):
        b = arrays[0].shape[0]
        if b == chunk:
            return fn(*arrays, **kwargs)
        chunks = tuple(a.reshape((b // chunk, chunk) + a.shape[1:]) for a in arrays)
        out = lax.map(lambda xs: fn(*xs, **kwargs), chunks)
        return tuple(o.reshape((b,) + o.shape[2:]) for o in out)

    if len(devices) == 1:
        return jax.jit(local)
    from jax.sharding import PartitionSpec

    spec = PartitionSpec("tiles")
    return jax.jit(shard_map(local, tile_mesh(devices), (spec,) * n_in, spec))


def spread(a: np.ndarray, mesh):
    """A host array split along axis 0 over ``mesh`` (each process supplies the shards it holds)."""
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("tiles"))
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def gather(out) -> tuple:
    """Host copies of a program's outputs, gathered from every process of a multi-host run."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        out = multihost_utils.process_allgather(out, tiled=True)
    return tuple(np.asarray(o) for o in out)


def run_tiles(fn, arrays, *, chunk: int, static: dict | None = None, devices=None):
    """Run a per-tile program over the leading (tile) axis of ``arrays``, sharded across devices.

    ``fn(*chunk_arrays, **static)`` maps arrays with a leading axis of
    ``chunk`` items to a tuple of arrays with the same leading axis. The tiles
    are padded (by repeating the last one) to a bounded set of sizes that are
    multiples of ``chunk`` x the number of devices, split evenly across ``devices`` (default: all JAX
    devices) with ``jax.shard_map`` over a one-axis device mesh, and each
    device maps ``fn`` over its chunks with ``lax.map`` (bounded memory,
    cache-sized work). Runs in float64. ``fn`` and ``static`` must be hashable
    (a module-level function and plain values): the compiled program is
    cached on them.

    Returns:
      tuple of numpy arrays, padding removed.
    """
    devices = device_tuple(devices)
    arrays = [np.asarray(a) for a in arrays]
    b = arrays[0].shape[0]
    nd = len(devices) if b >= len(devices) else 1
    devices = devices[:nd]
    size = bucket(b, nd * chunk)  # few distinct sizes, few recompiles
    arrays = [pad_tiles(a, size) for a in arrays]
    program = _tile_program(fn, tuple(sorted((static or {}).items())), chunk, devices, len(arrays))
    with jax.enable_x64(True):
        if nd > 1:
            arrays = [spread(a, tile_mesh(devices)) for a in arrays]
        return tuple(o[:b] for o in gather(program(*arrays)))


def tile_chunk(n_tiles: int, devices=None) -> int:
    """Tiles simulated together per loop of :func:`run_tiles` (a power of two).

    CPU: 4 (the 64 x 64 tiles' fields stay in cache; 8 ran a quarter slower on
    the per-tile simulations and checks of a compile). Accelerators: up to 256.
    """
    cap = 4 if device_tuple(devices)[0].platform == "cpu" else 256
    return min(cap, 1 << (n_tiles - 1).bit_length())


def pad_tiles(a, size: int) -> np.ndarray:
    """``a`` (NumPy) with its leading (tile) axis padded to ``size`` by repeating the last item."""
    a = np.asarray(a)
    if len(a) == size:
        return a
    return np.concatenate([a, np.broadcast_to(a[-1:], (size - len(a),) + a.shape[1:])])


def bucket(b: int, quantum: int) -> int:
    """Padded batch size: powers of two up to 256, then multiples of 256, and a multiple of ``quantum``."""
    size = 1 << (b - 1).bit_length() if b <= 256 else -(-b // 256) * 256
    return -(-size // quantum) * quantum


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    """A ``threadpoolctl.ThreadpoolController`` of the BLAS libraries loaded (numpy's, and scipy's,
    whose LAPACK JAX calls on CPU), made once; None without threadpoolctl."""
    try:
        import scipy.linalg.cython_lapack  # noqa: F401  (load it so that it is limited too)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def prepare_blas_limits() -> None:
    """Look up now the BLAS libraries :func:`single_threaded_blas` limits (once per process).

    Call it before starting threads that may import extension modules. The lookup walks the loaded
    libraries under the dynamic loader's lock and calls back into Python for each, while a thread that
    imports an extension module holds the interpreter lock as it waits for the loader's: the two wait for
    each other forever. (Seen: a compile's first ``single_threaded_blas`` in the main thread against its
    ahead-of-time thread lowering a first program, which imports JAX's MLIR extension.)
    """
    _blas_controller()


_blas_lock = threading.Lock()
_blas_users = 0  # blocks running, in every thread
_blas_limit = contextlib.ExitStack()  # holds the limit while any block runs


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """One BLAS/LAPACK thread while the block runs, when ``threadpoolctl`` is installed.

    Tiles are small (K x K), and so are the matrices checked whole: a
    multi-threaded BLAS or LAPACK call only adds synchronisation, which on a
    loaded machine costs far more than the arithmetic; the tiles run in
    parallel across devices instead. The libraries are looked up once per
    process (``threadpool_limits`` searches them on every call, about 2 ms).
    The limit is process-wide, as BLAS's thread count is: the first block to
    start (in any thread) sets it, the last to end restores the libraries'
    own settings, and nested or overlapping blocks cost nothing (a compile's
    strips run in two threads at once).
    :meth:`photocomp.compiler.pipeline.Pipeline.run` runs every pass in it
    (not the callbacks).
    """
    global _blas_users
    with _blas_lock:
        if _blas_users == 0:
            ctl = _blas_controller()
            if ctl is not None:
                _blas_limit.enter_context(ctl.limit(limits=1, user_api="blas"))
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limit.close()
