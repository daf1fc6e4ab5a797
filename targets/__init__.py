"""Chip targets: constructor functions returning :class:`photocomp.Target` values.

Physics defaults follow published measurements (see ``targets/physics.py``).
Registered in the ``photocomp.targets`` entry-point group; a lab can ship its
own targets the same way from a separate package.
"""

from photocomp.targets.chips import pace_64, tianshu_128
from photocomp.targets.generic import bell, butterfly, clements, fldzhyan, mzi3, mzix, reck

__all__ = ["clements", "reck", "mzi3", "mzix", "bell", "butterfly", "fldzhyan", "pace_64", "tianshu_128"]
