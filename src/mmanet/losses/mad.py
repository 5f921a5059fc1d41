"""Margin-aware distillation, MAD (paper Eqs. 2-8, docs/method.md#mad), and its SP ablation.

Two granularities (docs/method.md#segmentation):

* ``"sample"`` (default): one sample per image, features flattened to (b, chw).
* ``"pixel"``: every pixel of a pooled feature map (at most 30 x 40 by default)
  is a sample, N = b*h*w of them.  The N x N relation matrices are never
  materialised: the gaps are computed ``block_rows`` rows at a time, and autograd
  keeps only the (N, c) inputs, not the (block_rows, N) slabs, which the backward
  pass recomputes block by block (a custom autograd function for "cosine",
  ``torch.utils.checkpoint`` for "gram").  Peak memory, forward and backward, is
  O(N*c + block_rows*N).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from mmanet.errors import ConfigError
from mmanet.registry import DISTILLATIONS

Relation = Literal["cosine", "gram"]
Weighting = Literal["softmax", "linear", "uniform"]
Granularity = Literal["sample", "pixel"]


@dataclass
class MADSettings:
    """``method.mad``: MAD's settings (SP, its ablation, reads them too). The formulation
    (``method.formulation``) sets ``relation`` and ``weighting``; these override it."""

    relation: Relation = "cosine"
    weighting: Weighting = "softmax"
    temperature: float = 1.0  # weighting=softmax: w = softmax(π / temperature) (Eq. 8: 1)
    granularity: Granularity = "sample"  # dense maps: every pooled pixel a sample

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"method.mad.temperature must be > 0, got {self.temperature}")


_EPS = 1e-8
# Default pixel grid cap of granularity="pixel": a pooled map of at most 30 x 40
# (docs/method.md#segmentation).
PIXEL_POOL_MAX = (30, 40)
# Automatic block size: at most this many relation entries (fp32: 8 MiB) per block.
_BLOCK_ELEMENTS = 1 << 21


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
    give the mean over pixels of the per-pixel entropy (docs/method.md#segmentation).
    """
    log_p = F.log_softmax(teacher_logits.float(), dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)  # (b,) or (b, h, w)
    return entropy.reshape(entropy.shape[0], -1).mean(dim=1)


def sample_weights(
    uncertainty: torch.Tensor, weighting: Weighting = "softmax", temperature: float = 1.0
) -> torch.Tensor:
    """Per-sample weights from the uncertainty (Eq. 8); they sum to one.

    ``softmax``: ``softmax(π / temperature)`` (Eq. 8 is temperature 1; entropies lie in
    [0, ln k], so there the weights differ by a factor of k at most); ``linear``: π / Σπ
    (the authors' code); ``uniform``: 1/b (SP)."""
    if weighting == "softmax":
        return torch.softmax(uncertainty / temperature, dim=0)
    if weighting == "linear":
        return uncertainty / uncertainty.sum().clamp_min(_EPS)
    if weighting == "uniform":
        return torch.full_like(uncertainty, 1.0 / uncertainty.numel())
    raise ValueError(f"unknown MAD weighting {weighting!r}; use 'softmax', 'linear' or 'uniform'")


def pooled_size(height: int, width: int, pool: tuple[int, int] | None = None) -> tuple[int, int]:
    """Pixel grid used by ``granularity="pixel"`` for an (height, width) feature map.

    ``pool=None`` caps each side at 30 x 40 (``(min(h, 30), min(w, 40))``, so at most
    1,200 pixels per image; a map already within the cap is used as is); an explicit
    ``(ph, pw)`` is used exactly.
    """
    if pool is None:
        return min(height, PIXEL_POOL_MAX[0]), min(width, PIXEL_POOL_MAX[1])
    ph, pw = (int(v) for v in pool)
    if ph < 1 or pw < 1:
        raise ValueError(f"MAD pixel pool must be positive, got {pool!r}")
    return ph, pw


