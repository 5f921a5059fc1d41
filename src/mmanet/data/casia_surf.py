"""CASIA-SURF (Zhang et al., CVPR 2019): aligned RGB, depth and IR face crops, bona fide or attack.

Layout, as released: three list files in ``data.root``::

    train_list.txt
    val_private_list.txt
    test_private_list.txt

with one sample per line, four whitespace-separated fields, paths relative to ``data.root``::

    Training/real_part/CLKJ_AS0137/real.rssdk/color/31.jpg <depth .jpg> <ir .jpg> 1

The label is 1 for bona fide (a real face) and 0 for an attack, and our class indices keep it
(``BONA_FIDE`` = 1). Classes, modalities, images, ``train_eval`` and the input reader are those
of every face dataset (:mod:`mmanet.data.face`).

Bad input fails with a one-line :class:`DataError` naming the list file and line: a wrong number
of fields or a label other than 0 / 1, and a missing image, when the data is built; an image
that cannot be decoded or has 2 or 4 channels, when the sample is loaded. With
``data.casia_surf.skip_unreadable=true`` every image is decoded once when the data is built
instead; a sample with a missing or unusable image is dropped and recorded as
``"path: reason"`` in ``DataBundle.skipped`` (one entry per dropped sample). List format
errors still fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, DataError, InputReader
from mmanet.data.face import (
    FACE_MODALITIES,
    FaceReader,
    FaceRecord,
    FaceSettings,
    check_images,
    face_bundle,
    face_options,
    select_modalities,
)
from mmanet.data.transforms import face_transforms
from mmanet.registry import DATASETS

LIST_FILES = {
    "train": "train_list.txt",
    "val": "val_private_list.txt",
    "test": "test_private_list.txt",
}


def read_list(list_path: Path, root: Path, modalities: list[str]) -> list[FaceRecord]:
    """The samples of one list file: ``rgb_path depth_path ir_path label`` per line."""
    if not list_path.is_file():
        raise DataError(f"CASIA-SURF list file not found: {list_path}")
    records = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        origin = f"{list_path}, line {number}"
        if len(fields) != 4:
            raise DataError(
                f"{origin}: expected 4 fields 'rgb_path depth_path ir_path label', "
                f"got {len(fields)}"
            )
        if fields[3] not in ("0", "1"):
            raise DataError(f"{origin}: label {fields[3]!r} is not 0 (attack) or 1 (bona fide)")
        paths = dict(zip(FACE_MODALITIES, fields[:3], strict=True))
        records.append(
            FaceRecord({name: root / paths[name] for name in modalities}, int(fields[3]), origin)
        )
    return records


def load_casia_surf(
    root: str | Path | None,
    modalities: Sequence[str] | None = None,
    *,
    image_size: int = 112,
    resize: int = 144,
    rotation: float = 30.0,
    augment: bool = True,
    skip_unreadable: bool = False,
) -> DataBundle:
    """CASIA-SURF from its three list files in ``root`` (see the module docstring)."""
    if root is None:
        raise DataError(
            "data.name=casia_surf needs data.root=<folder with train_list.txt, "
            "val_private_list.txt, test_private_list.txt>"
        )
    root = Path(root)
    names = select_modalities(modalities, "CASIA-SURF")
    transforms = face_transforms(names, image_size, resize, rotation, augment)
    splits, skipped = {}, []
    for split, filename in LIST_FILES.items():
        records, left_out = check_images(read_list(root / filename, root, names), skip_unreadable)
        splits[split] = records
        skipped += left_out
    return face_bundle(splits, transforms, image_size, skipped, "CASIA-SURF")


@dataclass
class CasiaSurfSettings(FaceSettings):
    """``data.casia_surf``: the image size (training crop, test resize), the training resize
    and rotation, and whether unreadable images are dropped (counted) instead of failing."""

    KEY = "data.casia_surf"


@DATASETS.register("casia_surf", settings=CasiaSurfSettings)
class CasiaSurf:
    """``data.name=casia_surf``: the loader and the input reader."""

    @staticmethod
    def build(cfg: DataConfig) -> DataBundle:
        return load_casia_surf(cfg.root, cfg.modalities, **face_options(cfg, cfg.casia_surf))

    @staticmethod
    def reader(cfg: DataConfig) -> InputReader:
        return FaceReader(cfg.casia_surf.image_size)
