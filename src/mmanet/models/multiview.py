"""Builder for vector (and small image) views: one MLP or CNN encoder per view,
a fusion module, and an MLP head; the regularization head is a second MLP head."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from torch import nn

from mmanet.config import EncoderConfig, ModelConfig
from mmanet.errors import ConfigError
from mmanet.fusion import configured_fusion
from mmanet.models.shaspec import check_widths, shaspec_network, vector_adapters
from mmanet.models.unified import UnifiedNetwork
from mmanet.nn import ConvEncoder, MLPEncoder, MLPHead, mlp_layers
from mmanet.registry import MODELS


def build_encoder(cfg: EncoderConfig, input_shape: Sequence[int], name: str) -> nn.Module:
    if cfg.type == "mlp":
        return MLPEncoder(math.prod(input_shape), cfg.widths, cfg.dropout)
    image_shape = cfg.image_shape or list(input_shape)
    if len(image_shape) != 3:
        raise ConfigError(
            f"model.encoders.{name}: a cnn encoder needs (c, h, w) inputs; input shape is "
            f"{tuple(input_shape)} (set image_shape to read a vector as an image)"
        )
    if math.prod(image_shape) != math.prod(input_shape):
        raise ConfigError(
            f"model.encoders.{name}.image_shape {image_shape} does not hold "
            f"{math.prod(input_shape)} values"
        )
    return ConvEncoder(image_shape[0], cfg.widths, cfg.image_shape, cfg.dropout)


@MODELS.register("multiview")
def build_multiview(
    cfg: ModelConfig,
    modalities: Sequence[str],
    input_shapes: Mapping[str, Sequence[int]],
    num_classes: int,
    reg_head: bool,
) -> UnifiedNetwork:
    unknown = [name for name in cfg.encoders if name not in modalities]
    if unknown:
        raise ConfigError(
            f"model.encoders names unknown modality '{unknown[0]}' "
            f"(modalities: {', '.join(modalities)})"
        )
    encoders = {
        name: build_encoder(cfg.encoders.get(name, cfg.encoder), input_shapes[name], name)
        for name in modalities
    }
    widths = [enc.out_features for enc in encoders.values()]
    if cfg.fusion == "shaspec":  # docs/methods/shaspec.md
        return build_shaspec_multiview(
            cfg, modalities, input_shapes, encoders, num_classes, reg_head
        )
    # MLP and CNN encoders both end in (b, c) vectors
    fusion = configured_fusion(cfg, widths, num_classes, vectors=True)
    fused_width = fusion.out_channels

    def head() -> MLPHead:
        return MLPHead(fused_width, cfg.head_widths, num_classes, cfg.head_dropout, cfg.head_norm)

    return UnifiedNetwork(
        modalities,
        encoders,
        fusion,
        head(),
        input_shapes,
        reg_head=head() if reg_head else None,
    )


def build_shaspec_multiview(
    cfg: ModelConfig,
    modalities: Sequence[str],
    input_shapes: Mapping[str, Sequence[int]],
    specific: Mapping[str, nn.Module],
    num_classes: int,
    reg_head: bool,
) -> UnifiedNetwork:
    """ShaSpec on the views: the encoders built above are the specific ones; the shared
    one is an MLP of ``model.encoder.widths`` after a per-view linear adapter to the first
    width (the views' widths differ)."""
    widths = cfg.encoder.widths
    check_widths({n: e.out_features for n, e in specific.items()}, widths[-1], "multiview")
    return shaspec_network(
        modalities,
        input_shapes,
        vector_adapters([input_shapes[name] for name in modalities], widths[0]),
        mlp_layers(widths[0], widths, cfg.encoder.dropout),
        specific,
        lambda width: MLPHead(width, cfg.head_widths, num_classes, cfg.head_dropout, cfg.head_norm),
        reg_head,
        vectors=True,
        width=widths[-1],
    )
