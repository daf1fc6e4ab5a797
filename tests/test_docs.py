"""The API reference docs/api.md is generated from the code (docs/gen_api.py) and must be up to date."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

import photocomp as pc

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def gen_api():
    spec = importlib.util.spec_from_file_location("gen_api", DOCS / "gen_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered(gen_api):
    return gen_api.render()


def test_committed_api_reference_is_up_to_date(rendered):
    committed = (DOCS / "api.md").read_text(encoding="utf-8")
    assert committed == rendered, "docs/api.md is out of date: run python docs/gen_api.py and commit the result"


def test_every_public_name_has_an_entry(rendered):
    sections = rendered.split("\n## ")
    for module, names in (("photocomp", pc.__all__), ("photocomp.drift", pc.drift.__all__)):
        body = next(s for s in sections if s.startswith(module + "\n"))
        for name in names:
            assert f"### `{name}" in body or f"### `{module}.{name}` (module)" in body, f"{module}.{name} is missing"


def test_reference_carries_signatures_units_and_the_public_extras(rendered):
    # signatures with defaults and units from the docstrings
    assert ("### `study(cal: Program, chip: Chip, process: ThermalProcess | None = None, *, hours: float = 1.0, "
            "dt_s: float = 1.0,") in rendered
    assert "- `dt_s`: time step (s)" in rendered
    assert "- `heater_p_pi_mw`: heater power for a pi phase shift (mW)." in rendered
    # the cost report and the netlist export, reached from a program and from their modules
    assert "### `cost(prog: Program, *, batch: int = 1, group_index: float = 4.2) -> Cost`" in rendered
    assert "### `to_sax_netlist(program: PhaseMap | HasPhaseMap, tile: int = 0) -> dict`" in rendered
    assert "### `export_netlist(program: PhaseMap | HasPhaseMap, path: str | os.PathLike, tile: int = 0) -> str`" in rendered
    # array arguments and results typed the JAX way
    assert "### `detect(intensity: ArrayLike, target: Target, key: jax.Array, *, shots: int = 1," in rendered
    # no memory addresses or other run-dependent text
    assert " at 0x" not in rendered


def test_check_mode(gen_api, tmp_path, capsys):
    assert gen_api.main(["--check"]) == 0
    stale = tmp_path / "api.md"
    stale.write_text("# old\n", encoding="utf-8")
    assert gen_api.main(["--check", "--out", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().out
