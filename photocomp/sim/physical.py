"""Mesh-level conversion between mathematical (theta, phi) settings and physical phases.

Per MZI (see :mod:`photocomp.core.convention`)::

    physical_mzi(2 theta + pi, chi) = diag(e^{i(theta + pi)}, e^{i theta}) @ T(theta, chi)

so a physical device leaves a known phase screen on its outputs. In a mesh
that screen is pushed forward, column by column: the next MZI's external
phase absorbs the difference of its two input phases and passes their common
part on; whatever remains after the last column is taken off by the output
phase shifters. :func:`mesh_to_physical` computes the physical phases
(internal, external, output) such that the ideal physical mesh implements
*exactly* the mathematical one; :func:`mesh_from_physical` inverts it.
:func:`apply_physical_mesh` simulates a physical mesh with coupler
splitting-angle errors and per-MZI loss (the building block of chip models).

All functions are pure JAX, work under jit/vmap/grad, and accept leading
batch axes on the setting arrays.

Simulation engine. Every MZI of a column acts on a disjoint mode pair, and
in a Clements or Reck mesh the pairs of column ``c`` all have upper mode
``n = c (mod 2)``. The fields ``(N, B)`` are therefore kept as two arrays,
the even modes ``a = x[0::2]`` and the odd modes ``b = x[1::2]``: an
even-parity column mixes ``(a[p], b[p])`` and an odd-parity column mixes
``(b[p], a[p + 1])``, each as one vectorised 2 x 2 update on all pairs at
once, with no gathers in the loop. The layout's columns are packed into a
static schedule of (even, odd) steps (:func:`pair_schedule`; slots without an
MZI hold the identity) and one ``lax.scan`` runs over the steps with the
steps' 2 x 2 coefficients as the scanned arrays, so the trace size does not
grow with the mesh. A diagonal between two meshes (an output screen, the
attenuator column) is folded into the first step of the next mesh, so the V
mesh, the attenuators and the U mesh of a chip tile run as one scan
(:func:`propagate_meshes`). A Bell mesh (symmetric cells,
:mod:`photocomp.core.bell`) runs the same way: its input layer and edge
shifters are folded into the inputs of the cells they feed
(:func:`bell_coefficients`). Physical MZI coefficients are closed forms in
``cos``/``sin`` of the phases (:func:`physical_coefficients`), with float64
``sin``/``cos`` as a vectorised polynomial (:func:`sincos`; XLA's are scalar
library calls on CPU) and a chip's constant errors evaluated with numpy at
trace time. Batches of fields with shared settings go through the tiles'
matrices instead of being propagated (:func:`fold_batches`). A layout whose
pairs are not adjacent (a butterfly) runs a column scan with gathers instead
(``_propagate_gathered``). Callers that
only take reverse-mode gradients (calibration, twin fitting) can ask for
``reverse_only``: the gradient then sweeps one N x N matrix back through the
steps by similarity transforms instead of propagating the fields' adjoint
and reducing over them (``_chain``; the simulation table of
``benchmarks/README.md`` has the times of both). The
straightforward column loop :func:`photocomp.core.layout.apply_columns` over
:func:`photocomp.core.convention.physical_mzi` products is the float64 reference
the tests hold this engine to.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from photocomp.core import convention, crossbar
from photocomp.core.bell import fold_targets
from photocomp.core.cell import FIXED_THETA, MZI, Cell, Coupler, Shifter
from photocomp.core.errors import InvalidInputError
from photocomp.core.layout import MeshLayout, apply_columns, crossbar_apply

__all__ = ["mesh_to_physical", "mesh_from_physical", "apply_physical_mesh", "physical_mesh_unitary"]


def _columns(lay: MeshLayout):
    top, index, valid = lay.column_slots
    return jnp.asarray(top), jnp.asarray(lay.column_bottoms), jnp.asarray(index), jnp.asarray(valid)


def _sweep(lay: MeshLayout, theta, ext, to_physical: bool):
    """Push output screens through the mesh; returns (new external phases, final screen)."""
    n = lay.n_modes
    theta = jnp.asarray(theta)
    ext = jnp.asarray(ext)
    screen = jnp.zeros((n + 2,), dtype=theta.dtype if lay.n_mzi else jnp.float32)
    if lay.n_mzi == 0:
        return ext, screen[:n]
    top, bottom, index, valid = _columns(lay)
    # padding slots write to a dummy element n_mzi, never onto a real MZI
    index = jnp.where(valid, index, lay.n_mzi)
    theta = jnp.concatenate([theta, jnp.zeros((1,), theta.dtype)])
    ext = jnp.concatenate([ext, jnp.zeros((1,), ext.dtype)])
    sign = -1.0 if to_physical else 1.0
    alpha, beta = _screen_cell(lay.cell).screen or ()

    def column(carry, col):
        scr, new_ext = carry
        t, t2, idx, ok = col
        a = scr[t]
        b = scr[t2]
        th = theta[idx]
        # math phi = chi + a - b  <=>  chi = phi - a + b
        val = ext[idx] + sign * (a - b)
        new_ext = new_ext.at[idx].set(val)
        # the cell leaves the screen (alpha(theta), beta(theta)) on its outputs
        top_phase = jnp.where(ok, alpha(th) + b, scr[t])
        bot_phase = jnp.where(ok, beta(th) + b, scr[t2])
        scr = scr.at[t].set(top_phase).at[t2].set(bot_phase)
        return (scr, new_ext), None

    (screen, new_ext), _ = jax.lax.scan(column, (screen, jnp.zeros_like(ext)), (top, bottom, index, valid))
    return new_ext[:-1], screen[:n]


def _screen_cell(cell: Cell) -> Cell:
    """``cell``, if it is programmed per cell (an output screen pushed on); a typed error otherwise."""
    if cell.programming == "sweep":
        raise InvalidInputError(f"the per-cell screen sweep needs a cell programmed per cell; the {cell.name!r} "
                                f"cell is programmed by a {cell.programming!r} (photocomp.core.bell)")
    return cell


def _batched(fn, *arrays):
    nb = jnp.ndim(arrays[0]) - 1
    for _ in range(nb):
        fn = jax.vmap(fn)
    return fn(*arrays)


def mesh_to_physical(lay: MeshLayout, theta: ArrayLike, phi: ArrayLike,
                     out_phase: ArrayLike) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Physical ``(internal, external, out_phase)`` phases (rad) realising a mathematical mesh.

    Args:
      lay: the layout.
      theta, phi: ``batch + (n_mzi,)`` mathematical settings (rad).
      out_phase: ``batch + (N,)`` mathematical output screen (rad).

    Returns:
      the internal heaters' phases (for the MZI ``2 theta + pi``; in general
      the layout's cell's :attr:`~photocomp.core.cell.Cell.internal`;
      ``batch + (0,)`` for a fixed-splitting cell, which has none), the
      external phases with the pushed screens absorbed, and the physical
      output phases, all wrapped to [0, 2 pi). A cell's trim heaters sit at
      their constant ideal phases (:attr:`~photocomp.core.cell.Cell.trims`).
    """
    if lay.crossbar:  # independent weight cells: nothing to push (photocomp.core.crossbar)
        internal, external = crossbar.cell_to_physical(theta, phi)
        return (convention.wrap_phase(internal), convention.wrap_phase(external),
                convention.wrap_phase(jnp.asarray(out_phase)))
    cell = _screen_cell(lay.cell)

    def one(t, p, o):
        ext, screen = _sweep(lay, t, p, to_physical=True)
        return (
            convention.wrap_phase(cell.internal(t)) if cell.internal is not None else t[:0],
            convention.wrap_phase(ext + cell.external_offset),
            convention.wrap_phase(o - screen),
        )

    return _batched(one, theta, phi, out_phase)


