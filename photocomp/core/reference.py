"""Float64 NumPy reference decompositions: the oracle the fast code is tested against.

Everything here is written to be read, not to be fast. Each decomposition is
a plain double loop over the entries it nulls, and every MZI is applied as an
explicit 2 x 2 matrix product on two rows or two columns of a complex128
NumPy array, exactly as the papers describe it. No JAX, no scan, no index
arithmetic shared with :mod:`photocomp.compiler.decompose`, so agreement between the
two is evidence that both are right. The benchmarks also use these functions
as the "plain NumPy" baseline.

MZI convention (Clements et al. 2016, Eq. 1; the same one as
:mod:`photocomp.core.convention`, restated here on purpose so that this module is
self-contained), acting on modes (k, k+1)::

    T(theta, phi) = [[exp(i phi) cos(theta), -sin(theta)],
                     [exp(i phi) sin(theta),  cos(theta)]]

A mesh is described by ``ops``, a list of ``(k, theta, phi)`` in the order
light meets the MZIs, and ``out_phase``, the phases (rad) of the final
diagonal screen, so that ``U = diag(exp(i out_phase)) @ T_last @ ... @ T_first``
(see :func:`mesh_product`).

References:
  W. R. Clements, P. C. Humphreys, B. J. Metcalf, W. S. Kolthammer and
  I. A. Walmsley, "Optimal design for universal multiport interferometers",
  Optica 3, 1460 (2016).
  M. Reck, A. Zeilinger, H. J. Bernstein and P. Bertani, "Experimental
  realization of any discrete unitary operator", PRL 73, 58 (1994).
  F. Mezzadri, "How to generate random matrices from the classical compact
  groups", Notices of the AMS 54, 592 (2007).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

__all__ = [
    "mzi_matrix",
    "clements_reference",
    "reck_reference",
    "mesh_product",
    "haar_unitary",
    "fidelity",
]


def mzi_matrix(theta: float, phi: float) -> np.ndarray:
    """The 2 x 2 transfer matrix T(theta, phi) of one MZI.

    Args:
      theta: internal angle (rad); bar power cos^2(theta).
      phi: external phase on the upper input (rad).

    Returns:
      complex128 array of shape (2, 2).
    """
    c, s = np.cos(theta), np.sin(theta)
    e = np.exp(1j * phi)
    return np.array([[e * c, -s], [e * s, c]], dtype=np.complex128)


def _as_square(U) -> np.ndarray:
    u = np.array(U, dtype=np.complex128)  # a copy: the decompositions overwrite it
    if u.ndim != 2 or u.shape[0] != u.shape[1]:
        raise ValueError(f"U must be a square (N, N) matrix; got shape {u.shape}")
    return u


def _angles_to_null_right(a: complex, b: complex) -> tuple[float, float]:
    """(theta, phi) such that [a, b] @ T^-1(theta, phi) has a zero first entry.

    ``[a, b] @ T^-1`` has first entry ``exp(-i phi) cos(theta) a - sin(theta) b``,
    which vanishes for ``tan(theta) exp(i phi) = a / b``.
    """
    theta = np.arctan2(abs(a), abs(b))
    phi = np.angle(a) - np.angle(b) if abs(a) > 0 else 0.0
    return float(theta), float(phi)


def _angles_to_null_left(a: complex, b: complex) -> tuple[float, float]:
    """(theta, phi) such that T(theta, phi) @ [a, b]^T has a zero second entry.

    The second entry is ``exp(i phi) sin(theta) a + cos(theta) b``, which
    vanishes for ``tan(theta) exp(i phi) = -b / a``.
    """
    theta = np.arctan2(abs(b), abs(a))
    phi = np.angle(-b) - np.angle(a) if abs(b) > 0 else 0.0
    return float(theta), float(phi)


def _multiply_right_by_inverse(u: np.ndarray, k: int, theta: float, phi: float) -> None:
    """In place: ``u <- u @ T^-1(theta, phi)`` on columns (k, k+1)."""
    t_inv = mzi_matrix(theta, phi).conj().T
    u[:, k : k + 2] = u[:, k : k + 2] @ t_inv


def _multiply_left(u: np.ndarray, k: int, theta: float, phi: float) -> None:
    """In place: ``u <- T(theta, phi) @ u`` on rows (k, k+1)."""
    u[k : k + 2, :] = mzi_matrix(theta, phi) @ u[k : k + 2, :]


def clements_reference(U: npt.ArrayLike) -> tuple[list[tuple[int, float, float]], np.ndarray]:
    """Clements rectangular decomposition, following the paper step by step.

    The N - 1 anti-diagonals below the main diagonal are nulled one after the
    other, starting at the bottom-left corner. Counting them i = 1 .. N - 1
    (paper's notation, 1-based indices):

    * odd i: for j = 1 .. i, multiply from the right by T^-1 on columns
      (i - j + 1, i - j + 2) to null entry (N - j + 1, i - j + 1);
    * even i: for j = 1 .. i, multiply from the left by T on rows
      (N + j - i - 1, N + j - i) to null entry (N + j - i, j).

    What remains is a diagonal D, and
    ``U = L_1^-1 ... L_m^-1 D R_r^-1 ... R_1^-1``. Each left factor
    ``L^-1 = T^-1(theta, phi)`` is then moved to the other side of D with

        T^-1(theta, phi) diag(e^{i alpha}, e^{i beta})
            = diag(e^{i (beta - phi + pi)}, e^{i beta}) T(theta, alpha - beta + pi),

    nearest to D first, which leaves all the phases in one output screen.

    Args:
      U: unitary matrix (N, N), any numeric dtype (computed in complex128).

    Returns:
      ``(ops, out_phase)``: ``ops`` is a list of ``(k, theta, phi)`` (upper
      mode, rad, rad) in the order light meets the MZIs; ``out_phase`` (N,)
      are the output phases (rad). ``mesh_product(N, ops, out_phase)``
      reproduces ``U``.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> U = haar_unitary(4, rng)
      >>> ops, out = clements_reference(U)
      >>> len(ops), bool(np.allclose(mesh_product(4, ops, out), U))
      (6, True)
    """
    u = _as_square(U)
    n = u.shape[0]
    right_ops = []  # (k, theta, phi) of the T^-1 multiplied from the right, in nulling order
    left_ops = []  # (k, theta, phi) of the T multiplied from the left, in nulling order
    for i in range(1, n):
        for j in range(1, i + 1):
            if i % 2 == 1:
                row, col = n - j, i - j  # 0-based entry to null
                k = col  # columns (k, k+1)
                theta, phi = _angles_to_null_right(u[row, k], u[row, k + 1])
                _multiply_right_by_inverse(u, k, theta, phi)
                right_ops.append((k, theta, phi))
            else:
                row, col = n + j - i - 1, j - 1  # 0-based entry to null
                k = row - 1  # rows (k, k+1)
                theta, phi = _angles_to_null_left(u[k, col], u[k + 1, col])
                _multiply_left(u, k, theta, phi)
                left_ops.append((k, theta, phi))

    # u is now diagonal: D = L_m ... L_1 U R_1 ... R_r.
    screen = np.angle(np.diag(u)).astype(np.float64)

    # Move each L^-1 = T^-1(theta, phi) through D, the one nearest D first.
    # Phases are wrapped as they go so that they stay small (a mode is passed
    # up to N/2 times; unwrapped sums of pi's would cost digits in exp(i x)).
    moved = []
    for k, theta, phi in reversed(left_ops):
        alpha, beta = screen[k], screen[k + 1]
        screen[k] = np.mod(beta - phi + np.pi, 2 * np.pi)
        screen[k + 1] = beta
        moved.append((k, theta, float(np.mod(alpha - beta + np.pi, 2 * np.pi))))

    # Light meets R_1^-1 = T_1 first, ..., then the moved left MZIs, the one
    # that was nearest D first, and the screen last.
    ops = list(right_ops) + moved
    return ops, np.mod(screen, 2 * np.pi)


def reck_reference(U: npt.ArrayLike) -> tuple[list[tuple[int, float, float]], np.ndarray]:
    """Reck triangular decomposition by right multiplications only.

    Rows are cleared from the bottom up: for row r = N-1 .. 1 (0-based) and
    column c = 0 .. r-1, multiply from the right by T^-1 on columns (c, c+1)
    to null entry (r, c). After row r is cleared its diagonal entry is a pure
    phase and, by unitarity, the rest of column r is zero too, so later steps
    (on columns < r) never disturb it. What remains is a diagonal D with
    ``U = D T_m ... T_1``.

    Args:
      U: unitary matrix (N, N), any numeric dtype (computed in complex128).

    Returns:
      ``(ops, out_phase)`` as in :func:`clements_reference`.

    Example:
      >>> U = haar_unitary(3, np.random.default_rng(1))
      >>> ops, out = reck_reference(U)
      >>> [k for k, _, _ in ops]
      [0, 1, 0]
    """
    u = _as_square(U)
    n = u.shape[0]
    ops = []
    for row in range(n - 1, 0, -1):
        for k in range(row):
            theta, phi = _angles_to_null_right(u[row, k], u[row, k + 1])
            _multiply_right_by_inverse(u, k, theta, phi)
            ops.append((k, theta, phi))
    out_phase = np.mod(np.angle(np.diag(u)), 2 * np.pi)
    return ops, out_phase


def mesh_product(n: int, ops: Iterable[tuple[int, float, float]], out_phase: npt.ArrayLike) -> np.ndarray:
    """Dense unitary of a mesh: ``diag(exp(i out_phase)) @ T_last @ ... @ T_first``.

    Args:
      n: number of modes N.
      ops: iterable of ``(k, theta, phi)`` (upper mode, rad, rad) in the order
        light meets the MZIs.
      out_phase: (N,) output phases (rad).

    Returns:
      complex128 array (N, N).
    """
    u = np.eye(n, dtype=np.complex128)
    for k, theta, phi in ops:
        k = int(k)
        if not 0 <= k < n - 1:
            raise ValueError(f"MZI upper mode must be in [0, {n - 2}]; got {k}")
        _multiply_left(u, k, theta, phi)
    out_phase = np.asarray(out_phase, dtype=np.float64)
    if out_phase.shape != (n,):
        raise ValueError(f"out_phase must have shape ({n},); got {out_phase.shape}")
    return np.exp(1j * out_phase)[:, None] * u


def haar_unitary(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random N x N unitary (Mezzadri 2007).

    QR-decomposes a complex Ginibre matrix and multiplies column j of Q by
    ``R[j, j] / |R[j, j]|``, which removes the bias of the QR sign convention.

    Args:
      n: size N.
      rng: the NumPy random generator to draw from (explicit seed, no global state).

    Returns:
      complex128 array (N, N).
    """
    z = (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))) / np.sqrt(2.0)
    q, r = np.linalg.qr(z)
    d = np.diag(r)
    return q * (d / np.abs(d))[None, :]


def fidelity(U: npt.ArrayLike, V: npt.ArrayLike) -> float:
    """Fidelity of two N x N unitaries, ``|Tr(U^H V)|^2 / N^2`` (1 when equal up to a global phase)."""
    U = np.asarray(U)
    V = np.asarray(V)
    n = U.shape[0]
    return float(abs(np.trace(U.conj().T @ V)) ** 2 / n**2)
