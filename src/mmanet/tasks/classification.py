"""Classification: one label per sample; error and accuracy per combination, with the
calibration of each (mmanet.calibration). Two-class anti-spoofing
(``data.bona_fide_class``) is :mod:`mmanet.tasks.anti_spoofing`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mmanet.errors import ConfigError
from mmanet.tasks.base import Direction, Passes, Task, register_task

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from mmanet.config import Config
    from mmanet.data import DataBundle
    from mmanet.modality import Mask
    from mmanet.tasks.base import Evaluated


@register_task("classification")
class ClassificationTask(Task):
    """Cross-entropy over samples; error (%) is what a comparison ranks by."""

    name = "classification"
    metrics: ClassVar[dict[str, Direction]] = {"error": "min", "accuracy": "max"}
    default_metric = "error"
    secondary_metrics: ClassVar[dict[str, Direction]] = {"ece": "min", "confidence_rises": "min"}
    demo_config = "mfeat/demo.yaml"  # UCI Multiple Features, every ablation

    @classmethod
    def from_config(cls, data: DataBundle, config: Config) -> Task:
        if config.data.class_weighting != "none":
            raise ConfigError(
                f"data.class_weighting={config.data.class_weighting} is for segmentation data"
            )
        bona_fide = config.data.bona_fide_class
        if bona_fide is None:
            return cls(data.class_names)
        if data.num_classes != 2 or bona_fide not in (0, 1):
            raise ConfigError(
                f"data.bona_fide_class={bona_fide} needs a two-class task with class 0 or 1 "
                f"(this data has {data.num_classes} classes)"
            )
        from mmanet.tasks.anti_spoofing import AntiSpoofingTask

        return AntiSpoofingTask(data.class_names, bona_fide, config.threshold)

    def auxiliary_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A map head's (b, k, h, w) logits are global-average-pooled to (b, k)."""
        return logits.mean(dim=(2, 3)) if logits.ndim == 4 else logits

    def evaluate(
        self,
        passes: Passes,
        loader: DataLoader,
        masks: Sequence[Mask | None],
        calibration: DataLoader | None = None,
    ) -> list[dict[str, Any]] | Evaluated:
        """Error and accuracy of each mask (as :meth:`Task.evaluate` counts them: the
        confusion of the argmax) and its calibration (ECE, reliability bins, the share of
        samples whose confidence rises when a modality is removed:
        :func:`mmanet.calibration.calibration_per_mask`), from one pass's class
        probabilities. Memory: the (c, n, k) float32 probabilities are held whole (63
        combinations x 5,000 samples x 10 classes: 12.6 MB)."""
        from mmanet.calibration import with_calibration

        scores, labels, eligible = passes.scores(loader, masks)
        predicted = scores.argmax(dim=2)  # ties: the first class, as the counts' argmax
        per_mask = []
        for i in range(len(masks)):
            keep = eligible[i]
            confusion = self.confusion(predicted[i, keep], labels[keep])
            per_mask.append({**self.metrics_from_confusion(confusion), "n": int(keep.sum())})
        return with_calibration(per_mask, scores, labels, eligible, masks)

    def metrics_from_confusion(self, confusion: torch.Tensor) -> dict[str, Any]:
        from mmanet.metrics import classification_metrics

        return classification_metrics(confusion, None)

    def prediction(self, logits: torch.Tensor) -> dict[str, Any]:
        probabilities = logits.float().softmax(dim=0)
        return {"probabilities": dict(zip(self.class_names, probabilities.tolist(), strict=True))}

    def write_prediction(self, result: Mapping[str, Any], out: Path | None) -> list[str]:
        ranked = sorted(result["probabilities"].items(), key=lambda item: -item[1])
        lines = [f"  {name:<20} {probability:.4f}" for name, probability in ranked]
        if out is not None:
            from mmanet.io import atomic_write_json

            atomic_write_json(out, dict(result))
            lines.append(f"written: {out}")
        return lines


__all__ = ["ClassificationTask"]
