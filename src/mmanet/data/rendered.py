"""The rendered tabletop RGB-D scenes (``data.name=rendered``): rendered by
:mod:`mmanet.data.render_rgbd` into the NYUv2 prepared layout and loaded with
:func:`mmanet.data.nyuv2.load_nyuv2`, with the held-out ``val`` split for validation.

Without ``data.root`` the dataset is rendered into (or reused from)
``data.rendered.cache_dir`` with ``data.rendered.size`` and ``data.rendered.render_seed``.
Depth is a 16-bit PNG in millimetres, normalised by default with the valid-depth statistics
of the default training set (``DEPTH_MEAN_MM`` / ``DEPTH_STD_MM``). The renderer (and so
pybullet) is imported only to build the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, InputReader
from mmanet.data.nyuv2 import DEPTH_FILE_MM, load_nyuv2
from mmanet.data.rgbd import RGBDReader, RGBDSettings, read_depth_mm, segmentation_options
from mmanet.registry import DATASETS

# Valid-depth statistics (mm) of the default training set (seed 0, 300 images, 96 x 128).
DEPTH_MEAN_MM, DEPTH_STD_MM = 1750.5, 758.9


@dataclass
class RenderedSettings(RGBDSettings):
    """``data.rendered``: the input size (height, width; also the size rendered), the
    training random scale, the depth statistics (None: the default training set's), what a
    missing rgb or depth file is, where the generated dataset is kept and the generator's
    seed (fixed; never tuned)."""

    KEY = "data.rendered"

    cache_dir: str = "runs/cache"
    render_seed: int = 0


@DATASETS.register("rendered", settings=RenderedSettings)
class Rendered:
    """``data.name=rendered``: the loader and the input reader."""

    @staticmethod
    def build(cfg: DataConfig) -> DataBundle:
        from mmanet.data import render_rgbd

        own = cfg.rendered
        options = segmentation_options(cfg, own, DEPTH_MEAN_MM, DEPTH_STD_MM)
        root = cfg.root or render_rgbd.cached_dataset(
            own.cache_dir, size=options["size"], seed=own.render_seed
        )
        return load_nyuv2(
            root,
            cfg.modalities,
            class_names=render_rgbd.CLASS_NAMES,
            val_split="val",
            **options,
        )

    @staticmethod
    def reader(cfg: DataConfig) -> InputReader:
        return RGBDReader.from_config(
            cfg, cfg.rendered, DEPTH_MEAN_MM, DEPTH_STD_MM, read_depth_mm, DEPTH_FILE_MM
        )
