"""A fusion of one's own: every present modality projected, gated and summed."""

import torch
from torch import nn

from mmanet.fusion import register_fusion


@register_fusion("gated")
class GatedFusion(nn.Module):
    """z = Σ_i m_i σ(g_i) W_i x_i over (b, c_i) vectors, m_i the modality's mask column."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.out_channels = max(channels)  # the fused width, read by the builder
        self.project = nn.ModuleList(nn.Linear(c, self.out_channels) for c in channels)
        self.gates = nn.Parameter(torch.zeros(len(channels)))

    def forward(self, features: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.gates) * mask  # (b, m): 0 for an absent modality
        projected = [p(x) for p, x in zip(self.project, features, strict=True)]
        return sum(gates[:, i, None] * z for i, z in enumerate(projected))
