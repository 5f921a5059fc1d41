"""What every dataset builder returns, and an in-memory multimodal dataset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from mmanet.errors import DataError

Sample = tuple[dict[str, torch.Tensor], int]


@dataclass
class DataBundle:
    """The splits of a dataset and what a model builder needs to know about it."""

    train: Dataset
    val: Dataset
    test: Dataset
    modalities: list[str]
    input_shapes: dict[str, tuple[int, ...]]  # per-sample shape of each modality
    class_names: list[str]
    train_eval: Dataset | None = None  # the training split without augmentation (MAR mining)
    skipped: list[str] = field(default_factory=list)  # "path: reason" of dropped samples
    task: str = "classification"  # or "segmentation": labels are (h, w) maps
    ignore_index: int | None = None  # label value that the loss and the metrics skip

    def __post_init__(self) -> None:
        for index, name in enumerate(self.modalities):
            if name in self.modalities[:index]:
                raise DataError(f"data.modalities lists {name!r} twice: {self.modalities}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Dataset:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; use train, val or test")
        return getattr(self, name)


class TensorMultimodalDataset(Dataset):
    """Samples ``({modality: tensor}, label)`` from per-modality tensors held in memory."""

    def __init__(self, views: Mapping[str, torch.Tensor], labels: torch.Tensor) -> None:
        sizes = {name: len(v) for name, v in views.items()}
        if any(size != len(labels) for size in sizes.values()):
            raise DataError(f"modalities and labels differ in length: {sizes}, {len(labels)}")
        self.views = dict(views)
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Sample:
        label = self.labels[index]  # a class index, or a label map for segmentation
        return {name: v[index] for name, v in self.views.items()}, (
            int(label) if label.ndim == 0 else label
        )

    def __getitems__(self, indices: Sequence[int]) -> list[Sample]:
        # DataLoader batched fetch: one gather per modality instead of one per sample.
        idx = torch.as_tensor(indices)
        return [_Batched({name: v[idx] for name, v in self.views.items()}, self.labels[idx])]


INDEX_KEY = "__index__"  # the sample's position in its split, added by IndexedDataset


class IndexedDataset(Dataset):
    """A split whose samples also carry their index (``inputs[INDEX_KEY]``), so a
    per-sample cache (the teacher's outputs) can be looked up for a shuffled batch."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Sample:
        inputs, label = self.dataset[index]
        return {**inputs, INDEX_KEY: torch.tensor(index)}, label

    def __getitems__(self, indices: Sequence[int]) -> list:
        batched = getattr(self.dataset, "__getitems__", None)
        if batched is None:
            return [self[i] for i in indices]
        (batch,) = batched(indices)
        return [_Batched({**batch.views, INDEX_KEY: torch.as_tensor(indices)}, batch.labels)]


@dataclass
class _Batched:
    views: dict[str, torch.Tensor]
    labels: torch.Tensor


def collate(samples: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Stack ``({modality: tensor}, label)`` samples (class indices or label-map tensors);
    pass through pre-batched ones."""
    if len(samples) == 1 and isinstance(samples[0], _Batched):
        return samples[0].views, samples[0].labels
    names = samples[0][0].keys()
    inputs = {name: torch.stack([s[0][name] for s in samples]) for name in names}
    if isinstance(samples[0][1], torch.Tensor) and samples[0][1].ndim > 0:
        return inputs, torch.stack([s[1] for s in samples]).long()  # label maps: (b, h, w)
    labels = torch.as_tensor([int(s[1]) for s in samples], dtype=torch.long)
    return inputs, labels


def stratified_split(
    labels: Sequence[int], fractions: tuple[float, float, float], seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Indices of train / val / test with the same class proportions, from a seeded shuffle."""
    import numpy as np

    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    splits: tuple[list[int], list[int], list[int]] = ([], [], [])
    for cls in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == cls)
        rng.shuffle(idx)
        n_train = round(fractions[0] * len(idx))
        n_val = round(fractions[1] * len(idx))
        splits[0].extend(idx[:n_train].tolist())
        splits[1].extend(idx[n_train : n_train + n_val].tolist())
        splits[2].extend(idx[n_train + n_val :].tolist())
    return tuple(sorted(s) for s in splits)  # type: ignore[return-value]
