"""Figures of merit, defined once (docs/design.md).

* Fidelity of a unitary implementation: ``F = |Tr(U^H V)|^2 / N^2``
  (1 for a perfect implementation, insensitive to a global phase).
* Matrix error: ``||W - W_hat||_F / ||W||_F`` (``||W_hat||_F`` when W = 0).

Norms of numpy arrays are computed without overflow or underflow anywhere in
the float64 range: arrays whose largest component lies outside
``[2**-SAFE_EXPONENT, 2**SAFE_EXPONENT]`` are scaled by a power of two first
(exact, see :func:`power_of_two_exponent`), so a relative error of weights
near 1e300 or 1e-300 is as accurate as one of weights near 1.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

__all__ = ["fidelity", "matrix_error", "np_matrix_error", "np_norm", "power_of_two_exponent", "scale_by_power_of_two"]

SAFE_EXPONENT = 400
"""Arrays whose largest component has magnitude in ``[2**-SAFE_EXPONENT, 2**SAFE_EXPONENT]``
need no scaling: the sum of their squared entries neither overflows nor loses
anything that matters relative to the largest one to underflow."""


def _xp(*arrays: object) -> types.ModuleType:
    """jax.numpy for jax inputs (traceable), numpy otherwise (float64 kept)."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def fidelity(target: npt.ArrayLike, implemented: npt.ArrayLike) -> jax.Array | np.ndarray | np.floating:
    """Unitary fidelity ``|Tr(U^H V)|^2 / N^2``, batched over leading axes.

    numpy inputs are computed in numpy (their precision kept; one matrix gives
    a numpy scalar); jax inputs in jax.
    """
    xp = _xp(target, implemented)
    u = xp.asarray(target)
    v = xp.asarray(implemented)
    n = u.shape[-1]
    tr = xp.einsum("...ij,...ij->...", xp.conj(u), v)
    return xp.abs(tr) ** 2 / n**2


def max_component(a: npt.ArrayLike) -> float:
    """Largest ``|Re|`` or ``|Im|`` of any entry of ``a`` (0.0 for an empty array), without a full-size temporary."""
    a = np.asarray(a)
    if a.size == 0:
        return 0.0
    if np.iscomplexobj(a) and a.flags.c_contiguous and a.dtype in (np.complex64, np.complex128):
        a = a.view(a.real.dtype)  # both parts in one contiguous array: two reductions, not four strided ones
    parts = (a.real, a.imag) if np.iscomplexobj(a) else (a,)
    return float(max(max(float(p.max()), -float(p.min())) for p in parts))


def power_of_two_exponent(*arrays: npt.ArrayLike) -> int:
    """The exponent ``e`` with the largest component of ``arrays`` times ``2**-e`` in ``[0.5, 1)``.

    0 when every entry is zero or some entry is not finite. Multiplying by a
    power of two is exact unless the result leaves the normal float64 range.
    """
    m = max((max_component(a) for a in arrays), default=0.0)
    if m == 0.0 or not np.isfinite(m):
        return 0
    return int(np.frexp(m)[1])


def needs_scaling(*arrays: npt.ArrayLike) -> bool:
    """Whether the largest component of ``arrays`` lies outside ``[2**-SAFE_EXPONENT, 2**SAFE_EXPONENT]``."""
    m = max((max_component(a) for a in arrays), default=0.0)
    return bool(np.isfinite(m) and m != 0.0 and not (2.0**-SAFE_EXPONENT <= m <= 2.0**SAFE_EXPONENT))


