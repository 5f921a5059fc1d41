"""What a network returns: the fused features, the head's representation and logits, and
the optional outputs some architectures have (decoder side outputs, auxiliary heads).

Outputs are returned, never left on modules to be read back later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AuxiliaryLogits:
    """Logits of an auxiliary head (a fusion's per-modality classifier, a region map),
    trained with the task loss over the samples whose ``weights`` are 1.

    ``logits`` are (b, k) or (b, k, h, w) maps; the task pools or resizes them to its
    labels. ``weights`` is a (b,) 0/1 tensor (e.g. the modality's presence), or None for
    every sample.
    """

    logits: torch.Tensor
    weights: torch.Tensor | None = None


@dataclass
class GaussianEmbedding:
    """A probabilistic embedding N(μ, σ²) of a representation (DMRNet): ``mu`` and
    ``logvar`` = log σ², same shape, (b, c) or (b, c, h, w)."""

    mu: torch.Tensor
    logvar: torch.Tensor


@dataclass
class SharedSpecific:
    """ShaSpec's per-modality features (docs/methods/shaspec.md), in modality order: the
    shared encoder's and the specific encoders' outputs (zeros for an absent modality) and
    the domain classifier's (b, m) logits on the pooled specific features."""

    shared: list[torch.Tensor]  # each (b, d) or (b, d, h, w)
    specific: list[torch.Tensor]  # each (b, d) or (b, d, h, w)
    domain_logits: list[torch.Tensor] = field(default_factory=list)  # each (b, m)


@dataclass
class NetworkOutput:
    """One forward pass of a :class:`~mmanet.models.UnifiedNetwork` (or its teacher)."""

    fused: Any  # fusion output, the input of both heads (a tensor, or e.g. ESANetFeatures)
    features: torch.Tensor  # the head's representation before the classifier
    logits: torch.Tensor  # (b, k) or (b, k, h, w)
    side_logits: list[torch.Tensor] = field(default_factory=list)  # decoder side outputs
    auxiliary: list[AuxiliaryLogits] = field(default_factory=list)  # the fusion's heads
    embedding: GaussianEmbedding | None = None  # a probabilistic head's N(μ, σ²) (DMRNet)
    shared_specific: SharedSpecific | None = None  # ShaSpec's fusion's parts (training)


def fused_map(fused: Any) -> torch.Tensor:
    """The map MAD flattens when ``method.distill_features=fused``: the fusion output itself, or
    its ``map`` (ESANet: the fused bottleneck map after the context module)."""
    return fused if isinstance(fused, torch.Tensor) else fused.map


def select_samples(fused: Any, index: torch.Tensor) -> Any:
    """Samples ``index`` of a fusion output: a tensor, or an object with ``select(index)``."""
    return fused[index] if isinstance(fused, torch.Tensor) else fused.select(index)


__all__ = [
    "AuxiliaryLogits",
    "GaussianEmbedding",
    "NetworkOutput",
    "SharedSpecific",
    "fused_map",
    "select_samples",
]
