"""Calibration: expected calibration error, reliability-diagram data and the share of samples
whose confidence rises when a modality is removed.

ECE: Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks", ICML 2017,
§2: confidences are grouped into ``M`` equal-width bins ``B_b = ((b-1)/M, b/M]`` (a confidence
on a bin edge goes to the lower bin; a confidence of exactly 0 to the first bin), and
``ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)|``, reported in % (as Guo et al.'s tables).
Edges are b/M in float64; a float32 confidence is compared as its float64 value (so a
float32 1/3, slightly above the double 1/3, lands in the upper bin).

Monotonicity: Ma et al., "Calibrating Multimodal Learning", ICML 2023 (arXiv 2306.01265):
the confidence should not rise when a modality is removed. The confidence used here is that
of each combination's *predicted* class (its maximum softmax probability), the quantity ECE
calibrates: a model that, with a modality removed, switches to a more confident wrong class
is exactly the over-confidence the principle forbids, yet the true class's probability would
fall there and hide it. Pass (n, k) probabilities and the maximum is taken; pass (n,)
confidences to use another estimator (e.g. the true class's probability).

Per combination, from one evaluation pass (:func:`calibration_per_mask`, which the
classification task's ``evaluate`` reports): each combination's ECE and reliability
bins over the samples that have its modalities, and the share of its (sample, this
combination -> a combination with one modality fewer) pairs whose confidence rose; a
single modality has no non-empty sub-combination (None), nor does "as available" (each
sample's own modalities, not one combination).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmanet.modality import Mask, Modalities

if TYPE_CHECKING:
    from mmanet.tasks.base import Evaluated

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]

DEFAULT_BINS = 15  # Guo et al.'s M
RISE_DEFINITION = (
    "share (%) of the (sample, combination -> the combination with one modality fewer) "
    "pairs, the sample having every modality of the combination, in which the maximum "
    "softmax probability rises by more than the tolerance (Ma et al., ICML 2023: the "
    "confidence should not rise when a modality is removed)"
)


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin ``(lower, upper]``; ``confidence`` and ``accuracy`` in [0, 1]."""

    lower: float
    upper: float
    count: int
    confidence: float  # mean confidence of the bin's samples (NaN when empty)
    accuracy: float  # share of the bin's samples that are correct (NaN when empty)


@dataclass(frozen=True)
class MonotonicityViolations:
    """Pairs (sample, combination -> combination less one modality) whose confidence rose."""

    share: float  # 100 * violations / pairs
    violations: int
    pairs: int
    per_pair: dict[str, float]  # "rgb+depth -> rgb": share (%) of samples violating


def confidence_and_correct(
    probabilities: ArrayLike, labels: ArrayLike
) -> tuple[torch.Tensor, torch.Tensor]:
    """(max_k p_k, argmax_k p_k == label) per sample from (n, k) class probabilities."""
    probs = _as_double(probabilities)
    if probs.dim() != 2:
        raise ValueError(f"probabilities must be (n, k), got shape {tuple(probs.shape)}")
    confidence, predicted = probs.max(dim=1)
    return confidence, predicted == _as_double(labels).reshape(-1).long()


def reliability_diagram(
    confidences: ArrayLike, correct: ArrayLike, num_bins: int = 15
) -> list[ReliabilityBin]:
    """Per equal-width bin ((b-1)/M, b/M]: count, mean confidence and accuracy."""
    conf, hits = _confidence_correct(confidences, correct)
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    # bin b (0-based) holds b/M < c <= (b+1)/M; edges as b/M, exact for c on an edge
    edges = torch.arange(1, num_bins, dtype=torch.float64) / num_bins
    index = torch.bucketize(conf, edges, right=False)
    bins = []
    for b in range(num_bins):
        members = index == b
        count = int(members.sum())
        bins.append(
            ReliabilityBin(
                lower=b / num_bins,
                upper=(b + 1) / num_bins,
                count=count,
                confidence=float(conf[members].mean()) if count else float("nan"),
                accuracy=float(hits[members].double().mean()) if count else float("nan"),
            )
        )
    return bins


def expected_calibration_error(
    confidences: ArrayLike, correct: ArrayLike, num_bins: int = 15
) -> float:
    """ECE = 100 * sum_b |B_b| / n * |acc(B_b) - conf(B_b)| over M equal-width bins (Guo 2017)."""
    return ece_of_bins(reliability_diagram(confidences, correct, num_bins))


