"""The crossbar core: fan-out, one weight cell per matrix element, fan-in.

A ``crossbar-K`` tile is no mesh. Input ``j`` is split by a binary tree of
``K - 1`` splitters (its *fan-out*) into ``K`` copies; copy ``i`` passes
weight cell ``(i, j)``; output ``i``'s *fan-in* tree of ``K - 1`` combiners
gathers the ``K`` weighted copies onto the output's detector. So the tile
has ``K^2`` weight cells and ``2 K (K - 1)`` splitters and combiners.

Trees. A splitter node over ``n`` leaves sends ``ceil(n / 2)`` of them to its
upper branch and the rest to its lower one; its design splitting angle
``alpha = atan(sqrt(n_lower / n_upper))`` gives each branch power in
proportion to its leaves, so every leaf of an ideal tree gets amplitude
``1 / sqrt(K)`` for any ``K`` (not only powers of two). A splitter is a
symmetric Y-junction: amplitudes ``cos(alpha + e)`` and ``sin(alpha + e)``
with no relative phase, ``e`` its splitting-angle error. A combiner is a
splitter run backwards (reciprocity): it passes ``cos`` / ``sin`` of its
angle from its two inputs and radiates the rest. Light from input ``j`` to
output ``i`` meets ``ceil(log2 K)`` splitters or fewer and as many
combiners; an ideal tile computes ``y_i = (1 / K) sum_j w_ij x_j``.

Weight cell. An MZI (two couplers, an internal heater) after a phase
shifter on its upper input, used from its upper input to its upper output:
the convention's ``T(theta, phi)[0, 0] = e^{i phi} cos theta``. ``theta`` in
``[0, pi/2]`` sets the amplitude, ``phi`` the phase: a sign is ``phi = pi``,
and complex weights need nothing more. Physically the internal heater is
``2 theta + pi`` and the input shifter ``phi - theta - pi``
(:func:`cell_to_physical`). With coupler errors ``e1``, ``e2`` a cell's
amplitude only reaches ``[|sin(e1 + e2)|, cos(e1 - e2)]`` (its extinction is
finite), and the heater's response is the cosine's, not linear in power.

Signed weights and differential detection. Every output is read coherently:
it beats with a local oscillator on a balanced pair of detectors, and the
difference of their photocurrents is the field's in-phase part, so signed
(and, with the quadrature, complex) weights need no second crossbar. Each
output has a phase shifter (the ``u_out`` heaters) that sets its phase
reference.

Routing. The fan-out trees (grouped by input) and fan-in trees (grouped by
output) meet the weight array from two waveguide layers, so no planar
crossings are modelled; a single-layer layout would add up to ``K - 1``
crossings on a path.

In the IR a crossbar program is a one-stage circuit (``"crossbar"``) whose
stage is stored as ``u``: a :class:`~photocomp.core.phases.MeshPhases` on
the crossbar layout with ``theta``/``phi`` of shape ``(T, K^2)`` (cell
``i K + j``) and ``out_phase`` ``(T, K)``, the output phase references.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["tree_structure", "tree_amplitudes", "cell_to_physical", "cell_from_physical", "weights_to_cells",
           "crossbar_counts"]


@functools.lru_cache(maxsize=64)
def tree_structure(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Static structure of a ``k``-leaf splitter tree.

    Returns ``(alpha, node, lower, valid)``: ``alpha`` ``(k - 1,)`` the design splitting angles of the
    nodes (breadth-first, root first); for every leaf its path from the root, ``node``, ``lower`` and
    ``valid`` of shape ``(k, D)`` with ``D = ceil(log2 k)``: the node passed at each level, whether the
    leaf takes its lower branch, and whether the level exists on that path (a tree of ``k`` not a power
    of two has shorter paths).

    Example:
      >>> alpha, node, lower, valid = tree_structure(4)
      >>> bool(np.allclose(alpha, np.pi / 4)), node.tolist()
      (True, [[0, 1], [0, 1], [0, 2], [0, 2]])
    """
    depth = max(1, math.ceil(math.log2(k))) if k > 1 else 0
    alpha: list[float] = []
    paths: list[list[tuple[int, bool]]] = [[] for _ in range(k)]
    level = [(0, k)]  # (first leaf, leaves) of every subtree on this level
    while level:
        nxt = []
        for lo, n in level:
            if n < 2:
                continue
            up = (n + 1) // 2
            index = len(alpha)
            alpha.append(math.atan(math.sqrt((n - up) / up)))
            for leaf in range(lo, lo + n):
                paths[leaf].append((index, leaf >= lo + up))
            nxt += [(lo, up), (lo + up, n - up)]
        level = nxt
    node = np.zeros((k, depth), np.int32)
    lower = np.zeros((k, depth), bool)
    valid = np.zeros((k, depth), bool)
    for leaf, path in enumerate(paths):
        for d, (n, lw) in enumerate(path):
            node[leaf, d], lower[leaf, d], valid[leaf, d] = n, lw, True
    return np.asarray(alpha, np.float64), node, lower, valid


