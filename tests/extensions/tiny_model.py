"""A model of one's own: a builder for any vector modalities."""

import math

import torch
from torch import nn

from mmanet.fusion import configured_fusion
from mmanet.models import UnifiedNetwork, register_model


class LinearHead(nn.Module):
    """fused (b, c) -> (the representation (b, 16), the logits (b, k))."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(width, 16), nn.ReLU())
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.hidden(fused)
        return features, self.classifier(features)


@register_model("tiny")
def build_tiny(cfg, modalities, input_shapes, num_classes, reg_head) -> UnifiedNetwork:
    encoders = {
        name: nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shapes[name]), 16), nn.ReLU())
        for name in modalities
    }
    fusion = configured_fusion(cfg, [16] * len(modalities), num_classes, vectors=True)
    head = lambda: LinearHead(fusion.out_channels, num_classes)  # noqa: E731
    return UnifiedNetwork(
        modalities, encoders, fusion, head(), input_shapes, reg_head=head() if reg_head else None
    )
