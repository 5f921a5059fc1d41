"""The loss of one batch: paper Eq. 1, ``L = L_TL + α·L_MAD + β·L_MAR``, plus the fusion's
auxiliary heads and any loss term a user registers.

Each term is a small registered function of a :class:`Step` — the batch and the network's
outputs — returning a scalar (or None when it does not apply to this batch). The
:class:`Objective` sums the method's terms with their weights:

========== =================== ============================================================
term       weight              what it is
========== =================== ============================================================
``task``   1                   the task loss of the deployment head (and its side outputs)
``aux``    ``method.aux_weight`` the fusion's auxiliary heads (RFNet, mmFormer)
``distill`` ``method.alpha``   the registered distillation loss ``method.distill`` (MAD, SP)
``reg``    ``method.beta``     the task loss of the regularization head on the Ω samples
                               (the regularizer ``method.regularize``: MAR, SR)
any        ``method.terms``    a term registered with ``@register_loss_term``
========== =================== ============================================================

The training log has each term as ``loss_<term>`` (unweighted) and their weighted sum as
``loss``; a term of weight 0 is not computed (``method.terms`` merges across config layers,
so weight 0 is how a layer switches a preset's term off).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from mmanet.config import MethodConfig
from mmanet.engine.teacher import FrozenTeacher
from mmanet.models import UnifiedNetwork
from mmanet.outputs import NetworkOutput, fused_map, select_samples
from mmanet.registry import DISTILLATIONS, LOSS_TERMS
from mmanet.tasks import Task

register_loss_term = LOSS_TERMS.register


@dataclass
class Step:
    """One batch through the student, and what a loss term may read of it."""

    model: UnifiedNetwork
    task: Task
    method: MethodConfig
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    mask: torch.Tensor  # (b, m) 0/1: each sample's drawn modality mask
    out: NetworkOutput  # the deployment network's outputs, with side outputs and aux heads
    reg_rows: torch.Tensor | None = None  # samples whose mask is in Ω; None: no Ω yet
    index: torch.Tensor | None = None  # the samples' positions in the split (teacher cache)
    teacher_network: FrozenTeacher | None = field(default=None, repr=False)
    representation: str = "head"  # what distillation compares: "head" or "fused"
    complete: torch.Tensor | None = None  # (b,) bool: the sample has every modality; None: all
    epoch: int = 0  # the (1-based) epoch of this step; terms that start late read it

    @cached_property
    def complete_rows(self) -> torch.Tensor | None:
        """Indices of the samples with every modality (None: every sample of the batch)."""
        if self.complete is None:
            return None
        return self.complete.nonzero().flatten()

    @cached_property
    def teacher(self) -> NetworkOutput:
        """The frozen teacher on the complete inputs of the complete samples (computed when
        a term first asks)."""
        if self.teacher_network is None:
            raise RuntimeError("this method has no teacher")
        rows, inputs, index = self.complete_rows, self.inputs, self.index
        if rows is not None:
            inputs = {name: value[rows] for name, value in inputs.items()}
            index = None if index is None else index[rows.to(index.device)]
        return self.teacher_network(inputs, index)

    def features(self, out: NetworkOutput) -> torch.Tensor:
        """The representation distillation compares (``method.distill_features``)."""
        return fused_map(out.fused) if self.representation == "fused" else out.features


Term = Callable[[Step], "torch.Tensor | None"]


@register_loss_term("task")
def task_term(step: Step) -> torch.Tensor:
    """L_TL: the task loss of the deployment head, plus its side outputs' (ESANet)."""
    out = step.out
    return step.task.loss(out.logits, step.labels) + step.task.side_loss(
        out.side_logits, step.labels
    )


@register_loss_term("aux")
def auxiliary_term(step: Step) -> torch.Tensor | None:
    """The fusion's auxiliary heads (RFNet's, mmFormer's), or None without any."""
    return step.task.auxiliary_loss(step.out.auxiliary, step.labels)


@register_loss_term("distill")
def distillation_term(step: Step) -> torch.Tensor | None:
    """L_MAD (Eqs. 2-8) or another registered distillation loss, student vs teacher, over
    the samples whose teacher input is complete (None when fewer than two are)."""
    loss = DISTILLATIONS.get(step.method.distill)
    student, rows = step.features(step.out), step.complete_rows
    if rows is not None:
        if len(rows) < 2:
            return None
        student = student[rows]
    teacher = step.teacher
    return loss(student, step.features(teacher), teacher.logits, step.method)


