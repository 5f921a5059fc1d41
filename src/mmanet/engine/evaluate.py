"""Evaluation over every modality combination from one encoder pass per batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mmanet.config import Config
from mmanet.data import DataBundle
from mmanet.engine import distributed
from mmanet.engine.loader import make_loader
from mmanet.metrics import (
    binary_confusion,
    classification_metrics,
    confusion_matrix,
    equal_error_threshold,
    iou_metrics,
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
    ignore_index: int | None = None,
) -> torch.Tensor:
    """(c, k, k) confusion matrices, one per mask; each encoder runs once per batch.

    Labels may be per sample (b,) or per pixel (b, h, w); pixels labelled
    ``ignore_index`` are left out. Under data parallelism every process passes the loader
    of its own shard and gets the sum over all processes.
    """
    was_training = model.training
    model.eval()
    mask_tensor = torch.tensor(masks, dtype=torch.float32, device=device)
    total = torch.zeros(len(masks), num_classes, num_classes, dtype=torch.long, device=device)
    for inputs, labels in loader:
        inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
        labels = labels.to(device, non_blocking=True)
        logits = model.predict_masks(model.encode(inputs), mask_tensor)  # (c, b, k, ...)
        predictions = logits.argmax(dim=2)  # (c, b, ...)
        valid = labels != ignore_index if ignore_index is not None else None
        for i in range(len(masks)):
            if valid is None:
                total[i] += confusion_matrix(predictions[i], labels, num_classes)
            else:
                total[i] += confusion_matrix(predictions[i][valid], labels[valid], num_classes)
    model.train(was_training)
    return distributed.all_reduce_sum(total).cpu()


@torch.no_grad()
def combination_scores(
    model: UnifiedNetwork,
    loader: DataLoader,
    masks: Sequence[Mask],
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities (c, n, k) for every mask and the labels (n,), one encoder pass
    (under data parallelism: of every process's shard, concatenated)."""
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
    scores_all = distributed.all_gather_cat(torch.cat(scores, dim=1), dim=1)
    return scores_all, distributed.all_gather_cat(torch.cat(labels))


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
    task: str = "classification",
    ignore_index: int | None = None,
) -> dict[str, Any]:
    """Metrics for each of the ``2**m - 1`` combinations plus the averages.

    Multi-class: error and accuracy of the arg-max prediction. Two-class anti-spoofing
    (``bona_fide_class`` set): a sample is accepted as bona fide when its bona fide
    probability reaches the threshold (0.5 by default, or one per combination),
    giving APCER, BPCER and ACER besides error and accuracy.

    Segmentation: mIoU, per-class IoU and pixel accuracy from one confusion matrix per
    combination accumulated over the split, ``ignore_index`` pixels left out.

    Returns ``{"combinations": {name: metrics}, "average": ..., "single_average": ...}``.
    """
    masks = model.modalities.combinations
    names = [model.modalities.mask_name(mask) for mask in masks]
    if task == "segmentation":
        confusions = combination_confusions(model, loader, masks, num_classes, device, ignore_index)
        per_combination = {
            name: iou_metrics(conf) for name, conf in zip(names, confusions, strict=True)
        }
        return {"combinations": per_combination, **summarize(per_combination)}
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


def evaluate_split(
    model: UnifiedNetwork,
    data: DataBundle,
    config: Config,
    split: str = "test",
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Every combination on ``split`` of ``data``, with the config's decision threshold."""

    def loader(dataset: Dataset) -> DataLoader:
        shard = distributed.shard(dataset)  # every process its part; the counts are summed
        return make_loader(shard, config.data.eval_batch_size, config.data.num_workers)

    bona_fide = config.data.bona_fide_class
    thresholds: float | dict[str, float] = 0.5
    if bona_fide is not None and config.threshold == "val_eer":
        thresholds = equal_error_thresholds(model, loader(data.val), bona_fide, device)
    elif bona_fide is not None:
        thresholds = float(config.threshold)
    return evaluate_combinations(
        model,
        loader(data.split(split)),
        data.num_classes,
        device,
        bona_fide_class=bona_fide,
        thresholds=thresholds,
        task=data.task,
        ignore_index=data.ignore_index,
    )
