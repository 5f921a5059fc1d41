"""A rendered RGB-D semantic segmentation dataset (tabletop scenes) in the NYUv2 prepared layout.

Scenes are rendered with pybullet's CPU renderer (TinyRenderer) from the object models shipped in
``pybullet_data``: a table on a floor, an optional tray and a random subset of small objects at
random poses and colours, seen from a random camera under a random light. The renderer gives the
RGB image, the z-buffer (converted to metric depth) and the per-pixel object id (mapped to a
category). A sensor model then degrades both modalities so that neither suffices everywhere:

* depth: Gaussian noise whose std grows quadratically with distance (structured-light sensors),
  holes (0) at depth discontinuities, on dark surfaces, on shiny categories and out of range;
* RGB: under-exposure (low gain, shot and read noise) in a fraction of the scenes.

Every sample depends only on ``(seed, split, index)``, so the output is byte-identical for a seed
whatever the number of worker processes. The design (``GENERATOR_VERSION``) is fixed before any
method is compared on it; a change of the design must bump the version.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pybullet
import pybullet_data
from PIL import Image

GENERATOR_VERSION = 1
SPLITS = ("train", "test", "val")  # the order seeds each sample: append, never reorder

NEAR_M, FAR_M = 0.05, 8.0  # renderer clipping planes
SENSOR_MIN_M, SENSOR_MAX_M = 0.4, 4.0  # depth outside this range is missing
VERTICAL_FOV_DEG = 45.0  # 4:3 sensor with a ~57° horizontal field of view
TABLE_TOP_Z = 0.625  # height of the top of pybullet_data's table/table.urdf
TABLE_HALF_EXTENT = (0.7, 0.45)  # usable half size of the table top (x, y), metres
PARKED_POSITION = (100.0, 100.0, -100.0)  # far beyond the far plane: unused instances
UNDER_EXPOSED_FRACTION = 0.3


@dataclass(frozen=True)
class Category:
    """A semantic class: the URDF that renders it, its scale and whether its surface is shiny."""

    name: str
    urdf: str
    scale: float
    shiny: bool = False
    textured: bool = False  # keep the model's texture, only tint it


# Label 0 is void (nothing rendered, e.g. sky); categories are labels 1..K in this order.
CATEGORIES = (
    Category("floor", "plane.urdf", 1.0, textured=True),
    Category("table", "table/table.urdf", 1.0, textured=True),
    Category("tray", "tray/traybox.urdf", 0.6, textured=True),
    Category("duck", "duck_vhacd.urdf", 1.6, textured=True),
    Category("teddy", "teddy_vhacd.urdf", 1.8),
    Category("mug", "objects/mug.urdf", 1.1, shiny=True),
    Category("lego", "lego/lego.urdf", 2.6),
    Category("ball", "soccerball.urdf", 0.15, textured=True),
    Category("cube", "cube_small.urdf", 1.5, shiny=True),
    Category("block", "jenga/jenga.urdf", 1.2),
)
CLASS_NAMES = tuple(category.name for category in CATEGORIES)
NUM_CLASSES = len(CATEGORIES)
SMALL_OBJECTS = tuple(range(3, NUM_CLASSES))  # indices into CATEGORIES placed on the table
COPIES_PER_OBJECT = 2


@dataclass
class RenderedSample:
    """One scene: sensor outputs plus the noise-free depth (exposed for tests)."""

    rgb: np.ndarray  # (h, w, 3) uint8, after the exposure model
    depth_mm: np.ndarray  # (h, w) uint16, millimetres, 0 = missing
    labels: np.ndarray  # (h, w) uint8, 0 = void, 1..K
    clean_depth_m: np.ndarray  # (h, w) float32, metres, 0 where nothing was rendered
    clean_rgb: np.ndarray  # (h, w, 3) uint8, as rendered
    under_exposed: bool


class _Scene:
    """A pybullet client holding every model instance once; scenes only move and recolour them."""

    def __init__(self) -> None:
        self.client = pybullet.connect(pybullet.DIRECT)
        pybullet.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.client)
        self.instances: list[tuple[int, int]] = []  # (body id, category index)
        for index, category in enumerate(CATEGORIES):
            copies = COPIES_PER_OBJECT if index in SMALL_OBJECTS else 1
            for _ in range(copies):
                body = pybullet.loadURDF(
                    category.urdf,
                    basePosition=PARKED_POSITION,
                    useFixedBase=True,
                    globalScaling=category.scale,
                    physicsClientId=self.client,
                )
                self.instances.append((body, index))
        self.body_to_label = np.zeros(max(b for b, _ in self.instances) + 2, dtype=np.uint8)
        for body, index in self.instances:
            self.body_to_label[body + 1] = index + 1  # +1 shifts the background id -1 to 0

    def close(self) -> None:
        pybullet.disconnect(self.client)

    def _place(self, body: int, xy: np.ndarray, yaw: float, roll_pitch: np.ndarray) -> None:
        """Put a body at (x, y) resting with its lowest point on the table top."""
        orientation = pybullet.getQuaternionFromEuler([*roll_pitch, yaw])
        pybullet.resetBasePositionAndOrientation(
            body, [xy[0], xy[1], 0.0], orientation, physicsClientId=self.client
        )
        aabb_min, _ = pybullet.getAABB(body, physicsClientId=self.client)
        lift = TABLE_TOP_Z - aabb_min[2]
        pybullet.resetBasePositionAndOrientation(
            body, [xy[0], xy[1], lift], orientation, physicsClientId=self.client
        )

    def _recolour(self, body: int, rgb: np.ndarray) -> None:
        pybullet.changeVisualShape(
            body, -1, rgbaColor=[*map(float, rgb), 1.0], physicsClientId=self.client
        )

    def render(self, rng: np.random.Generator, size: tuple[int, int]) -> dict[str, np.ndarray]:
        """Lay out a random scene and render RGB, metric depth, labels and per-pixel albedo."""
        albedo_by_body: dict[int, float] = {}
        for body, _ in self.instances:
            pybullet.resetBasePositionAndOrientation(
                body, PARKED_POSITION, [0, 0, 0, 1], physicsClientId=self.client
            )
        # Floor and table: always there, tinted.
        for body, index in self.instances:
            if index > 1:
                continue
            colour = rng.uniform(0.35, 1.0, size=3)
            self._recolour(body, colour)
            albedo_by_body[body] = float(colour.mean())
            pybullet.resetBasePositionAndOrientation(
                body, [0, 0, 0], [0, 0, 0, 1], physicsClientId=self.client
            )
        # Tray and small objects: a random subset, non-overlapping footprints on the table top.
        candidates = [(b, i) for b, i in self.instances if i >= 2]
        chosen_small = rng.choice(
            [k for k, (_, i) in enumerate(candidates) if i != 2],
            size=int(rng.integers(3, 8)),
            replace=False,
        )
        chosen = [candidates[k] for k in sorted(chosen_small)]
        if rng.random() < 0.5:
            chosen.insert(0, next(c for c in candidates if c[1] == 2))
        placed: list[tuple[np.ndarray, float]] = []  # (xy, radius)
        for body, index in chosen:
            radius = 0.2 if index == 2 else 0.08
            for _ in range(30):
                xy = rng.uniform(-1.0, 1.0, size=2) * (np.array(TABLE_HALF_EXTENT) - radius)
                if all(np.linalg.norm(xy - other) > radius + r for other, r in placed):
                    break
            else:
                continue
            placed.append((xy, radius))
            lying = rng.random() < 0.25 and index != 2
            roll_pitch = rng.uniform(-np.pi, np.pi, size=2) if lying else np.zeros(2)
            self._place(body, xy, float(rng.uniform(0, 2 * np.pi)), roll_pitch)
            category = CATEGORIES[index]
            dark = rng.random() < 0.2
            colour = rng.uniform(0.02, 0.12, size=3) if dark else rng.uniform(0.25, 1.0, size=3)
            if category.textured and not dark:
                colour = 1.0 - 0.5 * rng.random(3)
            self._recolour(body, colour)
            albedo_by_body[body] = float(colour.mean())

        # Camera looking at the table from a random elevation, azimuth and distance.
        height, width = size
        target = [rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.2), TABLE_TOP_Z]
        distance = rng.uniform(0.9, 1.9)
        elevation = np.deg2rad(rng.uniform(25.0, 75.0))
        azimuth = rng.uniform(0.0, 2 * np.pi)
        eye = np.array(target) + distance * np.array(
            [
                np.cos(elevation) * np.cos(azimuth),
                np.cos(elevation) * np.sin(azimuth),
                np.sin(elevation),
            ]
        )
        view = pybullet.computeViewMatrix(eye.tolist(), target, [0, 0, 1])
        projection = pybullet.computeProjectionMatrixFOV(
            VERTICAL_FOV_DEG, width / height, NEAR_M, FAR_M
        )
        light_direction = rng.normal(size=3)
        light_direction[2] = abs(light_direction[2]) + 0.5
        _, _, rgba, z_buffer, segmentation = pybullet.getCameraImage(
            width,
            height,
            viewMatrix=view,
            projectionMatrix=projection,
            lightDirection=light_direction.tolist(),
            lightColor=(1.0 - 0.3 * rng.random(3)).tolist(),
            lightAmbientCoeff=float(rng.uniform(0.3, 0.6)),
            lightDiffuseCoeff=float(rng.uniform(0.4, 0.7)),
            lightSpecularCoeff=float(rng.uniform(0.05, 0.4)),
            shadow=1,
            renderer=pybullet.ER_TINY_RENDERER,
            physicsClientId=self.client,
        )
        rgba = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)
        z_buffer = np.asarray(z_buffer, dtype=np.float64).reshape(height, width)
        segmentation = np.asarray(segmentation, dtype=np.int64).reshape(height, width)
        rendered = segmentation >= 0
        # Invert the perspective z-buffer: z_ndc in [0, 1] -> distance along the optical axis.
        depth = FAR_M * NEAR_M / (FAR_M - (FAR_M - NEAR_M) * z_buffer)
        depth = np.where(rendered, depth, 0.0).astype(np.float32)
        albedo_lut = np.ones(self.body_to_label.shape[0], dtype=np.float32)
        for body, value in albedo_by_body.items():
            albedo_lut[body + 1] = value
        return {
            "rgb": np.ascontiguousarray(rgba[..., :3]),
            "depth": depth,
            "labels": self.body_to_label[segmentation + 1],
            "albedo": albedo_lut[segmentation + 1],
        }


def _smooth_field(rng: np.random.Generator, size: tuple[int, int], cell: int = 6) -> np.ndarray:
    """Blobby uniform-ish noise in [0, 1]: coarse random values bilinearly upsampled."""
    height, width = size
    coarse = rng.random((height // cell + 2, width // cell + 2)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


def depth_noise_std(depth_m: np.ndarray) -> np.ndarray:
    """Axial noise std (metres) of the simulated structured-light sensor: 2 mm + 4 mm·z²."""
    return 0.002 + 0.004 * depth_m**2


def sense_depth(
    clean_depth_m: np.ndarray, labels: np.ndarray, albedo: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Apply the depth sensor model; returns uint16 millimetres with 0 for missing."""
    size = clean_depth_m.shape
    valid = (clean_depth_m >= SENSOR_MIN_M) & (clean_depth_m <= SENSOR_MAX_M)
    # Depth discontinuities: local depth range large relative to the depth itself.
    local_max = cv2.dilate(clean_depth_m, np.ones((3, 3), np.uint8))
    local_min = cv2.erode(np.where(clean_depth_m > 0, clean_depth_m, FAR_M), np.ones((3, 3)))
    edges = (local_max - local_min) > 0.04 * np.maximum(clean_depth_m, SENSOR_MIN_M)
    holes = edges & (rng.random(size) < 0.8)
    # Dark surfaces return too little light; shiny ones reflect the pattern away.
    holes |= (albedo < 0.15) & (_smooth_field(rng, size) < 0.75)
    shiny = np.isin(labels, [i + 1 for i, c in enumerate(CATEGORIES) if c.shiny])
    holes |= shiny & (_smooth_field(rng, size) < 0.5)
    holes |= rng.random(size) < 0.005
    noisy = clean_depth_m + rng.normal(size=size) * depth_noise_std(clean_depth_m)
    depth_mm = np.round(noisy * 1000.0).clip(0, np.iinfo(np.uint16).max).astype(np.uint16)
    depth_mm[~valid | holes] = 0
    return depth_mm


