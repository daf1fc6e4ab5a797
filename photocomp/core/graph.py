"""networkx view of a compiled circuit: netlist, layout, export.

The chip is one K x K core: a V mesh, a column of attenuator MZIs, a U mesh,
each mesh followed by its output phase screen (a unitary program's core is
the U mesh and its screen alone). A program's tiles are
different settings of that same core (time-multiplexed), so the graph is the
core with one tile's settings as node attributes.

Nodes (string ids, GraphML-safe):

* ``in:m`` / ``out:m`` – input / output ports (``kind="port_in"/"port_out"``).
* ``V:c:n`` / ``U:c:n`` – the MZI of the V / U mesh in column c on modes
  (n, lower mode; n + 1 except in a butterfly) (``kind="mzi"``, attributes ``lower``, ``theta``, ``phi`` in rad).
* ``Vout:m`` / ``Uout:m`` – output phase shifters (``kind="phase"``, ``phase``).
* ``S:m`` – attenuator MZI on mode m (``kind="attenuator"``, ``sigma``).

A crossbar's core (:mod:`photocomp.core.crossbar`) has instead, per input
``j``, the splitters ``F:j:n`` of its fan-out tree (``kind="splitter"``,
``alpha`` the design splitting angle; ports ``i``, ``o0``/``o1``), the
weight cells ``X:i:j`` (``kind="weight"``, ``theta``, ``phi``), per output
``i`` the combiners ``C:i:n`` of its fan-in tree (``kind="combiner"``; ports
``i0``/``i1``, ``o``) and its phase reference ``Uout:i``. Edges carry the
input (fan-out) or output (fan-in) index as ``mode``; ``y`` places cell
``(i, j)`` at ``i + j / K``.

Edges are waveguides, directed along the light, with ``mode`` and the
``src_port``/``dst_port`` names (``o0``/``o1`` upper/lower output, ``i0``/``i1``
inputs, ``o``/``i`` for single-mode elements). Every node has layout
coordinates ``x`` (stage position along the chip, in columns) and ``y``
(mode, MZIs sit between their two modes). This view is built in Python once;
it never enters traced code.

Netlist export (:func:`to_sax_netlist`, :func:`export_netlist`) writes the same
circuit in SAX's flat netlist format: ``"instances"`` (one per MZI, phase
shifter, attenuator and output gain, each with its ``"component"`` and
``"settings"``), ``"connections"`` (``"instance,port": "instance,port"``
along the light), ``"ports"`` (external ``in0 ... out{K-1}``), plus
``"models"``, which documents every component's ports, settings (units) and
transfer function, and ``"info"`` (convention, tile, target). SAX reads the
first three (and ``"placements"``, positions in um when a Program gives the
pitches) and ignores the rest; pass it models that implement ``"models"``.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Protocol

import numpy as np

from photocomp.core.atomic import atomic_write
from photocomp.core.convention import CONVENTION_TAG
from photocomp.core.crossbar import tree_structure
from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.ir import PhaseMap
from photocomp.core.validate import check_int

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["circuit_graph", "optical_path_mm", "export_graph", "to_sax_netlist", "export_netlist", "NETLIST_MODELS"]


class HasPhaseMap(Protocol):
    """A compiled program as this module reads it (a :class:`~photocomp.compiler.program.Program`)."""

    @property
    def phase_map(self) -> PhaseMap: ...


def _mesh(g, stage, mp, tile, last, x0):
    lay = mp.layout
    theta = np.asarray(mp.theta)[tile]
    phi = np.asarray(mp.phi)[tile]
    for i, (n, n2, c) in enumerate(zip(lay.pairs, lay.lower_array.tolist(), lay.columns)):
        node = f"{stage}:{c}:{n}"
        g.add_node(node, kind="mzi", stage=stage, column=int(c), mode=int(n), lower=int(n2),
                   theta=float(theta[i]), phi=float(phi[i]), x=float(x0 + c), y=(n + n2) / 2)
        for port, m in ((0, n), (1, n2)):
            src, sport = last[m]
            g.add_edge(src, node, mode=int(m), src_port=sport, dst_port=f"i{port}")
        last[n] = (node, "o0")
        last[n2] = (node, "o1")
    x = x0 + lay.depth
    out = np.asarray(mp.out_phase)[tile]
    for m in range(lay.n_modes):
        node = f"{stage}out:{m}"
        g.add_node(node, kind="phase", stage=stage, mode=m, phase=float(out[m]), x=float(x), y=float(m))
        src, sport = last[m]
        g.add_edge(src, node, mode=m, src_port=sport, dst_port="i")
        last[m] = (node, "o")
    return x + 1


def _tree_edges(k: int) -> tuple[list[tuple[int, str, int]], list[tuple[int, str, int]]]:
    """A ``k``-leaf splitter tree's internal edges ``(node, port, child node)`` and its leaf edges
    ``(node, port, leaf)``, from :func:`photocomp.core.crossbar.tree_structure`."""
    _, node, lower, valid = tree_structure(k)
    inner, leaves = set(), set()
    for leaf in range(k):
        path = [(int(n), "o1" if lw else "o0") for n, lw, ok in zip(node[leaf], lower[leaf], valid[leaf]) if ok]
        for (n, port), (child, _) in zip(path, path[1:]):
            inner.add((n, port, child))
        leaves.add((*path[-1], leaf))
    return sorted(inner), sorted(leaves)


def _crossbar(g, mp, tile, last) -> int:
    """A crossbar's fan-out trees, weight cells, fan-in trees and output phase references
    (:mod:`photocomp.core.crossbar`); returns the next free x."""
    k = mp.layout.n_modes
    theta = np.asarray(mp.theta)[tile]
    phi = np.asarray(mp.phi)[tile]
    out = np.asarray(mp.out_phase)[tile]
    alpha, node, _, valid = tree_structure(k)
    depth = node.shape[1]
    level = {0: 0}
    for leaf in range(k):
        for d in range(depth):
            if valid[leaf, d]:
                level[int(node[leaf, d])] = d
    inner, leaves = _tree_edges(k)
    span: dict[int, list[int]] = {}  # every tree node's leaves, for its y
    for leaf in range(k):
        for n, ok in zip(node[leaf], valid[leaf]):
            if ok:
                span.setdefault(int(n), []).append(leaf)
    x_cells = depth
    for j in range(k):  # fan-out of input j: leaf i feeds cell (i, j)
        for n in range(k - 1):
            y = float(np.mean([i + j / k for i in span[n]]))
            g.add_node(f"F:{j}:{n}", kind="splitter", input=j, alpha=float(alpha[n]), x=float(level[n]), y=y)
        if k > 1:
            src, sport = last[j]
            g.add_edge(src, f"F:{j}:0", mode=j, src_port=sport, dst_port="i")
        for n, port, child in inner:
            g.add_edge(f"F:{j}:{n}", f"F:{j}:{child}", mode=j, src_port=port, dst_port="i")
    for i in range(k):
        for j in range(k):
            c = i * k + j
            g.add_node(f"X:{i}:{j}", kind="weight", row=i, col=j, theta=float(theta[c]), phi=float(phi[c]),
                       x=float(x_cells), y=i + j / k)
    for j in range(k):
        if k > 1:
            for n, port, leaf in leaves:
                g.add_edge(f"F:{j}:{n}", f"X:{leaf}:{j}", mode=j, src_port=port, dst_port="i")
        else:
            src, sport = last[j]
            g.add_edge(src, f"X:0:{j}", mode=j, src_port=sport, dst_port="i")
    x_out = x_cells + depth + 1
    for i in range(k):  # fan-in of output i: leaf j gathers cell (i, j); the tree mirrored
        for n in range(k - 1):
            y = float(np.mean([i + j / k for j in span[n]]))
            g.add_node(f"C:{i}:{n}", kind="combiner", output=i, alpha=float(alpha[n]), x=float(x_cells + depth - level[n]),
                       y=y)
        for n, port, child in inner:
            g.add_edge(f"C:{i}:{child}", f"C:{i}:{n}", mode=i, src_port="o", dst_port="i" + port[1])
        for n, port, leaf in leaves:
            g.add_edge(f"X:{i}:{leaf}", f"C:{i}:{n}", mode=i, src_port="o", dst_port="i" + port[1])
        node_out = f"Uout:{i}"
        g.add_node(node_out, kind="phase", stage="U", mode=i, phase=float(out[i]), x=float(x_out), y=float(i))
        g.add_edge(f"C:{i}:0" if k > 1 else f"X:{i}:0", node_out, mode=i, src_port="o", dst_port="i")
        last[i] = (node_out, "o")
    return x_out + 1


def circuit_graph(phase_map: PhaseMap | HasPhaseMap, tile: int = 0) -> nx.DiGraph:
    """The circuit of one tile as a directed graph (see the module docstring).
    Args:
      phase_map: a :class:`~photocomp.core.ir.PhaseMap` or a :class:`~photocomp.compiler.program.Program`.
      tile: which tile's settings to attach (0 ... n_tiles - 1).

    Example:
      >>> import numpy as np, photocomp as pc
      >>> g = pc.circuit_graph(pc.compile(np.eye(3), target="clements-4"))
      >>> sum(1 for _, d in g.nodes(data=True) if d["kind"] == "mzi")
      12
    """
    pm = getattr(phase_map, "phase_map", phase_map)
    if not isinstance(pm, PhaseMap):
        raise InvalidTypeError(f"phase_map must be a PhaseMap or a Program; got {type(phase_map).__name__}")
    tile = check_int(tile, "tile", low=0)
    if tile >= pm.n_tiles:
        raise InvalidInputError(f"tile must be in [0, {pm.n_tiles - 1}]; got {tile}")
    k = pm.grid.tile
    import networkx as nx  # on first use: a compile needs no graph, and networkx takes ~0.2 s to import

    g = nx.DiGraph(tile=tile, n_tiles=pm.n_tiles, modes=k, mesh=pm.mesh_kind, circuit=pm.circuit)
    last = {}
    for m in range(k):
        g.add_node(f"in:{m}", kind="port_in", mode=m, x=-1.0, y=float(m))
        last[m] = (f"in:{m}", "o")
    x = 0
    if pm.u.layout.crossbar:
        x = _crossbar(g, pm.u, tile, last)
    elif pm.v is not None:
        x = _mesh(g, "V", pm.v, tile, last, 0)
        sigma = np.asarray(pm.sigma)[tile]
        for m in range(k):
            node = f"S:{m}"
            g.add_node(node, kind="attenuator", mode=m, sigma=float(sigma[m]),
                       transmission=float(np.cos(sigma[m]) ** 2), x=float(x), y=float(m))
            src, sport = last[m]
            g.add_edge(src, node, mode=m, src_port=sport, dst_port="i")
            last[m] = (node, "o")
        x += 1
    if not pm.u.layout.crossbar:
        x = _mesh(g, "U", pm.u, tile, last, x)
    for m in range(k):
        g.add_node(f"out:{m}", kind="port_out", mode=m, gain=float(np.asarray(pm.gain)[tile]), x=float(x), y=float(m))
        src, sport = last[m]
        g.add_edge(src, f"out:{m}", mode=m, src_port=sport, dst_port="i")
    return g


def optical_path_mm(graph: nx.DiGraph, column_pitch_um: float) -> float:
    """Length (mm) of the die a circuit graph spans along the light: its layout's column span times the pitch."""
    xs = [d["x"] for _, d in graph.nodes(data=True)]
    return (max(xs) - min(xs)) * column_pitch_um * 1e-3


