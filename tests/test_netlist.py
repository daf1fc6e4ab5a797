"""SAX netlist export: schema, an independent JSON-netlist simulation, SAX itself (when installed), CLI."""

import functools
import json

import jax
import numpy as np
import pytest
from conftest import random_matrix

import photocomp as pc
from photocomp.cli import main
from photocomp.core.graph import NETLIST_MODELS, export_netlist, to_sax_netlist

ATOL = 1e-12
EXACT = "tile | svd | {mesh} | canonicalize | lower"


@functools.cache
def _compile(shape, target, seed=11):
    """Compiled once per module run (programs are not mutated by these tests)."""
    w = random_matrix(np.random.default_rng(seed), shape, "complex")
    return pc.compile(w, target=target, pipeline=EXACT.format(mesh=target.split("-")[0]))


def _transfer(inst: dict) -> dict:
    """{(input port, output port): coefficient}, written out from the models' documented transfer functions."""
    s = inst["settings"]
    comp = inst["component"]
    if comp == "mzi":
        c, sn, e = np.cos(s["theta"]), np.sin(s["theta"]), np.exp(1j * s["phi"])
        return {("i0", "o0"): e * c, ("i1", "o0"): -sn, ("i0", "o1"): e * sn, ("i1", "o1"): c}
    if comp == "phase_shifter":
        return {("i", "o"): np.exp(1j * s["phase"])}
    if comp == "attenuator":
        return {("i", "o"): np.cos(s["sigma"])}
    if comp == "gain":
        return {("i", "o"): s["gain"]}
    raise AssertionError(f"unknown component {comp!r}")


def simulate_json_netlist(net: dict) -> np.ndarray:
    """Transfer matrix out_i <- in_j of a JSON netlist, by propagating each basis input (numpy only)."""
    src = {dst: s for s, dst in net["connections"].items()}  # instance input -> driving instance output
    ext_in = {v: k for k, v in net["ports"].items() if k.startswith("in")}
    n_in = sum(k.startswith("in") for k in net["ports"])
    n_out = sum(k.startswith("out") for k in net["ports"])
    transfers = {name: _transfer(inst) for name, inst in net["instances"].items()}
    result = np.zeros((n_out, n_in), dtype=complex)
    for j in range(n_in):
        memo = {}

        def field_in(ref):  # field arriving at "inst,port"
            if ref in ext_in:
                return 1.0 + 0j if ext_in[ref] == f"in{j}" else 0j
            return field_out(src[ref])

        def field_out(ref):  # field leaving "inst,port"
            if ref not in memo:
                name, port = ref.split(",")
                memo[ref] = sum(t * field_in(f"{name},{pi}") for (pi, po), t in transfers[name].items() if po == port)
            return memo[ref]

        for i in range(n_out):
            result[i, j] = field_out(net["ports"][f"out{i}"])
    return result


def _round_trip(net):
    return json.loads(json.dumps(net))


# ---- structure ------------------------------------------------------------------------------------


def test_schema_and_counts():
    prog = _compile((4, 3), "clements-4")
    net = to_sax_netlist(prog)
    assert set(net) == {"instances", "connections", "ports", "models", "info", "placements"}
    comps = [i["component"] for i in net["instances"].values()]
    assert comps.count("mzi") == 2 * 4 * 3 // 2
    assert comps.count("phase_shifter") == 2 * 4
    assert comps.count("attenuator") == comps.count("gain") == 4
    assert list(net["ports"]) == [f"in{m}" for m in range(4)] + [f"out{m}" for m in range(4)]
    # every model is listed; a mesh program uses all but the crossbar's
    assert set(comps) == set(NETLIST_MODELS) - {"splitter", "combiner", "weight"} and net["models"] == NETLIST_MODELS
    assert net["info"]["convention"] == pc.convention.CONVENTION_TAG and net["info"]["tile"] == 0
    # every instance input is driven exactly once, every output drives exactly one input or an external port
    inputs = [f"{n},{p}" for n, i in net["instances"].items() for p in NETLIST_MODELS[i["component"]]["inputs"]]
    outputs = [f"{n},{p}" for n, i in net["instances"].items() for p in NETLIST_MODELS[i["component"]]["outputs"]]
    driven = list(net["connections"].values()) + [v for k, v in net["ports"].items() if k.startswith("in")]
    assert sorted(driven) == sorted(inputs)
    driving = list(net["connections"]) + [v for k, v in net["ports"].items() if k.startswith("out")]
    assert sorted(driving) == sorted(outputs)
    # instance and port names are identifiers, as SAX requires
    for ref in list(net["connections"]) + list(net["connections"].values()) + list(net["ports"].values()):
        inst, port = ref.split(",")
        assert inst.isidentifier() and port.isidentifier()
    # placements in um from the target's pitches
    t = prog.target
    assert net["placements"]["V_0_0"] == {"x": 0.0, "y": 0.5 * t.mode_pitch_um, "rotation": 0, "mirror": False}
    assert net["info"]["placement_units"] == "um"


def test_phase_map_without_target_has_no_placements():
    prog = _compile((5, 5), "clements-5")
    net = to_sax_netlist(prog.phase_map)
    assert "placements" not in net and net["info"]["target"] is None


