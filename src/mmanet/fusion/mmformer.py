"""mmFormer fusion (Zhang et al., MICCAI 2022): intra-modal then inter-modal transformers.

Every position of every modality is a token of width d (512 in mmFormer). A transformer
per modality (intra-modal) models long-range dependencies inside it; the intra-modal
tokens of absent modalities are then zeroed, and one transformer over the tokens of all
modalities (inter-modal) fuses them. As in mmFormer, nothing hides the absent modalities
from the inter-modal attention: their zeroed tokens plus their learned positional
embeddings are attended like any other token. A convolutional decoder shared by all
modalities turns each modality's intra-modal features into auxiliary class logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmanet.fusion.common import AuxiliaryFusion, as_maps, check_channels, present_of, restore
from mmanet.outputs import AuxiliaryLogits
from mmanet.registry import FUSIONS

PAPER_WIDTH = 512  # mmFormer's token width d (its ``transformer_basic_dims``)


def default_heads(width: int) -> int:
    """The largest h in (8, 4, 2, 1) that divides ``width`` with head size width / h >= 16
    (8 heads for d = 512, as in mmFormer)."""
    return next(h for h in (8, 4, 2, 1) if width % h == 0 and (width // h >= 16 or h == 1))


class SelfAttention(nn.Module):
    """Multi-head self-attention over all tokens, with no mask.

    With X (b, n, d), H heads of size e = d / H and [Q, K, V] = X W_qkv (no bias):

        A_h = softmax(Q_h K_hᵀ / √e)            (b, n, n), rows sum to 1,
        out = cat_h(A_h V_h) W_o + b_o.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"the token width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention weights A (b, H, n, n) and the values V (b, H, n, e)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5
        return scores.softmax(dim=-1), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention, v = self.weights(x)
        mixed = (self.dropout(attention) @ v).transpose(1, 2).flatten(2)
        return self.dropout(self.proj(mixed))


class TransformerLayer(nn.Module):
    """One pre-norm layer: x ← x + Attn(LN_1(x)),  x ← x + W_2 GELU(W_1 LN_2(x) + b_1) + b_2."""

    def __init__(self, width: int, heads: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, width),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.feed_forward(self.norm2(x))


class Transformer(nn.Module):
    """mmFormer's transformer: the positional embedding is added before every layer,
    x ← Layer_l(x + pos) for l = 1..L."""

    def __init__(self, width: int, heads: int, hidden: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(width, heads, hidden, dropout) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x + pos)
        return x


@dataclass
class MMFormerSettings:
    """``model.mmformer``: the token width, mmFormer's paper's (d = 512) or scaled to the
    encoders (d = the widest modality)."""

    widths: Literal["paper", "small"] = "paper"


