"""The losses of MMANet: MAD (and SP) and MAR (and SR).

Distillation losses and regularizers are registered by name (``method.distill``,
``method.regularize``): add one with ``@register_distillation("name")`` — a function
``(student_features, teacher_features, teacher_logits, method_config) -> loss`` — or
``@register_regularizer("name")`` — a factory ``(num_modalities, method_config) ->``
an object with Ω (see :class:`WeakCombinationMiner`).
"""

from mmanet.losses.mad import mad_loss, relation_matrix, sample_weights, teacher_uncertainty
from mmanet.losses.mar import (
    WeakCombinationMiner,
    discrepancy_from_counts,
    prediction_discrepancy,
    prediction_histogram,
    weak_masks,
)
from mmanet.registry import DISTILLATIONS, REGULARIZERS

register_distillation = DISTILLATIONS.register
register_regularizer = REGULARIZERS.register

__all__ = [
    "WeakCombinationMiner",
    "discrepancy_from_counts",
    "mad_loss",
    "prediction_discrepancy",
    "prediction_histogram",
    "register_distillation",
    "register_regularizer",
    "relation_matrix",
    "sample_weights",
    "teacher_uncertainty",
    "weak_masks",
]
