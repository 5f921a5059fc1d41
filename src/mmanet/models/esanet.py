"""ESANet for RGB-D segmentation (paper §4.2, docs/method.md#esanet) as a
:class:`UnifiedNetwork`.

ESANet fuses depth into the RGB stream after the stem and after each of the four ResNet
stages, so its two encoders are not independent. In UnifiedNetwork terms:

- ``encoders``: identities; the raw image *is* the encoded feature, so an absent
  modality is a zero image and the mask zeroes the input of an absent modality;
- ``fusion``: :class:`ESANetEncoder`, the two ResNet streams with SE-add fusion, where the
  mask multiplies the RGB or depth branch at every fusion point, then the context module;
  it returns an :class:`ESANetFeatures` (what UnifiedNetwork calls ``fused``);
  with ``model.fusion`` set (HeMIS, LCR, RFNet, mmFormer, concat) it is
  :class:`StreamFusionEncoder`: independent streams fused after each stage by that module;
- ``head`` (and ``reg_head``): :class:`ESANetDecoder`, returning (the last decoder
  module's output, the logits (b, k, H, W)); ``forward_sides`` also returns the
  side-output logits of the three decoder modules (multi-scale supervision).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from mmanet.config import ModelConfig
from mmanet.errors import ConfigError
from mmanet.fusion import build_fusion, fusion_settings
from mmanet.fusion.common import AuxiliaryFusion
from mmanet.fusion.rfnet import RFNetFusion
from mmanet.models.sf import read_torchvision_state_dict
from mmanet.models.shaspec import ShaSpecESANetEncoder, esanet_context, image_adapters
from mmanet.models.unified import UnifiedNetwork
from mmanet.nn import BasicBlock, Bottleneck, init_resnet_weights, make_layer
from mmanet.nn.esanet_blocks import (
    DecoderModule,
    LearnedUpsample,
    PyramidPooling,
    SEFusionAdd,
    crop_to,
)
from mmanet.nn.nonbottleneck import NonBottleneck1D
from mmanet.nn.resnet import load_torchvision_weights
from mmanet.outputs import AuxiliaryLogits
from mmanet.registry import FUSIONS, MODELS

RGB, DEPTH = "rgb", "depth"
STAGE_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}
BLOCKS = {"basic": BasicBlock, "nbt1d": NonBottleneck1D}


class ResNetEncoder(nn.Module):
    """A ResNet trunk with torchvision's parameter names, run stage by stage by the fusion.

    ``width`` is the stem width (64 in torchvision); the stages have width * 1, 2, 4, 8
    planes (times the block's expansion).
    """

    FOLDABLE = (("conv1", "bn1"),)  # see mmanet.nn.folding

    def __init__(
        self, in_channels: int, block: type[nn.Module], layers: Sequence[int], width: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.stem_channels = width
        self.stage_channels: list[int] = []
        inplanes = width
        for index, blocks in enumerate(layers):
            planes = width * 2**index
            stride = 1 if index == 0 else 2
            setattr(self, f"layer{index + 1}", make_layer(block, inplanes, planes, blocks, stride))
            inplanes = planes * block.expansion
            self.stage_channels.append(inplanes)
        init_resnet_weights(self)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 + bn1 + relu, (b, c, H, W) -> (b, width, H/2, W/2); fusion precedes maxpool."""
        return self.relu(self.bn1(self.conv1(x)))

    def stages(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]


@dataclass
class ESANetFeatures:
    """The fusion output read by the decoders (UnifiedNetwork's ``fused``)."""

    context: torch.Tensor  # (b, decoder_channels[0], H/32, W/32)
    skips: list[torch.Tensor]  # fused maps after layer3, layer2, layer1: H/16, H/8, H/4
    input_size: tuple[int, int]  # (H, W), the logits' size

    @property
    def map(self) -> torch.Tensor:
        """The fused map segmentation MAD flattens (paper Eq. 2, docs/method.md#segmentation):
        RGB and depth fused after layer4, through the context module — what both decoders
        read at the bottleneck."""
        return self.context

    def select(self, index: torch.Tensor) -> ESANetFeatures:
        """The features of the samples picked by ``index`` (a boolean or integer index)."""
        return ESANetFeatures(self.context[index], [s[index] for s in self.skips], self.input_size)


class ESANetEncoder(nn.Module):
    """RGB and depth ResNet streams with SE-add fusion after the stem and each stage.

    ``forward(features, mask)``: ``features`` are the (masked) input images in modality
    order, ``mask`` the (b, m) mask. At every fusion point
    fused = SE_rgb(rgb) * mask_rgb + SE_depth(depth) * mask_depth, and the fused map
    continues in the RGB stream while the depth stream continues on its own maps.
    """

    def __init__(
        self,
        rgb_encoder: ResNetEncoder,
        depth_encoder: ResNetEncoder,
        context: nn.Module,
        rgb_index: int,
        depth_index: int,
    ) -> None:
        super().__init__()
        self.rgb_encoder = rgb_encoder
        self.depth_encoder = depth_encoder
        channels = [rgb_encoder.stem_channels, *rgb_encoder.stage_channels]
        self.fusions = nn.ModuleList(SEFusionAdd(c) for c in channels)
        self.context = context
        self.rgb_index = rgb_index
        self.depth_index = depth_index

    def forward(self, features: Sequence[torch.Tensor], mask: torch.Tensor) -> ESANetFeatures:
        rgb, depth = features[self.rgb_index], features[self.depth_index]
        mask_rgb, mask_depth = mask[:, self.rgb_index], mask[:, self.depth_index]
        input_size = (rgb.shape[-2], rgb.shape[-1])
        depth = self.depth_encoder.stem(depth)  # (b, width, H/2, W/2)
        fused = self.fusions[0](self.rgb_encoder.stem(rgb), depth, mask_rgb, mask_depth)
        fused = self.rgb_encoder.maxpool(fused)
        depth = self.depth_encoder.maxpool(depth)
        skips = []
        stages = zip(
            self.rgb_encoder.stages(), self.depth_encoder.stages(), self.fusions[1:], strict=True
        )
        for rgb_stage, depth_stage, fusion in stages:
            depth = depth_stage(depth)
            fused = fusion(rgb_stage(fused), depth, mask_rgb, mask_depth)
            skips.append(fused)
        return ESANetFeatures(self.context(fused), skips[2::-1], input_size)


class StreamFusionEncoder(AuxiliaryFusion):
    """Independent RGB and depth ResNet streams whose stage outputs are fused by a module of
    :mod:`mmanet.fusion` — the comparison methods on ESANet's encoders (``model.fusion``).

    After each of the four stages, ``fusions[level](stage maps, mask)`` merges the
    streams (a 1x1 conv + BN + ReLU brings a fused map of another width back to the stage
    width); the fused layer1..layer3 maps are the decoder's skips and the fused layer4 map
    feeds the context module. The streams themselves never mix, so a fusion module that
    ignores absent modalities makes the whole encoder ignore them.

    RFNet (fusions with ``guided``): the levels are fused from layer4 down, and each inner
    level's fusion also reads the fused map of the level below (its region generator's
    guide, RFNet's decoder-side feedback). ``aux_decoder``: RFNet's shared-weight
    per-modality decoder; with auxiliary heads asked, it decodes each modality's own stage
    maps, one set of weights for every modality, weighted by the modality's presence.
    """

    def __init__(
        self,
        encoders: Sequence[ResNetEncoder],
        fusions: Sequence[nn.Module],
        context: nn.Module,
        aux_decoder: SharedModalityDecoder | None = None,
    ) -> None:
        super().__init__()
        self.streams = nn.ModuleList(encoders)
        self.fusions = nn.ModuleList(fusions)
        self.projections = nn.ModuleList(
            nn.Identity()
            if fusion.out_channels == width
            else nn.Sequential(
                nn.Conv2d(fusion.out_channels, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
            for fusion, width in zip(fusions, encoders[0].stage_channels, strict=True)
        )
        self.context = context
        self.aux_decoder = aux_decoder
        self.top_down = any(getattr(fusion, "guided", False) for fusion in fusions)

    def fuse(
        self, features: Sequence[torch.Tensor], mask: torch.Tensor, auxiliary: bool
    ) -> tuple[ESANetFeatures, list[AuxiliaryLogits]]:
        """The fused features, and every stage fusion's auxiliary heads (then the shared
        per-modality decoder's) when asked."""
        input_size = (features[0].shape[-2], features[0].shape[-1])
        maps = [s.maxpool(s.stem(x)) for s, x in zip(self.streams, features, strict=True)]
        stage_maps = []  # per level, the streams' maps
        for level in range(len(self.fusions)):
            maps = [stream.stages()[level](x) for stream, x in zip(self.streams, maps, strict=True)]
            stage_maps.append(maps)
        levels = range(len(self.fusions))
        fused_maps: dict[int, torch.Tensor] = {}
        heads: list[AuxiliaryLogits] = []
        guide = None
        for level in reversed(levels) if self.top_down else levels:
            fusion = self.fusions[level]
            if self.top_down:
                fused, stage_heads = fusion.fuse(stage_maps[level], mask, auxiliary, guide=guide)
            elif auxiliary and hasattr(fusion, "forward_auxiliary"):
                fused, stage_heads = fusion.forward_auxiliary(stage_maps[level], mask)
            else:
                fused, stage_heads = fusion(stage_maps[level], mask), []
            heads += stage_heads
            fused_maps[level] = guide = self.projections[level](fused)
        if auxiliary and self.aux_decoder is not None:
            for i in range(len(self.streams)):
                own = [level_maps[i] for level_maps in stage_maps]
                heads.append(AuxiliaryLogits(self.aux_decoder(own, input_size), mask[:, i] > 0))
        skips = [fused_maps[level] for level in reversed(levels[:-1])]  # layer3, 2, 1
        features_out = ESANetFeatures(self.context(fused_maps[levels[-1]]), skips, input_size)
        return features_out, heads


class SharedModalityDecoder(nn.Module):
    """RFNet's shared-weight per-modality decoder on ESANet: a context module and an
    :class:`ESANetDecoder` of ESANet's architecture that decode ONE modality's own stage
    maps (layer4 through the context module, layer3..1 as skips) to (b, k, H, W) logits.
    One instance serves every modality, so all modalities' auxiliary outputs share its
    weights."""

    def __init__(self, context: nn.Module, decoder: ESANetDecoder) -> None:
        super().__init__()
        self.context = context
        self.decoder = decoder

    def forward(
        self, stage_maps: Sequence[torch.Tensor], input_size: tuple[int, int]
    ) -> torch.Tensor:
        """``stage_maps``: one modality's layer1..layer4 maps; returns its logits."""
        features = ESANetFeatures(self.context(stage_maps[-1]), list(stage_maps[2::-1]), input_size)
        return self.decoder(features)[1]


class ESANetDecoder(nn.Module):
    """Three decoder modules, a 3x3 conv to the classes and two learned x2 upsamplings.

    ``forward(fused) -> (features, logits)``: features = the last decoder module's output
    (b, decoder_channels[2], H/4, W/4), the representation MAD acts on; logits (b, k, H, W).
    ``forward_sides`` also returns the side-output logits of the three modules (H/32,
    H/16, H/8) for multi-scale supervision.
    """

    def __init__(
        self,
        skip_channels: Sequence[int],  # layer3, layer2, layer1 widths
        decoder_channels: Sequence[int],
        num_blocks: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        inputs = [decoder_channels[0], *decoder_channels[:-1]]
        self.decoder_modules = nn.ModuleList(
            DecoderModule(c_in, c_dec, c_skip, num_blocks, num_classes)
            for c_in, c_dec, c_skip in zip(inputs, decoder_channels, skip_channels, strict=True)
        )
        self.conv_out = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)
        self.upsample1 = LearnedUpsample(num_classes)
        self.upsample2 = LearnedUpsample(num_classes)

    def forward(self, fused: ESANetFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        features, logits, _ = self.forward_sides(fused)
        return features, logits

    def forward_sides(
        self, fused: ESANetFeatures
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(features, logits, the three side outputs' logits)."""
        out = fused.context
        sides = []
        for module, skip in zip(self.decoder_modules, fused.skips, strict=True):
            out, side = module(out, skip)
            sides.append(side)
        logits = self.upsample2(self.upsample1(self.conv_out(out)))
        return out, crop_to(logits, fused.input_size), sides


@dataclass
class ESANetSettings:
    """``model.esanet``: ESANet's settings; the defaults are ESANet's NYUv2 settings."""

    encoder: Literal["resnet18", "resnet34", "resnet50"] = "resnet34"
    block: Literal["basic", "nbt1d"] = "nbt1d"  # resnet18/34 only; resnet50 uses Bottleneck
    width: int = 64  # stem width; the four stages have width * 1, 2, 4, 8 planes
    decoder_channels: list[int] = field(default_factory=lambda: [512, 256, 128])
    decoder_blocks: int = 3  # NonBottleneck1D blocks per decoder module
    context: Literal["ppm", "ppm_adaptive"] = "ppm"  # adaptive: bins scale with the input size
    context_bins: list[int] = field(default_factory=lambda: [1, 5])


@MODELS.register("esanet", settings=ESANetSettings)
def build_esanet(
    cfg: ModelConfig,
    modalities: Sequence[str],
    input_shapes: Mapping[str, Sequence[int]],
    num_classes: int,
    reg_head: bool,
) -> UnifiedNetwork:
    """ESANet for the modalities ``rgb`` (c, H, W) and ``depth`` (c', H, W)."""
    if sorted(modalities) != [DEPTH, RGB]:
        raise ConfigError(
            "model.name=esanet needs exactly the modalities 'rgb' and 'depth', "
            f"got {list(modalities)}"
        )
    rgb_shape, depth_shape = tuple(input_shapes[RGB]), tuple(input_shapes[DEPTH])
    if len(rgb_shape) != 3 or len(depth_shape) != 3 or rgb_shape[1:] != depth_shape[1:]:
        raise ConfigError(
            "model.name=esanet needs (c, H, W) images of one size; got rgb "
            f"{rgb_shape} and depth {depth_shape}"
        )
    esa = cfg.esanet
    _check(esa)
    block = Bottleneck if esa.encoder == "resnet50" else BLOCKS[esa.block]
    layers = STAGE_BLOCKS[esa.encoder]
    rgb_encoder = ResNetEncoder(rgb_shape[0], block, layers, esa.width)
    depth_encoder = ResNetEncoder(depth_shape[0], block, layers, esa.width)
    if cfg.pretrained:
        _load_pretrained(cfg.pretrained, esa, rgb_encoder, depth_encoder)
    height, width = rgb_shape[1:]
    reference = (-(-height // 32), -(-width // 32)) if esa.context == "ppm_adaptive" else None
    context = PyramidPooling(
        rgb_encoder.stage_channels[-1], esa.decoder_channels[0], esa.context_bins, reference
    )
    skip_channels = rgb_encoder.stage_channels[2::-1]

    def decoder() -> ESANetDecoder:
        return ESANetDecoder(skip_channels, esa.decoder_channels, esa.decoder_blocks, num_classes)

    if cfg.fusion == "default":
        fusion = ESANetEncoder(
            rgb_encoder, depth_encoder, context, modalities.index(RGB), modalities.index(DEPTH)
        )
    elif cfg.fusion == "shaspec":  # one more ResNet, shared by both (docs/methods/shaspec.md)
        shared = ResNetEncoder(max(rgb_shape[0], depth_shape[0]), block, layers, esa.width)
        if cfg.pretrained:
            try:
                load_torchvision_weights(
                    shared, read_torchvision_state_dict(cfg.pretrained), complete=True
                )
            except ValueError as err:
                raise ConfigError(f"model.pretrained={cfg.pretrained}: {err}") from None
        d = esa.decoder_channels[0]
        fusion = ShaSpecESANetEncoder(
            image_adapters([input_shapes[name] for name in modalities]),
            shared,
            [rgb_encoder if name == RGB else depth_encoder for name in modalities],
            d,
            esanet_context(len(modalities), d, esa.context_bins, reference),
        )
    else:
        streams = [rgb_encoder if name == RGB else depth_encoder for name in modalities]
        aux_decoder = None
        if cfg.fusion == "rfnet" and cfg.fusion_aux:  # RFNet's shared per-modality decoder
            aux_context = PyramidPooling(
                rgb_encoder.stage_channels[-1], esa.decoder_channels[0], esa.context_bins, reference
            )
            aux_decoder = SharedModalityDecoder(aux_context, decoder())
        fusion = StreamFusionEncoder(
            streams,
            _stage_fusions(cfg, rgb_encoder.stage_channels, num_classes),
            context,
            aux_decoder,
        )
    return UnifiedNetwork(
        modalities,
        {name: nn.Identity() for name in modalities},
        fusion,
        decoder(),
        input_shapes,
        reg_head=decoder() if reg_head else None,
    )


build_esanet.baseline_title = "ESANet"  # the paper's ESANet-MD, ESANet-MAD, ...


def _stage_fusions(cfg: ModelConfig, widths: Sequence[int], num_classes: int) -> list[nn.Module]:
    """One fusion module per stage. RFNet fuses every stage with K = the classes as regions
    (its region maps are supervised by the labels), each inner stage's region generator
    guided by the fused map of the stage below, and without per-stage modality heads (the
    shared per-modality decoder is :class:`SharedModalityDecoder`); its settings are
    ``model.rfnet`` (regions: default the classes). A fusion that
    declares ``bottleneck_only`` (mmFormer's transformer) works on the layer-4 tokens only,
    the shallower stages are concatenated as in its paper."""
    own = fusion_settings(cfg)
    if cfg.fusion == "rfnet":
        return [
            RFNetFusion(
                [width, width],
                num_classes,
                aux=cfg.fusion_aux,
                region_supervision=True,
                guide_channels=widths[level + 1] if level + 1 < len(widths) else 0,
                modality_heads=False,
                **{**own, "regions": own["regions"] or num_classes},
            )
            for level, width in enumerate(widths)
        ]
    bottleneck_only = getattr(FUSIONS.get(cfg.fusion), "bottleneck_only", False)
    fusions = []
    for level, width in enumerate(widths):
        name = cfg.fusion
        if bottleneck_only and level < len(widths) - 1:
            name = "concat"
        fusions.append(
            build_fusion(
                name,
                [width, width],
                num_classes,
                aux=cfg.fusion_aux and name == cfg.fusion,
                region_supervision=True,
                **(own if name == cfg.fusion else {}),
            )
        )
    return fusions


def _check(esa: ESANetSettings) -> None:
    if len(esa.decoder_channels) != 3 or min(esa.decoder_channels) < 1:
        raise ConfigError(
            f"model.esanet.decoder_channels must be 3 positive widths, got {esa.decoder_channels}"
        )
    if not esa.context_bins or min(esa.context_bins) < 1:
        raise ConfigError(f"model.esanet.context_bins must be positive, got {esa.context_bins}")
    if esa.width < 1 or esa.decoder_blocks < 0:
        raise ConfigError("model.esanet.width must be >= 1 and decoder_blocks >= 0")


def _load_pretrained(
    path: str, esa: ESANetSettings, rgb_encoder: ResNetEncoder, depth_encoder: ResNetEncoder
) -> None:
    """torchvision ImageNet weights for both streams, every encoder weight from the file
    (ESANet loads them strictly); the depth conv1 gets the sum over the RGB channels
    (ESANet's ``src/models/resnet.py``), shared out evenly over depth's channels."""
    if esa.block == "nbt1d" and esa.encoder != "resnet50":
        raise ConfigError(
            "model.pretrained: torchvision weights fit BasicBlock/Bottleneck encoders, "
            "not model.esanet.block=nbt1d"
        )
    weights = read_torchvision_state_dict(path)
    depth_weights = dict(weights)
    channels = depth_encoder.conv1.in_channels
    conv1 = weights.get("conv1.weight")
    if conv1 is not None and conv1.ndim == 4:
        summed = conv1.sum(dim=1, keepdim=True) / channels  # (width, 1, 7, 7)
        depth_weights["conv1.weight"] = summed.expand(-1, channels, -1, -1)
    try:
        load_torchvision_weights(rgb_encoder, weights, complete=True)
        load_torchvision_weights(depth_encoder, depth_weights, complete=True)
    except ValueError as err:
        raise ConfigError(f"model.pretrained={path}: {err}") from None
