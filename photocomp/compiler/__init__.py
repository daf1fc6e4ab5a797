"""The compiler layer: the pass engine, decompositions, the compile driver and :class:`Program`.

The passes themselves live in :mod:`photocomp.passes` and are found through
the ``photocomp.passes`` entry-point group, like the chip targets
(:mod:`photocomp.targets`, group ``photocomp.targets``).
"""
