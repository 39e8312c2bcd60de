"""Spiking ResNet-19 as in LTH-SNN (Kim et al. 2022): ``ResNet(BasicBlock, [3, 3, 2])``.

Stem conv3x3 3→64 + BN once on the static image (direct coding) → LIF; three stages of
BasicBlocks with 128/256/512 channels, each stage's first block with stride 2 (maps 16, 8, 4 at
32×32 input) and a 1×1 conv + BN shortcut where the shape changes. Block:
``lif2(bn2(conv2(lif1(bn1(conv1 x)))) + shortcut x)``. Head: AdaptiveAvgPool(1) → fc1 512→256 →
LIF → fc2 256→classes. Convs have no bias. 12,619,968 prunable weights at 10 classes.
Weights keep PyTorch's default initialisation, as in Kim et al.'s code (their Kaiming init is
commented out).

``variant="zheng"`` gives the 128-channel-stem ResNet-19 of Zheng et al. (AAAI 2021: stem 3→128,
stages at maps 32, 16, 8) with plain BN in place of their tdBN.
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
from ndsnn_triton.nn import SeqToANNContainer, SpikeConv2d, SpikeLinear
from ndsnn_triton.nn.recompute import run_segment, run_tail


class SpikingBasicBlock(nn.Module):
    """Two 3×3 convs with BN and LIF, plus an identity or 1×1 conv + BN shortcut. ``[T, B, C, H, W]``."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, neuron: dict[str, Any] | None
    ) -> None:
        super().__init__()
        self.conv1 = SpikeConv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = SeqToANNContainer(nn.BatchNorm2d(planes))
        self.lif1 = make_lif(neuron)
        self.conv2 = SpikeConv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = SeqToANNContainer(nn.BatchNorm2d(planes))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                SpikeConv2d(in_planes, planes, 1, stride=stride, bias=False),
                SeqToANNContainer(nn.BatchNorm2d(planes)),
            )
        self.lif2 = make_lif(neuron)

    def forward(self, x: Tensor) -> Tensor:
        # Sparse enough, the block keeps only its int8 input and is rebuilt in backward.
        return run_segment(self._body, x, (self,), otherwise=self._forward_saving_convs)

    def _forward_saving_convs(self, x: Tensor) -> Tensor:
        """The convs keep their int8 inputs, and each weightless tail (BN → LIF) its float input,
        the conv output BN keeps anyway: h is rebuilt in backward."""
        out = run_tail(self._tail1, [self.conv1(x)], [self.bn1, self.lif1])
        y2 = self.conv2(out)
        if isinstance(self.shortcut, nn.Identity):
            return run_tail(self._tail2, [y2, x], [self.bn2, self.lif2], spikes=[False, True])
        shortcut_conv, shortcut_bn = self.shortcut[0], self.shortcut[1]
        return run_tail(self._tail2_bn, [y2, shortcut_conv(x)], [self.bn2, shortcut_bn, self.lif2])

    def _body(self, x: Tensor) -> Tensor:
        out = self.lif1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return self.lif2(out)

    def _tail1(self, y1: Tensor) -> Tensor:
        return self.lif1(self.bn1(y1))

    def _tail2(self, y2: Tensor, shortcut: Tensor) -> Tensor:
        return self.lif2(self.bn2(y2) + shortcut)

    def _tail2_bn(self, y2: Tensor, shortcut_conv: Tensor) -> Tensor:
        return self.lif2(self.bn2(y2) + self.shortcut[1](shortcut_conv))


_VARIANTS: dict[str, tuple[int, tuple[int, ...]]] = {
    # name: (stem channels, stride of each stage's first block)
    "kim": (64, (2, 2, 2)),
    "zheng": (128, (1, 2, 2)),
}


class SpikingResNet(nn.Module):
    """Spiking ResNet with direct coding. Input ``[B, C, H, W]`` image, output ``[T, B, classes]``."""

    def __init__(
        self,
        num_blocks: tuple[int, ...] = (3, 3, 2),
        widths: tuple[int, ...] = (128, 256, 512),
        num_classes: int = 10,
        T: int = 5,
        in_channels: int = 3,
        variant: str = "kim",
        hidden_features: int = 256,
        neuron: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.T = check_T(T, "resnet")
        if variant not in _VARIANTS:
            raise ValueError(
                f"resnet: unknown variant {variant!r}; expected one of {tuple(_VARIANTS)}"
            )
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"resnet: num_classes must be a positive int, got {num_classes!r}")
        if len(num_blocks) != len(widths):
            raise ValueError(
                f"resnet: num_blocks {num_blocks} and widths {widths} must have the same length"
            )
        stem, strides = _VARIANTS[variant]
        self.in_channels = in_channels
        self.encoder = DirectEncoder(in_channels, stem, T, bias=False)
        self.lif0 = make_lif(neuron)
        blocks: list[nn.Module] = []
        in_planes = stem
        for stage, (n, width) in enumerate(zip(num_blocks, widths, strict=True)):
            for i in range(n):
                stride = strides[stage] if i == 0 and stage < len(strides) else 1
                blocks.append(SpikingBasicBlock(in_planes, width, stride, neuron))
                in_planes = width
        self.layers = nn.Sequential(*blocks)
        self.avgpool = SeqToANNContainer(nn.AdaptiveAvgPool2d(1))
        # Averaged spikes are rates, not binary: fc1 takes analog input.
        self.fc1 = SpikeLinear(in_planes, hidden_features, spike_input=False)
        self.lif_fc = make_lif(neuron)
        self.fc2 = SpikeLinear(hidden_features, num_classes, spike_input=True)
        init_weights(self, linear_std=None, conv_init=False)

    def forward(self, x: Tensor) -> Tensor:
        check_model_input(x, self.T, self.in_channels, None, "resnet")
        x = self.layers(self.lif0(self.encoder(x)))
        x = self.avgpool(as_float(x, self.fc1.weight)).flatten(2)
        return self.fc2(self.lif_fc(self.fc1(x)))


def resnet19(
    num_classes: int = 10,
    T: int = 5,
    in_channels: int = 3,
    variant: str = "kim",
    neuron: dict[str, Any] | None = None,
) -> SpikingResNet:
    """Spiking ResNet-19 of LTH-SNN (``variant="kim"``) or Zheng et al.'s layout (``"zheng"``)."""
    return SpikingResNet(
        (3, 3, 2), (128, 256, 512), num_classes, T, in_channels, variant, 256, neuron
    )