def test_settings_follow_the_phase_map():
    prog = _compile((5, 5), "clements-5")
    pm = prog.phase_map
    net = to_sax_netlist(prog)
    lay = pm.v.layout
    for i, (n, c) in enumerate(zip(lay.pairs, lay.columns)):
        assert net["instances"][f"U_{c}_{n}"]["settings"] == {"theta": pm.u.theta[0, i], "phi": pm.u.phi[0, i]}
    for m in range(5):
        assert net["instances"][f"S_{m}"]["settings"]["sigma"] == pm.sigma[0, m]
        assert net["instances"][f"Vout_{m}"]["settings"]["phase"] == pm.v.out_phase[0, m]
        assert net["instances"][f"gain_{m}"]["settings"]["gain"] == pm.gain[0]


# ---- simulation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target, shape", [("clements-4", (4, 3)), ("clements-5", (5, 5)), ("reck-4", (2, 4))])
def test_json_netlist_simulation_matches_program_matrix(tmp_path, target, shape):
    prog = _compile(shape, target)
    assert prog.n_tiles == 1
    path = export_netlist(prog, tmp_path / "net.json")
    net = json.loads(open(path).read())
    got = simulate_json_netlist(net)
    m, n = prog.shape
    np.testing.assert_allclose(got[:m, :n], prog.matrix(), atol=ATOL, rtol=0)
    from photocomp.sim.ideal import tile_matrices

    with jax.enable_x64(True):  # the whole K x K core, padding included
        np.testing.assert_allclose(got, np.asarray(tile_matrices(prog.phase_map))[0], atol=ATOL, rtol=0)


def test_tiles_assemble_to_program_matrix():
    prog = _compile((6, 5), "clements-4", seed=12)
    assert prog.n_tiles == 4
    blocks = [simulate_json_netlist(_round_trip(to_sax_netlist(prog, tile=t))) for t in range(prog.n_tiles)]
    np.testing.assert_allclose(prog.phase_map.grid.join(np.stack(blocks)), prog.matrix(), atol=ATOL, rtol=0)


def test_sax_simulates_the_exported_netlist(tmp_path):
    sax = pytest.importorskip("sax")
    import jax.numpy as jnp

    def mzi(wl=1.55, theta=0.0, phi=0.0):
        c, s, e = jnp.cos(theta), jnp.sin(theta), jnp.exp(1j * phi)
        return {("i0", "o0"): e * c, ("i1", "o0"): -s + 0j, ("i0", "o1"): e * s, ("i1", "o1"): c + 0j}

    def phase_shifter(wl=1.55, phase=0.0):
        return {("i", "o"): jnp.exp(1j * phase)}

    def attenuator(wl=1.55, sigma=0.0):
        return {("i", "o"): jnp.cos(sigma) + 0j}

    def gain(wl=1.55, gain=1.0):
        return {("i", "o"): gain + 0j}

    prog = _compile((4, 3), "clements-4")
    net = json.loads(open(export_netlist(prog, tmp_path / "net.json")).read())
    with jax.enable_x64(True):
        circuit, _ = sax.circuit(netlist=net, models={"mzi": mzi, "phase_shifter": phase_shifter,
                                                      "attenuator": attenuator, "gain": gain})
        s = circuit()
        got = np.array([[complex(s[(f"in{j}", f"out{i}")]) for j in range(4)] for i in range(4)])
    m, n = prog.shape
    np.testing.assert_allclose(got[:m, :n], prog.matrix(), atol=ATOL, rtol=0)


# ---- errors and CLI ----------------------------------------------------------------------------------


def test_bad_input(tmp_path):
    prog = _compile((2, 2), "clements-2")
    with pytest.raises(pc.InvalidInputError, match="tile must be in"):
        to_sax_netlist(prog, tile=1)
    with pytest.raises(pc.InvalidTypeError, match="phase_map must be a PhaseMap or a Program"):
        to_sax_netlist(np.eye(2))
    with pytest.raises(pc.InvalidInputError, match=r"path must end in \.json"):
        export_netlist(prog, tmp_path / "n.graphml")
    with pytest.raises(pc.InvalidTypeError, match="path must be a file path"):
        export_netlist(prog, 3)
    with pytest.raises(pc.PhaseMapFileError, match="folder must exist"):
        export_netlist(prog, tmp_path / "no" / "n.json")
    assert list(tmp_path.iterdir()) == []


def test_cli_inspect_netlist(capsys, tmp_path):
    prog = _compile((4, 3), "clements-4")
    f = prog.save(tmp_path / "p.phases.npz")
    out_file = tmp_path / "net.json"
    assert main(["inspect", str(f), "--netlist", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {out_file}" in out
    got = simulate_json_netlist(json.loads(out_file.read_text()))
    np.testing.assert_allclose(got[:4, :3], prog.matrix(), atol=ATOL, rtol=0)


def test_cli_inspect_netlist_bad_path(capsys, tmp_path):
    f = _compile((2, 2), "clements-2").save(tmp_path / "p.phases.npz")
    code = main(["inspect", str(f), "--netlist", str(tmp_path / "net.txt")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("photocomp: error: --netlist must end in .json")
    assert not (tmp_path / "net.txt").exists()
