"""Operating points of a presentation-attack detector, in ISO/IEC 30107-3 terms
(docs/method.md#metrics).

A *score* is the model's bona fide probability; ``labels`` are 0/1 with ``bona_fide_class``
the bona fide label (``data.bona_fide_class``), the other label an attack. A sample is
accepted as bona fide iff ``score >= threshold`` (as :func:`mmanet.metrics.binary_confusion`):
APCER(t) = share of attacks with score >= t, BPCER(t) = share of bona fide samples with
score < t, both in % (NaN when the split has no sample of that class).

Ties: a sample whose score equals the threshold is accepted, so tied scores are always
accepted or rejected together. The candidate thresholds of a score list are its distinct
scores plus the float just above its maximum (reject everything); these realise every
(APCER, BPCER) pair any real threshold can give on that list.

HTER = (APCER + BPCER) / 2 at a threshold fixed beforehand (e.g. the validation EER
threshold; Chingovska et al., "On the effectiveness of local binary patterns in face
anti-spoofing", BIOSIG 2012). The worst attack type's APCER is ISO/IEC 30107-3's
APCER_AP = max over presentation-attack-instrument species of the per-species APCER.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from mmanet.metrics import equal_error_threshold

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]
OneClass = Literal["bona_fide", "attack"] | None


@dataclass(frozen=True)
class OperatingPoint:
    """APCER, BPCER and HTER (in %) of one score list at one threshold."""

    threshold: float
    apcer: float
    bpcer: float
    hter: float
    # "bona_fide" / "attack" when every sample falls on one side of the threshold, else None
    one_class: OneClass
    attack_apcer: dict[Hashable, float] = field(default_factory=dict)  # per attack type
    worst_attack: Hashable | None = None  # the attack type with the highest APCER
    worst_attack_apcer: float | None = None


def apcer(scores: ArrayLike, labels: ArrayLike, bona_fide_class: int, threshold: float) -> float:
    """APCER(t) = 100 * #{attacks with score >= t} / #attacks."""
    s, bona_fide = _scores_labels(scores, labels, bona_fide_class)
    return _percent(int((s[~bona_fide] >= threshold).sum()), int((~bona_fide).sum()))


def bpcer(scores: ArrayLike, labels: ArrayLike, bona_fide_class: int, threshold: float) -> float:
    """BPCER(t) = 100 * #{bona fide with score < t} / #bona fide."""
    s, bona_fide = _scores_labels(scores, labels, bona_fide_class)
    return _percent(int((s[bona_fide] < threshold).sum()), int(bona_fide.sum()))


def hter(scores: ArrayLike, labels: ArrayLike, bona_fide_class: int, threshold: float) -> float:
    """HTER(t) = (APCER(t) + BPCER(t)) / 2, ``t`` fixed beforehand (e.g. on validation)."""
    return (
        apcer(scores, labels, bona_fide_class, threshold)
        + bpcer(scores, labels, bona_fide_class, threshold)
    ) / 2


def eer_threshold(scores: ArrayLike, labels: ArrayLike, bona_fide_class: int) -> float:
    """The candidate threshold minimising |APCER - BPCER| (ties: the lowest); set on validation."""
    s, bona_fide = _scores_labels(scores, labels, bona_fide_class)
    return equal_error_threshold(s, bona_fide.long(), 1)


def threshold_at_apcer(
    scores: ArrayLike, labels: ArrayLike, bona_fide_class: int, target_apcer: float
) -> float:
    """The smallest candidate threshold t with APCER(t) <= ``target_apcer`` (in %, e.g. 5.0).

    Attacks tied at a score are accepted together, so when accepting them would exceed the
    target the threshold moves past all of them: to the next higher distinct score, or to
    the float just above the highest score. The smallest such t gives the lowest BPCER.
    """
    if not 0.0 <= target_apcer <= 100.0:
        raise ValueError(f"target APCER {target_apcer} is outside [0, 100] (a percentage)")
    s, bona_fide = _scores_labels(scores, labels, bona_fide_class)
    attacks = int((~bona_fide).sum())
    if attacks == 0:
        raise ValueError("a threshold at a target APCER needs attack samples")
    candidates, accepted, _ = _counts(s, bona_fide)  # accepted: non-increasing
    # APCER <= target  <=>  100 * accepted <= target * attacks (exact for integer percentages)
    ok = (100 * accepted).double() <= target_apcer * attacks
    return float(candidates[int(ok.nonzero()[0])])  # the last candidate accepts no attack


def bpcer_at_apcer(
    val_scores: ArrayLike,
    val_labels: ArrayLike,
    test_scores: ArrayLike,
    test_labels: ArrayLike,
    bona_fide_class: int,
    target_apcer: float,
    test_attack_types: Sequence[Hashable] | None = None,
) -> OperatingPoint:
    """The test operating point (BPCER, APCER, ...) at :func:`threshold_at_apcer` on validation."""
    threshold = threshold_at_apcer(val_scores, val_labels, bona_fide_class, target_apcer)
    return operating_point(test_scores, test_labels, bona_fide_class, threshold, test_attack_types)


