"""Targets modelled on published accelerators.

* ``pace-64``: a PACE-like 64 x 64 Clements core at a 1 GHz clock with 12-bit
  DACs and ~16,000 optical components.
* ``tianshu-128``: a Tianshu-like 128 x 128 core with 8-bit drive.
"""

from __future__ import annotations

from photocomp.core.target import Target
from photocomp.targets.physics import DEFAULTS


def pace_64() -> Target:
    """PACE-like 64 x 64 Clements accelerator: 1 GHz, 12-bit DACs, ~16,000 components.

    What is modelled: a 64 x 64 core at the published size, clock (up to
    1 GHz) and component count of PACE (Hua et al., Nature 2025: "more than
    16,000 photonic components"), as a Clements SVD core (two 64-mode meshes
    and 64 attenuators: 2 x 2016 + 64 = 4,096 MZIs of 4 components and 64
    output shifters, 16,448 components) with the default silicon physics
    (``targets/physics.py``).

    What is not known from the published figures, and so assumed: the
    arrangement of the real chip's components (the count also fits a
    fan-out / weight / fan-in crossbar: 64 input modulators, 4,096 weight
    cells, two trees of 64 x 63 splitters and combiners and 64 to 128
    detectors make 12,288 to 12,352 parts with one-component weight cells,
    24,576 to 24,640 with MZI weight cells, which brackets 16,000 without
    settling it; the ``crossbar-64`` target models the MZI-cell crossbar,
    24,640 components by :func:`photocomp.targets.physics.crossbar_components`,
    8,640 more than the published count against this core's 448, so no
    ``pace-64-crossbar`` is offered), its DAC resolution (12 bits here), heater power and
    time constant, losses and coupler statistics. Results on ``pace-64``
    are for this model, not measurements of the real chip.
    """
    return Target(
        name="pace-64", mesh="clements", size=64, components=16_000,
        description="PACE-like 64x64 Clements core, 1 GHz, 12-bit DAC",
        **{**DEFAULTS, "dac_bits": 12, "clock_ghz": 1.0},
    )


def tianshu_128() -> Target:
    """Tianshu-like 128 x 128 Clements accelerator with 8-bit phase drive."""
    return Target(
        name="tianshu-128", mesh="clements", size=128, components=4 * (128 * 127 + 128) + 128,
        description="Tianshu-like 128x128 Clements core, 8-bit DAC",
        **{**DEFAULTS, "dac_bits": 8},
    )
