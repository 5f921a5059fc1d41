"""Squeeze-and-excitation: reweight the channels of a feature map by its global context."""

from __future__ import annotations

import torch
from torch import nn


class SEBlock(nn.Module):
    """Global average pool -> fc (c -> c/r) -> ReLU -> fc (c/r -> c) -> sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(self.pool(x).flatten(1))  # (b, c)
        return x * weights[:, :, None, None]
