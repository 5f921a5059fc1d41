"""DMRNet's loss terms (docs/methods/dmrnet.md); they are registered, under the names
``dmrnet_kl``, ``dmrnet_hard`` and ``dmrnet_aux``, by :mod:`mmanet.dmrnet`, which reads
the settings. Each returns its unweighted value: the Objective multiplies it by its
weight ``method.terms.<term>`` (and skips a term of weight 0).

- :func:`kl_divergence`: KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (σ² + μ² − log σ² − 1), summed over
  each sample's C × H × W values and averaged over the batch ("sample", classification),
  or summed over the C channels and averaged over every pixel of the batch ("pixel",
  segmentation), as the authors' code computes them;
- :func:`hard_rows`: the samples whose mask is in the hard set (mined Ω, or fixed);
- :func:`hard_loss`: the task loss of the deployment output on those rows, as the authors
  normalise it: the sum over the rows divided by the batch size (``reduction="batch"``),
  or the mean over the rows (``"rows"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch

from mmanet.modality import Modalities, mask_codes, mask_table
from mmanet.outputs import GaussianEmbedding

if TYPE_CHECKING:
    from mmanet.dmrnet import DMRNetSettings
    from mmanet.engine.objective import Step

Reduction = Literal["sample", "pixel"]


def kl_divergence(embedding: GaussianEmbedding, reduction: Reduction = "sample") -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) of (b, c[, h, w]) μ and log σ² (see the module's doc)."""
    mu, logvar = embedding.mu.float(), embedding.logvar.float()
    per_value = 0.5 * (logvar.exp() + mu.square() - logvar - 1.0)
    if reduction == "pixel":
        return per_value.sum(dim=1).mean()  # (b, h, w) per-pixel KL, averaged
    if reduction != "sample":
        raise ValueError(f"unknown KL reduction {reduction!r}; use 'sample' or 'pixel'")
    return per_value.flatten(1).sum(dim=1).mean()


def hard_lookup(modalities: Sequence[str], names: Sequence[str]) -> torch.Tensor:
    """Boolean table over mask codes, True for the combinations ``names`` (``"rgb+ir"``)."""
    order = Modalities(modalities)
    masks = []
    for name in names:
        try:
            masks.append(order.mask_from_name(name))
        except KeyError as err:
            raise ValueError(
                f"method.dmrnet.hard_set: {name!r} is not a combination of "
                f"{'+'.join(order)} ({err.args[0]})"
            ) from None
    return mask_table(masks, len(order))


def hard_rows(
    mask: torch.Tensor,
    hard_set: str | Sequence[str],
    modalities: Sequence[str],
    mined: torch.Tensor | None,
) -> torch.Tensor | None:
    """Indices of the samples whose (b, m) ``mask`` is in the hard set: ``mined`` (the
    step's Ω rows, None before Ω exists) for ``hard_set="mined"``, else the samples whose
    mask is one of the named combinations."""
    if isinstance(hard_set, str):
        return mined
    table = hard_lookup(modalities, hard_set).to(mask.device)
    return table[mask_codes(mask)].nonzero().flatten()


def hard_loss(
    step: Step, rows: torch.Tensor, reduction: Literal["batch", "rows"] = "batch"
) -> torch.Tensor | None:
    """The task loss (and side outputs') of the deployment output on ``rows``: the sum over
    them / b (``"batch"``) or their mean (``"rows"``); None when there are none."""
    if len(rows) == 0:
        return None
    out, labels = step.out, step.labels[rows]
    loss = step.task.loss(out.logits[rows], labels)
    if out.side_logits:
        loss = loss + step.task.side_loss([s[rows] for s in out.side_logits], labels)
    if reduction == "batch":
        loss = loss * (len(rows) / len(step.labels))
    return loss


def incomplete_rows(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the samples whose (b, m) mask misses a modality."""
    return (mask.sum(dim=1) < mask.shape[1]).nonzero().flatten()


def aux_term(step: Step, settings: DMRNetSettings) -> torch.Tensor | None:
    """``dmrnet_aux``: the task loss (and side outputs') of the regularization head —
    DMRNet's auxiliary decoder — on the samples missing a modality, their mean, from epoch
    ``aux_after + 1`` (None before, or with no such sample)."""
    if step.epoch <= settings.aux_after:
        return None
    from mmanet.engine.objective import regularization_term

    rows = incomplete_rows(step.mask)
    return regularization_term(dataclasses.replace(step, reg_rows=rows))


def kl_term(step: Step, settings: DMRNetSettings) -> torch.Tensor | None:
    """``dmrnet_kl``: the KL, from epoch ``kl_after + 1`` (None before)."""
    if step.epoch <= settings.kl_after:
        return None
    embedding = step.out.embedding
    if embedding is None:
        raise ValueError("dmrnet_kl needs a network with DMRNet's probabilistic head")
    reduction = settings.kl_reduction
    if reduction == "auto":
        reduction = "pixel" if step.task.name == "segmentation" else "sample"
    return kl_divergence(embedding, reduction)


def hard_term(step: Step, settings: DMRNetSettings) -> torch.Tensor | None:
    """``dmrnet_hard``: :func:`hard_loss` on the hard rows, from epoch ``hard_after + 1``
    (None before, before Ω is mined, or with no hard sample)."""
    if step.epoch <= settings.hard_after:
        return None
    rows = hard_rows(step.mask, settings.hard_set, step.model.modalities, step.reg_rows)
    if rows is None:
        return None
    return hard_loss(step, rows, settings.hard_reduction)


__all__ = [
    "aux_term",
    "hard_lookup",
    "hard_loss",
    "hard_rows",
    "hard_term",
    "incomplete_rows",
    "kl_divergence",
    "kl_term",
]
