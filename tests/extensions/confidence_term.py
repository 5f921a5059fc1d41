"""A loss term of one's own, and a method that adds it with its weight."""

import torch

from mmanet.engine import Step, register_loss_term
from mmanet.methods import Method, register_method


@register_loss_term("confidence")
def confidence_penalty(step: Step) -> torch.Tensor:
    """−H(p): the negative entropy of the deployment head's predictions (Pereyra et al.)."""
    log_p = step.out.logits.float().log_softmax(dim=1)
    return (log_p.exp() * log_p).sum(dim=1).mean()


register_method(Method("sf_md_cp", "SF-MD+CP", terms={"confidence": 0.1}))
