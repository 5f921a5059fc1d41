"""Warnings about a run's recipe that the user can act on, each naming the key to change:

* a training split that gives fewer than :data:`MIN_STEPS` optimisation steps per epoch at
  ``data.batch_size`` (``data.batch_size=auto`` picks a batch that gives them);
* a loss term whose weighted epoch mean is :data:`DOMINANT` times the task loss or more
  in the first epoch it is on (the distillation term's from ``method.begin``, MAR's term's
  after its warm-up): its weight, not the data, then drives training.

Each warning is printed once per run on stderr as ``mmanet: warning: ...`` (rank 0) and
kept in the run's ``run.json`` (``warnings``), so a redirected log does not lose it.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from mmanet.config import Config, MethodConfig
from mmanet.engine.objective import DELAYED, begun, term_weights

# Fewer steps than this per epoch and the epoch-counted settings (optim.epochs, the
# learning-rate warm-up and milestones, MAR's warm-up, validation) count very few updates,
# and SGD's momentum (0.9: an average over ~10 steps) never settles within an epoch.
MIN_STEPS = 8
AUTO_LARGEST = 64  # data.batch_size=auto on a large split: the default batch
AUTO_SMALLEST = 8  # ... and never fewer samples than this: batch statistics of fewer are noise
DOMINANT = 10.0  # a weighted term this many times the task loss dominates it

WEIGHT_KEYS = {"aux": "method.aux_weight", "distill": "method.alpha", "reg": "method.beta"}


def auto_batch_size(samples: int) -> int:
    """``data.batch_size=auto``: the largest batch up to 64 that gives :data:`MIN_STEPS`
    steps per epoch over ``samples`` (per process), but at least 8 samples (or the split)."""
    return max(min(AUTO_LARGEST, samples // MIN_STEPS), min(AUTO_SMALLEST, samples))


def resolve_batch_size(config: Config, samples: int) -> tuple[Config, str | None]:
    """The config with ``data.batch_size=auto`` replaced by its value for ``samples``
    training samples per process, and the note saying so (None: a number was given)."""
    if config.data.batch_size != "auto":
        return config, None
    batch = auto_batch_size(samples)
    steps = max(1, samples // batch)
    note = (
        f"mmanet: data.batch_size=auto: {batch} for {samples} training samples "
        f"({steps} steps per epoch; recorded in config.yaml)"
    )
    data = dataclasses.replace(config.data, batch_size=batch)
    return dataclasses.replace(config, data=data), note


def small_set_warning(samples: int, batch_size: int, steps: int, dropped: int) -> str | None:
    """The warning for ``steps`` optimisation steps per epoch over ``samples`` training
    samples at ``batch_size`` (per process), ``dropped`` of them left out of each epoch
    (the partial last batch); None when there are :data:`MIN_STEPS` steps or more, or when
    ``data.batch_size=auto``'s batch would give no more steps (a split under 16 samples;
    a batch smaller than auto's is a choice)."""
    auto = auto_batch_size(samples)
    auto_steps = samples // auto
    if steps >= MIN_STEPS or auto_steps <= steps:
        return None
    plural = "s" if steps != 1 else ""
    left_out = f", {dropped} samples left out of each epoch (partial last batch)" if dropped else ""
    return (
        f"mmanet: warning: {samples} training samples at data.batch_size={batch_size} give "
        f"{steps} optimisation step{plural} per epoch{left_out}, fewer than {MIN_STEPS}: "
        f"set data.batch_size={auto} ({auto_steps} steps) or data.batch_size=auto"
    )


def weight_key(term: str) -> str:
    """The config key of a loss term's weight."""
    return WEIGHT_KEYS.get(term, f"method.terms.{term}")


def start_epoch(term: str, method: MethodConfig) -> int:
    """The first (1-based) epoch ``term`` is on for all of: the delayed terms after MAR's
    warm-up with ``method.begin=after_warmup``, MAR's term after MAR's warm-up (its Ω is
    mined at the warm-up's end), every other term from epoch 1."""
    after_warmup = method.mar.warmup_epochs + 1
    if term in DELAYED and not begun(method, 1):
        return after_warmup
    return after_warmup if term == "reg" and method.regularize == "mar" else 1


