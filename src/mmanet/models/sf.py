"""The SF network of the CASIA-SURF benchmark (paper §4.1, docs/method.md#the-sf-network):
per modality a ResNet-18 stem and an SE block, concatenation, then a shared ResNet-18
layer3 + layer4 + fc head.

``model.stem`` picks each stem's conv1: "authors" (3x3, stride 2, as in the authors'
``classification/models/resnet18_se.py``) or "torchvision" (7x7, stride 2), the one
torchvision ImageNet weights (``model.pretrained``) fit.

The regularization head is a second :class:`SFHead` on the same concatenated features.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from mmanet.config import ModelConfig
from mmanet.errors import ConfigError
from mmanet.fusion import configured_fusion
from mmanet.models.shaspec import image_adapters, shaspec_network
from mmanet.models.unified import UnifiedNetwork
from mmanet.nn import BasicBlock, ResNetStem, SEBlock, init_resnet_weights, make_layer
from mmanet.nn.resnet import load_torchvision_weights
from mmanet.registry import MODELS

SE_REDUCTION = 16
STEM_KERNELS = {"authors": 3, "torchvision": 7}  # conv1's kernel size per model.stem


class SFEncoder(nn.Module):
    """ResNet-18 conv1 ... layer2, then SE: (b, c, h, w) -> (b, 128, h/8, w/8)."""

    def __init__(
        self, in_channels: int = 3, se_reduction: int = SE_REDUCTION, conv1_kernel: int = 3
    ) -> None:
        super().__init__()
        self.stem = ResNetStem(in_channels, conv1_kernel=conv1_kernel)
        self.se = SEBlock(self.stem.out_channels, se_reduction)
        self.out_channels = self.stem.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.stem(x))


class SFHead(nn.Module):
    """ResNet-18 layer3 + layer4 + global average pooling + fc on the fused stem features.

    Returns (the layer4 map (b, 512, h/32, w/32), on which MAD acts; logits (b, k)).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.layer3 = make_layer(BasicBlock, in_channels, 256, 2, stride=2)
        self.layer4 = make_layer(BasicBlock, 256, 512, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        init_resnet_weights(self)

    def forward(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.layer4(self.layer3(fused))  # (b, 512, h/32, w/32)
        return features, self.fc(self.avgpool(features).flatten(1))


@MODELS.register("sf")
def build_sf(
    cfg: ModelConfig,
    modalities: Sequence[str],
    input_shapes: Mapping[str, Sequence[int]],
    num_classes: int,
    reg_head: bool,
) -> UnifiedNetwork:
    """The SF network for image modalities of shape (c, h, w), c = 3 in the paper."""
    for name in modalities:
        if len(input_shapes[name]) != 3:
            raise ConfigError(
                f"model.name=sf needs (c, h, w) images; modality {name!r} has input shape "
                f"{tuple(input_shapes[name])}"
            )
    kernel = STEM_KERNELS[cfg.stem]
    encoders = {name: SFEncoder(input_shapes[name][0], conv1_kernel=kernel) for name in modalities}
    shapes = [input_shapes[name] for name in modalities]
    # ShaSpec: one more stem, shared by every modality (docs/methods/shaspec.md)
    shared = None
    if cfg.fusion == "shaspec":
        shared = SFEncoder(max(s[0] for s in shapes), conv1_kernel=kernel)
    if cfg.pretrained and cfg.stem != "torchvision":
        raise ConfigError(
            f"model.pretrained={cfg.pretrained}: torchvision ResNet-18 weights need "
            f"model.stem=torchvision (7x7 conv1), not model.stem={cfg.stem} (3x3)"
        )
    if cfg.pretrained:
        weights = read_torchvision_state_dict(cfg.pretrained)
        for encoder in [*encoders.values(), *([shared] if shared is not None else [])]:
            try:
                load_torchvision_weights(encoder.stem, weights)
            except ValueError as err:
                raise ConfigError(f"model.pretrained={cfg.pretrained}: {err}") from None
    if shared is not None:
        return shaspec_network(
            modalities,
            input_shapes,
            image_adapters(shapes),
            shared,
            encoders,
            lambda width: SFHead(width, num_classes),
            reg_head,
            vectors=False,
            width=shared.out_channels,
        )
    fusion = configured_fusion(cfg, [enc.out_channels for enc in encoders.values()], num_classes)
    fused_channels = fusion.out_channels  # m * 128 for concat
    return UnifiedNetwork(
        modalities,
        encoders,
        fusion,
        SFHead(fused_channels, num_classes),
        input_shapes,
        reg_head=SFHead(fused_channels, num_classes) if reg_head else None,
    )


def read_torchvision_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict from ``.pth`` (``weights_only``) or ``.safetensors``.
    A file that is not one is a one-line ConfigError naming it; what torch warns while it
    fails to read the file (e.g. about the pickle protocol of random bytes) is dropped, and
    its warnings about a file it reads are given again."""
    safetensors = path.endswith(".safetensors")
    if Path(path).is_dir():
        raise ConfigError(f"model.pretrained: {path} is a folder, not a file")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if safetensors:
                from safetensors.torch import load_file

                weights = load_file(path)
            else:
                weights = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(
            f"model.pretrained: file not found: {path} (model.pretrained=null: no weights)"
        ) from None
    except Exception as err:  # corrupt file or one that is not a plain state dict
        kind = "a safetensors file" if safetensors else "a state dict saved by torch.save"
        empty = Path(path).stat().st_size == 0
        reason = "the file is empty (0 bytes)" if empty else f"not {kind} ({type(err).__name__})"
        raise ConfigError(f"model.pretrained: cannot read {path}: {reason}") from None
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if not isinstance(weights, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in weights.values()
    ):
        raise ConfigError(f"model.pretrained: {path} does not hold a state dict of tensors")
    return dict(weights)