@register_loss_term("reg")
def regularization_term(step: Step) -> torch.Tensor | None:
    """L_MAR (Eqs. 14-16): the task loss of the regularization head over the samples whose
    mask is in Ω — the mean over them, 0 when there are none — or None before Ω exists.

    A single sample is skipped where batch normalisation cannot take it: (1, c) vectors,
    or a map the head reduces to 1 x 1 (small images through the SF network's layer 4).
    """
    rows = step.reg_rows
    if rows is None:
        return None
    count = len(rows)
    vectors = isinstance(step.out.fused, torch.Tensor) and step.out.fused.ndim == 2
    if count == 0 or (count == 1 and vectors):
        return None
    try:
        reg = step.model.apply_head(select_samples(step.out.fused, rows), "reg_head", extras=True)
    except ValueError as err:  # torch's batch norm on one value per channel
        if count == 1 and "more than 1 value per channel" in str(err):
            return None
        raise
    labels = step.labels[rows]
    return step.task.loss(reg.logits, labels) + step.task.side_loss(reg.side_logits, labels)


DELAYED = ("distill", "reg")  # the α and β terms, which method.begin may delay


def begun(method: MethodConfig, epoch: int) -> bool:
    """Whether the α and β terms are on at (1-based) ``epoch``: from the start, or with
    ``method.begin=after_warmup`` only after MAR's warm-up epochs (the authors' code)."""
    return method.begin == "start" or epoch > method.mar.warmup_epochs


def term_weights(method: MethodConfig) -> dict[str, float]:
    """The method's terms and their weights, in the order they are added."""
    weights = {"task": 1.0}
    if method.aux_weight > 0:
        weights["aux"] = method.aux_weight
    if method.distill != "none":
        weights["distill"] = method.alpha
    if method.regularize != "none":
        weights["reg"] = method.beta
    weights.update(method.terms)
    return weights


def needs_reg_head(method: MethodConfig) -> bool:
    """Whether the network is built with its regularization head: for β's term, or for a
    loss term of ``method.terms`` with weight > 0 registered with ``needs_reg_head=True``
    (DMRNet's auxiliary decoder)."""
    if method.regularize != "none":
        return True
    return any(
        weight > 0 and LOSS_TERMS.declared(name, "needs_reg_head")
        for name, weight in method.terms.items()
    )


class Objective(nn.Module):
    """The method's loss of a batch, as a module: DistributedDataParallel wraps it, so the
    student's parameters are synchronised while the teacher (not a submodule) stays out.

    ``forward(inputs, labels, mask, reg_rows, index, complete, epoch) -> (loss, terms,
    logits)``: the loss to back-propagate, its detached terms (``loss``, ``loss_<term>``,
    ``mar_fraction``) and the detached deployment logits. ``complete`` ((b,) bool, None:
    all) marks the samples that have every modality: the teacher reads only those;
    ``epoch`` (1-based) decides whether the delayed terms have begun (``method.begin``).
    """

    def __init__(
        self,
        model: UnifiedNetwork,
        task: Task,
        method: MethodConfig,
        teacher: FrozenTeacher | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.method = method
        self.teacher = teacher
        self.weights = term_weights(method)
        self.terms = {name: LOSS_TERMS.get(name) for name in self.weights}
        features = method.distill_features
        self.representation = task.distill_features if features == "auto" else features

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        labels: torch.Tensor,
        mask: torch.Tensor,
        reg_rows: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
        complete: torch.Tensor | None = None,
        epoch: int = 0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        out = self.model.fuse(self.model.encode(inputs), mask, extras=True)
        step = Step(
            self.model,
            self.task,
            self.method,
            inputs,
            labels,
            mask,
            out,
            reg_rows,
            index,
            self.teacher,
            self.representation,
            complete,
            epoch=epoch,
        )
        loss: torch.Tensor | None = None
        terms: dict[str, torch.Tensor] = {}
        started = begun(self.method, epoch)
        for name, term in self.terms.items():
            weight = self.weights[name]
            if weight == 0 or (name in DELAYED and not started):
                continue  # a term of weight 0 is not computed (nor logged)
            value = term(step)
            if value is None:
                continue
            weighted = value if weight == 1.0 else weight * value
            loss = weighted if loss is None else loss + weighted
            terms[f"loss_{name}"] = value.detach()
        if reg_rows is not None:
            terms["mar_fraction"] = torch.tensor(len(reg_rows) / len(labels))
        assert loss is not None  # the task term is always there
        terms["loss"] = loss.detach()
        return loss, terms, out.logits.detach()


__all__ = [
    "Objective",
    "Step",
    "Term",
    "needs_reg_head",
    "register_loss_term",
    "term_weights",
]
