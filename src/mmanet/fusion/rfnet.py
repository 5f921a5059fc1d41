"""RFNet's region-aware fusion (Ding et al., ICCV 2021).

A probability-map generator splits the positions into K soft regions; inside each
region the present modalities are weighted by a softmax of a score of their region-pooled
features, and the region-wise weighted sums are recombined with the region probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmanet.fusion.common import (
    Projection,
    as_maps,
    modality_losses,
    present_of,
    restore,
    weighted_cross_entropy,
)


class RFNetFusion(nn.Module):
    """Region-aware fusion; ``out_channels = m c`` with c = max(channels).

    With F_i the (projected, absent-zeroed) modality maps, P the present modalities:

        P_k(p) = softmax_k(G(cat(F_1, ..., F_m))(p))          K soft regions,
        v_{k,i} = Σ_p P_k(p) F_i(p) / (Σ_p P_k(p) + ε)        region-pooled features,
        w_{k,i} = softmax_{i∈P}(u_kᵀ v_{k,i} + b_k)              (w_{k,i} = 0 for i ∉ P),
        F(p) = Σ_k P_k(p) Σ_i w_{k,i} F_i(p),
        out = ReLU(BN(conv_3×3(F))).

    G is conv_3×3 (m c → c) → ReLU → conv_1×1 (c → K). On 1×1 maps (vector inputs) the
    3×3 convs see only their centre tap, i.e. they are 1×1 convs; pass ``kernel_size=1``
    to avoid the unused taps' parameters.

    Auxiliary terms (``aux=True``, training mode), see :meth:`auxiliary_loss`: a shared
    per-modality 1×1 conv classifier on each F_i alone, and region deep supervision of the
    region logits G(·) against segmentation labels when K == ``num_classes``.

    The last region probabilities (b, K, h, w) and weights w (b, K, m) are kept, detached,
    in ``last_probabilities`` and ``last_weights``.
    """

    def __init__(
        self,
        channels: Sequence[int],
        num_classes: int,
        *,
        regions: int = 4,
        aux: bool = False,
        kernel_size: int = 3,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if regions < 1:
            raise ValueError(f"regions must be >= 1, got {regions}")
        self.project = Projection(channels)
        self.channels = list(channels)
        c, m = self.project.width, len(self.channels)
        self.num_classes = num_classes
        self.regions = regions
        self.eps = eps
        pad = kernel_size // 2
        self.generator = nn.Sequential(
            nn.Conv2d(m * c, c, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, regions, 1),
        )
        self.score = nn.Parameter(torch.zeros(regions, c))  # u_k: one linear score per region
        self.score_bias = nn.Parameter(torch.zeros(regions))
        nn.init.normal_(self.score, std=c**-0.5)
        self.out = nn.Sequential(
            nn.Conv2d(c, m * c, kernel_size, padding=pad, bias=False),
            nn.BatchNorm2d(m * c),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(c, num_classes, 1) if aux else None
        self.out_channels: int = m * c
        self.last_probabilities: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None
        self._aux: tuple[list[torch.Tensor], torch.Tensor, torch.Tensor] | None = None

    def forward(self, features: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        maps, vector = as_maps(features, mask, self.channels)
        present = present_of(mask)
        maps = self.project(maps, present)
        stacked = torch.stack(maps, dim=1)  # (b, m, c, h, w)
        region_logits = self.generator(torch.cat(maps, dim=1))  # (b, K, h, w)
        prob = region_logits.softmax(dim=1)
        flat_prob = prob.flatten(2)  # (b, K, hw)
        pooled = torch.einsum("bkp,bmcp->bkmc", flat_prob, stacked.flatten(3))
        pooled = pooled / (flat_prob.sum(dim=2)[:, :, None, None] + self.eps)
        scores = torch.einsum("bkmc,kc->bkm", pooled, self.score) + self.score_bias[:, None]
        absent = ~present[:, None, :]  # (b, 1, m)
        weights = scores.masked_fill(absent, float("-inf")).softmax(dim=2)
        weights = weights.masked_fill(absent, 0.0)  # also clears rows with no modality
        per_position = torch.einsum("bkhw,bkm->bmhw", prob, weights)  # Σ_k P_k(p) w_{k,i}
        fused = (per_position[:, :, None] * stacked).sum(dim=1)
        self.last_probabilities, self.last_weights = prob.detach(), weights.detach()
        self._aux = None
        if self.head is not None and self.training:
            self._aux = ([self.head(x) for x in maps], mask, region_logits)
        return restore(self.out(fused), vector)

    def auxiliary_loss(
        self, labels: torch.Tensor, ignore_index: int | None = None
    ) -> torch.Tensor | None:
        """Sum of the auxiliary cross-entropies of the last training forward, or None.

        Σ_i CE(head(F_i), y) over the samples where modality i is present, plus, for
        segmentation labels (b, H, W) with K == num_classes, CE(G(·), y) over all samples.
        Logits of maps are global-average-pooled for labels (b,) and bilinearly upsampled
        to (H, W) for segmentation labels. The stored tensors are cleared.
        """
        if self._aux is None:
            return None
        logits, mask, region_logits = self._aux
        self._aux = None
        loss = modality_losses(logits, mask, labels, ignore_index)
        if labels.ndim == 3 and self.regions == self.num_classes:
            every = torch.ones(labels.shape[0], dtype=region_logits.dtype, device=labels.device)
            loss = loss + weighted_cross_entropy(region_logits, labels, every, ignore_index)
        return loss
