"""ShaSpec's networks (Wang et al., CVPR 2023; docs/methods/shaspec.md) on the library's
builders: one shared encoder applied to every modality, one specific encoder per modality,
and :class:`~mmanet.fusion.shaspec.ShaSpecFusion` (fill, residual fusion, concatenation).

A shared encoder needs inputs of one shape, so each modality first passes a small
per-modality adapter (identity where the shapes already agree): a 1 × 1 convolution to the
widest channel count for images (SF, ESANet), a linear layer + batch norm + ReLU to the
first encoder width for vectors (multiview). As in ESANet's builder, the per-modality
encoders of :class:`UnifiedNetwork` are identities and the whole ShaSpec encoder is the
network's fusion module, so a missing modality's input is zeros that nothing reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from mmanet.errors import ConfigError
from mmanet.fusion.shaspec import ShaSpecFusion, fill_absent
from mmanet.models.unified import UnifiedNetwork
from mmanet.nn import PyramidPooling, mlp_layers
from mmanet.outputs import SharedSpecific

if TYPE_CHECKING:
    from mmanet.models.esanet import ESANetFeatures


class SharedSpecificEncoder(nn.Module):
    """Shared and specific encoders, then ShaSpec's fusion: a fusion module of
    :class:`UnifiedNetwork` over the (masked) raw inputs.

    ``forward(inputs, mask)``: r_i = shared(adapter_i(x_i)) (one batch for every modality,
    as their code runs its shared encoder), s_i = specific_i(x_i), then
    ``fusion([r_i ; s_i], mask)``. ``forward_shared_specific`` also returns r, s and the
    domain logits.
    """

    def __init__(
        self,
        adapters: Sequence[nn.Module],
        shared: nn.Module,
        specific: Sequence[nn.Module],
        fusion: ShaSpecFusion,
    ) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(adapters)
        self.shared = shared
        self.specific = nn.ModuleList(specific)
        self.fusion = fusion
        self.out_channels = fusion.out_channels

    def forward(self, inputs: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return self.fusion(self.parts(inputs), mask)

    def forward_shared_specific(
        self, inputs: Sequence[torch.Tensor], mask: torch.Tensor
    ) -> tuple[torch.Tensor, SharedSpecific]:
        return self.fusion.forward_shared_specific(self.parts(inputs), mask)

    def parts(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """[r_i ; s_i] per modality."""
        adapted = [adapter(x) for adapter, x in zip(self.adapters, inputs, strict=True)]
        shared = self.shared(torch.cat(adapted)).chunk(len(adapted))
        specific = [encoder(x) for encoder, x in zip(self.specific, inputs, strict=True)]
        return [torch.cat(pair, dim=1) for pair in zip(shared, specific, strict=True)]


def image_adapters(input_shapes: Sequence[Sequence[int]]) -> list[nn.Module]:
    """Per image modality, a 1 × 1 conv to the widest channel count (identity for those
    that have it)."""
    widest = max(shape[0] for shape in input_shapes)
    return [
        nn.Identity() if shape[0] == widest else nn.Conv2d(shape[0], widest, 1)
        for shape in input_shapes
    ]


def shaspec_network(
    modalities: Sequence[str],
    input_shapes: Mapping[str, Sequence[int]],
    adapters: Sequence[nn.Module],
    shared: nn.Module,
    specific: Mapping[str, nn.Module],
    head: Callable[[int], nn.Module],
    reg_head: bool,
    *,
    vectors: bool,
    width: int,
) -> UnifiedNetwork:
    """A :class:`UnifiedNetwork` whose fusion is the ShaSpec encoder; ``head(fused width)``
    builds a head; ``width``: d, the shared and specific features' width."""
    fusion = ShaSpecFusion([2 * width] * len(modalities), vectors=vectors)
    encoder = SharedSpecificEncoder(
        adapters, shared, [specific[name] for name in modalities], fusion
    )
    return UnifiedNetwork(
        modalities,
        {name: nn.Identity() for name in modalities},
        encoder,
        head(encoder.out_channels),
        input_shapes,
        reg_head=head(encoder.out_channels) if reg_head else None,
    )


