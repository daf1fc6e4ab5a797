"""photocomp.compile_model: every kind of model compiles, each compiled layer equals its digital layer,
the layout conventions are the frameworks' own, the .pcm file round-trips and refuses tampering,
the report equals photocomp.cost per layer, and bad models are refused naming the layer.

Digital references are float64 NumPy written here from each framework's documented convention (and,
where the framework is installed, the framework's own output: Equinox, onnx.reference).
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import photocomp as pc

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TARGET = "clements-8"
EXACT = "validate | tile | svd | clements | canonicalize | lower"  # no DAC rounding: the layers are exact
# Relative error of an exact compile's layer against float64 NumPy (measured: below 1e-13 on clements-8;
# the decomposition's rounding, about 1e-15 per MZI, over the meshes).
EXACT_RTOL = 1e-9


def rel_err(y, ref) -> float:
    return float(np.abs(np.asarray(y) - ref).max() / np.abs(ref).max())


def conv_ref(x, k, b, stride=(1, 1), pads=(0, 0, 0, 0)):
    """Cross-correlation of one (C, H, W) example with an (O, C, kh, kw) kernel, by loops (float64)."""
    t, l, bo, r = pads
    xp = np.pad(x, ((0, 0), (t, bo), (l, r)))
    o, c, kh, kw = k.shape
    oh = (xp.shape[1] - kh) // stride[0] + 1
    ow = (xp.shape[2] - kw) // stride[1] + 1
    y = np.zeros((o, oh, ow))
    for p in range(oh):
        for q in range(ow):
            patch = xp[:, p * stride[0]: p * stride[0] + kh, q * stride[1]: q * stride[1] + kw]
            y[:, p, q] = np.tensordot(k, patch, axes=3)
    return y + (0 if b is None else b[:, None, None])


# ---- models built here ----------------------------------------------------------------------------------


def onnx_chain(path, seed=0):
    """A float64 ONNX chain: Conv(2->3, 3x3, stride 2, pad 1) -> Relu -> Flatten -> Gemm(27->4, transB) -> Relu
    -> MatMul(4->3) -> Add -> Softmax. Returns the weights."""
    rng = np.random.default_rng(seed)
    w = {"conv.weight": rng.normal(size=(3, 2, 3, 3)), "conv.bias": rng.normal(size=3),
         "fc.weight": rng.normal(size=(4, 27)), "fc.bias": rng.normal(size=4),
         "head.w": rng.normal(size=(4, 3)), "head.b": rng.normal(size=3)}
    inits = [numpy_helper.from_array(v, name=k) for k, v in w.items()]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], name="conv", pads=[1, 1, 1, 1],
                         strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["c_relu"], name="relu0"),
        helper.make_node("Flatten", ["c_relu"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["h"], name="fc", transB=1),
        helper.make_node("Relu", ["h"], ["h_relu"], name="relu1"),
        helper.make_node("MatMul", ["h_relu", "head.w"], ["z0"], name="head"),
        helper.make_node("Add", ["z0", "head.b"], ["z"], name="head_bias"),
        helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 2, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return w


def onnx_with(path, node, inits=(), name="bad"):
    """A one-node ONNX graph x -> node -> y."""
    graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def state_dict(seed=1):
    rng = np.random.default_rng(seed)
    return {"fc1.weight": rng.normal(size=(5, 6)), "fc1.bias": rng.normal(size=5),
            "bn.weight": np.ones(5), "bn.bias": np.zeros(5), "bn.running_mean": np.zeros(5),
            "fc2.weight": rng.normal(size=(3, 5)), "fc2.bias": rng.normal(size=3)}


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "chain.onnx"
    return path, onnx_chain(path)


@pytest.fixture(scope="module")
def onnx_model(onnx_file):
    return pc.compile_model(onnx_file[0], target=TARGET, pipeline=EXACT)


# ---- each kind of model ---------------------------------------------------------------------------------


def test_flax_params_tree_layers_and_chain_equal_the_digital_model():
    rng = np.random.default_rng(2)
    k0, b0, k1, b1 = rng.normal(size=(6, 5)), rng.normal(size=5), rng.normal(size=(5, 3)), rng.normal(size=3)
    variables = {"params": {"Dense_0": {"kernel": k0, "bias": b0}, "Dense_1": {"kernel": k1, "bias": b1}},
                 "batch_stats": {"x": np.zeros(2)}}
    m = pc.compile_model(variables, target=TARGET, pipeline=EXACT, activations={"Dense_0": "relu", "Dense_1": None})
    assert m.names == ["Dense_0", "Dense_1"] and m.source == "params" and m.sequential
    assert [la.shape for la in m] == [(5, 6), (3, 5)]
    assert any("batch_stats" in s for s in m.skipped)
    x = rng.normal(size=(4, 6))  # a batch
    assert rel_err(m["Dense_0"].forward(x), x @ k0 + b0) < EXACT_RTOL  # Flax: y = x @ kernel + bias
    assert rel_err(m.forward(x), np.maximum(x @ k0 + b0, 0) @ k1 + b1) < EXACT_RTOL
    assert rel_err(m.forward(x[0]), np.maximum(x[0] @ k0 + b0, 0) @ k1 + b1) < EXACT_RTOL


def test_conventions_flax_in_out_and_torch_out_in():
    """One square, non-symmetric matrix K: as a Flax kernel the layer is x @ K, as a torch weight it is K @ x;
    the two differ, so a reader that transposed the wrong one would fail here."""
    rng = np.random.default_rng(3)
    k = rng.normal(size=(5, 5))
    x = rng.normal(size=5)
    assert np.linalg.norm(x @ k - k @ x) > 0.5 * np.linalg.norm(k @ x)
    flax = pc.compile_model({"dense": {"kernel": k}}, target=TARGET, pipeline=EXACT)["dense"]
    torch = pc.compile_model({"linear.weight": k}, target=TARGET, pipeline=EXACT)["linear"]
    assert rel_err(flax.forward(x), x @ k) < EXACT_RTOL
    assert rel_err(torch.forward(x), k @ x) < EXACT_RTOL
    assert np.abs(flax.weights() - k.T).max() < 1e-9 and np.abs(torch.weights() - k).max() < 1e-9
    assert "transposed" in flax.source_layout and torch.source_layout == "weight (out, in)"


def test_convolutions_by_im2col_flax_and_torch_layouts():
    rng = np.random.default_rng(4)
    k = rng.normal(size=(3, 2, 3, 3))  # OIHW
    b = rng.normal(size=3)
    x = rng.normal(size=(2, 6, 5))  # CHW
    torch = pc.compile_model({"conv": {"weight": k, "bias": b}}, target=TARGET, pipeline=EXACT,
                             conv={"conv": {"stride": 2, "padding": 1}})["conv"]
    assert torch.shape == (3, 18) and torch.kind == "conv"
    assert rel_err(torch.forward(x), conv_ref(x, k, b, (2, 2), (1, 1, 1, 1))) < EXACT_RTOL
    # Flax: kernel (kh, kw, in, out), data (H, W, C), "SAME" padding by default
    flax = pc.compile_model({"Conv_0": {"kernel": k.transpose(2, 3, 1, 0), "bias": b}}, target=TARGET,
                            pipeline=EXACT)["Conv_0"]
    y = flax.forward(x.transpose(1, 2, 0))
    assert y.shape == (6, 5, 3)
    assert rel_err(y, conv_ref(x, k, b, (1, 1), (1, 1, 1, 1)).transpose(1, 2, 0)) < EXACT_RTOL
    batch = np.stack([x, 2 * x])
    assert rel_err(torch.forward(batch)[1], 2 * conv_ref(x, k, 0 * b, (2, 2), (1, 1, 1, 1)) + b[:, None, None]) < EXACT_RTOL


def test_equinox_mlp_and_conv_equal_equinox():
    eqx = pytest.importorskip("equinox")
    import jax

    mlp = eqx.nn.MLP(6, 3, 5, 2, activation=jax.nn.relu, key=jax.random.key(0))
    m = pc.compile_model(mlp, target=TARGET, pipeline=EXACT)
    assert m.source == "equinox" and m.sequential and len(m) == 3
    assert [la.activation for la in m] == ["relu", "relu", None]
    x = np.random.default_rng(5).normal(size=6)
    ref = np.asarray(mlp(x.astype(np.float32)), dtype=np.float64)
    assert rel_err(m.forward(x), ref) < 1e-5  # Equinox computes in float32
    w0, b0 = np.asarray(mlp.layers[0].weight, np.float64), np.asarray(mlp.layers[0].bias, np.float64)
    assert rel_err(m[0].forward(x), w0 @ x + b0) < EXACT_RTOL  # eqx.nn.Linear: weight (out, in)

    seq = eqx.nn.Sequential([eqx.nn.Conv2d(2, 3, 3, stride=2, padding=1, key=jax.random.key(1)),
                             eqx.nn.Lambda(jax.nn.gelu)])
    s = pc.compile_model(seq, target=TARGET, pipeline=EXACT)
    assert s.sequential and s[0].activation == "gelu_tanh"  # jax.nn.gelu is the tanh form by default
    xc = np.random.default_rng(6).normal(size=(2, 5, 5))
    assert rel_err(s.forward(xc), np.asarray(seq(xc.astype(np.float32)), dtype=np.float64)) < 1e-5


def test_safetensors_state_dict(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    sd = state_dict()
    sd["layers.10.weight"], sd["layers.2.weight"] = np.eye(3), 2 * np.eye(3)
    path = tmp_path / "model.safetensors"
    st.save_file(sd, str(path))
    m = pc.compile_model(path, target=TARGET, pipeline=EXACT)
    assert m.names == ["fc1", "fc2", "layers.2", "layers.10"]  # natural order of the names
    assert m.source == "safetensors" and not m.sequential
    assert any(s.startswith("bn.weight") for s in m.skipped)
    x = np.random.default_rng(7).normal(size=6)
    assert rel_err(m["fc1"].forward(x), sd["fc1.weight"] @ x + sd["fc1.bias"]) < EXACT_RTOL
    # bfloat16 tensors (ml_dtypes) read as float64
    import ml_dtypes

    st.save_file({"fc.weight": sd["fc2.weight"].astype(ml_dtypes.bfloat16)}, str(tmp_path / "bf16.safetensors"))
    bf = pc.compile_model(tmp_path / "bf16.safetensors", target=TARGET, pipeline=EXACT)
    ref = sd["fc2.weight"].astype(ml_dtypes.bfloat16).astype(np.float64)
    assert rel_err(bf[0].forward(np.ones(5)), ref @ np.ones(5)) < EXACT_RTOL


def test_onnx_chain_equals_the_onnx_reference(onnx_file, onnx_model):
    path, w = onnx_file
    m = onnx_model
    assert m.source == "onnx" and m.sequential
    assert m.names == ["conv", "fc", "head"]
    assert [la.activation for la in m] == ["relu", "relu", "softmax"]
    assert [la.shape for la in m] == [(3, 18), (4, 27), (3, 4)]
    assert m["conv"].positions == 9  # from the graph's shapes: a 3x3 output
    x = np.random.default_rng(8).normal(size=(1, 2, 5, 5))
    from onnx.reference import ReferenceEvaluator

    (ref,) = ReferenceEvaluator(onnx.load(str(path))).run(None, {"x": x})
    assert rel_err(m.forward(x[0]), ref[0]) < EXACT_RTOL
    assert rel_err(m.forward(x), ref) < EXACT_RTOL
    assert rel_err(m["conv"].forward(x[0]), conv_ref(x[0], w["conv.weight"], w["conv.bias"], (2, 2), (1, 1, 1, 1))) < EXACT_RTOL
    h = np.random.default_rng(9).normal(size=4)
    assert rel_err(m["head"].forward(h), h @ w["head.w"] + w["head.b"]) < EXACT_RTOL  # MatMul: x @ B, Add folded


def test_default_pipeline_error_is_bounded_by_the_reported_error():
    """With the target's DAC rounding, |W_hat x - W x| <= matrix_error ||W||_F ||x|| (Cauchy-Schwarz)."""
    rng = np.random.default_rng(10)
    w = rng.normal(size=(5, 7))
    layer = pc.compile_model({"fc.weight": w}, target=TARGET)["fc"]
    err = layer.program.report.summary["matrix_error"]
    assert 0 < err < 0.05
    for x in rng.normal(size=(5, 7)):
        assert np.linalg.norm(layer.forward(x) - w @ x) <= err * np.linalg.norm(w) * np.linalg.norm(x) * (1 + 1e-9)


