"""Cityscapes (Cordts et al., CVPR 2016) RGB-D semantic segmentation, 19 classes.

Layout: ESANet's prepared Cityscapes folders (TUI-NICR/ESANet,
``src/datasets/cityscapes/cityscapes.py``), with one id list per split::

    train.txt, valid.txt, test.txt                 one file name per line, e.g. aachen_000000
    {train,valid,test}/rgb/<name>.png              8-bit colour
    {train,valid,test}/disparity_raw/<name>.png    16-bit disparity as released by Cityscapes
    {train,valid,test}/labels_19/<name>.png        8-bit, 0 = void, 1..19 = trainId + 1
    {train,valid,test}/labels_33/<name>.png        8-bit, full label ids (not used here)

(ESANet itself keeps per-modality lists ``<split>_rgb.txt`` etc. and also writes
``depth_raw/`` as float16 ``.npy``; we read one list per split and compute depth from the
disparity PNG, so ``depth_raw/`` is not needed.)

Depth: Cityscapes stores disparity as p = 256 d + 1 in a 16-bit PNG (cityscapesScripts README,
"disparity"): d = (p - 1) / 256 for p > 0 and p = 0 is invalid. Depth in metres is
baseline x focal / d with the camera's baseline 0.209313 m and focal length fx = 2262.52 px
(the ``camera/*.json`` calibration, the same for every image). Invalid pixels, d = 0 (p = 1),
and depths beyond ``max_depth`` (300 m, as ESANet caps its precomputed depth) get 0 ("no
measurement"). The default normalisation is ESANet's for this depth in metres
(``pytorch_dataset.py``: mean 31.715617493177906, std 38.70280704877372).

Classes: the 19 evaluated classes in trainId order; label value v in 1..19 is class v - 1 and
void (0) becomes 255 (ignored). Splits: train = ``train``, val = ``valid``; the public
Cityscapes test labels are withheld (ESANet writes them as void), so ``test_split="valid"`` by
default: the test split is the validation split, on which the paper reports.

Modalities, transforms, the input reader (a depth file given to predict is this disparity
PNG) and errors: :mod:`mmanet.data.rgbd`; the default size is ESANet's Cityscapes training
resolution, 512 x 1024.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, DataError, InputReader
from mmanet.data.rgbd import (
    RGBDReader,
    RGBDRecord,
    RGBDSettings,
    check_records,
    read_ids,
    read_label_map,
    read_png,
    segmentation_bundle,
    segmentation_options,
    segmentation_transforms,
    select_rgbd,
)
from mmanet.registry import DATASETS

BASELINE_M, FOCAL_PX = 0.209313, 2262.52
MAX_DEPTH_M = 300.0  # farther depth counts as no measurement, as in ESANet
DEPTH_FILE = (
    f"16-bit Cityscapes disparity PNG p as depth {BASELINE_M} × {FOCAL_PX} / d in metres, "
    f"d = (p − 1)/256 (0 where p ≤ 1 or the depth exceeds {MAX_DEPTH_M:g} m)"
)
CITYSCAPES_DEPTH_MEAN, CITYSCAPES_DEPTH_STD = 31.715617493177906, 38.70280704877372  # m
CITYSCAPES_CLASS_NAMES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus",
    "train", "motorcycle", "bicycle",
]  # fmt: skip


def depth_from_disparity(pixels: np.ndarray, max_depth: float = MAX_DEPTH_M) -> np.ndarray:
    """16-bit Cityscapes disparity PNG values -> depth in metres (float32), 0 = invalid."""
    disparity = (pixels.astype(np.float64) - 1.0) / 256.0
    valid = (pixels > 0) & (disparity > 0)
    depth = np.divide(BASELINE_M * FOCAL_PX, disparity, out=np.zeros(pixels.shape), where=valid)
    depth[depth > max_depth] = 0.0
    return depth.astype(np.float32)


def read_disparity_depth(path: Path, max_depth: float = MAX_DEPTH_M) -> np.ndarray:
    """A 16-bit disparity PNG as (h, w) depth in metres."""
    return depth_from_disparity(read_png(path, np.uint16, 1), max_depth)


def load_cityscapes(
    root: str | Path | None,
    modalities: Sequence[str] | None = None,
    *,
    size: tuple[int, int] = (512, 1024),
    augment: bool = True,
    max_scale: float = 1.4,
    max_depth: float = MAX_DEPTH_M,
    depth_mean: float = CITYSCAPES_DEPTH_MEAN,
    depth_std: float = CITYSCAPES_DEPTH_STD,
    test_split: str = "valid",
    missing_files: str = "error",
) -> DataBundle:
    """Cityscapes, 19 classes, from the prepared layout in ``root`` (see the module
    docstring)."""
    if root is None:
        raise DataError("Cityscapes needs root=<folder with train.txt, valid.txt, train/, ...>")
    if test_split not in ("valid", "test"):
        raise DataError(f"Cityscapes test_split {test_split!r}; use 'valid' or 'test'")
    root = Path(root)
    names = select_rgbd(modalities, "Cityscapes")

    def records(split: str) -> list[RGBDRecord]:
        folder = root / split
        return check_records(
            [
                RGBDRecord(
                    folder / "rgb" / f"{name}.png",
                    folder / "disparity_raw" / f"{name}.png",
                    folder / "labels_19" / f"{name}.png",
                    origin,
                )
                for name, origin in read_ids(root / f"{split}.txt")
            ],
            f"Cityscapes {split} split",
            missing_files,
        )

    splits = {"train": records("train"), "val": records("valid"), "test": records(test_split)}
    transforms = segmentation_transforms(size, depth_mean, depth_std, augment, max_scale)
    return segmentation_bundle(
        splits,
        transforms,
        partial(read_disparity_depth, max_depth=max_depth),
        partial(read_label_map, num_classes=len(CITYSCAPES_CLASS_NAMES)),
        names,
        size,
        CITYSCAPES_CLASS_NAMES,
    )


@dataclass
class CityscapesSettings(RGBDSettings):
    """``data.cityscapes``: the input size (height, width), the training random scale, the
    depth statistics (None: ESANet's) and what a missing rgb or depth file is."""

    KEY = "data.cityscapes"


@DATASETS.register("cityscapes", settings=CityscapesSettings)
class Cityscapes:
    """``data.name=cityscapes``: the loader and the input reader."""

    @staticmethod
    def build(cfg: DataConfig) -> DataBundle:
        own = cfg.cityscapes
        options = segmentation_options(cfg, own, CITYSCAPES_DEPTH_MEAN, CITYSCAPES_DEPTH_STD)
        return load_cityscapes(cfg.root, cfg.modalities, **options)

    @staticmethod
    def reader(cfg: DataConfig) -> InputReader:
        return RGBDReader.from_config(
            cfg,
            cfg.cityscapes,
            CITYSCAPES_DEPTH_MEAN,
            CITYSCAPES_DEPTH_STD,
            read_disparity_depth,
            DEPTH_FILE,
        )