def export_graph(graph: nx.DiGraph, path: str | os.PathLike) -> str:
    """Write ``graph`` as GraphML (``.graphml``) or node-link JSON (``.json``), atomically."""
    import networkx as nx

    if not isinstance(graph, nx.Graph):
        raise InvalidTypeError(f"graph must be a networkx graph; got {type(graph).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"path must be a file path; got {type(path).__name__}")
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".graphml", ".json"):
        raise InvalidInputError(f"path must end in .graphml or .json; got {path!r}")
    if ext == ".graphml":
        return atomic_write(path, lambda f: nx.write_graphml(graph, f))
    blob = json.dumps(nx.node_link_data(graph, edges="edges")).encode("utf-8")
    return atomic_write(path, lambda f: f.write(blob))


# ---- SAX netlist export ------------------------------------------------------------

NETLIST_FORMAT = "photocomp.netlist"

NETLIST_MODELS = {
    "mzi": {
        "inputs": ["i0", "i1"],
        "outputs": ["o0", "o1"],
        "settings": {"theta": "rad", "phi": "rad"},
        "transfer": "[o0, o1] = [[exp(i phi) cos(theta), -sin(theta)], [exp(i phi) sin(theta), cos(theta)]] @ [i0, i1]",
    },
    "phase_shifter": {
        "inputs": ["i"],
        "outputs": ["o"],
        "settings": {"phase": "rad"},
        "transfer": "o = exp(i phase) i",
    },
    "attenuator": {
        "inputs": ["i"],
        "outputs": ["o"],
        "settings": {"sigma": "rad"},
        "transfer": "o = cos(sigma) i",
    },
    "splitter": {
        "inputs": ["i"],
        "outputs": ["o0", "o1"],
        "settings": {"alpha": "rad"},
        "transfer": "[o0, o1] = [cos(alpha), sin(alpha)] i (a Y-junction of a crossbar's fan-out tree)",
    },
    "combiner": {
        "inputs": ["i0", "i1"],
        "outputs": ["o"],
        "settings": {"alpha": "rad"},
        "transfer": "o = cos(alpha) i0 + sin(alpha) i1 (a splitter run backwards; the rest radiates)",
    },
    "weight": {
        "inputs": ["i"],
        "outputs": ["o"],
        "settings": {"theta": "rad", "phi": "rad"},
        "transfer": "o = exp(i phi) cos(theta) i (a crossbar's weight MZI, upper input to upper output)",
    },
    "gain": {
        "inputs": ["i"],
        "outputs": ["o"],
        "settings": {"gain": "dimensionless"},
        "transfer": "o = gain i (electronic gain of the read-out)",
    },
}
"""Component models a netlist refers to: ports, settings (units) and transfer function.

Transmission only runs from inputs to outputs (no reflections); in SAX terms
``S[(input, output)]`` is the transfer coefficient and every other entry is 0.
"""

