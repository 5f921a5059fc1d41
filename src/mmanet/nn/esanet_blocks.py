"""ESANet's building blocks: SE-add RGB-D fusion, pyramid-pooling context module, learned x2
upsampling and the decoder module (TUI-NICR/ESANet, Seichter et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmanet.nn.nonbottleneck import NonBottleneck1D
from mmanet.nn.se import SEBlock

# Nearest x2 upsampling followed by this depthwise kernel is bilinear x2 upsampling
# (align_corners=False): separably, each output row/column mixes its two nearest
# source rows/columns with weights 3/4 and 1/4.
BILINEAR_X2_KERNEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _per_sample(weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (b,) weight as (b, 1, 1, 1) in ``like``'s dtype, to broadcast over (c, h, w)."""
    return weight.view(-1, 1, 1, 1).to(like.dtype)


class SEFusionAdd(nn.Module):
    """fused = SE_rgb(rgb) * mask_rgb + SE_depth(depth) * mask_depth (docs/method.md#esanet).

    The per-sample masks (b,) switch a branch off at this fusion point; with both masks
    1 this is ESANet's SE-add fusion.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.se_rgb = SEBlock(channels, reduction)
        self.se_depth = SEBlock(channels, reduction)

    def forward(
        self,
        rgb: torch.Tensor,  # (b, c, h, w)
        depth: torch.Tensor,  # (b, c, h, w)
        mask_rgb: torch.Tensor,  # (b,)
        mask_depth: torch.Tensor,  # (b,)
    ) -> torch.Tensor:
        return self.se_rgb(rgb) * _per_sample(mask_rgb, rgb) + self.se_depth(depth) * _per_sample(
            mask_depth, depth
        )


def window_matrix(size: int, bins: int) -> torch.Tensor:
    """The (bins, size) weights of adaptive average pooling along one axis: row i averages
    window i, the positions ⌊i·size/bins⌋ to ⌈(i+1)·size/bins⌉ − 1."""
    weights = torch.zeros(bins, size)
    for i in range(bins):
        start, end = i * size // bins, -(-(i + 1) * size // bins)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def fixed_grid_avg_pool2d(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, grid)`` for x's spatial size taken as fixed: two products
    with constant window matrices, R x Cᵀ with R (g_h, h) and C (g_w, w). The ONNX export
    path: the TorchScript exporter cannot write adaptive_avg_pool2d once it has lost the
    input's size, while a MatMul by constants it can (the exported graph then takes inputs
    of the traced size only, which the ONNX file declares)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    rows = window_matrix(h, grid[0]).to(x)
    cols = window_matrix(w, grid[1]).to(x)
    return rows @ x @ cols.transpose(0, 1)


class PyramidPooling(nn.Module):
    """PSPNet-style context module: x, concatenated with each bin's pooled map (1x1 conv to
    c/len(bins), nearest-upsampled back), then a 1x1 conv to ``out_channels``.

    With ``reference_size`` None the pooled grid is ``bin x bin`` whatever the input size
    (ESANet's "ppm"); otherwise ("ppm_adaptive", ESANet's "appm") the grid scales with the
    input: ``bin * round(h / reference_h)`` by ``bin * round(w / reference_w)`` (halves
    rounded up, at least 1), so a network trained on crops sees the same pooling windows on
    larger test images.

    Under ONNX export the pooling is :func:`fixed_grid_avg_pool2d` at the traced size
    (equal to ``F.adaptive_avg_pool2d`` there; PyTorch's training and evaluation keep
    ``F.adaptive_avg_pool2d``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bins: Sequence[int] = (1, 5),
        reference_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.bins = tuple(bins)
        self.reference_size = reference_size
        reduced = in_channels // len(self.bins)
        self.branches = nn.ModuleList(conv_bn_relu(in_channels, reduced, 1) for _ in self.bins)
        self.final_conv = conv_bn_relu(in_channels + reduced * len(self.bins), out_channels, 1)

    def _grid(self, bin_size: int, h: int, w: int) -> tuple[int, int]:
        if self.reference_size is None:
            return bin_size, bin_size
        ref_h, ref_w = self.reference_size
        # ESANet's int(x + 0.5): halves round up, not to even as round() does
        return bin_size * max(1, int(h / ref_h + 0.5)), bin_size * max(1, int(w / ref_w + 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])  # under tracing: fixed at the traced size
        pool = fixed_grid_avg_pool2d if torch.onnx.is_in_onnx_export() else F.adaptive_avg_pool2d
        pooled = [
            F.interpolate(
                branch(pool(x, self._grid(bin_size, h, w))),
                size=(h, w),
                mode="nearest",
            )
            for branch, bin_size in zip(self.branches, self.bins, strict=True)
        ]
        return self.final_conv(torch.cat([x, *pooled], dim=1))


class LearnedUpsample(nn.Module):
    """x2 upsampling: nearest, then a depthwise 3x3 conv initialised to bilinear weights.

    ``padding="zeros"`` is ESANet's default ("learned-3x3-zeropad"; exact bilinear away from
    the border); ``"replicate"`` ("learned-3x3") is exact bilinear everywhere at init.
    """

    def __init__(self, channels: int, padding: Literal["zeros", "replicate"] = "zeros") -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            channels, channels, 3, padding=1, groups=channels, padding_mode=padding
        )
        with torch.no_grad():
            self.conv.weight.copy_(BILINEAR_X2_KERNEL.expand(channels, 1, 3, 3))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the bottom/right of an upsampled map to ``size`` (h, w) (odd input sizes)."""
    return x[..., : size[0], : size[1]]


class DecoderModule(nn.Module):
    """3x3 conv + BN + ReLU, NBt1D blocks, learned x2 upsampling, additive encoder skip.

    The skip is projected to the decoder width by 1x1 conv + BN + ReLU when the widths
    differ. Returns (the module's output at the skip's resolution, in training mode the
    side-output logits (b, k, h, w) taken before upsampling for multi-scale supervision,
    else None).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        skip_channels: int,
        num_blocks: int,
        num_classes: int,
        padding: Literal["zeros", "replicate"] = "zeros",
    ) -> None:
        super().__init__()
        self.conv3x3 = conv_bn_relu(in_channels, channels, 3)
        self.blocks = nn.Sequential(
            *(NonBottleneck1D(channels, channels) for _ in range(num_blocks))
        )
        self.side_output = nn.Conv2d(channels, num_classes, 1)
        self.upsample = LearnedUpsample(channels, padding)
        self.skip = (
            nn.Identity() if skip_channels == channels else conv_bn_relu(skip_channels, channels, 1)
        )

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.blocks(self.conv3x3(x))
        side = self.side_output(out) if self.training else None
        out = crop_to(self.upsample(out), skip.shape[-2:])
        return out + self.skip(skip), side
