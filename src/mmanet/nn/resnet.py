"""ResNet building blocks whose parameter names match torchvision's ``resnet18/34/50``.

A torchvision state dict therefore loads key for key (:func:`load_torchvision_weights`):
``conv1.weight``, ``bn1.running_mean``, ``layer1.0.conv1.weight``,
``layer2.0.downsample.0.weight``, ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1
    FOLDABLE = (("conv1", "bn1"), ("conv2", "bn2"))  # see mmanet.nn.folding

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a residual (ResNet-50)."""

    expansion = 4
    FOLDABLE = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


def make_layer(block: Block, inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """A ResNet stage of ``blocks`` blocks; the first strided, with a 1x1 downsample if needed."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_channels:
        downsample = nn.Sequential(
            conv1x1(inplanes, out_channels, stride), nn.BatchNorm2d(out_channels)
        )
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(out_channels, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def init_resnet_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out) convolutions; BatchNorm weight 1, bias 0."""
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            nn.init.kaiming_normal_(sub.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(sub, nn.BatchNorm2d):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


class ResNetStem(nn.Module):
    """conv1 (k x k/2, 64) + bn1 + relu + maxpool (3x3/2) + layer1 + layer2: stride 8 in all.

    (b, in_channels, h, w) -> (b, 128 * block.expansion, h/8, w/8); ``layers`` is the number
    of blocks in layer1 and layer2 ((2, 2) for ResNet-18, (3, 4) for ResNet-34/50).
    ``conv1_kernel``: 7 (torchvision's) or 3 (the MMANet authors' resnet18_se); both pad
    k // 2, so the output size is the same.
    """

    FOLDABLE = (("conv1", "bn1"),)

    def __init__(
        self,
        in_channels: int = 3,
        block: Block = BasicBlock,
        layers: Sequence[int] = (2, 2),
        conv1_kernel: int = 7,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, 64, conv1_kernel, stride=2, padding=conv1_kernel // 2, bias=False
        )
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = make_layer(block, 64, 64, layers[0], stride=1)
        self.layer2 = make_layer(block, 64 * block.expansion, 128, layers[1], stride=2)
        self.out_channels = 128 * block.expansion
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (b, 64, h/4, w/4)
        return self.layer2(self.layer1(x))  # (b, out_channels, h/8, w/8)


def load_torchvision_weights(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], complete: bool = False
) -> list[str]:
    """Load the keys of ``state_dict`` that ``module`` has (shapes must match); return them.

    Keys the module lacks (e.g. layer3, layer4 and fc for a stem) are ignored; with
    ``complete`` every key of the module must be there. Nothing is copied on an error.
    """
    own = module.state_dict()
    if complete:
        absent = [key for key in own if key not in state_dict]
        if absent:
            raise ValueError(
                f"no weight {absent[0]!r} ({len(absent)} of the module's {len(own)} missing)"
            )
    loaded = [key for key in state_dict if key in own]
    for key in loaded:
        if state_dict[key].shape != own[key].shape:
            raise ValueError(
                f"weight {key!r} has shape {tuple(state_dict[key].shape)}, "
                f"the module expects {tuple(own[key].shape)}"
            )
    module.load_state_dict({key: state_dict[key] for key in loaded}, strict=False)
    return loaded