def mesh_from_physical(lay: MeshLayout, internal: ArrayLike, external: ArrayLike,
                       out_phase: ArrayLike) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Inverse of :func:`mesh_to_physical`: mathematical ``(theta, phi, out_phase)`` (a fixed-splitting cell's
    ``theta`` is :data:`~photocomp.core.cell.FIXED_THETA`; its ``internal`` is ignored)."""

    if lay.crossbar:
        theta, phi = crossbar.cell_from_physical(internal, external)
        return theta, convention.wrap_phase(phi), convention.wrap_phase(jnp.asarray(out_phase))
    cell = _screen_cell(lay.cell)

    def one(i, e, o):
        if cell.internal is None:
            theta = jnp.full_like(e, FIXED_THETA)
        else:
            theta = (i - cell.internal.offset) / cell.internal.slope
        phi, screen = _sweep(lay, theta, e - cell.external_offset, to_physical=False)
        return theta, convention.wrap_phase(phi), convention.wrap_phase(o + screen)

    return _batched(one, internal, external, out_phase)


def apply_physical_mesh(lay: MeshLayout, internal: ArrayLike, external: ArrayLike, out_phase: ArrayLike,
                        x: ArrayLike, *, coupler_in: ArrayLike = 0.0, coupler_out: ArrayLike = 0.0,
                        loss_db: ArrayLike = 0.0, trims: Mapping[str, ArrayLike] | None = None,
                        errors: Mapping[str, ArrayLike] | None = None, reverse_only: bool = False) -> jax.Array:
    """Propagate fields through a physical mesh with component errors.

    Each cell is its layout cell's physical form (for the MZI
    ``coupler(coupler_out) P(internal) coupler(coupler_in) P(external)``)
    times the amplitude loss ``10^(-loss_db / 20)``; the output phase screen follows.

    Args:
      lay: the layout.
      internal, external: physical phases ``(n_mzi,)`` (rad).
      out_phase: physical output phases ``(N,)`` (rad).
      x: fields ``(N,)`` or ``(N, B)``.
      coupler_in, coupler_out: splitting-angle errors ``(n_mzi,)`` or scalars (rad).
      loss_db: insertion loss per MZI ``(n_mzi,)`` or scalar (dB).
      trims: phases of the cell's trim heaters (default: their ideal phases).
      errors: splitting-angle errors of the cell's other couplers, by name (default 0).
      reverse_only: faster reverse-mode gradients, no forward-mode
        derivatives (see :func:`propagate_meshes`).

    Returns:
      output fields, same shape as ``x``.
    """
    x = jnp.asarray(x)
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(x.dtype, jnp.complex64, jnp.asarray(internal).dtype))
    coef = physical_coefficients(lay, internal, external, coupler_in, coupler_out, loss_db, dtype=dtype,
                                 trims=trims, errors=errors)
    y = propagate_meshes(lay, [coef], [], x.astype(dtype), reverse_only=reverse_only)
    return _with_screen(lay, y, out_phase)


def physical_mesh_unitary(lay: MeshLayout, internal: ArrayLike, external: ArrayLike, out_phase: ArrayLike, *,
                          coupler_in: ArrayLike = 0.0, coupler_out: ArrayLike = 0.0, loss_db: ArrayLike = 0.0,
                          trims: Mapping[str, ArrayLike] | None = None, errors: Mapping[str, ArrayLike] | None = None,
                          reverse_only: bool = False) -> jax.Array:
    """Transfer matrix of a physical mesh (see :func:`apply_physical_mesh`)."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(jnp.asarray(internal).dtype, jnp.complex64))
    return apply_physical_mesh(lay, internal, external, out_phase, jnp.eye(lay.n_modes, dtype=dtype),
                               coupler_in=coupler_in, coupler_out=coupler_out, loss_db=loss_db, trims=trims,
                               errors=errors, reverse_only=reverse_only)


