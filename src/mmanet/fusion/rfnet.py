"""RFNet's region-aware fusion module, RFM (Ding et al., ICCV 2021).

A probability-map generator splits the positions into K soft regions; in each region a
joint MLP over every modality's region-pooled features gives one sigmoid gate per
modality; the gated region features are concatenated over the regions and convolved; a
short-cut branch convolves the concatenated modalities directly; the two halves are
concatenated. docs/methods.md#rfnet has the equations and the choices made here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmanet.fusion.common import AuxiliaryFusion, Projection, as_maps, present_of, restore
from mmanet.outputs import AuxiliaryLogits
from mmanet.registry import FUSIONS

NEGATIVE_SLOPE = 0.2  # RFNet's LeakyReLU slope, in its conv blocks and gate MLPs


@dataclass(frozen=True)
class RFNetWidths:
    """The inner widths of an RFM for input width c (the output width is always c)."""

    gate_hidden: int  # hidden units of each region's gate MLP
    prm_hidden: int  # hidden channels of the probability-map layer
    inner_divisor: int  # the conv blocks' inner width is c // inner_divisor

    def inner(self, c: int) -> int:
        return max(1, c // self.inner_divisor)


WIDTHS: dict[str, RFNetWidths] = {
    "paper": RFNetWidths(gate_hidden=128, prm_hidden=16, inner_divisor=1),  # RFNet's code
    "small": RFNetWidths(gate_hidden=16, prm_hidden=8, inner_divisor=4),  # for the CPU
}


def conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """conv (zero 'same' padding, no bias) → BN → LeakyReLU(0.2); the conv/BN pair folds."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
    )


