"""Programming a mesh by fitting: the phases of a mesh without a decomposition (a butterfly, Fldzhyan's layout)
closest to a unitary.

A mesh with fewer than N (N - 1) / 2 MZIs cannot reach every unitary, so it
has no exact decomposition; :func:`fit_meshes` finds the settings whose
unitary is closest to the target in the Frobenius norm and reports how close
that is. With the mesh's own unitary ``M(theta, phi)`` (output screen
aside), the best output screen has a closed form, ``out_j = arg <M_j, U_j>``
row by row, so the fit minimises over ``(theta, phi)`` alone
(variable projection)::

    ||U - diag(e^{i out}) M||_F^2,  computed as a sum of squared residuals

with L-BFGS (``optax.lbfgs``), all meshes and starts in one vmapped, jitted
loop in float64; each mesh keeps its best start.

The first start of a butterfly is its recursive factorization
(:func:`butterfly_factor`): a butterfly of N modes is its last column of
2 x 2 cells on ``(i, i + N/2)`` times two butterflies of N/2 modes side by
side, so row ``i`` of ``U``'s left half and row ``i + N/2`` are both
multiples of row ``i`` of the upper half-size butterfly ``B1`` (the right
half likewise of ``B2``). Each row of ``B1`` is taken as the principal right
singular vector of those two rows, ``B1`` and ``B2`` are made unitary (polar
factor), the 2 x 2 cells are their overlaps with ``U`` made unitary, and the
same step recurses into ``B1`` and ``B2``. For a unitary of the butterfly's
own family every step is exact, so the fit starts at the answer
(``tests/test_butterfly.py``); for any other unitary it is a good start. The
other starts are random, drawn from an explicit PRNG key.

Fldzhyan's layout (:func:`photocomp.targets.fldzhyan`) has exactly N^2 phases
and no factorization to start from: every start is random, and its cells'
``theta`` is their couplers' fixed :data:`~photocomp.core.cell.FIXED_THETA`
(only ``phi`` and the output screen are fitted). Its loss landscape has local
minima: from a few starts Haar-random unitaries of a few modes fit to
rounding, while from about 12 modes on every start tried stalls near an
error of 1e-2 (Levenberg-Marquardt steps, and a continuation along the
geodesic from a start's own unitary, stall as well), so the pass takes
:data:`FLDZHYAN_RESTARTS` starts of :data:`FLDZHYAN_STEPS` steps and reports
the error it reaches (``benchmarks/architectures.py`` has the numbers).

An SVD tile ``W = U S V^H`` on two such meshes is not well served by fitting
``U`` and ``V^H`` one by one: the product of two approximations can be far
from ``W``. :func:`fit_svd_tiles` starts from those fits and refines every
tile as a whole (both meshes, the amplitudes and the phases between them).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from photocomp.core.cell import FIXED_THETA
from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.layout import MeshLayout, layout
from photocomp.core.validate import check_int
from photocomp.sim.devices import bucket, pad_tiles
from photocomp.sim.physical import ideal_coefficients, propagate_meshes

__all__ = ["fit_meshes", "fit_svd_tiles", "butterfly_factor", "compile_mesh_fit", "compile_tile_fit", "FIT_RESTARTS",
           "FIT_STEPS", "FLDZHYAN_RESTARTS", "FLDZHYAN_STEPS"]

# starts per mesh: a butterfly's first is its factorization; further random starts improved fits of
# Haar unitaries (N = 8 ... 64) only marginally, at several times the time
FIT_RESTARTS = 1
FIT_STEPS = 400  # L-BFGS steps per start, at most
# Fldzhyan's layout has no factorization to start from, and its fits stall in local minima: many random starts
# (run at once, so they cost less than their number) and longer runs; with 4 starts, Haar unitaries of 6 and
# 8 modes already stalled now and then (notebook 06, section 7, has the fits of these defaults)
FLDZHYAN_RESTARTS = 16
FLDZHYAN_STEPS = 2000
FIT_TOL = 1e-6  # a step improves the best value when it lowers it by this fraction ...
FIT_PATIENCE = 20  # ... and a fit stops after this many steps in a row without one


def _polar(x: np.ndarray) -> np.ndarray:
    """The unitary polar factor of each matrix of ``x`` (the nearest unitary in the Frobenius norm)."""
    w, _, vh = np.linalg.svd(x, full_matrices=False)
    return w @ vh


def _butterfly_cells(u: np.ndarray) -> list[np.ndarray]:
    """The 2 x 2 unitary cells of the butterfly factorization of ``u`` (B, N, N): one ``(B, N/2, 2, 2)``
    array per column, cells in layout order (upper mode ascending)."""
    b, n = u.shape[0], u.shape[-1]
    if n == 2:
        return [_polar(u)[:, None]]
    h = n // 2
    top, bottom = u[:, :h], u[:, h:]
    halves = []
    for lo, hi in ((0, h), (h, n)):
        rows = np.stack([top[:, :, lo:hi], bottom[:, :, lo:hi]], axis=2)  # (B, h, 2, h): rows i and i + h
        _, _, vh = np.linalg.svd(rows, full_matrices=False)
        halves.append(_polar(vh[:, :, 0, :]))  # row i of the half-size butterfly, made unitary
    b1, b2 = halves
    cells = np.empty((b, h, 2, 2), dtype=np.complex128)
    for r, rows in enumerate((top, bottom)):
        cells[:, :, r, 0] = np.sum(np.conj(b1) * rows[:, :, :h], axis=-1)
        cells[:, :, r, 1] = np.sum(np.conj(b2) * rows[:, :, h:], axis=-1)
    inner = _butterfly_cells(np.concatenate([b1, b2]))  # both halves as one batch
    return [np.concatenate([c[:b], c[b:]], axis=1) for c in inner] + [_polar(cells)]


def _cells_to_phases(lay: MeshLayout, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(theta, phi, out_phase)`` of a mesh of unitary 2 x 2 cells (B, n_mzi, 2, 2) in layout order.

    Each cell ``G`` with the phases ``x``, ``y`` pending on its input modes is written as
    ``G diag(e^{ix}, e^{iy}) = diag(e^{ip}, e^{iq}) T(theta, phi)``; ``p``, ``q`` are pushed on to the
    next cells and what is left after the last column is the output screen."""
    pending = np.zeros((cells.shape[0], lay.n_modes))
    theta = np.zeros(cells.shape[:2])
    phi = np.zeros(cells.shape[:2])
    up, low, cols = lay.pair_array, lay.lower_array, lay.column_array
    tiny = 1e-12
    for c in range(lay.depth):
        idx = np.flatnonzero(cols == c)
        g = cells[:, idx] * np.exp(1j * np.stack([pending[:, up[idx]], pending[:, low[idx]]], -1))[:, :, None, :]
        # T(theta, phi) = [[e^{i phi} cos, -sin], [e^{i phi} sin, cos]]
        crossed = np.abs(g[..., 0, 1]) > tiny  # sin theta > 0: p from column 1, else from column 0 with phi = 0
        p = np.where(crossed, np.angle(-g[..., 0, 1]), np.angle(g[..., 0, 0]))
        ph = np.where(crossed & (np.abs(g[..., 0, 0]) > tiny), np.angle(g[..., 0, 0]) - p, 0.0)
        ph = np.where(crossed & (np.abs(g[..., 0, 0]) <= tiny), np.angle(g[..., 1, 0]) - np.angle(g[..., 1, 1]), ph)
        q = np.where(np.abs(g[..., 1, 1]) > tiny, np.angle(g[..., 1, 1]), np.angle(g[..., 1, 0]) - ph)
        theta[:, idx] = np.arccos(np.clip(np.abs(g[..., 0, 0]), 0.0, 1.0))
        phi[:, idx] = ph
        pending[:, up[idx]], pending[:, low[idx]] = p, q
    return theta, phi, pending