# ---- simulation engine ------------------------------------------------------------

def _real_dtype(dtype):
    return jnp.real(jnp.zeros((), dtype)).dtype


# pi/2 = _P1 + _P2 + _P3 to ~1e-37; _P1, _P2 have 33 significant bits, so k * _P1 and k * _P2 are exact
# for |k| < 2^20 (|x| < 1.6e6 rad)
_P1 = float.fromhex("0x1.921fb544p+0")
_P2 = float.fromhex("0x1.0b4611a6p-34")
_P3 = float.fromhex("0x1.3198a2e037073p-69")
_SIN_TAYLOR = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(1, 9))  # r^3 ... r^17
_COS_TAYLOR = tuple((-1) ** k / math.factorial(2 * k) for k in range(1, 10))  # r^2 ... r^18


def _horner(z, coefs):
    acc = jnp.full_like(z, coefs[-1])
    for c in coefs[-2::-1]:
        acc = acc * z + c
    return acc


def sincos(x):
    """``(sin x, cos x)`` of a real array; float64 by a vectorised polynomial, other dtypes by ``jnp``.

    XLA's float64 ``sin``/``cos`` on CPU are scalar library calls (about 10 ns
    each); the meshes need two per phase. Here ``x`` is reduced to
    ``r in [-pi/4, pi/4]`` by ``k = round(2x/pi)`` with pi/2 in three parts
    (Cody-Waite), and ``sin r``, ``cos r`` are their Taylor series to order
    17/18 (truncation below 1e-19), then swapped by the quadrant ``k mod 4``.
    Within 1 ulp of ``numpy`` for ``|x| < 1.6e6`` rad (tested); the
    derivative is ``(cos x, -sin x)`` from the same values. Constants (not
    traced) go through ``numpy`` at trace time.
    """
    if not isinstance(x, jax.core.Tracer):  # a constant (e.g. a chip's errors): exact, and nothing to compile
        x = np.asarray(x)
        if x.dtype.kind != "f":
            x = x.astype(jax.dtypes.canonicalize_dtype(np.float64))
        with np.errstate(invalid="ignore"):  # sin(inf) is NaN, as in jax, without a warning
            return jnp.asarray(np.sin(x)), jnp.asarray(np.cos(x))
    if x.dtype != jnp.float64:
        return jnp.sin(x), jnp.cos(x)
    # the add gives a traced value even where a transformation holds a raw numpy array
    return _sincos64(x + 0.0)


@jax.custom_jvp
def _sincos64(x):
    k = jnp.round(x * (2 / np.pi))
    r = ((x - k * _P1) - k * _P2) - k * _P3
    z = r * r
    s = r + r * z * _horner(z, _SIN_TAYLOR)
    c = 1.0 + z * _horner(z, _COS_TAYLOR)
    q = jnp.where(jnp.isfinite(k), k, 0.0).astype(jnp.int64) & 3
    sin = jnp.where(q == 0, s, jnp.where(q == 1, c, jnp.where(q == 2, -s, -c)))
    cos = jnp.where(q == 0, c, jnp.where(q == 1, -s, jnp.where(q == 2, -c, s)))
    return sin, cos


@_sincos64.defjvp
def _sincos64_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    s, c = _sincos64(x)
    return (s, c), (c * dx, -s * dx)


def as_real(v, rdtype):
    """``v`` in the real dtype: numpy stays numpy (so constants are evaluated at trace time), tracers stay jax."""
    if isinstance(v, jax.core.Tracer):
        return v.astype(rdtype)
    return np.asarray(v, dtype=rdtype)


def _unit(phase):
    """``e^{i phase}`` from :func:`sincos`."""
    s, c = sincos(phase)
    return jax.lax.complex(c, s)


def amplitude(loss_db):
    """Field amplitude ``10^(-loss_db / 20)`` of an insertion loss in dB (as ``exp``, which XLA vectorises)."""
    if not isinstance(loss_db, jax.core.Tracer):
        loss_db = np.asarray(loss_db)
        if loss_db.dtype.kind != "f":
            loss_db = loss_db.astype(jax.dtypes.canonicalize_dtype(np.float64))
        return jnp.asarray(10.0 ** (-loss_db / 20.0))
    return jnp.exp(loss_db * (-np.log(10.0) / 20.0))


