"""ndsnn_triton: sparse spiking neural network training on GPUs.

Import this package to register the ``torch.ops.ndsnn.*`` ops. Subpackages: ``nn`` (modules),
``models`` (VGG-16, ResNet-19), ``sparse`` (masks), ``kernels`` (compute backends),
``profiler`` (cost accounting and measurements).
"""

from ndsnn_triton import ops
from ndsnn_triton._version import __version__
from ndsnn_triton.backend import (
    get_backend,
    get_recompute_density,
    raise_deferred_spike_errors,
    set_backend,
    set_recompute_density,
    set_spike_check,
    spike_check_enabled,
    spike_check_mode,
    use_backend,
    use_recompute_density,
    use_spike_check,
)
from ndsnn_triton.ops import lif_multistep, masked_conv2d, masked_linear

__all__ = [
    "__version__",
    "get_backend",
    "get_recompute_density",
    "lif_multistep",
    "masked_conv2d",
    "masked_linear",
    "ops",
    "raise_deferred_spike_errors",
    "set_backend",
    "set_recompute_density",
    "set_spike_check",
    "spike_check_enabled",
    "spike_check_mode",
    "use_backend",
    "use_recompute_density",
    "use_spike_check",
]