@FUSIONS.register("mmformer", settings=MMFormerSettings)
class MMFormerFusion(AuxiliaryFusion):
    """mmFormer's intra/inter-modal transformers; ``out_channels = m c``, c = max(channels).

    For modality i with maps F_i (b, c_i, h, w) and P the present modalities of a sample
    (1_i = 1[i ∈ P]), tokens of width d, position embeddings p_i (h w, d):

        T_i = (1_i F_i) W_i + b_i                               (b, h w, d) tokens,
        Z_i = Intra_i(T_i; p_i)                                 intra-modal transformer,
        Z̃_i = 1_i Z_i                                           absent: exact zeros,
        [U_1, ..., U_m] = Inter([Z̃_1, ..., Z̃_m]; [p_1, ..., p_m])   no attention mask,
        out = conv_1×1(cat(U_1, ..., U_m))                      U_i as (b, d, h, w) maps.

    Transformer(X; p) adds p before each pre-norm layer (:class:`Transformer`); every
    token attends to every token, an absent modality's ones included (they hold p_i, the
    same for every input, so the output does not depend on absent inputs). W_i is
    mmFormer's per-modality 1×1 conv to the token width; the 1×1 conv ``out`` maps the m d
    channels to m c (mmFormer: to m times its encoder width).

    Position embeddings: mmFormer learns one embedding per modality per token of its fixed
    token grid; here ``pos`` holds a learned (d, g_h, g_w) grid per modality (8 × 8 for
    maps, 1 × 1 for vectors), resampled bilinearly when a map's size differs. The intra-
    and inter-modal transformers share it, as in mmFormer.

    Auxiliary heads (``aux=True``, :meth:`forward_auxiliary`): ONE decoder shared by all
    modalities, applied to each Z_i seen as a (b, d, h, w) map,

        y_i = head(LeakyReLU_0.2(BN(conv_k×k(Z_i)))),   k = 3 on maps, 1 on vectors,

    ``decoder`` the conv + BN + activation (d → d / 2 channels), ``head`` the 1×1 conv to
    the classes; y_i is trained over the samples where modality i is present.

    Args:
        channels: per-modality widths c_i.
        num_classes: classes of the auxiliary logits.
        aux: build the shared decoder.
        width: the token width d; None: from ``widths``.
        widths: ``"paper"``: d = mmFormer's 512; ``"small"``: d = the widest modality.
        num_heads: attention heads (default :func:`default_heads`, 8 for d = 512).
        num_layers: layers per transformer (mmFormer: 1).
        ff_ratio: feed-forward width / d (mmFormer: 4096 / 512 = 8).
        dropout: dropout in attention and feed-forward (mmFormer's code: 0.1).
        vectors: the features are (b, c) vectors: a 1 × 1 position grid, a 1×1 decoder.
        pos_grid: the learned position grid (g_h, g_w) for maps.
    """

    # Attention over every position of every modality costs O((m h w)²): a network with
    # many stages (ESANet) uses it on the bottleneck only and concatenates the others.
    bottleneck_only = True

    def __init__(
        self,
        channels: Sequence[int],
        num_classes: int,
        *,
        aux: bool = False,
        width: int | None = None,
        widths: str = "paper",
        num_heads: int | None = None,
        num_layers: int = 1,
        ff_ratio: int = 8,
        dropout: float = 0.0,
        vectors: bool = False,
        pos_grid: tuple[int, int] = (8, 8),
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        if widths not in ("paper", "small"):
            raise ValueError(f"widths must be 'paper' or 'small', got {widths!r}")
        m, c = len(self.channels), max(self.channels)
        d = int(width) if width is not None else PAPER_WIDTH if widths == "paper" else c
        heads = num_heads or default_heads(d)

        def transformer() -> Transformer:
            return Transformer(d, heads, ff_ratio * d, num_layers, dropout)

        grid = (1, 1) if vectors else tuple(pos_grid)
        self.tokens = nn.ModuleList(nn.Linear(ci, d) for ci in self.channels)
        self.pos = nn.Parameter(torch.zeros(m, d, *grid))  # zero-initialised, as mmFormer
        self.intra = nn.ModuleList(transformer() for _ in range(m))
        self.inter = transformer()
        self.out = nn.Conv2d(m * d, m * c, 1)
        kernel, hidden = (1 if vectors else 3), max(d // 2, 1)
        self.decoder = (
            nn.Sequential(
                nn.Conv2d(d, hidden, kernel, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(hidden),
                nn.LeakyReLU(0.2, inplace=True),
            )
            if aux
            else None
        )
        self.head = nn.Conv2d(hidden, num_classes, 1) if aux else None
        self.width = d
        self.out_channels: int = m * c

    def position(self, i: int, height: int, width: int) -> torch.Tensor:
        """p_i for an h × w map as (h w, d) rows, row-major positions: the learned grid,
        bilinearly resampled (align_corners=False) when its size is not (h, w)."""
        grid = self.pos[i : i + 1]
        if grid.shape[2:] != (height, width):
            grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        return grid[0].flatten(1).transpose(0, 1)

    def intra_modal(
        self, maps: Sequence[torch.Tensor], present: torch.Tensor
    ) -> list[torch.Tensor]:
        """Z_1..Z_m, each (b, h w, d), from (b, c_i, h, w) maps (absent inputs zeroed first,
        so Z_i does not depend on them; Z_i is not yet zeroed)."""
        h, w = maps[0].shape[2:]
        streams = []
        for i, x in enumerate(maps):
            x = torch.where(present[:, i, None, None, None], x, 0.0)
            tokens = self.tokens[i](x.flatten(2).transpose(1, 2))
            streams.append(self.intra[i](tokens, self.position(i, h, w)))
        return streams

    def fuse(
        self, features: list[torch.Tensor], mask: torch.Tensor, auxiliary: bool
    ) -> tuple[torch.Tensor, list[AuxiliaryLogits]]:
        """The fused features, and the shared decoder's logits per modality when asked
        (none without ``aux``)."""
        maps, vector = as_maps(features, mask, self.channels)
        present = present_of(mask)
        h, w = maps[0].shape[2:]
        streams = self.intra_modal(maps, present)
        heads = []
        if auxiliary and self.decoder is not None and self.head is not None:
            heads = [
                AuxiliaryLogits(self.head(self.decoder(as_map(z, h, w))), present[:, i])
                for i, z in enumerate(streams)
            ]
        zeroed = [torch.where(present[:, i, None, None], z, 0.0) for i, z in enumerate(streams)]
        pos = torch.cat([self.position(i, h, w) for i in range(len(maps))], dim=0)
        fused = self.inter(torch.cat(zeroed, dim=1), pos)
        outputs = [as_map(u, h, w) for u in fused.split(h * w, dim=1)]
        return restore(self.out(torch.cat(outputs, dim=1)), vector), heads


def as_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(b, h w, d) row-major tokens as a (b, d, h, w) map."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)