def sense_rgb(clean_rgb: np.ndarray, rng: np.random.Generator, under_exposed: bool) -> np.ndarray:
    """Apply the camera model: mild read noise, or low gain with shot and read noise."""
    signal = clean_rgb.astype(np.float32)
    if under_exposed:
        signal *= rng.uniform(0.05, 0.15)
        noise_std = np.sqrt(0.8 * signal + 4.0)
    else:
        noise_std = np.full_like(signal, 2.0)
    noisy = signal + rng.normal(size=signal.shape).astype(np.float32) * noise_std
    return np.round(noisy).clip(0, 255).astype(np.uint8)


def render_sample(
    seed: int, split: str, index: int, size: tuple[int, int], scene: _Scene | None = None
) -> RenderedSample:
    """Render sample ``index`` of ``split``; a function of (seed, split, index, size) only."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    own_scene = scene is None
    scene = _Scene() if scene is None else scene
    try:
        rendered = scene.render(rng, size)
    finally:
        if own_scene:
            scene.close()
    under_exposed = bool(rng.random() < UNDER_EXPOSED_FRACTION)
    return RenderedSample(
        rgb=sense_rgb(rendered["rgb"], rng, under_exposed),
        depth_mm=sense_depth(rendered["depth"], rendered["labels"], rendered["albedo"], rng),
        labels=rendered["labels"],
        clean_depth_m=rendered["depth"],
        clean_rgb=rendered["rgb"],
        under_exposed=under_exposed,
    )


_worker_scene: _Scene | None = None


def _init_worker() -> None:
    global _worker_scene
    _worker_scene = _Scene()


def _write_sample(job: tuple[Path, int, str, int, tuple[int, int]]) -> None:
    root, seed, split, index, size = job
    sample = render_sample(seed, split, index, size, scene=_worker_scene)
    name = f"{index:04d}.png"
    Image.fromarray(sample.rgb).save(root / split / "rgb" / name)
    Image.fromarray(sample.depth_mm).save(root / split / "depth" / name)
    Image.fromarray(sample.labels).save(root / split / f"labels_{NUM_CLASSES}" / name)


def generator_record(
    n_train: int, n_test: int, size: tuple[int, int], seed: int, n_val: int = 100
) -> dict:
    """What ``generator.json`` holds; a cached dataset is reused only if it matches exactly."""
    return {
        "generator": "mmanet.data.render_rgbd",
        "version": GENERATOR_VERSION,
        "renderer": f"pybullet TinyRenderer (API {pybullet.getAPIVersion()})",
        "seed": seed,
        "size": list(size),
        "n_train": n_train,
        "n_test": n_test,
        "n_val": n_val,
        "num_classes": NUM_CLASSES,
        "class_names": list(CLASS_NAMES),
    }


def render_dataset(
    root: str | Path,
    n_train: int = 300,
    n_test: int = 100,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    workers: int | None = None,
    n_val: int = 100,
) -> Path:
    """Render the dataset into ``root`` (replacing it) in the NYUv2 prepared layout, plus a
    ``val`` split (``val.txt``, ``val/``) held out for choosing settings."""
    root = Path(root)
    if min(n_train, n_test, n_val) < 1:
        raise ValueError(
            f"render_dataset: n_train, n_test and n_val must be >= 1, "
            f"got {n_train}, {n_test}, {n_val}"
        )
    size = (int(size[0]), int(size[1]))
    staging = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    counts = {"train": n_train, "test": n_test, "val": n_val}
    for split in SPLITS:
        for folder in ("rgb", "depth", f"labels_{NUM_CLASSES}"):
            (staging / split / folder).mkdir(parents=True)
        ids = "".join(f"{index:04d}\n" for index in range(counts[split]))
        (staging / f"{split}.txt").write_text(ids)
    (staging / "class_names.txt").write_text("".join(f"{name}\n" for name in CLASS_NAMES))
    jobs = [
        (staging, seed, split, index, size) for split in SPLITS for index in range(counts[split])
    ]
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    if workers == 1:
        _init_worker()
        for job in jobs:
            _write_sample(job)
    else:
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with context.Pool(workers, initializer=_init_worker) as pool:
            for _ in pool.imap_unordered(_write_sample, jobs, chunksize=8):
                pass
    record = generator_record(n_train, n_test, size, seed, n_val)
    (staging / "generator.json").write_text(json.dumps(record, indent=2) + "\n")
    if root.exists():
        shutil.rmtree(root)
    staging.rename(root)
    return root


def cached_dataset(cache_dir: str | Path, **kwargs) -> Path:
    """Return the rendered dataset under ``cache_dir``, rendering it only when missing or stale."""
    n_train = kwargs.get("n_train", 300)
    n_test = kwargs.get("n_test", 100)
    n_val = kwargs.get("n_val", 100)
    size = tuple(kwargs.get("size", (96, 128)))
    seed = kwargs.get("seed", 0)
    counts = f"{n_train}-{n_test}-{n_val}"
    root = (
        Path(cache_dir)
        / f"render_rgbd_v{GENERATOR_VERSION}_seed{seed}_{size[0]}x{size[1]}_{counts}"
    )
    record_path = root / "generator.json"
    expected = generator_record(n_train, n_test, size, seed, n_val)
    if record_path.is_file() and json.loads(record_path.read_text()) == expected:
        return root
    return render_dataset(root, **kwargs)