def butterfly_factor(u) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The recursive factorization of unitaries onto the butterfly of their size (see the module docstring).

    Exact for a unitary of the butterfly's own family; for any other, a good start for
    :func:`fit_meshes`. Args: ``u`` ``(B, N, N)``, N a power of two. Returns float64
    ``theta, phi`` (B, (N/2) log2 N) in the layout order of ``layout("butterfly", N)`` and
    ``out_phase`` (B, N).
    """
    arr = np.asarray(u, dtype=np.complex128)
    lay = layout("butterfly", arr.shape[-1])
    return _cells_to_phases(lay, np.concatenate(_butterfly_cells(arr), axis=1))


def _mesh(lay: MeshLayout, theta, phi, dtype):
    """The mesh's unitary without its output screen (a fixed-splitting cell's ``theta`` is its coupler's)."""
    if lay.cell.programming == "fixed":
        theta = jnp.full_like(phi, FIXED_THETA)
    eye = jnp.eye(lay.n_modes, dtype=dtype)
    return propagate_meshes(lay, [ideal_coefficients(theta, phi, dtype=dtype)], [], eye)


def _fixed(lay: MeshLayout, theta: np.ndarray) -> np.ndarray:
    """``theta``, or :data:`~photocomp.core.cell.FIXED_THETA` everywhere for a fixed-splitting cell (the fit
    leaves its unused ``theta`` parameters at their starts)."""
    return np.full_like(theta, FIXED_THETA) if lay.cell.programming == "fixed" else theta


