"""LCR fusion: latent correlation representation (Zhou et al., IEEE TIP 2021).

Each modality j predicts, from its globally pooled features, per-channel linear
coefficients that express every other modality i as α_{j→i} ⊙ F_j + β_{j→i}. A missing
modality is replaced by the average of these estimates from the present ones (our
reading of the paper's latent representation); the completed representations are then
fused by channel attention, spatial attention and a 1×1 conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmanet.fusion.common import Projection, as_maps, present_of, restore
from mmanet.registry import FUSIONS


class ParameterEstimator(nn.Module):
    """Modality j's parameter-estimation module: GAP → Linear → ReLU → Linear.

    θ_j = W_2 ReLU(W_1 GAP(F_j) + b_1) + b_2 ∈ R^{2(m−1)c}, read as (a, β) per target i ≠ j
    with α = 1 + a. The last layer starts at zero, so initially α = 1, β = 0 and the latent
    estimate of a missing modality is the mean of the present ones.
    """

    def __init__(self, width: int, targets: int, hidden: int) -> None:
        super().__init__()
        self.width = width
        self.targets = targets
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * targets * width)
        )
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, c, h, w) -> α, β, each (b, m − 1, c, 1, 1)."""
        theta = self.mlp(x.mean(dim=(2, 3))).view(-1, self.targets, 2, self.width, 1, 1)
        return 1.0 + theta[:, :, 0], theta[:, :, 1]


class ChannelSpatialAttention(nn.Module):
    """Channel attention (squeeze-excitation) followed by spatial attention.

    X' = X ⊙ σ(W_2 ReLU(W_1 GAP(X))),  X'' = X' ⊙ σ(conv_7×7([mean_c X', max_c X'])).
    On 1×1 maps (vector inputs) the 7×7 conv sees only its centre tap (zero padding), so the
    spatial step is a per-sample scalar gate.
    """

    def __init__(self, width: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(width // reduction, 8)
        self.channel = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, width)
        )
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.sigmoid(self.channel(x.mean(dim=(2, 3))))[:, :, None, None]
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


@FUSIONS.register("lcr")
class LCRFusion(nn.Module):
    """Latent correlation fusion; ``out_channels = m c`` with c = max(channels).

    For each target modality i, with P the present modalities of the sample:

        L_i = (1/|P∖{i}|) Σ_{j∈P∖{i}} (α_{j→i} ⊙ F_j + β_{j→i})   (0 when P∖{i} = ∅),
        R_i = F_i if i ∈ P else L_i,
        out = ReLU(BN(conv_1×1(Att(cat(R_1, ..., R_m))))).

    Reading of the paper: the latent representation serves to complete the input, i.e. a
    missing modality is replaced by its latent estimate from the others, while present
    modalities are kept as they are.

    Args:
        channels: per-modality widths; projected by 1×1 convs to max(channels) if they differ.
        hidden: width of the estimators' hidden layer (default max(c // 4, 16)).
    """

    def __init__(self, channels: Sequence[int], hidden: int | None = None) -> None:
        super().__init__()
        self.project = Projection(channels)
        self.channels = list(channels)
        c, m = self.project.width, len(self.channels)
        self.num_modalities = m
        self.estimators = nn.ModuleList(
            ParameterEstimator(c, max(m - 1, 1), hidden or max(c // 4, 16)) for _ in range(m)
        )
        self.attention = ChannelSpatialAttention(m * c)
        self.out = nn.Sequential(
            nn.Conv2d(m * c, m * c, 1, bias=False), nn.BatchNorm2d(m * c), nn.ReLU(inplace=True)
        )
        self.out_channels: int = m * c

    def complete(self, maps: list[torch.Tensor], present: torch.Tensor) -> list[torch.Tensor]:
        """The completed representations R_1..R_m from projected, zeroed (b, c, h, w) maps."""
        m = self.num_modalities
        coefficients = [est(x) for est, x in zip(self.estimators, maps, strict=True)]
        completed = []
        for i in range(m):
            total = torch.zeros_like(maps[i])
            count = torch.zeros_like(present[:, 0], dtype=maps[i].dtype)
            for j in range(m):
                if j == i:
                    continue
                alpha, beta = coefficients[j]
                slot = i if i < j else i - 1  # targets of j are the modalities other than j
                estimate = alpha[:, slot] * maps[j] + beta[:, slot]
                here = present[:, j]
                total = total + torch.where(here[:, None, None, None], estimate, 0.0)
                count = count + here.to(count.dtype)
            latent = total / count.clamp(min=1.0)[:, None, None, None]
            completed.append(torch.where(present[:, i, None, None, None], maps[i], latent))
        return completed

    def forward(self, features: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        maps, vector = as_maps(features, mask, self.channels)
        present = present_of(mask)
        completed = self.complete(self.project(maps, present), present)
        return restore(self.out(self.attention(torch.cat(completed, dim=1))), vector)
