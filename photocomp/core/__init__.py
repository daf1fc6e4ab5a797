"""The core layer: conventions, mesh layouts, the IR, targets, metrics and input checks.

Nothing here simulates, fabricates or compiles; every other layer builds on it.
Imports only the standard library, NumPy, JAX and networkx.
"""
