"""LCR fusion: latent correlation representation (Zhou et al., IEEE TIP 2021).

Every modality's representation is transformed into a latent correlation
representation: its parameter-estimation module maps its own features to per-channel
coefficients, and the linear correlation expression writes the modality as a
combination of the other modalities' features under those coefficients. All m
correlation representations (an absent modality's built from the present ones alone)
are fused by channel attention, spatial attention and a 1×1 conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmanet.fusion.common import Projection, as_maps, present_of, restore
from mmanet.registry import FUSIONS


class ParameterEstimator(nn.Module):
    """Modality i's parameter-estimation module: GAP → Linear → ReLU → Linear.

    Γ_i = W_2 ReLU(W_1 GAP(F_i) + b_1) + b_2 ∈ R^{m c}, read as the coefficients
    α_{i←j} = 1 + a_{i←j} ∈ R^c of the m − 1 other modalities j (in modality order) and
    the offset δ_i ∈ R^c. The last layer starts at zero, so initially α = 1 and δ = 0.
    """

    def __init__(self, width: int, sources: int, hidden: int) -> None:
        super().__init__()
        self.width = width
        self.sources = sources
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, (sources + 1) * width),
        )
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, c, h, w) -> α (b, m − 1, c, 1, 1) and δ (b, c, 1, 1)."""
        theta = self.mlp(x.mean(dim=(2, 3))).view(-1, self.sources + 1, self.width, 1, 1)
        return 1.0 + theta[:, : self.sources], theta[:, self.sources]


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

    With F_i the projected features (exact zeros when i is absent), P the present
    modalities of the sample and (α_{i←j}, δ_i) = Γ_i = MPE_i(F_i), every modality i —
    present or absent — gets its latent correlation representation

        R_i = Σ_{j ≠ i} α_{i←j} ⊙ F_j + δ_i  =  Σ_{j ∈ P∖{i}} α_{i←j} ⊙ F_j + δ_i,

    and the fused features are out = ReLU(BN(conv_1×1(Att(cat(R_1, ..., R_m))))).

    A present modality's own features enter R_i through its coefficients Γ_i (and the
    other slots through F_i); an absent modality's Γ_i = MPE_i(0) is a learned constant,
    so its R_i is the estimate of it from the present modalities. With m = 1 there is no
    other modality and R_1 = F_1.

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
            ParameterEstimator(c, m - 1, hidden or max(c // 4, 16)) for _ in range(m)
        )
        self.attention = ChannelSpatialAttention(m * c)
        self.out = nn.Sequential(
            nn.Conv2d(m * c, m * c, 1, bias=False), nn.BatchNorm2d(m * c), nn.ReLU(inplace=True)
        )
        self.out_channels: int = m * c

    def correlate(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """R_1..R_m from the projected (b, c, h, w) maps, absent ones already exact zeros."""
        if self.num_modalities == 1:
            return list(maps)
        representations = []
        for i, estimator in enumerate(self.estimators):
            alpha, delta = estimator(maps[i])
            sources = [x for j, x in enumerate(maps) if j != i]
            terms = [alpha[:, k] * x for k, x in enumerate(sources)]
            representations.append(torch.stack(terms).sum(dim=0) + delta)
        return representations

    def forward(self, features: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        maps, vector = as_maps(features, mask, self.channels)
        correlated = self.correlate(self.project(maps, present_of(mask)))
        return restore(self.out(self.attention(torch.cat(correlated, dim=1))), vector)
