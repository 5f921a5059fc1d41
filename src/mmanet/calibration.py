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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mmanet.modality import Modalities

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


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
    bins = reliability_diagram(confidences, correct, num_bins)
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
            rose = int((reduced - full > tolerance).sum())
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