def physical_coefficients(lay: MeshLayout, internal, external, coupler_in=0.0, coupler_out=0.0, loss_db=0.0,
                          *, dtype=None, trims=None, errors=None):
    """2 x 2 transfer coefficients ``(m00, m01, m10, m11)`` of every physical cell, shape ``(4, n_mzi)``.

    For the MZI cell (:data:`photocomp.core.cell.MZI`) a closed form of
    ``convention.physical_mzi(internal, external, coupler_in, coupler_out) *
    10^(-loss_db / 20)``: with ``ca, sa = cos, sin(pi/4 + coupler_in)``,
    ``cb, sb`` likewise for ``coupler_out``, ``g`` the amplitude and
    ``u = e^{i internal}``, ``v = e^{i external}``::

        m00 = g v (ca cb u - sa sb)      m01 = i g (sa cb u + ca sb)
        m10 = i g v (ca sb u + sa cb)    m11 = g (ca cb - sa sb u)

    Any other cell: :func:`cell_coefficients`, the product of its components.

    Args:
      lay: the layout (sets ``n_mzi`` and the cell).
      internal, external: physical phases (rad), ``(n_mzi,)`` or scalars.
      coupler_in, coupler_out: splitting-angle errors (rad), ``(n_mzi,)`` or
        scalars, of the cell's couplers of these names (a cell without them ignores them).
      loss_db: insertion loss per MZI (dB), ``(n_mzi,)`` or scalar.
      dtype: complex dtype of the result (default: from ``internal``).
      trims: phases of the cell's trim heaters by name (default: their ideal phases).
      errors: splitting-angle errors of the cell's other couplers by name (default 0).
    """
    if dtype is None:
        dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(jnp.asarray(internal).dtype, jnp.complex64))
    cell = lay.cell
    if cell != MZI or trims or errors:
        settings = {h: p for h, p in cell.trims}
        settings.update(trims or {})
        settings["external"] = external
        if "internal" in cell.heaters:  # a fixed-splitting cell has none
            settings["internal"] = internal
        errs = {k: v for k, v in (("coupler_in", coupler_in), ("coupler_out", coupler_out)) if k in cell.couplers}
        errs.update(errors or {})
        errs["loss_db"] = loss_db
        return cell_coefficients(cell, settings, errs, lay.n_mzi, dtype=dtype)
    rdtype = _real_dtype(dtype)
    m = lay.n_mzi
    bcast = lambda v: jnp.broadcast_to(jnp.asarray(v, dtype=rdtype), (m,))  # noqa: E731
    sa, ca = sincos(as_real(coupler_in, rdtype) + np.pi / 4)
    sb, cb = sincos(as_real(coupler_out, rdtype) + np.pi / 4)
    sa, ca, sb, cb, g = (bcast(v) for v in (sa, ca, sb, cb, amplitude(as_real(loss_db, rdtype))))
    u = _unit(bcast(internal))
    v = _unit(bcast(external))
    m00 = (g * v) * (ca * cb * u - sa * sb)
    m01 = (1j * g) * (sa * cb * u + ca * sb)
    m10 = (1j * g * v) * (ca * sb * u + sa * cb)
    m11 = g * (ca * cb - sa * sb * u)
    return jnp.stack([m00, m01, m10, m11]).astype(dtype)


def cell_coefficients(cell: Cell, settings: Mapping[str, ArrayLike], errors: Mapping[str, ArrayLike], n: int, *,
                      dtype) -> jax.Array:
    """2 x 2 coefficients ``(4, n)`` of ``n`` cells: the product of the cell's components in light order.

    The vectorised form of :meth:`photocomp.core.cell.Cell.transfer` (which
    the tests hold it to): a shifter multiplies the upper row by ``e^{i phase}``,
    a coupler mixes the rows by ``[[c, i s], [i s, c]]`` with ``c, s = cos,
    sin(pi/4 + error)``, a crossing swaps them; the loss amplitude scales the result.

    Args:
      cell: the cell.
      settings: phase (rad) of every heater of the cell, ``(n,)`` or scalars.
      errors: error parameters by name (:attr:`~photocomp.core.cell.Cell.errors`;
        missing ones are 0), ``(n,)`` or scalars.
      n: the number of cells.
      dtype: complex dtype of the result.
    """
    missing = sorted(set(cell.heaters) - set(settings))
    unknown = sorted(set(errors) - set(cell.errors)) + sorted(set(settings) - set(cell.heaters))
    if missing or unknown:
        raise InvalidInputError(f"a {cell.name!r} cell has heaters {list(cell.heaters)} and errors "
                                f"{list(cell.errors)}; got settings {sorted(settings)} and errors {sorted(errors)}")
    rdtype = _real_dtype(dtype)
    bcast = lambda v: jnp.broadcast_to(jnp.asarray(v, dtype=rdtype), (n,))  # noqa: E731
    one = jnp.ones((n,), dtype)
    zero = jnp.zeros((n,), dtype)
    m00, m01, m10, m11 = one, zero, zero, one
    for comp in cell.components:
        if isinstance(comp, Shifter):
            u = _unit(bcast(as_real(settings[comp.heater], rdtype)))
            if comp.arm == "upper":
                m00, m01 = u * m00, u * m01
            else:
                m10, m11 = u * m10, u * m11
        elif isinstance(comp, Coupler):
            s, c = (bcast(v) for v in sincos(as_real(errors.get(comp.error, 0.0), rdtype) + np.pi / 4))
            m00, m01, m10, m11 = (c * m00 + 1j * s * m10, c * m01 + 1j * s * m11,
                                  1j * s * m00 + c * m10, 1j * s * m01 + c * m11)
        else:  # a crossing swaps the modes
            m00, m01, m10, m11 = m10, m11, m00, m01
    g = bcast(amplitude(as_real(errors.get("loss_db", 0.0), rdtype)))
    return (g * jnp.stack([m00, m01, m10, m11])).astype(dtype)


