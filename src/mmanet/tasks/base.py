"""What a task owns: its loss, its metrics and table columns, what MAR's histograms count,
and its prediction output. The engine calls these and never branches on the task's name.

A task is registered by name (``@register_task("classification")``); a dataset names
its task in its :class:`~mmanet.data.DataBundle`, and :func:`build_task` makes the
run's task object from the bundle and the config.

A task declares its metrics with their direction (``metrics = {"error": "min",
"accuracy": "max"}``): model selection, the comparison tables, the verdicts and tuning
read which way is better from it. Registering a task that does not is an error.

The model is run over a split by the engine (:mod:`mmanet.engine.evaluate`), which hands
:meth:`Task.evaluate` its :class:`Passes`: tasks never import the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F

from mmanet.errors import ConfigError
from mmanet.outputs import AuxiliaryLogits
from mmanet.registry import TASKS

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from mmanet.config import Config
    from mmanet.data import DataBundle
    from mmanet.modality import Mask
    from mmanet.models import UnifiedNetwork

AS_AVAILABLE = "as available"  # the report row in which each sample uses all it has
Direction = Literal["min", "max"]  # a metric's better side: lower ("min") or higher
DIRECTIONS: tuple[Direction, ...] = ("min", "max")


class Passes(Protocol):
    """What :meth:`Task.evaluate` asks of the engine: the model over a loader, one encoder
    pass per batch for every mask (``None``: each sample's own modalities); see
    :mod:`mmanet.engine.evaluate`."""

    def counts(
        self, loader: DataLoader, masks: Sequence[Mask | None], task: Task
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(c, k, k) confusion matrices of what ``task`` counts, and (c,) samples each."""
        ...

    def scores(
        self, loader: DataLoader, masks: Sequence[Mask | None]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c, n, k) class probabilities, (n,) labels, (c, n) which samples have each mask."""
        ...


@dataclass(frozen=True)
class Evaluated:
    """What :meth:`Task.evaluate` may return instead of a plain list: the per-mask metrics
    and report-level sections computed in the same pass (e.g. ``"calibration"``), which
    :func:`mmanet.engine.evaluate.evaluate_split` adds to the report under their keys."""

    per_mask: list[dict[str, Any]]
    sections: dict[str, Any] = field(default_factory=dict)


class Task:
    """The base of every task: a cross-entropy task over ``class_names``.

    Args:
        class_names: the k classes.
        ignore_index: a label value the loss and the metrics skip (None: none).
        class_weights: (k,) weights of the task loss (None: unweighted).
    """

    name: ClassVar[str] = "task"
    # the columns of a result table, in order, each with its better side ("min": lower
    # is better, "max": higher), e.g. {"error": "min", "accuracy": "max"}
    metrics: ClassVar[Mapping[str, Direction]] = {}
    default_metric: ClassVar[str] = ""  # what a comparison ranks by (one of the metrics)
    # further per-combination numbers a comparison tabulates when its runs report them
    # (calibration, operating points), each with its better side
    secondary_metrics: ClassVar[Mapping[str, Direction]] = {}
    # what distillation compares with method.distill_features=auto: "head" (the head's
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

    @classmethod
    def lower_is_better(cls, metric: str, key: str = "metric") -> bool:
        """Whether a lower ``metric`` is better, as the task declares; a metric it does not
        declare is a one-line :class:`ConfigError` naming ``key`` and the task's metrics."""
        direction = cls.metrics.get(metric)
        if direction is None:
            raise ConfigError(
                f"{key}={metric!r} is not a metric of the {cls.name} task: {', '.join(cls.metrics)}"
            )
        return direction == "min"

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
        passes: Passes,
        loader: DataLoader,
        masks: Sequence[Mask | None],
        calibration: DataLoader | None = None,
    ) -> list[dict[str, Any]] | Evaluated:
        """The metrics of each mask (``None``: each sample's own modalities) over the samples
        that have its modalities, with their number ``n``; one encoder pass per batch
        (``passes``: the engine's loops over the model; ``calibration``: the val split).
        A task may return :class:`Evaluated` to add report-level sections."""
        confusions, samples = passes.counts(loader, masks, self)
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


def check_metrics(task: type[Task], name: str) -> None:
    """A one-line ``TypeError`` (as the registries' other interface checks) unless ``task``
    declares its metrics, each with its direction, and its default metric is one of them."""
    declared = getattr(task, "metrics", None)
    where = f"{getattr(task, '__qualname__', task)}.metrics"
    if not isinstance(declared, Mapping) or not declared:
        raise TypeError(
            f"task {name!r} must declare its metrics with their directions, e.g. metrics = "
            "{'error': 'min', 'accuracy': 'max'} ('min': lower is better, 'max': higher); "
            f"{where} is {declared!r}"
        )
    wrong = {m: d for m, d in declared.items() if d not in DIRECTIONS}
    if wrong:
        raise TypeError(
            f"task {name!r}: a metric's direction is 'min' (lower is better) or 'max' "
            f"(higher); {where} has {wrong}"
        )
    if task.default_metric not in declared:
        raise TypeError(
            f"task {name!r}: default_metric={task.default_metric!r} is not one of its "
            f"metrics: {', '.join(declared)}"
        )


def register_task(
    name: str, task: type[Task] | None = None
) -> Callable[[type[Task]], type[Task]] | type[Task]:
    """``@register_task("name")`` on a :class:`Task` subclass (or ``register_task("name",
    cls)``): refused, in one line, unless it declares its metrics and their direction."""

    def add(cls: type[Task]) -> type[Task]:
        check_metrics(cls, name)
        return TASKS.register(name, cls)

    return add if task is None else add(task)


def build_task(data: DataBundle, config: Config) -> Task:
    """The task object of a run: the registered task ``config.task`` names, else the
    data's own."""
    return TASKS.get(config.task or data.task).from_config(data, config)


__all__ = [
    "AS_AVAILABLE",
    "DIRECTIONS",
    "Direction",
    "Evaluated",
    "Passes",
    "Task",
    "build_task",
    "check_metrics",
    "register_task",
]