def bottleneck(in_channels: int, inner: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """RFNet's three-block stack: 1×1 (in → inner), k×k (inner → inner), 1×1 (inner → out)."""
    return nn.Sequential(
        conv_block(in_channels, inner, 1),
        conv_block(inner, inner, kernel_size),
        conv_block(inner, out_channels, 1),
    )


def gate_mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """One region's joint gate MLP: Linear → LeakyReLU(0.2) → Linear (sigmoid applied after)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
        nn.Linear(hidden, out_features),
    )


@dataclass
class RFNetSettings:
    """``model.rfnet``: the soft regions K (None: 4; ESANet: the classes, supervised by
    the labels) and the inner widths, RFNet's paper's or scaled to the encoders."""

    regions: int | None = None
    widths: Literal["paper", "small"] = "paper"


@FUSIONS.register("rfnet", settings=RFNetSettings)
class RFNetFusion(AuxiliaryFusion):
    """RFNet's region-aware fusion; ``out_channels = 2 ⌊c/2⌋`` (= c for even c), c = max(c_i).

    With F_i the projected maps, absent modalities exact zeros, and ⊕ concatenation along
    the channels:

        E        = B_E(F_1 ⊕ … ⊕ F_m)                         generator embedding,
        Z        = E                     (deepest level, no guide)
                 = E ⊕ C_G(up(G))        (an inner level; G the level below's fused map),
        P_k(p)   = softmax_k(conv_1×1(D(Z)))(p)               K soft regions,
        v_{k,i}  = mean_p(P_k F_i) / (mean_p(P_k) + ε)        region-pooled features,
        g_{k,·}  = σ(MLP_k(v_{k,1} ⊕ … ⊕ v_{k,m} ⊕ mean_p P_k)) ∈ (0, 1)^m,
        R_k(p)   = Σ_i g_{k,i} P_k(p) F_i(p)                  gated region features,
        out      = B_R(R_1 ⊕ … ⊕ R_K) ⊕ B_S(F_1 ⊕ … ⊕ F_m)     region half ⊕ short-cut half.

    One MLP per region takes every modality's pooled features at once, so each gate
    depends on all modalities; an absent modality's gate is computed like the others and
    multiplies its zeros. B_E is 1×1 (m c → c/4), k×k, 1×1 (→ inner); D is a 1×1 conv
    block to ``prm_hidden``; C_G a k×k conv block (guide width → inner) after bilinear
    resizing; B_R (K c → …) and B_S (m c → …) are 1×1, k×k, 1×1 stacks (inner width,
    output ⌊c/2⌋ each). Every conv block is conv → BN → LeakyReLU(0.2); k = 3, or 1 with
    ``vectors`` (a 1×1 map, where a 3×3 conv only has its centre tap). Widths:
    :data:`WIDTHS` (``"small"`` default, ``"paper"`` RFNet's).

    When the region maps are supervised (``aux`` and ``region_supervision`` with K ==
    ``num_classes``), P is detached before the pooling and gating, as in RFNet: the
    generator then learns from its own supervision only; otherwise the fusion's loss
    trains it.

    Auxiliary heads (``aux=True``), see :meth:`forward_auxiliary`: with
    ``modality_heads``, one 1×1 conv classifier shared by the modalities, on each F_i
    alone (over the samples where i is present) — RFNet's shared-weight per-modality
    decoder on a classification network; with supervised regions, the region logits.

    The last P (b, K, h, w) and gates g (b, K, m) are kept, detached, in
    ``last_probabilities`` and ``last_weights``.
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
        guide_channels: int = 0,
        modality_heads: bool = True,
        widths: str = "small",
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        regions = 4 if regions is None else regions
        if regions < 1:
            raise ValueError(f"regions must be >= 1, got {regions}")
        if widths not in WIDTHS:
            raise ValueError(f"widths must be one of {sorted(WIDTHS)}, got {widths!r}")
        size = WIDTHS[widths]
        k = 1 if vectors else 3
        self.project = Projection(channels)
        self.channels = list(channels)
        c, m = self.project.width, len(self.channels)
        inner, half = size.inner(c), max(1, c // 2)
        self.num_classes = num_classes
        self.regions = regions
        self.eps = eps
        self.embedding = bottleneck(m * c, max(1, c // 4), inner, k)
        self.guide = conv_block(guide_channels, inner, k) if guide_channels > 0 else None
        self.prm = nn.Sequential(
            conv_block(inner * (2 if self.guide is not None else 1), size.prm_hidden, 1),
            nn.Conv2d(size.prm_hidden, regions, 1),
        )
        self.gates = nn.ModuleList(gate_mlp(m * c + 1, size.gate_hidden, m) for _ in range(regions))
        self.region_fusion = bottleneck(regions * c, inner, half, k)
        self.short_cut = bottleneck(m * c, inner, half, k)
        self.head = nn.Conv2d(c, num_classes, 1) if aux and modality_heads else None
        self.supervise_regions = aux and region_supervision and regions == num_classes
        self.out_channels: int = 2 * half
        self.last_probabilities: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None

    @property
    def guided(self) -> bool:
        """Whether the generator reads the fused map of the level below (``guide``)."""
        return self.guide is not None

    def region_logits(self, joint: torch.Tensor, guide: torch.Tensor | None) -> torch.Tensor:
        """The generator's (b, K, h, w) logits from F_1 ⊕ … ⊕ F_m (and the guide)."""
        z = self.embedding(joint)
        if self.guide is not None:
            if guide is None:
                raise ValueError("this RFNet fusion is built for a guide from the level below")
            up = F.interpolate(guide, size=z.shape[-2:], mode="bilinear", align_corners=True)
            z = torch.cat([z, self.guide(up)], dim=1)
        elif guide is not None:
            raise ValueError("this RFNet fusion has no guide input (guide_channels=0)")
        return self.prm(z)

    def region_gates(self, stacked: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        """g (b, K, m): per region, σ of the joint MLP over every modality's pooled
        features v_{k,i} and the region's mean probability."""
        flat_prob = prob.flatten(2)  # (b, K, hw)
        mean_prob = flat_prob.mean(dim=2)  # (b, K)
        pooled = torch.einsum("bkp,bmcp->bkmc", flat_prob, stacked.flatten(3))
        pooled = pooled / flat_prob.shape[2] / (mean_prob[:, :, None, None] + self.eps)
        inputs = torch.cat([pooled.flatten(2), mean_prob[:, :, None]], dim=2)  # (b, K, mc+1)
        scores = [mlp(inputs[:, index]) for index, mlp in enumerate(self.gates)]
        return torch.sigmoid(torch.stack(scores, dim=1))

    def fuse(
        self,
        features: list[torch.Tensor],
        mask: torch.Tensor,
        auxiliary: bool,
        guide: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[AuxiliaryLogits]]:
        """The fused features, and the auxiliary heads' logits when asked (none without
        ``aux``). ``guide``: the fused map of the level below, for a guided fusion."""
        maps, vector = as_maps(features, mask, self.channels)
        present = present_of(mask)
        maps = self.project(maps, present)  # absent modalities: exact zeros
        stacked = torch.stack(maps, dim=1)  # (b, m, c, h, w)
        joint = torch.cat(maps, dim=1)  # (b, m c, h, w)
        logits = self.region_logits(joint, guide)
        prob = logits.softmax(dim=1)
        if self.supervise_regions:
            prob = prob.detach()
        gates = self.region_gates(stacked, prob)
        regions = torch.einsum("bkm,bkhw,bmchw->bkchw", gates, prob, stacked)  # R_k
        fused = torch.cat([self.region_fusion(regions.flatten(1, 2)), self.short_cut(joint)], dim=1)
        self.last_probabilities, self.last_weights = prob.detach(), gates.detach()
        heads = []
        if auxiliary and self.head is not None:
            heads = [AuxiliaryLogits(self.head(x), present[:, i]) for i, x in enumerate(maps)]
        if auxiliary and self.supervise_regions:
            heads.append(AuxiliaryLogits(logits))
        return restore(fused, vector), heads
