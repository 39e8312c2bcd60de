"""Spiking VGG-16 (``vgg16_bn``, cfg D) as in LTH-SNN (Kim et al. 2022).

13 × [Conv3x3 (pad 1, bias) → BN → LIF], MaxPool 2×2 after convs 2, 4, 7, 10, 13, then
``Linear(512, classes)``; no hidden FC, no dropout. The first conv + BN run once on the static
image (direct coding). 14,715,584 prunable weights at 10 classes.

For inputs larger than 32×32 (TinyImageNet's 64×64) an ``AdaptiveAvgPool2d(1)`` precedes the
classifier so it still sees 512 features; Kim et al.'s code has no such pool (it is the identity at
32×32, where the model is exactly theirs). Averaged spikes are not binary, so the classifier then
takes analog input (``spike_input=False``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ndsnn_triton.models.common import (
    DirectEncoder,
    as_float,
    check_model_input,
    check_T,
    init_weights,
    make_lif,
)
from ndsnn_triton.nn import (
    SeqToANNContainer,
    SpikeConv2d,
    SpikeLinear,
    SpikeMaxPool2d,
    SpikingSequential,
)

#: VGG-16 configuration D: channel counts, "M" = 2×2 max pool.
CFG_D: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


class SpikingVGG(nn.Module):
    """Spiking VGG with direct coding. Input ``[B, C, H, W]`` image, output ``[T, B, classes]``."""

    def __init__(
        self,
        cfg: tuple[int | str, ...] = CFG_D,
        num_classes: int = 10,
        T: int = 5,
        in_channels: int = 3,
        image_size: int = 32,
        neuron: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.T = check_T(T, "vgg")
        pools = sum(1 for c in cfg if c == "M")
        if not isinstance(image_size, int) or image_size < 2**pools or image_size % 2**pools:
            raise ValueError(
                f"vgg: image_size must be a multiple of {2**pools} (one per max pool), got {image_size!r}"
            )
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"vgg: num_classes must be a positive int, got {num_classes!r}")
        self.in_channels, self.image_size = in_channels, image_size
        first = cfg[0]
        assert isinstance(first, int)
        self.encoder = DirectEncoder(in_channels, first, T, bias=True)
        layers: list[nn.Module] = [make_lif(neuron)]
        channels = first
        for c in cfg[1:]:
            if c == "M":
                layers.append(SeqToANNContainer(SpikeMaxPool2d(2)))
            else:
                assert isinstance(c, int)
                layers += [
                    SpikeConv2d(channels, c, 3, padding=1, bias=True),
                    SeqToANNContainer(nn.BatchNorm2d(c)),
                    make_lif(neuron),
                ]
                channels = c
        self.features = SpikingSequential(*layers)
        final_map = image_size // 2**pools
        self.avgpool = (
            SeqToANNContainer(nn.AdaptiveAvgPool2d(1)) if final_map > 1 else nn.Identity()
        )
        self.classifier = SpikeLinear(channels, num_classes, spike_input=final_map == 1)
        init_weights(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        check_model_input(x, self.T, self.in_channels, self.image_size, "vgg")
        x = self.features(self.encoder(x))
        if not isinstance(self.avgpool, nn.Identity):  # averaging needs float, even for int8 spikes
            x = self.avgpool(as_float(x, self.classifier.weight))
        return self.classifier(x.flatten(2))


def vgg16(
    num_classes: int = 10,
    T: int = 5,
    in_channels: int = 3,
    image_size: int = 32,
    neuron: dict[str, Any] | None = None,
) -> SpikingVGG:
    """Spiking VGG-16 of LTH-SNN. ``neuron`` overrides the LIF settings (``tau``, ``surrogate``, ...)."""
    return SpikingVGG(CFG_D, num_classes, T, in_channels, image_size, neuron)
