"""Margin-aware distillation, MAD (SPEC §3, paper Eqs. 2-8), and its SP ablation."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Relation = Literal["cosine", "gram"]
Weighting = Literal["softmax", "linear", "uniform"]

_EPS = 1e-8


def relation_matrix(features: torch.Tensor, relation: Relation = "cosine") -> torch.Tensor:
    """(b, b) inter-sample relations of (b, d) features (Eqs. 2-4).

    ``"cosine"``: ``n(u) n(u)^T`` with row-wise L2 normalisation ``n``.
    ``"gram"``: the raw Gram matrix ``u u^T`` with each row L2-normalised
    (the SP formulation used by the authors' code).
    """
    if relation == "cosine":
        unit = F.normalize(features, dim=1, eps=_EPS)
        return unit @ unit.T
    if relation == "gram":
        return F.normalize(features @ features.T, dim=1, eps=_EPS)
    raise ValueError(f"unknown MAD relation {relation!r}; use 'cosine' or 'gram'")


def teacher_uncertainty(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the teacher's softmax per sample (Eqs. 6-7), shape (b,).

    Logits of shape (b, k) give one entropy per sample; dense logits (b, k, h, w)
    give the mean over pixels of the per-pixel entropy (SPEC §3, segmentation).
    """
    log_p = F.log_softmax(teacher_logits.float(), dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)  # (b,) or (b, h, w)
    return entropy.reshape(entropy.shape[0], -1).mean(dim=1)


def sample_weights(uncertainty: torch.Tensor, weighting: Weighting = "softmax") -> torch.Tensor:
    """Per-sample weights from the uncertainty (Eq. 8); they sum to one."""
    if weighting == "softmax":
        return torch.softmax(uncertainty, dim=0)
    if weighting == "linear":
        return uncertainty / uncertainty.sum().clamp_min(_EPS)
    if weighting == "uniform":
        return torch.full_like(uncertainty, 1.0 / uncertainty.numel())
    raise ValueError(f"unknown MAD weighting {weighting!r}; use 'softmax', 'linear' or 'uniform'")


def mad_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    relation: Relation = "cosine",
    weighting: Weighting = "softmax",
) -> torch.Tensor:
    """``L_MAD = Σ_i w(i) · Σ_j (r_t(i,j) − r_d(i,j))²`` (SPEC §3).

    Args:
        student_features: deployment-network features ``z_d``, shape (b, ...).
        teacher_features: teacher features ``z_t``, shape (b, ...); detached here.
        teacher_logits: teacher logits ``y_t``, (b, k) or (b, k, h, w); detached here.
        relation: ``"cosine"`` (paper Eq. 4) or ``"gram"`` (authors' code).
        weighting: ``"softmax"`` of the teacher entropy (Eq. 8, MAD), ``"linear"``
            (entropy / its sum, authors' code) or ``"uniform"`` (1/b: the SP ablation).

    The reductions run in fp32 whatever the input precision.
    """
    b = student_features.shape[0]
    student = student_features.reshape(b, -1).float()
    teacher = teacher_features.detach().reshape(b, -1).float()
    gap = (relation_matrix(teacher, relation) - relation_matrix(student, relation)).pow(2).sum(1)
    weights = sample_weights(teacher_uncertainty(teacher_logits.detach()), weighting)
    return (weights * gap).sum()
