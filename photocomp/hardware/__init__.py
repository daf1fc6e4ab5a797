"""The hardware layer: fabricated chips, their simulation, detectors and DACs.

:mod:`~photocomp.hardware.chip` samples a chip's hidden errors from its
target's statistics, :mod:`~photocomp.hardware.chipsim` simulates it with the
engine of :mod:`photocomp.sim`, :mod:`~photocomp.hardware.detector` reads it
out as a black box, :mod:`~photocomp.hardware.dac` quantizes drives.
"""
