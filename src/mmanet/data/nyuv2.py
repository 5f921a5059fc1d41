"""NYUv2 (Silberman et al., ECCV 2012) RGB-D semantic segmentation, 40 classes.

Layout: the one written by ESANet's preparation script (TUI-NICR/ESANet,
``src/datasets/nyuv2/prepare_dataset.py``; read in ``src/datasets/nyuv2/nyuv2.py`` and
``pytorch_dataset.py``), with ``root`` holding::

    train.txt, test.txt                        one sample id per line, e.g. 0003
    {train,test}/rgb/<id>.png                  8-bit colour
    {train,test}/depth/<id>.png                16-bit, millimetres, refined (hole-filled)
    {train,test}/depth_raw/<id>.png            16-bit, millimetres, raw (0 = no measurement)
    {train,test}/labels_40/<id>.png            8-bit, 0 = void, 1..40 = the 40 classes
    {train,test}/labels_13/<id>.png            8-bit, 0 = void, 1..13 (not used here)

Classes: ESANet's ``CLASS_NAMES_40`` (the 40-class grouping of Gupta et al., CVPR 2013) without
its leading "void"; label value v in 1..40 is class v - 1 and void (0) becomes
``IGNORE_INDEX`` = 255. Splits: train = ``train.txt`` (795 images), test = ``test.txt``
(654 images); NYUv2 has no validation split and the paper (like ESANet) reports on the test
split, so ``val_split="test"`` by default: val *is* test. A layout with a held-out ``val.txt`` /
``val/`` (the rendered dataset, :mod:`mmanet.data.rendered`) passes ``val_split="val"``.

Depth: ``depth_mode="refined"`` reads ``depth/``, ``"raw"`` reads ``depth_raw/``, both in mm.
The default depth statistics are ESANet's for refined NYUv2 depth in mm
(``pytorch_dataset.py``: mean 2841.94941272766, std 1417.2594281672277; ESANet uses them for raw
depth too, whose own statistics are 2769.02 / 1350.42). Modalities, transforms, the input
reader and errors: :mod:`mmanet.data.rgbd`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, DataError, InputReader
from mmanet.data.rgbd import (
    RGBDReader,
    RGBDRecord,
    RGBDSettings,
    check_records,
    read_depth_mm,
    read_ids,
    read_label_map,
    segmentation_bundle,
    segmentation_options,
    segmentation_transforms,
    select_rgbd,
)
from mmanet.registry import DATASETS

NYUV2_DEPTH_MEAN, NYUV2_DEPTH_STD = 2841.94941272766, 1417.2594281672277  # mm, ESANet
NYUV2_CLASS_NAMES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor mat", "clothes", "ceiling", "books", "refridgerator",
    "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
]  # fmt: skip
DEPTH_FILE_MM = "16-bit depth PNG in millimetres (0 = no measurement)"


def load_nyuv2(
    root: str | Path | None,
    modalities: Sequence[str] | None = None,
    *,
    size: tuple[int, int] = (480, 640),
    augment: bool = True,
    max_scale: float = 1.4,
    depth_mode: str = "refined",
    depth_mean: float = NYUV2_DEPTH_MEAN,
    depth_std: float = NYUV2_DEPTH_STD,
    val_split: str = "test",
    missing_files: str = "error",
    class_names: Sequence[str] = NYUV2_CLASS_NAMES,
) -> DataBundle:
    """NYUv2, 40 classes, from ESANet's prepared layout in ``root`` (see the module
    docstring). Other datasets in that layout pass their ``class_names``; their labels
    are read from ``labels_<len(class_names)>/``."""
    if root is None:
        raise DataError("NYUv2 needs root=<folder with train.txt, test.txt, train/, test/>")
    if depth_mode not in ("refined", "raw"):
        raise DataError(f"NYUv2 depth_mode {depth_mode!r}; use 'refined' or 'raw'")
    if val_split not in ("train", "test", "val"):
        raise DataError(f"NYUv2 val_split {val_split!r}; use 'test', 'train' or 'val'")
    root = Path(root)
    names = select_rgbd(modalities, "NYUv2")
    depth_dir = "depth" if depth_mode == "refined" else "depth_raw"

    def records(split: str) -> list[RGBDRecord]:
        folder = root / split
        return check_records(
            [
                RGBDRecord(
                    folder / "rgb" / f"{sample}.png",
                    folder / depth_dir / f"{sample}.png",
                    folder / f"labels_{len(class_names)}" / f"{sample}.png",
                    origin,
                )
                for sample, origin in read_ids(root / f"{split}.txt")
            ],
            f"NYUv2 {split} split",
            missing_files,
        )

    on_disk = {split: records(split) for split in {"train", "test", val_split}}
    splits = {"train": on_disk["train"], "val": on_disk[val_split], "test": on_disk["test"]}
    transforms = segmentation_transforms(size, depth_mean, depth_std, augment, max_scale)
    read_label = partial(read_label_map, num_classes=len(class_names))
    return segmentation_bundle(
        splits, transforms, read_depth_mm, read_label, names, size, list(class_names)
    )


@dataclass
class NYUv2Settings(RGBDSettings):
    """``data.nyuv2``: the input size (height, width), the training random scale, the depth
    folder (``refined``: depth/, ``raw``: depth_raw/), the depth statistics (None: ESANet's)
    and what a missing rgb or depth file is."""

    KEY = "data.nyuv2"

    depth_mode: Literal["refined", "raw"] = "refined"


@DATASETS.register("nyuv2", settings=NYUv2Settings)
class NYUv2:
    """``data.name=nyuv2``: the loader and the input reader."""

    @staticmethod
    def build(cfg: DataConfig) -> DataBundle:
        own = cfg.nyuv2
        options = segmentation_options(cfg, own, NYUV2_DEPTH_MEAN, NYUV2_DEPTH_STD)
        return load_nyuv2(cfg.root, cfg.modalities, depth_mode=own.depth_mode, **options)

    @staticmethod
    def reader(cfg: DataConfig) -> InputReader:
        return RGBDReader.from_config(
            cfg, cfg.nyuv2, NYUV2_DEPTH_MEAN, NYUV2_DEPTH_STD, read_depth_mm, DEPTH_FILE_MM
        )
