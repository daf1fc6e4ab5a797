"""Execute the studies in notebooks/ top to bottom and check the goals they print.

Marked ``notebook`` (deselected by default; ``.ci/run`` runs them). Each
notebook is copied to a temporary folder and executed there with nbclient on
a kernel that runs this interpreter (a kernel spec is installed into a
temporary prefix, so a system-wide ``python3`` kernel of another Python is
never picked up). Where a notebook prints an acceptance number, the test
reads it back from the executed outputs.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.notebook

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT_S = 1200
KERNEL_NAME = "photocomp-notebook-tests"


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernel spec for this interpreter in a temporary prefix, found through JUPYTER_PATH."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter-prefix")
    install(kernel_name=KERNEL_NAME, display_name="photocomp tests", prefix=str(prefix))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(prefix / "share" / "jupyter"), old) if p)
    yield KERNEL_NAME
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def execute(name: str, tmp_path: pathlib.Path, kernel: str) -> str:
    """Run a copy of ``notebooks/<name>`` in ``tmp_path``; return the text of all its outputs."""
    src = NOTEBOOK_DIR / name
    assert src.exists(), f"missing notebook {src}"
    dst = tmp_path / name
    shutil.copy(src, dst)
    nb = nbformat.read(dst, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out.get("text", ""))
            elif "data" in out and "text/plain" in out["data"]:
                texts.append(out["data"]["text/plain"])
    return "\n".join(texts)


def number(pattern: str, text: str) -> float:
    """The first capture group of ``pattern`` in ``text``, as a float."""
    m = re.search(pattern, text)
    assert m, f"pattern {pattern!r} not found in the notebook's outputs"
    return float(m.group(1))


def test_01_compile_and_inspect(tmp_path, kernel_name):
    out = execute("01_compile_and_inspect.ipynb", tmp_path, kernel_name)
    # the Haar oracle: no position rejected, the control rejected everywhere
    assert number(r"Beta\(alpha, 1\): smallest p = [\d.]+, positions with p < 0\.001: (\d+)", out) == 0
    assert re.search(r"rejected \(p < 0\.001\) at (\d+) of \1\b", out)


def test_05_ising_maxcut(tmp_path, kernel_name):
    out = execute("05_ising_maxcut.ipynb", tmp_path, kernel_name)
    m = re.search(r"chip: exact max-cut on (\d+) of (\d+) small graphs", out)
    assert m, "the chip's exact max-cut count is not printed"
    solved, total = int(m.group(1)), int(m.group(2))
    assert total >= 20 and solved >= 0.9 * total, f"exact max-cut on {solved} of {total} small graphs; goal >= 90 %"


def test_02_calibrate_a_chip(tmp_path, kernel_name):
    out = execute("02_calibrate_a_chip.ipynb", tmp_path, kernel_name)
    assert "every method improves on the uncalibrated chip: True" in out
    assert "model (L-BFGS) improves on local: True" in out
    assert "backpropagation within 10 % of the parameter shift's true error: True" in out
    assert int(re.search(r"backpropagation used (\d+)x fewer readings", out).group(1)) >= 5


def test_03_thermal_drift(tmp_path, kernel_name):
    out = execute("03_thermal_drift.ipynb", tmp_path, kernel_name)
    assert "uncompensated error grows by more than 10x within the hour: True" in out
    assert "feed-forward cuts the drift-induced error by at least 10x: True" in out
    assert "closed loop keeps the mean error within 2x of the fresh calibration with 128 = 2N probes per update: True" in out
    assert "read back exactly: True" in out and "photocomp plot exit code: 0" in out
    assert number(r"notebook runtime: ([\d.]+) s", out) < 600  # about 100 s on two cores


def test_04_photonic_neural_network(tmp_path, kernel_name):
    out = execute("04_photonic_neural_network.ipynb", tmp_path, kernel_name)
    assert "ideal chip within 0.5 points of digital: True" in out
    assert "calibrated fabricated chip within 2 points of digital: True" in out
    assert "uncalibrated fabricated chip clearly worse (more than 2 points below digital): True" in out


def test_06_which_mesh(tmp_path, kernel_name):
    out = execute("06_which_mesh.ipynb", tmp_path, kernel_name)
    assert "same first and last couplers: True" in out and "same heater offsets (the MZI's heaters): True" in out
    assert "the MZI mesh's corrected error grows with N at every sigma: True" in out
    assert "the three-splitter mesh's corrected error stays below 1e-12 at every N and sigma: True" in out
    assert "no three-splitter cell unreachable: True" in out
    assert "the Bell mesh's corrected error and unreachable cells equal the MZI mesh's at every N and sigma: True" in out
    assert "model calibration of the three-splitter mesh beats the MZI mesh's: True" in out
    assert "the MZI + crossing mesh, its crossings lossy, ends above the MZI mesh: True" in out
    assert "the butterfly compiles its own family exactly (without DACs): True" in out
    assert "a Haar unitary is beyond it: True" in out
    # the butterfly's planar crossings lose light unevenly (docs/design.md §3.4 quotes both outcomes)
    assert "the butterfly's calibrated error grows with the crossing loss: True" in out
    assert "the Clements chip is the same at every crossing loss: True" in out
    assert "with 0.04 dB crossings the calibrated butterfly beats the calibrated Clements mesh on its own family: True" in out
    assert "with 0.18 dB crossings the calibrated butterfly beats the calibrated Clements mesh on its own family: False" in out
    # Fldzhyan's layout: its fit, and its tolerance of large coupler errors (docs/design.md §3.4 quotes these)
    assert "every Haar unitary of 4 modes fitted to rounding: True" in out
    assert "at 12 modes every fit stalls above 1e-4: True" in out
    assert "the fit on the chip beats the MZI mesh's calibration at sigma = 0.2 rad: True" in out
    assert "and at sigma = 0.05 rad: False" in out
    assert "the three-splitter mesh is exact (below 1e-12) at every sigma: True" in out
    # the crossbar: per-cell correction below the MZI mesh's, growing more slowly; model ends where local does
    assert "the crossbar's local error is below the Clements mesh's at every point: True" in out
    assert "from N = 8 to 48 it grows by a smaller factor at every sigma: True" in out
    assert "model calibration within 1e-3 of local correction: True" in out
    assert number(r"notebook runtime: ([\d.]+) s", out) < 900  # about 300 s on two cores


def test_07_networks_onto_chips(tmp_path, kernel_name):
    out = execute("07_networks_onto_chips.ipynb", tmp_path, kernel_name)
    for name in ("CNN", "transformer"):
        assert f"{name}: calibrated chip (model calibration) within 1 point of digital: True" in out
        assert f"{name}: ideal chip within 0.5 points of digital: True" in out
        assert f"{name}: uncalibrated chip more than 5 points below digital: True" in out
        assert f"{name}: fine-tuning through the uncalibrated chip wins back more than half of the lost accuracy: True" in out
        # the acceptance number itself, read back: |calibrated - digital| <= 1 point
        assert abs(number(rf"{name}: calibrated chip \(model calibration\) within 1 point of digital: True \(([-+\d.]+)\)",
                          out)) <= 1.0
    assert "every bad model refused with InvalidInputError naming the layer: True" in out
    assert number(r"largest logit difference ([\d.e+-]+)", out) < 1e-4  # the ONNX file computes the JAX CNN
