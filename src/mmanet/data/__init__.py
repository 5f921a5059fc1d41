"""Datasets: one module per on-disk format; each returns a :class:`DataBundle`."""

from __future__ import annotations

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, DataError, TensorMultimodalDataset, collate
from mmanet.data.casia_surf import BONA_FIDE, CLASS_NAMES, load_casia_surf
from mmanet.data.cefa import load_cefa
from mmanet.data.cityscapes import load_cityscapes
from mmanet.data.manifest import load_manifest
from mmanet.data.mfeat import load_mfeat
from mmanet.data.nyuv2 import load_nyuv2

DATASETS = ("mfeat", "manifest", "casia_surf", "cefa", "nyuv2", "cityscapes", "rendered")


def build_data(cfg: DataConfig) -> DataBundle:
    """The dataset named by ``cfg.name``."""
    if cfg.name == "mfeat":
        return load_mfeat(cfg.root, cfg.modalities, cfg.split_seed)
    if cfg.name == "manifest":
        if cfg.manifest is None:
            raise DataError("data.name=manifest needs data.manifest=<path to the CSV>")
        return load_manifest(
            cfg.manifest, cfg.modalities, cfg.label_column, cfg.split_column, cfg.split_seed
        )
    if cfg.name in ("casia_surf", "cefa"):
        return _build_face_data(cfg)
    if cfg.name in ("nyuv2", "cityscapes", "rendered"):
        return _build_segmentation_data(cfg)
    raise DataError(f"unknown dataset data.name={cfg.name!r}; use one of {list(DATASETS)}")


def _build_face_data(cfg: DataConfig) -> DataBundle:
    if cfg.bona_fide_class not in (None, BONA_FIDE):
        raise DataError(
            f"data.bona_fide_class={cfg.bona_fide_class}, but the bona fide class of "
            f"data.name={cfg.name} is {BONA_FIDE} (class_names {CLASS_NAMES})"
        )
    images = {
        "image_size": cfg.image_size,
        "resize": cfg.resize,
        "rotation": cfg.rotation,
        "augment": cfg.augment,
        "skip_unreadable": cfg.skip_unreadable,
    }
    if cfg.name == "casia_surf":
        return load_casia_surf(cfg.root, cfg.modalities, **images)
    return load_cefa(
        cfg.root, cfg.protocol, cfg.modalities, frames_per_video=cfg.frames_per_video, **images
    )


def _build_segmentation_data(cfg: DataConfig) -> DataBundle:
    if len(cfg.size) != 2:
        raise DataError(f"data.size must be [height, width], got {cfg.size}")
    options = {"size": tuple(cfg.size), "augment": cfg.augment, "max_scale": cfg.max_scale}
    if cfg.depth_mean is not None:
        options["depth_mean"] = cfg.depth_mean
    if cfg.depth_std is not None:
        options["depth_std"] = cfg.depth_std
    if cfg.name == "cityscapes":
        return load_cityscapes(cfg.root, cfg.modalities, **options)
    if cfg.name == "nyuv2":
        return load_nyuv2(cfg.root, cfg.modalities, depth_mode=cfg.depth_mode, **options)
    from mmanet.data import render_rgbd

    root = cfg.root or render_rgbd.cached_dataset(
        cfg.cache_dir, size=tuple(cfg.size), seed=cfg.render_seed
    )
    options.setdefault("depth_mean", render_rgbd.DEPTH_MEAN_MM)
    options.setdefault("depth_std", render_rgbd.DEPTH_STD_MM)
    return load_nyuv2(
        root, cfg.modalities, class_names=render_rgbd.CLASS_NAMES, val_split="val", **options
    )


__all__ = ["DataBundle", "DataError", "TensorMultimodalDataset", "build_data", "collate"]
