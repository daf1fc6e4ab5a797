"""``photocomp compile-model``: ONNX and safetensors models to a .pcm file, the report, one-line errors with exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli as run
from test_models import EXACT, TARGET, onnx_chain, onnx_with, rel_err, state_dict

import photocomp as pc

onnx = pytest.importorskip("onnx")
st = pytest.importorskip("safetensors.numpy")
from onnx import helper, numpy_helper  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    w = onnx_chain(d / "chain.onnx")
    sd = state_dict()
    st.save_file(sd, str(d / "sd.safetensors"))
    st.save_file({"fc.weight": np.array([[1.0, np.nan]])}, str(d / "nan.safetensors"))
    onnx_with(d / "up.onnx", helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up1"),
              [numpy_helper.from_array(np.ones((4, 4)), name="w")])
    np.save(d / "w.npy", np.eye(3))
    return d, w, sd


def test_compile_model_onnx(capsys, models, tmp_path):
    d, w, _ = models
    out = tmp_path / "chain.pcm"
    code, text, err = run(capsys, "compile-model", str(d / "chain.onnx"), "--target", TARGET, "--pipeline", EXACT,
                          "-o", str(out))
    assert code == 0, err
    assert "conv" in text and "total" in text and text.strip().endswith(f"wrote {out}")
    m = pc.load_model(out)
    assert m.names == ["conv", "fc", "head"] and m.sequential
    h = np.random.default_rng(0).normal(size=4)
    assert rel_err(m["head"].forward(h), h @ w["head.w"] + w["head.b"]) < 1e-9
    # the report of the file, as a table and as JSON
    code, text, _ = run(capsys, "report", str(out))
    assert code == 0 and "total" in text and "fc" in text
    code, text, _ = run(capsys, "report", str(out), "--json", "--batch", "4")
    rep = json.loads(text)
    assert code == 0 and rep["batch"] == 4 and [r["name"] for r in rep["layers"]] == m.names
    assert rep["layers"][0]["vectors"] == 4 * 9


def test_compile_model_safetensors_default_output(capsys, models, tmp_path):
    d, _, sd = models
    src = tmp_path / "sd.safetensors"
    src.write_bytes((d / "sd.safetensors").read_bytes())
    code, text, err = run(capsys, "compile-model", str(src), "--target", TARGET, "--exclude", "fc2", "--json")
    assert code == 0, err
    rep = json.loads(text[: text.rindex("wrote")])
    assert [r["name"] for r in rep["layers"]] == ["fc1"]
    m = pc.load_model(tmp_path / "sd.pcm")
    assert m.names == ["fc1"] and any("fc2: excluded" in s for s in m.skipped)
    x = np.ones(6)
    err = np.linalg.norm(m["fc1"].forward(x) - (sd["fc1.weight"] @ x + sd["fc1.bias"]))
    assert err <= rep["layers"][0]["matrix_error"] * np.linalg.norm(sd["fc1.weight"]) * np.linalg.norm(x) * (1 + 1e-9)


@pytest.mark.parametrize("argv, match", [
    (["compile-model"], "required: model"),
    (["compile-model", "{d}/missing.onnx", "-o", "{t}/x.pcm"], "model file must exist"),
    (["compile-model", "{d}/w.npy", "-o", "{t}/x.pcm"], "model must end in .onnx or .safetensors"),
    (["compile-model", "{d}/chain.onnx", "-o", "{t}/x.npz"], "-o/--output must end in .pcm"),
    (["compile-model", "{d}/chain.onnx", "-o", "{t}/no/dir/x.pcm"], "folder must exist"),
    (["compile-model", "{d}/chain.onnx", "--target", "nope", "-o", "{t}/x.pcm"], "--target must be one of"),
    (["compile-model", "{d}/chain.onnx", "--pipeline", "tile |", "-o", "{t}/x.pcm"], "--pipeline: expected a pass"),
    (["compile-model", "{d}/chain.onnx", "--batch", "0", "-o", "{t}/x.pcm"], "--batch: expected an integer >= 1"),
    (["compile-model", "{d}/chain.onnx", "--exclude", "nope", "-o", "{t}/x.pcm"], "--exclude must name layers"),
    (["compile-model", "{d}/up.onnx", "-o", "{t}/x.pcm"], "layer 'up1': unsupported ONNX operator 'ConvTranspose'"),
    (["compile-model", "{d}/nan.safetensors", "-o", "{t}/x.pcm"], "layer 'fc': weight must be finite"),
    (["report", "{d}/w.pcm"], "must be an existing file"),
])
def test_bad_input_gives_one_line_error(capsys, models, tmp_path, argv, match):
    d, _, _ = models
    code, _, err = run(capsys, *[a.format(d=d, t=tmp_path) for a in argv])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("photocomp: error: "), err
    assert match in lines[0], lines[0]
    assert not (tmp_path / "x.pcm").exists()
