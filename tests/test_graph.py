"""The networkx circuit view: structure, export, and an independent netlist simulation."""

import subprocess
import sys

import networkx as nx
import numpy as np
import pytest

import photocomp as pc

ATOL = 1e-12


def _simulate_netlist(g: nx.DiGraph) -> np.ndarray:
    """Propagate each basis input through the graph in topological order (independent of simulate.py)."""
    k = g.graph["modes"]
    cols = []
    for j in range(k):
        field = {}  # (node, out_port) -> amplitude
        for node in nx.topological_sort(g):
            d = g.nodes[node]
            ins = {g.edges[u, node]["dst_port"]: field[(u, g.edges[u, node]["src_port"])] for u in g.predecessors(node)}
            if d["kind"] == "port_in":
                field[(node, "o")] = 1.0 + 0j if d["mode"] == j else 0j
            elif d["kind"] == "mzi":
                c, s, e = np.cos(d["theta"]), np.sin(d["theta"]), np.exp(1j * d["phi"])
                t = np.array([[e * c, -s], [e * s, c]])  # docs/design.md, written out independently
                a = t @ np.array([ins["i0"], ins["i1"]])
                field[(node, "o0")], field[(node, "o1")] = a[0], a[1]
            elif d["kind"] == "phase":
                field[(node, "o")] = np.exp(1j * d["phase"]) * ins["i"]
            elif d["kind"] == "attenuator":
                field[(node, "o")] = np.cos(d["sigma"]) * ins["i"]
            elif d["kind"] == "port_out":
                field[(node, "y")] = d["gain"] * ins["i"]
        cols.append([field[(f"out:{m}", "y")] for m in range(k)])
    return np.array(cols).T


@pytest.mark.parametrize("target", ["clements-5", "reck-4"])
def test_netlist_simulation_matches_program(target):
    w = np.random.default_rng(3).normal(size=(7, 4)) + 1j * np.random.default_rng(4).normal(size=(7, 4))
    prog = pc.compile(w, target=target, pipeline=f"tile | svd | {target.split('-')[0]} | canonicalize | lower")
    import jax

    from photocomp.sim.ideal import tile_matrices

    with jax.enable_x64(True):
        tiles = np.asarray(tile_matrices(prog.phase_map))
    for t in range(prog.n_tiles):
        got = _simulate_netlist(prog.graph(tile=t))
        np.testing.assert_allclose(got, tiles[t], atol=ATOL, rtol=0)


def test_graph_structure_counts():
    prog = pc.compile(np.eye(6), target="clements-6", pipeline="tile | svd | clements | lower")
    g = prog.graph()
    kinds = [d["kind"] for _, d in g.nodes(data=True)]
    assert kinds.count("mzi") == 2 * 15
    assert kinds.count("attenuator") == 6
    assert kinds.count("port_in") == kinds.count("port_out") == 6
    assert nx.is_directed_acyclic_graph(g)
    # two waveguides into and out of every MZI
    for n, d in g.nodes(data=True):
        if d["kind"] == "mzi":
            assert g.in_degree(n) == 2 and g.out_degree(n) == 2


def test_export_round_trip(tmp_path):
    prog = pc.compile(np.ones((3, 3)), target="clements-3", pipeline="tile | svd | clements | lower")
    g = prog.graph()
    p1 = pc.export_graph(g, tmp_path / "c.graphml")
    p2 = pc.export_graph(g, tmp_path / "c.json")
    back = nx.read_graphml(p1)
    assert set(back.nodes) == set(g.nodes)
    assert back.number_of_edges() == g.number_of_edges()
    import json

    data = json.loads(open(p2).read())
    assert len(data["nodes"]) == g.number_of_nodes()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.graphml", "c.json"]


def test_graph_bad_input(tmp_path):
    prog = pc.compile(np.ones((2, 2)), target="clements-2", pipeline="tile | svd | clements | lower")
    with pytest.raises(pc.InvalidInputError, match="tile"):
        prog.graph(tile=1)
    with pytest.raises(pc.InvalidTypeError, match="phase_map"):
        pc.circuit_graph(np.eye(2))
    with pytest.raises(pc.InvalidInputError, match="path"):
        pc.export_graph(prog.graph(), tmp_path / "c.txt")


def test_networkx_is_imported_on_first_use():
    """A compile needs no circuit graph: ``import photocomp`` leaves networkx (about 0.2 s) for the first graph."""
    code = ("import sys, photocomp, photocomp.core.graph, photocomp.compiler.program; "
            "print('networkx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
