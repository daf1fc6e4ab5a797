"""Whole models onto chips: every linear layer of a model compiled to a target (``photocomp.compile_model``).

Readers for params trees (Flax, torch ``state_dict``), Equinox modules,
safetensors and ONNX files (:mod:`photocomp.models.sources`), the layout
conventions and im2col (:mod:`photocomp.models.layers`), the per-layer and
whole-model report (:mod:`photocomp.models.report`), the compiled-model file
(:mod:`photocomp.models.archive`) and ``compile_model`` / ``load_model``
(:mod:`photocomp.models.model`).
"""
