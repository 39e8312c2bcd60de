"""Compute backends of the ``ndsnn::`` ops.

Each file holds one op family: its pure-PyTorch ``*_ref`` functions (the ``"torch"`` backend
and the reference every kernel is tested against) and, where written, its ``@triton.jit``
kernels with their launchers, registered with :func:`ndsnn_triton.backend.register_kernel`.
"""
