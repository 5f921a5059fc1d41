"""Helpers shared by the fusion modules.

Conventions: ``features`` is a list of m tensors, each (b, c_i) ("vectors") or
(b, c_i, h, w) ("maps"); ``mask`` is the (b, m) 0/1 tensor of present modalities.
Internally vectors are handled as (b, c, 1, 1) maps and turned back at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mmanet.outputs import AuxiliaryLogits


def check_channels(channels: Sequence[int]) -> list[int]:
    """The channel widths as a list; at least one modality, every width positive."""
    widths = [int(c) for c in channels]
    if not widths or any(c <= 0 for c in widths):
        raise ValueError(f"channels must be a non-empty list of positive widths, got {channels}")
    return widths


def as_maps(
    features: Sequence[torch.Tensor], mask: torch.Tensor, channels: Sequence[int]
) -> tuple[list[torch.Tensor], bool]:
    """Check the inputs and view vectors as (b, c, 1, 1) maps.

    Returns:
        the per-modality maps, and whether the inputs were vectors.
    """
    if len(features) != len(channels) or mask.ndim != 2 or mask.shape[1] != len(channels):
        raise ValueError(
            f"expected {len(channels)} modalities and a (b, {len(channels)}) mask, "
            f"got {len(features)} features and a mask of shape {tuple(mask.shape)}"
        )
    ndims = {f.ndim for f in features}
    if ndims not in ({2}, {4}):
        raise ValueError(f"features must all be (b, c) or all (b, c, h, w), got ndims {ndims}")
    # sizes as Python ints: under tracing (ONNX export) they are 0-d tensors, which compare
    # and hash as tensors, not as numbers
    widths = [int(f.shape[1]) for f in features]
    if widths != list(channels):
        raise ValueError(f"feature widths {widths} differ from the declared channels {channels}")
    vector = ndims == {2}
    maps = [f[:, :, None, None] if vector else f for f in features]
    if len({tuple(int(s) for s in f.shape[2:]) for f in maps}) != 1:
        raise ValueError("feature maps of all modalities must share their spatial size")
    return maps, vector


def restore(x: torch.Tensor, vector: bool) -> torch.Tensor:
    """(b, c, 1, 1) back to (b, c) when the inputs were vectors."""
    return x.flatten(1) if vector else x


def present_of(mask: torch.Tensor) -> torch.Tensor:
    """The (b, m) bool tensor ``mask > 0``."""
    return mask > 0


def zero_absent(maps: Sequence[torch.Tensor], present: torch.Tensor) -> list[torch.Tensor]:
    """x_i ← x_i where modality i is present, else exact zeros (also for inf/nan inputs)."""
    return [torch.where(present[:, i, None, None, None], x, 0.0) for i, x in enumerate(maps)]


class Projection(nn.Module):
    """Per-modality 1×1 conv to the common width c = max(channels); identity when all equal.

    x_i ← W_i x_i + b_i (a Linear per position), applied only when the widths differ.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        channels = check_channels(channels)
        self.width = max(channels)
        self.projections = (
            nn.ModuleList(nn.Conv2d(c, self.width, 1) for c in channels)
            if len(set(channels)) > 1
            else None
        )

    def forward(self, maps: Sequence[torch.Tensor], present: torch.Tensor) -> list[torch.Tensor]:
        """Project, then zero absent modalities again (the projection's bias is not zero)."""
        maps = zero_absent(maps, present)
        if self.projections is None:
            return maps
        return zero_absent([p(x) for p, x in zip(self.projections, maps, strict=True)], present)


class AuxiliaryFusion(nn.Module):
    """A fusion with auxiliary heads: ``forward`` gives the fused features only,
    ``forward_auxiliary`` also the heads' logits; a subclass implements
    ``fuse(features, mask, auxiliary) -> (fused, [AuxiliaryLogits, ...])``, computing
    the heads only when ``auxiliary``."""

    def forward(self, features: Sequence[torch.Tensor], mask: torch.Tensor) -> Any:
        return self.fuse(features, mask, auxiliary=False)[0]

    def forward_auxiliary(
        self, features: Sequence[torch.Tensor], mask: torch.Tensor
    ) -> tuple[Any, list[AuxiliaryLogits]]:
        """The fused features and the auxiliary heads' logits (none without heads)."""
        return self.fuse(features, mask, auxiliary=True)

    def fuse(
        self, features: Sequence[torch.Tensor], mask: torch.Tensor, auxiliary: bool
    ) -> tuple[Any, list[AuxiliaryLogits]]:
        raise NotImplementedError