@dataclasses.dataclass(frozen=True)
class Dominance:
    """A weighted loss term at :data:`DOMINANT` times the task loss or more."""

    term: str
    epoch: int
    weight: float
    mean: float  # the term's epoch mean, unweighted
    task: float  # the task loss's epoch mean

    @property
    def weighted(self) -> float:
        return self.weight * self.mean

    @property
    def suggested(self) -> float:
        """The weight that brings the weighted term to the task loss's scale."""
        return self.weight * self.task / abs(self.weighted)

    def message(self) -> str:
        key = weight_key(self.term)
        return (
            f"mmanet: warning: epoch {self.epoch}: the {self.term} term weighs "
            f"{self.weighted:.3g} ({key}={self.weight:g} x loss_{self.term} {self.mean:.3g}), "
            f"{abs(self.weighted) / self.task:.0f}x the task loss {self.task:.3g} "
            f"({DOMINANT:g}x or more); try {key}={self.suggested:.2g} to bring it to the task "
            "loss's scale"
        )

    def record(self) -> dict[str, Any]:
        return {
            "kind": "dominant_term",
            "term": self.term,
            "epoch": self.epoch,
            "key": weight_key(self.term),
            "weight": self.weight,
            "weighted": self.weighted,
            "task": self.task,
            "suggested": float(f"{self.suggested:.2g}"),
            "message": self.message(),
        }


def dominant_terms(row: dict[str, Any], method: MethodConfig, epoch: int) -> list[Dominance]:
    """The terms of an epoch's log ``row`` whose weighted mean is :data:`DOMINANT` times
    the task loss or more, among those whose first full epoch is ``epoch``.

    Each term is judged once, when it starts: later, the training task loss falls towards
    0 as the network fits the split while a term with a floor (MAD between a student with
    missing modalities and a complete teacher never reaches 0) does not, so every healthy
    run (the bundled demo: 3 x L_MAD is ~30x L_task by epoch 5) would be flagged."""
    task = row.get("loss_task")
    if task is None or not task > 0:
        return []
    found = []
    for term, weight in term_weights(method).items():
        mean = row.get(f"loss_{term}")
        if term == "task" or mean is None or epoch != start_epoch(term, method):
            continue
        if abs(weight * mean) >= DOMINANT * task:
            found.append(Dominance(term, epoch, weight, mean, task))
    return found


class Advisor:
    """A run's warnings: each printed once (when ``main``) and kept for ``run.json``."""

    def __init__(self, method: MethodConfig, main: bool = True) -> None:
        self.method, self.main = method, main
        self.records: list[dict[str, Any]] = []

    def restore(self, records: list[dict[str, Any]]) -> None:
        """The warnings of the run being resumed: those already given are not repeated."""
        self.records = [dict(record) for record in records]

    def given(self, kind: str, term: str | None = None) -> bool:
        return any(r["kind"] == kind and r.get("term") == term for r in self.records)

    def add(self, record: dict[str, Any]) -> None:
        """Keep a warning and print it (rank 0), unless one of its kind was given."""
        if self.given(record["kind"], record.get("term")):
            return
        self.records.append(record)
        if self.main:
            print(record["message"], file=sys.stderr, flush=True)

    def small_training_set(self, samples: int, batch_size: int, steps: int, dropped: int) -> None:
        message = small_set_warning(samples, batch_size, steps, dropped)
        if message is not None:
            record = {"kind": "small_training_set", "samples": samples, "steps": steps}
            self.add({**record, "batch_size": batch_size, "message": message})

    def epoch_end(self, row: dict[str, Any], epoch: int) -> None:
        """Check an epoch's log row for dominant loss terms."""
        for dominance in dominant_terms(row, self.method, epoch):
            self.add(dominance.record())


__all__ = [
    "DOMINANT",
    "MIN_STEPS",
    "Advisor",
    "Dominance",
    "auto_batch_size",
    "dominant_terms",
    "resolve_batch_size",
    "small_set_warning",
]