def _pool(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.adaptive_avg_pool2d(maps, size)


def pixel_uncertainty(teacher_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-pixel teacher entropy, shape (b*h*w,), on the (h, w) = ``size`` grid.

    The (b, k, H, W) logits are adaptive-average-pooled to ``size`` (the same pooling
    as the features; a no-op when already that size), then the entropy of the
    softmax over k is taken per pixel.  Pixels are ordered image-major, then row, column.
    """
    if teacher_logits.dim() != 4:
        raise ValueError(
            "MAD granularity='pixel' needs dense teacher logits (b, k, h, w), "
            f"got shape {tuple(teacher_logits.shape)}"
        )
    log_p = F.log_softmax(_pool(teacher_logits.float(), size), dim=1)
    return (-(log_p.exp() * log_p).sum(dim=1)).reshape(-1)


def _pixel_vectors(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(b, c, h, w) -> pooled (b*h*w, c) fp32 pixel vectors, image-major order."""
    pooled = _pool(maps.float(), size)
    return pooled.permute(0, 2, 3, 1).reshape(-1, pooled.shape[1])


def _block_gaps(
    student: torch.Tensor, teacher: torch.Tensor, start: int, stop: int, relation: Relation
) -> torch.Tensor:
    """Gaps g(i) for rows start..stop-1: one (rows, N) slab of each relation matrix."""
    if relation == "cosine":  # inputs are already unit rows
        r_d = student[start:stop] @ student.T
        r_t = teacher[start:stop] @ teacher.T
    else:  # "gram": each complete row of the Gram matrix is in the slab, normalise it
        r_d = F.normalize(student[start:stop] @ student.T, dim=1, eps=_EPS)
        r_t = F.normalize(teacher[start:stop] @ teacher.T, dim=1, eps=_EPS)
    return (r_t - r_d).pow(2).sum(dim=1)


def _cosine_slab(student: torch.Tensor, teacher: torch.Tensor, start: int, stop: int):
    """``r_t − r_d`` for rows start..stop-1 of unit-row inputs, a (rows, N) tensor."""
    return torch.addmm(teacher[start:stop] @ teacher.T, student[start:stop], student.T, alpha=-1)


class _CosineGaps(torch.autograd.Function):
    """Blocked cosine gaps with a hand-written blocked backward (linear memory).

    Forward keeps only the (N, c) unit vectors.  Backward recomputes each slab
    ``D = r_t − r_d`` and, with ``G = −2 diag(grad_g) D``, adds ``G s`` to the slab's
    rows and ``Gᵀ s[rows]`` to all rows (``r_d = s sᵀ``, so ``∂L/∂s = G s + Gᵀ s``).
    """

    @staticmethod
    def forward(ctx, student, teacher, block_rows):
        ctx.save_for_backward(student, teacher)
        ctx.block_rows = block_rows
        n = student.shape[0]
        gaps = student.new_empty(n)
        for start in range(0, n, block_rows):
            stop = min(start + block_rows, n)
            gaps[start:stop] = _cosine_slab(student, teacher, start, stop).square_().sum(dim=1)
        return gaps

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_gaps):
        student, teacher = ctx.saved_tensors
        n, block_rows = student.shape[0], ctx.block_rows
        grad = torch.zeros_like(student)
        for start in range(0, n, block_rows):
            stop = min(start + block_rows, n)
            slab = _cosine_slab(student, teacher, start, stop)
            slab.mul_(grad_gaps[start:stop, None] * -2.0)  # G for these rows
            grad[start:stop].addmm_(slab, student)
            grad.addmm_(slab.T, student[start:stop])
        return grad, None, None


def pixel_relation_gaps(
    student: torch.Tensor,
    teacher: torch.Tensor,
    relation: Relation = "cosine",
    block_rows: int | None = None,
) -> torch.Tensor:
    """``g(i) = Σ_j (r_t(i,j) − r_d(i,j))²`` for (N, c_s) / (N, c_t) vectors, shape (N,).

    Computed ``block_rows`` rows at a time (default: enough rows for about 2**21
    relation entries per block), never forming the N x N matrices.  Backward stays
    linear in memory too: ``"cosine"`` uses a custom autograd function whose backward
    recomputes each block and applies the analytic gradient; ``"gram"`` runs each
    block under non-reentrant ``torch.utils.checkpoint`` (recomputed in backward).
    """
    if relation not in ("cosine", "gram"):
        raise ValueError(f"unknown MAD relation {relation!r}; use 'cosine' or 'gram'")
    n = student.shape[0]
    if teacher.shape[0] != n:
        raise ValueError(f"MAD: {n} student pixels but {teacher.shape[0]} teacher pixels")
    if block_rows is None:
        block_rows = max(1, _BLOCK_ELEMENTS // max(n, 1))
    if block_rows < 1:
        raise ValueError(f"MAD block_rows must be positive, got {block_rows}")
    if n == 0:
        return student.new_zeros(0, dtype=torch.float32)
    student = student.float()
    teacher = teacher.detach().float()
    if relation == "cosine":
        student = F.normalize(student, dim=1, eps=_EPS)
        teacher = F.normalize(teacher, dim=1, eps=_EPS)
        return _CosineGaps.apply(student, teacher, block_rows)
    use_checkpoint = torch.is_grad_enabled() and student.requires_grad
    gaps = []
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        if use_checkpoint:
            gap = checkpoint(
                _block_gaps, student, teacher, start, stop, relation, use_reentrant=False
            )
        else:
            gap = _block_gaps(student, teacher, start, stop, relation)
        gaps.append(gap)
    return torch.cat(gaps)


def mad_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    relation: Relation = "cosine",
    weighting: Weighting = "softmax",
    granularity: Granularity = "sample",
    pool: tuple[int, int] | None = None,
    block_rows: int | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``L_MAD = Σ_i w(i) · Σ_j (r_t(i,j) − r_d(i,j))²`` (paper Eqs. 2-8, docs/method.md#mad).

    Args:
        student_features: deployment-network features ``z_d``, shape (b, ...).
        teacher_features: teacher features ``z_t``, shape (b, ...); detached here.
        teacher_logits: teacher logits ``y_t``, (b, k) or (b, k, h, w); detached here.
        relation: ``"cosine"`` (paper Eq. 4) or ``"gram"`` (authors' code).
        weighting: ``"softmax"`` of the teacher entropy (Eq. 8, MAD), ``"linear"``
            (entropy / its sum, authors' code) or ``"uniform"`` (1/b: the SP ablation).
        granularity: ``"sample"`` (default; one sample per image, features flattened)
            or ``"pixel"`` (the segmentation option): features (b, c, h, w) and
            dense logits (b, k, H, W); both feature maps are adaptive-average-pooled to
            :func:`pooled_size` ``(h, w, pool)`` and every pixel is a sample
            (N = b*h*w vectors of c channels; student and teacher c may differ).  The
            logits are adaptive-average-pooled to the same grid and π(i) is the
            entropy of each pooled pixel; the weights are taken over all N pixels.
        pool: pixel grid for ``"pixel"``; ``None`` = ``(min(h, 30), min(w, 40))``.
            Ignored for ``"sample"``.
        block_rows: relation rows per block for ``"pixel"`` (memory O(block_rows*N));
            ``None`` picks about 2**21 / N.  Ignored for ``"sample"``.

    The reductions run in fp32 whatever the input precision.
    """
    if granularity == "pixel":
        if student_features.dim() != 4 or teacher_features.dim() != 4:
            raise ValueError(
                "MAD granularity='pixel' needs (b, c, h, w) feature maps, got "
                f"{tuple(student_features.shape)} and {tuple(teacher_features.shape)}"
            )
        size = pooled_size(*student_features.shape[-2:], pool)
        student = _pixel_vectors(student_features, size)
        teacher = _pixel_vectors(teacher_features.detach(), size)
        gap = pixel_relation_gaps(student, teacher, relation, block_rows)
        uncertainty = pixel_uncertainty(teacher_logits.detach(), size)
        weights = sample_weights(uncertainty, weighting, temperature)
        return (weights * gap).sum()
    if granularity != "sample":
        raise ValueError(f"unknown MAD granularity {granularity!r}; use 'sample' or 'pixel'")
    b = student_features.shape[0]
    student = student_features.reshape(b, -1).float()
    teacher = teacher_features.detach().reshape(b, -1).float()
    gap = (relation_matrix(teacher, relation) - relation_matrix(student, relation)).pow(2).sum(1)
    weights = sample_weights(teacher_uncertainty(teacher_logits.detach()), weighting, temperature)
    return (weights * gap).sum()


def configured_mad(
    student: torch.Tensor,
    teacher: torch.Tensor,
    teacher_logits: torch.Tensor,
    method: Any,
    weighting: Weighting,
) -> torch.Tensor:
    """:func:`mad_loss` with the ``method.mad`` options and the given sample weighting."""
    mad = method.mad
    return mad_loss(
        student,
        teacher,
        teacher_logits,
        relation=mad.relation,
        weighting=weighting,
        granularity=mad.granularity,
        temperature=mad.temperature,
    )


def relation_rows(features: torch.Tensor, granularity: Granularity) -> int:
    """How many rows (samples, or pooled pixels) the relation matrices of ``features``
    have."""
    if granularity == "sample":
        return features.shape[0]
    height, width = pooled_size(*features.shape[-2:])
    return features.shape[0] * height * width


@DISTILLATIONS.register("mad", settings=MADSettings)
def margin_aware_distillation(
    student: torch.Tensor, teacher: torch.Tensor, teacher_logits: torch.Tensor, method: Any
) -> torch.Tensor:
    """``method.distill=mad``: L_MAD with the ``method.mad`` options."""
    return configured_mad(student, teacher, teacher_logits, method, method.mad.weighting)


@DISTILLATIONS.register("sp", settings=MADSettings, settings_under="mad")
def similarity_preserving(
    student: torch.Tensor, teacher: torch.Tensor, teacher_logits: torch.Tensor, method: Any
) -> torch.Tensor:
    """``method.distill=sp``: the SP ablation, L_MAD with uniform sample weights —
    ``(1/b) Σ_i Σ_j (r_t − r_d)²`` — or, with ``method.sp_reduction=entries``, the mean
    over the b² entries (the authors' ``mse_loss``), b times smaller."""
    loss = configured_mad(student, teacher, teacher_logits, method, "uniform")
    if method.sp_reduction == "entries":
        loss = loss / relation_rows(student, method.mad.granularity)
    return loss
