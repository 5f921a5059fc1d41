"""Tiny synthetic CASIA-SURF and CeFA datasets in each one's on-disk layout, for tests and demos.

A bona fide face is a smooth, bright ellipse, raised in depth; an attack is darker with a strong
vertical stripe (moire) pattern in every modality and a flat, tilted depth map. RGB images are
colour JPEGs, depth and IR grey (1-channel) JPEGs, as in the real data. Everything is drawn
from ``numpy.random.default_rng(seed)``: the same arguments write the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mmanet.data.casia_surf import LIST_FILES
from mmanet.data.cefa import MODALITY_FOLDERS, RACES, REAL, SCREEN, SUBJECTS

CASIA_SPLIT_FOLDERS = {"train": "Training", "val": "Val", "test": "Testing"}
CASIA_MODALITY_FOLDERS = {"rgb": "color", "depth": "depth", "ir": "ir"}
STRIPE_PERIOD = 4  # pixels


def face_images(
    rng: np.random.Generator, size: int, bona_fide: bool, difficulty: float = 0.0
) -> dict[str, np.ndarray]:
    """One sample's aligned images: rgb (size, size, 3), depth and ir (size, size), uint8.

    ``difficulty`` in [0, 1] (0: the easy fixture the tests use, drawn exactly as before):
    each modality of an attack is blended towards a bona fide face by an independent
    weight ``difficulty * U(0, 1)`` (so a sample's modalities disagree on how convincing
    it is), and the sensor noise grows from σ = 6 to 6 + 30 · difficulty grey levels."""
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty {difficulty} is outside [0, 1]")
    rows, cols = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1  # each (size, size) in [-1, 1]
    centre_x, centre_y = rng.uniform(-0.15, 0.15, size=2)
    face = np.clip(1 - ((cols - centre_x) / 0.6) ** 2 - ((rows - centre_y) / 0.8) ** 2, 0, 1)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * np.arange(size) / STRIPE_PERIOD + phase)  # (size,)
    if bona_fide:
        skin = 70 + 160 * face
        depth = 30 + 200 * face
        ir = 50 + 130 * face
    else:
        skin = 40 + 90 * face + 80 * stripes
        depth = 90 + 40 * (rows + 1) / 2 + 50 * stripes
        ir = 25 + 60 * face + 70 * stripes
    tint = np.array([1.0, 0.8, 0.65])  # skin colour
    sigma = 6.0
    if difficulty > 0:
        sigma += 30.0 * difficulty
        if not bona_fide:
            real = {"skin": 70 + 160 * face, "depth": 30 + 200 * face, "ir": 50 + 130 * face}
            weights = difficulty * rng.uniform(0.0, 1.0, size=3)
            skin = (1 - weights[0]) * skin + weights[0] * real["skin"]
            depth = (1 - weights[1]) * depth + weights[1] * real["depth"]
            ir = (1 - weights[2]) * ir + weights[2] * real["ir"]

    def noisy(pixels: np.ndarray) -> np.ndarray:
        return np.clip(pixels + rng.normal(0, sigma, pixels.shape), 0, 255).astype(np.uint8)

    return {"rgb": noisy(skin[:, :, None] * tint), "depth": noisy(depth), "ir": noisy(ir)}


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def write_casia_surf(
    root: str | Path, n_per_split: int = 12, size: int = 48, seed: int = 0, difficulty: float = 0.0
) -> Path:
    """CASIA-SURF's list files and JPEGs under ``root``: ``n_per_split`` samples per split,
    alternately bona fide (label 1) and attack (label 0); ``difficulty``: see
    :func:`face_images`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, list_name in LIST_FILES.items():
        lines = []
        for index in range(n_per_split):
            bona_fide = index % 2 == 0
            part, clip = (
                ("real_part", "real.rssdk") if bona_fide else ("fake_part", "04_en_b.rssdk")
            )
            folder = Path(CASIA_SPLIT_FOLDERS[split], part, f"CLKJ_AS{index // 2:04d}", clip)
            images = face_images(rng, size, bona_fide, difficulty)
            relative = {}
            for name, subfolder in CASIA_MODALITY_FOLDERS.items():
                relative[name] = (folder / subfolder / f"{index + 1}.jpg").as_posix()
                _save(images[name], root / relative[name])
            lines.append(f"{relative['rgb']} {relative['depth']} {relative['ir']} {int(bona_fide)}")
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root


def write_cefa(
    root: str | Path,
    subjects_per_split: int = 2,
    frames_per_video: int = 3,
    size: int = 32,
    seed: int = 0,
    difficulty: float = 0.0,
) -> Path:
    """CeFA's folders and JPEGs under ``root``: for every race and split, ``subjects_per_split``
    subjects, each with one video per PAI code 1-4 (device 1) and one real video recorded with
    device 2, which no protocol uses; sessions alternate between subjects. ``difficulty``:
    see :func:`face_images`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for race_code, race in enumerate(RACES, start=1):
        for subjects in SUBJECTS.values():
            for offset in range(subjects_per_split):
                subject = subjects.start + offset
                session = 1 + offset % 2
                videos = [(1, pai) for pai in range(REAL, SCREEN + 1)] + [(2, REAL)]
                for device, pai in videos:
                    video = f"{race_code}_{subject:03d}_{device}_{session}_{pai}"
                    video_dir = root / race / f"{race}-{subject:03d}" / video
                    for frame in range(1, frames_per_video + 1):
                        images = face_images(rng, size, pai == REAL, difficulty)
                        for name, subfolder in MODALITY_FOLDERS.items():
                            _save(images[name], video_dir / subfolder / f"{frame:04d}.jpg")
    return root
