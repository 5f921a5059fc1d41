"""Image reading and the augmentation pipelines shared by the face anti-spoofing datasets.

Every image is read as 8-bit ``(h, w, 3)`` RGB; a grey (1-channel) image, as depth and IR
usually are, is replicated to three channels. Any other channel count (2, 4) is an error.

Training (``augment``): resize to ``resize`` x ``resize`` -> random rotation by an angle drawn
uniformly from ±``rotation`` degrees (black corners) -> random ``image_size`` crop -> horizontal
flip with probability 0.5. One draw of these parameters transforms all modalities of a sample
(albumentations ``additional_targets``), so aligned RGB / depth / IR images stay aligned.
Evaluation: resize to ``image_size`` x ``image_size``. Both end with (x - 127.5) / 128, as
float32 ``(3, h, w)`` tensors.

Reproducibility: albumentations draws from its own generators, not from Python's or NumPy's
global ones. For every augmented sample, :class:`MultimodalTransform` draws one seed from
torch's global generator (``torch.randint``) and gives the pipeline a fresh NumPy + Python
generator pair made from it. So ``torch.manual_seed`` fixes the augmentations of a run with
``num_workers=0``; in DataLoader workers torch seeds each worker's generator from the loader's
base seed (from the loader's ``generator``), so they are reproducible there too. Both
generators are shared by all steps of the pipeline: albumentations' ``set_random_seed`` instead
seeds every step with the same number, which makes e.g. the flip a function of the rotation
angle.

albumentations is imported when a pipeline is built (it is slow to import), with its on-import
check for a newer release on PyPI switched off unless ``NO_ALBUMENTATIONS_UPDATE`` is set.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmanet.data.base import DataError


class ImageError(DataError):
    """An image that cannot be used: missing, undecodable, or of the wrong kind."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"image {path}: {reason}")


def read_image(path: Path) -> np.ndarray:
    """An 8-bit image file fully decoded as (h, w, 3) RGB; grey images are replicated."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ImageError(path, "file not found")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("1", "P", "YCbCr"):  # bilevel, palette: 8-bit grey / colour in effect
                img = img.convert("L" if img.mode == "1" else "RGB")
            mode, channels, pixels = img.mode, len(img.getbands()), np.asarray(img)
    except UnidentifiedImageError:
        raise ImageError(path, "not an image file that can be decoded") from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = " ".join(str(err).split())
        raise ImageError(path, f"cannot be decoded ({reason})") from None
    if channels not in (1, 3):
        raise ImageError(path, f"has {channels} channels ({mode}); expected 1 (grey) or 3 (colour)")
    if mode not in ("L", "RGB"):
        raise ImageError(path, f"mode {mode} is not an 8-bit grey or colour image")
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels


def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image (after decoding it fully), or None."""
    try:
        read_image(path)
    except ImageError as err:
        return err.reason
    return None


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(h, w, 3) uint8 -> (3, h, w) float32 as (x - 127.5) / 128."""
    chw = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
    return torch.from_numpy((chw - 127.5) / 128.0)  # NumPy: much faster than torch for one image


def _albumentations() -> Any:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


class MultimodalTransform:
    """One albumentations pipeline that transforms all modalities of a sample with one draw."""

    def __init__(self, steps: Sequence[Any], modalities: Sequence[str], random_draw: bool) -> None:
        albumentations = _albumentations()
        self.modalities = list(modalities)
        self.random_draw = random_draw
        # The first modality is albumentations' "image"; the others are images transformed with
        # the same parameters. Shapes may differ between modalities: the first step resizes all.
        self.compose = albumentations.Compose(
            list(steps),
            additional_targets={name: "image" for name in self.modalities[1:]},
            is_check_shapes=False,
        )

    def __call__(self, images: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        if self.random_draw:
            seed = int(torch.randint(2**31 - 1, ()))  # from torch's generator; see module doc
            self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        first, *others = self.modalities
        out = self.compose(image=images[first], **{name: images[name] for name in others})
        return {
            name: to_tensor(out["image" if name == first else name]) for name in self.modalities
        }


def face_transforms(
    modalities: Sequence[str],
    image_size: int = 112,
    resize: int = 144,
    rotation: float = 30.0,
    augment: bool = True,
) -> tuple[MultimodalTransform, MultimodalTransform]:
    """The (training, evaluation) transforms; training is the evaluation one without ``augment``."""
    if image_size < 1 or resize < image_size:
        raise DataError(
            f"need 1 <= image_size <= resize, got image_size={image_size}, resize={resize}"
        )
    albumentations = _albumentations()
    import cv2

    evaluation = MultimodalTransform(
        [albumentations.Resize(image_size, image_size)], modalities, random_draw=False
    )
    if not augment:
        return evaluation, evaluation
    steps = [albumentations.Resize(resize, resize)]
    if rotation > 0:
        steps.append(
            albumentations.Rotate(limit=rotation, border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0)
        )
    steps += [
        albumentations.RandomCrop(image_size, image_size),
        albumentations.HorizontalFlip(p=0.5),
    ]
    return MultimodalTransform(steps, modalities, random_draw=True), evaluation
