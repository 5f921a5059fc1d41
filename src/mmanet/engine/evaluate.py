"""Evaluation over every modality combination from one encoder pass per batch.

The loops live here; what is counted and which metrics come of it is the task's
(:class:`mmanet.tasks.Task`): :func:`evaluate_split` hands the task's ``evaluate`` the
loops over the model (:class:`ModelPasses`), so the tasks never import the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from mmanet.data.base import AVAILABLE_KEY
from mmanet.engine import distributed
from mmanet.engine.loader import make_loader
from mmanet.metrics import summarize
from mmanet.modality import Mask
from mmanet.tasks.base import AS_AVAILABLE, Evaluated

if TYPE_CHECKING:
    from mmanet.data import DataBundle
    from mmanet.models import UnifiedNetwork
    from mmanet.tasks import Task


# what a pass may apply to each batch's inputs before the encoders (e.g. a corruption,
# mmanet.corruption_eval): (the batch's modality tensors, the batch index) -> the inputs
Corrupt = Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]]


def _eligible(masks: torch.Tensor, available: torch.Tensor | None) -> torch.Tensor | None:
    """(c, b) bool: which samples have every modality of each mask (None: all of them)."""
    if available is None:
        return None
    return (masks[:, None, :] <= available[None, :, :]).all(dim=2)


def _each_mask(
    model: UnifiedNetwork,
    encoded: Any,
    masks: Sequence[Mask | None],
    mask_tensor: torch.Tensor,
    available: torch.Tensor | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Per mask of ``masks``, from one batch's encoded inputs: the logits (b, k, ...) and
    which samples have all its modalities (None: every sample). ``mask_tensor`` holds the
    masks that are not None, in order; None stands for each sample's own modalities."""
    logits = iter(model.predict_masks(encoded, mask_tensor))  # (c, b, k, ...)
    eligible = _eligible(mask_tensor, available)
    rows = iter(eligible) if eligible is not None else None
    for mask in masks:
        if mask is None:
            yield model.fuse(encoded, available).logits, None
        else:
            yield next(logits), next(rows) if rows is not None else None


@torch.no_grad()
def combination_counts(
    model: UnifiedNetwork,
    loader: DataLoader,
    masks: Sequence[Mask | None],
    task: Task,
    device: torch.device | str = "cpu",
    *,
    corrupt: Corrupt | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, k, k) confusion matrices, one per mask, of what the task counts (samples, or
    labelled pixels), and (c,) how many samples each was counted over; each encoder runs
    once per batch. A mask counts only the samples that have all its modalities; ``None``
    stands for each sample's own modalities ("as available"). Under data parallelism every
    process passes the loader of its own shard and gets the sums over all processes.
    ``corrupt``: applied to each batch's inputs (and its index) before the encoders."""
    was_training = model.training
    model.eval()
    concrete = [mask for mask in masks if mask is not None]
    mask_tensor = torch.tensor(concrete, dtype=torch.float32, device=device)
    k = task.num_classes
    total = torch.zeros(len(masks), k, k, dtype=torch.long, device=device)
    samples = torch.zeros(len(masks), dtype=torch.long, device=device)
    for batch, (inputs, labels) in enumerate(loader):
        inputs = {name: v.to(device, non_blocking=True) for name, v in inputs.items()}
        available = inputs.pop(AVAILABLE_KEY, None)
        if corrupt is not None:
            inputs = corrupt(inputs, batch)
        labels = labels.to(device, non_blocking=True)
        outputs = _each_mask(model, model.encode(inputs), masks, mask_tensor, available)
        for i, (logits, keep) in enumerate(outputs):
            predicted, kept_labels = logits.argmax(dim=1), labels
            if keep is not None:
                predicted, kept_labels = predicted[keep], labels[keep]
            total[i] += task.confusion(predicted, kept_labels)
            samples[i] += len(kept_labels)
    model.train(was_training)
    return distributed.all_reduce_sum(total).cpu(), distributed.all_reduce_sum(samples).cpu()


