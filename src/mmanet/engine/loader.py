"""The DataLoader every part of the engine uses."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mmanet.data import collate


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    sampler: Sampler | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        generator=generator,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,  # page-locked batches: copies to a GPU that do not wait
        persistent_workers=num_workers > 0,
    )
