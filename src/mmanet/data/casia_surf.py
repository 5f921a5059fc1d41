"""CASIA-SURF (Zhang et al., CVPR 2019): aligned RGB, depth and IR face crops, bona fide or attack.

Layout, as released: three list files in ``data.root``::

    train_list.txt
    val_private_list.txt
    test_private_list.txt

with one sample per line, four whitespace-separated fields, paths relative to ``data.root``::

    Training/real_part/CLKJ_AS0137/real.rssdk/color/31.jpg <depth .jpg> <ir .jpg> 1

The label is 1 for bona fide (a real face) and 0 for an attack, and our class indices keep it:
``class_names == ["attack", "bona fide"]``, so the bona fide class is 1 (``BONA_FIDE``; configs
set ``data.bona_fide_class: 1``). Modalities: "rgb", "depth", "ir" (``data.modalities`` may pick
a subset); images are read and augmented as described in :mod:`mmanet.data.transforms`.
``train_eval`` is the training list with the evaluation transform (for MAR mining).

Bad input fails with a one-line :class:`DataError` naming the list file and line: a wrong number
of fields or a label other than 0 / 1, and a missing image, when the data is built; an image
that cannot be decoded or has 2 or 4 channels, when the sample is loaded. With
``data.skip_unreadable=true`` every image is decoded once when the data is built instead; a
sample with a missing or unusable image is dropped and recorded as ``"path: reason"`` in
``DataBundle.skipped`` (one entry per dropped sample). List format errors still fail.

The record, dataset and checks here are shared with :mod:`mmanet.data.cefa`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from mmanet.data.base import DataBundle, DataError, Sample
from mmanet.data.transforms import (
    ImageError,
    MultimodalTransform,
    face_transforms,
    image_problem,
    read_image,
)

ATTACK, BONA_FIDE = 0, 1
CLASS_NAMES = ["attack", "bona fide"]  # indexed by class: BONA_FIDE = 1
FACE_MODALITIES = ("rgb", "depth", "ir")
LIST_FILES = {
    "train": "train_list.txt",
    "val": "val_private_list.txt",
    "test": "test_private_list.txt",
}


@dataclass(frozen=True)
class FaceRecord:
    """One sample on disk: an image per modality, its class, and where it was listed."""

    paths: dict[str, Path]
    label: int
    origin: str  # e.g. "<root>/train_list.txt, line 12"; prefixes load-time errors


class FaceDataset(Dataset):
    """Samples ``({modality: (3, h, w) tensor}, class)``; images are read when requested."""

    def __init__(self, records: list[FaceRecord], transform: MultimodalTransform) -> None:
        self.records, self.transform = records, transform
        self.labels = [record.label for record in records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        try:
            images = {name: read_image(path) for name, path in record.paths.items()}
        except ImageError as err:
            raise DataError(f"{record.origin}: {err}") from None
        return self.transform(images), record.label


def select_modalities(modalities: Sequence[str] | None, dataset: str) -> list[str]:
    """The requested modalities (default: all three), checked against the face modalities."""
    if modalities is None:
        return list(FACE_MODALITIES)
    for name in modalities:
        if name not in FACE_MODALITIES:
            raise DataError(f"unknown {dataset} modality {name!r}; use {list(FACE_MODALITIES)}")
    if not modalities:
        raise DataError(f"{dataset}: data.modalities is empty")
    return list(modalities)


def check_images(
    records: list[FaceRecord], skip_unreadable: bool
) -> tuple[list[FaceRecord], list[str]]:
    """The usable records, and ``"path: reason"`` for each record left out.

    Without ``skip_unreadable`` only existence is checked and a missing image is an error;
    with it every image is decoded (in threads: Pillow decodes without holding the GIL) and a
    record with an unusable image is left out (its unusable images joined by "; ").
    """
    if not skip_unreadable:
        for record in records:
            for path in record.paths.values():
                if not path.is_file():
                    raise DataError(f"{record.origin}: image not found: {path}")
        return records, []
    paths = list(dict.fromkeys(p for record in records for p in record.paths.values()))
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        problems = dict(zip(paths, pool.map(image_problem, paths), strict=True))
    kept, skipped = [], []
    for record in records:
        bad = [f"{p}: {problems[p]}" for p in record.paths.values() if problems[p] is not None]
        if bad:
            skipped.append("; ".join(bad))
        else:
            kept.append(record)
    return kept, skipped


def face_bundle(
    splits: dict[str, list[FaceRecord]],
    transforms: tuple[MultimodalTransform, MultimodalTransform],
    image_size: int,
    skipped: list[str],
    dataset: str,
) -> DataBundle:
    """Train / val / test (and train without augmentation) from records and the
    (training, evaluation) transforms of :func:`face_transforms`."""
    for split, records in splits.items():
        if not records:
            raise DataError(f"{dataset}: the {split} split is empty")
    train_transform, eval_transform = transforms
    modalities = eval_transform.modalities
    return DataBundle(
        train=FaceDataset(splits["train"], train_transform),
        val=FaceDataset(splits["val"], eval_transform),
        test=FaceDataset(splits["test"], eval_transform),
        modalities=list(modalities),
        input_shapes={name: (3, image_size, image_size) for name in modalities},
        class_names=list(CLASS_NAMES),
        train_eval=FaceDataset(splits["train"], eval_transform),
        skipped=skipped,
    )


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