# ---- report ----------------------------------------------------------------------------------------------


def test_report_equals_cost_per_layer(onnx_model):
    r = onnx_model.report
    assert [lr.name for lr in r.layers] == onnx_model.names
    for layer, lr in zip(onnx_model, r.layers):
        c = pc.cost(layer.program, batch=lr.vectors)
        assert (lr.tiles, lr.mzis, lr.phase_settings, lr.depth) == (c.n_tiles, c.mzi_settings, c.phase_settings, c.depth)
        assert (lr.latency_cycles, lr.settle_cycles, lr.optical_latency_cycles) == (
            c.latency_cycles, c.settle_cycles, c.optical_latency_cycles)
        assert lr.latency_ns == pytest.approx(c.latency_ns, rel=1e-12)
        assert lr.heater_power_mw == pytest.approx(c.heater_power_mw, rel=1e-9)
        assert lr.heater_power_max_mw == pytest.approx(c.heater_power_max_mw, rel=1e-9)
        assert lr.matrix_error == c.matrix_error
    assert r.layers[0].vectors == 9  # one vector per output position of the convolution
    assert r.tiles == sum(la.program.n_tiles for la in onnx_model)
    assert r.latency_cycles == sum(lr.latency_cycles for lr in r.layers)
    assert r.heater_power_mw == pytest.approx(r.heater_energy_nj * 1e3 / r.latency_ns)
    assert r.matrix_error_max < 1e-12  # the exact pipeline
    table = r.table()
    assert "conv" in table and "total" in table
    json.dumps(r.as_dict())  # plain JSON


