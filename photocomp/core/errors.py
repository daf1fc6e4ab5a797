"""Typed errors raised by photocomp.

Every error names the offending argument, what was expected and what was
received. All inherit from :class:`PhotocompError`, so callers can catch one
type; each also inherits the builtin that matches its meaning (``ValueError``,
``TypeError``, ``LookupError``) so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "PhotocompError",
    "InvalidInputError",
    "InvalidTypeError",
    "UnknownNameError",
    "PipelineError",
    "PhaseMapFileError",
    "MismatchError",
]


class PhotocompError(Exception):
    """Base class of every error photocomp raises on purpose."""


class InvalidInputError(PhotocompError, ValueError):
    """An argument has the right type but an invalid value (shape, range, NaN...)."""


class InvalidTypeError(PhotocompError, TypeError):
    """An argument has the wrong type (non-numeric array, wrong object kind...)."""


class UnknownNameError(PhotocompError, LookupError):
    """A target, pass or option name is not known.

    ``str()`` gives the plain message (``KeyError`` would quote it).
    """


class PipelineError(PhotocompError, ValueError):
    """A pipeline is malformed: bad syntax, bad parameters or unmet requirements."""


class PhaseMapFileError(PhotocompError, ValueError):
    """A phase-map file cannot be read: missing, truncated, tampered or of another version."""


class MismatchError(PhotocompError, ValueError):
    """Two objects that must agree do not (e.g. a chip of another target than the program)."""
