"""Concatenation fusion: the SF / modality-dropout baseline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmanet.fusion.common import check_channels
from mmanet.registry import FUSIONS


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenate the masked per-modality features along dim 1.

    z = cat(m_1 x_1, ..., m_m x_m), with m_i the mask column of modality i, so the output
    does not depend on the values of absent inputs. Works for any (b, c_i, ...) shape.

    Args:
        channels: per-modality widths c_i; ``out_channels = Σ_i c_i``. Optional for the
            callers that build ``ConcatFusion()`` without them: ``out_channels`` is then
            0 until the first forward, which sets it from the feature widths.
    """

    def __init__(self, channels: Sequence[int] | None = None) -> None:
        super().__init__()
        self.channels = None if channels is None else check_channels(channels)
        self.out_channels: int = 0 if self.channels is None else sum(self.channels)

    def forward(self, features: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        masked = [
            x * mask[:, i].view(-1, *[1] * (x.ndim - 1)).to(x.dtype) for i, x in enumerate(features)
        ]
        if self.channels is None:
            self.out_channels = sum(x.shape[1] for x in features)
        return torch.cat(masked, dim=1)