# ---- files -----------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(onnx_model, tmp_path):
    path = onnx_model.save(tmp_path / "m.pcm")
    again = pc.load_model(path)
    assert again.names == onnx_model.names and again.sequential and again.source == "onnx"
    assert again.target == onnx_model.target
    x = np.random.default_rng(11).normal(size=(2, 5, 5))
    # the phase maps are stored exactly; the folded matrix is re-simulated on load (a multi-tile program's
    # differs from the compile's in the last bit: measured 4e-16)
    assert rel_err(again.forward(x), onnx_model.forward(x)) < 1e-13
    for a, b in zip(again, onnx_model):
        for f in ("theta", "phi", "out_phase"):
            assert np.array_equal(getattr(a.program.phase_map.u, f), getattr(b.program.phase_map.u, f))
        assert np.array_equal(a.program.phase_map.gain, b.program.phase_map.gain)
    for a, b in zip(again, onnx_model):
        assert (a.activation, a.conv, a.positions, a.source_shape, a.source_layout) == (
            b.activation, b.conv, b.positions, b.source_shape, b.source_layout)
        assert np.array_equal(a.bias, b.bias)
    with zipfile.ZipFile(path) as zf:
        names = sorted(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
    assert names == ["layers/0000.bias.npy", "layers/0000.phases.npz", "layers/0001.bias.npy",
                     "layers/0001.phases.npz", "layers/0002.bias.npy", "layers/0002.phases.npz", "manifest.json"]
    assert manifest["format"] == "photocomp.model" and manifest["format_version"] == 1
    assert [la["name"] for la in manifest["layers"]] == onnx_model.names
    assert manifest["layers"][1]["source_layout"].startswith("Gemm B (out, in)")


def _rewrite(src, dst, change):
    """Copy the archive ``src`` to ``dst`` with ``change(name, data) -> data or None (drop)`` applied."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = change(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)


def _resign(manifest: dict) -> bytes:
    from photocomp.models.archive import digest

    manifest["sha256"] = digest(manifest)
    return json.dumps(manifest).encode()


@pytest.mark.parametrize("case, match", [
    ("manifest", "manifest's sha256 does not match"),
    ("member", "does not match its sha256"),
    ("bias", "does not match its sha256"),
    ("extra", "must be exactly those the manifest names"),
    ("missing", "must be exactly those the manifest names"),
    ("shape", "its matrix is 3x18"),
    ("version", "format_version must be 1"),
    ("not_zip", "not a photocomp model file"),
])
def test_tampered_files_are_refused(onnx_model, tmp_path, case, match):
    good = onnx_model.save(tmp_path / "good.pcm")
    bad = tmp_path / "bad.pcm"

    def change(name, data):
        if name == "manifest.json":
            m = json.loads(data)
            if case == "manifest":
                m["layers"][0]["activation"] = "tanh"
                return json.dumps(m).encode()
            if case == "shape":
                m["layers"][0]["matrix_shape"] = [3, 19]
                m["layers"][0]["conv"]["in_channels"] = 2
                return _resign(m)
            if case == "version":
                m["format_version"] = 2
                return _resign(m)
        if case == "member" and name == "layers/0001.phases.npz":
            return data[:-10] + bytes(b ^ 1 for b in data[-10:])
        if case == "bias" and name == "layers/0002.bias.npy":
            return data[:-8] + np.float64(1.5).tobytes()
        if case == "missing" and name == "layers/0002.bias.npy":
            return None
        return data

    if case == "not_zip":
        bad.write_bytes(b"\x93NUMPY not a model")
    else:
        _rewrite(good, bad, change)
        if case == "extra":
            with zipfile.ZipFile(bad, "a") as zf:
                zf.writestr("layers/evil.npy", b"x")
    with pytest.raises(pc.PhaseMapFileError, match=match):
        pc.load_model(bad)


def test_load_model_bad_paths(tmp_path):
    with pytest.raises(pc.PhaseMapFileError, match="must be an existing file"):
        pc.load_model(tmp_path / "missing.pcm")
    with pytest.raises(pc.InvalidTypeError, match="path must be a file path"):
        pc.load_model(3)  # type: ignore[arg-type]
    with pytest.raises(pc.PhaseMapFileError, match="which is a folder"):
        pc.load_model(tmp_path)
    with pytest.raises(pc.PhaseMapFileError, match="got an empty path"):
        pc.load_model("")
    with pytest.raises(pc.PhaseMapFileError, match="which contains a NUL byte"):
        pc.load_model(str(tmp_path / "m\x00.pcm"))


# ---- bad models ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, kwargs, error, match", [
    ({}, {}, pc.InvalidInputError, "empty tree"),
    ({"norm": {"scale": np.ones(3)}}, {}, pc.InvalidInputError, "no linear layer"),
    ({"fc": {"weight": np.array([["a", "b"]])}}, {}, pc.InvalidTypeError, "layer 'fc': weight must be a numeric"),
    ({"fc": {"kernel": np.array([[1.0, np.nan]])}}, {}, pc.InvalidInputError, "layer 'fc': kernel must be finite"),
    ({"fc": {"weight": np.ones((2, 2)) * 1j}}, {}, pc.InvalidInputError, "layer 'fc': weight must be real"),
    ({"fc": {"weight": np.ones((2, 2, 2, 2, 2))}}, {}, pc.InvalidInputError, "layer 'fc': weight must be (out, in)"),
    ({"fc": {"weight": np.ones((3, 2)), "bias": np.ones(2)}}, {}, pc.InvalidInputError,
     "layer 'fc': bias must have 3 entries"),
    ({"fc": {"weight": np.ones((3, 2)), "bias": np.array([1.0, np.inf, 0])}}, {}, pc.InvalidInputError,
     "layer 'fc': bias must be finite"),
    ({"fc": {"weight": np.ones((3, 2)), "kernel": np.ones((2, 3))}}, {}, pc.InvalidInputError, "both 'kernel'"),
    ({"fc": {"weight": np.ones((3, 0))}}, {}, pc.InvalidInputError, "layer 'fc': weight must be non-empty"),
    ({"fc.weight": np.ones((3, 2))}, {"exclude": ["fc2"]}, pc.InvalidInputError, "exclude must name layers"),
    ({"fc.weight": np.ones((3, 2))}, {"exclude": ["fc"]}, pc.InvalidInputError, "leaves no layer"),
    ({"fc.weight": np.ones((3, 2))}, {"activations": {"fc": "swish"}}, pc.InvalidInputError, "activation must be one of"),
    ({"fc.weight": np.ones((3, 2))}, {"activations": {}}, pc.InvalidInputError, "missing ['fc']"),
    ({"fc.weight": np.ones((3, 2))}, {"conv": {"fc": {"stride": 2}}}, pc.InvalidInputError, "dense layer"),
    ({"c.weight": np.ones((3, 2, 3, 3))}, {"conv": {"c": {"padding": -1}}}, pc.InvalidInputError, "layer 'c': conv padding"),
    ({"fc.weight": np.ones((3, 2))}, {"pipeline": "tile | svd | clements | lower(detection=intensity)"},
     pc.InvalidInputError, "detection='coherent'"),
    ({"fc.weight": np.ones((3, 2))}, {"batch": 0}, pc.InvalidInputError, "batch must be an integer in [1, inf]"),
    ({"fc.weight": np.ones((3, 2))}, {"target": "nope-3"}, pc.UnknownNameError, "target"),
    (3, {}, pc.InvalidTypeError, "model must be a path"),
    ("model.h5", {}, pc.InvalidInputError, "must end in .onnx or .safetensors"),
    ("missing.onnx", {}, pc.InvalidInputError, "model file must exist"),
])
def test_bad_models_are_refused_naming_the_layer(model, kwargs, error, match):
    with pytest.raises(error, match=_re(match)):
        pc.compile_model(model, **{"target": TARGET, **kwargs})


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_bad_onnx_models_name_the_layer(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 4)), name="w")
    cases = [
        (helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up1"), [w], "layer 'up1': unsupported ONNX operator 'ConvTranspose'"),
        (helper.make_node("LSTM", ["x", "w"], ["y"], name="rnn"), [w], "layer 'rnn': unsupported ONNX operator 'LSTM'"),
        (helper.make_node("Gemm", ["x", "x"], ["y"], name="g"), [], "layer 'g': Gemm must take its weight B as a constant"),
        (helper.make_node("Gemm", ["x", "w"], ["y"], name="g", transA=1), [w], "layer 'g': Gemm with transA=1"),
        (helper.make_node("MatMul", ["w", "x"], ["y"], name="mm"), [w], "layer 'mm': MatMul with a constant first operand"),
        (helper.make_node("Conv", ["x", "w"], ["y"], name="cv"), [w], "layer 'cv': only 1-D and 2-D convolutions"),
        (helper.make_node("Custom", ["x"], ["y"], name="c", domain="my.ops"), [], "layer 'c': unsupported ONNX operator my.ops.Custom"),
        (helper.make_node("Relu", ["x"], ["y"], name="r"), [], "has no Gemm, MatMul"),
        (helper.make_node("Gemm", ["x", "nan"], ["y"], name="g"),
         [numpy_helper.from_array(np.array([[np.nan, 1.0]]), name="nan")], "layer 'g': weight B must be finite"),
    ]
    for i, (node, inits, match) in enumerate(cases):
        path = tmp_path / f"bad{i}.onnx"
        onnx_with(path, node, inits)
        with pytest.raises(pc.InvalidInputError, match=_re(match)):
            pc.compile_model(path, target=TARGET)
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf \xff\xff")
    with pytest.raises(pc.InvalidInputError, match="cannot read ONNX file"):
        pc.compile_model(tmp_path / "junk.onnx", target=TARGET)


def test_forward_input_checks_and_non_chains(onnx_model):
    conv = onnx_model["conv"]
    with pytest.raises(pc.InvalidInputError, match=_re("x must have shape (C=2, H, W)")):
        conv.forward(np.ones((3, 5, 5)))
    with pytest.raises(pc.InvalidInputError, match="x must be finite"):
        onnx_model["fc"].forward(np.full(27, np.nan))
    with pytest.raises(pc.InvalidTypeError, match="x must be a real numeric array"):
        onnx_model["fc"].forward(np.array(["a"] * 27))
    with pytest.raises(pc.InvalidInputError, match="key must name a layer"):
        onnx_model["nope"]
    m = pc.compile_model({"a.weight": np.eye(2), "b.weight": np.eye(2)}, target=TARGET, pipeline=EXACT)
    with pytest.raises(pc.InvalidInputError, match="runs chains of layers only"):
        m.forward(np.ones(2))


def test_skip_connections_are_not_a_chain(tmp_path):
    """x -> Gemm -> Add(x) (a residual): layers compile, the model is not a chain."""
    w = numpy_helper.from_array(np.eye(4) * 2, name="w")
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"), helper.make_node("Add", ["h", "x"], ["y"], name="res")]
    graph = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 4])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "res.onnx"))
    m = pc.compile_model(tmp_path / "res.onnx", target=TARGET, pipeline=EXACT)
    assert m.names == ["fc"] and not m.sequential


def test_bytes_io_is_not_a_model():
    with pytest.raises(pc.InvalidTypeError, match="model must be a path"):
        pc.compile_model(io.BytesIO(b""), target=TARGET)


def onnx_transformer_block(path, seed=3, d=8, tokens=4, heads=2, ff=16):
    """A pre-norm transformer block as exporters write it: MatMul + Add projections, Reshape/Transpose into heads,
    a MatMul of two activations (q k^T, then att v), Div, Softmax, LayerNormalization, Gelu, residual Adds,
    ReduceMean over the tokens and a Gemm head. Returns the projection weights (in, out) and biases."""
    rng = np.random.default_rng(seed)
    dh = d // heads
    w = {f"{n}.w": rng.normal(size=shape) for n, shape in (("q", (d, d)), ("k", (d, d)), ("v", (d, d)),
                                                             ("o", (d, d)), ("fc1", (d, ff)), ("fc2", (ff, d)))}
    w |= {f"{n}.b": rng.normal(size=w[f"{n}.w"].shape[1]) for n in ("q", "k", "v", "o", "fc1", "fc2")}
    w |= {"head.weight": rng.normal(size=(3, d)), "head.bias": rng.normal(size=3)}
    consts = {**w, "ln.g": np.ones(d), "ln.b": np.zeros(d), "scale": np.array(np.sqrt(dh)),
              "heads_shape": np.array([1, tokens, heads, dh], dtype=np.int64),
              "merged_shape": np.array([1, tokens, d], dtype=np.int64), "axes": np.array([1], dtype=np.int64)}
    inits = [numpy_helper.from_array(v, name=k) for k, v in consts.items()]
    n = helper.make_node
    nodes = [n("LayerNormalization", ["x", "ln.g", "ln.b"], ["a"], name="norm1", axis=-1)]
    for p in ("q", "k", "v"):
        nodes += [n("MatMul", ["a", f"{p}.w"], [f"{p}0"], name=f"attn.{p}"),
                  n("Add", [f"{p}0", f"{p}.b"], [f"{p}1"], name=f"attn.{p}.bias"),
                  n("Reshape", [f"{p}1", "heads_shape"], [f"{p}2"], name=f"split_{p}"),
                  n("Transpose", [f"{p}2"], [f"{p}h"], name=f"heads_{p}",
                    perm=[0, 2, 3, 1] if p == "k" else [0, 2, 1, 3])]
    nodes += [n("MatMul", ["qh", "kh"], ["s0"], name="scores"), n("Div", ["s0", "scale"], ["s"], name="scale_scores"),
              n("Softmax", ["s"], ["att"], name="softmax", axis=-1), n("MatMul", ["att", "vh"], ["c0"], name="context"),
              n("Transpose", ["c0"], ["c1"], name="merge_heads", perm=[0, 2, 1, 3]),
              n("Reshape", ["c1", "merged_shape"], ["c"], name="merge"),
              n("MatMul", ["c", "o.w"], ["o0"], name="attn.out"), n("Add", ["o0", "o.b"], ["o1"], name="attn.out.bias"),
              n("Add", ["x", "o1"], ["h1"], name="residual1"),
              n("LayerNormalization", ["h1", "ln.g", "ln.b"], ["a2"], name="norm2", axis=-1),
              n("MatMul", ["a2", "fc1.w"], ["f0"], name="ffn.fc1"), n("Add", ["f0", "fc1.b"], ["f1"], name="ffn.fc1.bias"),
              n("Gelu", ["f1"], ["f2"], name="gelu"),
              n("MatMul", ["f2", "fc2.w"], ["g0"], name="ffn.fc2"), n("Add", ["g0", "fc2.b"], ["g1"], name="ffn.fc2.bias"),
              n("Add", ["h1", "g1"], ["h2"], name="residual2"),
              n("ReduceMean", ["h2", "axes"], ["pooled0"], name="pool", keepdims=0),
              n("Gemm", ["pooled0", "head.weight", "head.bias"], ["y"], name="head", transB=1)]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, tokens, d])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return w


def test_onnx_transformer_block_compiles_its_projections(tmp_path):
    """What exporters write for attention passes (MatMul of two activations, Softmax, LayerNormalization,
    Reshape, Transpose, Gelu, ReduceMean run electronically); every projection is a layer equal to its weights,
    its bias folded, Gelu its activation; the two MatMuls of activations are listed as skipped."""
    path = tmp_path / "block.onnx"
    w = onnx_transformer_block(path)
    m = pc.compile_model(path, target=TARGET, pipeline=EXACT)
    assert m.names == ["attn.q", "attn.k", "attn.v", "attn.out", "ffn.fc1", "ffn.fc2", "head"]
    assert not m.sequential  # attention and residuals: the layers are no chain
    assert sorted(m.skipped) == ["context: MatMul of two activations (run electronically)",
                                 "scores: MatMul of two activations (run electronically)"]
    for name, key in (("attn.q", "q"), ("attn.k", "k"), ("attn.v", "v"), ("attn.out", "o"), ("ffn.fc1", "fc1"),
                      ("ffn.fc2", "fc2")):
        layer = m[name]
        assert layer.shape == w[f"{key}.w"].shape[::-1]
        assert rel_err(layer.weights(), w[f"{key}.w"].T) < EXACT_RTOL, name
        np.testing.assert_array_equal(layer.bias, w[f"{key}.b"])
        assert layer.activation == ("gelu" if key == "fc1" else None), name
    assert rel_err(m["head"].weights(), w["head.weight"]) < EXACT_RTOL and m["head"].activation is None