def ece_of_bins(bins: Sequence[ReliabilityBin]) -> float:
    """ECE (%) of a reliability diagram's bins (NaN when they hold no sample)."""
    n = sum(b.count for b in bins)
    if n == 0:
        return float("nan")
    return 100.0 * sum(b.count / n * abs(b.accuracy - b.confidence) for b in bins if b.count)


def monotonicity_violations(
    confidences: Mapping[str, ArrayLike],
    modalities: Modalities | Sequence[str],
    tolerance: float = 0.0,
    combination: str | None = None,
) -> MonotonicityViolations:
    """Share of (sample, c -> c minus one modality) with conf(c minus one) - conf(c) > tolerance.

    ``confidences``: ``{combination name: (n,) confidences or (n, k) probabilities}``, the same
    n samples in every entry. ``combination``: only that combination and its sub-combinations
    with one modality fewer; by default every combination of two or more modalities.
    """
    mods = modalities if isinstance(modalities, Modalities) else Modalities(modalities)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    table = {}
    for key, value in confidences.items():
        try:
            mask = mods.mask_from_name(key)
        except KeyError:
            continue  # not a combination of these modalities (e.g. "average")
        values = _as_double(value)
        table[mask] = values.max(dim=1).values if values.dim() == 2 else values.reshape(-1)
    if combination is None:
        parents = [m for m in mods.combinations if sum(m) >= 2]
    else:
        parents = [mods.mask_from_name(combination)]
        if sum(parents[0]) < 2:
            raise ValueError(f"combination {combination!r} has no sub-combination to compare")
    violations = pairs = 0
    per_pair: dict[str, float] = {}
    for parent in parents:
        for i in (j for j, bit in enumerate(parent) if bit):
            child = tuple(0 if j == i else bit for j, bit in enumerate(parent))
            for mask in (parent, child):
                if mask not in table:
                    raise ValueError(
                        f"combination {mods.mask_name(mask)!r} is missing from the confidences"
                    )
            full, reduced = table[parent], table[child]
            if len(full) != len(reduced):
                raise ValueError(
                    f"{mods.mask_name(parent)!r} has {len(full)} samples, "
                    f"{mods.mask_name(child)!r} has {len(reduced)}"
                )
            rose = int(_rose(full, reduced, tolerance).sum())
            violations += rose
            pairs += len(full)
            name = f"{mods.mask_name(parent)} -> {mods.mask_name(child)}"
            per_pair[name] = 100.0 * rose / len(full) if len(full) else float("nan")
    return MonotonicityViolations(
        share=100.0 * violations / pairs if pairs else float("nan"),
        violations=violations,
        pairs=pairs,
        per_pair=per_pair,
    )