def bell_coefficients(lay: MeshLayout, internal, lower, input_layer, edge, coupler_in=0.0, coupler_out=0.0,
                      loss_db=0.0, *, dtype=None) -> tuple[jax.Array, jax.Array]:
    """Coefficients of a Bell mesh (:mod:`photocomp.core.bell`) with its input layer and edge shifters folded in.

    A phase shifter on a mode between two cells multiplies the next cell's
    input on that mode (shifters are lossless in the chip model), so the
    input layer and the edge shifters become input phases of the cells they
    feed, or output phases of modes no later cell meets
    (:func:`photocomp.core.bell.fold_targets`); the propagation engine then
    runs the mesh like any other.

    Args:
      lay: a Clements layout of the symmetric cell.
      internal, lower: upper-arm and lower-arm phases ``(n_mzi,)`` (rad).
      input_layer: input-layer phases ``(N,)``; edge: edge-shifter phases ``(E,)`` (rad).
      coupler_in, coupler_out, loss_db: per-cell errors as in :func:`physical_coefficients`.
      dtype: complex dtype of the result (default: from ``internal``).

    Returns:
      ``(coef, out_phase)``: coefficients ``(4, n_mzi)`` and the phases ``(N,)``
      (rad) the folded shifters add to the output layer.
    """
    if dtype is None:
        dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(jnp.asarray(internal).dtype, jnp.complex64))
    rdtype = _real_dtype(dtype)
    m, n = lay.n_mzi, lay.n_modes
    coef = cell_coefficients(lay.cell, {"internal": internal, "lower": lower},
                             {"coupler_in": coupler_in, "coupler_out": coupler_out, "loss_db": loss_db}, m,
                             dtype=dtype)
    shifters = jnp.concatenate([jnp.asarray(input_layer, rdtype).reshape(n), jnp.asarray(edge, rdtype).reshape(-1)])
    folded = jnp.zeros((2 * m + n,), rdtype).at[fold_targets(lay)].add(shifters)
    up, low = _unit(folded[:m]).astype(dtype), _unit(folded[m:2 * m]).astype(dtype)
    return jnp.stack([coef[0] * up, coef[1] * low, coef[2] * up, coef[3] * low]), folded[2 * m:]


def ideal_coefficients(theta, phi, *, dtype=None):
    """2 x 2 coefficients ``(4, n_mzi)`` of the mathematical MZIs ``T(theta, phi)`` (:func:`convention.mzi`)."""
    theta = jnp.asarray(theta)
    if dtype is None:
        dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(theta.dtype, jnp.complex64))
    rdtype = _real_dtype(dtype)
    s, c = sincos(theta.astype(rdtype))
    v = _unit(jnp.asarray(phi, dtype=rdtype))
    zero = jnp.zeros_like(c)
    return jnp.stack([v * c, jax.lax.complex(-s, zero), v * s, jax.lax.complex(c, zero)]).astype(dtype)


