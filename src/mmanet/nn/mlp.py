"""Small fully connected and convolutional building blocks for vector and tiny image views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

Norm = Literal["batch", "layer", "none"]


def norm_layer(norm: Norm, width: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm1d(width)
    if norm == "layer":
        return nn.LayerNorm(width)
    return nn.Identity()


def mlp_layers(
    in_features: int, widths: Sequence[int], dropout: float = 0.0, norm: Norm = "batch"
) -> nn.Sequential:
    """Linear -> normalisation -> ReLU (-> Dropout) for each width."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_features, width), norm_layer(norm, width), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = width
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Encoder of a flat feature vector: (b, d) -> (b, widths[-1])."""

    def __init__(self, in_features: int, widths: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = mlp_layers(in_features, widths, dropout)
        self.out_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


class ConvEncoder(nn.Module):
    """A small CNN for low-resolution images: (b, c, h, w) -> (b, widths[-1]).

    Each width is a 3x3 conv -> BatchNorm -> ReLU stage, every stage after the
    first downsampling by 2; global average pooling at the end. ``image_shape``
    lets a flat vector (the 240-pixel view of Multiple Features) be read as an image.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        image_shape: Sequence[int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [
                nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*layers)
        self.out_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_shape is not None:
            x = x.reshape(x.shape[0], *self.image_shape)
        return self.layers(x)


class MLPHead(nn.Module):
    """Task head on fused vectors: returns (features before the classifier, logits).

    ``norm="layer"`` suits a regularization head, which sees only the few samples of
    a batch whose mask is in Ω: batch statistics of a handful of samples are noise.
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int],
        num_classes: int,
        dropout: float = 0.0,
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        self.trunk = mlp_layers(in_features, widths, dropout, norm)
        self.classifier = nn.Linear(widths[-1] if widths else in_features, num_classes)

    def forward(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(fused)
        return features, self.classifier(features)

    def concat_mask_logits(
        self, features: Sequence[torch.Tensor], masks: torch.Tensor
    ) -> torch.Tensor | None:
        """Logits (c, b, k) of the head on the mask-weighted concatenation of ``features``
        for every mask (c, m), without building the concatenations: the first layer is
        linear, W [m_1 f_1; …; m_m f_m] = Σ_i m_i (W_i f_i), so each modality's product
        W_i f_i is computed once and the masks only weight and add them. None when the
        trunk does not start with a linear layer (then the caller fuses explicitly)."""
        if not self.trunk or not isinstance(self.trunk[0], nn.Linear):
            return None
        first = self.trunk[0]
        weights = first.weight.split([f.shape[1] for f in features], dim=1)
        partial = torch.stack([f @ w.T for f, w in zip(features, weights, strict=True)])
        hidden = torch.einsum("cm,mbh->cbh", masks.to(partial.dtype), partial) + first.bias
        c, b, h = hidden.shape
        rest = self.trunk[1:]
        return self.classifier(rest(hidden.reshape(c * b, h))).reshape(c, b, -1)
