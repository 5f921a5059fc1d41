"""mmFormer fusion (Zhang et al., MICCAI 2022): intra-modal then masked inter-modal attention.

Every position of every modality is a token. An intra-modal transformer layer per
modality models long-range dependencies inside it; an inter-modal layer over all tokens,
with absent modalities' tokens hidden by the key padding mask, builds the fused tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mmanet.fusion.common import AuxiliaryFusion, as_maps, check_channels, present_of, restore
from mmanet.outputs import AuxiliaryLogits
from mmanet.registry import FUSIONS


def default_heads(width: int) -> int:
    """The largest h in (8, 4, 2, 1) that divides ``width`` with head size width / h >= 16."""
    return next(h for h in (8, 4, 2, 1) if width % h == 0 and (width // h >= 16 or h == 1))


def sinusoidal_2d(
    height: int, width: int, dim: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Fixed 2D sinusoidal positional encoding, (height · width, dim), row-major positions.

    With q = ⌈dim / 4⌉ and ω_k = 10000^{−k/q}, k < q, position (y, x) gets
    [sin(y ω), cos(y ω), sin(x ω), cos(x ω)], truncated to ``dim`` channels.
    """
    quarter = math.ceil(dim / 4)
    omega = 10000.0 ** (-torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    y = torch.arange(height, device=device, dtype=torch.float32)[:, None] * omega
    x = torch.arange(width, device=device, dtype=torch.float32)[:, None] * omega
    pe_y = torch.cat([y.sin(), y.cos()], dim=1)[:, None, :].expand(height, width, -1)
    pe_x = torch.cat([x.sin(), x.cos()], dim=1)[None, :, :].expand(height, width, -1)
    return torch.cat([pe_y, pe_x], dim=2)[..., :dim].reshape(height * width, dim).to(dtype)


@FUSIONS.register("mmformer")
class MMFormerFusion(AuxiliaryFusion):
    """Masked intra/inter-modal transformer fusion; ``out_channels = m d``, d = max(channels).

    For modality i with maps F_i (b, c_i, h, w), P the present modalities of a sample:

        T_i = F_i W_i + b_i + PE(h, w) + e_i                    tokens, (b, h w, d),
        T_i ← Intra_i(T_i)                                      per-modality layers,
        [U_1, ..., U_m] = LN(Inter([T_1, ..., T_m]; keys of T_j, j ∉ P, masked)),
        out = conv_1×1(cat(1[1∈P] U_1, ..., 1[m∈P] U_m))        (U_i as (b, d, h, w) maps).

    W_i is the per-modality token projection, which also takes c_i to the common width d
    (no separate 1×1 projection). PE is the fixed 2D sinusoidal encoding, computed from h, w
    at each call; e_i a learned modality embedding; a vector input is one token. The layers
    are pre-norm ``nn.TransformerEncoderLayer`` (GELU, feed-forward ``ff_ratio`` · d, no
    dropout by default). Attention over all m h w tokens costs O((m h w)²): use small maps.

    Auxiliary heads (``aux=True``), see :meth:`forward_auxiliary`: a shared per-modality
    1×1 conv classifier on each intra-modal output T_i seen as a map, over the samples
    where modality i is present.
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
        num_heads: int | None = None,
        num_layers: int = 1,
        ff_ratio: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        d, m = max(self.channels), len(self.channels)
        heads = num_heads or default_heads(d)

        def layer() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(
                d, heads, ff_ratio * d, dropout, "gelu", batch_first=True, norm_first=True
            )

        self.tokens = nn.ModuleList(nn.Linear(c, d) for c in self.channels)
        self.modality_embedding = nn.Parameter(torch.zeros(m, d))
        nn.init.trunc_normal_(self.modality_embedding, std=0.02)
        self.intra = nn.ModuleList(
            nn.ModuleList(layer() for _ in range(num_layers)) for _ in range(m)
        )
        self.inter = layer()
        self.norm = nn.LayerNorm(d)
        self.out = nn.Conv2d(m * d, m * d, 1)
        self.head = nn.Conv2d(d, num_classes, 1) if aux else None
        self.width = d
        self.out_channels: int = m * d

    def fuse(
        self, features: list[torch.Tensor], mask: torch.Tensor, auxiliary: bool
    ) -> tuple[torch.Tensor, list[AuxiliaryLogits]]:
        """The fused features, and the auxiliary heads' logits when asked (none without
        ``aux``)."""
        maps, vector = as_maps(features, mask, self.channels)
        present = present_of(mask)
        b, _, h, w = maps[0].shape
        d, hw = self.width, h * w
        pe = sinusoidal_2d(h, w, d, maps[0].device, maps[0].dtype)
        streams = []
        for i, x in enumerate(maps):
            x = torch.where(present[:, i, None, None, None], x, 0.0)
            t = self.tokens[i](x.flatten(2).transpose(1, 2)) + pe + self.modality_embedding[i]
            for block in self.intra[i]:
                t = block(t)
            streams.append(t)
        heads = []
        if auxiliary and self.head is not None:
            heads = [
                AuxiliaryLogits(self.head(t.transpose(1, 2).reshape(b, d, h, w)), present[:, i])
                for i, t in enumerate(streams)
            ]
        hidden = ~present.repeat_interleave(hw, dim=1)  # (b, m hw), True = ignored key
        hidden = hidden & present.any(dim=1, keepdim=True)  # a row with none: hide nothing
        fused = self.norm(self.inter(torch.cat(streams, dim=1), src_key_padding_mask=hidden))
        outputs = [
            torch.where(present[:, i, None, None, None], u.transpose(1, 2).reshape(b, d, h, w), 0.0)
            for i, u in enumerate(fused.split(hw, dim=1))
        ]
        return restore(self.out(torch.cat(outputs, dim=1)), vector), heads
