"""Sparse-training frontend: finding masks (the kernels in ``kernels/`` only run them)."""

from ndsnn_triton.sparse.masks import check_density, random_masks

__all__ = ["check_density", "random_masks"]
