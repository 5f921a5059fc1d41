"""Modalities, masks and modality dropout (paper §3.1, docs/method.md#modality-dropout).

A *mask* is a tuple of ``m`` bits, one per modality in a fixed order; 1 means the
modality is present. The ``2**m - 1`` non-empty masks are the *combinations*.
Their stable order is by number of present modalities, then lexicographic in the
modality order -- the row order of the paper's tables (RGB, Depth, IR, RGB+Depth,
RGB+IR, Depth+IR, RGB+Depth+IR).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

Mask = tuple[int, ...]


def all_masks(num_modalities: int) -> list[Mask]:
    """All ``2**m - 1`` non-empty masks in the stable table order."""
    if num_modalities < 1:
        raise ValueError(f"need at least one modality, got {num_modalities}")
    masks: list[Mask] = []
    for size in range(1, num_modalities + 1):
        for present in itertools.combinations(range(num_modalities), size):
            masks.append(tuple(int(i in present) for i in range(num_modalities)))
    return masks


def full_mask(num_modalities: int) -> Mask:
    return (1,) * num_modalities


def drop_one_masks(num_modalities: int) -> list[Mask]:
    """``Δ_1 .. Δ_m`` of paper Eq. 9: modality ``i`` absent, all others present."""
    return [tuple(0 if j == i else 1 for j in range(num_modalities)) for i in range(num_modalities)]


def singleton_masks(num_modalities: int) -> list[Mask]:
    return [tuple(int(j == i) for j in range(num_modalities)) for i in range(num_modalities)]


def sub_masks(mask: Mask) -> list[Mask]:
    """Every non-empty mask whose present modalities are a subset of ``mask``'s."""
    return [m for m in all_masks(len(mask)) if all(a <= b for a, b in zip(m, mask, strict=True))]


def mask_code(mask: Sequence[int]) -> int:
    """Integer code of a mask: bit ``i`` set when modality ``i`` is present."""
    return sum(int(bit) << i for i, bit in enumerate(mask))


def mask_codes(masks: torch.Tensor) -> torch.Tensor:
    """Integer codes of a (b, m) 0/1 tensor of masks, shape (b,)."""
    weights = 2 ** torch.arange(masks.shape[1], device=masks.device)
    return (masks.round().long() * weights).sum(dim=1)


def mask_table(
    masks: Sequence[Sequence[int]], num_modalities: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Boolean table over mask codes, True for ``masks``: ``table[mask_codes(batch)]`` marks
    the samples whose mask is one of them."""
    table = torch.zeros(2**num_modalities, dtype=torch.bool, device=device)
    table[[mask_code(mask) for mask in masks]] = True
    return table


class Modalities:
    """An ordered set of named modalities and the naming of their combinations."""

    def __init__(self, names: Sequence[str]) -> None:
        names = tuple(names)
        if len(names) < 1:
            raise ValueError("at least one modality is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate modality names in {list(names)}")
        for name in names:
            if not name or "+" in name:
                raise ValueError(f"invalid modality name {name!r} (non-empty, no '+')")
        self.names: tuple[str, ...] = names

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __repr__(self) -> str:
        return f"Modalities({list(self.names)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Modalities) and other.names == self.names

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown modality {name!r}; known: {', '.join(self.names)}") from None

    @property
    def combinations(self) -> list[Mask]:
        return all_masks(len(self.names))

    def mask_name(self, mask: Sequence[int]) -> str:
        """Readable name of a mask, e.g. ``"rgb+ir"``."""
        present = [n for n, bit in zip(self.names, mask, strict=True) if bit]
        if not present:
            raise ValueError("the empty mask has no name")
        return "+".join(present)

    def mask_from_name(self, name: str) -> Mask:
        """Inverse of :meth:`mask_name`; accepts the modalities in any order."""
        parts = name.split("+")
        indices = {self.index(p) for p in parts}
        return tuple(int(i in indices) for i in range(len(self.names)))


class MaskSampler:
    """Per-sample modality dropout (docs/method.md#modality-dropout): one non-empty mask per
    sample.

    Masks are drawn uniformly from the ``2**m - 1`` combinations, or with the given
    per-combination ``probabilities`` (in :func:`all_masks` order), from ``generator``
    so that a run can be replayed.
    """

    def __init__(self, num_modalities: int, probabilities: Sequence[float] | None = None) -> None:
        self.masks = torch.tensor(all_masks(num_modalities), dtype=torch.float32)
        n = len(self.masks)
        if probabilities is None:
            self.probabilities = None
        else:
            probs = torch.tensor(list(probabilities), dtype=torch.float64)
            if (
                probs.numel() != n
                or not torch.isfinite(probs).all()
                or (probs < 0).any()
                or probs.sum() <= 0
            ):
                raise ValueError(
                    f"mask probabilities need {n} finite non-negative values with a positive sum, "
                    f"got {list(probabilities)}"
                )
            self.probabilities = probs / probs.sum()

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator,
        available: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(batch_size, m) float tensor of 0/1, never an all-zero row.

        ``available``: (batch_size, m) 0/1, the modalities each sample has; a sample's mask
        is then drawn among the non-empty subsets of what it has (uniformly, or with the
        probabilities renormalised over them). Without it, or when every sample is
        complete, the draw is the same as for complete data.
        """
        if available is not None and not bool(available.all()):
            return self._sample_within(available > 0, generator)
        if self.probabilities is None:
            idx = torch.randint(len(self.masks), (batch_size,), generator=generator)
        else:
            idx = torch.multinomial(
                self.probabilities, batch_size, replacement=True, generator=generator
            )
        return self.masks[idx]

    def _sample_within(self, available: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        allowed = (self.masks[None] <= available[:, None].float()).all(dim=2)  # (b, c)
        base = self.probabilities if self.probabilities is not None else torch.ones(len(self.masks))
        weights = allowed.double() * base.double()[None]
        empty = (weights.sum(dim=1) <= 0).nonzero().flatten()
        if len(empty):
            raise ValueError(
                f"sample {int(empty[0])} of the batch has no combination with a positive "
                "probability among the modalities it has"
            )
        idx = torch.multinomial(weights, 1, generator=generator)[:, 0]
        return self.masks[idx]
