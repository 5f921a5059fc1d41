"""What every dataset builder returns, an in-memory multimodal dataset, and how a dataset reads
one input file for a trained network (:class:`InputReader`)."""

from __future__ import annotations

import stat
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

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


class DroppedFile(NamedTuple):
    """A file that a sample lacks in effect: it is read as a missing modality (e.g. it holds
    NaN or inf, with ``data.nonfinite=missing``)."""

    where: str  # e.g. "data/m.csv: line 7"
    modality: str
    path: Path


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
    # files read as a missing modality of their sample (they hold NaN or inf, with
    # data.nonfinite=missing), in manifest order; the run's summary counts them
    nonfinite_files: list[DroppedFile] = field(default_factory=list)
    # image modalities: per modality the per-channel affine ((scale, ...), (offset, ...))
    # that maps an input tensor to its [0, 1] image, x01 = x * scale + offset (the image
    # corruptions of mmanet.corruptions need it); a modality not listed is not an image
    pixel_ranges: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = field(
        default_factory=dict
    )

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


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file ``path``, the same for every name of one file (``a.npy``,
    ``./a.npy``, ``../data/a.npy``, a link to it); None when ``path`` is not a file."""
    try:
        info = path.stat()
    except (OSError, ValueError):
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None


class SharedFile(NamedTuple):
    """Two modalities of one sample given the same file, as written for each."""

    first: str
    second: str
    first_path: Path
    second_path: Path

    def __str__(self) -> str:
        paths = (
            str(self.first_path)
            if self.first_path == self.second_path
            else f"{self.first_path} and {self.second_path}"
        )
        return f"modalities {self.first!r} and {self.second!r} name the same file {paths}"


def shared_file(files: Mapping[str, Path | None]) -> SharedFile | None:
    """The first two modalities of ``files`` (one sample's) that name one file, compared by
    :func:`file_identity`; None when each has its own (absent files are skipped)."""
    owners: dict[tuple[int, int], tuple[str, Path]] = {}
    for name, path in files.items():
        identity = None if path is None else file_identity(path)
        if identity is None or path is None:
            continue
        if identity in owners:
            first, first_path = owners[identity]
            return SharedFile(first, name, first_path, path)
        owners[identity] = (name, path)
    return None


def not_a_file(path: Path) -> str:
    """Why ``path``, which is not a file, cannot be read: it is a folder, or not there."""
    return f"{path} is a folder, not a file" if path.is_dir() else f"file not found: {path}"


def read_array(path: Path) -> torch.Tensor:
    """A ``.npy`` file or an image as a float tensor; images become (c, h, w) in [0, 1].
    Anything that cannot be read so (an empty or truncated file, an object or complex array,
    a folder) is a one-line DataError naming ``path``."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(not_a_file(path))
    try:
        if path.suffix.lower() == ".npy":
            with path.open("rb") as handle:
                npy_header(path, handle)  # the dtype checked before any data is read
                handle.seek(0)
                array = np.lib.format.read_array(handle, allow_pickle=False)
            return torch.from_numpy(array.astype(np.float32))
        if path.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(path) as img:
                img.load()
                arr = np.asarray(img, dtype=np.float32) / 255.0
            arr = arr[:, :, None] if arr.ndim == 2 else arr
            return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"cannot read {path}: {unreadable(path)}") from None
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read {path}: {unreadable(path, err)}") from None
    raise DataError(f"unsupported file type {path.suffix!r}: {path} (use .npy or an image)")


def unreadable(path: Path, err: Exception | None = None) -> str:
    """Why ``path`` could not be decoded: empty, else ``err`` (None: not an image)."""
    if path.stat().st_size == 0:
        return "the file is empty (0 bytes)"
    if err is None:
        return "not an image file that can be decoded"
    return " ".join(str(err).split()) or type(err).__name__


def npy_header(path: Path, handle: BinaryIO) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype from the header of the ``.npy`` file open as ``handle``; a dtype
    that is not real numbers is a DataError naming ``path``."""
    try:
        version = np.lib.format.read_magic(handle)
    except ValueError:  # numpy's message quotes the first bytes, e.g. a pickle's
        reason = "not a .npy file (it does not start with the header np.save writes)"
        raise ValueError(reason) from None
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    check_dtype(path, dtype)
    return tuple(shape), dtype


def check_dtype(path: Path, dtype: np.dtype) -> None:
    """Refuse a ``.npy`` dtype that is not real numbers (objects are never unpickled)."""
    if dtype.kind == "c":
        raise DataError(
            f"cannot read {path}: dtype {dtype} holds complex numbers; save real values"
        )
    if dtype.kind not in "biuf":
        raise DataError(
            f"cannot read {path}: dtype {dtype} is not a number type "
            "(object arrays are never unpickled)"
        )


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
            shape, dtype = npy_header(path, handle)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"cannot read {path}: {unreadable(path)}") from None
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read {path}: {unreadable(path, err)}") from None
    return FileHeader(shape, dtype.kind == "f")


class InputReader(ABC):
    """How a dataset turns one file into a trained network's per-sample input of a modality,
    exactly as its evaluation split preprocesses that file. Made from the run's
    ``DataConfig`` alone (``mmanet.data.input_reader``): the data need not be present."""

    def read(self, path: Path, modality: str, shape: Sequence[int]) -> torch.Tensor:
        """``path`` as a float32 tensor of ``shape``; a ``.npy`` file is taken as already
        preprocessed. A missing file or another shape is a one-line DataError naming it."""
        if not path.is_file():
            problem = "a folder, not a file" if path.is_dir() else "file not found"
            raise DataError(f"{path}: {problem} (given for modality {modality!r})")
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
