"""Datasets: one module per on-disk format; each returns a :class:`DataBundle`.

A dataset is registered by name (``data.name``) with ``@register_dataset("name")`` on a
function ``(DataConfig) -> DataBundle`` (or a class with such a ``build``).
"""

from __future__ import annotations

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, DataError, TensorMultimodalDataset, collate
from mmanet.registry import DATASETS

register_dataset = DATASETS.register


def build_data(cfg: DataConfig) -> DataBundle:
    """The dataset named by ``cfg.name``."""
    entry = DATASETS.get(cfg.name)
    build = getattr(entry, "build", entry)
    return build(cfg)


@register_dataset("mfeat")
def _mfeat(cfg: DataConfig) -> DataBundle:
    from mmanet.data.mfeat import load_mfeat

    return load_mfeat(cfg.root, cfg.modalities, cfg.split_seed)


@register_dataset("manifest")
def _manifest(cfg: DataConfig) -> DataBundle:
    from mmanet.data.manifest import load_manifest

    if cfg.manifest is None:
        raise DataError("data.name=manifest needs data.manifest=<path to the CSV>")
    return load_manifest(
        cfg.manifest, cfg.modalities, cfg.label_column, cfg.split_column, cfg.split_seed
    )


def _face_options(cfg: DataConfig) -> dict:
    from mmanet.data.casia_surf import BONA_FIDE, CLASS_NAMES

    if cfg.bona_fide_class not in (None, BONA_FIDE):
        raise DataError(
            f"data.bona_fide_class={cfg.bona_fide_class}, but the bona fide class of "
            f"data.name={cfg.name} is {BONA_FIDE} (class_names {CLASS_NAMES})"
        )
    return {
        "image_size": cfg.image_size,
        "resize": cfg.resize,
        "rotation": cfg.rotation,
        "augment": cfg.augment,
        "skip_unreadable": cfg.skip_unreadable,
    }


@register_dataset("casia_surf")
def _casia_surf(cfg: DataConfig) -> DataBundle:
    from mmanet.data.casia_surf import load_casia_surf

    return load_casia_surf(cfg.root, cfg.modalities, **_face_options(cfg))


@register_dataset("cefa")
def _cefa(cfg: DataConfig) -> DataBundle:
    from mmanet.data.cefa import load_cefa

    return load_cefa(
        cfg.root,
        cfg.protocol,
        cfg.modalities,
        frames_per_video=cfg.frames_per_video,
        **_face_options(cfg),
    )


def _segmentation_options(cfg: DataConfig) -> dict:
    if len(cfg.size) != 2:
        raise DataError(f"data.size must be [height, width], got {cfg.size}")
    options = {"size": tuple(cfg.size), "augment": cfg.augment, "max_scale": cfg.max_scale}
    if cfg.depth_mean is not None:
        options["depth_mean"] = cfg.depth_mean
    if cfg.depth_std is not None:
        options["depth_std"] = cfg.depth_std
    return options


@register_dataset("nyuv2")
def _nyuv2(cfg: DataConfig) -> DataBundle:
    from mmanet.data.nyuv2 import load_nyuv2

    return load_nyuv2(
        cfg.root, cfg.modalities, depth_mode=cfg.depth_mode, **_segmentation_options(cfg)
    )


@register_dataset("cityscapes")
def _cityscapes(cfg: DataConfig) -> DataBundle:
    from mmanet.data.cityscapes import load_cityscapes

    return load_cityscapes(cfg.root, cfg.modalities, **_segmentation_options(cfg))


@register_dataset("rendered")
def _rendered(cfg: DataConfig) -> DataBundle:
    from mmanet.data import render_rgbd
    from mmanet.data.nyuv2 import load_nyuv2

    options = _segmentation_options(cfg)
    root = cfg.root or render_rgbd.cached_dataset(
        cfg.cache_dir, size=tuple(cfg.size), seed=cfg.render_seed
    )
    options.setdefault("depth_mean", render_rgbd.DEPTH_MEAN_MM)
    options.setdefault("depth_std", render_rgbd.DEPTH_STD_MM)
    return load_nyuv2(
        root, cfg.modalities, class_names=render_rgbd.CLASS_NAMES, val_split="val", **options
    )


__all__ = [
    "DataBundle",
    "DataError",
    "TensorMultimodalDataset",
    "build_data",
    "collate",
    "register_dataset",
]
