"""Fusion modules. One interface: ``fusion(features, mask) -> fused``.

``features`` is the list of per-modality feature tensors in modality order, each (b, c_i)
or (b, c_i, h, w) (all of one kind, maps of one size); ``mask`` is the (b, m) 0/1 mask of
present modalities. Every module's output is invariant to the values of absent inputs, and
every module has ``out_channels``, the fused width. Modules with auxiliary terms (rfnet,
mmformer with ``aux=True``) expose ``auxiliary_loss(labels, ignore_index=None)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from mmanet.fusion.concat import ConcatFusion
from mmanet.fusion.hemis import HeMISFusion
from mmanet.fusion.lcr import LCRFusion
from mmanet.fusion.mmformer import MMFormerFusion
from mmanet.fusion.rfnet import RFNetFusion

FUSIONS: dict[str, type[nn.Module]] = {
    "concat": ConcatFusion,
    "hemis": HeMISFusion,
    "lcr": LCRFusion,
    "rfnet": RFNetFusion,
    "mmformer": MMFormerFusion,
}


def build_fusion(
    name: str,
    channels: Sequence[int],
    num_classes: int,
    *,
    aux: bool = False,
    regions: int | None = None,
    vectors: bool = False,
) -> nn.Module:
    """The fusion module ``name`` for per-modality widths ``channels``.

    Args:
        name: one of :data:`FUSIONS`.
        channels: per-modality feature widths c_i, in modality order.
        num_classes: classes of the task, for the auxiliary heads (rfnet, mmformer).
        aux: build the auxiliary terms (rfnet, mmformer; ignored by the others).
        regions: RFNet's number of soft regions K (default 4; ignored by the others).
        vectors: the features are (b, c) vectors: RFNet's convolutions become 1×1.
    """
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; known: {', '.join(FUSIONS)}")
    if name == "rfnet":
        kernel_size = 1 if vectors else 3
        return RFNetFusion(
            channels, num_classes, regions=regions or 4, aux=aux, kernel_size=kernel_size
        )
    if name == "mmformer":
        return MMFormerFusion(channels, num_classes, aux=aux)
    return FUSIONS[name](channels)


def configured_fusion(
    cfg: Any, channels: Sequence[int], num_classes: int, *, vectors: bool = False
) -> nn.Module:
    """The fusion a model config asks for (``model.fusion``, ``fusion_aux``,
    ``fusion_regions``); ``"default"`` is concatenation."""
    name = "concat" if cfg.fusion == "default" else cfg.fusion
    return build_fusion(
        name,
        channels,
        num_classes,
        aux=cfg.fusion_aux,
        regions=cfg.fusion_regions,
        vectors=vectors,
    )


__all__ = [
    "FUSIONS",
    "ConcatFusion",
    "HeMISFusion",
    "LCRFusion",
    "MMFormerFusion",
    "RFNetFusion",
    "build_fusion",
    "configured_fusion",
]