@functools.lru_cache(maxsize=64)
def pair_schedule(lay: MeshLayout) -> tuple[np.ndarray, np.ndarray]:
    """Static (even, odd) step schedule of a layout, cached per layout.

    Returns ``(even, odd)`` int arrays of shapes ``(S, P0)`` and ``(S, P1)``
    with ``P0 = ceil(N / 2)`` and ``P1 = P0 - 1``: entry ``[s, p]`` is the
    layout index of the MZI on pair ``(2p, 2p + 1)`` (even) or
    ``(2p + 1, 2p + 2)`` (odd) in step ``s``, or ``n_mzi`` for the identity.
    Light meets step ``s``'s even half, then its odd half, then step
    ``s + 1``. Columns keep their order; a column with MZIs of both
    parities (legal, disjoint pairs commute) is split in two.
    """
    n, m = lay.n_modes, lay.n_mzi
    p0 = (n + 1) // 2
    p1 = p0 - 1
    pairs, cols = lay.pair_array, lay.column_array
    halves = []
    for c in range(lay.depth):
        idx = np.flatnonzero(cols == c)
        for parity in (0, 1):
            sel = idx[pairs[idx] % 2 == parity]
            if len(sel):
                halves.append((parity, sel))
    even_steps: list[np.ndarray] = []
    odd_steps: list[np.ndarray] = []
    h = 0  # position in the sequence even, odd, even, odd, ...
    for parity, sel in halves:
        if h % 2 != parity:
            h += 1
        while len(even_steps) <= h // 2:
            even_steps.append(np.full(p0, m, dtype=np.int32))
            odd_steps.append(np.full(p1, m, dtype=np.int32))
        (even_steps if parity == 0 else odd_steps)[h // 2][(pairs[sel] - parity) // 2] = sel
        h += 1
    if not even_steps:
        return np.zeros((0, p0), np.int32), np.zeros((0, p1), np.int32)
    even, odd = np.stack(even_steps), np.stack(odd_steps)
    placed = np.concatenate([even.ravel(), odd.ravel()])
    if not np.array_equal(np.sort(placed[placed < m]), np.arange(m)):  # every MZI exactly once
        raise AssertionError(f"pair schedule of {lay.kind}-{n} does not place every MZI once")
    return even, odd


def _steps(lay: MeshLayout, coef):
    """Scanned coefficient arrays ``(S, 4, P0, 1)`` and ``(S, 4, P1, 1)`` from ``(4, n_mzi)`` coefficients."""
    even, odd = pair_schedule(lay)
    ident = jnp.asarray(np.array([1, 0, 0, 1]), dtype=coef.dtype)[:, None]
    full = jnp.concatenate([coef, ident], axis=1)  # index n_mzi: the identity
    ce = jnp.moveaxis(full[:, even], 0, 1)[..., None]
    co = jnp.moveaxis(full[:, odd], 0, 1)[..., None]
    return ce, co


def _run_steps(ce, co, a, b, unroll: int):
    """Run the (even, odd) steps on the even-mode fields ``a`` and odd-mode fields ``b`` (P0, B)."""
    has_odd = co.shape[2] > 0

    # under reverse-mode differentiation each step is recomputed from its stored input fields
    # instead of storing its intermediates: less memory traffic, faster gradients
    @jax.checkpoint
    def step(carry, m):
        a, b = carry
        e, o = m
        a, b = _pair_update(e, a, b, False)
        if has_odd:
            a, b = _pair_update(o, a, b, True)
        return (a, b), None

    (a, b), _ = jax.lax.scan(step, (a, b), (ce, co), unroll=unroll)
    return a, b


@jax.custom_jvp
def _scan_steps(ce, co, a, b):
    """:func:`_run_steps` with two steps per loop iteration when only evaluated.

    Unrolling by two makes the loop faster, but its derivatives slower, so
    the derivative rule differentiates the loop of single steps (forward and
    reverse mode alike; the values are the same either way).
    """
    return _run_steps(ce, co, a, b, 2)


@_scan_steps.defjvp
def _scan_steps_jvp(primals, tangents):
    return jax.jvp(lambda *args: _run_steps(*args, 1), primals, tangents)


# ---- reverse mode: a similarity-transform adjoint ------------------------------------
#
# For fields F_s = K_s F_{s-1} through block-diagonal steps K_s (2 x 2 blocks on mode pairs), reverse
# mode needs each step's block cotangents, the 2 x 2 diagonal blocks of Fbar_s F_{s-1}^T (JAX's
# convention: plain transposes). With Z_s = Fbar_s F_s^T these are the diagonal blocks of
# Z_s K_s^{-T}, and Z_{s-1} = K_s^T (Z_s K_s^{-T}): one N x N matrix swept back through the steps by
# a column update and a row update per step, with no reductions over the fields and no stored
# fields. Every MZI is an amplitude times a unitary, so K_s^{-1} is exact and well conditioned.


def _pair_update(c, x_e, x_o, odd: bool, axis: int = 0):
    """2 x 2 blocks ``c = (c00, c01, c10, c11)`` applied to the mode pairs of fields split by parity.

    Along ``axis`` of the even-mode part ``x_e`` and odd-mode part ``x_o``:
    an even half-step mixes ``(x_e[p], x_o[p])``, an odd one
    ``(x_o[p], x_e[p + 1])``, each as ``(c00 u + c01 v, c10 u + c11 v)``.
    With ``axis=1`` it updates column pairs (``c`` then broadcasts along rows).
    """
    if not odd:
        return c[0] * x_e + c[1] * x_o, c[2] * x_e + c[3] * x_o
    m = x_o.shape[axis]  # pairs of the odd half-step: one fewer; x_e's first and x_o's last mode pass
    take = lambda x, start, stop: jax.lax.slice_in_dim(x, start, stop, axis=axis)  # noqa: E731
    u, v = take(x_o, 0, m - 1), take(x_e, 1, m)
    n1 = c[0] * u + c[1] * v
    n2 = c[2] * u + c[3] * v
    return jnp.concatenate([take(x_e, 0, 1), n2], axis), jnp.concatenate([n1, take(x_o, m - 1, m)], axis)


def _transposed(m):
    """The entries ``(00, 01, 10, 11)`` of ``M^T`` for 2 x 2 blocks ``m`` (4, ...)."""
    return jnp.stack([m[0], m[2], m[1], m[3]])


def _inverse(m):
    """The entries ``(00, 01, 10, 11)`` of ``M^{-1}`` for 2 x 2 blocks ``m`` (4, ...)."""
    det = m[0] * m[3] - m[1] * m[2]
    return jnp.stack([m[3], -m[1], -m[2], m[0]]) / det


def _similarity_sweep(ce, co, z):
    """Block cotangents of a mesh's steps from ``Z = Fbar F^T`` at its output (parity blocks ee, eo, oe, oo)."""
    p0 = ce.shape[2]
    i0, i1 = np.arange(p0), np.arange(p0 - 1)
    has_odd = co.shape[2] > 0

    def half(z, k, odd):
        """Z <- K^T (Z K^{-T}) for one half-step; returns the new Z and Z K^{-T} (whose diagonal blocks
        are K's cotangents)."""
        ee, eo, oe, oo = z
        r = _inverse(k)[:, :, 0]  # columns of Z K^{-T} mix with M^{-1}'s entries
        ee, eo = _pair_update(r, ee, eo, odd, axis=1)
        oe, oo = _pair_update(r, oe, oo, odd, axis=1)
        y = (ee, eo, oe, oo)
        kt = _transposed(k)
        ee, oe = _pair_update(kt, ee, oe, odd)
        eo, oo = _pair_update(kt, eo, oo, odd)
        return (ee, eo, oe, oo), y

    def step(z, m):
        e, o = m
        go = jnp.zeros_like(o)
        if has_odd:  # the odd half came last
            z, (ee, eo, oe, oo) = half(z, o, True)
            go = jnp.stack([oo[i1, i1], oe[i1, i1 + 1], eo[i1 + 1, i1], ee[i1 + 1, i1 + 1]])[..., None]
        z, (ee, eo, oe, oo) = half(z, e, False)
        ge = jnp.stack([ee[i0, i0], eo[i0, i0], oe[i0, i0], oo[i0, i0]])[..., None]
        return z, (ge, go)

    _, (ge, go) = jax.lax.scan(step, z, (ce, co), reverse=True)
    return ge, go


def _adjoint_fields(ce, co, fa, fb):
    """Cotangents of a mesh's input fields from those of its output: ``K_1^T ... K_S^T Fbar``."""
    has_odd = co.shape[2] > 0

    def step(f, m):
        fa, fb = f
        e, o = m
        if has_odd:
            fa, fb = _pair_update(_transposed(o), fa, fb, True)
        return _pair_update(_transposed(e), fa, fb, False), None

    (fa, fb), _ = jax.lax.scan(step, (fa, fb), (ce, co), reverse=True)
    return fa, fb


@jax.custom_vjp
def _chain(steps, diags, a, b):
    """Fields through meshes (``steps``: one (ce, co) per mesh) with row diagonals ``diags`` (dt, db) between."""
    return _chain_fwd(steps, diags, a, b)[0]


def _chain_fwd(steps, diags, a, b):
    outs = []  # every mesh's output fields: all the backward pass needs
    for k, (ce, co) in enumerate(steps):
        if k:
            dt, db = diags[k - 1]
            a, b = dt[:, None] * a, db[:, None] * b
        a, b = _scan_steps(ce, co, a, b)
        outs.append((a, b))
    return (a, b), (steps, diags, tuple(outs))


def _chain_bwd(res, ct):
    steps, diags, outs = res
    fa, fb = ct  # cotangent of the last mesh's output
    grads, dgrads = [None] * len(steps), [None] * len(diags)
    for k in reversed(range(len(steps))):
        ce, co = steps[k]
        out_a, out_b = outs[k]
        grads[k] = _similarity_sweep(ce, co, (fa @ out_a.T, fa @ out_b.T, fb @ out_a.T, fb @ out_b.T))
        fa, fb = _adjoint_fields(ce, co, fa, fb)  # cotangent of this mesh's input
        if k:
            dt, db = diags[k - 1]
            prev_a, prev_b = outs[k - 1]
            dgrads[k - 1] = (jnp.sum(fa * prev_a, axis=1), jnp.sum(fb * prev_b, axis=1))
            fa, fb = dt[:, None] * fa, db[:, None] * fb
    return tuple(grads), tuple(dgrads), fa, fb


_chain.defvjp(_chain_fwd, _chain_bwd)


def propagate_meshes(lay: MeshLayout, coefs, diagonals, x, *, reverse_only: bool = False):
    """Fields through meshes of one layout with diagonals between them (no output screen).

    Args:
      lay: the layout shared by the meshes.
      coefs: list of ``(4, n_mzi)`` complex coefficient arrays, one per mesh
        in the order light meets them.
      diagonals: list of ``(N,)`` complex diagonals, ``diagonals[k]`` applied
        between mesh ``k`` and mesh ``k + 1`` (so one fewer than meshes).
      x: complex fields ``(N,)`` or ``(N, B)`` of the coefficients' dtype.
      reverse_only: for callers that differentiate the result in reverse mode
        only (``jax.grad``, ``jax.vjp``): with at least ``N / 2`` fields, the
        gradient sweeps one ``N x N`` matrix back through the steps by
        similarity transforms (see ``_chain``), faster than propagating the
        fields' adjoint and reducing over them. The value is the same; forward-mode
        derivatives (``jax.jvp``, ``jacfwd``, ``hessian``) of the result are
        then not available.

    Returns:
      the fields after the last mesh, same shape as ``x``.
    """
    n = lay.n_modes
    if len(diagonals) != len(coefs) - 1:
        raise ValueError(f"need {len(coefs) - 1} diagonals between {len(coefs)} meshes; got {len(diagonals)}")
    shape = x.shape
    x = x.reshape(n, -1)
    if lay.crossbar:  # one stage of weight cells, no diagonals (photocomp.core.crossbar)
        if len(coefs) != 1:
            raise ValueError(f"a crossbar has one stage of weight cells; got {len(coefs)} coefficient arrays")
        return crossbar_apply(lay, coefs[0][0], x).reshape(shape)
    if not lay.adjacent:
        return _propagate_gathered(lay, coefs, diagonals, x).reshape(shape)
    steps = [_steps(lay, c) for c in coefs]
    if steps[0][0].shape[0] == 0:  # no MZIs: only the diagonals act
        for d in diagonals:
            x = d.reshape(n, 1) * x
        return x.reshape(shape)
    pad = (-n) % 2
    xp = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)], 0) if pad else x
    # each diagonal split into its even-mode and odd-mode halves (dt, db)
    halves = [(d[0::2], d[1::2]) for d in (jnp.concatenate([d, jnp.ones((pad,), d.dtype)]) if pad else d
                                           for d in diagonals)]
    if reverse_only and 2 * x.shape[1] >= n:
        a, b = _chain(tuple(steps), tuple(halves), xp[0::2], xp[1::2])
    else:
        for k, (dt, db) in enumerate(halves):
            # fold the diagonal into the first (even) step of the next mesh: M diag(d_top, d_bottom)
            ce, co = steps[k + 1]
            first = ce[0] * jnp.stack([dt, db, dt, db])[..., None]
            steps[k + 1] = (ce.at[0].set(first), co)
        ce = jnp.concatenate([s[0] for s in steps], 0)
        co = jnp.concatenate([s[1] for s in steps], 0)
        a, b = _scan_steps(ce, co, xp[0::2], xp[1::2])
    y = jnp.stack([a, b], 1).reshape(n + pad, -1)[:n]
    return y.reshape(shape)


