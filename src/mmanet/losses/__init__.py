"""The losses of MMANet: MAD (and SP) and MAR (and SR)."""

from mmanet.losses.mad import mad_loss, relation_matrix, sample_weights, teacher_uncertainty
from mmanet.losses.mar import (
    WeakCombinationMiner,
    discrepancy_from_counts,
    prediction_discrepancy,
    prediction_histogram,
    weak_masks,
)

__all__ = [
    "WeakCombinationMiner",
    "discrepancy_from_counts",
    "mad_loss",
    "prediction_discrepancy",
    "prediction_histogram",
    "relation_matrix",
    "sample_weights",
    "teacher_uncertainty",
    "weak_masks",
]
