"""Two-class face anti-spoofing (ISO/IEC 30107-3): APCER, BPCER and ACER per combination at
its validation-EER threshold (or a fixed one), the operating points set on validation
(the EER, APCER = 5 % and 1 %) with their test BPCER / APCER, HTER, the worst attack type,
a one-class flag, DET points, and the calibration of the same scores
(docs/evaluation.md#anti-spoofing-operating-points)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mmanet.tasks.base import AS_AVAILABLE, Direction, Passes
from mmanet.tasks.classification import ClassificationTask

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from mmanet.modality import Mask
    from mmanet.tasks.base import Evaluated


class AntiSpoofingTask(ClassificationTask):
    """Two-class face anti-spoofing (ISO/IEC 30107-3): a sample is accepted as bona fide
    when its bona fide probability reaches the threshold (``val_eer``, the default: per
    combination, where APCER = BPCER on the validation split; or a number); ACER is what a
    comparison ranks by. Each combination also gets its operating points set on validation
    (the EER, APCER = 5 % and 1 %) and their test BPCER / APCER, the HTER at the val-EER
    threshold, a one-class flag, and with typed attacks the worst type's APCER; the report
    gets the global (pooled) thresholds and the DET points (docs/evaluation.md)."""

    metrics: ClassVar[dict[str, Direction]] = {"acer": "min", "apcer": "min", "bpcer": "min"}
    default_metric = "acer"
    secondary_metrics: ClassVar[dict[str, Direction]] = {
        "hter": "min",
        "bpcer_at_apcer_5": "min",
        "apcer_at_apcer_5": "min",  # what the validation threshold gives on test
        "bpcer_at_apcer_1": "min",
        "apcer_at_apcer_1": "min",
        "worst_attack_apcer": "min",
        **ClassificationTask.secondary_metrics,
    }

    def __init__(
        self,
        class_names: Sequence[str],
        bona_fide_class: int,
        threshold: float | str = "val_eer",
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
    ) -> Evaluated:
        """One pass over the validation scores (``calibration``; none when it is ``loader``
        itself, as :func:`~mmanet.engine.evaluate.evaluate_split` gives the val split) and
        one over ``loader``'s. A combination whose validation samples lack attacks (or bona
        fide samples) gets NaN for the thresholds that need them, and for the metrics at
        those thresholds, with a ``notes`` entry. The report's names of the masks are
        ``passes.names`` (the engine's ModelPasses), else made up from the masks."""
        from mmanet.spoofing_report import (
            DET_SECTION,
            SECTION,
            TARGETS,
            det_points,
            threshold_header,
        )

        if self.threshold == "val_eer" and calibration is None:
            raise ValueError("threshold=val_eer needs a calibration split")
        names = list(getattr(passes, "names", ()) or ())
        if len(names) != len(masks):
            names = [AS_AVAILABLE if m is None else "+".join(map(str, m)) for m in masks]
        scores, labels, eligible = passes.scores(loader, masks)
        if calibration is None:
            val = None
        elif loader is calibration:  # the validation split evaluated: its one pass
            val = scores, labels, eligible
        else:
            val = passes.scores(calibration, masks)
        types = _loader_attack_types(loader, labels, self.bona_fide_class)
        per_mask: list[dict[str, Any]] = []
        det: dict[str, Any] = {}
        for i, name in enumerate(names):
            keep = eligible[i]
            s, y = scores[i, keep, self.bona_fide_class], labels[keep]
            rows = keep.nonzero()[:, 0].tolist()
            kept_types = None if types is None else [types[j] for j in rows]
            if val is None:
                thresholds = dict.fromkeys(["val_eer", *TARGETS], math.nan)
                notes = ["no validation split: no thresholds set on it"]
            else:
                v_scores, v_labels, v_eligible = val
                thresholds, notes = self._validation_thresholds(
                    v_scores[i, v_eligible[i], self.bona_fide_class], v_labels[v_eligible[i]]
                )
            metrics, marked = self._combination(s, y, thresholds, kept_types, notes)
            per_mask.append(metrics)
            det[name] = {"points": det_points(s, y, self.bona_fide_class), "marked": marked}
        sections = {
            SECTION: {
                "threshold": self.threshold,
                "header": threshold_header(self.threshold),
                "thresholds_from": "val",
                "target_apcer": dict(TARGETS),
                "attack_types": _distinct(types),
                "global": self._global(names, masks, val, scores, labels, eligible),
            },
            DET_SECTION: det,
        }
        # the calibration of the same scores (ECE, reliability bins, confidence rises)
        from mmanet.calibration import with_calibration

        return with_calibration(per_mask, scores, labels, eligible, masks, sections=sections)

    def _validation_thresholds(
        self, scores: torch.Tensor, labels: torch.Tensor
    ) -> tuple[dict[str, float], list[str]]:
        """``{"val_eer": t, "apcer_5": t, "apcer_1": t}`` of one combination's validation
        scores (:mod:`mmanet.operating_points`); NaN where the split lacks a class."""
        from mmanet.spoofing_report import validation_thresholds

        bona_fide = labels == self.bona_fide_class
        attacks, genuine = int((~bona_fide).sum()), int(bona_fide.sum())
        notes = []
        thresholds = validation_thresholds(scores, labels, self.bona_fide_class)
        if not (attacks and genuine):
            missing = "attack" if not attacks else "bona fide"
            notes.append(f"the validation split has no {missing} sample here: no EER threshold")
        if not attacks:
            notes.append("no validation attacks here: no threshold at a target APCER")
        return thresholds, notes

    def _point(
        self, scores: torch.Tensor, labels: torch.Tensor, threshold: float, types: list | None
    ) -> Any:
        """:func:`~mmanet.operating_points.operating_point`, None at a NaN threshold."""
        from mmanet.operating_points import operating_point

        if math.isnan(threshold):
            return None
        return operating_point(scores, labels, self.bona_fide_class, threshold, types)

    def _combination(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        thresholds: dict[str, float],
        types: list | None,
        notes: list[str],
    ) -> tuple[dict[str, Any], dict[str, list[float]]]:
        """One combination's test metrics at its thresholds, and the (APCER, BPCER) of the
        points the DET figure marks."""
        from mmanet.metrics import binary_confusion, classification_metrics
        from mmanet.spoofing_report import TARGETS

        nan = math.nan
        bona_fide = self.bona_fide_class
        fixed = self.threshold != "val_eer"
        printed = float(self.threshold) if fixed else thresholds["val_eer"]
        if math.isnan(printed):
            base = dict.fromkeys(["accuracy", "error", "apcer", "bpcer", "acer"], nan)
        else:
            confusion = binary_confusion(scores, labels, bona_fide, printed)
            base = classification_metrics(confusion, bona_fide)
        point = self._point(scores, labels, printed, types)
        at_eer = point if not fixed else self._point(scores, labels, thresholds["val_eer"], None)
        metrics: dict[str, Any] = {
            **base,
            "threshold": printed,
            "n": len(labels),
            "hter": at_eer.hter if at_eer is not None else nan,
            "threshold_eer": thresholds["val_eer"],
        }
        marked = {"val_eer": _rates(at_eer)}
        for key in TARGETS:
            metrics[f"threshold_{key}"] = thresholds[key]
        for key in TARGETS:
            at = self._point(scores, labels, thresholds[key], None)
            metrics[f"bpcer_at_{key}"] = at.bpcer if at is not None else nan
            metrics[f"apcer_at_{key}"] = at.apcer if at is not None else nan
            marked[key] = _rates(at)
        metrics["one_class"] = point.one_class if point is not None else None
        if types is not None:
            worst = point.worst_attack if point is not None else None
            metrics["worst_attack"] = worst
            metrics["worst_attack_apcer"] = nan if worst is None else point.worst_attack_apcer
            metrics["attack_apcer"] = {} if point is None else dict(point.attack_apcer)
        if notes:
            metrics["notes"] = notes
        return metrics, marked

    def _global(
        self,
        names: Sequence[str],
        masks: Sequence[Mask | None],
        val: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
        scores: torch.Tensor,
        labels: torch.Tensor,
        eligible: torch.Tensor,
    ) -> dict[str, Any]:
        """One threshold per operating point for every combination: set on the validation
        scores of every combination (not "as available") pooled; each combination's test
        APCER, BPCER and HTER at the pooled EER threshold and its BPCER / APCER at the
        pooled target-APCER thresholds."""
        from mmanet.spoofing_report import TARGETS, validation_thresholds

        bona_fide = self.bona_fide_class
        thresholds = {"val_eer": math.nan, **dict.fromkeys(TARGETS, math.nan)}
        if val is not None:
            v_scores, v_labels, v_eligible = val
            rows = [i for i, mask in enumerate(masks) if mask is not None]
            pooled = torch.cat([v_scores[i, v_eligible[i], bona_fide] for i in rows])
            pooled_labels = torch.cat([v_labels[v_eligible[i]] for i in rows])
            thresholds = validation_thresholds(pooled, pooled_labels, bona_fide)
        combinations = {}
        for i, name in enumerate(names):
            keep = eligible[i]
            s, y = scores[i, keep, bona_fide], labels[keep]
            at_eer = self._point(s, y, thresholds["val_eer"], None)
            entry = {
                "apcer": at_eer.apcer if at_eer is not None else math.nan,
                "bpcer": at_eer.bpcer if at_eer is not None else math.nan,
                "hter": at_eer.hter if at_eer is not None else math.nan,
            }
            for key in TARGETS:
                at = self._point(s, y, thresholds[key], None)
                entry[f"bpcer_at_{key}"] = at.bpcer if at is not None else math.nan
                entry[f"apcer_at_{key}"] = at.apcer if at is not None else math.nan
            combinations[name] = entry
        return {
            "threshold_eer": thresholds["val_eer"],
            **{f"threshold_{key}": thresholds[key] for key in TARGETS},
            "combinations": combinations,
        }


def _rates(point: Any) -> list[float]:
    """[APCER, BPCER] of an operating point (NaN for none)."""
    return [math.nan, math.nan] if point is None else [point.apcer, point.bpcer]


def _distinct(types: Sequence[str | None] | None) -> list[str] | None:
    """The attack types named in ``types``, in order of first appearance (None: none)."""
    if types is None:
        return None
    return list(dict.fromkeys(t for t in types if t is not None))


def dataset_attack_types(dataset: Any) -> list[str | None] | None:
    """Each sample's attack type (None for bona fide or unknown) of a dataset, through any
    :class:`~torch.utils.data.Subset` of it (``indices``); None when it names no types
    (``attack_types``, e.g. :class:`mmanet.data.face.FaceDataset` of CeFA)."""
    types = getattr(dataset, "attack_types", None)
    if types is not None:
        return list(types)
    inner = getattr(dataset, "dataset", None)
    if inner is None:
        return None
    below = dataset_attack_types(inner)
    indices = getattr(dataset, "indices", None)
    if below is None or indices is None:
        return below
    return [below[int(i)] for i in indices]


def _loader_attack_types(
    loader: DataLoader, labels: torch.Tensor, bona_fide_class: int
) -> list[str | None] | None:
    """The attack types of ``loader``'s samples in the order of the scores: under data
    parallelism every process's shard, gathered in rank order (as the scores are); the
    order is checked against ``labels`` (a typed sample is an attack)."""
    types = dataset_attack_types(loader.dataset)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, types)
        if any(part is None for part in gathered):
            return None
        types = [t for part in gathered for t in part]
    if types is None:
        return None
    attacks = (labels != bona_fide_class).tolist()
    if len(types) != len(attacks) or any(
        t is not None and not attack for t, attack in zip(types, attacks, strict=True)
    ):
        raise ValueError(
            f"the attack types of the evaluated split ({len(types)}) do not line up with its "
            f"{len(attacks)} scored samples"
        )
    return types


__all__ = ["AntiSpoofingTask", "dataset_attack_types"]
