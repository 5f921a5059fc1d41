"""What the RGB-D segmentation datasets (NYUv2, Cityscapes, the rendered tabletop scenes) share:
records, PNG readers, transforms, the dataset, class weights, the settings and the input
reader.

Modalities: "rgb" as (3, h, w) float32 normalised with the ImageNet mean / std, and "depth" as
(1, h, w) float32 (depth - depth_mean) / depth_std with invalid (0) pixels kept at 0 (as ESANet
does); each dataset reads its depth file into (h, w) float32 in its own unit (millimetres for
NYUv2, metres for Cityscapes) with 0 = no measurement. Targets are (h, w) int64 maps with void
as ``IGNORE_INDEX`` = 255, which the loss and the metrics ignore.

Transforms (albumentations; one draw per sample for rgb, depth and label, seeded from torch's
generator as in :mod:`mmanet.data.transforms`). Depth and label are albumentations "mask"
targets, so they are resized with nearest-neighbour interpolation and never colour-jittered;
rgb is resized bilinearly. Training (``augment=True``): the image as read is scaled by a
random factor in [``min_scale``, ``max_scale``] -> random crop of ``size`` (or, where the
scaled image is not larger than ``size`` in both sides, a resize to ``size``) -> horizontal
flip (p = 0.5) -> colour jitter on rgb only; this is ESANet's recipe (``preprocessing.py``:
RandomRescale, RandomCrop, flip, HSV jitter; rescale 1.0-1.4 by default, 0.5-2.0 for
Cityscapes, whose images are 1024 x 2048).
Evaluation: resize to ``size``. :class:`RGBDReader` applies the evaluation transform to one
file, so a prediction's input is exactly what the test split gives for that file.

Bad input fails with a one-line :class:`DataError` naming the file: an id in a list without
its files (when the data is built); an unreadable image, a depth file that is not 16-bit, rgb /
depth / label of different sizes, or a label value outside the classes (when the sample is
loaded).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from mmanet.config import DataConfig
from mmanet.data.base import AVAILABLE_KEY, DataBundle, DataError, InputReader
from mmanet.data.transforms import _albumentations
from mmanet.errors import ConfigError

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RGBD_MODALITIES = ("rgb", "depth")

SegSample = tuple[dict[str, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RGBDRecord:
    """One sample on disk: its rgb, depth and label files, and where it was listed; None
    for a modality the sample lacks (``data.<dataset>.missing_files=missing``)."""

    rgb: Path | None
    depth: Path | None
    label: Path
    origin: str  # e.g. "<root>/train.txt, line 3"


def read_png(path: Path, dtype: type, channels: int) -> np.ndarray:
    """A PNG decoded unchanged, checked to be of ``dtype`` with ``channels`` channels
    (colour as RGB)."""
    import cv2

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise DataError(f"{path}: not an image file that can be decoded")
    found = 1 if pixels.ndim == 2 else pixels.shape[2]
    if pixels.dtype != dtype or found != channels:
        raise DataError(
            f"{path}: {found}-channel {pixels.dtype} image; expected {channels}-channel "
            f"{np.dtype(dtype).name}"
        )
    if channels == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    return pixels


def read_depth_mm(path: Path) -> np.ndarray:
    """A 16-bit depth PNG in millimetres as (h, w) float32; 0 = no measurement."""
    return read_png(path, np.uint16, 1).astype(np.float32)


def read_label_map(path: Path, num_classes: int) -> np.ndarray:
    """An 8-bit label PNG (0 = void, 1..num_classes) as classes 0..num_classes-1, void 255."""
    raw = read_png(path, np.uint8, 1)
    if raw.max(initial=0) > num_classes:
        raise DataError(f"{path}: label value {int(raw.max())} outside 0 (void)..{num_classes}")
    return np.where(raw == 0, IGNORE_INDEX, raw.astype(np.int64) - 1).astype(np.uint8)


class SegmentationTransform:
    """One albumentations pipeline for rgb (image), depth and label (masks), then tensors."""

    def __init__(
        self,
        steps: Sequence,
        random_draw: bool,
        depth_mean: float,
        depth_std: float,
    ) -> None:
        albumentations = _albumentations()
        self.random_draw = random_draw
        self.depth_mean, self.depth_std = depth_mean, depth_std
        self.compose = albumentations.Compose(
            list(steps), additional_targets={"depth": "mask", "label": "mask"}
        )

    def __call__(
        self, rgb: np.ndarray, depth: np.ndarray, label: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h, w, 3) uint8, (h, w) float32, (h, w) uint8 -> rgb (3, H, W), depth (1, H, W),
        label (H, W) int64."""
        if self.random_draw:
            seed = int(torch.randint(2**31 - 1, ()))  # see mmanet.data.transforms
            self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = self.compose(image=rgb, depth=depth, label=label)
        mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
        std = np.asarray(IMAGENET_STD, dtype=np.float32)
        rgb_chw = ((out["image"].astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)
        depth_hw = out["depth"].astype(np.float32)
        depth_norm = np.where(depth_hw > 0, (depth_hw - self.depth_mean) / self.depth_std, 0.0)
        return (
            torch.from_numpy(np.ascontiguousarray(rgb_chw)),
            torch.from_numpy(depth_norm.astype(np.float32)[None]),
            torch.from_numpy(out["label"].astype(np.int64)),
        )


def _resize_if_small(
    array: np.ndarray, height: int, width: int, interpolation: int, **_: Any
) -> np.ndarray:
    """``array`` resized to (height, width) when it is not larger in both sides (ESANet's
    RandomCrop on a small image), else unchanged."""
    import cv2

    if array.shape[0] <= height or array.shape[1] <= width:
        return cv2.resize(array, (width, height), interpolation=interpolation)
    return array


def segmentation_transforms(
    size: tuple[int, int],
    depth_mean: float,
    depth_std: float,
    augment: bool = True,
    max_scale: float | tuple[float, float] = 1.4,
    color_jitter: float = 0.2,
) -> tuple[SegmentationTransform, SegmentationTransform]:
    """The (training, evaluation) transforms; training is the evaluation one without
    ``augment``. ``max_scale``: the random scale's range, (min_scale, max_scale), or its
    upper end with 1 as the lower (the loaders pass :func:`segmentation_options`' pair)."""
    height, width = size
    low, high = max_scale if isinstance(max_scale, tuple) else (1.0, max_scale)
    if height < 1 or width < 1 or not 0 < low <= high:
        raise DataError(
            f"need size >= 1 and 0 < min_scale <= max_scale, got size={size}, scale=[{low}, {high}]"
        )
    albumentations = _albumentations()
    import cv2

    resize = albumentations.Resize(
        height, width, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST
    )
    evaluation = SegmentationTransform([resize], False, depth_mean, depth_std)
    if not augment:
        return evaluation, evaluation
    jitter = (1 - color_jitter, 1 + color_jitter)
    fit = albumentations.Lambda(
        image=partial(_resize_if_small, height=height, width=width, interpolation=cv2.INTER_LINEAR),
        mask=partial(_resize_if_small, height=height, width=width, interpolation=cv2.INTER_NEAREST),
    )
    steps = [
        albumentations.RandomScale(
            scale_limit=(low - 1.0, high - 1.0),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            p=1.0,
        ),
        fit,
        albumentations.RandomCrop(height, width),
        albumentations.HorizontalFlip(p=0.5),
        albumentations.ColorJitter(
            brightness=jitter, contrast=jitter, saturation=jitter, hue=(-0.02, 0.02), p=1.0
        ),
    ]
    return SegmentationTransform(steps, True, depth_mean, depth_std), evaluation


class RGBDSegmentationDataset(Dataset):
    """Samples ``({"rgb": (3, h, w), "depth": (1, h, w)}, (h, w) int64 label map)``."""

    def __init__(
        self,
        records: list[RGBDRecord],
        transform: SegmentationTransform,
        read_depth: Callable[[Path], np.ndarray],  # -> (h, w) float32, 0 = invalid
        read_label: Callable[[Path], np.ndarray],  # -> (h, w) uint8 classes, 255 = void
        modalities: Sequence[str],
    ) -> None:
        self.records, self.transform = records, transform
        self.read_depth, self.read_label = read_depth, read_label
        self.modalities = list(modalities)
        has = [(r.rgb is not None, r.depth is not None) for r in records]
        table = torch.tensor(has, dtype=torch.bool).reshape(len(records), 2)
        columns = [RGBD_MODALITIES.index(name) for name in self.modalities]
        # (n, m) in the modality order; None when every sample has every modality
        self.availability = None if bool(table[:, columns].all()) else table[:, columns]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> SegSample:
        record = self.records[index]
        label = self.read_label(record.label)
        rgb = None if record.rgb is None else read_png(record.rgb, np.uint8, 3)
        depth = None if record.depth is None else self.read_depth(record.depth)
        # sizes are checked against the rgb image, or the label map of a sample without one
        reference, size = (record.rgb, rgb.shape[:2]) if rgb is not None else (None, label.shape)
        what = "the rgb image" if rgb is not None else "the label map"
        for path, array in ((record.depth, depth), (record.label, label)):
            if array is not None and array.shape[:2] != size:
                shape = array.shape
                raise DataError(
                    f"{path}: size {shape[1]}x{shape[0]} differs from {what} "
                    f"{reference or record.label} ({size[1]}x{size[0]})"
                )
        rgb = np.zeros((*size, 3), np.uint8) if rgb is None else rgb
        depth = np.zeros(size, np.float32) if depth is None else depth
        rgb_t, depth_t, label_t = self.transform(rgb, depth, label)
        views = {"rgb": rgb_t, "depth": depth_t}
        inputs = {name: views[name] for name in self.modalities}
        if self.availability is not None:  # a sample lacking a modality: zeros, and which
            has = self.availability[index]
            for name, present in zip(self.modalities, has.tolist(), strict=True):
                if not present:
                    inputs[name] = torch.zeros_like(inputs[name])
            inputs[AVAILABLE_KEY] = has.float()
        return inputs, label_t


def select_rgbd(modalities: Sequence[str] | None, dataset: str) -> list[str]:
    """The requested modalities (default: rgb and depth), checked."""
    if modalities is None:
        return list(RGBD_MODALITIES)
    unknown = [name for name in modalities if name not in RGBD_MODALITIES]
    if unknown or not modalities:
        raise DataError(f"{dataset}: modalities {list(modalities)}; use a subset of rgb, depth")
    return list(modalities)


def read_ids(list_path: Path) -> list[tuple[str, str]]:
    """``(sample id, "file, line n")`` for each non-empty line of a list file."""
    if not list_path.is_file():
        raise DataError(f"list file not found: {list_path}")
    return [
        (line.strip(), f"{list_path}, line {number}")
        for number, line in enumerate(list_path.read_text().splitlines(), start=1)
        if line.strip()
    ]


def check_records(
    records: list[RGBDRecord], dataset: str, missing_files: str = "error"
) -> list[RGBDRecord]:
    """The records, after checking each listed sample has its files. With
    ``missing_files="missing"`` an rgb or depth file that is not there makes that modality
    missing for the sample (a sample needs its label map and at least one of them)."""
    if not records:
        raise DataError(f"{dataset} is empty")
    checked = []
    for record in records:
        if not record.label.is_file():
            raise DataError(f"{record.origin}: file not found: {record.label}")
        found = {}
        for name in RGBD_MODALITIES:
            path = getattr(record, name)
            if not path.is_file() and missing_files != "missing":
                raise DataError(f"{record.origin}: file not found: {path}")
            found[name] = path if path.is_file() else None
        if not any(found.values()):
            raise DataError(
                f"{record.origin}: no modality: neither {record.rgb} nor {record.depth} exists"
            )
        checked.append(RGBDRecord(found["rgb"], found["depth"], record.label, record.origin))
    return checked


def segmentation_bundle(
    splits: dict[str, list[RGBDRecord]],
    transforms: tuple[SegmentationTransform, SegmentationTransform],
    read_depth: Callable[[Path], np.ndarray],
    read_label: Callable[[Path], np.ndarray],
    modalities: list[str],
    size: tuple[int, int],
    class_names: list[str],
) -> DataBundle:
    """Train / val / test (and train without augmentation) as a :class:`DataBundle`."""
    train_transform, eval_transform = transforms

    def dataset(split: str, transform: SegmentationTransform) -> RGBDSegmentationDataset:
        return RGBDSegmentationDataset(splits[split], transform, read_depth, read_label, modalities)

    height, width = size
    shapes = {"rgb": (3, height, width), "depth": (1, height, width)}
    return DataBundle(
        train=dataset("train", train_transform),
        val=dataset("val", eval_transform),
        test=dataset("test", eval_transform),
        modalities=list(modalities),
        input_shapes={name: shapes[name] for name in modalities},
        class_names=list(class_names),
        train_eval=dataset("train", eval_transform),
        task="segmentation",
        ignore_index=IGNORE_INDEX,
        # rgb is (x/255 - mean) / std per channel: x01 = x * std + mean (depth: no image)
        pixel_ranges={"rgb": (IMAGENET_STD, IMAGENET_MEAN)} if "rgb" in modalities else {},
    )


def median_frequency_weights(
    source: Dataset | Sequence[int] | np.ndarray | torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Median-frequency class weights (Eigen & Fergus, ICCV 2015): median(f) / f_c.

    From a dataset of ``(inputs, label map)`` samples, f_c = pixels of class c / pixels of
    the images in which c occurs (void ignored), as ESANet computes it. From ``num_classes``
    pixel counts, f_c = count_c / all pixels (every class taken as present in every image).
    The median is over the classes that occur; a class that never occurs gets weight 0.
    """
    if isinstance(source, Dataset):
        class_pixels = np.zeros(num_classes, dtype=np.float64)
        image_pixels = np.zeros(num_classes, dtype=np.float64)
        for index in range(len(source)):  # type: ignore[arg-type]
            label = np.asarray(source[index][1]).reshape(-1)
            counts = np.bincount(label[label != IGNORE_INDEX], minlength=num_classes)
            class_pixels += counts[:num_classes]
            image_pixels += np.where(counts[:num_classes] > 0, label.size, 0)
    else:
        class_pixels = np.asarray(source, dtype=np.float64)
        if class_pixels.shape != (num_classes,):
            raise ValueError(f"expected {num_classes} class counts, got {class_pixels.shape}")
        image_pixels = np.full(num_classes, class_pixels.sum())
    present = class_pixels > 0
    frequency = np.divide(class_pixels, image_pixels, out=np.zeros(num_classes), where=present)
    weights = np.zeros(num_classes)
    weights[present] = np.median(frequency[present]) / frequency[present]
    return torch.from_numpy(weights).float()


@dataclass
class RGBDSettings:
    """An RGB-D dataset's input size, random scale, depth statistics and missing files.
    Each RGB-D dataset has its own subclass (its ``KEY``)."""

    KEY: ClassVar[str] = "data.<RGB-D dataset>"  # where a config holds them, for messages

    size: list[int] = field(default_factory=lambda: [480, 640])  # (height, width)
    # training: the image as read is scaled by a random factor in [min_scale, max_scale],
    # then cropped to size (resized to it when not larger): ESANet's augmentation
    min_scale: float = 1.0
    max_scale: float = 1.4
    depth_mean: float | None = None  # None: the dataset's published statistics
    depth_std: float | None = None
    # a listed sample's rgb or depth file that is not there is an "error", or that
    # modality is "missing" for it
    missing_files: Literal["error", "missing"] = "error"

    def __post_init__(self) -> None:
        key = self.KEY
        if len(self.size) != 2 or min(self.size) < 1:
            raise ConfigError(f"{key}.size must be [height, width], both >= 1, got {self.size}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ConfigError(
                f"{key}.min_scale must be > 0 and <= {key}.max_scale, got "
                f"[{self.min_scale}, {self.max_scale}]"
            )
        if self.depth_std is not None and self.depth_std <= 0:
            raise ConfigError(f"{key}.depth_std must be > 0, got {self.depth_std}")


def segmentation_options(
    cfg: DataConfig, own: RGBDSettings, depth_mean: float, depth_std: float
) -> dict[str, Any]:
    """A loader's size, augmentation and depth-statistics arguments from ``cfg`` and the
    dataset's own settings ``own``; the depth statistics are ``own``'s, else the dataset's
    ``depth_mean`` / ``depth_std``."""
    return {
        "size": (own.size[0], own.size[1]),
        "augment": cfg.augment,
        # the random scale's range; under the loaders' max_scale argument, which passes it on
        "max_scale": (own.min_scale, own.max_scale),
        "depth_mean": depth_mean if own.depth_mean is None else own.depth_mean,
        "depth_std": depth_std if own.depth_std is None else own.depth_std,
        "missing_files": own.missing_files,
    }


class RGBDReader(InputReader):
    """An rgb or depth file through a dataset's depth reader and evaluation transform."""

    def __init__(
        self,
        size: tuple[int, int],
        depth_mean: float,
        depth_std: float,
        read_depth: Callable[[Path], np.ndarray],  # -> (h, w) float32, 0 = invalid
        depth_file: str,  # what the depth file holds and how it becomes depth, for describe
    ) -> None:
        self.size, self.depth_mean, self.depth_std = size, depth_mean, depth_std
        self.read_depth, self.depth_file = read_depth, depth_file

    @classmethod
    def from_config(
        cls,
        cfg: DataConfig,
        own: RGBDSettings,
        depth_mean: float,
        depth_std: float,
        read_depth: Callable[[Path], np.ndarray],
        depth_file: str,
    ) -> RGBDReader:
        """The reader of a run on ``cfg`` with the dataset's settings ``own``, whose
        dataset's default statistics are given."""
        options = segmentation_options(cfg, own, depth_mean, depth_std)
        mean, std = options["depth_mean"], options["depth_std"]
        return cls(options["size"], mean, std, read_depth, depth_file)

    @cached_property
    def transform(self) -> SegmentationTransform:
        _, evaluation = segmentation_transforms(
            self.size, self.depth_mean, self.depth_std, augment=False
        )
        return evaluation

    def read_file(self, path: Path, modality: str) -> torch.Tensor:
        if modality == "rgb":
            rgb = read_png(path, np.uint8, 3)
            depth = np.zeros(rgb.shape[:2], dtype=np.float32)
        elif modality == "depth":
            depth = self.read_depth(path)
            rgb = np.zeros((*depth.shape, 3), dtype=np.uint8)
        else:
            raise DataError(f"{path}: RGB-D data has no modality {modality!r}; use rgb or depth")
        rgb_t, depth_t, _ = self.transform(rgb, depth, np.zeros(depth.shape, dtype=np.uint8))
        return rgb_t if modality == "rgb" else depth_t

    def describe(self, modality: str) -> str:
        height, width = self.size
        if modality == "rgb":
            return (
                f"8-bit colour image resized (bilinear) to {height}×{width}, (x/255 − mean)/std "
                f"per channel with the ImageNet mean {IMAGENET_MEAN} and std {IMAGENET_STD}, "
                "3 channels"
            )
        if modality == "depth":
            return (
                f"{self.depth_file}, resized (nearest) to {height}×{width}, "
                f"(depth − {self.depth_mean!r})/{self.depth_std!r} with 0 (no measurement) "
                "kept at 0, 1 channel"
            )
        raise DataError(f"RGB-D data has no modality {modality!r}; use rgb or depth")
