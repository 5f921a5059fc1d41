"""Learning-rate schedules, stepped once per iteration or, with ``optim.step_every=epoch``,
once per epoch (docs/method.md#schedules)."""

from __future__ import annotations

import math

import torch

from mmanet.config import OptimConfig
from mmanet.errors import ConfigError

# OneCycle starts at optim.lr / 25 and ends at that / 1e4 (torch's defaults, and ESANet's)
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_FINAL_DIV_FACTOR = 1e4


class WarmupSchedule:
    """Multiplier of the base lr: linear warm-up over ``warmup_epochs``, then the decay.

    ``step``: × ``gamma`` once ``milestone`` epochs are done, for each milestone (the
    convention of PyTorch's MultiStepLR); ``cosine``: cosine to zero;
    ``constant``: 1.
    """

    def __init__(self, cfg: OptimConfig, steps_per_epoch: int) -> None:
        self.kind = cfg.scheduler
        self.steps_per_epoch = steps_per_epoch
        self.warmup_steps = cfg.warmup_epochs * steps_per_epoch
        self.total_steps = cfg.epochs * steps_per_epoch
        self.milestones = sorted(cfg.milestones)
        self.gamma = cfg.gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "step":
            epochs_done = step // self.steps_per_epoch
            return self.gamma ** sum(epochs_done >= m for m in self.milestones)
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * (step - self.warmup_steps) / span))
        return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule over the run's steps: iterations, or epochs with ``step_every=epoch``."""
    if cfg.step_every == "epoch":
        steps_per_epoch = 1
    if cfg.scheduler == "onecycle":
        total = cfg.epochs * steps_per_epoch
        if cfg.onecycle_warmup * total == 1:  # OneCycleLR would divide by zero
            raise ConfigError(
                f"optim.onecycle_warmup={cfg.onecycle_warmup} gives a one-step rise over "
                f"{total} steps; change it or optim.epochs"
            )
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=total,
            pct_start=cfg.onecycle_warmup,
            anneal_strategy="cos",
            div_factor=ONECYCLE_DIV_FACTOR,
            final_div_factor=ONECYCLE_FINAL_DIV_FACTOR,
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupSchedule(cfg, steps_per_epoch))


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # foreach: one multi-tensor kernel per update step instead of a Python loop over the
    # parameters (torch's CPU default); the same arithmetic, bit for bit.
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
            foreach=True,
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
