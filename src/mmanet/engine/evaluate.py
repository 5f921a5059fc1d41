"""Evaluation over every modality combination from one encoder pass per batch.

The loops live here; what is counted and which metrics come of it is the task's
(:class:`mmanet.tasks.Task`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from mmanet.engine import distributed
from mmanet.engine.loader import make_loader
from mmanet.metrics import summarize
from mmanet.modality import Mask

if TYPE_CHECKING:
    from mmanet.data import DataBundle
    from mmanet.models import UnifiedNetwork
    from mmanet.tasks import Task


@torch.no_grad()
def combination_confusions(
    model: UnifiedNetwork,
    loader: DataLoader,
    masks: Sequence[Mask],
    task: Task,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(c, k, k) confusion matrices, one per mask, of what the task counts (samples, or
    labelled pixels); each encoder runs once per batch. Under data parallelism every
    process passes the loader of its own shard and gets the sum over all processes."""
    was_training = model.training
    model.eval()
    mask_tensor = torch.tensor(masks, dtype=torch.float32, device=device)
    k = task.num_classes
    total = torch.zeros(len(masks), k, k, dtype=torch.long, device=device)
    for inputs, labels in loader:
        inputs = {name: v.to(device, non_blocking=True) for name, v in inputs.items()}
        labels = labels.to(device, non_blocking=True)
        logits = model.predict_masks(model.encode(inputs), mask_tensor)  # (c, b, k, ...)
        predictions = logits.argmax(dim=2)  # (c, b, ...)
        for i in range(len(masks)):
            total[i] += task.confusion(predictions[i], labels)
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


def evaluate_split(
    model: UnifiedNetwork,
    data: DataBundle,
    task: Task,
    split: str = "test",
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Every combination on ``split`` of ``data``: ``{"combinations": {name: metrics},
    "average": ..., "single_average": ..., "metrics": the task's table columns}``."""

    def loader(dataset: Dataset) -> DataLoader:
        shard = distributed.shard(dataset)  # every process its part; the counts are summed
        return make_loader(shard, batch_size, num_workers)

    masks = model.modalities.combinations
    names = [model.modalities.mask_name(mask) for mask in masks]
    results = task.evaluate(model, loader(data.split(split)), masks, device, loader(data.val))
    per_combination = dict(zip(names, results, strict=True))
    return {
        "combinations": per_combination,
        **summarize(per_combination),
        "metrics": list(task.metrics),
    }


__all__ = ["combination_confusions", "combination_scores", "evaluate_split"]
