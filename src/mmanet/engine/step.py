"""One optimisation step: draw each sample's modality mask (paper Sec. 3.1's dropout —
among the modalities the sample has — or the run's fixed mask), pick the samples whose
mask is in Ω, compute the method's objective, back-propagate, check that the loss is
finite, update.

The step waits for the device once, after the backward pass (the finiteness check); the
Ω samples are picked on the host, from the host-side masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Subset

from mmanet.config import Config
from mmanet.data import DataBundle
from mmanet.data.base import AVAILABLE_KEY, INDEX_KEY
from mmanet.engine import distributed
from mmanet.engine.objective import Objective
from mmanet.engine.schedule import build_optimizer, build_scheduler
from mmanet.errors import ConfigError, TrainingError
from mmanet.methods import get_method
from mmanet.modality import MaskSampler, Modalities, full_mask, mask_codes

StepResult = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Autocast to ``precision`` (``bf16``, ``fp16``; a no-op for ``fp32``)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def nonfinite_message(terms: dict[str, torch.Tensor], epoch: int, step: int) -> str:
    bad = [f"{k}={float(v)}" for k, v in terms.items() if k != "loss" and not torch.isfinite(v)]
    return (
        f"non-finite loss at epoch {epoch}, step {step}: {', '.join(bad) or 'loss'} "
        "(lower optim.lr, check the inputs, or set optim.nonfinite=skip to drop such batches)"
    )


def fixed_mask(config: Config, modalities: list[str]) -> tuple[int, ...]:
    """The mask of a run without dropout: the full mask, or the method's combination."""
    method, names = config.method, Modalities(modalities)
    if get_method(method.name).per_combination and method.combination is None:
        raise ConfigError(f"method.name={method.name} needs method.combination, e.g. rgb+ir")
    if method.combination is None:
        return full_mask(len(names))
    try:
        return names.mask_from_name(method.combination)
    except KeyError as err:
        raise ConfigError(f"method.combination={method.combination!r}: {err.args[0]}") from None


def dropout_start(config: Config) -> int:
    """The first epoch of modality dropout: 1, or the method's own (``Method.dropout_from``,
    ShaSpec's second stage); before it every sample has all its modalities."""
    hook = get_method(config.method.name).dropout_from
    return 1 if hook is None else hook(config)


def check_batch(config: Config, model: torch.nn.Module, samples: int) -> None:
    """A training batch that batch normalisation cannot take (one sample) is an error."""
    smallest = min(config.data.batch_size, samples)
    batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if smallest < 2 and batch_norm:
        raise ConfigError(
            f"data.batch_size={config.data.batch_size} with {samples} training samples: the "
            "network's batch normalisation needs at least 2 samples per training batch"
        )


def training_samples(config: Config, data: DataBundle) -> Dataset:
    """The training split a method trains on: with ``method.samples=complete`` the samples
    that have every modality it uses (all of them with dropout, else its fixed mask's),
    otherwise every sample that has at least one of them."""
    table = data.availability(data.train)  # (n, m)
    if bool(table.all()):
        return data.train
    used = torch.tensor(
        [1] * len(data.modalities)
        if config.method.dropout
        else fixed_mask(config, data.modalities),
        dtype=torch.bool,
    )
    if config.method.samples == "complete":
        keep = (table | ~used).all(dim=1)
    else:
        keep = (table & used).any(dim=1)
    if not bool(keep.any()):
        raise ConfigError(
            f"method.samples={config.method.samples}: no training sample has the modalities "
            f"method {config.method.name} uses"
        )
    return data.train if bool(keep.all()) else Subset(data.train, keep.nonzero().flatten().tolist())


# (inputs, epoch, step) -> corrupted inputs: training-time corruption (data.corrupt)
TrainingCorrupt = Callable[[dict[str, torch.Tensor], int, int], dict[str, torch.Tensor]]


