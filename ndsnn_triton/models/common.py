"""Pieces shared by the spiking models: LIF defaults, direct-coding stem, input checks."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ndsnn_triton.nn import LIF, ATan, SeqToANNContainer, SpikeConv2d

#: LIF settings of LTH-SNN (Kim et al. 2022): H = 0.25·V + 0.75·X, hard reset to 0, ATan(2).
LTH_SNN_LIF: dict[str, Any] = {
    "tau": 4.0 / 3.0,
    "v_threshold": 1.0,
    "v_reset": 0.0,
    "decay_input": True,
    "detach_reset": True,
    "surrogate": ATan(alpha=2.0),
}


def make_lif(neuron: dict[str, Any] | None) -> LIF:
    """A LIF with LTH-SNN's settings, overridden by ``neuron``."""
    return LIF(**{**LTH_SNN_LIF, **(neuron or {})})


class DirectEncoder(nn.Module):
    """Direct coding: the first conv + BN run once on the static image, repeated over T.

    Input ``[B, C, H, W]`` (static image) or ``[T, B, C, H, W]`` (a sequence, run every step).
    Output ``[T, B, Cout, H, W]`` analog currents for the first LIF.
    """

    def __init__(self, in_channels: int, out_channels: int, T: int, bias: bool) -> None:
        super().__init__()
        self.T = T
        self.conv = SpikeConv2d(
            in_channels, out_channels, 3, padding=1, bias=bias, spike_input=False
        )
        self.bn = SeqToANNContainer(nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            y = self.bn(self.conv(x.unsqueeze(0)))
            return y.expand(self.T, *y.shape[1:])
        return self.bn(self.conv(x))


def as_float(x: Tensor, like: Tensor) -> Tensor:
    """``x`` as is if floating, else (compact int8 spikes) converted to ``like``'s dtype."""
    return x if x.is_floating_point() else x.to(like.dtype)


def check_model_input(
    x: Tensor, T: int, in_channels: int, image_size: int | None, model: str
) -> None:
    """Raise ``ValueError`` naming what is wrong with a model input."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{model}: input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5):
        raise ValueError(
            f"{model}: input must be an image batch [B, C, H, W] or a sequence [T, B, C, H, W], got shape {tuple(x.shape)}"
        )
    if x.dim() == 5 and x.shape[0] != T:
        raise ValueError(
            f"{model}: input sequence has T={x.shape[0]} steps but the model was built with T={T}"
        )
    if x.shape[-3] != in_channels:
        raise ValueError(
            f"{model}: input has {x.shape[-3]} channels, the model expects {in_channels}"
        )
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        raise ValueError(
            f"{model}: input is {tuple(x.shape[-2:])} but the model was built for {image_size}x{image_size} images"
        )


def init_weights(model: nn.Module, linear_std: float | None, conv_init: bool = True) -> None:
    """BN to (1, 0); if ``conv_init`` Kaiming-normal (fan_out) convs with zero bias; linears N(0, std) if given.

    What is not asked for keeps PyTorch's default initialisation.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and conv_init:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_T(T: int, model: str) -> int:
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"{model}: T must be a positive int (timesteps), got {T!r}")
    return T
