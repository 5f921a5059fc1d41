"""ShaSpec's fusion (Wang et al., CVPR 2023; docs/methods/shaspec.md): a missing modality's
feature is the mean of the available modalities' shared features, a present one's is its
shared feature plus a residual of its shared and specific features, and the per-modality
results are concatenated.

``fusion(features, mask)``: each modality's feature is ``[shared ; specific]``, its two
halves of d channels stacked along dim 1 (the shared encoder's and the modality's own
specific encoder's output; :class:`mmanet.models.shaspec.SharedSpecificEncoder` computes
them). ``forward_shared_specific`` also returns the two halves and the domain classifier's
logits (:class:`~mmanet.outputs.SharedSpecific`), which ShaSpec's DAO and DCO terms read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmanet.fusion.common import Projection, as_maps, check_channels, present_of, restore
from mmanet.outputs import SharedSpecific
from mmanet.registry import FUSIONS


def available_mean(stacked: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The mean over each sample's present modalities of ``stacked`` (b, m, c[, h, w]); the
    absent modalities' values (even inf / nan) take no part. (b, c[, h, w])."""
    weight = present.view(*present.shape, *[1] * (stacked.ndim - 2))
    total = torch.where(weight, stacked, 0.0).sum(dim=1)
    return total / weight.sum(dim=1).clamp(min=1).to(stacked.dtype)


def fill_absent(maps: Sequence[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
    """(b, m, c[, h, w]): each absent modality's map replaced by the mean of the present
    ones' (ShaSpec's fill of a missing modality)."""
    stacked = torch.stack(list(maps), dim=1)
    weight = present.view(*present.shape, *[1] * (stacked.ndim - 2))
    return torch.where(weight, stacked, available_mean(stacked, present)[:, None])


@FUSIONS.register("shaspec")
class ShaSpecFusion(nn.Module):
    """Fill, residual fusion and concatenation of shared and specific features.

    With r_i, s_i the shared and specific features of modality i (d channels each) and P
    the sample's present modalities::

        f_i = r_i + conv([r_i ; s_i])        i ∈ P   (one conv for every modality)
        f_i = (1/|P|) Σ_{j∈P} r_j           i ∉ P

    and the output is ``cat(f_1, ..., f_m)``, ``out_channels = m·d``. ``conv`` is a 3 × 3
    convolution without bias on maps (their ``CompositionalLayer``), a linear map on
    vectors. The domain classifier is a linear layer d -> m on the spatially averaged
    specific features (their ``dom_classifier``); it is used only by the DCO loss.

    Args:
        channels: per-modality widths, each 2·d (shared and specific halves); differing
            widths are first projected to the widest (a 1 × 1 conv per modality, as HeMIS
            does), which must be even.
        vectors: the features are (b, 2d) vectors (the residual conv becomes 1 × 1).
    """

    def __init__(self, channels: Sequence[int], vectors: bool = False) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.project = Projection(self.channels)
        if self.project.width % 2:
            raise ValueError(
                "shaspec fusion: each modality's feature is [shared ; specific], two halves "
                f"of one width; got the odd width {self.project.width}"
            )
        self.width = self.project.width // 2  # d
        kernel = 1 if vectors else 3
        self.residual = nn.Conv2d(
            2 * self.width, self.width, kernel, padding=kernel // 2, bias=False
        )
        self.domain_classifier = nn.Linear(self.width, len(self.channels))
        self.out_channels: int = len(self.channels) * self.width

    def forward(self, features: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return self.forward_shared_specific(features, mask, classify=False)[0]

    def forward_shared_specific(
        self, features: Sequence[torch.Tensor], mask: torch.Tensor, classify: bool = True
    ) -> tuple[torch.Tensor, SharedSpecific]:
        """The fused features and the shared / specific halves (the domain logits when
        ``classify``)."""
        maps, vector = as_maps(features, mask, self.channels)
        present = present_of(mask)  # (b, m)
        stacked = torch.stack(self.project(maps, present), dim=1)  # (b, m, 2d, h, w)
        shared, specific = stacked[:, :, : self.width], stacked[:, :, self.width :]  # absent: 0
        m = len(self.channels)
        residual = self.residual(stacked.flatten(0, 1)).unflatten(0, (-1, m))  # (b, m, d, h, w)
        weight = present[:, :, None, None, None]
        fill = available_mean(shared, present)[:, None]  # (b, 1, d, h, w)
        fused = torch.where(weight, shared + residual, fill)
        out = restore(fused.flatten(1, 2), vector)  # (b, m·d[, h, w])
        logits = []
        if classify:  # (b, m) per modality, on the spatially averaged specific features
            logits = [self.domain_classifier(specific[:, i].mean(dim=(2, 3))) for i in range(m)]
        parts = SharedSpecific(
            [restore(shared[:, i], vector) for i in range(m)],
            [restore(specific[:, i], vector) for i in range(m)],
            logits,
        )
        return out, parts
