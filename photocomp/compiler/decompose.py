"""Unitary decompositions into MZI phases: Clements (rectangular) and Reck (triangular).

How the nulling runs
--------------------
The nulling order is static (:func:`photocomp.core.layout.nulling_schedule`). Its
data dependencies decide how much of it can run at once
(:func:`photocomp.core.layout.nulling_levels`): Reck's steps fall into 2N - 3
levels of independent steps, but Clements' alternating right and left
multiplications form a single chain (every step reads an entry the step
before it wrote), so Clements is inherently N(N-1)/2 steps long. On a CPU
the work per step, not the number of loop iterations, dominates once the loop
body is lean, so both kinds run the same sequential engine, built to make
each step cheap:

* The loop follows the schedule's structure: Clements as alternating sweeps
  of right steps (column pairs) and left steps (row pairs), Reck as one sweep
  per cleared row, so every loop body has a fixed kind of step (no branch,
  no gather/scatter): a two-line ``dynamic_slice``, the 2 x 2 rotation and a
  ``dynamic_update_slice`` that XLA performs in place.
* Work is restricted to the part of the matrix that is not yet nulled: a
  right step that nulls entry (t, k) only touches rows 0..t (the rows below
  are already zero in both columns), a left step that nulls (k+1, t) only
  columns t..N-1, and a Reck step on row r only rows 0..r. The bounds are
  dynamic, so each sweep runs as a few loops with static stripe lengths
  (``_segments``); this saves about a third of the arithmetic.
* Clements' right steps walk a column pair down the rows. The matrix is kept
  with an odd row length (``_odd_width``): with rows of a power of two bytes
  the walk hits the same few cache sets in every row and its loads and stores
  alias modulo 4 KiB, which made the right steps more than twice as slow as
  the left ones at N = 256 and above.
* A step reads the two entries it nulls after the previous step's update and
  computes its rotation algebraically (no trigonometry in the loop); the
  entries are stored, and theta/phi are computed from them at the end with
  the same formulas as the NumPy reference.
* Moving the Clements middle screen out through the left-multiplication MZIs
  runs level by level: MZIs on disjoint mode pairs are passed at once
  (about N levels instead of N^2/4 steps), on unit phasors, so the device
  runs no trigonometry at all; the host takes every angle in NumPy.

Batches run with the batch on the trailing axis (contiguous, vectorised) in
chunks that fit in cache, ``lax.map`` over the chunks; with several JAX
devices the chunks are sharded across them (``jax.shard_map``). The traced
program has constant size in N, so jit compile time does not grow with N.

References:
  W. R. Clements et al., "Optimal design for universal multiport
  interferometers", Optica 3, 1460 (2016).
  M. Reck et al., "Experimental realization of any discrete unitary
  operator", PRL 73, 58 (1994).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jax import lax

from photocomp.core.errors import InvalidInputError, UnknownNameError
from photocomp.core.layout import DECOMPOSED_KINDS, nulling_schedule
from photocomp.core.metrics import fidelity
from photocomp.core.phases import MeshPhases
from photocomp.core.validate import as_unitary_batch, check_int
from photocomp.sim.devices import bucket, gather, pad_tiles, run_tiles, shard_map, spread, tile_chunk, tile_mesh
from photocomp.sim.ideal import mesh_stack, tile_matrices_np

__all__ = ["decompose", "clements", "reck", "decompose_many", "decompose_pair", "check_tiles", "kernel_devices",
           "ACCELERATOR_MIN_BATCH", "line_updates", "step_rotation", "rotate_lines"]


# ---- one nulling step ---------------------------------------------------------------


def step_rotation(a, b, left: bool):
    """Coefficients ``(e c, e s, c, s)`` of the step that nulls ``a`` (right) or ``b`` (left).
    Right step (T^-1 from the right on columns (k, k+1), entries a = u[t, k],
    b = u[t, k+1]): tan(theta) = |a|/|b|, e = exp(-i phi), phi = arg a - arg b.
    Left step (T from the left on rows (k, k+1), a = u[k, t], b = u[k+1, t]):
    tan(theta) = |b|/|a|, e = exp(i phi), phi = arg(-b) - arg a. Both act on the
    two lines as ``new0 = e c x0 - s x1``, ``new1 = e s x0 + c x1``. phi is 0
    where the nulled entry is already 0 (the reference's convention). Written
    without trigonometry, from |a|, |b|, r = |(|a|, |b|)| and the unit phasors
    exp(i arg a), exp(i arg b) (arg as ``jnp.angle`` takes it, signed zeros
    included, so the rotation agrees with the phases :func:`_phases` reports),
    and without sums of products (which the compiler may or may
    not fuse into FMAs depending on the vector width), so a unitary gives
    bitwise the same coefficients alone or in any batch.
    """
    na, nb = jnp.abs(a), jnp.abs(b)
    r = jnp.abs(lax.complex(na, nb))
    ir = jnp.where(r > 0, 1.0 / jnp.where(r > 0, r, 1.0), 0.0)
    pa, pb = _phasor(a), _phasor(b)  # exp(i arg a), exp(i arg b)
    if left:
        c = jnp.where(r > 0, na * ir, 1.0)
        s = nb * ir
        e = jnp.where(nb > 0, -pb * jnp.conj(pa), 1.0)  # exp(i phi), 1 when b = 0
    else:
        c = jnp.where(r > 0, nb * ir, 1.0)
        s = na * ir
        e = jnp.where(na > 0, pb * jnp.conj(pa), 1.0)  # exp(-i phi), 1 when a = 0
    ec, es = _scale(e, c), _scale(e, s)
    return jnp.stack([ec, es, c.astype(ec.dtype), s.astype(ec.dtype)])


def _zero_phasor(z):
    """exp(i arg z) for z = 0 as ``jnp.angle`` sees it: -1 for a negative-zero real part, else 1."""
    return jnp.where(jnp.signbit(jnp.real(z)), -1.0, 1.0).astype(z.dtype)


def _phasor(z):
    """exp(i arg z) (arg as ``jnp.angle`` takes it, signed zeros included, see :func:`_zero_phasor`)."""
    mag = jnp.abs(z)
    return jnp.where(mag > 0, _scale(z, 1.0 / jnp.where(mag > 0, mag, 1.0)), _zero_phasor(z))


def _scale(z, x):
    """Complex ``z`` times real ``x`` (two real products, not a complex product)."""
    return lax.complex(jnp.real(z) * x, jnp.imag(z) * x)


def rotate_lines(cf, x0, x1):
    """The two new lines of a step with coefficients ``cf`` (see :func:`step_rotation`)."""
    return cf[0] * x0 - cf[3] * x1, cf[1] * x0 + cf[2] * x1


def _segments(n: int, batch: int = 1) -> list[int]:
    """Boundaries of the static stripe lengths: steps j in [b_s, b_{s+1}) touch n - b_s lines.
    Up to eight lengths, each covering at least ``max(8, min(32, 128 // batch))``
    lines for a batch of ``batch`` unitaries on the trailing axis (32 up to a
    batch of 4, 16 for 8, 8 from 16 on): a step of a batch has ``batch`` times
    the arithmetic to cut, against the same cost of one more loop to run and
    compile. Each length is one more loop body for XLA to trace, lower and
    compile, so a small problem, whose run is short, takes few, and one of at
    most 128 lines in all (``n * batch <= 128``) takes one: the V and U meshes
    of one 64-mode tile (a batch of 2) compile as one loop of each direction
    (eight with no rule for small batches, two with the first rule alone),
    which shortens a process's first compile and leaves the run time as it
    was (measured on a 2-core CPU for that batch, one loop against two: trace
    and lowering 0.30 s against 0.43 s, XLA compile 0.84 s against 1.25 s,
    the run 2.3-2.5 ms either way).
    Meshes of at most 64 modes take one up to 512 lines in all: a compile
    of a few 64-mode tiles (``photocomp demo``'s four tiles decompose eight
    meshes together) then compiles one loop of each direction instead of four,
    which saves about as much compile time again, while a run of that batch
    takes a few percent longer (at N = 128 the run lost a quarter, so larger
    meshes keep their lengths).
    ``benchmarks/decompositions.py`` (one unitary) and
    ``benchmarks/end_to_end.py`` (first and warm compiles) measure the result.
    """
    lines = n * max(batch, 1)
    if lines <= 128 or (n <= 64 and lines <= 512):
        return [0, n]
    count = max(1, min(8, n // max(8, min(32, 128 // max(batch, 1)))))
    return [n * s // count for s in range(count + 1)]


def line_updates(kind: str, n: int, batch: int = 1) -> int:
    """Lines (pairs of entries) the nulling kernel rotates to decompose one ``n``-mode unitary in a batch of
    ``batch``: every step rotates two lines of its stripe's static length (``_segments``), so the
    kernel runs ``28 * line_updates`` real floating-point operations (two outputs of two complex products
    and a complex sum each). ``benchmarks/kernel_roofline.py`` holds it against the machine's rate.
    """
    if kind not in DECOMPOSED_KINDS:
        raise UnknownNameError(f"kind must be one of {list(DECOMPOSED_KINDS)}; got {kind!r}")
    n, batch = check_int(n, "n", low=1), check_int(batch, "batch", low=1)
    bounds = _segments(n, batch)
    length = np.zeros(n, dtype=np.int64)  # stripe length of position j (Clements) or q (Reck)
    for s in range(len(bounds) - 1):
        length[bounds[s]:bounds[s + 1]] = n - bounds[s]
    if kind == "clements":  # sweep i = 0..n-2 has steps j = 0..i, step j rotates length[j] lines
        return int(np.cumsum(length)[: n - 1].sum())
    return int(np.arange(n - 1, 0, -1) @ length[: n - 1])  # Reck: row n-1-q has n-1-q steps


def _own_buffer(u):
    """``u`` materialised in a buffer of its own shape before the in-place updates.
    Without it, XLA on CPU may fuse an in-place ``dynamic_update_slice`` of a
    reshaped input (e.g. ``x[0]`` of a (1, N, N) batch) into a fresh buffer
    and leave the entries outside the update unwritten (seen at N = 3, where
    the loops are unrolled).
    """
    return lax.optimization_barrier(u)


def _odd_width(u):
    """``u`` (N, N, *T) with a zero column appended when N is even, so that rows have an odd length.
    A right step reads a column pair down the rows. With a row of a power of
    two bytes (N = 256 complex128: 4 KiB) every row's pair falls into the same
    few L1 cache sets and the loads and stores alias modulo 4 KiB, so the
    strided walk runs from L2; an odd row length spreads it over all sets.
    The result is bitwise the same; ``benchmarks/decompositions.py`` measures
    the time. Reck's steps read contiguous rows and need no padding.
    """
    n = u.shape[0]
    if n % 2:
        return u
    return jnp.pad(u, ((0, 0), (0, 1)) + ((0, 0),) * (u.ndim - 2))


def _entry(u, r, c, tail):
    zeros = (0,) * len(tail)
    return lax.dynamic_slice(u, (r, c) + zeros, (1, 1) + tail)[0, 0]


def _store(ab, a, b, step):
    return lax.dynamic_update_index_in_dim(ab, jnp.stack([a, b]), step, 0)


# ---- Clements ----------------------------------------------------------------------


def _clements_nulling(u):
    """Null ``u`` (N, N, *T) in Clements order.
    Returns ``(ab, u)``: the entries each step nulled against, ``ab[step] =
    (a, b)`` in nulling order (N(N-1)/2, 2, *T), and the nulled matrix (its
    diagonal is the middle phase screen; entries below it are not updated).
    Sweep i (0-based) nulls the i-th anti-diagonal from the bottom-left
    corner: even i with right steps j = 0..i on columns (i-j, i-j+1) nulling
    (N-1-j, i-j); odd i with left steps on rows (N-2-i+j, N-1-i+j) nulling
    (N-1-i+j, j). Step (i, j) is number i(i+1)/2 + j.
    """
    n = u.shape[0]
    tail = u.shape[2:]
    zeros = (0,) * len(tail)
    steps = n * (n - 1) // 2
    bounds = _segments(n, int(np.prod(tail)))
    ab = jnp.zeros((steps + 1, 2) + tail, u.dtype)  # slot `steps` takes the look-ahead past the end
    u = _own_buffer(_odd_width(u))

    def right_step(length):
        def body(j, carry):
            u, ab, cf, i = carry
            k = i - j
            lines = lax.dynamic_slice(u, (0, k) + zeros, (length, 2) + tail)
            new0, new1 = rotate_lines(cf, lines[:, 0], lines[:, 1])
            u = lax.dynamic_update_slice(u, jnp.stack([new0, new1], 1), (0, k) + zeros)
            # look ahead: step j+1 nulls (N-2-j, k-1) with columns (k-1, k)
            t, kn = n - 2 - j, jnp.maximum(k - 1, 0)
            pair = lax.dynamic_slice(u, (t, kn) + zeros, (1, 2) + tail)[0]
            ab = lax.dynamic_update_index_in_dim(ab, pair, i * (i + 1) // 2 + j + 1, 0)
            return u, ab, step_rotation(pair[0], pair[1], False), i

        return body

    def left_step(length):
        def body(j, carry):
            u, ab, cf, i = carry
            k = n - 2 - i + j
            lines = lax.dynamic_slice(u, (k, n - length) + zeros, (2, length) + tail)
            new0, new1 = rotate_lines(cf, lines[0], lines[1])
            u = lax.dynamic_update_slice(u, jnp.stack([new0, new1], 0), (k, n - length) + zeros)
            # look ahead: step j+1 nulls (k+2, j+1) with rows (k+1, k+2)
            kn = jnp.minimum(k + 1, n - 2)
            pair = lax.dynamic_slice(u, (kn, j + 1) + zeros, (2, 1) + tail)[:, 0]
            ab = lax.dynamic_update_index_in_dim(ab, pair, i * (i + 1) // 2 + j + 1, 0)
            return u, ab, step_rotation(pair[0], pair[1], True), i

        return body

    rights = [right_step(n - b) for b in bounds[:-1]]
    lefts = [left_step(n - b) for b in bounds[:-1]]

    def sweep(bodies, count, carry):
        for s, body in enumerate(bodies):
            carry = lax.fori_loop(jnp.minimum(bounds[s], count), jnp.minimum(bounds[s + 1], count), body, carry)
        return carry

    def two_sweeps(p, carry):
        u, ab = carry
        i = 2 * p  # right sweep, always present
        a, b = _entry(u, n - 1, i, tail), _entry(u, n - 1, i + 1, tail)
        ab = _store(ab, a, b, i * (i + 1) // 2)
        u, ab, _, _ = sweep(rights, i + 1, (u, ab, step_rotation(a, b, False), i))
        i = 2 * p + 1  # left sweep, absent after the last right sweep when N is even
        count = jnp.where(i <= n - 2, i + 1, 0)
        k = jnp.maximum(n - 2 - i, 0)
        a, b = _entry(u, k, 0, tail), _entry(u, k + 1, 0, tail)
        ab = _store(ab, a, b, jnp.minimum(i * (i + 1) // 2, steps))
        u, ab, _, _ = sweep(lefts, count, (u, ab, step_rotation(a, b, True), i))
        return u, ab

    u, ab = lax.fori_loop(0, n // 2, two_sweeps, (u, ab))
    return ab[:steps], u[:, :n]


# ---- Reck --------------------------------------------------------------------------


def _reck_nulling(u):
    """Null ``u`` (N, N, *T) in Reck order; returns ``(ab, d)``: entries as :func:`_clements_nulling`
    and a matrix whose diagonal is the final phase screen.

    Rows r = N-1 .. 1 are cleared by right steps on columns (c, c+1), c = 0 ..
    r-1, nulling (r, c); step (r, c) is number N(N-1)/2 - r(r+1)/2 + c. Rows
    below r are finished, so a step on row r touches rows 0..r only. All steps
    act on columns, so the engine runs on the transpose, where a column pair of
    ``u`` is a contiguous pair of rows.
    """
    n = u.shape[0]
    tail = u.shape[2:]
    zeros = (0,) * len(tail)
    steps = n * (n - 1) // 2
    bounds = _segments(n, int(np.prod(tail)))
    v = _own_buffer(jnp.swapaxes(u, 0, 1))  # v[c, r] = u[r, c]
    ab = jnp.zeros((steps + 1, 2) + tail, u.dtype)

    def step(length):
        def body(c, carry):
            v, ab, cf, r = carry
            lines = lax.dynamic_slice(v, (c, 0) + zeros, (2, length) + tail)
            new0, new1 = rotate_lines(cf, lines[0], lines[1])
            v = lax.dynamic_update_slice(v, jnp.stack([new0, new1], 0), (c, 0) + zeros)
            # look ahead: step (r, c+1) nulls u[r, c+1] against u[r, c+2]
            pair = lax.dynamic_slice(v, (jnp.minimum(c + 1, n - 2), r) + zeros, (2, 1) + tail)[:, 0]
            ab = lax.dynamic_update_index_in_dim(ab, pair, steps - r * (r + 1) // 2 + c + 1, 0)
            return v, ab, step_rotation(pair[0], pair[1], False), r

        return body

    def row(body):
        def clear(q, carry):
            v, ab = carry
            r = n - 1 - q
            a, b = _entry(v, 0, r, tail), _entry(v, 1, r, tail)
            ab = _store(ab, a, b, steps - r * (r + 1) // 2)
            v, ab, _, _ = lax.fori_loop(0, r, body, (v, ab, step_rotation(a, b, False), r))
            return v, ab

        return clear

    carry = (v, ab)
    for s in range(len(bounds) - 1):
        lo, hi = bounds[s], min(bounds[s + 1], n - 1)
        if lo < hi:
            carry = lax.fori_loop(lo, hi, row(step(n - bounds[s])), carry)
    v, ab = carry
    return ab[:steps], v


# ---- phases ------------------------------------------------------------------------


def _left_phasors(ab, left_steps):
    """exp(i phi) of the left steps from the entries they nulled: phi = arg(-b) - arg a, 0 where b = 0."""
    a, b = ab[left_steps, 0], ab[left_steps, 1]
    return jnp.where(jnp.abs(b) == 0, 1.0 + 0j, _phasor(-b) * jnp.conj(_phasor(a)))


@functools.lru_cache(maxsize=64)
def _push_levels(kind: str, n: int):
    """Levels of the left-multiplication MZIs for moving the middle screen out.
    The screen passes the left MZIs nearest first (reverse nulling order);
    MZIs on disjoint pairs commute, so each level holds MZIs on disjoint pairs
    and is passed at once. Returns ``(slots, pairs)``, int arrays (levels,
    width): the position of each MZI among the left steps (nulling order) and
    its upper mode; padding slots point at position L (one past the last left
    step) and mode N (dummy entries).
    """
    sched = nulling_schedule(kind, n)
    n_left = int(sched["left"].sum())
    if not n_left:
        return np.zeros((0, 1), np.int32), np.zeros((0, 1), np.int32)
    order = np.arange(n_left)[::-1]  # push order, as positions among the left steps
    ks = sched["k"][sched["left"]][order]
    free = np.zeros(n + 1, np.int64)
    level = np.zeros(n_left, np.int64)
    for m, k in enumerate(ks):
        level[m] = max(free[k], free[k + 1])
        free[k] = free[k + 1] = level[m] + 1
    width = int(np.bincount(level).max())
    slots = np.full((level.max() + 1, width), n_left, np.int32)
    pairs = np.full((level.max() + 1, width), n, np.int32)
    fill = np.zeros(level.max() + 1, np.int64)
    for m in range(n_left):  # push order is kept inside a level
        slots[level[m], fill[level[m]]] = order[m]
        pairs[level[m], fill[level[m]]] = ks[m]
        fill[level[m]] += 1
    return slots, pairs


def _push_screen(kind, n, phi_left, alpha):
    """Move the middle screen out through the left MZIs, on unit phasors.
    ``phi_left`` (L, *T) holds exp(i phi) of the left MZIs, ``alpha`` (N, *T)
    exp(i alpha) of the screen. Uses the identity of docs/design.md §3.5 (see
    :func:`photocomp.core.convention.commute_through_inverse`) T^-1(theta, phi)
    diag(e^{i a}, e^{i b}) = diag(e^{i (b - phi + pi)}, e^{i b}) T(theta, a -
    b + pi) as products of phasors: no trigonometry on the device, and the
    angles (taken on the host by :func:`_phases`) need no wrapping on the way
    (a mode is passed up to N/2 times). Returns the left MZIs' new phasors
    and the output screen's.
    """
    slots, pairs = _push_levels(kind, n)
    if not len(slots):
        return phi_left, alpha
    tail = alpha.shape[1:]
    screen = jnp.concatenate([alpha, jnp.ones((2,) + tail, alpha.dtype)])
    phi_x = jnp.concatenate([phi_left, jnp.ones((1,) + tail, phi_left.dtype)])

    def level(screen, level_slots):
        st, k = level_slots
        a, b, p = screen[k], screen[k + 1], phi_x[st]
        screen = screen.at[k].set(-b * jnp.conj(p))  # the mode below keeps b
        return screen, -a * jnp.conj(b)

    screen, new_phi = lax.scan(level, screen, (jnp.asarray(slots), jnp.asarray(pairs)))
    phi_x = phi_x.at[jnp.asarray(slots).reshape(-1)].set(new_phi.reshape((-1,) + tail))
    return phi_x[:-1], screen[:n]


def _screen_measures(d):
    """How far the nulled matrix ``d`` (N, N, *T) is from P, the phase screen of its diagonal: (3, *T).

    Rows: ``max |D - P|``, ``||D - P||_F`` and ``sum_i |D_ii|``. The nulling
    multiplies by unitaries only (D = L U R) and the returned phases describe
    U_phases = L^H P R^H, so ``max |D - P|`` is the largest entry of
    L (U - U_phases) R (0 for a unitary input, to rounding),
    ``||D - P||_F = ||U - U_phases||_F`` (the Frobenius norm is unitarily
    invariant) and ``sum_i |D_ii| = |Tr(U^H U_phases)|`` (``Tr(D^H P)``, P_ii =
    D_ii / |D_ii|): the decomposition's error and fidelity without rebuilding
    the mesh.
    """
    n = d.shape[0]
    eye = jnp.eye(n, dtype=bool).reshape((n, n) + (1,) * (d.ndim - 2))
    mag = jnp.abs(d)
    off = jnp.where(eye, jnp.abs(mag - 1.0), mag)
    return jnp.stack([jnp.max(off, axis=(0, 1)), jnp.sqrt(jnp.sum(off * off, axis=(0, 1))),
                      jnp.sum(jnp.where(eye, mag, 0.0), axis=(0, 1))])


def _layout_order(kind: str, n: int) -> np.ndarray:
    """Nulling step of every layout position (the inverse of the schedule's ``slot``)."""
    slot = nulling_schedule(kind, n)["slot"]
    order = np.empty_like(slot)
    order[slot] = np.arange(len(slot))
    return order


def _decompose_lines(u, kind: str):
    """Null ``u`` (N, N, *T) and move the middle screen out (the device part of a decomposition).
    Returns ``(ab, phi_left, out_phase, measures)`` in layout order: the
    entries every MZI's step nulled (n_mzi, 2, *T), exp(i phi) of the left
    steps moved through the screen (n_mzi, *T; 1 at right steps), exp(i
    alpha) of the output screen (N, *T) and the nulled matrix's distance from
    a phase screen (3, *T) of :func:`_screen_measures`. :func:`_phases` turns
    them into phases.
    """
    n = u.shape[0]
    sched = nulling_schedule(kind, n)
    tail = u.shape[2:]
    if n == 1:
        return jnp.zeros((0, 2) + tail, u.dtype), jnp.ones((0,) + tail, u.dtype), _phasor(u[0]), _screen_measures(u)
    ab, d = (_clements_nulling if kind == "clements" else _reck_nulling)(u)
    alpha = _phasor(d[jnp.arange(n), jnp.arange(n)])
    left_steps = np.flatnonzero(sched["left"])
    phi_left, alpha = _push_screen(kind, n, _left_phasors(ab, left_steps), alpha)
    order = _layout_order(kind, n)
    phi_left = jnp.ones((len(order),) + tail, phi_left.dtype).at[sched["slot"][left_steps]].set(phi_left)
    return ab[order], phi_left, alpha, _screen_measures(d)


def _wrap(x: np.ndarray) -> np.ndarray:
    """:func:`photocomp.core.convention.wrap_phase` in NumPy: phases (rad) into [0, 2 pi).
    Values in (-2 pi, 4 pi), all this module produces, take two selects instead
    of a floating-point modulo (several times slower in NumPy).
    """
    two_pi = 2 * np.pi
    if x.size and (x.min() <= -two_pi or x.max() >= 2 * two_pi):
        w = np.mod(x, two_pi)
    else:
        w = np.where(x < 0, x + two_pi, np.where(x >= two_pi, x - two_pi, x))
    return np.where((w >= two_pi) | (w <= 0), 0.0, w)


def _phases(ab, phi_left, out_phase, kind: str):
    """theta, phi (B, n_mzi) in layout order and the wrapped output phases (B, N), in NumPy.
    theta and the phases of the right steps are the reference's formulas
    (right step: tan theta = |a|/|b|, phi = arg a - arg b; left step: tan
    theta = |b|/|a|; phi = 0 where the nulled entry is 0) on the stored
    entries; the left steps' phases and the output phases are the angles of
    the phasors moved through the screen. NumPy's float64 atan2 is several
    times faster than XLA's on CPU, and its result for an element does not
    depend on the array's length, so a batch equals its unitaries decomposed
    one by one.
    """
    n = out_phase.shape[-1]
    is_left, left, right = _layout_sides(kind, n)
    a, b = ab[..., 0], ab[..., 1]
    na, nb = np.abs(a), np.abs(b)
    theta = np.arctan2(np.where(is_left, nb, na), np.where(is_left, na, nb))
    # each angle only where it is used (Clements: about half the MZIs each; Reck: right steps only): the
    # angles are most of the host's time
    phi = np.empty(theta.shape)
    ar, br = a[:, right], b[:, right]
    phi[:, right] = np.where(na[:, right] == 0, 0.0, np.angle(ar) - np.angle(br))  # the right steps' formula
    phi[:, left] = np.angle(phi_left[:, left])
    return theta, _wrap(phi), _wrap(np.angle(out_phase))


@functools.lru_cache(maxsize=64)
def _layout_sides(kind: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | slice]:
    """Which layout positions hold left-step MZIs: the mask, then the left and the right steps' positions
    (all of them as a slice when there are no left steps, as in Reck's layout: a view, not a copy)."""
    is_left = nulling_schedule(kind, n)["left"][_layout_order(kind, n)]
    left = np.flatnonzero(is_left)
    right = np.flatnonzero(~is_left) if len(left) else slice(None)
    for side in (is_left, left, right):
        if isinstance(side, np.ndarray):
            side.flags.writeable = False  # shared by every call (cached)
    return is_left, left, right


# ---- batches -----------------------------------------------------------------------


def _chunk_size(n: int, batch: int, platform: str) -> int:
    """Unitaries decomposed together (on the trailing axis) per loop.
    CPU: as many as keep the chunk near 1 MiB, so that it stays in cache
    (larger chunks fall out of it and slow down), at most 32. Accelerators:
    the whole batch, up to 256 MiB of matrix per chunk, since their cost is
    per step rather than per entry.
    """
    per = 16 * n * n
    if platform == "cpu":
        cap = max(1, min(32, (1 << 20) // per))
    else:
        cap = max(1, (1 << 28) // per)
    c = 1
    while c * 2 <= min(cap, batch) and batch % (c * 2) == 0:
        c *= 2
    return c


def _decompose_batch(u, kind: str, chunk: int):
    """Decompose ``u`` (B, N, N) in chunks of ``chunk`` unitaries on the trailing axis.
    Returns the outputs of :func:`_decompose_lines` with a leading batch axis.
    """
    b, n = u.shape[0], u.shape[-1]
    if chunk == 1:
        run_one = lambda x: _decompose_lines(x[0], kind)  # noqa: E731
        return lax.map(run_one, u[:, None]) if b > 1 else tuple(a[None] for a in run_one(u))
    chunks = jnp.moveaxis(u.reshape((b // chunk, chunk, n, n)), 1, -1)  # (B/C, N, N, C)

    def run(x):
        return tuple(jnp.moveaxis(a, -1, 0) for a in _decompose_lines(x, kind))

    if b == chunk:
        return run(chunks[0])
    return tuple(a.reshape((b,) + a.shape[2:]) for a in lax.map(run, chunks))


_decompose_jit = jax.jit(_decompose_batch, static_argnames=("kind", "chunk"))


@functools.lru_cache(maxsize=32)
def _sharded(kind: str, chunk: int, devices: tuple):
    """jit of the chunked decomposition sharded over ``devices`` along the batch axis."""
    from jax.sharding import PartitionSpec

    mesh = tile_mesh(devices)
    spec = PartitionSpec("tiles")
    fn = shard_map(functools.partial(_decompose_batch, kind=kind, chunk=chunk), mesh, (spec,), (spec,) * 4)
    return jax.jit(fn), mesh


ACCELERATOR_MIN_BATCH = 256
"""Fewest unitaries :func:`decompose_many` sends to an accelerator when no devices are given; smaller
batches run on the host's CPU device. The kernel's steps are sequential and each is small, so an
accelerator's time grows with the steps, not with the unitaries: one decomposition there takes tens of
times longer than on one CPU core, while a batch of an accelerator's group (:func:`_group_size`) or more
shares the steps (benchmarks/GPU.md has both). A compile's few tiles stay on the host."""


def kernel_devices(batch: int, devices=None, *, default=None) -> tuple:
    """The devices :func:`decompose_many` runs a batch of ``batch`` unitaries on.

    ``devices`` given: those. Else JAX's default devices (``default``, for tests: a tuple that stands
    in for ``jax.devices()``), except that a batch under :data:`ACCELERATOR_MIN_BATCH` on an
    accelerator runs on the host's CPU devices, where the kernel's sequential steps are fast.
    """
    if devices is not None:
        return tuple(devices)
    devices = tuple(jax.devices() if default is None else default)
    if devices[0].platform == "cpu" or batch >= ACCELERATOR_MIN_BATCH:
        return devices
    try:
        return tuple(jax.devices("cpu"))
    except RuntimeError:  # a runtime built without its CPU backend
        return devices


def decompose_many(u, kind: str, *, devices=None):
    """Decompose a validated complex128 batch ``u`` (B, N, N) on ``devices`` (default: :func:`kernel_devices`).
    Returns numpy float64 ``theta, phi`` (B, n_mzi) in layout order,
    ``out_phase`` (B, N), the screen deviation ``max |D - P|`` (B,) and the
    residual (B, 2): ``||U - U_hat||_F`` and ``|Tr(U^H U_hat)|``, U_hat the
    unitary the phases describe, as the nulling measures them (see
    :func:`_screen_measures`). The batch is padded (its last unitary
    repeated, :func:`pad_tiles`) to a bounded set of sizes (few
    recompiles) and cut into cache-sized chunks.
    It runs as groups (:func:`_group_size` per device) dispatched
    asynchronously, so that the host's share (:func:`_phases`) overlaps the
    devices'; with more than one device each group is sharded across them
    along the batch axis.
    """
    b, n = u.shape[0], u.shape[-1]
    devices = kernel_devices(b, devices)
    platform = devices[0].platform
    nd = len(devices) if b >= len(devices) else 1
    u = np.asarray(u, dtype=np.complex128)

    group = _group_size(platform) * nd
    with jax.enable_x64(True):
        # groups dispatched all at once (asynchronously): while the devices decompose a group,
        # the host turns the previous one into phases
        pending = []
        for g in range(0, b, group):
            x = u[g:g + group]
            size = _group_padding(len(x), group, nd)
            chunk = _chunk_size(n, size // nd, platform)
            if nd > 1:
                fn, mesh = _sharded(kind, chunk, devices)
                pending.append((len(x), fn(spread(pad_tiles(x, size), mesh))))
            else:
                pending.append((len(x), _decompose_jit(jax.device_put(pad_tiles(x, size), devices[0]), kind=kind,
                                                       chunk=chunk)))
        parts = []
        for count, out in pending:
            ab, phi_left, screen, measures = (a[:count] for a in gather(out))
            measures = np.asarray(measures, dtype=np.float64)
            parts.append(_phases(ab, phi_left, screen, kind) + (measures[:, 0], measures[:, 1:]))
    return tuple(np.concatenate(p) for p in zip(*parts))


def decompose_pair(u, vh, kind: str) -> tuple[tuple, tuple]:
    """:func:`decompose_many` of two stacks of unitaries of one size (a compile's U and V^H meshes).

    One call on both stacks where that lets the kernel decompose several
    unitaries together (chunks of more than one, or several groups); else one
    call each (a chunk of one unitary runs fastest on its own). A unitary's
    phases do not depend on the batch it is decomposed in, so the result is
    the same either way.
    """
    u, vh = np.asarray(u), np.asarray(vh)
    t, n = u.shape[0], u.shape[-1]
    if t == 1 and _chunk_size(n, 2, kernel_devices(2)[0].platform) == 1:
        return decompose_many(u, kind), decompose_many(vh, kind)
    out = decompose_many(np.concatenate([u, vh]), kind)
    return tuple(a[:t] for a in out), tuple(a[t:] for a in out)


def _group_padding(count: int, group: int, nd: int) -> int:
    """Padded size of a group of ``count`` unitaries: a full group as it is, a ragged last one bucketed."""
    return count if count == group else bucket(count, nd)


def group_meshes(devices=None) -> int:
    """Unitaries per program :func:`decompose_many` dispatches on ``devices`` (default: all JAX devices)
    with a batch of at least that many: every full group runs one compiled program, so decomposing one
    group compiles what a batch of any size needs for its full groups."""
    devices = tuple(jax.devices() if devices is None else devices)
    return _group_size(devices[0].platform) * len(devices)


def _group_size(platform: str) -> int:
    """Unitaries per dispatched program and device.
    On a CPU the host's share of a group (its phases, in NumPy) runs on
    another core while the device works on the next group, and after the last
    group it runs alone: small groups keep that tail short (32 unitaries of
    64 x 64: two cache-sized chunks). An accelerator's cost is per step, not
    per entry, so it takes large groups.
    """
    return 32 if platform == "cpu" else 256


# ---- checking compiled meshes ----------------------------------------------------------


def _mesh_chunk(*arrays, kind: str, n_meshes: int):
    """Rebuild a chunk of tiles' meshes from their phases: ``n_meshes`` triples (theta, phi, out_phase)
    in, the mesh matrices (C, K, K) out, one per triple (:func:`photocomp.sim.ideal.mesh_stack`)."""
    c, k = arrays[2].shape
    return tuple(mesh_stack(nulling_schedule(kind, k)["layout"], arrays, c))


def check_tiles(pm, vh, u, blocks=None, *, devices=None):
    """Rebuild every tile's meshes from a phase map and measure them, sharded across devices.

    Args:
      pm: the :class:`~photocomp.core.ir.PhaseMap`.
      vh, u: the factors the V and U meshes should implement, (n_tiles, K, K);
        ``vh`` is ignored (pass ``None``) for a unitary program.
      blocks: the zero-padded tiles (n_tiles, K, K) of the compiled matrix, or
        ``None`` to skip the tile errors.

    Returns:
      ``(fid_v, fid_u, err2, tiles)``: per-tile fidelities |Tr(A^H B)|^2 / K^2
      of the rebuilt meshes (``fid_v`` None for a unitary program) and (when
      ``blocks`` is given, else ``None``) the tile matrices ``gain U diag(cos
      sigma) V^H`` (unitary: ``gain U``), (n_tiles, K, K), and their squared
      Frobenius error over the unpadded part of each tile, so that
      ``sqrt(sum(err2))`` is ``||W - W_hat||_F``.

    The meshes are rebuilt on the devices (the O(K^3) simulation) and the
    fidelities and errors formed on the host in float64 NumPy; the tiles are
    :func:`photocomp.sim.ideal.tile_matrices_np`, the simulation every later
    pass and a loaded program use, so the compiled dense matrix is
    bit-identical to a reloaded program's.
    """
    svd = pm.circuit == "svd"
    meshes = [pm.v, pm.u] if svd else [pm.u]
    arrays = [np.asarray(a, np.float64) for m in meshes for a in (m.theta, m.phi, m.out_phase)]
    hats = run_tiles(_mesh_chunk, arrays, chunk=tile_chunk(pm.n_tiles, devices), devices=devices,
                     static={"kind": pm.mesh_kind, "n_meshes": len(meshes)})
    u_hat = hats[-1]
    fid_u = fidelity(np.asarray(u, np.complex128), u_hat)
    v_hat = hats[0] if svd else None
    fid_v = fidelity(np.asarray(vh, np.complex128), v_hat) if svd else None
    if blocks is None:
        return fid_v, fid_u, None, None
    # the tiles exactly as every later pass and a loaded program simulate them (sim.ideal.tile_matrices,
    # fields propagated through V, the attenuators and U): a program's dense matrix must not depend on
    # whether it was compiled or loaded, to the last bit
    tiles = tile_matrices_np(pm)
    rows, cols = pm.grid.extent()
    k = pm.grid.tile
    i = np.arange(k)
    mask = (i[None, :, None] < rows[:, None, None]) & (i[None, None, :] < cols[:, None, None])
    d = np.where(mask, np.asarray(blocks, np.complex128) - tiles, 0.0)
    err2 = np.einsum("tij,tij->t", d.real, d.real) + np.einsum("tij,tij->t", d.imag, d.imag)
    return fid_v, fid_u, err2, tiles


def decompose(unitary: npt.ArrayLike, kind: str = "clements", *, check: bool = True, atol: float = 1e-8) -> MeshPhases:
    """Decompose unitaries into the phases of a ``kind`` mesh.
    Args:
      unitary: complex array ``(N, N)`` or a batch ``(B, N, N)``. Computed in
        float64 (complex128) whatever the global JAX precision. A batch is
        sharded across all JAX devices.
      kind: ``"clements"`` (depth N) or ``"reck"`` (depth 2N-3).
      check: verify that the input is unitary to ``atol``.
      atol: tolerance of the unitarity check. The nulling multiplies the input
        by unitaries until it is a phase screen D = L U R; the check bounds
        ``max |D - P|``, P the phase screen of D's diagonal. That is the
        largest entry of L (U - U_phases) R, U_phases the unitary the returned
        phases describe, and equals ``max |U U^H - I| / 2`` for U = (1 + e) V,
        V unitary. It costs O(N^2), against O(N^3) for forming U U^H.

    Returns:
      :class:`~photocomp.core.phases.MeshPhases` with ``theta`` in [0, pi/2],
      ``phi`` and ``out_phase`` in [0, 2 pi); leading batch axis kept.

    Raises:
      InvalidInputError: if ``check`` and the input is not unitary to ``atol``.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> ph = pc.decompose(np.eye(4), "clements")
      >>> ph.layout.n_mzi
      6
    """
    if kind not in DECOMPOSED_KINDS:
        raise UnknownNameError(f"kind must be one of {DECOMPOSED_KINDS}; got {kind!r}")
    u, batched = as_unitary_batch(unitary, "unitary", check=False)
    lay = nulling_schedule(kind, u.shape[-1])["layout"]
    theta, phi, out, dev, _ = decompose_many(u, kind)
    if check and dev.max() > atol:
        worst = int(np.argmax(dev))
        where = f" (batch item {worst})" if batched else ""
        raise InvalidInputError(
            f"unitary must be unitary to atol={atol:g}; got a deviation of {dev[worst]:.3g}{where} "
            "(max |D - P| of the nulled matrix D = L U R from a phase screen P). "
            "Compile general matrices with photocomp.compile (SVD pass) instead."
        )
    if not batched:
        theta, phi, out = theta[0], phi[0], out[0]
    return MeshPhases(layout=lay, theta=theta, phi=phi, out_phase=out)


def clements(unitary: npt.ArrayLike, **kwargs: Any) -> MeshPhases:
    """Clements rectangular decomposition; see :func:`decompose`."""
    return decompose(unitary, "clements", **kwargs)


def reck(unitary: npt.ArrayLike, **kwargs: Any) -> MeshPhases:
    """Reck triangular decomposition; see :func:`decompose`."""
    return decompose(unitary, "reck", **kwargs)
