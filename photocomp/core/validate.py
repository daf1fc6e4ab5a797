"""Input validation shared by every entry point.

Errors name the argument, what was expected and what was received.
"""

from __future__ import annotations

import numbers

import numpy as np
import numpy.typing as npt

from photocomp.core.errors import InvalidInputError, InvalidTypeError

__all__ = ["as_matrix", "as_unitary_batch", "check_int", "check_real", "matrix_view"]

NUMERIC_KINDS = "biufc"
"""dtype kinds accepted as numbers: bool, signed and unsigned integers, floats, complex.
Not ``m``/``M`` (timedelta64/datetime64: durations and dates, not numbers), nor
object, strings, bytes or structured (void) dtypes."""


def _describe(x) -> str:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is not None:
        return f"array of shape {tuple(shape)} and dtype {dtype}"
    return f"{type(x).__name__} {x!r}"[:120]


def _as_numeric_array(x, name: str) -> np.ndarray:
    """``np.asarray(x)`` (no copy for an ndarray, a broadcast view stays a view) if it is numeric; else raise."""
    if isinstance(x, (str, bytes)) or x is None:
        raise InvalidTypeError(f"{name} must be a numeric array-like; got {_describe(x)}")
    if isinstance(x, np.ma.MaskedArray):
        raise InvalidTypeError(
            f"{name} must be a plain numeric array, not a masked array (numpy.ma): its mask would be "
            f"ignored; fill the masked entries first, e.g. {name}.filled(0); got masked {_describe(x)}"
        )
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise InvalidTypeError(
            f"{name} must be a numeric array-like; could not convert {type(x).__name__}: {str(exc)[:80]}"
        ) from None
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise InvalidTypeError(
            f"{name} must be a numeric (bool, integer, real or complex) array; got {_describe(arr)}"
        )
    return arr


def matrix_view(x: npt.ArrayLike, name: str = "weights") -> np.ndarray:
    """Check that ``x`` is a non-empty numeric 2-D array-like without copying it.

    Returns ``np.asarray(x)``: the array itself for an ndarray (a broadcast
    view stays a view), so that its size can be checked before any copy.
    Finiteness is checked by :func:`as_matrix`.
    """
    arr = _as_numeric_array(x, name)
    if arr.ndim != 2:
        raise InvalidInputError(f"{name} must be a finite 2-D array (M x N); got {arr.ndim}-D {_describe(arr)}")
    if 0 in arr.shape:
        raise InvalidInputError(f"{name} must be non-empty; got shape {arr.shape}")
    return arr


def as_matrix(x: npt.ArrayLike, name: str = "weights", *, copy: bool = True) -> np.ndarray:
    """Validate a finite, non-empty, numeric 2-D array; return it as complex128.

    ``copy=False`` returns ``x`` itself when it is a complex128 ndarray already.
    Entries beyond the float64 range (float128 input) count as not finite.
    """
    arr = matrix_view(x, name)
    with np.errstate(over="ignore", invalid="ignore"):  # float128 beyond the float64 range: reported below
        out = arr.astype(np.complex128, copy=copy)
    if not np.all(np.isfinite(out)):
        finite = np.isfinite(arr) if arr.dtype.kind in "fc" else np.ones(arr.shape, bool)
        bad = int(np.size(arr) - np.count_nonzero(finite))
        if bad:
            raise InvalidInputError(f"{name} must be finite; got {bad} NaN/Inf entries in shape {arr.shape}")
        big = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        raise InvalidInputError(
            f"{name} must be finite in float64; got {big} entries of dtype {arr.dtype} beyond the float64 "
            f"range (|x| > {np.finfo(np.float64).max:.4g}) in shape {arr.shape}"
        )
    return out


def as_unitary_batch(x: npt.ArrayLike, name: str, *, check: bool = True,
                     atol: float = 1e-8) -> tuple[np.ndarray, bool]:
    """Validate a unitary ``(N, N)`` or batch ``(B, N, N)``; return ``(complex128 (B,N,N), batched)``."""
    arr = _as_numeric_array(x, name)
    if arr.ndim not in (2, 3) or arr.shape[-1] != arr.shape[-2] or arr.shape[-1] == 0:
        raise InvalidInputError(f"{name} must be a square (N, N) matrix or a (B, N, N) batch with N >= 1; got {_describe(arr)}")
    arr = arr.astype(np.complex128)
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{name} must be finite; got NaN/Inf entries")
    if check:
        n = arr.shape[-1]
        dev = np.max(np.abs(arr @ np.conj(np.swapaxes(arr, -1, -2)) - np.eye(n)))
        if dev > atol:
            raise InvalidInputError(
                f"{name} must be unitary to atol={atol:g}; got max |U U^H - I| = {dev:.3g}. "
                "Compile general matrices with photocomp.compile (SVD pass) instead."
            )
    batched = arr.ndim == 3
    return (arr if batched else arr[None]), batched


def check_int(value: object, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as int if it is an integer within [low, high]; else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        rng = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise InvalidInputError(f"{name} must be an integer in {rng}; got {v}")
    return v


def check_real(value: object, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False) -> float:
    """Return ``value`` as float if finite and within the bounds; else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise InvalidInputError(f"{name} must be finite; got {v}")
    if low is not None and (v < low or (low_open and v == low)):
        raise InvalidInputError(f"{name} must be {'>' if low_open else '>='} {low}; got {v}")
    if high is not None and v > high:
        raise InvalidInputError(f"{name} must be <= {high}; got {v}")
    return v