class TrainingStep:
    """The optimizer, its schedule and the masks of one run's steps.

    Args:
        config: the run's configuration.
        objective: the method's loss of a batch (its ``model`` is what is optimised).
        modalities: the data's modalities, in mask order.
        device: the training device.
        steps_per_epoch: optimisation steps per epoch (for the learning-rate schedule).
    """

    def __init__(
        self,
        config: Config,
        objective: Objective,
        modalities: list[str],
        device: torch.device,
        steps_per_epoch: int,
    ) -> None:
        self.cfg, self.objective, self.device = config, objective, device
        self.model = objective.model
        self.names = Modalities(modalities)
        # each process draws its own masks; rank 0 draws the single-process ones
        seed = config.seed + 1 + 7919 * distributed.rank()
        self.mask_generator = torch.Generator().manual_seed(seed)
        try:
            self.sampler = MaskSampler(len(modalities), config.method.mask_probabilities)
        except ValueError as err:
            raise ConfigError(f"method.mask_probabilities: {err}") from None
        self.fixed_mask = torch.tensor(fixed_mask(config, modalities), dtype=torch.float32)[None]
        self.dropout_from = dropout_start(config)
        # (inputs, epoch, step) -> inputs: training-time corruption (data.corrupt), or None
        self.corrupt: TrainingCorrupt | None = None
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        # Under data parallelism the whole objective runs inside DistributedDataParallel (its
        # loss is the output, so parameters a step leaves unused — the regularization head
        # without Ω samples, auxiliary heads — are found and skipped); the teacher, not a
        # submodule of the objective, stays outside, frozen.
        self.forward = (
            DistributedDataParallel(objective, find_unused_parameters=True)
            if distributed.active()
            else objective
        )

    def autocast(self) -> torch.autocast:
        return autocast(self.device, self.cfg.precision)

    def __call__(
        self,
        inputs: dict[str, torch.Tensor],
        labels: torch.Tensor,
        omega: torch.Tensor | None,
        epoch: int = 0,
        step: int = 0,
    ) -> StepResult | None:
        """One step on a loader batch; ``omega`` is the host-side Ω lookup (or None).

        Returns the loss terms, the deployment logits, the labels and the masks (on the
        device), or None when a non-finite loss was skipped (``optim.nonfinite=skip``).
        """
        cfg = self.cfg
        index = inputs.pop(INDEX_KEY, None)  # with method.cache_teacher
        available = inputs.pop(AVAILABLE_KEY, None)  # (b, m) with incomplete samples
        if cfg.method.dropout and (self.dropout_from <= 1 or epoch >= self.dropout_from):
            host_mask = self.sampler.sample(len(labels), self.mask_generator, available)
        else:
            host_mask = self.fixed_mask.expand(len(labels), -1)
            if self.objective.teacher is None:  # a fixed mask: absent encoders need not run
                present = host_mask[0].tolist()
                inputs = {k: inputs[k] for k, bit in zip(self.names, present, strict=True) if bit}
            if available is not None:  # each sample with what it has of the fixed mask
                host_mask = host_mask * available
        if self.corrupt is not None:
            inputs = self.corrupt(inputs, epoch, step)
        reg_rows = None
        if omega is not None:  # indices of the samples whose mask is in Ω
            reg_rows = self.to_device(omega[mask_codes(host_mask)].nonzero().flatten())
        mask = self.to_device(host_mask)
        inputs = {k: self.to_device(v) for k, v in inputs.items()}
        labels = self.to_device(labels)
        complete = None if available is None else self.to_device(available.all(dim=1))
        if cfg.channels_last:
            inputs = {
                k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v
                for k, v in inputs.items()
            }
        skip_bad = cfg.optim.nonfinite == "skip"
        if skip_bad:  # a skipped batch must not leave its batch-norm statistics behind
            saved = [buffer.clone() for buffer in self.model.buffers()]
        with self.autocast():
            loss, terms, logits = self.forward(
                inputs, labels, mask, reg_rows, index, complete, epoch
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        # Every process takes the same decision, so DDP's processes stay in step.
        bad = distributed.all_reduce_sum((~torch.isfinite(loss.detach())).float())
        if bad.item():
            if not skip_bad:
                raise TrainingError(nonfinite_message(terms, epoch, step))
            self.optimizer.zero_grad(set_to_none=True)
            for buffer, value in zip(self.model.buffers(), saved, strict=True):
                buffer.copy_(value)
            return None
        per_epoch = cfg.optim.step_every == "epoch"
        while per_epoch and self.scheduler.last_epoch < epoch - 1:  # epochs count from 1
            self.scheduler.step()  # the schedule's step epoch - 1 holds for all of epoch
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if not per_epoch:
            self.scheduler.step()
        return terms, logits, labels, mask

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the training device; to a GPU through page-locked memory, so
        the copy is queued without waiting for the work already queued."""
        if self.device.type != "cuda" or tensor.device.type != "cpu":
            return tensor.to(self.device)
        if not tensor.is_pinned():
            tensor = tensor.contiguous().pin_memory()  # an expanded mask has shared elements
        return tensor.to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


__all__ = [
    "StepResult",
    "TrainingStep",
    "autocast",
    "check_batch",
    "dropout_start",
    "fixed_mask",
    "nonfinite_message",
    "training_samples",
]
