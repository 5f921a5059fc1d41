"""Evaluation over every modality combination from one encoder pass per batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from mmanet.metrics import (
    binary_confusion,
    classification_metrics,
    confusion_matrix,
    equal_error_threshold,
    summarize,
)
from mmanet.modality import Mask
from mmanet.models import UnifiedNetwork


@torch.no_grad()
def combination_confusions(
    model: UnifiedNetwork,
    loader: DataLoader,
    masks: Sequence[Mask],
    num_classes: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(c, k, k) confusion matrices, one per mask; each encoder runs once per batch."""
    was_training = model.training
    model.eval()
    mask_tensor = torch.tensor(masks, dtype=torch.float32, device=device)
    total = torch.zeros(len(masks), num_classes, num_classes, dtype=torch.long, device=device)
    for inputs, labels in loader:
        inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
        labels = labels.to(device, non_blocking=True)
        logits = model.predict_masks(model.encode(inputs), mask_tensor)  # (c, b, k)
        predictions = logits.argmax(dim=2)
        for i in range(len(masks)):
            total[i] += confusion_matrix(predictions[i], labels, num_classes)
    model.train(was_training)
    return total.cpu()


@torch.no_grad()
def combination_scores(
    model: UnifiedNetwork,
    loader: DataLoader,
    masks: Sequence[Mask],
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities (c, n, k) for every mask and the labels (n,), one encoder pass."""
    was_training = model.training
    model.eval()
    mask_tensor = torch.tensor(masks, dtype=torch.float32, device=device)
    scores, labels = [], []
    for inputs, batch_labels in loader:
        inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
        logits = model.predict_masks(model.encode(inputs), mask_tensor)  # (c, b, k)
        scores.append(logits.float().softmax(dim=2).cpu())
        labels.append(batch_labels)
    model.train(was_training)
    return torch.cat(scores, dim=1), torch.cat(labels)


def equal_error_thresholds(
    model: UnifiedNetwork,
    loader: DataLoader,
    bona_fide_class: int,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Per combination, the threshold that equalises APCER and BPCER on ``loader``'s split."""
    masks = model.modalities.combinations
    scores, labels = combination_scores(model, loader, masks, device)
    return {
        model.modalities.mask_name(mask): equal_error_threshold(
            scores[i, :, bona_fide_class], labels, bona_fide_class
        )
        for i, mask in enumerate(masks)
    }


def evaluate_combinations(
    model: UnifiedNetwork,
    loader: DataLoader,
    num_classes: int,
    device: torch.device | str = "cpu",
    bona_fide_class: int | None = None,
    thresholds: float | Mapping[str, float] = 0.5,
) -> dict[str, Any]:
    """Metrics for each of the ``2**m - 1`` combinations plus the averages.

    Multi-class: error and accuracy of the arg-max prediction. Two-class anti-spoofing
    (``bona_fide_class`` set): a sample is accepted as bona fide when its bona fide
    probability reaches the threshold (0.5 by default, or one per combination),
    giving APCER, BPCER and ACER besides error and accuracy.

    Returns ``{"combinations": {name: metrics}, "average": ..., "single_average": ...}``.
    """
    masks = model.modalities.combinations
    names = [model.modalities.mask_name(mask) for mask in masks]
    if bona_fide_class is None:
        confusions = combination_confusions(model, loader, masks, num_classes, device)
        per_combination = {
            name: classification_metrics(conf, None)
            for name, conf in zip(names, confusions, strict=True)
        }
        return {"combinations": per_combination, **summarize(per_combination)}
    scores, labels = combination_scores(model, loader, masks, device)
    per_threshold = (
        dict.fromkeys(names, float(thresholds))
        if isinstance(thresholds, (int, float))
        else dict(thresholds)
    )
    per_combination = {}
    for i, name in enumerate(names):
        confusion = binary_confusion(
            scores[i, :, bona_fide_class], labels, bona_fide_class, per_threshold[name]
        )
        per_combination[name] = {
            **classification_metrics(confusion, bona_fide_class),
            "threshold": per_threshold[name],
        }
    return {"combinations": per_combination, **summarize(per_combination)}