def _propagate_gathered(lay: MeshLayout, coefs, diagonals, x):
    """:func:`propagate_meshes` for a layout whose MZIs are not all on adjacent modes (a butterfly): each
    mesh through :func:`photocomp.core.layout.apply_columns` (a column scan that gathers each column's
    pairs), the diagonals between them. Its depth is small (log2 N for a butterfly), so plain autodiff
    of the scan serves every derivative."""
    n = lay.n_modes
    no_screen = jnp.zeros((n,), _real_dtype(x.dtype))
    for k, coef in enumerate(coefs):
        if k:
            x = diagonals[k - 1].reshape(n, 1) * x
        x = apply_columns(lay, coef.T.reshape(-1, 2, 2), no_screen, x)  # (m00, m01, m10, m11) row by row
    return x


def _with_screen(lay: MeshLayout, y, out_phase):
    """Apply the output phase screen ``e^{i out_phase}`` (N,) to fields (N,) or (N, B)."""
    return screen(out_phase, y.dtype).reshape((lay.n_modes,) + (1,) * (y.ndim - 1)) * y


def screen(out_phase, dtype):
    """``e^{i out_phase}`` as a complex array of ``dtype`` (cos/sin, no complex exp)."""
    return _unit(jnp.asarray(out_phase, dtype=_real_dtype(dtype))).astype(dtype)


