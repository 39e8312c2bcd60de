"""Masked spiking layers: ``SpikeConv2d`` and ``SpikeLinear``.

Each keeps a dense ``weight`` parameter and a persistent bool ``mask`` buffer of the same shape
(the torchao frontend/backend hand-off). The forward multiplies by ``weight ⊙ mask`` through the
``ndsnn::`` ops, and the weight gradient is zero off the mask, so pruned weights that start at
zero stay exactly zero under SGD (momentum, weight decay) and Adam. ``mask_version`` counts
every in-place change of the mask; kernels rebuild compressed indices when it moves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ndsnn_triton.backend import aten_reference_enabled
from ndsnn_triton.companion import SpikeCompanion, companion_of
from ndsnn_triton.nn.masked_aten import masked_conv2d_aten, masked_linear_aten
from ndsnn_triton.ops import (
    HALF_DTYPES,
    SPIKE_DTYPES,
    masked_conv2d,
    masked_linear,
    record_mask_count,
)


def _compute_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype the op runs in: autocast's where autocast is on, else x's (weight's for
    compact int8/uint8/bool spikes)."""
    device_type = x.device.type
    if device_type in ("cpu", "cuda", "xpu", "mps") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return weight.dtype if x.dtype in SPIKE_DTYPES else x.dtype


def _op_input(x: Tensor, dtype: torch.dtype) -> Tensor:
    """x in the compute dtype; compact spikes stay compact (the op reads them as they are)."""
    return x if x.dtype in SPIKE_DTYPES else x.to(dtype)


def _op_param(p: Tensor, dtype: torch.dtype) -> Tensor:
    """A weight or bias as the op takes it: fp32 master values stay fp32 for a bf16/fp16 compute
    dtype (the op reads them as stored and returns their gradient in fp32: no cast either way);
    any other mismatch is cast."""
    keep = p.dtype == dtype or (p.dtype == torch.float32 and dtype in HALF_DTYPES)
    return p if keep else p.to(dtype)


def _spike_companion(layer: MaskedLayer, x: Tensor) -> SpikeCompanion | None:
    """The companion the producer of the spike input ``x`` attached (before any cast of ``x``)."""
    return companion_of(x) if layer.spike_input else None


class MaskedLayer:
    """Mixin for layers with a ``weight`` parameter and a bool ``mask`` buffer."""

    weight: nn.Parameter
    mask: Tensor
    spike_input: bool
    dense_weight_grad: bool

    def _init_mask(self, spike_input: bool) -> None:
        self.register_buffer(
            "mask", torch.ones_like(self.weight, dtype=torch.bool), persistent=True
        )
        self.spike_input = bool(spike_input)
        self.dense_weight_grad = False

    @torch.no_grad()
    def set_mask(self, mask: Tensor) -> None:
        """Replace the mask (in place, same tensor) and zero the newly pruned weights."""
        if not isinstance(mask, Tensor):
            raise TypeError(
                f"{type(self).__name__}.set_mask: mask must be a torch.Tensor, got {type(mask).__name__}"
            )
        if mask.dtype != torch.bool:
            raise TypeError(f"{type(self).__name__}.set_mask: mask must be bool, got {mask.dtype}")
        if mask.shape != self.weight.shape:
            raise ValueError(
                f"{type(self).__name__}.set_mask: mask shape {tuple(mask.shape)} does not match "
                f"weight shape {tuple(self.weight.shape)}"
            )
        self.mask.copy_(mask)
        kept = int(self.mask.sum())  # the one host synchronisation of a mask change
        self._note_kept(kept)
        self.apply_mask(kept)

    @torch.no_grad()
    def keep_all(self) -> None:
        """Make the mask full (every weight kept); no count or weight pass is needed."""
        self.mask.fill_(True)
        self._note_kept(self.mask.numel())

    def _mask_state(self) -> tuple[int, int]:
        # Storage and version: a copied model (new storage) or an in-place change (new version)
        # never matches a count taken before.
        return self.mask.data_ptr(), self.mask._version

    def _note_kept(self, kept: int) -> None:
        """Remember the mask's kept count for `kept_weights` and the kernels' index sizing."""
        self._kept = (self._mask_state(), kept)
        record_mask_count(self.mask, kept)

    @property
    def kept_weights(self) -> int:
        """Number of weights the mask keeps (counted once per mask change)."""
        known = getattr(self, "_kept", None)
        if known is None or known[0] != self._mask_state():
            self._kept = known = (self._mask_state(), int(self.mask.sum()))
        return known[1]

    @torch.no_grad()
    def apply_mask(self, kept: int | None = None) -> None:
        """Set the pruned weights to exactly zero (a no-op, leaving the weight untouched, when
        nothing is pruned). ``kept``: the mask's count of kept weights, if already known."""
        kept = self.kept_weights if kept is None else kept
        if kept < self.mask.numel():
            self.weight.masked_fill_(~self.mask, 0)

    @property
    def mask_version(self) -> int:
        """Counter that moves on every in-place change of ``mask`` (``set_mask``, ``load_state_dict``...)."""
        return self.mask._version

    @property
    def density(self) -> float:
        """Fraction of weights kept by the mask, in [0, 1]."""
        return self.kept_weights / self.mask.numel()

    def _mask_repr(self) -> str:
        return f"density={self.density:.4f}, spike_input={self.spike_input}"


