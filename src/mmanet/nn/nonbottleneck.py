"""ERFNet's non-bottleneck-1D block ("NBt1D"), the block of ESANet's ResNet encoders and decoder."""

from __future__ import annotations

import torch
from torch import nn

ERFNET_BN_EPS = 1e-3


class NonBottleneck1D(nn.Module):
    """A BasicBlock whose 3x3 convs are each factorised into a 3x1 and a 1x3 conv (with bias).

    conv3x1 -> ReLU -> conv1x3 -> BN -> ReLU -> conv3x1 -> ReLU -> conv1x3 -> BN, plus the
    residual, then ReLU. The stride, if any, is carried by the first pair. Same constructor
    as :class:`~mmanet.nn.resnet.BasicBlock`, so :func:`~mmanet.nn.resnet.make_layer` builds
    stages of it.
    """

    expansion = 1
    FOLDABLE = (("conv1x3_1", "bn1"), ("conv1x3_2", "bn2"))  # see mmanet.nn.folding

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv3x1_1 = nn.Conv2d(inplanes, planes, (3, 1), stride=(stride, 1), padding=(1, 0))
        self.conv1x3_1 = nn.Conv2d(planes, planes, (1, 3), stride=(1, stride), padding=(0, 1))
        self.bn1 = nn.BatchNorm2d(planes, eps=ERFNET_BN_EPS)
        self.conv3x1_2 = nn.Conv2d(planes, planes, (3, 1), padding=(1, 0))
        self.conv1x3_2 = nn.Conv2d(planes, planes, (1, 3), padding=(0, 1))
        self.bn2 = nn.BatchNorm2d(planes, eps=ERFNET_BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1x3_1(self.relu(self.conv3x1_1(x)))))
        out = self.bn2(self.conv1x3_2(self.relu(self.conv3x1_2(out))))
        return self.relu(out + identity)