def scale_by_power_of_two(a: npt.ArrayLike, e: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """``a * 2**e`` computed with ``ldexp`` (exact in the normal range, for any int ``e``).

    Real input gives float64, complex input complex128; ``out`` (an array of
    that dtype, possibly ``a`` itself) receives the result in place.
    """
    a = np.asarray(a)
    dtype = np.complex128 if np.iscomplexobj(a) else np.float64
    if out is None:
        out = np.empty(a.shape, dtype)
    e = int(e)
    if dtype == np.complex128:
        np.ldexp(a.real, e, out=out.real, casting="unsafe")
        np.ldexp(a.imag, e, out=out.imag, casting="unsafe")
    else:
        np.ldexp(a, e, out=out, casting="unsafe")
    return out


def np_norm(a: npt.ArrayLike) -> float:
    """Float64 Frobenius norm of a numpy array, free of overflow and underflow.

    The true norm when it is representable, ``inf`` when it exceeds the
    largest float64 (e.g. a 2 x 2 matrix of 1e308).
    """
    a = np.asarray(a)
    if not needs_scaling(a):
        return float(_frobenius(a))
    e = power_of_two_exponent(a)
    with np.errstate(over="ignore"):  # inf: the norm exceeds the largest float64
        return float(np.ldexp(_frobenius(scale_by_power_of_two(a, -e)), e))


def _frobenius(a: np.ndarray) -> np.floating:
    """``sqrt(sum |a|^2)`` in at least float64, by ``einsum`` over the real and imaginary parts.

    Not ``np.linalg.norm``: that is a BLAS dot product, which with a
    multi-threaded BLAS on a loaded machine waits for its threads (measured
    9 ms for a 128 x 128 matrix, against 20 us here). No scaling: callers
    keep the entries in the safe range (:func:`needs_scaling`).
    """
    x = np.ascontiguousarray(a, dtype=np.result_type(a.dtype, np.float64))
    v = x.reshape(-1).view(x.real.dtype) if np.iscomplexobj(x) else x.reshape(-1)
    return np.sqrt(np.einsum("i,i->", v, v))


def matrix_error(target: npt.ArrayLike, implemented: npt.ArrayLike) -> jax.Array | np.ndarray | np.floating:
    """Relative Frobenius error ``||W - W_hat||_F / ||W||_F``, batched over leading axes.

    If ``W`` is all zero the absolute error ``||W_hat||_F`` is returned instead.
    numpy inputs are computed in numpy (their precision kept, float64 free of
    overflow and underflow: see :func:`np_matrix_error`; one matrix gives a
    numpy scalar); jax inputs in jax.
    """
    if _xp(target, implemented) is np:
        w_np, w_hat_np = np.asarray(target), np.asarray(implemented)
        batch = np.broadcast_shapes(w_np.shape, w_hat_np.shape)[:-2]
        w_np = np.broadcast_to(w_np, batch + w_np.shape[-2:])
        w_hat_np = np.broadcast_to(w_hat_np, batch + w_hat_np.shape[-2:])
        out = np.empty(batch)
        for i in np.ndindex(batch):
            out[i] = np_matrix_error(w_np[i], w_hat_np[i])
        return out if batch else out[()]
    xp = jnp
    w = xp.asarray(target)
    d = xp.asarray(implemented) - w
    num = xp.sqrt(xp.sum(xp.abs(d) ** 2, axis=(-2, -1)))
    den = xp.sqrt(xp.sum(xp.abs(w) ** 2, axis=(-2, -1)))
    return xp.where(den > 0, num / xp.where(den > 0, den, 1.0), num)


def np_matrix_error(target: npt.ArrayLike, implemented: npt.ArrayLike) -> float:
    """Float64 numpy version of :func:`matrix_error` for one matrix, free of overflow and underflow.

    When either matrix has a component outside ``[2**-SAFE_EXPONENT,
    2**SAFE_EXPONENT]``, both are first scaled by one power of two (exact),
    so the relative error is right for any finite matrices; the absolute
    error returned for an all-zero ``target`` is scaled back (``inf`` only
    when it exceeds the largest float64). Otherwise one copy, the difference,
    is made.
    """
    w = np.asarray(target)
    w_hat = np.asarray(implemented)
    e = 0
    if needs_scaling(w, w_hat):
        e = power_of_two_exponent(w, w_hat)
        w, w_hat = scale_by_power_of_two(w, -e), scale_by_power_of_two(w_hat, -e)
    num = _frobenius(np.subtract(w_hat, w, dtype=np.result_type(w, w_hat, np.float64)))
    den = _frobenius(w)
    if den > 0:
        return float(num / den)
    with np.errstate(over="ignore"):  # inf: the absolute error exceeds the largest float64
        return float(np.ldexp(num, e))


UNITARY_TOL = 1e-9
"""Default tolerance of :func:`unitary_deviation` for treating a matrix as a scaled unitary."""


def unitary_deviation(a: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """How far square matrices are from scaled unitaries ``g U``.

    Args:
      a: array ``(..., n, n)`` (numpy, computed in float64/complex128).

    Returns:
      ``(g, deviation)``, each of shape ``a.shape[:-2]``: the scale
      ``g = ||A||_F / sqrt(n)`` and ``max |A^H A / g^2 - I|`` (0 for a zero
      matrix, which is ``0 U`` for any U). Scale-free: the same for ``A`` and
      ``2**e A``.
    """
    a = np.asarray(a)
    a = a.astype(np.complex128 if np.iscomplexobj(a) else np.float64, copy=False)
    memo = _deviations.get()
    if memo is not None:
        seen = _recall(memo, a)
        if seen is not None:
            return seen
    g, dev = _unitary_deviation(a)
    if memo is not None and a.size == a.shape[-1] * a.shape[-2]:  # one matrix: a copy of it is kept
        memo.append((a.reshape((1,) + a.shape[-2:]).copy(), g.reshape(-1), dev.reshape(-1)))
    return g, dev


_deviations: contextvars.ContextVar[list | None] = contextvars.ContextVar("unitary_deviations", default=None)


@contextlib.contextmanager
def remembered_unitary_deviations() -> Iterator[None]:
    """Within the block, :func:`unitary_deviation` of a matrix (or stack) it has already seen is not computed again.

    The O(n^3) check runs once when two steps test the same matrix:
    :func:`photocomp.compile` tests the weights before it picks a unitary
    program, and the ``unitary`` pass then tests its tile, which for weights
    filling one tile holds the same numbers. A matrix is recognised by its
    entries (compared exactly, O(n^2)), not by identity; the stack
    ``(1, n, n)`` of one matrix counts as that matrix. Only single matrices
    are remembered (a copy of each is kept until the block ends), not stacks
    of several.
    """
    token = _deviations.set([])
    try:
        yield
    finally:
        _deviations.reset(token)


def known_unitary_deviation(a: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`unitary_deviation` of ``a`` if a :func:`remembered_unitary_deviations` block has computed it, else None
    (nothing is computed)."""
    memo = _deviations.get()
    if memo is None:
        return None
    a = np.asarray(a)
    return _recall(memo, a.astype(np.complex128 if np.iscomplexobj(a) else np.float64, copy=False))


def _recall(memo: list, a: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The remembered ``(g, deviation)`` of the matrices in ``a``, shaped ``a.shape[:-2]``, or None."""
    flat = a.reshape((-1,) + a.shape[-2:])
    for key, g, dev in memo:
        if key.shape == flat.shape and key.dtype == flat.dtype and np.array_equal(key, flat):
            return g.reshape(a.shape[:-2]).copy(), dev.reshape(a.shape[:-2]).copy()
    return None


def _unitary_deviation(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(g, max |A^H A / g^2 - I|)`` from one product ``A^H A`` (its trace is ``||A||_F^2 = n g^2``),
    ``A`` first scaled by a power of two where its components need it."""
    n = a.shape[-1]
    e = power_of_two_exponent(a) if needs_scaling(a) else 0
    b = scale_by_power_of_two(a, -e) if e else a
    gram = np.conj(np.swapaxes(b, -1, -2)) @ b
    i = np.arange(n)
    g2 = np.sum(gram[..., i, i].real, axis=-1) / n
    zero = g2 == 0
    gram[..., i, i] -= g2[..., None]
    dev = np.max(np.abs(gram), axis=(-2, -1)) / np.where(zero, 1.0, g2)
    with np.errstate(over="ignore", under="ignore"):
        g = np.ldexp(np.sqrt(g2), e)
    return g, np.where(zero, 0.0, dev)
