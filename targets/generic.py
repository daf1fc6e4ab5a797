"""Generic meshes of any size: ``clements-N`` and ``reck-N`` (MZI cells), ``mzi3-N``, ``mzix-N`` and ``bell-N``
(Clements meshes of three-splitter MZIs, of MZIs with a crossing and of symmetric MZIs; see
:mod:`photocomp.core.cell` and :mod:`photocomp.core.bell`), and ``butterfly-N`` (N a power of two; a
non-universal butterfly mesh programmed by fitting) and ``fldzhyan-N`` (Fldzhyan's error-tolerant layout of
static couplers, programmed by fitting), and ``crossbar-N`` (a fan-out / weight / fan-in core, one weight cell
per matrix entry; :mod:`photocomp.core.crossbar`)."""

from __future__ import annotations

import dataclasses

from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.registry import quote
from photocomp.core.target import SIZE_RANGE, Target
from photocomp.targets.physics import DEFAULTS, component_count


def _check_size(size, family: str) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise InvalidTypeError(f"target {family}-N: mesh size N must be an int; got {type(size).__name__} {quote(size)}")
    if not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise InvalidInputError(
            f"target {family}-N: mesh size N must be an int in [{SIZE_RANGE[0]}, {SIZE_RANGE[1]}]; got {quote(size)}"
        )
    return size


_FIXED = ("name", "mesh", "size", "components", "description", "cell")


def _params(family: str, overrides: dict) -> dict:
    """The default physics with ``overrides`` applied; the name, mesh, size and counts are not overridable."""
    fields = {f.name for f in dataclasses.fields(Target)}
    bad = sorted(k for k in overrides if k not in fields or k in _FIXED)
    if bad:
        allowed = sorted(fields - set(_FIXED))
        raise InvalidInputError(
            f"target {family}-N: physics overrides must be among {allowed}; got [{', '.join(quote(k, 40) for k in bad[:5])}]"
        )
    return {**DEFAULTS, **overrides}


def _generic(family: str, mesh: str, cell: str, size, overrides: dict, what: str) -> Target:
    size = _check_size(size, family)
    params = _params(family, overrides)
    return Target(
        name=f"{family}-{size}", mesh=mesh, size=size, components=component_count(size, cell, mesh), cell=cell,
        description=f"generic {size}x{size} {what}, default physics", **params,
    )


def clements(size: int, **overrides: object) -> Target:
    """A generic N x N Clements (rectangular) mesh with the default physics.

    Example:
      >>> clements(16).depth
      16
    """
    return _generic("clements", "clements", "mzi", size, overrides, "Clements mesh")


def reck(size: int, **overrides: object) -> Target:
    """A generic N x N Reck (triangular) mesh with the default physics."""
    return _generic("reck", "reck", "mzi", size, overrides, "Reck mesh")


def mzi3(size: int, **overrides: object) -> Target:
    """A Clements mesh of three-splitter MZIs (Hamerly et al., Nat. Commun. 13, 6831 (2022)).

    Each cell adds a coupler and a trim heater to the MZI; with imperfect
    couplers the trim restores the full splitting range, so error correction
    reaches every cell setting a perfect MZI could. Same decomposition,
    depth and cell count as ``clements-N``; 1.5x the couplers and heaters.

    Example:
      >>> t = mzi3(8)
      >>> (t.depth, t.layout.cell.heaters)
      (8, ('external', 'internal', 'trim'))
    """
    return _generic("mzi3", "clements", "mzi3", size, overrides, "Clements mesh of three-splitter MZIs")


def mzix(size: int, **overrides: object) -> Target:
    """A Clements mesh of MZIs each followed by a waveguide crossing (bar and cross states trade places).

    Example:
      >>> mzix(8).layout.cell.name
      'mzix'
    """
    return _generic("mzix", "clements", "mzix", size, overrides, "Clements mesh of MZI + crossing cells")


