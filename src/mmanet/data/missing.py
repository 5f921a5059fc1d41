"""Incomplete training data, made on purpose: a seeded missing-completely-at-random
(MCAR) table of which modalities each training sample has, and the view of a split that
applies it (docs/your_data.md#incomplete).

Two forms: ``data.missing_fraction`` — that share of the samples is incomplete, each
lacking a random non-empty proper subset of its modalities (so it keeps between 1 and
m − 1 of them, every such subset equally likely) — or ``data.missing_rates`` — each
modality is missing independently at its rate, and a sample left with none keeps one,
drawn uniformly. A sample never ends up with nothing. Only the training split (and its
unaugmented copy that MAR mines) is made incomplete; val and test stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from mmanet.config import DataConfig
from mmanet.data.base import AVAILABLE_KEY, DataBundle, Sample, _Batched, availability
from mmanet.modality import all_masks


def missing_at_random(
    count: int,
    num_modalities: int,
    fraction: float = 0.0,
    rates: Sequence[float] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """(count, m) bool: which modalities each of ``count`` samples keeps."""
    generator = torch.Generator().manual_seed(seed)
    table = torch.ones(count, num_modalities, dtype=torch.bool)
    if rates is not None:
        if len(rates) != num_modalities:
            raise ValueError(f"{len(rates)} missing rates for {num_modalities} modalities")
        draws = torch.rand(count, num_modalities, generator=generator)
        table = draws >= torch.tensor(rates, dtype=draws.dtype)
        nothing = (~table.any(dim=1)).nonzero().flatten()
        keep = torch.randint(num_modalities, (len(nothing),), generator=generator)
        table[nothing, keep] = True
        return table
    incomplete = torch.randperm(count, generator=generator)[: round(fraction * count)]
    partial = torch.tensor(all_masks(num_modalities)[:-1], dtype=torch.bool)  # not the full one
    if len(incomplete) and len(partial):
        choice = torch.randint(len(partial), (len(incomplete),), generator=generator)
        table[incomplete] = partial[choice]
    return table


class WithMissing(Dataset):
    """A split whose samples keep only the modalities of ``availability`` ((n, m) bool,
    the bundle's modality order): the others are zeros, and every sample carries
    ``inputs[AVAILABLE_KEY]``."""

    def __init__(
        self, dataset: Dataset, modalities: Sequence[str], availability: torch.Tensor
    ) -> None:
        self.dataset, self.modalities = dataset, list(modalities)
        self.availability = availability

    def __len__(self) -> int:
        return len(self.availability)

    def __getitem__(self, index: int) -> Sample:
        inputs, label = self.dataset[index]
        has = self.availability[index]
        inputs = {
            name: inputs[name] if has[i] else torch.zeros_like(inputs[name])
            for i, name in enumerate(self.modalities)
        }
        inputs[AVAILABLE_KEY] = has.float()
        return inputs, label

    def __getitems__(self, indices: Sequence[int]) -> list:
        batched = getattr(self.dataset, "__getitems__", None)
        if batched is None:
            return [self[i] for i in indices]
        (batch,) = batched(indices)
        has = self.availability[torch.as_tensor(indices)].float()  # (b, m)
        views = {
            name: batch.views[name] * has[:, i].view(-1, *[1] * (batch.views[name].ndim - 1))
            for i, name in enumerate(self.modalities)
        }
        return [_Batched({**views, AVAILABLE_KEY: has}, batch.labels)]


def apply_missing(bundle: DataBundle, cfg: DataConfig) -> DataBundle:
    """``bundle`` with its training split made incomplete as ``cfg`` asks (unchanged when
    it asks for nothing). What a sample already lacked stays missing."""
    if cfg.missing_fraction == 0 and cfg.missing_rates is None:
        return bundle
    m = len(bundle.modalities)
    try:
        drawn = missing_at_random(
            len(bundle.train), m, cfg.missing_fraction, cfg.missing_rates, cfg.missing_seed
        )
    except ValueError as err:
        from mmanet.errors import ConfigError

        raise ConfigError(f"data.missing_rates: {err}") from None
    table = drawn & availability(bundle.train, m)
    bundle.train = WithMissing(bundle.train, bundle.modalities, table)
    if bundle.train_eval is not None:
        bundle.train_eval = WithMissing(bundle.train_eval, bundle.modalities, table)
    return bundle


__all__ = ["WithMissing", "apply_missing", "missing_at_random"]
