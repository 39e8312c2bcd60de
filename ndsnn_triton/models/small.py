"""A small spiking CNN sized for CPU runs (digits 8×8, Fashion-MNIST 28/32×32).

Stem conv3x3 in→32 + BN once on the static image (direct coding) → LIF → conv 32→64 → BN → LIF →
MaxPool 2 → conv 64→64 → BN → LIF → MaxPool 2 → Linear(64·(s/4)², classes). LTH-SNN LIF settings.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ndsnn_triton.models.common import (
    DirectEncoder,
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


class SmallSpikingCNN(nn.Module):
    """Input ``[B, C, s, s]`` (s divisible by 4), output ``[T, B, classes]``."""

    def __init__(
        self,
        num_classes: int = 10,
        T: int = 4,
        in_channels: int = 1,
        image_size: int = 8,
        width: int = 32,
        neuron: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.T = check_T(T, "small")
        if not isinstance(image_size, int) or image_size < 4 or image_size % 4:
            raise ValueError(f"small: image_size must be a multiple of 4, got {image_size!r}")
        self.in_channels, self.image_size = in_channels, image_size
        self.encoder = DirectEncoder(in_channels, width, T, bias=True)
        self.features = SpikingSequential(
            make_lif(neuron),
            SpikeConv2d(width, 2 * width, 3, padding=1),
            SeqToANNContainer(nn.BatchNorm2d(2 * width)),
            make_lif(neuron),
            SeqToANNContainer(SpikeMaxPool2d(2)),
            SpikeConv2d(2 * width, 2 * width, 3, padding=1),
            SeqToANNContainer(nn.BatchNorm2d(2 * width)),
            make_lif(neuron),
            SeqToANNContainer(SpikeMaxPool2d(2)),
        )
        self.classifier = SpikeLinear(2 * width * (image_size // 4) ** 2, num_classes)
        init_weights(self, linear_std=None)

    def forward(self, x: Tensor) -> Tensor:
        check_model_input(x, self.T, self.in_channels, self.image_size, "small")
        return self.classifier(self.features(self.encoder(x)).flatten(2))


def small_snn(
    num_classes: int = 10,
    T: int = 4,
    in_channels: int = 1,
    image_size: int = 8,
    neuron: dict[str, Any] | None = None,
) -> SmallSpikingCNN:
    """The small spiking CNN (about 60k weights at 8×8 input)."""
    return SmallSpikingCNN(num_classes, T, in_channels, image_size, 32, neuron)
