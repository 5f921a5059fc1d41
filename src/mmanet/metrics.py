"""Metrics from confusion matrices: error/accuracy, APCER/BPCER/ACER (ISO/IEC 30107-3), and
mIoU / pixel accuracy for semantic segmentation.

All rates are percentages. A confusion matrix has true classes as rows and
predicted classes as columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """(k, k) counts: entry (t, p) counts samples of true class t predicted as p."""
    flat = labels.reshape(-1).long() * num_classes + predictions.reshape(-1).long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_metrics(
    confusion: torch.Tensor, bona_fide_class: int | None = None
) -> dict[str, float]:
    """Accuracy and error rate; for a two-class task with ``bona_fide_class`` set, also
    APCER (attacks accepted as bona fide), BPCER (bona fide rejected) and their mean ACER.
    """
    confusion = confusion.double()
    total = confusion.sum().item()
    accuracy = 100.0 * confusion.diag().sum().item() / total if total else float("nan")
    metrics = {"accuracy": accuracy, "error": 100.0 - accuracy}
    if bona_fide_class is not None:
        if confusion.shape[0] != 2:
            raise ValueError("APCER/BPCER need a two-class task")
        attack = 1 - bona_fide_class
        metrics["apcer"] = _rate(confusion[attack, bona_fide_class], confusion[attack].sum())
        metrics["bpcer"] = _rate(
            confusion[bona_fide_class, attack], confusion[bona_fide_class].sum()
        )
        metrics["acer"] = (metrics["apcer"] + metrics["bpcer"]) / 2
    return metrics


def binary_confusion(
    bona_fide_scores: torch.Tensor, labels: torch.Tensor, bona_fide_class: int, threshold: float
) -> torch.Tensor:
    """2 x 2 confusion when a sample is accepted as bona fide iff its score >= ``threshold``."""
    accepted = bona_fide_scores >= threshold
    predictions = torch.where(accepted, bona_fide_class, 1 - bona_fide_class)
    return confusion_matrix(predictions, labels, 2)


def equal_error_threshold(
    bona_fide_scores: torch.Tensor, labels: torch.Tensor, bona_fide_class: int
) -> float:
    """The score threshold at which APCER and BPCER are closest (ties: the lower threshold).

    Candidates are the observed scores; APCER(t) = share of attacks with score >= t,
    BPCER(t) = share of bona fide samples with score < t.
    """
    scores = bona_fide_scores.double()
    bona_fide = labels == bona_fide_class
    if bona_fide.all() or (~bona_fide).all():
        raise ValueError("an equal-error threshold needs bona fide and attack samples")
    candidates = torch.unique(scores)  # sorted ascending
    attack_scores = torch.sort(scores[~bona_fide]).values
    genuine_scores = torch.sort(scores[bona_fide]).values
    attacks, genuine = len(attack_scores), len(genuine_scores)
    # by binary search (O(n log n)): searchsorted(left) counts the scores below t
    accepted = attacks - torch.searchsorted(attack_scores, candidates, side="left")
    rejected = torch.searchsorted(genuine_scores, candidates, side="left")
    # |APCER - BPCER| in exact integers: |accepted/attacks - rejected/genuine| * attacks * genuine
    gap = (accepted * genuine - rejected * attacks).abs()
    return float(candidates[int(gap.argmin())])  # argmin: the first (lowest) of tied minima


def iou_metrics(
    confusion: torch.Tensor, absent: Literal["skip", "zero"] = "skip"
) -> dict[str, float | list[float]]:
    """mIoU, per-class IoU = TP / (TP + FP + FN) and pixel accuracy, in %, from one confusion
    accumulated over a whole split. A class absent from both ground truth and predictions has
    IoU NaN; ``absent="skip"`` leaves it out of the mean, ``"zero"`` counts it as 0 (ESANet's
    mIoU, a mean over all k classes)."""
    confusion = confusion.double()
    true_positives = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positives
    iou = torch.where(union > 0, true_positives / union.clamp(min=1), torch.nan) * 100.0
    present = ~iou.isnan()
    if absent == "zero":
        miou = iou.nan_to_num(0.0).mean().item() if len(iou) else float("nan")
    else:
        miou = iou[present].mean().item() if present.any() else float("nan")
    total = confusion.sum().item()
    return {
        "miou": miou,
        "per_class_iou": iou.tolist(),
        "pixel_accuracy": 100.0 * true_positives.sum().item() / total if total else float("nan"),
    }


def _rate(count: torch.Tensor, total: torch.Tensor) -> float:
    return 100.0 * count.item() / total.item() if total.item() else float("nan")


def summarize(per_combination: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Average of every scalar metric over all combinations and over the single-modality
    ones (not of ``n``, the number of samples a combination was evaluated on)."""
    names = list(per_combination)
    singles = [n for n in names if "+" not in n]
    first = per_combination[names[0]]
    keys = [k for k, v in first.items() if isinstance(v, (int, float)) and k != "n"]

    def mean(group: list[str]) -> dict[str, float]:
        return {k: sum(per_combination[n][k] for n in group) / len(group) for k in keys}

    return {"average": mean(names), "single_average": mean(singles)}
