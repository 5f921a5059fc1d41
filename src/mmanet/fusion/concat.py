"""Concatenation fusion: the SF / modality-dropout baseline."""

from __future__ import annotations

import torch
from torch import nn


class ConcatFusion(nn.Module):
    """Concatenate the (already masked) per-modality features along dim 1.

    The mask is not needed: absent modalities are zeros by then (SPEC §1).
    """

    def forward(self, features: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return torch.cat(features, dim=1)
