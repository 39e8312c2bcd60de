"""Spiking VGG-16 and ResNet-19 as in LTH-SNN (Kim et al., ECCV 2022), and a name registry."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ndsnn_triton.models.common import LTH_SNN_LIF
from ndsnn_triton.models.resnet import SpikingBasicBlock, SpikingResNet, resnet19
from ndsnn_triton.models.small import SmallSpikingCNN, small_snn
from ndsnn_triton.models.vgg import CFG_D, SpikingVGG, vgg16

MODELS: dict[str, Callable[..., nn.Module]] = {
    "vgg16": vgg16,
    "resnet19": resnet19,
    "small": small_snn,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a model by name (``"vgg16"``, ``"resnet19"``, ``"small"``) with its keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = [
    "CFG_D",
    "LTH_SNN_LIF",
    "MODELS",
    "SmallSpikingCNN",
    "SpikingBasicBlock",
    "SpikingResNet",
    "SpikingVGG",
    "build_model",
    "resnet19",
    "small_snn",
    "vgg16",
]
