"""What every dataset builder returns, an in-memory multimodal dataset, and how a dataset reads
one input file for a trained network (:class:`InputReader`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mmanet.errors import DataError

Sample = tuple[dict[str, torch.Tensor], int]

# Incomplete samples. A sample that lacks some of the bundle's modalities has zeros of the
# modality's input shape in their place and carries ``inputs[AVAILABLE_KEY]``: an (m,)
# float 0/1 tensor in the bundle's modality order (1 = the modality is there). A dataset
# with any incomplete sample gives every sample the key; without it, every sample is
# complete. A dataset that knows what each sample has without loading it (a manifest's
# empty cells, a seeded missing-at-random table) exposes ``availability``: an (n, m) bool
# tensor, which filters the complete samples (the teacher's, MAR's mining) before loading.
AVAILABLE_KEY = "__available__"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


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

    def availability(self, dataset: Dataset) -> torch.Tensor:
        """(n, m) bool: which modalities each sample of ``dataset`` (a split) has."""
        return availability(dataset, len(self.modalities))


def base_dataset(dataset: Dataset) -> Dataset:
    """The dataset under any subsets and views of it (``.dataset`` attributes)."""
    while hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset


def availability(dataset: Dataset, num_modalities: int) -> torch.Tensor:
    """(n, m) bool: the dataset's ``availability`` table, else every sample complete.
    A :class:`torch.utils.data.Subset` gives its rows of its dataset's table."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        return availability(dataset.dataset, num_modalities)[list(dataset.indices)]
    table = getattr(dataset, "availability", None)
    if table is None:
        return torch.ones(len(dataset), num_modalities, dtype=torch.bool)  # type: ignore[arg-type]
    return torch.as_tensor(table, dtype=torch.bool)


def read_array(path: Path) -> torch.Tensor:
    """A ``.npy`` file or an image as a float tensor; images become (c, h, w) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        if path.suffix.lower() == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        if path.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(path) as img:
                img.load()
                arr = np.asarray(img, dtype=np.float32) / 255.0
            arr = arr[:, :, None] if arr.ndim == 2 else arr
            return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    except UnidentifiedImageError:
        raise DataError(f"cannot read {path}: not an image file that can be decoded") from None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    raise DataError(f"unsupported file type {path.suffix!r}: {path} (use .npy or an image)")


def count_nonfinite(tensor: torch.Tensor) -> int:
    """How many values of ``tensor`` are NaN or infinite."""
    return int((~torch.isfinite(tensor)).sum())


@dataclass(frozen=True)
class FileHeader:
    """What a file's header says: the shape :func:`read_array` gives it, and whether its
    values can be NaN or infinite (floating-point ones)."""

    shape: tuple[int, ...]
    floating: bool


def read_header(path: Path) -> FileHeader:
    """``path``'s :class:`FileHeader` from the ``.npy`` header or the image header alone:
    nothing is decoded, so every file of a large manifest can be checked up front."""
    from PIL import Image, UnidentifiedImageError

    suffix = path.suffix.lower()
    if suffix != ".npy" and suffix not in IMAGE_SUFFIXES:
        raise DataError(f"unsupported file type {path.suffix!r}: {path} (use .npy or an image)")
    try:
        if suffix != ".npy":
            with Image.open(path) as img:
                width, height = img.size
                return FileHeader((len(img.getbands()), height, width), img.mode == "F")
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    except UnidentifiedImageError:
        raise DataError(f"cannot read {path}: not an image file that can be decoded") from None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if dtype.kind not in "biufc":
        raise DataError(
            f"cannot read {path}: dtype {dtype} is not a number type "
            "(object arrays are never unpickled)"
        )
    return FileHeader(tuple(shape), dtype.kind in "fc")


class InputReader(ABC):
    """How a dataset turns one file into a trained network's per-sample input of a modality,
    exactly as its evaluation split preprocesses that file. Made from the run's
    ``DataConfig`` alone (``mmanet.data.input_reader``): the data need not be present."""

    def read(self, path: Path, modality: str, shape: Sequence[int]) -> torch.Tensor:
        """``path`` as a float32 tensor of ``shape``; a ``.npy`` file is taken as already
        preprocessed. A missing file or another shape is a one-line DataError naming it."""
        if not path.is_file():
            raise DataError(f"{path}: file not found (given for modality {modality!r})")
        if path.suffix.lower() == ".npy":
            tensor = read_array(path)
        else:
            tensor = self.read_file(path, modality)
        if tuple(tensor.shape) != tuple(shape):
            raise DataError(
                f"{path}: {modality} input of shape {tuple(tensor.shape)}, "
                f"the network needs {tuple(shape)}"
            )
        return tensor.float()

    @abstractmethod
    def read_file(self, path: Path, modality: str) -> torch.Tensor:
        """A file other than ``.npy``, preprocessed as the evaluation split does."""

    @abstractmethod
    def describe(self, modality: str) -> str:
        """What a ``modality`` file holds and how it is preprocessed, in one line."""


class ArrayReader(InputReader):
    """The default reader: arrays as given, images as the manifest loader reads them."""

    def read_file(self, path: Path, modality: str) -> torch.Tensor:
        return read_array(path)

    def describe(self, modality: str) -> str:
        return ".npy array as given, or an 8-bit image as (c, h, w) float32 x/255 in [0, 1]"


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
