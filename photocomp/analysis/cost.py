"""Cost model of a compiled program: hardware, loss, power, latency, throughput, precision.

:func:`cost` (``photocomp.cost(prog)``) returns a :class:`Cost`, a frozen record
of numbers computed from the program, its target and (for a calibrated
program) its chip. Definitions, all per the target's nominal parameters:

Hardware. The chip is one K x K core built for the program's circuit
(:data:`photocomp.core.ir.CIRCUITS`): ``svd``, a V mesh, an attenuator column
and a U mesh; ``unitary``, one mesh; each mesh followed by its output phase
screen. A program's tiles are settings of that core used one after another
(time multiplexing).

* ``mzis``: MZIs in the core, 2 K(K-1)/2 + K (``svd``) or K(K-1)/2
  (``unitary``); ``phase_shifters`` = heaters in the core: an internal and
  an external one per mesh MZI, one per attenuator, K output shifters per
  mesh, i.e. 4 K(K-1)/2 + 3 K (``svd``) or 2 K(K-1)/2 + K (``unitary``), the
  heaters of the chip :func:`photocomp.fabricate` builds for the circuit.
  ``mzi_settings`` and ``phase_settings`` multiply these by the tile count.
* ``depth``: MZI columns light crosses (V mesh + attenuators + U mesh, or
  the one mesh). ``phase_layers``: phase-shifter layers light crosses: per
  mesh, one per heater of a cell in every column plus the output screen
  (``2 depth + 1`` for the MZI, ``3 depth + 1`` for the three-splitter
  MZI), or for the Bell mesh (:mod:`photocomp.core.bell`) its input layer,
  one per column (both arms' heaters and the edge shifters sit side by
  side) and its output layer, ``depth + 2``; plus one for the attenuator
  column. The Bell chip's heaters are two per cell, the input and output
  layers and the edge shifters (:func:`photocomp.hardware.chip.heater_groups`).

Insertion loss (dB). The worst (highest-loss) path from an input to an
output of the circuit graph (:mod:`photocomp.core.graph`), counting for every
element the light enters: a mesh cell adds ``mzi_loss_db`` (half of it for
a cell of Fldzhyan's layout, one coupler and one shifter:
:func:`photocomp.hardware.chip.cell_loss_scale`) plus
``phase_shifter_loss_db`` for every heater the light passes
(:meth:`photocomp.core.cell.Cell.path_shifters`): an MZI's internal heater
(every input reaches both arms) and its external heater when entered at the
upper input, which carries it; a three-splitter MZI's trim as well; a Bell
cell one (a heater on each arm, none on its inputs). An attenuator adds
``mzi_loss_db + phase_shifter_loss_db``; an output shifter
``phase_shifter_loss_db``; a Bell mesh's input layer and the edge shifters a
path passes add one each. A waveguide crossing adds ``crossing_loss_db``: the
one in an MZI + crossing cell, and those a butterfly's planar routing puts on
every path to and from its long pairs (:func:`photocomp.core.layout.planar_crossings`).
A crossbar's weight cell (:mod:`photocomp.core.crossbar`) adds ``mzi_loss_db``
and two shifters' loss (its internal heater and its input shifter); its
splitters and combiners add no excess loss here, and the ``1 / K`` of the
power its fan-in trees radiate is the circuit's, not a component's (the
core's line in the table states it).
(The chip simulation applies the cells' and the crossings' losses,
:func:`photocomp.hardware.chipsim.stage_coefficients`; this budget adds the
heaters' own losses.)

Heater power (mW). Total electrical power of the core's heaters while one
tile's settings are applied, averaged over tiles (``heater_power_mw``; every
tile is held for the same time) and its largest value
(``heater_power_max_mw``). A calibrated program uses its drive map
(:meth:`~photocomp.compiler.program.Program.drives`: its chip's offsets, efficiencies
and crosstalk pre-compensation). An uncalibrated program uses the ideal
physical settings (:func:`photocomp.hardware.chipsim.settings_from_program`) on a
*nominal* chip of the program's circuit: no phase offsets, unit heater
efficiency, the target's layout-derived crosstalk pre-compensated by
:func:`photocomp.hardware.chipsim.drive_map`.
``power_source`` says which. (On a fabricated chip with unknown offsets
uniform on [0, 2 pi) the expected power of any setting is one ``P_pi`` per
heater.)

Timing. Per tile, the heaters first settle: a first-order thermal response
with time constant ``heater_tau_us`` reaches half a DAC step of full scale
after ``settle_ns = tau (dac_bits + 1) ln 2``. Then ``batch`` input vectors
stream in, one per clock cycle, and the last one leaves after the optical
latency: the time of flight through the core, ``optical_path_mm`` (the
graph layout's length in columns times ``column_pitch_um``) times
``group_index / c``. In cycles of the target clock, rounded up::

    latency_cycles = n_tiles (settle_cycles + batch + optical_latency_cycles)

(electronic accumulation of partial products is not counted).
``latency_ns`` is that at the clock; ``weight_refresh_hz = n_tiles /
latency`` is how often the core's settings change; ``compute_duty =
n_tiles batch / latency_cycles`` is the fraction of cycles in which the core
takes an input.

Throughput. ``throughput_macs = M N batch / latency`` useful multiply-accumulates
per second (MAC/s) of the M x N program; ``peak_macs = K^2 f_clock``, one
K x K matrix-vector product per cycle.

Precision. ``matrix_error`` e = ||W - W_hat||_F / ||W||_F: for a calibrated
program :func:`photocomp.calibration.calibrate.error` on its chip (versus the ideal
program), else the compile report's error versus the weights (quantization
to the DAC levels). ``effective_bits = log2(1 / e)`` (e floored at 2^-52, the
float64 resolution); with SNR = 1 / e^2 this is the ENOB formula
(SNR_dB - 1.76) / 6.02 plus 0.29 bit. ``output_bits = min(effective_bits,
adc_bits)``: the detector ADC caps what is read out.

Equivalent optical compute (OPS). Peak operations corrected for output
precision and weight refresh::

    equivalent_ops = 2 peak_macs x compute_duty x output_bits / 8

i.e. two operations per MAC, counted only while the core computes (not while
its heaters settle to new weights), and weighted as 8-bit digital operations
(an 8-bit-accurate read-out counts fully, a 4-bit one half).
``heater_energy_per_mac_pj = heater_power_mw / throughput_macs`` (pJ/MAC, heaters only).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from photocomp.calibration.engine import error
from photocomp.compiler.program import Program
from photocomp.core.bell import phase_layers as phase_layer_count
from photocomp.core.bell import sweep_structure
from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.graph import optical_path_mm
from photocomp.core.layout import planar_crossings
from photocomp.core.target import GROUP_INDEX, SPEED_OF_LIGHT_M_S
from photocomp.core.validate import check_int, check_real
from photocomp.hardware.chip import cell_loss_scale, heater_slices
from photocomp.hardware.chipsim import nominal_drives

__all__ = ["Cost", "cost", "worst_path", "heater_powers", "phase_layers", "GROUP_INDEX", "SPEED_OF_LIGHT_M_S"]


_FLOAT64_BITS = 52


@dataclasses.dataclass(frozen=True)
class Cost:
    """Cost figures of a program (definitions in :mod:`photocomp.analysis.cost`); units in the names.

    Attributes:
      target: target name.
      circuit: the program's circuit, ``"svd"``, ``"unitary"`` or ``"crossbar"``.
      shape: (M, N) of the program's matrix.
      n_tiles: tiles (settings of the core used in turn).
      batch: input vectors streamed per tile setting.
      clock_ghz: target clock (GHz).
      mzis_per_mesh: K(K-1)/2.
      mzis: MZIs in the core (two meshes and the attenuator column, or the one mesh of a unitary program).
      phase_shifters: heaters in the core.
      mzi_settings: MZI settings over all tiles (``mzis * n_tiles``).
      phase_settings: heater settings over all tiles (``phase_shifters * n_tiles``).
      depth: MZI columns along the light.
      phase_layers: phase-shifter layers along the light.
      path_mzis: MZIs (attenuator included) on the worst-loss path.
      path_phase_shifters: heaters the worst-loss path passes.
      path_crossings: waveguide crossings on the worst-loss path.
      insertion_loss_db: loss of the worst path (dB).
      heater_power_mw: heater power while a tile is applied, mean over tiles (mW).
      heater_power_max_mw: the same, largest tile (mW).
      power_source: where the powers come from (a chip's drive map or a nominal chip).
      optical_path_mm: core length along the light (mm).
      group_index: group index used for the time of flight.
      optical_latency_ns: time of flight through the core (ns).
      optical_latency_cycles: the same in clock cycles (rounded up, >= 1).
      settle_ns: heater settling time to half a DAC step (ns).
      settle_cycles: the same in clock cycles (rounded up).
      latency_cycles: cycles to run ``batch`` vectors through the whole program.
      latency_ns: the same in ns.
      weight_refresh_hz: core settings loaded per second (Hz).
      compute_duty: fraction of cycles the core takes an input.
      throughput_macs: useful multiply-accumulates per second (MAC/s).
      peak_macs: K^2 times the clock (MAC/s).
      heater_energy_per_mac_pj: heater energy per useful MAC (pJ).
      matrix_error: relative Frobenius error behind the precision figures.
      error_source: where ``matrix_error`` comes from.
      effective_bits: log2(1 / matrix_error) (bits).
      adc_bits: detector ADC resolution (bits).
      output_bits: min(effective_bits, adc_bits) (bits).
      equivalent_ops: peak operations corrected for precision and weight refresh (OPS).
    """

    target: str
    circuit: str
    shape: tuple
    n_tiles: int
    batch: int
    clock_ghz: float
    mzis_per_mesh: int
    mzis: int
    phase_shifters: int
    mzi_settings: int
    phase_settings: int
    depth: int
    phase_layers: int
    path_mzis: int
    path_phase_shifters: int
    path_crossings: int
    insertion_loss_db: float
    heater_power_mw: float
    heater_power_max_mw: float
    power_source: str
    optical_path_mm: float
    group_index: float
    optical_latency_ns: float
    optical_latency_cycles: int
    settle_ns: float
    settle_cycles: int
    latency_cycles: int
    latency_ns: float
    weight_refresh_hz: float
    compute_duty: float
    throughput_macs: float
    peak_macs: float
    heater_energy_per_mac_pj: float
    matrix_error: float
    error_source: str
    effective_bits: float
    adc_bits: int
    output_bits: float
    equivalent_ops: float

    def as_dict(self) -> dict:
        """Plain-JSON form (``shape`` as a list)."""
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        return d

    def table(self) -> str:
        """Plain-text table, grouped, with units."""
        m, n = self.shape
        rows = [
            ("program", f"{m}x{n} on {self.target}, {self.circuit} circuit, {self.n_tiles} tile(s), batch {self.batch}"),
            ("", ""),
            ("MZIs", f"{self.mzis} in the core ({self._core()}); {self.mzi_settings} settings over all tiles"),
            ("phase shifters", f"{self.phase_shifters} in the core; {self.phase_settings} settings over all tiles"),
            ("optical depth", f"{self.depth} MZI columns"),
            ("insertion loss", f"{self.insertion_loss_db:.2f} dB worst path "
                               f"({self.path_mzis} MZIs, {self.path_phase_shifters} phase shifters"
                               + (f", {self.path_crossings} crossings)" if self.path_crossings else ")")),
            ("heater power", f"{_si(self.heater_power_mw * 1e-3, 'W')} mean per tile, "
                             f"{_si(self.heater_power_max_mw * 1e-3, 'W')} max ({self.power_source})"),
            ("", ""),
            ("optical latency", f"{self.optical_latency_ns:.3f} ns = {self.optical_latency_cycles} cycle(s) "
                                f"({self.optical_path_mm:.2f} mm, group index {self.group_index:g})"),
            ("heater settling", f"{_si(self.settle_ns * 1e-9, 's')} = {self.settle_cycles} cycles per tile"),
            ("latency", f"{self.latency_cycles} cycles = {_si(self.latency_ns * 1e-9, 's')} at {self.clock_ghz:g} GHz"),
            ("weight refresh", f"{_si(self.weight_refresh_hz, 'Hz')}, compute duty {self.compute_duty:.3g}"),
            ("throughput", f"{_si(self.throughput_macs, 'MAC/s')} (peak {_si(self.peak_macs, 'MAC/s')})"),
            ("heater energy", f"{_si(self.heater_energy_per_mac_pj * 1e-12, 'J/MAC')}"),
            ("", ""),
            ("matrix error", f"{self.matrix_error:.3e} ({self.error_source})"),
            ("effective bits", f"{self.effective_bits:.2f} bits; read out {self.output_bits:.2f} bits "
                               f"({self.adc_bits}-bit ADC)"),
            ("equivalent compute", f"{_si(self.equivalent_ops, 'OPS')} (8-bit equivalent, refresh-limited)"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}".rstrip() for k, v in rows)

    def __str__(self) -> str:
        return self.table()

    def _core(self) -> str:
        """What the core's MZIs are, in words."""
        if self.circuit == "unitary":
            return f"one mesh of {self.mzis_per_mesh}, no attenuators"
        if self.circuit == "crossbar":
            k = math.isqrt(self.mzis)
            return (f"weight cells, one per entry; {2 * k * (k - 1)} splitters and combiners in the fan-out and "
                    f"fan-in trees, whose combining passes 1/{k} of the power ({10 * math.log10(k):.1f} dB)")
        return f"{self.mzis_per_mesh} per mesh + {self.mzis - 2 * self.mzis_per_mesh} attenuators"


def _si(value: float, unit: str) -> str:
    """``value`` with an SI prefix, 3 significant digits."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}"
    prefixes = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"),
                (1e-9, "n"), (1e-12, "p"), (1e-15, "f")]
    for scale, p in prefixes:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {p}{unit}"
    return f"{value:.3g} {unit}"


# ---- pieces --------------------------------------------------------------------------


def _element_loss(d: dict, dst_port: str, target) -> tuple[float, int, int]:
    """(loss dB, MZIs, phase shifters) of entering element ``d`` at ``dst_port``."""
    kind = d["kind"]
    if kind == "mzi":
        shifters = target.layout.cell.path_shifters(0 if dst_port == "i0" else 1)
        return target.mzi_loss_db * cell_loss_scale(target.layout.cell) + shifters * target.phase_shifter_loss_db, 1, \
            shifters
    if kind in ("attenuator", "weight"):  # an MZI with one heated arm and, a crossbar's, its input shifter
        return target.mzi_loss_db + target.phase_shifter_loss_db * (1 if kind == "attenuator" else 2), 1, \
            1 if kind == "attenuator" else 2
    if kind == "phase":
        return target.phase_shifter_loss_db, 0, 1
    return 0.0, 0, 0


def _layer_shifters(graph, target) -> dict:
    """Bell mesh: ``{mode: [x, ...]}`` of the input-layer and edge shifters, at graph layout coordinates."""
    lay = target.layout
    if lay.cell.programming != "sweep":
        return {}
    out: dict[int, list[float]] = {}
    for stage in ("V", "U"):
        if f"{stage}:0:0" not in graph:
            continue
        x0 = graph.nodes[f"{stage}:0:0"]["x"]
        for q in range(lay.n_modes):
            out.setdefault(q, []).append(x0 - 0.5)
        for c, q in sweep_structure(lay).edges:
            out.setdefault(q, []).append(x0 + c)
    return out


def phase_layers(target, circuit: str) -> int:
    """Phase-shifter layers light crosses in a ``circuit`` core of ``target`` (see the module docstring)."""
    lay = target.layout
    if lay.crossbar:  # the input shifter, the internal heater, the output's phase reference
        return 3
    per_mesh = (phase_layer_count(lay) if lay.cell.programming == "sweep"
                else len(lay.cell.heaters) * lay.depth + 1)
    return per_mesh if circuit == "unitary" else 2 * per_mesh + 1


def _crossings(graph, u, v, mode: int, routing: np.ndarray, in_cell: int) -> int:
    """Waveguide crossings on the graph edge ``u -> v`` (mode ``mode``): ``in_cell`` inside a cell the light
    leaves (an MZI + crossing cell's), and the planar routing ``routing`` (:func:`photocomp.core.layout.planar_crossings`)
    after the column it leaves and before the column it enters."""
    n = 0
    du, dv = graph.nodes[u], graph.nodes[v]
    if du["kind"] == "mzi":
        n += in_cell + int(routing[du["column"], mode])
    if dv["kind"] == "mzi":
        n += int(routing[dv["column"], mode])
    return n


def worst_path(graph, target) -> tuple[float, int, int, int]:
    """(insertion loss dB, MZIs, phase shifters, crossings) of the highest-loss input-to-output path of a
    circuit graph."""
    import networkx as nx

    layers = _layer_shifters(graph, target)
    routing = planar_crossings(target.layout)
    in_cell = target.layout.cell.crossings
    g = nx.DiGraph()
    for u, v, e in graph.edges(data=True):
        loss, mz, ps = _element_loss(graph.nodes[v], e["dst_port"], target)
        # a Bell mesh's input-layer and edge shifters on this waveguide
        x_u, x_v = graph.nodes[u]["x"], graph.nodes[v]["x"]
        extra = sum(x_u < x < x_v for x in layers.get(e["mode"], ()))
        cross = _crossings(graph, u, v, e["mode"], routing, in_cell)
        g.add_edge(u, v, loss_db=loss + extra * target.phase_shifter_loss_db + cross * target.crossing_loss_db,
                   mzis=mz, shifters=ps + extra, crossings=cross)
    path = nx.dag_longest_path(g, weight="loss_db", default_weight=0)
    edges = [g.edges[a, b] for a, b in zip(path[:-1], path[1:])]
    return (float(sum(e["loss_db"] for e in edges)), int(sum(e["mzis"] for e in edges)),
            int(sum(e["shifters"] for e in edges)), int(sum(e["crossings"] for e in edges)))


def heater_powers(prog: Program) -> tuple[np.ndarray, str]:
    """Heater powers (mW), (n_tiles, n_heaters), and where they come from (see the module docstring)."""
    if prog.chip is not None:  # calibrated
        return np.asarray(prog.drives()), f"drive map of chip seed {prog.chip.seed}"
    return np.asarray(nominal_drives(prog.phase_map, prog.target)), "ideal settings on a nominal chip"


def _precision(prog) -> tuple[float, str]:
    if prog.calibrated:
        return float(error(prog, prog.chip)["matrix_error"]), f"calibrated, on chip seed {prog.chip.seed}"
    summary = dict(prog.report.summary)
    if "matrix_error" not in summary:
        raise InvalidInputError(
            "prog.report.summary must hold the compile's 'matrix_error' (programs from photocomp.compile "
            f"and photocomp.load do); got keys {sorted(summary)}"
        )
    err = check_real(summary["matrix_error"], "prog.report.summary['matrix_error']", low=0.0)
    return err, "compile report: ideal chip vs. the weights"


# ---- the cost record -------------------------------------------------------------------


def cost(prog: Program, *, batch: int = 1, group_index: float = GROUP_INDEX) -> Cost:
    """Cost figures of a compiled (or calibrated) program; see :mod:`photocomp.analysis.cost` for every definition.

    Args:
      prog: a :class:`~photocomp.compiler.program.Program`.
      batch: input vectors streamed per tile setting (int >= 1); sets how
        often the heaters must settle to new weights.
      group_index: group index of the waveguides (> 0), for the time of flight.

    Returns:
      a :class:`Cost`.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> c = pc.cost(pc.compile(np.diag([1.0, 2.0, 3.0, 4.0]), target="clements-4"))
      >>> c.circuit, c.mzis, c.depth
      ('svd', 16, 9)
      >>> c = pc.cost(pc.compile(np.eye(4), target="clements-4"))  # a unitary: one mesh
      >>> c.circuit, c.mzis, c.depth
      ('unitary', 6, 4)
    """
    if not isinstance(prog, Program):
        raise InvalidTypeError(f"prog must be a photocomp.Program (from photocomp.compile or load); got {type(prog).__name__}")
    prog.require_full_tiles("cost")
    batch = check_int(batch, "batch", low=1)
    group_index = check_real(group_index, "group_index", low=0.0, low_open=True)
    t = prog.target
    pm = prog.phase_map
    k = pm.grid.tile
    n_mzi = pm.layout.n_mzi
    tiles = pm.n_tiles
    m_out, n_in = prog.shape
    mzis = pm.n_mzi_per_tile
    shifters = sum(g.stop - g.start for g in heater_slices(t, prog.circuit).values())

    graph = prog.graph(0)
    loss, path_mzis, path_ps, path_cross = worst_path(graph, t)
    path_mm = optical_path_mm(graph, t.column_pitch_um)

    power, power_source = heater_powers(prog)
    per_tile = power.sum(axis=-1)

    f_hz = t.clock_ghz * 1e9
    optical_ns, optical_cycles = t.flight(path_mm, group_index)
    settle_ns, settle_cycles = t.settle_ns, t.settle_cycles
    latency_cycles = tiles * (settle_cycles + batch + optical_cycles)
    latency_s = latency_cycles / f_hz
    throughput = m_out * n_in * batch / latency_s
    peak = k * k * f_hz
    duty = tiles * batch / latency_cycles

    err, error_source = _precision(prog)
    bits = math.log2(1.0 / max(err, 2.0**-_FLOAT64_BITS))
    out_bits = max(0.0, min(bits, float(t.adc_bits)))
    mean_power = float(per_tile.mean())
    return Cost(
        target=t.name,
        circuit=prog.circuit,
        shape=(m_out, n_in),
        n_tiles=tiles,
        batch=batch,
        clock_ghz=float(t.clock_ghz),
        mzis_per_mesh=n_mzi,
        mzis=mzis,
        phase_shifters=shifters,
        mzi_settings=mzis * tiles,
        phase_settings=shifters * tiles,
        depth=prog.depth,
        phase_layers=phase_layers(t, prog.circuit),
        path_mzis=path_mzis,
        path_phase_shifters=path_ps,
        path_crossings=path_cross,
        insertion_loss_db=loss,
        heater_power_mw=mean_power,
        heater_power_max_mw=float(per_tile.max()),
        power_source=power_source,
        optical_path_mm=path_mm,
        group_index=group_index,
        optical_latency_ns=optical_ns,
        optical_latency_cycles=optical_cycles,
        settle_ns=settle_ns,
        settle_cycles=settle_cycles,
        latency_cycles=latency_cycles,
        latency_ns=latency_s * 1e9,
        weight_refresh_hz=tiles / latency_s,
        compute_duty=duty,
        throughput_macs=throughput,
        peak_macs=peak,
        heater_energy_per_mac_pj=mean_power * 1e-3 / throughput * 1e12,
        matrix_error=err,
        error_source=error_source,
        effective_bits=bits,
        adc_bits=t.adc_bits,
        output_bits=out_bits,
        equivalent_ops=2.0 * peak * duty * out_bits / 8.0,
    )
