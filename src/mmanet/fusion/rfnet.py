"""RFNet's region-aware fusion (Ding et al., ICCV 2021).

A probability-map generator splits the positions into K soft regions; inside each
region the present modalities are weighted by a softmax of a score of their region-pooled
features, and the region-wise weighted sums are recombined with the region probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmanet.fusion.common import AuxiliaryFusion, Projection, as_maps, present_of, restore
from mmanet.outputs import AuxiliaryLogits
from mmanet.registry import FUSIONS


@FUSIONS.register("rfnet")
class RFNetFusion(AuxiliaryFusion):
    """Region-aware fusion; ``out_channels = m c`` with c = max(channels).

    With F_i the (projected, absent-zeroed) modality maps, P the present modalities:

        P_k(p) = softmax_k(G(cat(F_1, ..., F_m))(p))          K soft regions,
        v_{k,i} = Σ_p P_k(p) F_i(p) / (Σ_p P_k(p) + ε)        region-pooled features,
        w_{k,i} = softmax_{i∈P}(u_kᵀ v_{k,i} + b_k)              (w_{k,i} = 0 for i ∉ P),
        F(p) = Σ_k P_k(p) Σ_i w_{k,i} F_i(p),
        out = ReLU(BN(conv_3×3(F))).

    G is conv_3×3 (m c → c) → ReLU → conv_1×1 (c → K). On 1×1 maps (vector inputs) the
    3×3 convs see only their centre tap, i.e. they are 1×1 convs; ``vectors=True`` makes
    them 1×1 and avoids the unused taps' parameters.

    Auxiliary heads (``aux=True``), see :meth:`forward_auxiliary`: a shared per-modality
    1×1 conv classifier on each F_i alone (over the samples where modality i is present),
    and with ``region_supervision`` (dense labels) and K == ``num_classes``, the region
    logits G(·) themselves (over every sample).

    The last region probabilities (b, K, h, w) and weights w (b, K, m) are kept, detached,
    in ``last_probabilities`` and ``last_weights``.
    """

    def __init__(
        self,
        channels: Sequence[int],
        num_classes: int,
        *,
        regions: int | None = None,
        aux: bool = False,
        vectors: bool = False,
        region_supervision: bool = False,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        regions = 4 if regions is None else regions
        kernel_size = 1 if vectors else 3
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
        self.supervise_regions = aux and region_supervision and regions == num_classes
        self.out_channels: int = m * c
        self.last_probabilities: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None

    def fuse(
        self, features: list[torch.Tensor], mask: torch.Tensor, auxiliary: bool
    ) -> tuple[torch.Tensor, list[AuxiliaryLogits]]:
        """The fused features, and the auxiliary heads' logits when asked (none without
        ``aux``)."""
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
        heads = []
        if auxiliary and self.head is not None:
            heads = [AuxiliaryLogits(self.head(x), present[:, i]) for i, x in enumerate(maps)]
            if self.supervise_regions:
                heads.append(AuxiliaryLogits(region_logits))
        return restore(self.out(fused), vector), heads
