"""A distillation loss of one's own, and the method that trains with it."""

import torch
import torch.nn.functional as F

from mmanet.losses import register_distillation
from mmanet.methods import Method, register_method


def distance_relations(features: torch.Tensor) -> torch.Tensor:
    """(b, b) pairwise distances of the flattened features over their mean (RKD)."""
    distances = torch.cdist(features.flatten(1).float(), features.flatten(1).float())
    return distances / distances[distances > 0].mean().clamp_min(1e-8)


@register_distillation("rkd")
def relational_distances(student, teacher, teacher_logits, method) -> torch.Tensor:
    """RKD's distance loss (Park et al., CVPR 2019): Huber between the relations."""
    return F.smooth_l1_loss(distance_relations(student), distance_relations(teacher.detach()))


register_method(Method("sf_rkd", "SF-MD+RKD", distill="rkd"))
