"""The decision thresholds a deployed anti-spoofing model decides with, one per combination
of modalities (docs/evaluation.md#anti-spoofing-operating-points).

A prediction of an anti-spoofing checkpoint (trained with ``data.bona_fide_class``) holds
its decision, ``bona fide`` when the bona fide probability reaches the threshold of
the combination it received (the modalities given), and that threshold. The thresholds,
per combination, at the validation EER and at validation APCER = 5 % and 1 %, are those
of :func:`combination_thresholds`: computed once from the run's validation split and kept
in the checkpoint folder (``thresholds.json``, recomputed when the weights or the data
config change); the ONNX sidecar carries the same numbers (:mod:`mmanet.export`). Without
the validation split (e.g. on a deployment machine with no copy, before any export or
prediction next to the data) that is a :class:`ThresholdsUnavailable` error, unless
``--no-thresholds`` asks for the probabilities only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mmanet.engine.network import checkpoint_config
from mmanet.errors import DataError
from mmanet.models import UnifiedNetwork


class ThresholdsUnavailable(DataError):
    """An anti-spoofing checkpoint's per-combination thresholds cannot be computed (its
    run's validation split cannot be read); the message says why and names the way out."""


THRESHOLDS_FILE = "thresholds.json"  # in the checkpoint folder
OPERATING_POINTS = ("val_eer", "apcer_5", "apcer_1")  # the per-combination thresholds


def bona_fide_class(meta: Mapping[str, Any]) -> int | None:
    """The bona fide class of an anti-spoofing checkpoint (two classes, trained with
    ``data.bona_fide_class``); None for any other."""
    if len(meta.get("class_names", ())) != 2:
        return None
    return checkpoint_config(Path(meta["checkpoint"]), meta).data.bona_fide_class


def combination_thresholds(
    model: UnifiedNetwork, meta: Mapping[str, Any], device: torch.device | str = "cpu"
) -> dict[str, Any] | None:
    """The decision thresholds of an anti-spoofing checkpoint (None for any other):
    ``{"default": "val_eer" | "fixed", "fixed": number | None, "bona_fide_class": c,
    "rule": ..., "split": "val", "combinations": {name: {"val_eer": t, "apcer_5": t,
    "apcer_1": t, "n": val samples}}}``, a threshold null where the validation samples of
    that combination lack a class. Read from the checkpoint's ``thresholds.json`` when it
    was made from the same weights and data config, else computed from the run's
    validation split and written there (a read-only folder: not kept)."""
    from mmanet.io import atomic_write_json

    bona_fide = bona_fide_class(meta)
    if bona_fide is None:
        return None
    folder = Path(meta["checkpoint"])
    config = checkpoint_config(folder, meta)
    key = _thresholds_key(folder, config)
    cached = folder / THRESHOLDS_FILE
    try:
        record = json.loads(cached.read_text())
        if isinstance(record, dict) and record.get("key") == key:
            return record["thresholds"]
    except (OSError, ValueError, KeyError):
        pass
    thresholds = _validation_thresholds(model, config, bona_fide, folder, device)
    with contextlib.suppress(OSError):  # a read-only checkpoint folder: computed next time
        atomic_write_json(cached, {"key": key, "thresholds": thresholds})
    return thresholds


def decision_line(result: Mapping[str, Any]) -> str:
    """The printed decision of an anti-spoofing prediction."""
    if result.get("decision") is None and "threshold" not in result:
        return f"decision: none ({result.get('decision_note', 'no thresholds')})"
    threshold = result["threshold"]
    at = "none set (validation lacks a class)" if threshold is None else f"{threshold:.6g}"
    return (
        f"decision: {result['decision'] or 'none'} (combination {result['combination']}, "
        f"bona fide score {result['bona_fide_score']:.6f}, threshold {at} "
        f"[{result['operating_point']}])"
    )


def _thresholds_key(folder: Path, config: Any) -> str:
    """A digest of the weights, the checkpoint's record and the data config."""
    from mmanet.config import to_dict

    digest = hashlib.sha256()
    for name in ("model.safetensors", "meta.json"):
        file = folder / name
        if file.is_file():
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    digest.update(json.dumps(to_dict(config.data), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _validation_thresholds(
    model: UnifiedNetwork, config: Any, bona_fide: int, folder: Path, device: torch.device | str
) -> dict[str, Any]:
    """Every combination's thresholds from the run's validation split (as
    :class:`mmanet.tasks.anti_spoofing.AntiSpoofingTask` sets them)."""
    from mmanet.data import build_data
    from mmanet.engine.evaluate import combination_scores
    from mmanet.engine.loader import make_loader
    from mmanet.errors import ConfigError
    from mmanet.spoofing_report import validation_thresholds

    try:
        data = build_data(config.data)
    except (DataError, ConfigError, OSError) as err:
        raise ThresholdsUnavailable(
            f"{folder}: the per-combination decision thresholds are set on the run's "
            f"validation split, which cannot be read here ({err}); run this where data.root "
            "is readable (the result is kept in the checkpoint folder), or pass "
            "--no-thresholds for the probabilities only"
        ) from None
    masks = list(model.modalities.combinations)
    loader = make_loader(data.val, config.data.eval_batch_size, 0)
    scores, labels, eligible = combination_scores(model.to(device), loader, masks, device)
    combinations = {}
    for i, mask in enumerate(masks):
        s, y = scores[i, eligible[i], bona_fide], labels[eligible[i]]
        # null (JSON) where the validation samples lack a class the point needs
        entry: dict[str, Any] = {
            point: None if math.isnan(threshold) else threshold
            for point, threshold in validation_thresholds(s, y, bona_fide).items()
        }
        entry["n"] = len(y)
        combinations[model.modalities.mask_name(mask)] = entry
    fixed = config.threshold != "val_eer"
    return {
        "default": "fixed" if fixed else "val_eer",
        "fixed": float(config.threshold) if fixed else None,
        "bona_fide_class": bona_fide,
        "rule": (
            "bona fide when softmax(logits)[bona_fide_class] >= the threshold of the "
            "combination received (the modalities present), else attack"
        ),
        "split": "val",
        "combinations": combinations,
    }


def decide(
    probabilities: torch.Tensor,
    combination: str,
    thresholds: Mapping[str, Any],
    point: str | None = None,
) -> dict[str, Any]:
    """One sample's decision from its class ``probabilities`` and the ``thresholds`` of
    :func:`combination_thresholds`: at ``point`` (one of :data:`OPERATING_POINTS`; None:
    the default) of ``combination``. A threshold that could not be set gives decision None."""
    bona_fide = thresholds["bona_fide_class"]
    point = point or thresholds["default"]
    if point == "fixed":
        threshold = thresholds["fixed"]
    elif point in OPERATING_POINTS:
        threshold = thresholds["combinations"][combination][point]
    else:
        raise DataError(f"unknown operating point {point!r}; use {', '.join(OPERATING_POINTS)}")
    score = float(probabilities[bona_fide])
    decision = None
    if threshold is not None:
        decision = "bona fide" if score >= threshold else "attack"
    return {
        "combination": combination,
        "operating_point": point,
        "threshold": threshold,
        "bona_fide_score": score,
        "decision": decision,
    }


__all__ = [
    "OPERATING_POINTS",
    "THRESHOLDS_FILE",
    "ThresholdsUnavailable",
    "bona_fide_class",
    "combination_thresholds",
    "decide",
    "decision_line",
]
