"""HeMIS fusion (Havaei et al., MICCAI 2016): first and second moments over present modalities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmanet.fusion.common import Projection, as_maps, present_of, restore
from mmanet.registry import FUSIONS


@FUSIONS.register("hemis")
class HeMISFusion(nn.Module):
    """Mean and unbiased variance of the feature maps over the present modalities.

    With P the present modalities of a sample and n = |P|, elementwise:

        μ = (1/n) Σ_{i∈P} F_i,    σ² = (1/(n−1)) Σ_{i∈P} (F_i − μ)²  (σ² = 0 when n = 1),

    and the output is cat([μ, σ²], dim=1), ``out_channels = 2c``. No parameters besides the
    per-modality projection to c = max(channels) when the widths differ.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.project = Projection(channels)
        self.channels = list(channels)
        self.out_channels: int = 2 * self.project.width

    def forward(self, features: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        maps, vector = as_maps(features, mask, self.channels)
        present = present_of(mask)
        stacked = torch.stack(self.project(maps, present), dim=1)  # (b, m, c, h, w)
        weight = present.to(stacked.dtype)[:, :, None, None, None]
        count = weight.sum(dim=1)  # (b, 1, 1, 1)
        mean = stacked.sum(dim=1) / count.clamp(min=1.0)
        squares = (weight * (stacked - mean[:, None]) ** 2).sum(dim=1)
        var = torch.where(count > 1, squares / (count - 1).clamp(min=1.0), 0.0)
        return restore(torch.cat([mean, var], dim=1), vector)