def _screen_phases(m: np.ndarray, u: np.ndarray) -> np.ndarray:
    """NumPy form of :func:`_screened`'s closed form: the output phases ``arg <m_j, u_j>`` (B, N) in [0, 2 pi)."""
    return np.mod(np.angle(np.sum(np.conj(m) * u, axis=-1)), 2 * np.pi)


def _screened(m, u):
    """``diag(e^{i out}) m`` with the best output screen for ``u``: ``out_j = arg <m_j, u_j>``."""
    r = jnp.sum(jnp.conj(m) * u, axis=1)
    mag = jnp.abs(r)
    return jnp.where(mag > 0, r / jnp.where(mag > 0, mag, 1.0), 1.0)[:, None] * m


def _loss(params, lay: MeshLayout, u):
    """``||U - U_hat||_F^2`` at the best output screen, summed as residuals (no cancellation near 0; by the
    envelope theorem its gradient needs no derivative of the screen, which is optimal)."""
    d = u - _screened(_mesh(lay, params[0], params[1], u.dtype), u)
    return jnp.sum(d.real**2 + d.imag**2)


def _lbfgs(value_fn, start, steps):
    """At most ``steps`` L-BFGS steps on ``value_fn`` from the pytree ``start`` (traced, inside a jit; ``steps``
    may be traced too, so that one compiled program serves every step count); stops
    early once :data:`FIT_PATIENCE` steps in a row bring no relative improvement of :data:`FIT_TOL` on the
    best value (under ``vmap``: once every member has). Returns the best ``(params, value)`` seen."""
    import optax

    opt = optax.lbfgs(linesearch=optax.scale_by_backtracking_linesearch(max_backtracking_steps=20,
                                                                        store_grad=True))
    value_and_grad = optax.value_and_grad_from_state(value_fn)
    pick = lambda better, a, b: jax.tree_util.tree_map(lambda x, y: jnp.where(better, x, y), a, b)  # noqa: E731

    def more(carry):
        i, stall = carry[0], carry[-1]
        return (i < steps) & (stall < FIT_PATIENCE)

    def step(carry):
        i, p, state, best, best_loss, stall = carry
        loss, grad = value_and_grad(p, state=state)
        better = loss < best_loss
        stall = jnp.where(loss < best_loss * (1 - FIT_TOL), 0, stall + 1)
        best = pick(better, p, best)
        best_loss = jnp.where(better, loss, best_loss)
        updates, state = opt.update(grad, state, p, value=loss, grad=grad, value_fn=value_fn)
        return i + 1, optax.apply_updates(p, updates), state, best, best_loss, stall

    dtype = jax.tree_util.tree_leaves(start)[0].dtype
    init = (0, start, opt.init(start), start, jnp.asarray(jnp.inf, dtype), 0)
    _, p, _, best, best_loss, _ = jax.lax.while_loop(more, step, init)
    last = value_fn(p)
    return pick(last < best_loss, p, best), jnp.minimum(last, best_loss)


def _fit(u, start, steps, *, lay: MeshLayout):
    """L-BFGS from ``start`` (2, n_mzi) on one unitary ``u``; returns the best ``(params, loss)`` seen."""
    return _lbfgs(functools.partial(_loss, lay=lay, u=u), start, steps)


