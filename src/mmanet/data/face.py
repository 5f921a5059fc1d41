"""What the face anti-spoofing datasets (CASIA-SURF, CeFA) share: classes, modalities, the
record, the dataset, image checks, the bundle, the settings and the input reader.

Classes: ``class_names == ["attack", "bona fide"]``, so the bona fide class is 1
(``BONA_FIDE``; configs set ``data.bona_fide_class: 1``). Modalities: "rgb", "depth", "ir"
(``data.modalities`` may pick a subset); images are read and augmented as described in
:mod:`mmanet.data.transforms`. ``train_eval`` is the training split with the evaluation
transform (for MAR mining). :class:`FaceReader` applies the evaluation transform to one file,
so a prediction's input is exactly what the test split gives for that image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, DataError, InputReader, Sample
from mmanet.data.transforms import (
    ImageError,
    MultimodalTransform,
    face_transforms,
    image_problem,
    read_image,
)
from mmanet.errors import ConfigError

ATTACK, BONA_FIDE = 0, 1
CLASS_NAMES = ["attack", "bona fide"]  # indexed by class: BONA_FIDE = 1
FACE_MODALITIES = ("rgb", "depth", "ir")


@dataclass(frozen=True)
class FaceRecord:
    """One sample on disk: an image per modality, its class, and where it was listed."""

    paths: dict[str, Path]
    label: int
    origin: str  # e.g. "<root>/train_list.txt, line 12"; prefixes load-time errors
    attack_type: str | None = None  # an attack's instrument (CeFA: "cloth", ...); None: unknown


class FaceDataset(Dataset):
    """Samples ``({modality: (3, h, w) tensor}, class)``; images are read when requested."""

    def __init__(self, records: list[FaceRecord], transform: MultimodalTransform) -> None:
        self.records, self.transform = records, transform
        self.labels = [record.label for record in records]
        # each sample's attack type (None for bona fide) when the lists name them, else None
        typed = any(record.attack_type is not None for record in records)
        self.attack_types = [record.attack_type for record in records] if typed else None

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
        # (x - 127.5) / 128 of 8-bit images: x01 = x * 128/255 + 127.5/255
        pixel_ranges={name: ((128 / 255,) * 3, (127.5 / 255,) * 3) for name in modalities},
    )


@dataclass
class FaceSettings:
    """A face dataset's images: their size, the training resize and rotation, and what an
    unreadable image does. Each face dataset has its own subclass (its ``KEY``)."""

    KEY: ClassVar[str] = "data.<face dataset>"  # where a config holds them, for messages

    image_size: int = 112  # crop size for training, resize size for testing
    resize: int = 144  # training: resize before the random crop
    rotation: float = 30.0  # training: random rotation in degrees (±)
    skip_unreadable: bool = False  # drop unreadable images (counted) instead of failing

    def __post_init__(self) -> None:
        if not 1 <= self.image_size <= self.resize:
            raise ConfigError(
                f"{self.KEY}.image_size must be >= 1 and <= {self.KEY}.resize, got "
                f"image_size={self.image_size}, resize={self.resize}"
            )
        if self.rotation < 0:
            raise ConfigError(f"{self.KEY}.rotation must be >= 0, got {self.rotation}")


def face_options(cfg: DataConfig, own: FaceSettings) -> dict[str, Any]:
    """A face loader's image and augmentation arguments from ``cfg`` and the dataset's own
    settings ``own``, after checking that ``data.bona_fide_class`` (if set) is the
    datasets' bona fide class."""
    if cfg.bona_fide_class not in (None, BONA_FIDE):
        raise DataError(
            f"data.bona_fide_class={cfg.bona_fide_class}, but the bona fide class of "
            f"data.name={cfg.name} is {BONA_FIDE} (class_names {CLASS_NAMES})"
        )
    return {
        "image_size": own.image_size,
        "resize": own.resize,
        "rotation": own.rotation,
        "augment": cfg.augment,
        "skip_unreadable": own.skip_unreadable,
    }


class FaceReader(InputReader):
    """A face image through the evaluation transform: resized to ``image_size``, (x − 127.5)/128."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def read_file(self, path: Path, modality: str) -> torch.Tensor:
        _, evaluation = face_transforms([modality], self.image_size, self.image_size, augment=False)
        return evaluation({modality: read_image(path)})[modality]

    def describe(self, modality: str) -> str:
        size = self.image_size
        return (
            f"8-bit colour or grey image (grey replicated to 3 channels) resized (bilinear) to "
            f"{size}×{size}, (x − 127.5)/128, 3 channels"
        )
