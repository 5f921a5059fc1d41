"""Evaluation over every modality combination from one encoder pass per batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from mmanet.metrics import classification_metrics, confusion_matrix, summarize
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


def evaluate_combinations(
    model: UnifiedNetwork,
    loader: DataLoader,
    num_classes: int,
    device: torch.device | str = "cpu",
    bona_fide_class: int | None = None,
) -> dict[str, dict]:
    """Metrics for each of the ``2**m - 1`` combinations plus the averages.

    Returns ``{"combinations": {name: metrics}, "average": ..., "single_average": ...}``.
    """
    masks = model.modalities.combinations
    confusions = combination_confusions(model, loader, masks, num_classes, device)
    per_combination = {
        model.modalities.mask_name(mask): classification_metrics(conf, bona_fide_class)
        for mask, conf in zip(masks, confusions, strict=True)
    }
    return {"combinations": per_combination, **summarize(per_combination)}
