"""Classification: one label per sample; error and accuracy per combination, and for
two-class anti-spoofing (``data.bona_fide_class``) APCER, BPCER and ACER (ISO/IEC 30107-3)
at a decision threshold."""

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


@register_task("classification")
class ClassificationTask(Task):
    """Cross-entropy over samples; error (%) is what a comparison ranks by."""

    name = "classification"
    metrics: ClassVar[dict[str, Direction]] = {"error": "min", "accuracy": "max"}
    default_metric = "error"
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
        return AntiSpoofingTask(data.class_names, bona_fide, config.threshold)

    def auxiliary_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A map head's (b, k, h, w) logits are global-average-pooled to (b, k)."""
        return logits.mean(dim=(2, 3)) if logits.ndim == 4 else logits

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


class AntiSpoofingTask(ClassificationTask):
    """Two-class face anti-spoofing: a sample is accepted as bona fide when its bona fide
    probability reaches the threshold (a number, or ``val_eer``: per combination, where
    APCER = BPCER on the calibration split); ACER is what a comparison ranks by."""

    metrics: ClassVar[dict[str, Direction]] = {"acer": "min", "apcer": "min", "bpcer": "min"}
    default_metric = "acer"

    def __init__(
        self, class_names: Sequence[str], bona_fide_class: int, threshold: float | str = 0.5
    ) -> None:
        super().__init__(class_names)
        self.bona_fide_class = bona_fide_class
        self.threshold = threshold

    def evaluate(
        self,
        passes: Passes,
        loader: DataLoader,
        masks: Sequence[Mask | None],
        calibration: DataLoader | None = None,
    ) -> list[dict[str, Any]]:
        from mmanet.metrics import binary_confusion, classification_metrics, equal_error_threshold

        bona_fide = self.bona_fide_class
        if self.threshold == "val_eer":
            if calibration is None:
                raise ValueError("threshold=val_eer needs a calibration split")
            calibrate, truth, has = passes.scores(calibration, masks)
            thresholds = [
                equal_error_threshold(calibrate[i, has[i], bona_fide], truth[has[i]], bona_fide)
                for i in range(len(masks))
            ]
        else:
            thresholds = [float(self.threshold)] * len(masks)
        scores, labels, eligible = passes.scores(loader, masks)
        results = []
        for i, threshold in enumerate(thresholds):
            keep = eligible[i]
            confusion = binary_confusion(
                scores[i, keep, bona_fide], labels[keep], bona_fide, threshold
            )
            results.append(
                {
                    **classification_metrics(confusion, bona_fide),
                    "threshold": threshold,
                    "n": int(keep.sum()),
                }
            )
        return results


__all__ = ["AntiSpoofingTask", "ClassificationTask"]