@functools.partial(jax.jit, static_argnames=("lay",))
def _fit_all(u, starts, steps, *, lay: MeshLayout):
    """``_fit`` over meshes ``u`` (B, N, N) and starts (B, R, 2, n_mzi): every start of every mesh at once.
    One ``vmap`` over the B x R pairs: nested ones batch the L-BFGS loops' programs twice, which took
    about a third longer to trace."""
    b, r = starts.shape[:2]
    params, loss = jax.vmap(functools.partial(_fit, steps=steps, lay=lay))(
        jnp.repeat(u, r, axis=0), starts.reshape((b * r,) + starts.shape[2:]))
    return params.reshape((b, r) + params.shape[1:]), loss.reshape(b, r)


@functools.partial(jax.jit, static_argnames=("size", "restarts", "m"))
def _random_starts(key, *, size: int, restarts: int, m: int):
    """Random starts (size, restarts, 2, m): theta uniform in [0, pi/2], phi in [0, 2 pi)."""
    k_theta, k_phi = jax.random.split(key)
    return jnp.stack([jax.random.uniform(k_theta, (size, restarts, m), jnp.float64, 0.0, np.pi / 2),
                      jax.random.uniform(k_phi, (size, restarts, m), jnp.float64, 0.0, 2 * np.pi)], axis=2)


@functools.partial(jax.jit, static_argnames=("lay",))
def _meshes(params, *, lay: MeshLayout):
    """The meshes' unitaries without output screens, of parameters (B, 2, n_mzi)."""
    return jax.vmap(lambda p: _mesh(lay, p[0], p[1], jnp.complex128))(params)


