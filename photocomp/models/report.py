"""Per-layer and whole-model figures of a compiled model: tiles, MZIs, cycles, latency, heater power, error.

The figures follow the definitions of :mod:`photocomp.analysis.cost` (the
cost of one program), computed here from the layers below (``analysis`` sits
above ``models`` in the layer stack, docs/design.md §7);
``tests/test_models.py`` checks that every per-layer figure equals
``photocomp.cost`` of the layer's program.

Per layer (a program of ``T`` tiles on a ``K x K`` core):

* ``tiles``; ``mzis``: MZI settings over all tiles (``T`` times the core's
  MZIs, :attr:`photocomp.Program.n_mzi`); ``phase_settings``: heater settings
  over all tiles; ``depth``: MZI columns light crosses.
* ``vectors``: input vectors streamed through each tile setting per
  inference: ``batch`` for a dense layer, ``batch`` times the output
  positions of a convolution (im2col columns) when the model records its
  input size, else ``batch``.
* ``latency_cycles = T (settle_cycles + vectors + optical_latency_cycles)``
  with ``settle_cycles = ceil(tau (dac_bits + 1) ln 2 f)`` and the optical
  latency the time of flight through the core (path length from the circuit
  graph times ``column_pitch_um``, group index
  :data:`GROUP_INDEX`), at least one cycle; ``latency_ns`` at the target's
  clock. Layers run one after another: the model's latency is the sum.
* ``heater_power_mw``: total heater power while one tile's settings are
  applied (ideal settings on a nominal chip, crosstalk pre-compensated),
  mean over tiles, and ``heater_power_max_mw`` the largest;
  ``heater_energy_nj``: the sum over tiles of that power times the time the
  tile is held. The model's ``heater_power_mw`` is its energy over its latency.
* ``matrix_error``: ``||W - W_hat||_F / ||W||_F`` of the layer's matrix, from
  the compile report (ideal chip against the weights).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from photocomp.compiler.program import Program
from photocomp.core.graph import optical_path_mm
from photocomp.core.target import GROUP_INDEX
from photocomp.hardware.chip import heater_slices
from photocomp.hardware.chipsim import nominal_drives

__all__ = ["LayerReport", "ModelReport", "layer_report", "GROUP_INDEX"]



@dataclasses.dataclass(frozen=True)
class LayerReport:
    """Figures of one compiled layer (definitions in :mod:`photocomp.models.report`; units in the names)."""

    name: str
    kind: str
    matrix_shape: tuple[int, int]
    grid: str
    tiles: int
    circuit: str
    mzis: int
    phase_settings: int
    depth: int
    vectors: int
    settle_cycles: int
    optical_latency_cycles: int
    latency_cycles: int
    latency_ns: float
    heater_power_mw: float
    heater_power_max_mw: float
    heater_energy_nj: float
    matrix_error: float
    compile_s: float

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["matrix_shape"] = list(self.matrix_shape)
        return d


@dataclasses.dataclass(frozen=True)
class ModelReport:
    """Per-layer figures and the whole model's: sums of tiles, MZI settings, cycles, latency and energy."""

    target: str
    batch: int
    layers: tuple[LayerReport, ...]

    @property
    def tiles(self) -> int:
        return sum(r.tiles for r in self.layers)

    @property
    def mzis(self) -> int:
        return sum(r.mzis for r in self.layers)

    @property
    def phase_settings(self) -> int:
        return sum(r.phase_settings for r in self.layers)

    @property
    def weights(self) -> int:
        """Entries of the layers' matrices."""
        return sum(r.matrix_shape[0] * r.matrix_shape[1] for r in self.layers)

    @property
    def latency_cycles(self) -> int:
        return sum(r.latency_cycles for r in self.layers)

    @property
    def latency_ns(self) -> float:
        return float(sum(r.latency_ns for r in self.layers))

    @property
    def heater_energy_nj(self) -> float:
        return float(sum(r.heater_energy_nj for r in self.layers))

    @property
    def heater_power_mw(self) -> float:
        """Mean heater power over the model's latency (mW)."""
        ns = self.latency_ns
        return self.heater_energy_nj * 1e3 / ns if ns > 0 else 0.0

    @property
    def heater_power_max_mw(self) -> float:
        return max(r.heater_power_max_mw for r in self.layers)

    @property
    def matrix_error_max(self) -> float:
        return max(r.matrix_error for r in self.layers)

    @property
    def compile_s(self) -> float:
        return float(sum(r.compile_s for r in self.layers))

    def totals(self) -> dict:
        """The whole model's figures."""
        return {"layers": len(self.layers), "weights": self.weights, "tiles": self.tiles, "mzis": self.mzis,
                "phase_settings": self.phase_settings, "latency_cycles": self.latency_cycles,
                "latency_ns": self.latency_ns, "heater_power_mw": self.heater_power_mw,
                "heater_power_max_mw": self.heater_power_max_mw, "heater_energy_nj": self.heater_energy_nj,
                "matrix_error_max": self.matrix_error_max, "compile_s": self.compile_s}

    def as_dict(self) -> dict:
        """Plain JSON: the target, the batch, every layer's figures and the totals."""
        return {"target": self.target, "batch": self.batch, "layers": [r.as_dict() for r in self.layers],
                "total": self.totals()}

    def table(self) -> str:
        """Plain-text table: one row per layer and a total row."""
        head = ("layer", "kind", "matrix", "tiles", "MZIs", "vectors", "cycles", "latency", "heater mW",
                "energy nJ", "error", "compile s")

        def row(r: LayerReport):
            return (r.name, r.kind, f"{r.matrix_shape[0]}x{r.matrix_shape[1]}", str(r.tiles), str(r.mzis),
                    str(r.vectors), str(r.latency_cycles), _ns(r.latency_ns), f"{r.heater_power_mw:.4g}",
                    f"{r.heater_energy_nj:.4g}", f"{r.matrix_error:.3e}", f"{r.compile_s:.2f}")

        rows = [head] + [row(r) for r in self.layers]
        rows.append(("total", f"{len(self.layers)} layers", f"{self.weights} w", str(self.tiles), str(self.mzis), "",
                     str(self.latency_cycles), _ns(self.latency_ns), f"{self.heater_power_mw:.4g}",
                     f"{self.heater_energy_nj:.4g}", f"max {self.matrix_error_max:.3e}", f"{self.compile_s:.2f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
        title = f"model on {self.target}, batch {self.batch} (heater mW: mean while a tile is applied)"
        return "\n".join([title] + lines)

    def __str__(self) -> str:
        return self.table()


def _ns(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.3g} ms"
    if value >= 1e3:
        return f"{value / 1e3:.3g} us"
    return f"{value:.3g} ns"


def layer_report(name: str, kind: str, prog: Program, *, vectors: int, compile_s: float,
                 power: bool = True) -> LayerReport:
    """The :class:`LayerReport` of one layer's program streaming ``vectors`` inputs per tile setting.

    ``power=False`` skips the heater drives (powers and energy reported as NaN).
    """
    t = prog.target
    tiles = prog.n_tiles
    clock = t.clock_ghz
    _, optical_cycles = t.flight(optical_path_mm(prog.graph(0), t.column_pitch_um), GROUP_INDEX)
    settle_cycles = t.settle_cycles
    per_tile_cycles = settle_cycles + vectors + optical_cycles
    latency_cycles = tiles * per_tile_cycles
    if power:
        per_tile = np.asarray(nominal_drives(prog.phase_map, t)).sum(axis=-1)
        p_mean, p_max = float(per_tile.mean()), float(per_tile.max())
        energy = float(per_tile.sum()) * per_tile_cycles / clock * 1e-3  # mW x ns = pJ -> nJ
    else:
        p_mean = p_max = energy = float("nan")
    shifters = sum(g.stop - g.start for g in heater_slices(t, prog.circuit).values())
    g = prog.phase_map.grid
    err = dict(prog.report.summary).get("matrix_error", float("nan"))
    return LayerReport(
        name=name, kind=kind, matrix_shape=prog.shape, grid=f"{g.rows}x{g.cols} of {g.tile}x{g.tile}", tiles=tiles,
        circuit=prog.circuit, mzis=prog.n_mzi, phase_settings=shifters * tiles, depth=prog.depth, vectors=vectors,
        settle_cycles=settle_cycles, optical_latency_cycles=optical_cycles, latency_cycles=latency_cycles,
        latency_ns=latency_cycles / clock, heater_power_mw=p_mean, heater_power_max_mw=p_max,
        heater_energy_nj=energy, matrix_error=float(err), compile_s=float(compile_s),
    )