class SpikeConv2d(MaskedLayer, nn.Conv2d):
    """Masked ``nn.Conv2d`` over time-first spike maps.

    Takes ``nn.Conv2d``'s arguments plus ``spike_input`` (True: the input is binary spikes, which
    the op checks and the kernels exploit; False: analog input such as the image stem).
    Input ``[T, B, Cin, H, W]``, output ``[T, B, Cout, Hout, Wout]``. Only ``padding_mode='zeros'``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        spike_input: bool = True,
    ) -> None:
        if padding_mode != "zeros":
            raise ValueError(
                f"SpikeConv2d: only padding_mode='zeros' is supported, got {padding_mode!r}"
            )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device,
            dtype,
        )
        self._padding_ints = self._explicit_padding()
        self._init_mask(spike_input)

    def _explicit_padding(self) -> list[int]:
        if self.padding == "valid":
            return [0, 0]
        if self.padding == "same":
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            if any(t % 2 for t in total):
                raise ValueError(
                    f"SpikeConv2d: padding='same' needs symmetric padding; kernel {self.kernel_size} "
                    f"with dilation {self.dilation} would pad asymmetrically"
                )
            return [t // 2 for t in total]
        return list(self.padding)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"SpikeConv2d: input must be [T, B, C, H, W] (5-D), got {shape}")
        dtype = _compute_dtype(x, self.weight)
        if aten_reference_enabled():
            bias = None if self.bias is None else self.bias.to(dtype)
            y = masked_conv2d_aten(
                x.flatten(0, 1).to(dtype),
                self.weight,
                self.mask,
                bias,
                dtype,
                self.stride,
                self._padding_ints,
                self.dilation,
                self.groups,
            )
            return y.unflatten(0, x.shape[:2])
        x4 = x.flatten(0, 1)
        y = masked_conv2d(
            _op_input(x4, dtype),
            _op_param(self.weight, dtype),
            self.mask,
            None if self.bias is None else _op_param(self.bias, dtype),
            list(self.stride),
            self._padding_ints,
            list(self.dilation),
            self.groups,
            spike_input=self.spike_input,
            dense_weight_grad=self.dense_weight_grad,
            companion=_spike_companion(self, x4),
        )
        return y.unflatten(0, x.shape[:2])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._mask_repr()}"


class SpikeLinear(MaskedLayer, nn.Linear):
    """Masked ``nn.Linear`` over time-first spike vectors.

    Takes ``nn.Linear``'s arguments plus ``spike_input``. Input ``[T, B, in]`` (any leading dims),
    output ``[T, B, out]``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        spike_input: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_mask(spike_input)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() < 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"SpikeLinear: input must be [T, B, in_features] (at least 2-D), got {shape}"
            )
        dtype = _compute_dtype(x, self.weight)
        if aten_reference_enabled():
            bias = None if self.bias is None else self.bias.to(dtype)
            return masked_linear_aten(x.to(dtype), self.weight, self.mask, bias, dtype)
        x2 = x.reshape(-1, x.shape[-1])
        y = masked_linear(
            _op_input(x2, dtype),
            _op_param(self.weight, dtype),
            self.mask,
            None if self.bias is None else _op_param(self.bias, dtype),
            spike_input=self.spike_input,
            dense_weight_grad=self.dense_weight_grad,
            companion=_spike_companion(self, x2),
        )
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._mask_repr()}"


def masked_layers(model: nn.Module) -> list[tuple[str, MaskedLayer]]:
    """``(name, module)`` of every maskable layer of ``model``, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MaskedLayer)]


@contextlib.contextmanager
def dense_weight_grads(model: nn.Module) -> Iterator[None]:
    """Forward passes run inside the block give every masked layer its full dense weight gradient.

    The flag is taken at forward time, so run the forward (and its backward) inside the block.
    Gradient-based growth (NDSNN, RigL) needs ``dL/dW`` at pruned positions on mask-update steps
    only; elsewhere the weight gradient is computed at mask positions alone.
    """
    layers = [m for _, m in masked_layers(model)]
    previous = [m.dense_weight_grad for m in layers]
    for m in layers:
        m.dense_weight_grad = True
    try:
        yield
    finally:
        for m, flag in zip(layers, previous, strict=True):
            m.dense_weight_grad = flag
