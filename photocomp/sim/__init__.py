"""The simulation layer: one propagation engine for ideal and fabricated meshes.

:mod:`photocomp.sim.physical` propagates fields through meshes of 2 x 2 cells
given their coefficients; :mod:`photocomp.sim.ideal` evaluates a compiled
program on the ideal chip with it; :mod:`photocomp.sim.devices` runs per-tile
programs sharded across JAX devices. Imports only :mod:`photocomp.core`.
"""
