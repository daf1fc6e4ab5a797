"""Physics defaults shared by the built-in targets (docs/design.md §4.1, from published measurements).

| quantity                              | value      |
|---------------------------------------|------------|
| wavelength                            | 1550 nm    |
| silicon thermo-optic dn/dT            | 1.8e-4 /K  |
| heater P_pi                           | 25 mW      |
| heater time constant                  | 3 us       |
| phase vs. drive, V_pi                 | 4.4 V      |
| nearest-neighbour thermal crosstalk   | 1 % of phase |
| phase-shifter insertion loss          | 0.23 dB    |
| MZI insertion loss                    | 0.2 dB (spread 0.05 dB) |
| waveguide crossing insertion loss     | 0.18 dB    |
| coupler splitting-angle error sigma   | 0.03 rad   |
| DAC resolution                        | 12 bits    |

The crossing loss is that measured for a CMOS-compatible silicon crossing (0.18 +- 0.03 dB
across an 8-inch wafer); the lowest-loss published crossings lose about 0.04 dB. The cost
report's loss budget counts it, and the chip simulation applies it (the nominal value on every
chip); heaters' own losses are in the budget only.

Assumptions of the chip model (not in the published table; documented here so
they can be changed in one place): heater efficiency spread 5 %, waveguide
pitch 50 um, MZI column pitch 300 um, drive limit 2.5 P_pi, 10-bit detector
ADCs, 1e5 detected photons per unit power per shot, dark noise 1e-4.
"""

from photocomp.core.bell import edge_count
from photocomp.core.cell import get_cell
from photocomp.core.crossbar import crossbar_counts
from photocomp.core.layout import layout, mesh_counts

DEFAULTS = dict(
    wavelength_nm=1550.0,
    dn_dt_per_k=1.8e-4,
    heater_p_pi_mw=25.0,
    heater_tau_us=3.0,
    v_pi=4.4,
    crosstalk=0.01,
    phase_shifter_loss_db=0.23,
    mzi_loss_db=0.2,
    mzi_loss_sigma_db=0.05,
    crossing_loss_db=0.18,
    coupler_sigma_rad=0.03,
    dac_bits=12,
    clock_ghz=1.0,
    heater_efficiency_sigma=0.05,
    mode_pitch_um=50.0,
    column_pitch_um=300.0,
    drive_limit_p_pi=2.5,
    adc_bits=10,
    photons_per_shot=1.0e5,
    dark_noise=1.0e-4,
)


def component_count(size: int, cell: str = "mzi", mesh: str = "clements") -> int:
    """Approximate optical components of a 2-mesh SVD core: every mesh cell's components (an MZI: 2
    couplers + 2 shifters; K (K - 1) / 2 cells per Clements or Reck mesh, (K / 2) log2 K per butterfly,
    whose waveguide crossings are not counted here), K attenuator MZIs (4 each) and K output shifters; a mesh of symmetric cells
    (``"sweep"`` programming, :mod:`photocomp.core.bell`) adds its input phase layer (K shifters) and its
    edge shifters beside the columns. A crossbar: :func:`crossbar_components`."""
    c = get_cell(cell)
    if mesh == "crossbar":
        return crossbar_components(size)
    per_mesh = len(c.components) * mesh_counts(mesh, size)[0]
    if c.programming == "sweep":
        per_mesh += size + edge_count(layout("clements", size, cell=c))
    return 2 * per_mesh + 4 * size + size


def crossbar_components(size: int) -> int:
    """Optical components of a ``size x size`` crossbar core (:mod:`photocomp.core.crossbar`): its weight
    MZIs (2 couplers + 2 shifters each), the splitters and combiners of its fan-out and fan-in trees, one
    phase reference per output and a balanced pair of detectors per output.

    Example:
      >>> crossbar_components(64)
      24640
    """
    n = crossbar_counts(size)
    return 4 * n["cells"] + n["splitters"] + size + n["detectors"]
