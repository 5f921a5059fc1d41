"""What the RGB-D segmentation datasets (NYUv2, Cityscapes, the rendered tabletop scenes) share:
records, PNG readers, transforms, the dataset, class weights, the config options and the input
reader.

Modalities: "rgb" as (3, h, w) float32 normalised with the ImageNet mean / std, and "depth" as
(1, h, w) float32 (depth - depth_mean) / depth_std with invalid (0) pixels kept at 0 (as ESANet
does); each dataset reads its depth file into (h, w) float32 in its own unit (millimetres for
NYUv2, metres for Cityscapes) with 0 = no measurement. Targets are (h, w) int64 maps with void
as ``IGNORE_INDEX`` = 255, which the loss and the metrics ignore.

Transforms (albumentations; one draw per sample for rgb, depth and label, seeded from torch's
generator as in :mod:`mmanet.data.transforms`). Depth and label are albumentations "mask"
targets, so they are resized with nearest-neighbour interpolation and never colour-jittered;
rgb is resized bilinearly. Training (``augment=True``): resize to ``size`` -> random scale by a
factor in [1, ``max_scale``] -> random crop of ``size`` -> horizontal flip (p = 0.5) -> colour
jitter on rgb only; this is ESANet's recipe (rescale 1.0-1.4, crop, flip, HSV jitter).
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
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, DataError, InputReader
from mmanet.data.transforms import _albumentations

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RGBD_MODALITIES = ("rgb", "depth")

SegSample = tuple[dict[str, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RGBDRecord:
    """One sample on disk: its rgb, depth and label files, and where it was listed."""

    rgb: Path
    depth: Path
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


def segmentation_transforms(
    size: tuple[int, int],
    depth_mean: float,
    depth_std: float,
    augment: bool = True,
    max_scale: float = 1.4,
    color_jitter: float = 0.2,
) -> tuple[SegmentationTransform, SegmentationTransform]:
    """The (training, evaluation) transforms; training is the evaluation one without
    ``augment``."""
    height, width = size
    if height < 1 or width < 1 or max_scale < 1:
        raise DataError(f"need size >= 1 and max_scale >= 1, got size={size}, {max_scale=}")
    albumentations = _albumentations()
    import cv2

    resize = albumentations.Resize(
        height, width, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST
    )
    evaluation = SegmentationTransform([resize], False, depth_mean, depth_std)
    if not augment:
        return evaluation, evaluation
    jitter = (1 - color_jitter, 1 + color_jitter)
    steps = [
        resize,
        albumentations.RandomScale(
            scale_limit=(0.0, max_scale - 1.0),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            p=1.0,
        ),
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

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> SegSample:
        record = self.records[index]
        rgb = read_png(record.rgb, np.uint8, 3)
        depth = self.read_depth(record.depth)
        label = self.read_label(record.label)
        for path, shape in ((record.depth, depth.shape), (record.label, label.shape)):
            if shape != rgb.shape[:2]:
                raise DataError(
                    f"{path}: size {shape[1]}x{shape[0]} differs from the rgb image "
                    f"{record.rgb} ({rgb.shape[1]}x{rgb.shape[0]})"
                )
        rgb_t, depth_t, label_t = self.transform(rgb, depth, label)
        views = {"rgb": rgb_t, "depth": depth_t}
        return {name: views[name] for name in self.modalities}, label_t


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


def check_records(records: list[RGBDRecord], dataset: str) -> list[RGBDRecord]:
    """The records, after checking each listed sample has its files."""
    if not records:
        raise DataError(f"{dataset} is empty")
    for record in records:
        for path in (record.rgb, record.depth, record.label):
            if not path.is_file():
                raise DataError(f"{record.origin}: file not found: {path}")
    return records


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


def segmentation_options(cfg: DataConfig, depth_mean: float, depth_std: float) -> dict[str, Any]:
    """A loader's size, augmentation and depth-statistics arguments from ``cfg``; the depth
    statistics are ``cfg``'s, else the dataset's ``depth_mean`` / ``depth_std``."""
    if len(cfg.size) != 2:
        raise DataError(f"data.size must be [height, width], got {cfg.size}")
    return {
        "size": (cfg.size[0], cfg.size[1]),
        "augment": cfg.augment,
        "max_scale": cfg.max_scale,
        "depth_mean": depth_mean if cfg.depth_mean is None else cfg.depth_mean,
        "depth_std": depth_std if cfg.depth_std is None else cfg.depth_std,
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
        depth_mean: float,
        depth_std: float,
        read_depth: Callable[[Path], np.ndarray],
        depth_file: str,
    ) -> RGBDReader:
        """The reader of a run on ``cfg``, whose dataset's default statistics are given."""
        options = segmentation_options(cfg, depth_mean, depth_std)
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
