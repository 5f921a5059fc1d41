"""Coloured label maps and PNG panels of segmentation results (Pillow only).

A panel is one row of tiles, each with its caption above: RGB | depth | ground truth | one
prediction per modality combination. Class c has colour ``palette[c]``; void / ignored pixels
(any value outside the palette, e.g. 255) are black.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from mmanet.io import atomic_write

CAPTION_HEIGHT = 12  # pixels above each tile


def default_palette(num_classes: int = 256) -> np.ndarray:
    """(num_classes, 3) uint8 fixed colours: the bits of c + 1 spread over the high bits of
    R, G and B (so no class is black)."""
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for cls in range(num_classes):
        code, colour = cls + 1, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                colour[channel] |= ((code >> (3 * bit + channel)) & 1) << (7 - bit)
        palette[cls] = colour
    return palette


def colorize(labels: np.ndarray | torch.Tensor, palette: np.ndarray | None = None) -> np.ndarray:
    """(h, w) class map -> (h, w, 3) uint8 colours; values outside the palette are black."""
    labels = np.asarray(labels, dtype=np.int64)
    palette = default_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    known = (labels >= 0) & (labels < len(palette))
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    out[known] = palette[labels[known]]
    return out


def _rgb_tile(rgb: np.ndarray | torch.Tensor) -> np.ndarray:
    """(h, w, 3) uint8 as is; a (3, h, w) float image (e.g. normalised) min-max scaled."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3:
        return rgb
    return _scaled(rgb.transpose(1, 2, 0))


def _scaled(values: np.ndarray) -> np.ndarray:
    """Min-max scaled to 0..255 uint8 (a constant image is black)."""
    values = values.astype(np.float64)
    low, high = values.min(), values.max()
    span = high - low if high > low else 1.0
    return ((values - low) / span * 255).round().astype(np.uint8)


def save_prediction_panel(
    path: str | Path,
    rgb: np.ndarray | torch.Tensor,
    depth: np.ndarray | torch.Tensor,
    ground_truth: np.ndarray | torch.Tensor,
    predictions: Mapping[str, np.ndarray | torch.Tensor],
    palette: np.ndarray | None = None,
) -> None:
    """Write RGB | depth (grey, min-max scaled) | ground truth | each prediction as one PNG,
    atomically. Maps are (h, w); depth may be (1, h, w)."""
    from PIL import Image, ImageDraw

    depth_grey = _scaled(np.asarray(depth).reshape(np.asarray(ground_truth).shape))
    tiles = [
        ("rgb", _rgb_tile(rgb)),
        ("depth", np.repeat(depth_grey[:, :, None], 3, axis=2)),
        ("ground truth", colorize(ground_truth, palette)),
        *((f"pred {name}", colorize(labels, palette)) for name, labels in predictions.items()),
    ]
    height, width = depth_grey.shape
    panel = Image.new("RGB", (width * len(tiles), height + CAPTION_HEIGHT), "white")
    draw = ImageDraw.Draw(panel)
    for column, (caption, tile) in enumerate(tiles):
        panel.paste(Image.fromarray(tile), (column * width, CAPTION_HEIGHT))
        draw.text((column * width + 2, 0), caption, fill="black")
    atomic_write(path, lambda tmp: panel.save(tmp, format="PNG"))
