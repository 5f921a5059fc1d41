"""What a task owns: its loss, its metrics and table columns, what MAR's histograms count,
and its prediction output. The engine calls these and never branches on the task's name.

A task is registered by name (``@register_task("classification")``); a dataset names
its task in its :class:`~mmanet.data.DataBundle`, and :func:`build_task` makes the
run's task object from the bundle and the config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from mmanet.outputs import AuxiliaryLogits
from mmanet.registry import TASKS

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from mmanet.config import Config
    from mmanet.data import DataBundle
    from mmanet.modality import Mask
    from mmanet.models import UnifiedNetwork

register_task = TASKS.register


class Task:
    """The base of every task: a cross-entropy task over ``class_names``.

    Args:
        class_names: the k classes.
        ignore_index: a label value the loss and the metrics skip (None: none).
        class_weights: (k,) weights of the task loss (None: unweighted).
    """

    name: ClassVar[str] = "task"
    metrics: ClassVar[tuple[str, ...]] = ()  # the columns of a result table, e.g. error
    default_metric: ClassVar[str] = ""  # what a comparison ranks by
    # what distillation compares with method.mad.features=auto: "head" (the head's
    # representation) or "fused" (the fusion output's map)
    distill_features: ClassVar[str] = "head"
    # `mmanet demo --task <name>`: the bundled config (under mmanet/configs), the paper
    # table of methods it trains, and its default number of seeds; None: no demo
    demo_config: ClassVar[str | None] = None
    demo_methods: ClassVar[str] = "ablation"
    demo_seeds: ClassVar[int] = 1
    sample_scores: ClassVar[bool] = True  # one class-score vector per sample (paper Fig. 4)

    def __init__(
        self,
        class_names: Sequence[str],
        ignore_index: int | None = None,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        self.class_weights = class_weights

    @classmethod
    def from_config(cls, data: DataBundle, config: Config) -> Task:
        """The task of a run on ``data`` (a subclass may read its own config keys)."""
        return cls(data.class_names, data.ignore_index)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to(self, device: torch.device | str) -> Task:
        if self.class_weights is not None:
            self.class_weights = self.class_weights.to(device)
        return self

    # -- training -----------------------------------------------------------------------

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The task loss L_TL of paper Eq. 1: mean cross-entropy over the batch."""
        return F.cross_entropy(logits, labels, weight=self.class_weights)

    def side_loss(self, side_logits: Sequence[torch.Tensor], labels: torch.Tensor) -> Any:
        """The loss of a decoder's side outputs (none for a task without them): 0."""
        if side_logits:
            raise ValueError(f"the {self.name} task has no side outputs")
        return 0.0

    def auxiliary_loss(
        self, auxiliary: Sequence[AuxiliaryLogits], labels: torch.Tensor
    ) -> torch.Tensor | None:
        """Σ over the auxiliary heads of their cross-entropy, each averaged over the
        samples of weight 1 (and the labelled items): Σ_{n,p} w_n v_{n,p} CE_{n,p} /
        max(Σ_{n,p} w_n v_{n,p}, 1), 0 for a head without such samples. None: no heads."""
        if not auxiliary:
            return None
        ignore = -100 if self.ignore_index is None else self.ignore_index
        terms = []
        for head in auxiliary:
            logits = self.auxiliary_logits(head.logits, labels)
            per_item = F.cross_entropy(logits, labels, ignore_index=ignore, reduction="none")
            keep = (labels != ignore).to(per_item.dtype)
            if head.weights is not None:
                keep = keep * head.weights.to(per_item.dtype).view(-1, *[1] * (labels.ndim - 1))
            terms.append((per_item * keep).sum() / keep.sum().clamp(min=1.0))
        return torch.stack(terms).sum()

    def auxiliary_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """An auxiliary head's logits brought to the labels' layout."""
        return logits

    def sample_accuracy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(b,) accuracy of each sample."""
        return (logits.argmax(1) == labels).float()

    # -- evaluation ---------------------------------------------------------------------

    def confusion(self, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(k, k) counts of the items this task scores (true class rows, predicted columns);
        its column sums are what MAR's histograms count (paper Eqs. 10-11)."""
        from mmanet.metrics import confusion_matrix

        if self.ignore_index is not None:
            valid = labels != self.ignore_index
            predictions, labels = predictions[valid], labels[valid]
        return confusion_matrix(predictions, labels, self.num_classes)

    def evaluate(
        self,
        model: UnifiedNetwork,
        loader: DataLoader,
        masks: Sequence[Mask | None],
        device: torch.device | str,
        calibration: DataLoader | None = None,
    ) -> list[dict[str, Any]]:
        """The metrics of each mask (``None``: each sample's own modalities) over the samples
        that have its modalities, with their number ``n``; one encoder pass per batch."""
        from mmanet.engine.evaluate import combination_counts

        confusions, samples = combination_counts(model, loader, masks, self, device)
        return [
            {**self.metrics_from_confusion(confusion), "n": int(count)}
            for confusion, count in zip(confusions, samples, strict=True)
        ]

    def metrics_from_confusion(self, confusion: torch.Tensor) -> dict[str, Any]:
        raise NotImplementedError

    # -- prediction ---------------------------------------------------------------------

    def prediction(self, logits: torch.Tensor) -> dict[str, Any]:
        """One sample's (k, ...) logits as the prediction a user reads."""
        raise NotImplementedError

    def write_prediction(self, result: Mapping[str, Any], out: Path | None) -> list[str]:
        """Write ``predict``'s result (when ``out`` is given or the task writes a file);
        returns the lines to print."""
        raise NotImplementedError

    def write_examples(
        self, run_dir: Path, model: UnifiedNetwork, data: DataBundle, device: torch.device
    ) -> None:
        """Pictures of a few test predictions in the run folder (a task may have none)."""


def build_task(data: DataBundle, config: Config) -> Task:
    """The task object of a run: the registered task ``config.task`` names, else the
    data's own."""
    return TASKS.get(config.task or data.task).from_config(data, config)


__all__ = ["Task", "build_task", "register_task"]