def combination_confusions(
    model: UnifiedNetwork,
    loader: DataLoader,
    masks: Sequence[Mask],
    task: Task,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The (c, k, k) confusion matrices of :func:`combination_counts`."""
    return combination_counts(model, loader, masks, task, device)[0]


@torch.no_grad()
def combination_scores(
    model: UnifiedNetwork,
    loader: DataLoader,
    masks: Sequence[Mask | None],
    device: torch.device | str = "cpu",
    *,
    corrupt: Corrupt | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class probabilities (c, n, k) for every mask (``None``: each sample's own
    modalities), the labels (n,) and which samples have every modality of each mask
    (c, n); one encoder pass (under data parallelism: every process's shard,
    concatenated). ``corrupt``: as :func:`combination_counts`'s."""
    was_training = model.training
    model.eval()
    concrete = [mask for mask in masks if mask is not None]
    mask_tensor = torch.tensor(concrete, dtype=torch.float32, device=device)
    scores, labels, eligible = [], [], []
    for batch, (inputs, batch_labels) in enumerate(loader):
        inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
        available = inputs.pop(AVAILABLE_KEY, None)
        if corrupt is not None:
            inputs = corrupt(inputs, batch)
        outputs = list(_each_mask(model, model.encode(inputs), masks, mask_tensor, available))
        every = torch.ones(len(batch_labels), dtype=torch.bool)
        scores.append(torch.stack([logits for logits, _ in outputs]).float().softmax(dim=2).cpu())
        labels.append(batch_labels)
        eligible.append(torch.stack([every if k is None else k.cpu() for _, k in outputs]))
    model.train(was_training)
    scores_all = distributed.all_gather_cat(torch.cat(scores, dim=1), dim=1)
    eligible_all = distributed.all_gather_cat(torch.cat(eligible, dim=1), dim=1)
    return scores_all, distributed.all_gather_cat(torch.cat(labels)), eligible_all


@dataclass(frozen=True)
class ModelPasses:
    """The engine's loops over ``model`` on ``device``, as a task's ``evaluate`` asks for
    them (:class:`mmanet.tasks.base.Passes`). ``corrupt``: applied to every batch's
    inputs before the encoders (None: the inputs as loaded)."""

    model: UnifiedNetwork
    device: torch.device | str = "cpu"
    corrupt: Corrupt | None = None
    names: tuple[str, ...] = ()  # the report's name of each mask evaluated (when known)

    def counts(
        self, loader: DataLoader, masks: Sequence[Mask | None], task: Task
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return combination_counts(
            self.model, loader, masks, task, self.device, corrupt=self.corrupt
        )

    def scores(
        self, loader: DataLoader, masks: Sequence[Mask | None]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return combination_scores(self.model, loader, masks, self.device, corrupt=self.corrupt)


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
    "average": ..., "single_average": ..., "metrics": the task's table columns}``.

    Each combination is evaluated on the samples that have all its modalities (its
    metrics' ``n``); on a split with incomplete samples the report also has
    ``"as available"``: each sample with every modality it has."""

    def loader(dataset: Dataset) -> DataLoader:
        shard = distributed.shard(dataset)  # every process its part; the counts are summed
        return make_loader(shard, batch_size, num_workers)

    masks: list[Mask | None] = list(model.modalities.combinations)
    names = [model.modalities.mask_name(mask) for mask in masks]
    dataset = data.split(split)
    incomplete = not bool(data.availability(dataset).all())
    if incomplete:  # a row in which each sample uses every modality it has
        masks.append(None)
        names.append(AS_AVAILABLE)
    passes = ModelPasses(model, device, names=tuple(names))
    target = loader(dataset)
    calibration = target if dataset is data.val else loader(data.val)  # the same: one pass
    results = task.evaluate(passes, target, masks, calibration)
    sections: dict[str, Any] = {}
    if isinstance(results, Evaluated):
        results, sections = results.per_mask, results.sections
    per_combination = dict(zip(names, results, strict=True))
    as_available = per_combination.pop(AS_AVAILABLE, None)
    report = {
        "combinations": per_combination,
        **summarize(per_combination),
        "metrics": list(task.metrics),
    }
    if as_available is not None:
        report[AS_AVAILABLE] = as_available
    for key, section in sections.items():
        if key in report:
            raise ValueError(f"{type(task).__name__}.evaluate: section {key!r} is a report key")
        report[key] = section
    return report


__all__ = [
    "AS_AVAILABLE",
    "Corrupt",
    "ModelPasses",
    "combination_confusions",
    "combination_counts",
    "combination_scores",
    "evaluate_split",
]