def vector_adapters(input_shapes: Sequence[Sequence[int]], width: int) -> list[nn.Module]:
    """Per vector (or flattened) modality, linear + batch norm + ReLU to ``width``."""
    return [nn.Sequential(nn.Flatten(), mlp_layers(math.prod(s), [width])) for s in input_shapes]


def check_widths(widths: Mapping[str, int], width: int, builder: str) -> None:
    """Every specific encoder must end in the shared encoder's width d."""
    for name, own in widths.items():
        if own != width:
            raise ConfigError(
                f"model.fusion=shaspec on model.name={builder}: modality {name!r}'s encoder "
                f"ends in width {own}, the shared encoder in {width}; give them one width"
            )


class ShaSpecESANetEncoder(nn.Module):
    """ShaSpec on ESANet's encoders: the fusion module of the ESANet builder with
    ``model.fusion=shaspec``, returning :class:`~mmanet.models.esanet.ESANetFeatures`.

    The shared ResNet runs on every modality (after its adapter), each modality's own
    ResNet is its specific encoder. At the bottleneck both are reduced to d channels
    (1 × 1 conv + BN + ReLU; their ``asppreduce``) and fused by ShaSpec's fusion; the
    result goes through the context module. The decoder's skips are, per stage, the
    shared encoder's maps of every modality (an absent one's filled with the mean of the
    present ones') concatenated and brought back to the stage width by a 1 × 1 conv + BN +
    ReLU (their decoder's ``shortcut_conv``).
    """

    def __init__(
        self,
        adapters: Sequence[nn.Module],
        shared: nn.Module,
        specific: Sequence[nn.Module],
        width: int,
        context: nn.Module,
    ) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(adapters)
        self.shared = shared
        self.specific = nn.ModuleList(specific)
        m, top = len(specific), shared.stage_channels[-1]
        self.shared_reduce = conv_bn_relu(top, width)
        self.specific_reduce = nn.ModuleList(conv_bn_relu(top, width) for _ in range(m))
        self.fusion = ShaSpecFusion([2 * width] * m)
        self.skip_projections = nn.ModuleList(
            conv_bn_relu(m * c, c) for c in shared.stage_channels[:-1]
        )
        self.context = context

    def forward(self, inputs: Sequence[torch.Tensor], mask: torch.Tensor) -> ESANetFeatures:
        return self.forward_shared_specific(inputs, mask)[0]

    def forward_shared_specific(
        self, inputs: Sequence[torch.Tensor], mask: torch.Tensor
    ) -> tuple[ESANetFeatures, SharedSpecific]:
        from mmanet.models.esanet import ESANetFeatures  # esanet imports this module

        m = len(inputs)
        input_size = (inputs[0].shape[-2], inputs[0].shape[-1])
        adapted = torch.cat([a(x) for a, x in zip(self.adapters, inputs, strict=True)])
        shared_levels = [x.chunk(m) for x in resnet_levels(self.shared, adapted)]
        specific = [
            reduce(resnet_levels(encoder, x)[-1])
            for encoder, reduce, x in zip(self.specific, self.specific_reduce, inputs, strict=True)
        ]
        shared = [self.shared_reduce(x) for x in shared_levels[-1]]
        pairs = [torch.cat(pair, dim=1) for pair in zip(shared, specific, strict=True)]
        fused, parts = self.fusion.forward_shared_specific(pairs, mask)
        present = mask > 0
        skips = [
            projection(fill_absent(maps, present).flatten(1, 2))
            for projection, maps in zip(self.skip_projections, shared_levels[:-1], strict=True)
        ]
        return ESANetFeatures(self.context(fused), skips[::-1], input_size), parts


def resnet_levels(encoder: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The four stage outputs of an ESANet :class:`ResNetEncoder` (layer1 .. layer4)."""
    x = encoder.maxpool(encoder.stem(x))
    levels = []
    for stage in encoder.stages():
        x = stage(x)
        levels.append(x)
    return levels


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def esanet_context(
    modalities: int, width: int, bins: Sequence[int], reference: tuple[int, int] | None
) -> nn.Module:
    """ESANet's context module on the m·d fused channels, out to d."""
    return PyramidPooling(modalities * width, width, bins, reference)


__all__ = [
    "ShaSpecESANetEncoder",
    "SharedSpecificEncoder",
    "check_widths",
    "esanet_context",
    "image_adapters",
    "shaspec_network",
    "vector_adapters",
]
