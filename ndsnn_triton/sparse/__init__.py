"""Sparse-training frontend: layer-wise densities, masks, schedules and methods.

Finding masks lives here; the layers and kernels only run the masks they are given.
"""

from ndsnn_triton.sparse.attach import GraphedStep, Sparsifier, attach
from ndsnn_triton.sparse.distribution import (
    DISTRIBUTIONS,
    MIN_KEPT_PER_OUTPUT,
    erk_densities,
    layer_densities,
    layer_floors,
    uniform_densities,
)
from ndsnn_triton.sparse.masks import (
    MaskComparison,
    boundary_layers,
    compare_masks,
    densities_of,
    get_masks,
    global_magnitude_masks,
    load_masks,
    magnitude_masks,
    model_density,
    random_masks,
    save_masks,
    set_masks,
)
from ndsnn_triton.sparse.methods import METHODS, build_method
from ndsnn_triton.sparse.schedules import Schedule, Segment, cosine_decay, cubic_sparsity
from ndsnn_triton.sparse.validation import check_density

__all__ = [
    "DISTRIBUTIONS",
    "METHODS",
    "MIN_KEPT_PER_OUTPUT",
    "GraphedStep",
    "MaskComparison",
    "Schedule",
    "Segment",
    "Sparsifier",
    "attach",
    "boundary_layers",
    "build_method",
    "check_density",
    "compare_masks",
    "cosine_decay",
    "cubic_sparsity",
    "densities_of",
    "erk_densities",
    "get_masks",
    "global_magnitude_masks",
    "layer_densities",
    "layer_floors",
    "load_masks",
    "magnitude_masks",
    "model_density",
    "random_masks",
    "save_masks",
    "set_masks",
    "uniform_densities",
]
