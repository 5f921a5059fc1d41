"""Validation during training and model selection: every ``validation.every`` epochs (and
after the last) the network is evaluated on the val split; the selection metric over the
combinations that fit the method (``validation.over``: the full combination for a teacher,
the average over all combinations for a unified network) decides the best epoch, whose
checkpoint is kept (``checkpoints/best-epoch-NNNN``); with ``validation.patience`` the
run stops after that many validations without a better one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mmanet.config import MethodConfig, ValidationConfig
from mmanet.errors import ConfigError
from mmanet.modality import Modalities
from mmanet.tasks import Task


class Validation:
    """When to validate, which epoch is the best so far, and whether to stop early."""

    def __init__(
        self,
        cfg: ValidationConfig,
        task: Task,
        epochs: int,
        method: MethodConfig | None = None,
        modalities: Sequence[str] = (),
    ) -> None:
        self.every, self.patience, self.epochs = cfg.every, cfg.patience, epochs
        self.metric = cfg.metric or task.default_metric
        # the task declares which way its metric is better (and refuses one it lacks)
        self.lower_is_better = task.lower_is_better(self.metric, "validation.metric")
        self.over = selection_group(cfg.over, method, Modalities(modalities))
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stale = 0  # validations since the best one

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, epoch: int) -> bool:
        """Whether to validate after (1-based) ``epoch``."""
        return self.enabled and (epoch % self.every == 0 or epoch == self.epochs)

    def record(self, epoch: int, report: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The log row of a validation report (the average and every combination of the
        metric) and whether it is the best so far."""
        value = self.value(report)
        row: dict[str, Any] = {f"val/{self.metric}": float(report["average"][self.metric])}
        if self.over != "average":
            row[self.key] = value
        row.update(
            {
                f"val/{self.metric}/{name}": m[self.metric]
                for name, m in report["combinations"].items()
            }
        )
        better = self.best is None or (
            not math.isnan(value)
            and (value < self.best if self.lower_is_better else value > self.best)
        )
        if better:
            self.best, self.best_epoch, self.stale = value, epoch, 0
        else:
            self.stale += 1
        return row, better

    @property
    def key(self) -> str:
        """The log's key of the value that selects: ``val/error``, ``val/error@full``, ..."""
        return f"val/{self.metric}" + ("" if self.over == "average" else f"@{self.over}")

    def value(self, report: dict[str, Any]) -> float:
        """The selection metric of a validation report over :attr:`over`."""
        combinations = report["combinations"]
        if self.over == "average":
            return float(report["average"][self.metric])
        if self.over == "singles":
            singles = [m[self.metric] for name, m in combinations.items() if "+" not in name]
            return float(sum(singles) / len(singles))
        return float(combinations[self.over][self.metric])

    @property
    def should_stop(self) -> bool:
        """Early stopping: ``patience`` validations in a row without a better one."""
        return self.patience > 0 and self.stale >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "stale": self.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.stale = int(state["stale"])


def selection_group(over: str, method: MethodConfig | None, names: Modalities) -> str:
    """``validation.over`` with ``auto`` resolved for ``method`` and ``full`` named: the
    combination a per-combination model trains on, the full combination for a method
    without modality dropout (the complete-modality teacher), else the average."""
    full = names.mask_name(names.combinations[-1]) if len(names) else "full"
    if over == "auto":
        if method is not None and method.combination:
            return method.combination
        return full if method is not None and not method.dropout else "average"
    if over == "full":
        return full
    known = [names.mask_name(mask) for mask in names.combinations] if len(names) else []
    if over not in ("average", "singles", *known):
        example = known[-1] if known else "rgb+depth"
        raise ConfigError(
            f"validation.over={over!r}: use auto, average, full, singles or a combination "
            f"such as {example!r}"
        )
    return over


__all__ = ["Validation", "selection_group"]
