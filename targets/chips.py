"""Targets modelled on published accelerators.

* ``pace-64``: a PACE-like 64 x 64 Clements core at a 1 GHz clock with 12-bit
  DACs and ~16,000 optical components.
* ``tianshu-128``: a Tianshu-like 128 x 128 core with 8-bit drive.
"""

from __future__ import annotations

from photocomp.core.target import Target
from photocomp.targets.physics import DEFAULTS


def pace_64() -> Target:
    """PACE-like 64 x 64 Clements accelerator: 1 GHz, 12-bit DACs, ~16,000 components."""
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