def fit_meshes(lay: MeshLayout, u, *, key: jax.Array, restarts: int = FIT_RESTARTS,
               steps: int = FIT_STEPS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The settings of ``lay`` closest to each unitary of ``u`` (B, N, N), fitted by L-BFGS.

    Args:
      lay: the mesh layout (any kind; the point is the non-universal ones).
      u: unitaries, shape ``(B, N, N)`` or ``(N, N)`` with ``N = lay.n_modes``.
      key: a ``jax.random`` key; the random starts are drawn from it, so the
        result is reproducible.
      restarts: starts per unitary (the best is kept), >= 1; a butterfly's
        first start is :func:`butterfly_factor`, the others are random.
      steps: L-BFGS steps per start, >= 1.

    Returns:
      numpy float64 ``theta, phi`` (B, n_mzi), ``out_phase`` (B, N) and the
      fit error ``||U - U_hat||_F / sqrt(N)`` (B,) (without a batch axis for
      one ``(N, N)`` unitary).

    Example:
      >>> import jax, numpy as np
      >>> from photocomp.core.layout import layout
      >>> theta, phi, out, err = fit_meshes(layout("butterfly", 4), np.eye(4), key=jax.random.key(0))
      >>> bool(err < 1e-10)
      True
    """
    _check_layout(lay)
    restarts, steps = check_int(restarts, "restarts", low=1), check_int(steps, "steps", low=1)
    arr = np.asarray(u, dtype=np.complex128)
    single = arr.ndim == 2
    arr = arr[None] if single else arr
    n = lay.n_modes
    if arr.ndim != 3 or arr.shape[1:] != (n, n):
        raise InvalidInputError(f"u must have shape (B, {n}, {n}) or ({n}, {n}) for a {n}-mode mesh; "
                                f"got {np.shape(u)}")
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError("u must be finite")
    b = arr.shape[0]
    if b == 0:
        raise InvalidInputError(f"u must hold at least one unitary; got shape {arr.shape}")
    # the batch padded to a bucketed size (the last mesh repeated), so that programs of different tile
    # counts share a few compiled programs
    size = bucket(b, 1)
    with jax.enable_x64(True):
        starts = np.array(_random_starts(key, size=size, restarts=restarts, m=lay.n_mzi))
        if lay.kind == "butterfly":  # the first start: the recursive factorization
            theta0, phi0, _ = butterfly_factor(arr)
            starts[:b, 0, 0], starts[:b, 0, 1] = theta0, phi0
        params, loss = _fit_all(jnp.asarray(pad_tiles(arr, size)), jnp.asarray(starts), _steps(steps), lay=lay)
        params = np.asarray(params)[np.arange(size), np.argmin(np.asarray(loss), axis=1)]  # (size, 2, m)
        mesh = np.asarray(_meshes(jnp.asarray(params), lay=lay))[:b]
        theta, phi = _fixed(lay, params[:b, 0]), params[:b, 1]
    out = _screen_phases(mesh, arr)
    u_hat = np.exp(1j * out)[:, :, None] * mesh
    err = np.linalg.norm(arr - u_hat, axis=(1, 2)) / np.sqrt(n)
    if single:
        return theta[0], phi[0], out[0], err[0]
    return theta, phi, out, err


def _tile_loss(p, lay: MeshLayout, w, mask):
    """``||mask (W - U_hat diag(s e^{i a}) V_hat)||_F^2`` at the best output screen of the U mesh."""
    mu = _mesh(lay, p["u"][0], p["u"][1], w.dtype)
    mv = _mesh(lay, p["v"][0], p["v"][1], w.dtype)
    m = mu @ ((p["s"] * jnp.exp(1j * p["a"]))[:, None] * mv)
    d = mask * (w - _screened(mask * m, w))
    return jnp.sum(d.real**2 + d.imag**2)


@functools.partial(jax.jit, static_argnames=("lay",))
def _refine_tiles(w, mask, start, steps, *, lay: MeshLayout):
    """:func:`_lbfgs` of :func:`_tile_loss` over tiles ``w`` (B, K, K) from ``start`` (a dict of (B, ...))."""
    def one(wt, mt, st):
        return _lbfgs(functools.partial(_tile_loss, lay=lay, w=wt, mask=mt), st, steps)

    return jax.vmap(one)(w, mask, start)


def _check_layout(lay: object) -> None:
    if not isinstance(lay, MeshLayout):
        raise InvalidTypeError(f"lay must be a MeshLayout; got {type(lay).__name__}")


def _steps(steps: int) -> jax.Array:
    """The step limit as the fit programs take it: a traced argument, so one program serves every count."""
    return jnp.asarray(steps, dtype=jnp.int32)


def _spec(shape: tuple, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype)


def compile_mesh_fit(lay: MeshLayout, meshes: int, *, restarts: int = FIT_RESTARTS) -> None:
    """Compile, without running, the programs :func:`fit_meshes` runs on ``meshes`` unitaries of ``lay``.

    The fit (every start's L-BFGS) and the meshes' rebuild are lowered from
    shapes alone and compiled (ahead-of-time compilation: the compiler's
    passes call it in a background thread while earlier passes run); a later
    :func:`fit_meshes` call of that batch size and ``restarts``, with any
    ``steps`` (the step limit is an argument of the program, not part of it),
    finds both compiled. Tracing and compiling them is most of a first fit of
    a small mesh.
    """
    _check_layout(lay)
    meshes, restarts = check_int(meshes, "meshes", low=1), check_int(restarts, "restarts", low=1)
    size, n, m = bucket(meshes, 1), lay.n_modes, lay.n_mzi
    with jax.enable_x64(True):
        _fit_all.lower(_spec((size, n, n), jnp.complex128), _spec((size, restarts, 2, m), jnp.float64),
                       _spec((), jnp.int32), lay=lay).compile()
        _meshes.lower(_spec((size, 2, m), jnp.float64), lay=lay).compile()


def compile_tile_fit(lay: MeshLayout, tiles: int) -> None:
    """Compile, without running, the programs :func:`fit_svd_tiles` runs on ``tiles`` tiles of ``lay``
    (the refinement of the tiles as a whole and the meshes' rebuild), as :func:`compile_mesh_fit` does for
    :func:`fit_meshes`."""
    _check_layout(lay)
    tiles = check_int(tiles, "tiles", low=1)
    size, n, m = bucket(tiles, 1), lay.n_modes, lay.n_mzi
    with jax.enable_x64(True):
        square = _spec((size, n, n), jnp.complex128)
        start = {"u": _spec((size, 2, m), jnp.float64), "v": _spec((size, 2, m), jnp.float64),
                 "s": _spec((size, n), jnp.float64), "a": _spec((size, n), jnp.float64)}
        _refine_tiles.lower(square, square, start, _spec((), jnp.int32), lay=lay).compile()
        _meshes.lower(_spec((tiles, 2, m), jnp.float64), lay=lay).compile()


def fit_svd_tiles(lay: MeshLayout, w, mask, u_start, v_start, s, a, *, steps: int = FIT_STEPS) -> dict:
    """Refine an SVD tile program on a non-universal mesh by fitting the whole tile at once.

    Fitting ``U`` and ``V^H`` separately (:func:`fit_meshes`) approximates each
    factor but not their product, whose error is what counts; this fits the
    tiles ``w`` (B, K, K) directly, ``w ~ U_hat diag(s e^{i a}) V_hat``, over
    the U and V meshes' phases, the amplitudes ``s`` and the phases ``a``
    between them (the V mesh's output screen), with the U mesh's output
    screen in closed form, counting only the entries where ``mask`` is 1 (a
    tile's unpadded part). Starts from the separate fits.

    Args:
      lay: the mesh layout.
      w: target tiles (B, K, K) complex; mask: (B, K, K) of 0/1.
      u_start, v_start: ``(theta, phi)`` pairs of (B, n_mzi) arrays of the U and V meshes.
      s, a: (B, K) amplitudes and phases between the meshes.
      steps: L-BFGS steps.

    Returns:
      ``{"u": (theta, phi, out_phase), "v": (theta, phi, out_phase), "s": (B, K) amplitudes >= 0,
      "error": (B,) ||mask (w - w_hat)||_F}``, numpy float64; signs of the amplitudes are moved
      into the V mesh's output phases.
    """
    _check_layout(lay)
    arr = np.asarray(w, dtype=np.complex128)
    n, m = lay.n_modes, lay.n_mzi
    if arr.ndim != 3 or arr.shape[1:] != (n, n) or arr.shape[0] == 0:
        raise InvalidInputError(f"w must have shape (B, {n}, {n}) with B >= 1; got {arr.shape}")
    b = arr.shape[0]
    for name, x, shape in (("mask", mask, (b, n, n)), ("u_start[0]", u_start[0], (b, m)),
                           ("u_start[1]", u_start[1], (b, m)), ("v_start[0]", v_start[0], (b, m)),
                           ("v_start[1]", v_start[1], (b, m)), ("s", s, (b, n)), ("a", a, (b, n))):
        if np.shape(x) != shape:
            raise InvalidInputError(f"{name} must have shape {shape}; got {np.shape(x)}")
    if not (np.all(np.isfinite(arr)) and np.all(np.isfinite(s)) and np.all(np.isfinite(a))):
        raise InvalidInputError("w, s and a must be finite")
    size = bucket(b, 1)
    pad = lambda x: jnp.asarray(pad_tiles(np.asarray(x, dtype=np.float64), size))  # noqa: E731
    with jax.enable_x64(True):
        start = {"u": jnp.stack([pad(u_start[0]), pad(u_start[1])], axis=1),
                 "v": jnp.stack([pad(v_start[0]), pad(v_start[1])], axis=1), "s": pad(s), "a": pad(a)}
        p, _ = _refine_tiles(jnp.asarray(pad_tiles(arr, size)), jnp.asarray(pad_tiles(np.asarray(mask, np.float64),
                                                                                    size)).astype(jnp.complex128),
                             start, _steps(steps), lay=lay)
        p = {k: np.asarray(v)[:b] for k, v in p.items()}
        mu = np.asarray(_meshes(jnp.asarray(p["u"]), lay=lay))
        mv = np.asarray(_meshes(jnp.asarray(p["v"]), lay=lay))
    amp, a = p["s"], p["a"] + np.where(p["s"] < 0, np.pi, 0.0)
    mid = np.abs(amp) * np.exp(1j * a)
    m = np.einsum("bij,bj,bjk->bik", mu, mid, mv)
    mk = np.asarray(mask, dtype=np.float64)
    out_u = _screen_phases(mk * m, arr)
    err = np.linalg.norm(mk * (arr - np.exp(1j * out_u)[:, :, None] * m), axis=(1, 2))
    return {"u": (_fixed(lay, p["u"][:, 0]), p["u"][:, 1], out_u),
            "v": (_fixed(lay, p["v"][:, 0]), p["v"][:, 1], np.mod(a, 2 * np.pi)),
            "s": np.abs(amp), "error": err}