def fold_batches(apply):
    """Wrap a linear tile simulator so that batches of fields go through the tiles' matrices.

    Args:
      apply: ``apply(params, z) -> y``, linear in the fields ``z`` of shape
        ``(T, K)`` or ``(T, K, B)`` (tiles first), e.g. a program's meshes.

    Returns:
      ``f(params, z)``, equal to ``apply(params, z)``. For ``z`` of shape
      ``(T, K, B)`` with ``B >= K``, and under ``jax.vmap`` over ``z`` alone
      (``params`` shared) with a batch of at least ``K``, it computes the
      ``(T, K, K)`` matrices ``apply(params, I)`` once and multiplies them
      into the batch: K propagations instead of B. Derivatives (``jvp``,
      ``grad``) are those of ``apply`` itself.
    """

    def identities(z):
        t, k = z.shape[0], z.shape[1]
        return jnp.broadcast_to(jnp.eye(k, dtype=z.dtype), (t, k, k))

    def direct(params, z):
        if z.ndim == 3 and z.shape[2] >= z.shape[1]:
            mats = apply(params, identities(z))
            return jnp.einsum("tij,tjb->tib", mats, z.astype(mats.dtype))
        return apply(params, z)

    @jax.custom_batching.custom_vmap
    def batched(params, z):
        return direct(params, z)

    @batched.def_vmap
    def _rule(axis_size, in_batched, params, z):
        params_batched, z_batched = in_batched
        shared = not any(jax.tree_util.tree_leaves(params_batched))
        if z_batched and shared and z.ndim == 3 and axis_size >= z.shape[2]:
            mats = apply(params, identities(z[0]))  # z: (batch, T, K)
            return jnp.einsum("tij,stj->sti", mats, z.astype(mats.dtype)), True
        in_axes = (jax.tree_util.tree_map(lambda b: 0 if b else None, params_batched), 0 if z_batched else None)
        return jax.vmap(direct, in_axes=in_axes)(params, z), True

    @jax.custom_jvp
    def folded(params, z):
        return batched(params, z)

    @folded.defjvp
    def _jvp(primals, tangents):
        return jax.jvp(direct, primals, tangents)

    return folded