def bell(size: int, **overrides: object) -> Target:
    """The Bell & Walmsley compact mesh (APL Photonics 6, 070804 (2021)): a Clements mesh of symmetric MZIs.

    Each cell has a heater on both arms and no external heater; an input
    phase layer, edge shifters beside the odd columns and the output layer
    take the mesh's phases (:mod:`photocomp.core.bell`), so light crosses
    ``N + 2`` phase-shifter layers instead of ``2N + 1``. Same decomposition,
    depth and cell count as ``clements-N``.

    Example:
      >>> t = bell(8)
      >>> (t.depth, t.layout.cell.heaters)
      (8, ('internal', 'lower'))
    """
    return _generic("bell", "clements", "bell", size, overrides, "Clements mesh of symmetric MZIs (Bell & Walmsley)")


def butterfly(size: int, **overrides: object) -> Target:
    """A butterfly (FFT) mesh of N = 2^m modes: m columns of N / 2 MZIs, column ``s`` on modes ``(n, n + 2^s)``.

    (N / 2) log2 N MZIs per mesh instead of N (N - 1) / 2, and an optical
    depth of log2 N instead of N, at the price of universality: the mesh
    reaches only its own family of unitaries, so the compiler fits its
    phases (the ``butterfly`` pass, :mod:`photocomp.compiler.fit`) and
    reports how close the fit comes. Its pairs are not adjacent: on a planar
    chip column ``s`` routes its waveguides through crossings
    (:func:`photocomp.core.layout.planar_crossings`), which the cost report's
    loss budget counts and the chip simulation makes lose ``crossing_loss_db``
    each: unevenly across the modes, an error no calibration removes.

    Example:
      >>> t = butterfly(16)
      >>> (t.depth, t.n_mzi)
      (4, 32)
    """
    size = _check_size(size, "butterfly")
    if size & (size - 1):
        raise InvalidInputError(f"target butterfly-N: mesh size N must be a power of two; got {size}")
    return _generic("butterfly", "butterfly", "mzi", size, overrides, "butterfly mesh")


def fldzhyan(size: int, **overrides: object) -> Target:
    """Fldzhyan, Saygin & Kulik's error-tolerant layout (Opt. Lett. 45, 2632 (2020)): 2N brick columns of
    single static couplers, each after one phase shifter, and the output phase layer.

    Its N (N - 1) cells have no internal heater (:data:`photocomp.core.cell.FLDZHYAN`): the splitting of
    every coupler is fixed, and the N^2 phases are fitted (the ``fldzhyan`` pass,
    :mod:`photocomp.compiler.fit`). It has the same N (N - 1) couplers and N (N - 1) heaters as a Clements
    mesh of MZIs, arranged so that no heater sets a splitting. A coupler error is a different fixed splitting,
    which the fit on the chip model (model calibration) takes into account: where the fit is exact (a few
    modes) the layout tolerates splitting errors an MZI mesh cannot correct; from about a dozen modes on the
    fit stalls in local minima (notebook 06, section 7).

    Example:
      >>> t = fldzhyan(8)
      >>> (t.depth, t.n_mzi, t.layout.cell.heaters)
      (16, 56, ('external',))
    """
    return _generic("fldzhyan", "fldzhyan", "fldzhyan", size, overrides, "Fldzhyan mesh of static couplers")


def crossbar(size: int, **overrides: object) -> Target:
    """A fan-out / weight / fan-in crossbar of N inputs and N outputs (:mod:`photocomp.core.crossbar`).

    Every input is split N ways by a tree of splitters, every matrix entry
    has its own weight cell (an MZI after a phase shifter), and every output
    gathers its N weighted copies through a tree of combiners onto a balanced
    pair of detectors (coherent read-out, so signed and complex weights need
    no second crossbar). It programs any matrix in closed form, one cell per
    entry (the ``crossbar`` pass); light crosses one cell instead of a mesh's
    N to 2N + 1 columns, and an ideal tile loses a factor N of amplitude in
    its trees (a crossbar tile computes ``W x / N``), which its gain restores
    electronically. Cells err independently, so calibration is per cell
    (:func:`photocomp.calibration.engine.local_correction`).

    Example:
      >>> t = crossbar(8)
      >>> (t.n_mzi, t.depth, t.components)
      (64, 1, 400)
    """
    return _generic("crossbar", "crossbar", "mzi", size, overrides, "fan-out / weight / fan-in crossbar")