def attack_type_apcer(
    scores: ArrayLike,
    labels: ArrayLike,
    bona_fide_class: int,
    threshold: float,
    attack_types: Sequence[Hashable],
) -> dict[Hashable, float]:
    """``{type: APCER(t) over the attacks of that type}``, types in order of first appearance."""
    s, bona_fide = _scores_labels(scores, labels, bona_fide_class)
    types = list(attack_types.tolist() if hasattr(attack_types, "tolist") else attack_types)
    if len(types) != len(s):
        raise ValueError(f"{len(types)} attack types for {len(s)} scores")
    accepted: dict[Hashable, int] = {}
    totals: dict[Hashable, int] = {}
    for score, genuine, kind in zip(s.tolist(), bona_fide.tolist(), types, strict=True):
        if genuine:
            continue  # the type of a bona fide sample is ignored
        totals[kind] = totals.get(kind, 0) + 1
        accepted[kind] = accepted.get(kind, 0) + int(score >= threshold)
    return {kind: _percent(accepted[kind], totals[kind]) for kind in totals}


def worst_attack_apcer(
    scores: ArrayLike,
    labels: ArrayLike,
    bona_fide_class: int,
    threshold: float,
    attack_types: Sequence[Hashable],
) -> tuple[Hashable, float]:
    """``(type, APCER)`` of the attack type with the highest APCER (ties: the first seen)."""
    per_type = attack_type_apcer(scores, labels, bona_fide_class, threshold, attack_types)
    if not per_type:
        raise ValueError("the worst attack type needs attack samples")
    worst = max(per_type, key=lambda kind: per_type[kind])  # max keeps the first of ties
    return worst, per_type[worst]


def det_curve(
    scores: ArrayLike, labels: ArrayLike, bona_fide_class: int
) -> list[tuple[float, float, float]]:
    """``[(t, APCER(t), BPCER(t))]`` for every candidate t, ascending (APCER falls, BPCER rises)."""
    s, bona_fide = _scores_labels(scores, labels, bona_fide_class)
    candidates, accepted_at, rejected_at = _counts(s, bona_fide)
    attacks, genuine = int((~bona_fide).sum()), int(bona_fide.sum())
    accepted, rejected = accepted_at.tolist(), rejected_at.tolist()
    return [
        (float(t), _percent(a, attacks), _percent(r, genuine))
        for t, a, r in zip(candidates.tolist(), accepted, rejected, strict=True)
    ]


def one_class_decision(scores: ArrayLike, threshold: float) -> OneClass:
    """ "bona_fide" if every score >= t, "attack" if every score < t, else None (as data)."""
    s = _as_double(scores)
    if len(s) and bool((s >= threshold).all()):
        return "bona_fide"
    if len(s) and bool((s < threshold).all()):
        return "attack"
    return None


def operating_point(
    scores: ArrayLike,
    labels: ArrayLike,
    bona_fide_class: int,
    threshold: float,
    attack_types: Sequence[Hashable] | None = None,
) -> OperatingPoint:
    """APCER, BPCER, HTER, the one-class flag and (with types) the worst attack type at t."""
    a = apcer(scores, labels, bona_fide_class, threshold)
    b = bpcer(scores, labels, bona_fide_class, threshold)
    per_type: dict[Hashable, float] = {}
    worst: Hashable | None = None
    worst_rate: float | None = None
    if attack_types is not None:
        per_type = attack_type_apcer(scores, labels, bona_fide_class, threshold, attack_types)
        if per_type:
            worst, worst_rate = worst_attack_apcer(
                scores, labels, bona_fide_class, threshold, attack_types
            )
    return OperatingPoint(
        threshold=float(threshold),
        apcer=a,
        bpcer=b,
        hter=(a + b) / 2,
        one_class=one_class_decision(scores, threshold),
        attack_apcer=per_type,
        worst_attack=worst,
        worst_attack_apcer=worst_rate,
    )


def _as_double(values: ArrayLike) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(values) if not torch.is_tensor(values) else values)
    return tensor.detach().cpu().double().reshape(-1)


def _scores_labels(
    scores: ArrayLike, labels: ArrayLike, bona_fide_class: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(float64 scores, bool bona fide mask), both flat, after checking the inputs."""
    if bona_fide_class not in (0, 1):
        raise ValueError(f"bona_fide_class must be 0 or 1, got {bona_fide_class}")
    s = _as_double(scores)
    y = _as_double(labels)
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if not bool(torch.isfinite(s).all()):
        raise ValueError("scores must be finite")
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("labels must be 0 or 1")
    return s, y == bona_fide_class


def _candidates(s: torch.Tensor) -> torch.Tensor:
    """Distinct scores ascending, then the float just above the maximum (rejects everything)."""
    distinct = torch.unique(s)
    above = math.nextafter(float(distinct[-1]), math.inf) if len(distinct) else 0.0
    return torch.cat([distinct, torch.tensor([above], dtype=torch.float64)])


def candidate_counts(
    scores: ArrayLike, labels: ArrayLike, bona_fide_class: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """(candidate thresholds ascending, attacks accepted at each, bona fide rejected at
    each, number of attacks, number of bona fide samples)."""
    s, bona_fide = _scores_labels(scores, labels, bona_fide_class)
    candidates, accepted, rejected = _counts(s, bona_fide)
    return candidates, accepted, rejected, int((~bona_fide).sum()), int(bona_fide.sum())


def _counts(s: torch.Tensor, bona_fide: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The candidates, and at each the attacks with score >= t and the bona fide samples
    with score < t, by binary search over the sorted scores (O(n log n), no n x n table)."""
    candidates = _candidates(s)
    attack_scores = torch.sort(s[~bona_fide]).values
    genuine_scores = torch.sort(s[bona_fide]).values
    # searchsorted(side="left") = how many scores are < t
    accepted = len(attack_scores) - torch.searchsorted(attack_scores, candidates, side="left")
    rejected = torch.searchsorted(genuine_scores, candidates, side="left")
    return candidates, accepted, rejected


def _percent(count: int, total: int) -> float:
    return 100.0 * count / total if total else float("nan")
