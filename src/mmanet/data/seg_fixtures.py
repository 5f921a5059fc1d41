"""Tiny deterministic NYUv2 and Cityscapes datasets in the prepared layouts, for tests and demos.

Depth and label encode the same pattern, so a test can check they stay aligned after
augmentation: NYUv2 depth (mm) = 1000 + 50 x stored label value (labels_40, 0 = void);
Cityscapes disparity PNG value = 256 x (stored label value + 2) + 1, i.e. disparity
d = label value + 2 px and depth = 0.209313 x 2262.52 / d m, at most 237 m (``depth_raw/``
holds that depth in mm, 16-bit; the loader does not read it). Labels are random per pixel
(about 10 % void), rgb is random noise; ``depth_raw/`` of NYUv2 has about 10 % holes (0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NYUV2_DEPTH_OFFSET_MM, NYUV2_DEPTH_STEP_MM = 1000, 50


def _write_png(path: Path, pixels: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"cannot write {path}")


def _sample(
    rng: np.random.Generator, size: tuple[int, int], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """rgb (h, w, 3) uint8 and stored labels (h, w) uint8 in 0 (void)..num_classes."""
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    label = rng.integers(1, num_classes + 1, size, dtype=np.uint8)
    label[rng.random(size) < 0.1] = 0  # void
    return rgb, label


def write_nyuv2(
    root: str | Path, n_train: int, n_test: int, size: tuple[int, int] = (24, 32), seed: int = 0
) -> Path:
    """A tiny NYUv2 in ESANet's layout (see :mod:`mmanet.data.nyuv2`) under ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    number = 1
    for split, count in (("train", n_train), ("test", n_test)):
        ids = []
        for _ in range(count):
            sample = f"{number:04d}"
            number += 1
            rgb, label = _sample(rng, size, 40)
            depth = (NYUV2_DEPTH_OFFSET_MM + NYUV2_DEPTH_STEP_MM * label.astype(np.uint16)).astype(
                np.uint16
            )
            raw = depth.copy()
            raw[rng.random(size) < 0.1] = 0  # missing measurements
            folder = root / split
            _write_png(folder / "rgb" / f"{sample}.png", rgb)
            _write_png(folder / "depth" / f"{sample}.png", depth)
            _write_png(folder / "depth_raw" / f"{sample}.png", raw)
            _write_png(folder / "labels_40" / f"{sample}.png", label)
            _write_png(folder / "labels_13" / f"{sample}.png", (label % 14).astype(np.uint8))
            ids.append(sample)
        (root / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def write_cityscapes(
    root: str | Path,
    n_train: int,
    n_valid: int,
    n_test: int = 1,
    size: tuple[int, int] = (24, 32),
    seed: int = 0,
) -> Path:
    """A tiny Cityscapes in the prepared layout (see :mod:`mmanet.data.cityscapes`)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        names = []
        for index in range(count):
            name = f"city_{index:06d}_{split}"
            rgb, label = _sample(rng, size, 19)
            disparity = (256 * (label.astype(np.int64) + 2) + 1).astype(np.uint16)
            folder = root / split
            _write_png(folder / "rgb" / f"{name}.png", rgb)
            _write_png(folder / "disparity_raw" / f"{name}.png", disparity)
            depth_mm = 1000 * 0.209313 * 2262.52 / (label.astype(np.float64) + 2)
            _write_png(folder / "depth_raw" / f"{name}.png", depth_mm.round().astype(np.uint16))
            _write_png(folder / "labels_19" / f"{name}.png", label)
            _write_png(folder / "labels_33" / f"{name}.png", label)
            names.append(name)
        (root / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return root
