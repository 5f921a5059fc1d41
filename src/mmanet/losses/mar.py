"""Modality-aware regularization, MAR (paper Eqs. 9-16, docs/method.md#mar), and its SR
ablation (docs/method.md#sr)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from mmanet.modality import Mask, mask_table, singleton_masks, sub_masks
from mmanet.registry import REGULARIZERS

Distribution = Literal["histogram", "softmax"]


@dataclass
class MARSettings:
    """``method.mar``: MAR's settings (SR, its ablation, reads them too)."""

    warmup_epochs: int = 5  # epochs before Ω is first mined (and method.begin=after_warmup's)
    mining_split: Literal["train", "val"] = "train"
    distribution: Distribution = "histogram"


def prediction_histogram(
    predictions: torch.Tensor, num_classes: int, distribution: Distribution = "histogram"
) -> torch.Tensor:
    """Distribution of predicted labels with add-one smoothing (Eqs. 10-11), shape (k,).

    ``distribution="softmax"`` applies a softmax to the normalised histogram, as the
    authors' code does.
    """
    counts = torch.bincount(predictions.reshape(-1).long(), minlength=num_classes)
    return histogram_distribution(counts, distribution)


def histogram_distribution(
    counts: torch.Tensor, distribution: Distribution = "histogram"
) -> torch.Tensor:
    """Normalise (…, k) label counts to distributions with add-one smoothing."""
    smoothed = counts.double() + 1.0
    probs = smoothed / smoothed.sum(dim=-1, keepdim=True)
    if distribution == "softmax":
        return torch.softmax(probs, dim=-1)
    if distribution != "histogram":
        raise ValueError(f"unknown MAR distribution {distribution!r}")
    return probs


def discrepancy_from_counts(
    counts: torch.Tensor, distribution: Distribution = "histogram"
) -> torch.Tensor:
    """``g(i) = KL(P_0 ‖ P_i)`` from (m + 1, k) label counts, row 0 = the full mask (Eq. 12)."""
    probs = histogram_distribution(counts, distribution)
    full, dropped = probs[0], probs[1:]
    return (full * (full.log() - dropped.log())).sum(dim=1).float()


def prediction_discrepancy(
    full_predictions: torch.Tensor,
    dropped_predictions: Sequence[torch.Tensor],
    num_classes: int,
    distribution: Distribution = "histogram",
) -> torch.Tensor:
    """The vector ``g`` (length m) of paper Eq. 12 (docs/method.md#mar).

    Args:
        full_predictions: predicted labels with the full mask ``Δ_0`` (any shape; for
            segmentation pass only the labelled pixels).
        dropped_predictions: m label tensors, entry ``i`` with modality ``i`` dropped.
        num_classes: k, the number of histogram bins.
    """
    counts = torch.stack(
        [
            torch.bincount(p.reshape(-1).long(), minlength=num_classes)
            for p in [full_predictions, *dropped_predictions]
        ]
    )
    return discrepancy_from_counts(counts, distribution)


def weak_masks(memory_bank: torch.Tensor) -> list[Mask]:
    """Ω from an (N × m) memory bank of ``g`` rows (Eq. 13, docs/method.md#mar).

    ``w = argmax(mean of the rows)``; Ω is every non-empty mask whose present
    modalities are a subset of those of ``Δ_w`` (modality ``w`` dropped).
    """
    if memory_bank.ndim != 2 or memory_bank.shape[0] == 0:
        raise ValueError(f"memory bank must be (N, m) with N >= 1, got {tuple(memory_bank.shape)}")
    m = memory_bank.shape[1]
    if m < 2:
        raise ValueError("MAR needs at least two modalities")
    weakest = int(memory_bank.float().mean(dim=0).argmax())
    dropped = tuple(0 if i == weakest else 1 for i in range(m))
    return sub_masks(dropped)


class WeakCombinationMiner:
    """Stateful MAR miner: fills the memory bank during warm-up and then fixes Ω.

    ``mode="mar"`` mines Ω after each of the ``warmup_epochs`` epochs (paper Eqs. 9-13);
    ``mode="sr"`` fixes Ω to the single-modality masks from the start (the SR ablation).
    """

    def __init__(
        self,
        num_modalities: int,
        warmup_epochs: int,
        mode: Literal["mar", "sr"] = "mar",
        distribution: Distribution = "histogram",
    ) -> None:
        if mode not in ("mar", "sr"):
            raise ValueError(f"unknown regularization mode {mode!r}; use 'mar' or 'sr'")
        self.num_modalities = num_modalities
        self.warmup_epochs = warmup_epochs
        self.mode = mode
        self.distribution = distribution
        self.memory_bank = torch.zeros(warmup_epochs, num_modalities)
        self.filled = 0
        self.omega: list[Mask] | None = singleton_masks(num_modalities) if mode == "sr" else None

    def needs_mining(self, epoch: int) -> bool:
        """Whether to mine after (1-based) ``epoch``."""
        return self.mode == "mar" and self.omega is None and epoch <= self.warmup_epochs

    def update(self, epoch: int, counts: torch.Tensor) -> torch.Tensor:
        """Store ``g`` for ``epoch`` from (m + 1, k) label counts; fix Ω after the last one."""
        g = discrepancy_from_counts(counts, self.distribution)
        self.memory_bank[epoch - 1] = g
        self.filled = max(self.filled, epoch)
        if epoch >= self.warmup_epochs:
            self.omega = weak_masks(self.memory_bank[: self.filled])
        return g

    def omega_lookup(self, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """Boolean table over mask codes: entry ``code`` is True when that mask is in Ω."""
        if not self.omega:
            return None
        return mask_table(self.omega, self.num_modalities, device)

    def state_dict(self) -> dict:
        return {
            "memory_bank": self.memory_bank.clone(),
            "filled": self.filled,
            "omega": [list(mask) for mask in self.omega] if self.omega is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.memory_bank = state["memory_bank"].clone()
        self.filled = int(state["filled"])
        omega = state["omega"]
        self.omega = [tuple(int(b) for b in mask) for mask in omega] if omega is not None else None


@REGULARIZERS.register("mar", settings=MARSettings)
def modality_aware_regularization(num_modalities: int, method: Any) -> WeakCombinationMiner:
    """``method.regularize=mar``: Ω mined after each of the ``method.mar.warmup_epochs``."""
    mar = method.mar
    return WeakCombinationMiner(num_modalities, mar.warmup_epochs, "mar", mar.distribution)


@REGULARIZERS.register("sr", settings=MARSettings, settings_under="mar")
def single_modality_regularization(num_modalities: int, method: Any) -> WeakCombinationMiner:
    """``method.regularize=sr``: the SR ablation, Ω = the single-modality masks."""
    mar = method.mar
    return WeakCombinationMiner(num_modalities, mar.warmup_epochs, "sr", mar.distribution)