_COMPONENT = {"mzi": "mzi", "phase": "phase_shifter", "attenuator": "attenuator", "port_out": "gain",
              "splitter": "splitter", "combiner": "combiner", "weight": "weight"}


def _instance(node: str, d: dict) -> str:
    if d["kind"] == "port_out":
        return f"gain_{d['mode']}"
    return node.replace(":", "_")


def to_sax_netlist(program: PhaseMap | HasPhaseMap, tile: int = 0) -> dict:
    """The circuit of one tile as a SAX flat netlist (a JSON-ready dict).
    One instance per MZI (``theta``, ``phi`` in rad, the convention of
    :mod:`photocomp.core.convention`), output phase shifter (``phase``, rad),
    attenuator (``sigma``, rad; amplitude ``cos(sigma)``) and output gain
    (``gain``), named after the circuit graph's nodes (``V_c_n`` for ``V:c:n``,
    ``Vout_m``, ``S_m``, ``U_c_n``, ``Uout_m``, ``gain_m``). External ports are
    ``in0 ... in{K-1}`` and ``out0 ... out{K-1}``; the netlist's transfer from
    ``in j`` to ``out i`` is entry (i, j) of the tile's matrix
    ``gain U diag(cos sigma) V^H`` (a unitary program: ``gain U``, no ``V`` or ``S`` instances). The netlist describes the ideal circuit
    of the compiled phase map (a calibrated program's chip errors are not in it).

    Args:
      program: a :class:`~photocomp.compiler.program.Program` (then ``"placements"``
        carry the layout in um from the target's pitches) or a
        :class:`~photocomp.core.ir.PhaseMap` (no placements).
      tile: which tile's settings (0 ... n_tiles - 1).

    Returns:
      ``{"instances", "connections", "ports", "models", "info"[, "placements"]}``.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> net = to_sax_netlist(pc.compile(np.eye(3), target="clements-4"))
      >>> sum(i["component"] == "mzi" for i in net["instances"].values())
      12
    """
    g = circuit_graph(program, tile)
    target = getattr(program, "target", None)
    instances, connections, ports, placements = {}, {}, {}, {}
    for node, d in g.nodes(data=True):
        kind = d["kind"]
        if kind == "port_in":
            continue
        name = _instance(node, d)
        if kind in ("mzi", "weight"):
            settings = {"theta": d["theta"], "phi": d["phi"]}
        elif kind in ("splitter", "combiner"):
            settings = {"alpha": d["alpha"]}
        elif kind == "phase":
            settings = {"phase": d["phase"]}
        elif kind == "attenuator":
            settings = {"sigma": d["sigma"]}
        else:
            settings = {"gain": d["gain"]}
        instances[name] = {"component": _COMPONENT[kind], "settings": settings}
        if target is not None:
            placements[name] = {"x": d["x"] * target.column_pitch_um, "y": d["y"] * target.mode_pitch_um,
                                "rotation": 0, "mirror": False}
    for u, v, e in g.edges(data=True):
        du, dv = g.nodes[u], g.nodes[v]
        dst = f"{_instance(v, dv)},{e['dst_port']}"
        if du["kind"] == "port_in":
            ports[f"in{du['mode']}"] = dst
        else:
            connections[f"{_instance(u, du)},{e['src_port']}"] = dst
    k = g.graph["modes"]
    ports = {f"in{m}": ports[f"in{m}"] for m in range(k)}
    ports.update({f"out{m}": f"gain_{m},o" for m in range(k)})

    net = {
        "instances": instances,
        "connections": connections,
        "ports": ports,
        "models": NETLIST_MODELS,
        "info": {
            "format": NETLIST_FORMAT,
            "convention": CONVENTION_TAG,
            "mesh": g.graph["mesh"],
            "circuit": g.graph["circuit"],
            "modes": k,
            "tile": g.graph["tile"],
            "n_tiles": g.graph["n_tiles"],
            "target": None if target is None else target.name,
            "placement_units": None if target is None else "um",
        },
    }
    if target is not None:
        net["placements"] = placements
    return net


def export_netlist(program: PhaseMap | HasPhaseMap, path: str | os.PathLike, tile: int = 0) -> str:
    """Write :func:`to_sax_netlist` of ``program`` (tile ``tile``) as JSON to ``path`` (``.json``), atomically."""
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"path must be a file path (str or os.PathLike); got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() != ".json":
        raise InvalidInputError(f"path must end in .json; got {path!r}")
    blob = json.dumps(to_sax_netlist(program, tile), indent=1).encode("utf-8")
    return atomic_write(path, lambda f: f.write(blob))