def tree_amplitudes(k: int, errors: ArrayLike = 0.0, xp=jnp):
    """Leaf amplitudes ``(..., k)`` of ``k``-leaf splitter trees with splitting-angle errors ``errors``
    ``(..., k - 1)`` (rad; a scalar 0 for ideal trees): ``1 / sqrt(k)`` each on an ideal tree. The same
    numbers are a combiner tree's transmissions from each of its inputs."""
    alpha, node, lower, valid = tree_structure(k)
    angle = xp.asarray(alpha) + xp.asarray(errors)
    a = xp.take(angle, xp.asarray(node), axis=-1)  # (..., k, D)
    factor = xp.where(xp.asarray(lower), xp.sin(a), xp.cos(a))
    return xp.prod(xp.where(xp.asarray(valid), factor, 1.0), axis=-1)


def cell_to_physical(theta: ArrayLike, phi: ArrayLike, xp=jnp):
    """A weight cell's physical ``(internal, external)`` phases (rad, unwrapped) for ``e^{i phi} cos theta``:
    ``(2 theta + pi, phi - theta - pi)``."""
    theta = xp.asarray(theta)
    return 2 * theta + np.pi, xp.asarray(phi) - theta - np.pi


def cell_from_physical(internal: ArrayLike, external: ArrayLike, xp=jnp):
    """Inverse of :func:`cell_to_physical`: ``(theta, phi)`` (unwrapped)."""
    theta = (xp.asarray(internal) - np.pi) / 2
    return theta, xp.asarray(external) + theta + np.pi


def weights_to_cells(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crossbar settings of tiles ``blocks`` ``(T, K, K)``: ``(theta, phi, gain)`` with ``theta``, ``phi``
    ``(T, K^2)`` in ``[0, pi/2]`` and ``[0, 2 pi)`` and ``gain`` ``(T,)`` such that
    ``gain / K * cos(theta) e^{i phi}`` is the tile, exactly up to rounding. The largest entry of a tile
    sits at full transmission (``gain = K max |w|``); an all-zero tile gets gain 0 and every cell dark."""
    b = np.asarray(blocks, np.complex128)
    t, k, _ = b.shape
    mag = np.abs(b).reshape(t, k * k)
    peak = mag.max(axis=1) if mag.size else np.zeros(t)
    zero = peak == 0
    scale = np.where(zero, 1.0, peak)
    theta = np.arccos(np.clip(mag / scale[:, None], 0.0, 1.0))
    theta[zero] = np.pi / 2
    phi = np.mod(np.angle(b.reshape(t, k * k)), 2 * np.pi)
    phi = np.where(phi >= 2 * np.pi, 0.0, phi)
    return theta, phi, np.where(zero, 0.0, k * peak)


def crossbar_counts(k: int) -> dict[str, int]:
    """Components of one ``k x k`` crossbar tile: weight cells (MZIs), splitters and combiners (``k - 1`` per
    tree), phase shifters (an input shifter per cell, one reference per output), detectors (a balanced pair
    per output) and the depth of the trees.

    Example:
      >>> crossbar_counts(64)["splitters"]
      8064
    """
    return {"cells": k * k, "splitters": 2 * k * (k - 1), "shifters": k * k + k, "detectors": 2 * k,
            "tree_depth": max(1, math.ceil(math.log2(k))) if k > 1 else 0}
