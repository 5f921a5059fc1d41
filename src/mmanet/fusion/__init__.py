"""Fusion modules. One interface: ``fusion(features, mask) -> fused``.

``features`` is the list of per-modality feature tensors in modality order, the
features of absent modalities already zeroed; ``mask`` is the (b, m) 0/1 mask.
"""

from mmanet.fusion.concat import ConcatFusion

FUSIONS = {"concat": ConcatFusion}

__all__ = ["FUSIONS", "ConcatFusion"]
