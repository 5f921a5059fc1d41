"""Semantic segmentation: a label per pixel, ``ignore_index`` (void) skipped; mIoU per
combination from one confusion matrix accumulated over the split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from mmanet.tasks.base import Direction, Task, register_task

if TYPE_CHECKING:
    from mmanet.config import Config
    from mmanet.data import DataBundle
    from mmanet.models import UnifiedNetwork


@register_task("segmentation")
class SegmentationTask(Task):
    """Pixel cross-entropy (optionally class-weighted, ``data.class_weighting``) with the
    decoder's side outputs (multi-scale supervision); mIoU is what a comparison ranks by."""

    name = "segmentation"
    metrics: ClassVar[dict[str, Direction]] = {"miou": "max", "pixel_accuracy": "max"}
    default_metric = "miou"
    distill_features = "fused"  # the fused bottleneck map (paper Eq. 2 on b × c × h × w)
    demo_config = "rendered/demo.yaml"  # the rendered RGB-D scenes: ESANet-MD vs MMANet
    demo_methods = "headline"
    demo_seeds = 3  # one seed cannot separate them (docs/demo.md)
    sample_scores = False  # a score map per pixel
    # a class absent from both labels and predictions in the mIoU: config.miou_absent
    miou_absent: Literal["skip", "zero"] = "skip"

    @classmethod
    def from_config(cls, data: DataBundle, config: Config) -> Task:
        weights = None
        if config.data.class_weighting == "median_frequency":
            from mmanet.data.rgbd import median_frequency_weights

            source = data.train_eval or data.train
            weights = median_frequency_weights(source, data.num_classes).float()
        task = cls(data.class_names, data.ignore_index, weights)
        task.miou_absent = config.miou_absent
        return task

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy per labelled pixel (``ignore_index`` skipped): the (class-weighted)
        mean over the labelled pixels, and 0 — not NaN — when a batch (or the Ω samples, or
        a coarse side output) has none."""
        ignore = -100 if self.ignore_index is None else self.ignore_index
        weights = self.class_weights
        total = F.cross_entropy(
            logits, labels, weight=weights, ignore_index=ignore, reduction="sum"
        )
        valid = labels != ignore
        if weights is None:
            count = valid.sum().to(total.dtype)
        else:
            # the weights of the labelled pixels, without boolean indexing (no device sync)
            count = (weights[torch.where(valid, labels, 0)] * valid).sum()
        return total / count.clamp_min(torch.finfo(total.dtype).tiny)

    def side_loss(self, side_logits: Sequence[torch.Tensor], labels: torch.Tensor) -> Any:
        """Multi-scale supervision: the pixel loss of each side output against
        nearest-downsampled labels, summed (0 without side outputs)."""
        total: Any = 0.0
        for logits in side_logits:
            small = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest")
            total = total + self.loss(logits, small[:, 0].long())
        return total

    def auxiliary_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A head's (b, k, h, w) logits bilinearly upsampled to the labels' (H, W)."""
        return F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)

    def sample_accuracy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(b,) share of each sample's labelled pixels that are right."""
        hits = (logits.argmax(1) == labels).float()
        valid = (labels != self.ignore_index).float()
        return (hits * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)

    def metrics_from_confusion(self, confusion: torch.Tensor) -> dict[str, Any]:
        from mmanet.metrics import iou_metrics

        return iou_metrics(confusion, self.miou_absent)

    def prediction(self, logits: torch.Tensor) -> dict[str, Any]:
        return {"label_map": logits.argmax(dim=0).cpu().numpy().astype(np.uint8)}

    def write_prediction(self, result: Mapping[str, Any], out: Path | None) -> list[str]:
        from PIL import Image

        from mmanet.io import atomic_write
        from mmanet.segmentation_images import colorize

        out = out or Path("prediction.png")
        colours = Image.fromarray(colorize(result["label_map"]))
        atomic_write(out, lambda tmp: colours.save(tmp, format="PNG"))
        return [f"segmentation ({self.num_classes} classes) written: {out}"]

    @torch.no_grad()
    def write_examples(
        self, run_dir: Path, model: UnifiedNetwork, data: DataBundle, device: torch.device
    ) -> None:
        """``predictions/sample-<i>.png``: RGB | depth | ground truth | each combination."""
        from mmanet.segmentation_images import save_prediction_panel

        if set(data.modalities) != {"rgb", "depth"}:
            return
        was_training = model.training
        model.eval()
        names = model.modalities
        masks = torch.tensor(names.combinations, dtype=torch.float32, device=device)
        for index in range(min(3, len(data.test))):
            inputs, labels = data.test[index]
            batch = {k: v[None].to(device) for k, v in inputs.items()}
            logits = model.predict_masks(model.encode(batch), masks)  # (c, 1, k, h, w)
            predictions = {
                names.mask_name(mask): logits[i, 0].argmax(0).cpu()
                for i, mask in enumerate(names.combinations)
            }
            save_prediction_panel(
                run_dir / "predictions" / f"sample-{index}.png",
                inputs["rgb"],
                inputs["depth"],
                labels,
                predictions,
            )
        model.train(was_training)


__all__ = ["SegmentationTask"]