def calibration_per_mask(
    scores: torch.Tensor,
    labels: torch.Tensor,
    eligible: torch.Tensor,
    masks: Sequence[Mask | None],
    num_bins: int = DEFAULT_BINS,
    tolerance: float = 0.0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each mask's calibration and the report's ``"calibration"`` section, from one pass.

    ``scores``: (c, n, k) class probabilities of ``masks`` (``None``: each sample's own
    modalities), ``labels``: (n,), ``eligible``: (c, n) which samples have every modality
    of each mask -- :func:`mmanet.engine.evaluate.combination_scores`'s output.

    Per mask, over its eligible samples: ``ece`` (%, :func:`expected_calibration_error` of
    the maximum softmax probability and whether the argmax is right), ``confidence_rises``
    (%: of the pairs (sample, this mask -> each mask with one modality fewer, non-empty,
    the sample eligible for both), those whose maximum softmax probability rises by more
    than ``tolerance``; None where there is no pair: a single modality, which has no such
    sub-combination, and the mask ``None`` -- not NaN, so that the averages over the
    combinations and a comparison's aggregation over seeds leave it out as they leave
    out every non-number) and ``reliability`` (per bin ``((b-1)/M, b/M]``: ``count``, mean
    ``confidence`` and ``accuracy`` in [0, 1], None for an empty bin). The section:
    ``bins``, ``tolerance``, ``confidence_rises`` over all pairs (None: none), ``violations``,
    ``pairs`` and a one-line ``definition``.

    Memory: ``scores`` is held whole, (c, n, k) float32, e.g. 63 combinations x 5,000
    samples x 10 classes = 12.6 MB; the work here is per mask, in float64.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if scores.dim() != 3 or scores.shape[0] != len(masks):
        raise ValueError(f"scores must be (c={len(masks)}, n, k), got {tuple(scores.shape)}")
    if tuple(eligible.shape) != tuple(scores.shape[:2]) or len(labels) != scores.shape[1]:
        raise ValueError(
            f"scores {tuple(scores.shape)}, labels {tuple(labels.shape)} and eligible "
            f"{tuple(eligible.shape)} do not match"
        )
    # (c, n) each mask's predicted class's probability, and whether that class is right;
    # max's ties: the first class, as argmax's (and confidence_and_correct's)
    top, predicted = scores.detach().cpu().max(dim=2)
    confidence = top.double()
    correct = predicted == labels.cpu().long().reshape(1, -1)
    eligible = eligible.cpu().bool()
    index = {mask: i for i, mask in enumerate(masks) if mask is not None}
    per_mask: list[dict[str, Any]] = []
    violations = pairs = 0
    for i, mask in enumerate(masks):
        keep = eligible[i]
        whole = bool(keep.all())  # complete data: no copies
        conf = confidence[i] if whole else confidence[i, keep]
        bins = reliability_diagram(conf, correct[i] if whole else correct[i, keep], num_bins)
        rises = mine = 0
        for child in _one_fewer(mask):
            if child not in index:
                continue  # a mask list without that combination: no such pairs
            j = index[child]
            both = keep & eligible[j]
            rises += int((_rose(confidence[i], confidence[j], tolerance) & both).sum())
            mine += int(both.sum())
        violations, pairs = violations + rises, pairs + mine
        per_mask.append(
            {
                "ece": ece_of_bins(bins),
                "confidence_rises": 100.0 * rises / mine if mine else None,
                "reliability": {
                    "count": [b.count for b in bins],
                    "confidence": [b.confidence if b.count else None for b in bins],
                    "accuracy": [b.accuracy if b.count else None for b in bins],
                },
            }
        )
    section = {
        "bins": num_bins,
        "tolerance": tolerance,
        "confidence_rises": 100.0 * violations / pairs if pairs else None,
        "violations": violations,
        "pairs": pairs,
        "definition": RISE_DEFINITION,
    }
    return per_mask, section


def with_calibration(
    per_mask: Sequence[Mapping[str, Any]],
    scores: torch.Tensor,
    labels: torch.Tensor,
    eligible: torch.Tensor,
    masks: Sequence[Mask | None],
    num_bins: int = DEFAULT_BINS,
    *,
    sections: Mapping[str, Any] | None = None,
) -> Evaluated:
    """A task's per-mask metrics with :func:`calibration_per_mask`'s keys (``ece``,
    ``confidence_rises``, ``reliability``) added to each, and the task's other report
    ``sections`` with the calibration's under ``"calibration"``: what ``Task.evaluate``
    returns. ``scores``, ``labels``, ``eligible``: ``passes.scores(loader, masks)``."""
    from mmanet.tasks.base import Evaluated

    calibration, section = calibration_per_mask(scores, labels, eligible, masks, num_bins)
    if len(per_mask) != len(calibration):
        raise ValueError(f"{len(per_mask)} per-mask results for {len(calibration)} masks")
    if sections is not None and "calibration" in sections:
        raise ValueError("the task's sections already have a 'calibration' section")
    merged = [{**metrics, **extra} for metrics, extra in zip(per_mask, calibration, strict=True)]
    return Evaluated(merged, {**(sections or {}), "calibration": section})


def _one_fewer(mask: Mask | None) -> list[Mask]:
    """The non-empty masks with one present modality of ``mask`` removed (none for a
    single modality or for None)."""
    if mask is None or sum(mask) < 2:
        return []
    present = [i for i, bit in enumerate(mask) if bit]
    return [tuple(0 if j == i else bit for j, bit in enumerate(mask)) for i in present]


def _rose(full: torch.Tensor, reduced: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Which samples' confidence rose by more than ``tolerance`` from ``full`` to ``reduced``."""
    return reduced - full > tolerance


def _as_double(values: ArrayLike) -> torch.Tensor:
    tensor = values if torch.is_tensor(values) else torch.as_tensor(np.asarray(values))
    return tensor.detach().cpu().double()


def _confidence_correct(
    confidences: ArrayLike, correct: ArrayLike
) -> tuple[torch.Tensor, torch.Tensor]:
    conf = _as_double(confidences).reshape(-1)
    hits = _as_double(correct).reshape(-1)
    if len(conf) != len(hits):
        raise ValueError(f"{len(conf)} confidences but {len(hits)} correctness values")
    if not bool(((conf >= 0) & (conf <= 1)).all()):  # also rejects NaN
        raise ValueError("confidences must lie in [0, 1]")
    if not bool(((hits == 0) | (hits == 1)).all()):
        raise ValueError("correct must be 0/1 (or bool)")
    return conf, hits.bool()
