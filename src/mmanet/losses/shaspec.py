"""ShaSpec's auxiliary losses (docs/methods/shaspec.md): the domain alignment objective on
the shared features and the domain classification objective on the specific ones, over
the modalities each sample has in its mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def dao_pairs(num_modalities: int) -> list[tuple[int, int]]:
    """The modality pairs DAO aligns: each modality with the next, the last with the first
    (their ``train_SS.py``: 0-1, 1-2, 2-3, 3-0), each pair once (one pair for m = 2)."""
    pairs = {tuple(sorted((i, (i + 1) % num_modalities))) for i in range(num_modalities)}
    return sorted(p for p in pairs if p[0] != p[1])


def dao_loss(shared: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor | None:
    """L_DAO = Σ_{(i, j)} mean |r_i − r_j|: for each pair of :func:`dao_pairs`, the mean
    absolute difference of the two modalities' shared features over the samples that have
    both (and every feature element); None when no sample has a pair.

    ``shared``: per modality (b, d[, h, w]); ``mask``: (b, m) 0/1.
    """
    present = mask > 0
    total = None
    for i, j in dao_pairs(len(shared)):
        rows = (present[:, i] & present[:, j]).nonzero().flatten()
        if len(rows) == 0:
            continue
        gap = F.l1_loss(shared[i][rows].float(), shared[j][rows].float())
        total = gap if total is None else total + gap
    return total


def dco_loss(domain_logits: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """L_DCO: the cross-entropy of the domain classifier's logits (b, m) on each modality's
    pooled specific features against the modality's index, the mean over the (sample,
    modality) entries whose modality is present."""
    logits = torch.stack(list(domain_logits), dim=1).float()  # (b, m, m)
    m = logits.shape[1]
    target = torch.arange(m, device=logits.device).expand(logits.shape[0], m)
    present = mask > 0
    return F.cross_entropy(logits[present], target[present])


__all__ = ["dao_loss", "dao_pairs", "dco_loss"]
