"""DMRNet's probabilistic embedding (docs/methods/dmrnet.md): a representation becomes a
Gaussian N(μ, σ²) whose μ and log σ² are read off it by two parallel heads.

Training passes the reparameterised sample z = μ + ε·σ (ε ~ N(0, I), σ = exp(½ log σ²));
evaluation passes z = μ, so the deployed network is deterministic.
"""

from __future__ import annotations

import torch
from torch import nn


def _projection(channels: int, spatial: bool) -> nn.Sequential:
    """A 1x1 conv + BN on (b, c, h, w) maps (the authors'), or linear + BN on (b, c)."""
    if spatial:
        return nn.Sequential(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels))
    return nn.Sequential(nn.Linear(channels, channels), nn.BatchNorm1d(channels))


class ProbabilisticEmbedding(nn.Module):
    """``forward(x) -> (z, μ, log σ²)``, all of x's shape.

    Args:
        channels: c, the width of x (and of μ, log σ² and z).
        spatial: x is a (b, c, h, w) map (1x1 convolutions) rather than (b, c) vectors.
    """

    def __init__(self, channels: int, spatial: bool = True) -> None:
        super().__init__()
        self.mu = _projection(channels, spatial)
        self.logvar = _projection(channels, spatial)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.mu(x), self.logvar(x)
        if not self.training:
            return mu, mu, logvar
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp(), mu, logvar


__all__ = ["ProbabilisticEmbedding"]
